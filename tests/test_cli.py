"""`avgpool shape`: what it prints, its JSON, and exit code 2 with one message on bad input."""

import json
import subprocess
import sys

import numpy as np
import pytest

from avgpool._errors import AvgPoolError
from avgpool.cli import main
from avgpool.inspect import shape_report


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_tensorflow_same_report(capsys):
    code, out, _ = run(capsys, "shape", "1x3x224x224", "-k", "3", "-s", "2", "-p", "same", "-c", "tensorflow")
    assert code == 0
    assert "output     1x3x112x112" in out
    assert "H: 0 before, 1 after" in out
    assert "torch  cannot express: padding='same'" in out
    lines = {line.split()[0]: line for line in out.splitlines() if line.startswith("  ")}
    assert "same" in lines["onnx"] and "same" in lines["keras"]
    assert "different" in lines["flax"] and "count_include_pad=True" in lines["flax"]


def test_uncovered_cells_are_listed(capsys):
    code, out, _ = run(capsys, "shape", "1x1x10", "-k", "2", "-s", "3")
    assert code == 0
    assert "L: 4 of 10 never read (2, 5, 8-9)" in out


def test_json_output(capsys):
    code, out, _ = run(capsys, "shape", "2x3x6x6", "-k", "3", "-s", "2", "-p", "1", "--ceil-mode", "--json")
    report = json.loads(out)
    assert code == 0
    assert report["output_shape"] == [2, 3, 4, 4]
    assert report["padding"] == [[1, 1], [1, 1]]
    verdicts = {c["convention"]: c["verdict"] for c in report["conventions"]}
    assert verdicts == {
        "onnx": "different",  # ONNX's count_include_pad defaults to 0
        "tensorflow": "cannot express",
        "keras": "cannot express",
        "flax": "cannot express",
    }


def test_default_strides_differ_between_conventions():
    report = shape_report((1, 1, 8), 2)
    shapes = {c.convention: c.output_shape for c in report.others}
    assert report.output_shape == (1, 1, 4)  # torch: stride defaults to the kernel
    assert shapes["onnx"] == shapes["flax"] == (1, 1, 7)  # both default to stride 1
    assert shapes["keras"] == (1, 1, 4)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["shape", "1x3x4x4", "-k", "5"], "no window fits"),
        (["shape", "1x3x4x4", "-k", "0"], "kernel_size must be >= 1"),
        (["shape", "1x3x4x4", "-k", "3", "-p", "2"], "padding must be <= kernel_size // 2"),
        (["shape", "1x3x4x4", "-k", "3", "-p", "full"], "padding must be"),
        (["shape", "3x4", "-k", "3"], "1 to 3 spatial axes"),
    ],
)
def test_bad_arguments_exit_2_with_one_message(capsys, argv, message):
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == ""
    assert message in err and "Traceback" not in err
    assert err.count("\n") == 1


def test_installed_command_runs():
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "avgpool",
            "shape",
            "1x1x5x5",
            "-k",
            "3",
            "-s",
            "2",
            "-p",
            "same",
            "-c",
            "flax",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "output     1x1x3x3" in result.stdout


