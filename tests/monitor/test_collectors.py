"""Collectors: PyTorch hooks and ONNX Runtime give the same numbers as the layer outputs."""

from __future__ import annotations

import numpy as np
import pytest

from avgpool.monitor import (
    Profile,
    ProfileError,
    TorchCollector,
    compare,
    iter_batches,
    load_inputs,
    profile_model,
    profile_onnx,
    profile_torch,
)

torch = pytest.importorskip("torch")


def outputs(model, x, names):
    seen = {}
    modules = dict(model.named_modules())
    handles = [
        modules[n].register_forward_hook(
            lambda m, a, o, n=n: seen.setdefault(n, []).append(o.detach().numpy())
        )
        for n in names
    ]
    with torch.no_grad():
        model(torch.from_numpy(x))
    for h in handles:
        h.remove()
    return {n: np.concatenate(v) for n, v in seen.items()}


def test_torch_profiles_every_pooling_module(models, images):
    p = profile_torch(models["base"], [images[:16], images[16:]])
    assert list(p.layers) == ["pool1", "pool2", "gap"]
    assert [p[n].op for n in p.layers] == ["MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d"]
    assert p.batches == 2 and p.model["format"] == "torch" and len(p.model["sha256"]) == 64
    assert [e["op"] for e in p.model["pooling"]] == ["max", "avg", "adaptive_avg"]
    ref = outputs(models["base"], images, ["pool1", "gap"])
    y = np.moveaxis(ref["pool1"], 1, 0).reshape(4, -1).astype(np.float64)
    np.testing.assert_allclose(p["pool1"].mean, y.mean(1), rtol=1e-6)
    np.testing.assert_allclose(p["pool1"].std, y.std(1), rtol=1e-5)
    assert p["gap"].count.tolist() == [48] * 6 and p["gap"].sample_shape == (6, 1, 1)


def test_torch_named_modules_and_errors(models, images):
    p = profile_torch(models["base"], [images], layers=["conv2", "pool2"])
    assert list(p.layers) == ["conv2", "pool2"]
    with pytest.raises(ProfileError, match="no module named"):
        profile_torch(models["base"], [images], layers=["nope"])
    with TorchCollector(models["base"], ["stem"], Profile()) as c, torch.no_grad():
        models["base"](torch.from_numpy(images[:4]))
    assert c.profile["stem"].count.sum() == 4 * 4 * 12 * 12


def test_changing_the_head_pool_drifts_only_the_head(models, images):
    base = profile_torch(models["base"], [images])
    cand = profile_torch(models["head_max"], [images], like=base)
    report = compare(base, cand)
    assert {d.name: d.verdict for d in report.layers} == {"pool1": "ok", "pool2": "ok", "gap": "fail"}
    assert report.by_name("pool1").metrics["psi"] == 0.0
    assert report.notes == ("gap: op changed from AdaptiveAvgPool2d to AdaptiveMaxPool2d",)


def test_onnx_matches_torch(models, onnx_files, images):
    p_onnx = profile_onnx(onnx_files["base"], [{"image": images[:20]}, {"image": images[20:]}])
    assert list(p_onnx.layers) == ["/pool1/MaxPool", "/pool2/AveragePool", "/gap/GlobalAveragePool"]
    p_torch = profile_torch(models["base"], [images])
    for (_, a), (_, b) in zip(p_onnx.layers.items(), p_torch.layers.items()):
        assert a.count.tolist() == b.count.tolist()
        np.testing.assert_allclose(a.mean, b.mean, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(a.std, b.std, rtol=1e-4, atol=1e-7)
    assert p_onnx.model["format"] == "onnx" and p_onnx.model["source"] == onnx_files["base"]


def test_onnx_stem_swap_matches_by_key_and_fails_from_the_stem(onnx_files, npz):
    batches = iter_batches(load_inputs(npz), 16)
    base = profile_model(onnx_files["base"], batches)
    cand = profile_model(onnx_files["stem_avg"], batches, like=base)
    assert "/pool1/AveragePool" in cand.layers
    report = compare(base, cand)
    assert report.layers[0].candidate_name == "/pool1/AveragePool"
    assert report.first_drifted.name == "/pool1/MaxPool" and report.layers[0].verdict == "fail"


def test_onnx_tensor_layers_and_bad_names(onnx_files, images):
    p = profile_onnx(onnx_files["base"], [{"x": images}], layers=["pool2", "/stem/Conv"])
    assert list(p.layers) == ["/pool2/AveragePool", "/stem/Conv"]
    with pytest.raises(ProfileError, match="no node or tensor"):
        profile_onnx(onnx_files["base"], [{"x": images}], layers=["nope"])


def test_load_inputs_errors(tmp_path):
    bad = tmp_path / "bad.npz"
    np.savez(bad, a=np.zeros((3, 2)), b=np.zeros((4, 2)))
    with pytest.raises(ProfileError, match="same number of samples"):
        load_inputs(bad)
    with pytest.raises(ProfileError, match="no such inputs file"):
        load_inputs(tmp_path / "none.npz")
    assert [len(b["a"]) for b in iter_batches({"a": np.zeros((5, 1))}, 2)] == [2, 2, 1]
