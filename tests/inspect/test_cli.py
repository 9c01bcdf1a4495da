"""avgpool inspect / diff / verify: tables, JSON, markdown, exit codes 0/1/2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from avgpool.cli import main


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_inspect_table(capsys, onnx_models):
    code, out, err = run(capsys, "inspect", onnx_models["inception"])
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert lines[0].endswith("inception.onnx: 4 pooling layers (onnx, input x 1x3x17x17)")
    row = next(line for line in lines if line.startswith("2  /reduce/MaxPool"))
    assert row.split() == [
        "2",
        "/reduce/MaxPool",
        "MaxPool",
        "3x3",
        "2x2",
        "0:0x0:0",
        "1x10x8x8",
        "->",
        "1x10x3x3",
        "11x11",
        "4x4",
        "AP101",
        "AP107",
    ]
    assert "findings: 0 error, 1 warning, 2 info" in out


def test_inspect_fail_on_and_json(capsys, onnx_models):
    assert run(capsys, "inspect", onnx_models["inception"], "--fail-on", "warning")[0] == 1
    assert run(capsys, "inspect", onnx_models["inception"], "--fail-on", "never")[0] == 0
    code, out, _ = run(capsys, "inspect", onnx_models["inception"], "--target", "tensorflow", "--json")
    report = json.loads(out)
    assert code == 1  # AP104 error: TF cannot count padded cells
    assert report["summary"] == {"layers": 4, "error": 1, "warning": 1, "info": 2}
    assert [f["rule"] for f in report["findings"]] == ["AP104", "AP101", "AP107", "AP112"]
    first = report["layers"][0]
    assert first["key"] == "mixed.branch_pool" and first["padding"] == [[1, 1], [1, 1]]
    assert first["count_include_pad"] is True and first["receptive_field"] == [7, 7]


def test_inspect_markdown(capsys, onnx_models):
    code, out, _ = run(capsys, "inspect", onnx_models["resnet"], "--markdown")
    assert code == 0
    assert "| # | layer | op | kernel | stride | pads | mode | in -> out | RF | jump | lint |" in out
    assert "| 1 | /down/pool/AveragePool | AveragePool | 2x2 | 2x2 | 0:0x0:0 | ceil excl-pad |" in out


def test_inspect_torch_spec(capsys):
    code, out, _ = run(
        capsys, "inspect", "tests.inspect.conftest:DenseNetish", "-i", "1x3x16x16", "--fail-on", "warning"
    )
    assert code == 1
    assert "AP108 warning [1] adaptive_avg_pool2d" in out


def test_diff_gate(capsys, onnx_models, broken):
    code, out, _ = run(capsys, "diff", onnx_models["resnet"], onnx_models["resnet"])
    assert code == 0 and "3 unchanged, 0 changed/added/removed, 0 not allowed" in out
    code, out, _ = run(capsys, "diff", onnx_models["resnet"], broken["asymmetric"])
    assert code == 1 and "padding 1:1x1:1 -> 0:1x0:1" in out
    assert run(capsys, "diff", onnx_models["resnet"], broken["asymmetric"], "--allow", "geometry")[0] == 0
    code, out, _ = run(capsys, "diff", onnx_models["resnet"], broken["removed"], "--json")
    report = json.loads(out)
    assert code == 1 and report["summary"] == {"same": 1, "changed": 1, "added": 0, "removed": 1}
    code, out, _ = run(capsys, "diff", onnx_models["resnet"], broken["kernel"], "--markdown")
    assert code == 1 and "| changed | /maxpool/MaxPool | /maxpool/MaxPool | name | kernel 3x3 -> 2x2;" in out


def test_diff_strict_counts_convention(capsys, onnx_models):
    argv = ("diff", "tests.inspect.conftest:Inceptionish", onnx_models["inception"], "-i", "1x3x17x17")
    assert run(capsys, *argv)[0] == 0  # same geometry; only the convention and names differ
    assert run(capsys, *argv, "--strict")[0] == 1


def test_verify(capsys, onnx_models, broken):
    code, out, _ = run(capsys, "verify", onnx_models["densenet"], "--random", "2")
    assert code == 0 and "3 of 3 pooling nodes match the reference" in out
    code, out, _ = run(capsys, "verify", broken["dilated_same"], "--json")
    report = json.loads(out)
    assert code == 1 and report["failed"] == 1
    assert report["checks"][0]["max_abs_diff"] is None  # shapes differ: no number to give


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p.write_text("hello"), "not an ONNX model or truncated"),
        (lambda p: p.write_bytes(b""), "not an ONNX model (no graph nodes or opset imports)"),
        (lambda p: None, "no such file"),
    ],
)
def test_bad_files_exit_2(capsys, tmp_path, make, message):
    path = tmp_path / "model.onnx"
    make(path)
    for cmd in (("inspect", path), ("verify", path), ("diff", path, path)):
        code, out, err = run(capsys, *cmd)
        assert code == 2 and out == ""
        assert err.startswith(f"avgpool {cmd[0]}: error: ") and message in err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_no_pooling_and_dynamic_shapes_exit_2(capsys, tmp_path):
    from .conftest import export, nn
    from .test_onnx_reader import _dynamic

    path = export(nn.Sequential(nn.Conv2d(1, 1, 1)), (1, 1, 4, 4), tmp_path / "conv.onnx")
    code, _, err = run(capsys, "inspect", path)
    assert code == 2 and err.strip().endswith("conv.onnx: no pooling layers found")
    assert run(capsys, "diff", path, path)[0] == 2
    code, _, err = run(capsys, "inspect", _dynamic(tmp_path, ["N", 3, "H", "W"]))
    assert code == 2 and "dynamic dimensions (Nx3xHxW): pass --input-shape x:1x3x1x1" in err
    code, _, err = run(capsys, "inspect", "tests.inspect.conftest:ResNetish")
    assert code == 2 and "needs --input-shape" in err
    code, _, err = run(capsys, "inspect", tmp_path / "conv.onnx", "-i", "1x1x4")
    assert code == 2 and "has rank 4" in err


def test_a_factory_in_the_current_directory_is_found(tmp_path, monkeypatch):
    """`avgpool inspect mymodel:build` where mymodel.py sits in the working directory."""
    (tmp_path / "mymodel_cwd.py").write_text(
        "import torch\n\ndef build():\n    return torch.nn.Sequential(torch.nn.AvgPool2d(2))\n"
    )
    monkeypatch.chdir(tmp_path)
    result = subprocess.run(
        [Path(sys.executable).parent / "avgpool", "inspect", "mymodel_cwd:build", "-i", "1x1x4x4", "--json"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert [layer["op"] for layer in json.loads(result.stdout)["layers"]] == ["avg"]


def test_control_characters_in_names_are_escaped_in_every_output(tmp_path, capsys):
    from .conftest import onnx
    from .test_onnx_reader import _pool_model

    model = _pool_model([2, 2], [1, 3, 8, 8])
    model.graph.node[0].name = "pool\nverdict: PASS \x1b[2K\u202e"
    path = tmp_path / "hostile.onnx"
    onnx.save(model, str(path))
    for extra in ([], ["--markdown"]):
        assert main(["inspect", str(path), *extra]) in (0, 1)
        out = capsys.readouterr().out
        assert "\\nverdict: PASS \\x1b[2K\\u202e" in out
        assert "\x1b" not in out and "\u202e" not in out
        assert not any(line.startswith("verdict: PASS") for line in out.splitlines())


def test_rich_tables_show_names_as_text_not_markup():
    import io

    pytest.importorskip("rich")
    from avgpool.inspect.render import rich_print

    buf = io.StringIO()
    names = ["a[/]b", "[red]pool[/red] [link=https://example.invalid]x"]
    rich_print(("layers [bold]", ["layer"], [[n] for n in names], ["[/] end"]), file=buf)
    out = buf.getvalue()  # an unmatched '[/]' stopped the output with rich's MarkupError
    assert all(n in out for n in names) and "layers [bold]" in out


@pytest.mark.parametrize(
    ("array", "problem"),
    [
        (np.ones((1, 3, 8, 8), complex), "array 'x' has dtype complex128"),
        (np.ones((0, 3, 8, 8), np.float32), "the input(s) ['x'] hold no values"),
    ],
)
def test_verify_refuses_inputs_it_could_not_check_with(tmp_path, capsys, array, problem):
    # a complex input was cast to its real part, and an empty one verified nothing and passed
    from .conftest import onnx
    from .test_onnx_reader import _pool_model

    path = tmp_path / "m.onnx"
    onnx.save(_pool_model([2, 2], [1, 3, 8, 8]), str(path))
    np.savez(tmp_path / "in.npz", x=array)
    assert main(["verify", str(path), "--inputs", str(tmp_path / "in.npz")]) == 2
    assert problem in capsys.readouterr().err


def test_a_model_onnx_runtime_refuses_is_one_line_on_stderr(tmp_path, capfd):
    # ONNX Runtime's own error log (written to fd 2, in colour) came before our line
    from .conftest import onnx
    from .test_onnx_reader import _pool_model

    model = _pool_model([2, 2], [1, 3, 8, 8])
    model.graph.node[0].attribute.append(onnx.helper.make_attribute("pads", [5, 5, 5, 5]))
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    assert main(["verify", str(path)]) == 2
    err = capfd.readouterr().err
    assert err.startswith("avgpool verify: error: ") and "Pad should be smaller than kernel" in err
    assert err.count("\n") == 1