def test_a_closed_pipe_ends_quietly():
    """`avgpool ... | head -c 1` on a long output: no 'Broken pipe' error message, no traceback."""
    long_output = (
        "import avgpool.cli as cli, avgpool.cli._shape as shape\n"
        "shape._cmd_shape = lambda args: print('x' * 4_000_000) or 0\n"  # far more than a pipe holds
        "raise SystemExit(cli.main(['shape', '1x1x4x4', '-k', '2']))\n"
    )
    result = subprocess.run(
        f"{sys.executable} -c \"{long_output}\" | head -c 1; exit ${{PIPESTATUS[0]}}",
        shell=True, executable="/bin/bash", capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.stdout == "x"
    assert result.stderr == ""
    assert result.returncode == 0


def test_shape_of_any_size_is_arithmetic(capsys):
    code, out, _ = run(capsys, "shape", "64x256x1024x1024", "-k", "2", "--json")
    report = json.loads(out)
    assert code == 0 and report["output_shape"] == [64, 256, 512, 512]
    code, out, _ = run(capsys, "shape", "1x1x2000000", "-k", "2", "-s", "3")
    assert code == 0 and "L: not listed (longer than 1048576 cells)" in out


def test_shape_counts_differences_over_every_plane():
    small = shape_report((2, 3, 9, 9), 3, 2, "same", convention="tensorflow")
    flax = next(c for c in small.others if c.convention == "flax")
    one = shape_report((1, 1, 9, 9), 3, 2, "same", convention="tensorflow")
    per_plane = next(c for c in one.others if c.convention == "flax").cells_differing
    assert per_plane > 0 and flax.cells_differing == 6 * per_plane
    big = shape_report((1, 1, 2048, 1024), 3, 2, "same", convention="tensorflow")
    verdicts = {c.convention: c.verdict for c in big.others}
    assert verdicts["flax"] == "different" and verdicts["onnx"] == "same"


def test_large_planes_are_counted_exactly_on_a_crop():
    # SAME 3x3/2 on 4096x4096: only the last row and column of windows reach the padding,
    # where Flax counts padded cells and TensorFlow does not (was: "by geometry", no count)
    report = shape_report((2, 1, 4096, 4096), 3, 2, "same", convention="tensorflow")
    flax = next(c for c in report.others if c.convention == "flax")
    assert flax.cells_differing == 2 * (2048 + 2047) and flax.verdict == "different"
    huge = shape_report((1, 1, 2**20, 2**20), 2, 2, 1, convention="torch")
    onnx = next(c for c in huge.others if c.convention == "onnx")  # excludes the padded cell
    m = 2**19 + 1  # outputs per axis, the first and last touch the padding
    assert onnx.cells_differing == m * m - (m - 2) * (m - 2)


def test_the_crop_counts_what_pooling_the_whole_plane_counts():
    from avgpool.inspect.shape import _pool

    rng = np.random.default_rng(0)
    compared = 0
    for _ in range(120):
        nd = int(rng.integers(1, 3))
        spatial = tuple(int(v) for v in rng.integers(1, 40, nd))
        kernel = tuple(int(v) for v in rng.integers(1, 6, nd))
        stride = tuple(int(v) for v in rng.integers(1, 5, nd))
        padding = [
            "same",
            "valid",
            tuple((int(rng.integers(0, 3)), int(rng.integers(0, 3))) for _ in kernel),
        ][int(rng.integers(0, 3))]
        convention = ["onnx", "flax", "tensorflow"][int(rng.integers(0, 3))]
        try:
            report = shape_report((1, 2, *spatial), kernel, stride, padding, convention=convention)
        except AvgPoolError:
            continue
        x = np.random.default_rng(5).standard_normal((1, 1, *spatial))
        for c in report.others:
            if c.output_shape == report.output_shape:
                a, b = _pool(x, report.window, "avg"), _pool(x, c.window, "avg")
                with np.errstate(invalid="ignore"):
                    whole = np.count_nonzero(
                        (np.abs(a - b) > 1e-12 * (1 + np.abs(a))) | (np.isnan(a) != np.isnan(b))
                    )
                assert c.cells_differing == 2 * whole, (
                    spatial,
                    kernel,
                    stride,
                    padding,
                    convention,
                    c.convention,
                )
                compared += 1
    assert compared > 100


def test_an_empty_window_nan_counts_as_a_difference():
    # four windows lie wholly in ONNX padding: ONNX writes 0, Flax divides 0 by 0
    report = shape_report((1, 1, 4), 1, 1, ((2, 2),), convention="onnx", count_include_pad=False)
    flax = next(c for c in report.others if c.convention == "flax")
    assert (flax.verdict, flax.cells_differing, flax.max_abs_diff) == ("different", 4, 0.0)


def test_tensorflow_max_pool_takes_explicit_padding():
    report = shape_report((1, 1, 9, 9), 3, 2, ((0, 1), (1, 0)), convention="tensorflow", op="max")
    assert report.output_shape == (1, 1, 4, 4)
    assert [(a.pad_before, a.pad_after) for a in report.axes] == [(0, 1), (1, 0)]
    with pytest.raises(AvgPoolError, match=r"tf\.nn\.avg_pool takes only"):
        shape_report((1, 1, 9, 9), 3, 2, ((0, 1), (1, 0)), convention="tensorflow")


@pytest.mark.parametrize(
    ("error", "code", "says"),
    [
        (AvgPoolError("kernel_size must be >= 1"), 2, "avgpool shape: error: kernel_size must be >= 1"),
        (TypeError("dtype int8 is not supported"), 2, "avgpool shape: error: dtype int8 is not supported"),
        (FileNotFoundError("x.onnx: no such file"), 2, "avgpool shape: error: x.onnx: no such file"),
        (MemoryError(), 2, "avgpool shape: error: not enough memory"),
        (KeyboardInterrupt(), 130, "avgpool shape: interrupted"),
    ],
)
def test_only_refusals_of_the_input_exit_2(monkeypatch, capsys, error, code, says):
    import avgpool.cli as cli
    from avgpool.cli import _shape

    def fail(args):
        raise error

    monkeypatch.setattr(_shape, "_cmd_shape", fail)
    assert cli.main(["shape", "1x1x4x4", "-k", "2"]) == code
    out, err = capsys.readouterr()
    assert out == "" and err == says + "\n"


@pytest.mark.parametrize("error", [KeyError("boom"), ValueError("plain"), RuntimeError("inside")])
def test_a_bug_shows_its_traceback_and_exits_3(monkeypatch, capsys, error):
    # a bug was one line naming the exception class, its traceback only with AVGPOOL_DEBUG=1
    import avgpool.cli as cli
    from avgpool.cli import _shape

    def fail(args):
        raise error

    monkeypatch.setattr(_shape, "_cmd_shape", fail)
    assert cli.main(["shape", "1x1x4x4", "-k", "2"]) == 3
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert out == "" and lines[0] == "Traceback (most recent call last):"
    assert "in fail" in err and lines[-2] == f"{type(error).__name__}: {error}"
    assert lines[-1] == "avgpool shape: unexpected error (a bug in avgpool): please report it"


def test_version_is_the_installed_distribution(capsys):
    from importlib.metadata import version

    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out == f"avgpool {version('avgpool')}\n"
    result = subprocess.run(
        [sys.executable, "-m", "avgpool", "--version"], capture_output=True, text=True, check=False
    )
    assert (result.returncode, result.stdout) == (0, f"avgpool {version('avgpool')}\n")


def _help_texts():
    from avgpool.cli import _parser

    parser = _parser()
    yield "avgpool", parser.format_help()
    for action in parser._subparsers._group_actions:
        for name, sub in action.choices.items():
            yield name, sub.format_help()
            for nested in sub._subparsers._group_actions if sub._subparsers else ():
                for inner, leaf in nested.choices.items():
                    yield f"{name} {inner}", leaf.format_help()


def test_help_is_plain_text():
    # the top-level description was the module docstring, RST markup and all
    texts = dict(_help_texts())
    assert {"avgpool", "shape", "inspect", "diff", "verify", "profile", "drift", "bench op", "study"} <= set(
        texts
    )
    for name, text in texts.items():
        for markup in ("``", ":func:", ":ref:", ":class:", ":meth:", "`"):
            assert markup not in text, (name, markup)


def test_the_shape_text_is_the_library_s(capsys):
    # the text was built inside the CLI, out of a library user's reach
    from avgpool.inspect.render import render, shape_text

    report = shape_report((1, 1, 10), 2, 3)
    text = shape_text(report)
    assert render(report) == render(report, "markdown") == text
    assert "uncovered  L: 4 of 10 never read (2, 5, 8-9)" in text.splitlines()
    assert run(capsys, "shape", "1x1x10", "-k", "2", "-s", "3") == (0, text + "\n", "")


def test_outputs_are_checked_together_before_any_is_written(tmp_path):
    from avgpool._files import check_outputs

    check_outputs(tmp_path / "a.png", None, directories=[tmp_path / "new" / "logs", None])
    with pytest.raises(AvgPoolError, match=r"a\.png is given for two outputs"):
        check_outputs(tmp_path / "a.png", str(tmp_path / "a.png"))
    with pytest.raises(FileNotFoundError, match="no such directory"):
        check_outputs(tmp_path / "missing" / "a.prom")
    assert list(tmp_path.iterdir()) == []
