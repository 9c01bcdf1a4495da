"""verify: every pooling node of real models matches the reference in ONNX Runtime; ORT's
known deviation fails with its reason; inputs from .npz."""

from __future__ import annotations

import numpy as np
import pytest

from avgpool.inspect import ModelError, verify

from .conftest import SHAPES


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_real_models_pass(onnx_models, name):
    report = verify(onnx_models[name], random=2)
    assert report.passed and report.runs == 2
    for check in report.checks:
        if check.op in ("max", "global_max"):
            assert check.tolerance == 0.0 and check.max_abs_diff == 0.0
        else:
            assert 0 < check.tolerance < 1e-4 and check.max_abs_diff <= check.tolerance


def test_broken_geometry_still_verifies(broken):
    # asymmetric pads are legal ONNX: ORT computes them as the spec says
    assert verify(broken["asymmetric"]).passed


def test_known_ort_deviation_fails_with_its_reason(broken):
    report = verify(broken["dilated_same"])
    (failure,) = report.failures
    assert failure.name == "/maxpool/MaxPool"
    assert failure.runtime_shape == (1, 4, 31, 31) and failure.reference_shape == (1, 4, 32, 32)
    assert "known ONNX Runtime deviation: ORT computes SAME pads from the undilated kernel" in failure.detail
    assert [c.passed for c in report.checks[1:]] == [True, True]


def test_inputs_from_npz(tmp_path, onnx_models):
    x = 100 * np.random.default_rng(1).standard_normal((1, 3, 32, 32)).astype(np.float32)
    np.savez(tmp_path / "in.npz", image=x)  # one array feeds the one input, whatever its key
    report = verify(onnx_models["resnet"], inputs=tmp_path / "in.npz")
    assert report.passed and report.runs == 1 and report.inputs == {"x": (1, 3, 32, 32)}
    assert report.checks[0].runtime_shape == (1, 4, 16, 16)
    np.savez(tmp_path / "big.npz", x=np.zeros((2, 3, 32, 32), np.float32))
    with pytest.raises(Exception, match="contradicts"):  # the export fixed the batch to 1
        verify(onnx_models["resnet"], inputs=tmp_path / "big.npz")
    with pytest.raises(ModelError, match=r"absent\.npz: no such inputs file"):
        verify(onnx_models["resnet"], inputs=tmp_path / "absent.npz")


def test_a_wrong_tolerance_would_fail(onnx_models, monkeypatch):
    """The comparison is live: a reference off by 1e-4 relative fails every node."""
    import importlib

    module = importlib.import_module("avgpool.inspect.verify")

    real = module._reference
    monkeypatch.setattr(module, "_reference", lambda layer, x: real(layer, x) * (1 + 1e-4))
    report = verify(onnx_models["inception"])
    assert [c.passed for c in report.checks] == [False] * 4
    assert "> tolerance" in report.checks[0].detail
