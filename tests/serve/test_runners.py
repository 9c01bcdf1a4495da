"""Model runners on every source kind: outputs equal to the model run directly, pooling outputs
only on sampled runs, clear errors for inputs that do not fit."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional
pytest.importorskip("onnxruntime")

from avgpool._errors import AvgPoolError  # noqa: E402
from avgpool.serve._runners import ModelRunError, TensorSpec, datatype_of, load_runner  # noqa: E402
from tests.serve import models  # noqa: E402

POOLS = {"pool1": (2, 8, 8, 8), "pool2": (2, 8, 4, 4), "gap": (2, 8, 1, 1)}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("runners")
    return {
        "onnx": models.to_onnx(root / "tiny.onnx"),
        "exported": models.to_pt2(root / "tiny.pt2"),
        "torchscript": models.to_torchscript(root / "tiny.pt"),
    }


def _runner(kind, files):
    if kind == "module":
        return load_runner("tests.serve.models:tiny_net")
    if kind == "exported":
        return load_runner(files[kind], trust=True)
    return load_runner(files[kind], input_shapes={"": models.SHAPE} if kind == "torchscript" else None)


def _reference(x):
    model = models.tiny_net()
    seen = {}
    handles = [
        getattr(model, n).register_forward_hook(lambda m, a, o, n=n: seen.__setitem__(n, o.detach().numpy()))
        for n in POOLS
    ]
    with torch.no_grad():
        out = model(torch.from_numpy(x)).numpy()
    for h in handles:
        h.remove()
    return out, seen


KINDS = ["onnx", "module", "exported", "torchscript"]
PLATFORM = {
    "onnx": "onnxruntime_onnx",
    "module": "pytorch_module",
    "exported": "pytorch_exportedprogram",
    "torchscript": "pytorch_torchscript",
}


@pytest.mark.parametrize("kind", KINDS)
def test_outputs_equal_the_model_and_pooling_only_when_sampled(kind, files):
    runner = _runner(kind, files)
    x = models.images(2)
    want, pooled = _reference(x)
    (spec,) = runner.inputs
    assert runner.platform == PLATFORM[kind]
    assert spec.datatype == "FP32" and spec.shape == (-1, 3, 16, 16)
    assert [(o.datatype, o.shape) for o in runner.outputs] == [("FP32", (-1, 4))]
    assert runner.size_bytes > 0 and len(runner.sha256) == 64
    outputs, pooling = runner.run({spec.name: x})
    assert pooling == {}
    np.testing.assert_allclose(outputs[runner.outputs[0].name], want, rtol=1e-5, atol=1e-6)
    outputs, pooling = runner.run({spec.name: x}, sample=True)
    np.testing.assert_allclose(outputs[runner.outputs[0].name], want, rtol=1e-5, atol=1e-6)
    if kind == "torchscript":
        assert runner.layers == () and pooling == {}
        assert "unavailable for TorchScript" in runner.telemetry_note
        return
    assert runner.telemetry_note is None
    assert len(runner.layers) == 3 and set(pooling) == set(runner.layers)
    for layer, module in zip(runner.layers, POOLS):  # execution order, each the module's output
        assert module in layer
        np.testing.assert_allclose(pooling[layer], pooled[module], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_example_inputs_and_warmup(kind, files):
    runner = _runner(kind, files)
    example = runner.example_inputs(batch=3)
    assert {k: (v.shape, v.dtype) for k, v in example.items()} == {
        runner.inputs[0].name: ((3, 3, 16, 16), np.float32)
    }
    assert runner.warmup() > 0
    runner.close()
    with pytest.raises(ModelRunError, match="is closed"):
        runner.run(runner.example_inputs())


@pytest.mark.parametrize(
    ("feeds", "message"),
    [
        ({}, r"inputs of tiny_net: missing \['x'\]; the model takes \['x'\], got \[\]"),
        (
            {"x": models.images(1), "y": models.images(1)},
            r"inputs of tiny_net: unknown \['y'\]; the model takes \['x'\], got \['x', 'y'\]",
        ),
        ({"x": models.images(1).astype(np.float64)}, "input 'x': datatype FP64 given, the model takes FP32"),
        (
            {"x": models.images(1)[0]},
            r"input 'x': shape \[3, 16, 16\] given, the model takes \[-1, 3, 16, 16\]",
        ),
        ({"x": np.zeros((1, 3, 8, 16), np.float32)}, r"input 'x': shape \[1, 3, 8, 16\] given"),
    ],
)
def test_bad_input_names_the_input(feeds, message):
    runner = load_runner("tests.serve.models:tiny_net")
    with pytest.raises(AvgPoolError, match=message):
        runner.run(feeds)


def test_onnx_bad_input_and_free_batch(files):
    runner = _runner("onnx", files)
    with pytest.raises(AvgPoolError, match=r"input 'image': shape \[2, 1, 16, 16\] given"):
        runner.run({"image": np.zeros((2, 1, 16, 16), np.float32)})
    outputs, _ = runner.run({"image": models.images(5)})
    assert outputs["logits"].shape == (5, 4)


def test_model_failure_is_a_model_run_error():
    runner = load_runner("tests.serve.models:failing_net")
    with pytest.raises(ModelRunError, match="model failing_net failed: RuntimeError: input out of range"):
        runner.run({"x": np.full((1, 3, 16, 16), 1000.0, np.float32)})
    runner.run({"x": models.images(1)})  # still serves


def test_torch_model_needs_shapes():
    with pytest.raises(AvgPoolError, match=r"needs its input shapes: pass --input-shape.*\['x'\]"):
        load_runner("tests.serve.models:bare_net")
    runner = load_runner("tests.serve.models:bare_net", input_shapes={"image": (1, 3, 16, 16)})
    assert runner.inputs == (TensorSpec("image", "FP32", (-1, 3, 16, 16)),)
    assert runner.name == "bare_net"


def test_pt2_needs_trust(files):
    with pytest.raises(AvgPoolError, match="--trust-file"):
        load_runner(files["exported"])


# torch.compile's first call imports torch.utils.mkldnn, whose ScriptModule PyTorch deprecates
@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
def test_compiled_module_samples_through_the_eager_one():
    """torch.compile's graphs skip hooks: sampled runs use the eager module, same numbers."""
    eager = load_runner("tests.serve.models:tiny_avgpool_net")
    compiled = load_runner("tests.serve.models:tiny_avgpool_net", compile=True, name="c")
    assert compiled.warmup() > 0
    x = {"x": models.images(2)}
    plain, none = compiled.run(x)
    sampled, pooling = compiled.run(x, sample=True)
    want, want_pooling = eager.run(x, sample=True)
    assert none == {}
    np.testing.assert_allclose(plain["output"], want["output"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(sampled["output"], want["output"], rtol=1e-6, atol=1e-7)
    assert set(pooling) == {"pool1", "pool2", "gap"}
    for name in pooling:
        np.testing.assert_allclose(pooling[name], want_pooling[name], rtol=1e-6)


def test_hooks_record_only_their_own_thread():
    import threading

    runner = load_runner("tests.serve.models:tiny_net")
    seen = {}
    barrier = threading.Barrier(2)

    def go(key, n, sample):
        barrier.wait()
        for _ in range(20):
            seen[key] = runner.run({"x": models.images(n)}, sample=sample)[1]

    threads = [
        threading.Thread(target=go, args=("a", 1, True)),
        threading.Thread(target=go, args=("b", 3, False)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen["b"] == {} and {v.shape[0] for v in seen["a"].values()} == {1}


def test_datatypes():
    assert [
        datatype_of(np.dtype(t)) for t in ("float32", "float64", "float16", "int64", "uint8", "bool")
    ] == [
        "FP32",
        "FP64",
        "FP16",
        "INT64",
        "UINT8",
        "BOOL",
    ]
    assert datatype_of(torch.int8) == "INT8" and datatype_of(torch.bool) == "BOOL"
    with pytest.raises(TypeError, match="complex64"):
        datatype_of(np.dtype("complex64"))


def test_exported_program_taps_functional_ops_and_whole_modules(tmp_path):
    """A .pt2 keeps no modules to hook: the interpreter reads a functional pooling op (and a
    global mean) at its node and a module exported as several ops (LPPool2d: pow, avg_pool2d,
    ...) at its last node."""
    model = models.functional_net()
    runner = load_runner(models.to_pt2(tmp_path / "f.pt2", model), trust=True)
    assert runner.layers == ("max_pool2d", "lp", "mean")
    x = models.images(2)
    with torch.no_grad():
        pooled = F.max_pool2d(model.conv(torch.from_numpy(x)), 2)
        want_lp = model.lp(pooled.abs())
    outputs, pooling = runner.run({"x": x}, sample=True)
    np.testing.assert_allclose(pooling["max_pool2d"], pooled.numpy(), rtol=1e-6)
    np.testing.assert_allclose(pooling["lp"], want_lp.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(pooling["mean"], outputs["output"])
    np.testing.assert_allclose(outputs["output"], want_lp.mean(dim=(2, 3)).numpy(), rtol=1e-5, atol=1e-6)
    # the same model as a module: the functional call has no module to hook, and says so
    module = load_runner("tests.serve.models:functional_net")
    assert module.layers == ("lp",)
    assert "functional call with no module to hook" in module.telemetry_note


def test_exported_avgpool_ops_match_the_module(tmp_path):
    runner = load_runner(models.to_pt2(tmp_path / "a.pt2", models.tiny_avgpool_net()), trust=True)
    eager = load_runner("tests.serve.models:tiny_avgpool_net")
    assert runner.warmup() > 0
    x = {"x": models.images(2)}
    (outputs, pooling), (want, want_pooling) = runner.run(x, sample=True), eager.run(x, sample=True)
    np.testing.assert_allclose(outputs["output"], want["output"], rtol=1e-6)
    assert set(pooling) == set(want_pooling) == {"pool1", "pool2", "gap"}
    for name in pooling:
        np.testing.assert_allclose(pooling[name], want_pooling[name], rtol=1e-6)


def test_pooling_outputs_are_copies_an_inplace_op_cannot_change():
    runner = load_runner("tests.serve.models:inplace_net")
    x = models.images(2)
    _, pooling = runner.run({"x": x}, sample=True)
    model = models.inplace_net()
    with torch.no_grad():
        want = model.pool1(model.stem(torch.from_numpy(x))).numpy()
    assert (want < 0).any()  # the ReLU after it would have zeroed these
    np.testing.assert_allclose(pooling["pool1"], want, rtol=1e-6)


def test_onnx_free_spatial_axes_need_shapes_for_telemetry(tmp_path):
    source = models.to_onnx(tmp_path / "free.onnx", free_spatial=True)
    bare = load_runner(source)
    assert bare.inputs[0].shape == (-1, 3, -1, -1)
    assert bare.layers == () and "pass --input-shape" in bare.telemetry_note
    runner = load_runner(source, input_shapes={"image": (1, 3, 16, 16)})
    assert len(runner.layers) == 3 and runner.telemetry_note is None
    assert runner.example_inputs(2)["image"].shape == (2, 3, 16, 16)
    outputs, pooling = runner.run({"image": models.images(1)}, sample=True)
    np.testing.assert_allclose(outputs["logits"], _reference(models.images(1))[0], rtol=1e-5, atol=1e-6)
    assert {v.shape for v in pooling.values()} == {(1, 8, 8, 8), (1, 8, 4, 4), (1, 8, 1, 1)}


@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
def test_compile_applies_to_exported_programs_and_is_refused_elsewhere(files):
    runner = load_runner(files["exported"], trust=True, compile=True)
    x = {"x": models.images(2)}
    want, _ = _reference(x["x"])
    (plain, none), (sampled, pooling) = runner.run(x), runner.run(x, sample=True)
    assert none == {} and set(pooling) == {"pool1", "pool2", "gap"}
    np.testing.assert_allclose(plain["output"], want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(sampled["output"], want, rtol=1e-5, atol=1e-6)
    for kind, what in (("onnx", "an ONNX model"), ("torchscript", "TorchScript")):
        with pytest.raises(AvgPoolError, match=f"applies to nn.Module and .pt2 models; .* is {what}"):
            load_runner(files[kind], input_shapes={"": models.SHAPE}, compile=True)


def test_trusted_pickle_serves_as_a_module(tmp_path):
    path = tmp_path / "whole.pt"
    torch.save(models.tiny_net(), path)
    with pytest.raises(AvgPoolError, match="pass --trust-file"):
        load_runner(str(path))
    runner = load_runner(str(path), trust=True)
    assert (runner.name, runner.platform, runner.layers) == (
        "whole",
        "pytorch_module",
        ("pool1", "pool2", "gap"),
    )
    assert runner.size_bytes == path.stat().st_size
    x = models.images(2)
    outputs, pooling = runner.run({"x": x}, sample=True)
    np.testing.assert_allclose(outputs["output"], _reference(x)[0], rtol=1e-6)
    assert {k: v.shape for k, v in pooling.items()} == POOLS
