"""Conformance with TensorFlow, Keras and Flax through golden files (tests/golden/*.npz).

The files were written by the real frameworks (scripts/make_golden.py, run by hand); these
tests need only NumPy and avgpool. Each case's recorded framework arguments are turned into a
`Window` with the matching ``Window.from_*`` and the op is run with ``window=``; the result must
equal the framework's output in shape, dtype and value (float64: rtol = atol = 1e-12; NaN and
infinities at the same places). See tests/golden/README.md for the file schema.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import pytest

import avgpool
from avgpool import Window

from ._tolerances import conformance_tol

GOLDEN = Path(__file__).resolve().parent.parent / "golden"
FRAMEWORKS = ("tensorflow", "keras", "flax")


@functools.cache
def _load(framework: str) -> tuple[dict, list[dict], dict]:
    with np.load(GOLDEN / f"{framework}.npz") as npz:
        arrays = {k: npz[k] for k in npz.files if k not in ("cases", "meta")}
        cases = json.loads(str(npz["cases"]))
        meta = json.loads(str(npz["meta"]))
    return arrays, cases, meta


def _case_id(framework: str, case: dict) -> str:
    if framework == "tensorflow":
        pad = case["padding"] if isinstance(case["padding"], str) else "EXPLICIT"
        detail = f"{case['data_format']}-{pad}"
    elif framework == "keras":
        cfg = case["config"]
        detail = f"{case['class_name']}-{cfg['data_format']}"
        detail += f"-{cfg['padding']}" if "padding" in cfg else f"-keepdims{cfg['keepdims']}"
    else:
        pad = case["padding"] if isinstance(case["padding"], str) else "EXPLICIT"
        detail = f"{pad}" + ("" if case["batched"] else "-unbatched")
        if case["op"] == "avg":
            detail += f"-cip{int(case['count_include_pad'])}"
    return f"{framework}-{case['id']:03d}-{case['op']}-{case['ndim']}d-{detail}-{case['dtype']}"


def _params():
    out = []
    for framework in FRAMEWORKS:
        for case in _load(framework)[1]:
            out.append(pytest.param(framework, case["id"], id=_case_id(framework, case)))
    return out


PARAMS = _params()


def _window(framework: str, case: dict) -> tuple[Window, bool]:
    """The Window for a case, and whether the case's layout is channels-last."""
    if framework == "tensorflow":
        window = Window.from_tensorflow(
            case["ksize"], case["strides"], case["padding"], case["data_format"], op=case["op"]
        )
        return window, case["data_format"].endswith("C")
    if framework == "keras":
        window = Window.from_keras({"class_name": case["class_name"], "config": case["config"]})
        return window, case["config"]["data_format"] == "channels_last"
    kwargs = {} if case["op"] == "max" else {"count_include_pad": case["count_include_pad"]}
    window = Window.from_flax(case["window_shape"], case["strides"], case["padding"], **kwargs)
    return window, True


def _run(framework: str, case: dict, x: np.ndarray) -> np.ndarray:
    window, channels_last = _window(framework, case)
    assert window.channels_last is channels_last
    assert window.ndim == case["ndim"]
    op = case["op"]
    if op == "avg":
        return avgpool.avg_pool(x, window=window)
    if op == "max":
        return avgpool.max_pool(x, window=window)
    keepdims = bool(case["config"]["keepdims"])
    fn = avgpool.global_avg_pool if op == "global_avg" else avgpool.global_max_pool
    return fn(x, window=window, keepdims=keepdims)


def _case(framework: str, case_id: int) -> tuple[dict, np.ndarray, np.ndarray]:
    arrays, cases, _ = _load(framework)
    case = cases[case_id]
    assert case["id"] == case_id
    return case, arrays[f"x_{case_id}"], arrays[f"y_{case_id}"]


@pytest.mark.parametrize(("framework", "case_id"), PARAMS)
def test_golden_forward(framework: str, case_id: int) -> None:
    case, x, expected = _case(framework, case_id)
    actual = _run(framework, case, x.copy())
    assert isinstance(actual, np.ndarray), type(actual)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    assert actual.dtype == expected.dtype, (actual.dtype, expected.dtype)
    np.testing.assert_allclose(
        actual, expected, equal_nan=True, **conformance_tol(expected.dtype), err_msg=json.dumps(case)
    )


@pytest.mark.parametrize(("framework", "case_id"), PARAMS)
def test_golden_output_shape(framework: str, case_id: int) -> None:
    case, x, expected = _case(framework, case_id)
    window, channels_last = _window(framework, case)
    want = expected.shape
    if case["op"].startswith("global") and not case["config"]["keepdims"]:
        # Window knows no keepdims: its shape keeps the pooled axes as length 1.
        ones = (1,) * case["ndim"]
        n, c = want
        want = (n, *ones, c) if channels_last else (n, c, *ones)
    assert window.output_shape(x.shape) == want


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_golden_file_is_sound(framework: str) -> None:
    arrays, cases, meta = _load(framework)
    assert meta["framework"] == framework
    assert 60 <= len(cases) <= 150
    assert [c["id"] for c in cases] == list(range(len(cases)))
    assert len(arrays) == 2 * len(cases)
    for case in cases:
        x, y = arrays[f"x_{case['id']}"], arrays[f"y_{case['id']}"]
        assert list(x.shape) == case["x_shape"] and list(y.shape) == case["y_shape"]
        assert x.dtype == y.dtype == np.dtype(case["dtype"])
    ops = {c["op"] for c in cases}
    assert {"avg", "max"} <= ops
    assert {c["ndim"] for c in cases} == {1, 2, 3}
    assert any(c.get("note") == "nan/inf input" for c in cases)
