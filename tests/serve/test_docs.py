"""docs/serve.md stays true: its Python blocks run, in order, in one namespace, and every
``expression  # literal`` line gives what its comment shows (the README's rules,
`tests.test_readme`). The page's server is stopped even when a block fails."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("tritonclient.http")
pytest.importorskip("onnxruntime")

from tests.test_readme import _blocks, run_blocks

PAGE = Path(__file__).resolve().parents[2] / "docs" / "serve.md"


def test_serve_page_python_blocks_run_and_show_what_they_say(monkeypatch):
    monkeypatch.chdir(PAGE.parents[1])  # the page imports examples/ as the README's reader would
    monkeypatch.setattr("sys.path", list(__import__("sys").path))
    namespace: dict = {}
    try:
        assert run_blocks(_blocks("python", PAGE), namespace, PAGE) >= 7
    finally:
        server = namespace.get("server")
        if server is not None:
            server.stop()
