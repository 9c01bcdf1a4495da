"""Model files load without running code unless trusted: every command, every PyTorch format."""

import os
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from avgpool._loading import load_torch_model  # noqa: E402
from avgpool.cli import main  # noqa: E402
from avgpool.inspect import ModelError, read_model  # noqa: E402

from .conftest import SHAPES  # noqa: E402


class _Payload:
    """Unpickling this calls os.mkdir(marker): the marker's existence proves code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))  # open() would leave a file unclosed


@pytest.fixture
def hostile(tmp_path):
    marker = tmp_path / "code-ran"
    path = tmp_path / "model.pt"
    torch.save({"model": _Payload(marker)}, path)
    return path, marker


@pytest.fixture
def inputs(tmp_path):
    path = tmp_path / "inputs.npz"
    np.savez(path, x=np.random.default_rng(0).normal(size=(4, 3, 32, 32)).astype(np.float32))
    return str(path)


def _commands(model, inputs, tmp_path):
    shape = "x".join(map(str, SHAPES["resnet"]))
    return {
        "inspect": ["inspect", model, "-i", shape],
        "diff": ["diff", model, model, "-i", shape],
        "profile": ["profile", model, "--inputs", inputs, "-o", str(tmp_path / "p.avgprof")],
        "bench model": ["bench", "model", model, "-i", shape, "-b", "1", "--repeats", "2", "--warmup", "0"],
    }


@pytest.mark.parametrize("command", ["inspect", "diff", "profile", "bench model"])
def test_a_hostile_pickle_runs_nothing_and_names_the_trust_flag(command, hostile, inputs, tmp_path, capsys):
    path, marker = hostile
    argv = _commands(str(path), inputs, tmp_path)[command]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "--trust-file" in err and "can run" in err and len(err.strip().splitlines()) == 1
    assert not marker.exists()


def test_the_hostile_payload_is_real_when_trusted(hostile):
    path, marker = hostile
    with pytest.raises(ModelError, match="holds a dict"):
        load_torch_model(str(path), trust=True, error=ModelError)
    assert marker.exists()  # so the refusal above is what kept it from running


def test_a_trusted_pickled_module_loads(tmp_path, torch_models, capsys):
    path = tmp_path / "resnet.pt"
    torch.save(torch_models["resnet"], path)
    shape = "x".join(map(str, SHAPES["resnet"]))
    assert main(["inspect", str(path), "-i", shape]) == 2
    assert "--trust-file" in capsys.readouterr().err
    assert main(["inspect", str(path), "-i", shape, "--trust-file", "--json"]) in (0, 1)
    assert '"maxpool"' in capsys.readouterr().out


def test_state_dicts_load_safely_and_say_what_they_lack(tmp_path, torch_models):
    path = tmp_path / "weights.pt"
    torch.save(torch_models["resnet"].state_dict(), path)
    with pytest.raises(ModelError, match=r"holds a OrderedDict, not an nn\.Module.*package\.module:factory"):
        read_model(path, {"": SHAPES["resnet"]})


@pytest.fixture(scope="module")
def compiled(tmp_path_factory, torch_models):
    root = tmp_path_factory.mktemp("compiled")
    model = torch_models["resnet"]
    example = (torch.randn(*SHAPES["resnet"]),)
    torch.export.save(torch.export.export(model, example), root / "resnet.pt2")
    with warnings.catch_warnings():
        # torch deprecates TorchScript; its files are still common, and this makes one to load
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.trace(model, example), root / "traced.pt")
    return {"exported": root / "resnet.pt2", "torchscript": root / "traced.pt"}


def test_an_exported_program_needs_trust(compiled, capsys):
    # torch.export.load unpickles parts of a .pt2 (pickled weights, opaque objects) itself
    with pytest.raises(ModelError, match=r"ExportedProgram.*--trust-file"):
        load_torch_model(str(compiled["exported"]), error=ModelError)
    assert main(["inspect", str(compiled["exported"])]) == 2
    assert "--trust-file" in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["exported", "torchscript"])
def test_compiled_formats_load_and_show_their_pooling(kind, compiled, torch_models):
    trust = kind == "exported"
    loaded = load_torch_model(str(compiled[kind]), trust=trust)
    assert loaded.format == kind and loaded.sha256
    x = torch.randn(*SHAPES["resnet"])
    torch.testing.assert_close(loaded.module(x), torch_models["resnet"](x))
    inv = read_model(compiled[kind], {"": SHAPES["resnet"]}, trust=trust)
    ops = [layer.op for layer in inv.layers]
    assert ops == ["max", "avg", "global_avg"]


@pytest.mark.parametrize("kind", ["exported", "torchscript"])
def test_compiled_formats_profile_and_bench(kind, compiled, inputs, tmp_path, capsys):
    argv = _commands(str(compiled[kind]), inputs, tmp_path)
    trust = ["--trust-file"] if kind == "exported" else []
    assert main([*argv["profile"], "--json", *trust]) == 0, capsys.readouterr().err
    assert main([*argv["bench model"], "--json", *trust]) == 0, capsys.readouterr().err


def test_a_model_module_that_fails_as_it_imports_is_bad_input(tmp_path, monkeypatch):
    """The user's module raising at import is their input failing (exit 2), not a bug in avgpool."""
    (tmp_path / "broken_models.py").write_text("raise RuntimeError('operator torchvision::nms missing')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModelError, match=r"broken_models:net: importing it failed \(RuntimeError: operator"):
        load_torch_model("broken_models:net", error=ModelError)
    assert main(["inspect", "broken_models:net", "--input-shape", "1x3x8x8"]) == 2
