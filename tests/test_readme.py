"""The README stays true: its Python blocks run and print what their comments say, and its
``avgpool`` transcripts are what the command prints.

Python: every ```python block runs, in order, in one namespace. A line that is a bare
expression with a comment starting with a Python literal (``w.pads((224, 224))  # ((0, 1),
(0, 1))``, ``ap.avg_pool_backward(...)  # 0.25 everywhere``) must evaluate to that value, to
the last decimal written (arrays elementwise; the shown value may leave out leading axes of
size one). Comments that are prose or elided (``{'limit': ...}``) are not compared.

Console: every ``$ avgpool ...`` line of a ```console block, in the README and in docs/, must
parse. Where output follows one in the README, the command runs in a scratch folder prepared by
the example scripts the README names (run as ``python examples/<script>.py out``) and prints
exactly the lines shown; a line ``...`` stands for any number of lines.
"""

from __future__ import annotations

import ast
import re
import runpy
import shlex
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
#: The scripts whose output folder the README's transcripts read (``out/...``).
EXAMPLES = ("inspect_resnet.py", "monitor_pooling.py")


def _blocks(kind: str, page: Path = README) -> list[str]:
    return re.findall(rf"```{kind}\n(.*?)```", page.read_text(), flags=re.S)


def _literal(comment: str) -> tuple[bool, object]:
    """(True, value) when the comment starts with a Python literal, else (False, None)."""
    for candidate in (comment.split("  ")[0], comment.split(":")[0], comment.split(" ")[0]):
        try:
            value = ast.literal_eval(candidate.strip())
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            continue
        if value is not None and value is not Ellipsis and not isinstance(value, str):
            return True, value
    return False, None


def _claims(block: str) -> list[tuple[int, str, object, str]]:
    """(line number, expression, value, comment) for each 'expression  # literal' line of a block."""
    out = []
    for number, line in enumerate(block.splitlines()):
        code, sep, comment = line.partition("  # ")
        if not sep or line.startswith((" ", "\t")):
            continue
        try:
            tree = ast.parse(code)
        except SyntaxError:
            continue
        if len(tree.body) == 1 and isinstance(tree.body[0], ast.Expr):
            found, value = _literal(comment)
            if found:
                out.append((number, code, value, comment))
    return out


def _agrees(got: object, shown: object, text: str) -> bool:
    """``got`` equals ``shown`` to the last decimal the README writes (1.3333: within 5e-5)."""
    if isinstance(got, tuple) and isinstance(shown, tuple) and len(got) != len(shown):
        return False
    decimals = max((len(d) for d in re.findall(r"\.(\d+)", text)), default=0)
    try:
        a, b = np.asarray(got, dtype=float), np.asarray(shown, dtype=float)
    except (TypeError, ValueError):
        return got == shown
    fits = b.ndim == 0 or (a.ndim >= b.ndim and a.shape[a.ndim - b.ndim :] == b.shape)
    return fits and bool(np.allclose(a, b, rtol=1e-12, atol=0.5 * 10.0**-decimals))


def run_blocks(blocks: list[str], namespace: dict, page: Path) -> int:
    """Run ``blocks`` in order in ``namespace``, statement run by statement run, evaluating each
    claimed expression (``expr  # literal``) on its line and asserting it gives what its comment
    shows; returns how many claims were checked."""
    checked = 0
    for block in blocks:
        claims = {number: (code, value, comment) for number, code, value, comment in _claims(block)}
        lines = block.splitlines()
        start = 0
        for number in [*sorted(claims), len(lines)]:
            exec(compile("\n".join(lines[start:number]), str(page), "exec"), namespace)
            if number < len(lines):
                code, shown, comment = claims[number]
                got = eval(compile(code, str(page), "eval"), namespace)
                assert _agrees(got, shown, comment), f"{page.name}: {code} gives {got!r}, it says {comment!r}"
                checked += 1
            start = number + 1
    return checked


def test_readme_python_blocks_run_and_print_what_they_say():
    blocks = _blocks("python")
    assert len(blocks) >= 3
    assert run_blocks(blocks, {}, README) >= 5  # the quickstart's and the conventions' shown results


def _transcripts(page: Path = README) -> list[tuple[str, list[str]]]:
    """(command line, the output lines shown after it) for every ``$ avgpool`` of a page."""
    found = []
    for block in _blocks("console", page):
        for part in re.split(r"^\$ ", block, flags=re.M)[1:]:
            command, *output = part.rstrip("\n").split("\n")
            command = re.sub(r"\s+#.*$", "", command)  # a comment after the command
            found.append((command, output))
    return found


def test_every_command_of_the_readme_and_docs_parses():
    from avgpool.cli import _parser

    pages = [README, *sorted((ROOT / "docs").glob("*.md"))]
    commands = [c for page in pages for c, _ in _transcripts(page)]
    assert len(commands) >= 15
    parser = _parser()
    for command in commands:
        words = shlex.split(command)
        while re.fullmatch(r"[A-Z_]+=\S*", words[0]):  # PYTHONPATH=... avgpool ...
            words = words[1:]
        assert words[0] == "avgpool", command
        parser.parse_args(words[1:])  # exits 2 (SystemExit) on an option the CLI no longer has


def _matches(expected: list[str], got: str) -> bool:
    pattern = "".join(
        r"(?:[^\n]*\n)*?" if line.strip() == "..." else re.escape(line) + r"\n" for line in expected
    )
    return re.fullmatch(pattern, got) is not None


def test_readme_transcripts_are_what_avgpool_prints(tmp_path, monkeypatch, capsys):
    pytest.importorskip("torch")
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    pytest.importorskip("scipy")
    from avgpool.cli import main

    shown = [(c, out) for c, out in _transcripts() if out]
    assert len(shown) >= 3
    monkeypatch.chdir(tmp_path)
    for script in EXAMPLES:
        monkeypatch.setattr(sys, "argv", [script, "out"])
        runpy.run_path(str(ROOT / "examples" / script), run_name="__main__")
    capsys.readouterr()
    for command, expected in shown:
        main(shlex.split(command)[1:])
        got = capsys.readouterr().out
        assert _matches(expected, got), f"$ {command}\n--- README\n{chr(10).join(expected)}\n--- now\n{got}"
