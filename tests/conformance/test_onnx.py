"""Conformance of avgpool with ONNX: live ONNX Runtime, ONNX's own backend node cases, from_onnx.

Sources of truth and how they disagree (probed with onnx 1.23 / opset 22, onnxruntime 1.32):

* ONNX Runtime (what users run) and the spec text agree on explicit pads, ceil mode (a last
  window that would start in the right padding is dropped, as in PyTorch), count_include_pad
  (cells of a ceil window past the explicit pads are never counted), dilations for every op,
  LpPool ``(sum |x|^p)^(1/p)`` with pads counting as 0, and MaxPool indices.
* ORT deviates from the spec for SAME_* with dilation > 1 (its pads come from the undilated
  kernel, so the output is not ``ceil(n / stride)``) and for SAME_* with stride > kernel span
  (negative pads: MaxPool errors, AveragePool/LpPool shift the windows). avgpool follows the spec
  (TensorFlow's clamped SAME); those geometries are checked against a spec oracle below.
* VALID + ceil_mode=1: ORT *and* ONNX shape inference honour ceil (last window hangs past the
  input), the spec prose says ceil has no effect. We follow ORT + shape inference (a converted
  model's declared shapes come from shape inference); see `test_valid_ceil_mode_*`.
* ORT rejects ``pads >= kernel_shape``, returns one output when the span exceeds the padded input,
  gives ``lowest()`` (not -inf) for an all-padding max window, and treats NaN in MaxPool in an
  order- and dtype-dependent way. None of those is compared here.
* onnx.reference is not used as an oracle: its LpPool rescales partial ceil windows (torch's
  trick) and its ceil-mode padding shifts windows when two or more cells are missing.

ORT has no double kernel for AveragePool, LpPool and the Global ops, so those run in float32 and
compare with the float32 row of the shared tolerance table (rtol 1e-5 ~ 84 float32 eps: ORT
accumulates in float32, avgpool may sum in another order). MaxPool runs in float64, int8, uint8
and must be exact (a max picks an element).
"""

from __future__ import annotations

import functools
import importlib
import itertools
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper  # noqa: E402

import avgpool  # noqa: E402

from ._tolerances import conformance_tol  # noqa: E402

OPSET = 22

CASES = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
FEW_CASES = settings(CASES, max_examples=25)


# --------------------------------------------------------------------------------------------
# ONNX Runtime helpers


def _model_bytes(op: str, attrs: dict, shape: tuple, dtype, n_outputs: int = 1) -> bytes:
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    x = helper.make_tensor_value_info("X", elem, list(shape))
    outs = [helper.make_tensor_value_info("Y", elem, None)]
    if n_outputs == 2:
        outs.append(helper.make_tensor_value_info("I", TensorProto.INT64, None))
    node = helper.make_node(op, ["X"], [o.name for o in outs], **attrs)
    graph = helper.make_graph([node], f"{op.lower()}_probe", [x], outs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 10
    return model.SerializeToString()


def _freeze(attrs: dict) -> tuple:
    return tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in attrs.items()))


@functools.lru_cache(maxsize=512)
def _session(op: str, frozen: tuple, shape: tuple, dtype: str, n_outputs: int):
    attrs = {k: list(v) if isinstance(v, tuple) else v for k, v in frozen}
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(
        _model_bytes(op, attrs, shape, dtype, n_outputs),
        options,
        providers=["CPUExecutionProvider"],
    )


def run_ort(op: str, attrs: dict, x: np.ndarray, n_outputs: int = 1):
    """One ONNX node on ``x`` in ONNX Runtime (CPU); a list of outputs when n_outputs == 2."""
    sess = _session(op, _freeze(attrs), tuple(x.shape), x.dtype.name, n_outputs)
    out = sess.run(None, {"X": x})
    return out if n_outputs == 2 else out[0]


def assert_close(actual, expected, *, exact: bool = False) -> None:
    expected = np.asarray(expected)
    assert isinstance(actual, np.ndarray), type(actual)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    assert actual.dtype == expected.dtype, (actual.dtype, expected.dtype)
    if exact or not np.issubdtype(expected.dtype, np.floating):
        np.testing.assert_array_equal(actual, expected)
    else:
        np.testing.assert_allclose(actual, expected, **conformance_tol(expected.dtype))


def onnx_indices(torch_style: np.ndarray, spatial: tuple, storage_order: int = 0) -> np.ndarray:
    """avgpool/torch MaxPool indices (flat per (n, c) plane, row-major) -> ONNX's.

    ONNX flattens over the whole unpadded input: ``(n*C + c) * prod(spatial) + flat_spatial``,
    with ``flat_spatial`` row-major (storage_order=0) or column-major over the spatial axes
    (storage_order=1).
    """
    idx = np.asarray(torch_style, dtype=np.int64)
    plane = math.prod(spatial)
    if storage_order == 1:
        coords = np.unravel_index(idx, spatial)
        idx = np.ravel_multi_index(coords[::-1], spatial[::-1]).astype(np.int64)
    n, c = idx.shape[:2]
    base = (np.arange(n * c, dtype=np.int64) * plane).reshape((n, c) + (1,) * (idx.ndim - 2))
    return idx + base


# --------------------------------------------------------------------------------------------
# a direct transcription of the spec, for the geometries where ORT is known to deviate


def spec_axis(n, k, s, d, auto_pad, pads, ceil):
    """(out, pad_before, pad_after) on one axis, per the ONNX spec (SAME pads clamped at 0)."""
    span = (k - 1) * d + 1
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        out = -(-n // s)
        total = max((out - 1) * s + span - n, 0)
        before = total // 2 if auto_pad == "SAME_UPPER" else total - total // 2
        return out, before, total - before
    if auto_pad == "VALID":
        pads = (0, 0)  # ceil handled like explicit zero pads (ORT + onnx shape inference)
    before, after = pads
    room = n + before + after - span
    if ceil:
        out = -(-room // s) + 1
        if (out - 1) * s >= n + before:
            out -= 1
    else:
        out = room // s + 1
    return out, before, after


def spec_pool(x, op, kernel, strides, dilations, auto_pad="NOTSET", pads=None, ceil=0, cip=0, p=2):
    nd = x.ndim - 2
    pads = pads or [0] * (2 * nd)
    geo = [
        spec_axis(
            x.shape[2 + i],
            kernel[i],
            strides[i],
            dilations[i],
            auto_pad,
            (pads[i], pads[nd + i]),
            ceil,
        )
        for i in range(nd)
    ]
    xd = x.astype(np.float64)
    empty = np.zeros(x.shape[:2])
    out = np.zeros(x.shape[:2] + tuple(g[0] for g in geo))
    for o in itertools.product(*(range(g[0]) for g in geo)):
        taps = []
        for i, (_, before, after) in enumerate(geo):
            n = x.shape[2 + i]
            cells = (o[i] * strides[i] - before + j * dilations[i] for j in range(kernel[i]))
            taps.append([c for c in cells if -before <= c < n + after])
        window = list(itertools.product(*taps))
        real = [c for c in window if all(0 <= c[i] < x.shape[2 + i] for i in range(nd))]
        vals = np.stack([xd[(slice(None), slice(None), *c)] for c in real] + [empty], -1)[..., :-1]
        if op == "AveragePool":
            # a window with no real cell averages to 0 (ORT with cip=0, avgpool, PyTorch)
            divisor = len(window) if cip else len(real)
            out[(slice(None), slice(None), *o)] = vals.sum(-1) / max(divisor, 1)
        elif op == "MaxPool":
            out[(slice(None), slice(None), *o)] = vals.max(-1)
        else:
            out[(slice(None), slice(None), *o)] = (np.abs(vals) ** p).sum(-1) ** (1.0 / p)
    return out


def _has_empty_window(shape, kernel, strides, dilations, auto_pad, pads, ceil) -> bool:
    """Whether some window has no real input cell (dilation stepping over the whole input)."""
    nd = len(kernel)
    pads = pads or [0] * (2 * nd)
    for i in range(nd):
        n = shape[2 + i]
        out, before, _ = spec_axis(
            n, kernel[i], strides[i], dilations[i], auto_pad, (pads[i], pads[nd + i]), ceil
        )
        for o in range(out):
            cells = (o * strides[i] - before + j * dilations[i] for j in range(kernel[i]))
            if not any(0 <= c < n for c in cells):
                return True
    return False


def _ort_same_matches_spec(n, k, s, d) -> bool:
    """ORT's SAME_* pads equal the spec's only without dilation and with a non-negative need."""
    return d == 1 and (-(-n // s) - 1) * s + k - n >= 0


# --------------------------------------------------------------------------------------------
# geometry strategy


@st.composite
def geometries(draw, *, op: str, max_nd: int = 3):
    """(shape, attrs) for one pooling node that ORT runs exactly as the spec says."""
    nd = draw(st.integers(1, max_nd))
    sizes = {1: (1, 9), 2: (1, 7), 3: (1, 4)}[nd]
    n_c = (draw(st.integers(1, 2)), draw(st.integers(1, 3)))
    spatial = tuple(draw(st.integers(*sizes)) for _ in range(nd))
    kernel = [draw(st.integers(1, 4)) for _ in range(nd)]
    strides = [draw(st.integers(1, 3)) for _ in range(nd)]
    dilations = [draw(st.sampled_from([1, 1, 2, 3])) for _ in range(nd)]
    auto_pad = draw(st.sampled_from(["NOTSET", "NOTSET", "NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"]))
    ceil = draw(st.integers(0, 1)) if auto_pad != "VALID" else 0
    attrs: dict = {"kernel_shape": kernel}
    if draw(st.booleans()) or any(s != 1 for s in strides):
        attrs["strides"] = strides
    if any(d != 1 for d in dilations) or draw(st.booleans()):
        attrs["dilations"] = dilations
    if ceil:
        attrs["ceil_mode"] = 1
    pads = None
    if auto_pad == "NOTSET":
        # ORT requires every pad < kernel_shape; asymmetric pads are drawn on purpose.
        pads = [draw(st.integers(0, k - 1)) for k in kernel] + [draw(st.integers(0, k - 1)) for k in kernel]
        if any(pads) or draw(st.booleans()):
            attrs["pads"] = pads
    else:
        attrs["auto_pad"] = draw(st.sampled_from([auto_pad, auto_pad.encode()]))
    for i, n in enumerate(spatial):
        span = (kernel[i] - 1) * dilations[i] + 1
        if auto_pad == "NOTSET":
            assume(n + pads[i] + pads[nd + i] >= span)
        elif auto_pad == "VALID":
            assume(n >= span)
        else:
            assume(_ort_same_matches_spec(n, kernel[i], strides[i], dilations[i]))
    shape = n_c + spatial
    if op == "MaxPool":
        # ORT returns lowest() where avgpool returns -inf for an all-padding window.
        assume(not _has_empty_window(shape, kernel, strides, dilations, auto_pad, pads, ceil))
    if op == "AveragePool":
        attrs["count_include_pad"] = draw(st.integers(0, 1))
    return shape, attrs


def _values(shape, dtype, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if np.issubdtype(np.dtype(dtype), np.integer):
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, size=shape, endpoint=True, dtype=dtype)
    return rng.standard_normal(shape).astype(dtype)


def _window(attrs, shape, op_type):
    return avgpool.Window.from_onnx(attrs, shape, op_type=op_type)


# --------------------------------------------------------------------------------------------
# a. live ONNX Runtime


@CASES
@given(geo=geometries(op="AveragePool"), seed=st.integers(0, 2**16))
def test_average_pool_matches_ort(geo, seed):
    shape, attrs = geo
    x = _values(shape, np.float32, seed)
    w = _window(attrs, shape, "AveragePool")
    expected = run_ort("AveragePool", attrs, x)
    assert w.output_shape(shape) == expected.shape
    assert_close(avgpool.avg_pool(x, window=w), expected)


@CASES
@given(geo=geometries(op="MaxPool"), seed=st.integers(0, 2**16), order=st.integers(0, 1))
def test_max_pool_matches_ort_with_indices(geo, seed, order):
    shape, attrs = geo
    attrs = {**attrs, "storage_order": order}
    x = _values(shape, np.float64, seed)
    w = _window(attrs, shape, "MaxPool")
    y_ort, i_ort = run_ort("MaxPool", attrs, x, n_outputs=2)
    y, idx = avgpool.max_pool(x, window=w, return_indices=True)
    assert_close(y, y_ort, exact=True)
    assert idx.dtype == np.int64
    np.testing.assert_array_equal(onnx_indices(idx, shape[2:], order), i_ort)
    assert_close(avgpool.max_pool(x, window=w), y_ort, exact=True)


@FEW_CASES
@given(
    geo=geometries(op="MaxPool", max_nd=2),
    seed=st.integers(0, 2**16),
    dtype=st.sampled_from(["int8", "uint8", "float32"]),
)
def test_max_pool_matches_ort_other_dtypes(geo, seed, dtype):
    shape, attrs = geo
    x = _values(shape, np.dtype(dtype), seed)
    w = _window(attrs, shape, "MaxPool")
    y_ort, i_ort = run_ort("MaxPool", attrs, x, n_outputs=2)
    y, idx = avgpool.max_pool(x, window=w, return_indices=True)
    assert_close(y, y_ort, exact=True)
    # ties are frequent in int8: both pick the first maximum in row-major scan order
    np.testing.assert_array_equal(onnx_indices(idx, shape[2:]), i_ort)


@CASES
@given(geo=geometries(op="LpPool"), seed=st.integers(0, 2**16), p=st.sampled_from([1, 2, 3]))
def test_lp_pool_matches_ort(geo, seed, p):
    shape, attrs = geo
    attrs = {**attrs, "p": p}
    x = _values(shape, np.float32, seed)
    w = _window(attrs, shape, "LpPool")
    expected = run_ort("LpPool", attrs, x)
    assert_close(avgpool.lp_pool(x, p, window=w, convention="onnx"), expected)


@FEW_CASES
@given(
    shape=st.lists(st.integers(1, 5), min_size=3, max_size=5).map(tuple),
    seed=st.integers(0, 2**16),
    op=st.sampled_from(["GlobalAveragePool", "GlobalMaxPool"]),
)
def test_global_pools_match_ort(shape, seed, op):
    x = _values(shape, np.float32, seed)
    expected = run_ort(op, {}, x)
    fn = avgpool.global_avg_pool if op == "GlobalAveragePool" else avgpool.global_max_pool
    assert_close(fn(x), expected, exact=op == "GlobalMaxPool")
    w = _window({}, shape, op)
    assert w.output_shape(shape) == expected.shape
    pool = avgpool.avg_pool if op == "GlobalAveragePool" else avgpool.max_pool
    assert_close(pool(x, window=w), expected, exact=op == "GlobalMaxPool")


def test_ort_has_no_double_average_pool():
    """Why AveragePool/LpPool/Global* are compared in float32: ORT's CPU EP lacks double kernels.

    If a future ORT adds them, switch those tests to float64 and the 1e-12 tolerance.
    """
    x = np.ones((1, 1, 3), dtype=np.float64)
    with pytest.raises(Exception, match=r"NOT_IMPLEMENTED|Could not find an implementation"):
        run_ort("AveragePool", {"kernel_shape": [2]}, x)


# explicit cases pinned from the research (small enough to read)


@pytest.mark.parametrize(
    ("attrs", "n", "expected"),
    [
        # ceil: the 4th window would start in the right padding and is dropped (3 outputs)
        ({"kernel_shape": [2], "strides": [2], "pads": [1, 1], "ceil_mode": 1}, 5, [1.0, 2.5, 4.5]),
        # count_include_pad + ceil: last window = {6, pad}, the cell past the pad is not counted
        (
            {"kernel_shape": [3], "strides": [2], "pads": [1, 1], "ceil_mode": 1, "count_include_pad": 1},
            6,
            [1.0, 3.0, 5.0, 3.0],
        ),
        # dilated + count_include_pad: divisor counts taps inside [-pad, n + pad)
        (
            {
                "kernel_shape": [2],
                "strides": [2],
                "dilations": [2],
                "pads": [1, 1],
                "ceil_mode": 1,
                "count_include_pad": 1,
            },
            6,
            [1.0, 3.0, 5.0, 6.0],
        ),
        # two implicit ceil cells: onnx.reference shifts this window left and gets [2.0, 3.5]
        ({"kernel_shape": [4], "strides": [3], "ceil_mode": 1}, 5, [2.5, 4.5]),
        # asymmetric pads, window starting exactly at the input end is dropped
        (
            {"kernel_shape": [3], "strides": [2], "pads": [0, 2], "ceil_mode": 1, "count_include_pad": 1},
            4,
            [2.0, 7 / 3],
        ),
    ],
)
def test_average_pool_pinned_cases(attrs, n, expected):
    x = np.arange(1, n + 1, dtype=np.float32).reshape(1, 1, n)
    expected = np.asarray(expected, dtype=np.float32).reshape(1, 1, -1)
    assert_close(run_ort("AveragePool", attrs, x), expected)
    assert_close(avgpool.avg_pool(x, window=_window(attrs, x.shape, "AveragePool")), expected)


def test_lp_pool_ceil_partial_window_is_not_rescaled():
    """ORT (and the spec) sum the real cells; onnx.reference rescales like torch and gets 9."""
    attrs = {"kernel_shape": [3], "strides": [2], "pads": [1, 1], "ceil_mode": 1, "p": 1}
    x = np.arange(1, 7, dtype=np.float32).reshape(1, 1, 6)
    expected = np.array([[[3.0, 9.0, 15.0, 6.0]]], dtype=np.float32)
    assert_close(run_ort("LpPool", attrs, x), expected)
    w = _window(attrs, x.shape, "LpPool")
    assert_close(avgpool.lp_pool(x, 1, window=w, convention="onnx"), expected)


def test_lp_pool_is_absolute_value_norm():
    x = np.array([[[-3.0, 4.0, -1.0]]], dtype=np.float32)
    attrs = {"kernel_shape": [2], "p": 3}
    expected = run_ort("LpPool", attrs, x)
    np.testing.assert_allclose(expected.ravel(), [91 ** (1 / 3), 65 ** (1 / 3)], rtol=1e-6)
    w = _window(attrs, x.shape, "LpPool")
    assert_close(avgpool.lp_pool(x, 3, window=w, convention="onnx"), expected)


@pytest.mark.parametrize("op", ["AveragePool", "LpPool", "GlobalAveragePool"])
def test_nan_propagates_like_ort(op):
    """ORT's AveragePool/LpPool/GlobalAveragePool propagate NaN (plain IEEE sums); so must we.

    MaxPool is deliberately absent: ORT's float64 loop keeps a NaN only when it is the first
    cell of the window, its float32 MLAS path drops NaN, GlobalMaxPool keeps it only when last.
    """
    x = np.array([[[1.0, np.nan, 2.0, 3.0, 4.0]]], dtype=np.float32)
    attrs = {} if op.startswith("Global") else {"kernel_shape": [2]}
    if op == "LpPool":
        attrs["p"] = 2
    expected = run_ort(op, attrs, x)
    w = _window(attrs, x.shape, op)
    if op == "LpPool":
        got = avgpool.lp_pool(x, 2, window=w, convention="onnx")
    else:
        got = avgpool.avg_pool(x, window=w)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    assert_close(np.nan_to_num(got), np.nan_to_num(expected))


@pytest.mark.parametrize(
    ("n", "kernel", "stride", "expected_len"),
    [(6, 3, 2, 3), (4, 2, 3, 2), (7, 3, 3, 3), (5, 2, 2, 3)],
)
@pytest.mark.parametrize("op", ["AveragePool", "MaxPool", "LpPool"])
def test_valid_ceil_mode_follows_ort_and_shape_inference(op, n, kernel, stride, expected_len):
    """VALID + ceil_mode=1: ORT and ONNX shape inference apply ceil; the spec prose does not.

    Spec text: ``ceil((n - span + 1) / stride)`` (== the floor formula); ORT and
    onnx.shape_inference: ``ceil((n - span) / stride) + 1``, the last window hanging past the
    input and averaging its real cells. We follow ORT + shape inference (see module docstring).
    """
    attrs = {"kernel_shape": [kernel], "strides": [stride], "auto_pad": "VALID", "ceil_mode": 1}
    if op == "LpPool":
        attrs["p"] = 2
    dtype = np.float64 if op == "MaxPool" else np.float32
    x = np.arange(1, n + 1, dtype=dtype).reshape(1, 1, n)
    expected = run_ort(op, attrs, x)
    assert expected.shape == (1, 1, expected_len)
    inferred = onnx.shape_inference.infer_shapes(
        onnx.load_from_string(_model_bytes(op, attrs, x.shape, dtype))
    )
    dims = inferred.graph.output[0].type.tensor_type.shape.dim
    assert tuple(d.dim_value for d in dims) == (1, 1, expected_len)
    w = _window(attrs, x.shape, op)
    assert w.output_shape(x.shape) == expected.shape
    if op == "AveragePool":
        got = avgpool.avg_pool(x, window=w)
    elif op == "MaxPool":
        got = avgpool.max_pool(x, window=w)
    else:
        got = avgpool.lp_pool(x, 2, window=w, convention="onnx")
    assert_close(got, expected, exact=op == "MaxPool")


# where ORT deviates from the spec: avgpool follows the spec, checked against spec_pool


@st.composite
def same_geometries(draw):
    nd = draw(st.integers(1, 2))
    spatial = tuple(draw(st.integers(1, 7)) for _ in range(nd))
    kernel = [draw(st.integers(1, 4)) for _ in range(nd)]
    strides = [draw(st.integers(1, 4)) for _ in range(nd)]
    dilations = [draw(st.integers(1, 3)) for _ in range(nd)]
    auto_pad = draw(st.sampled_from(["SAME_UPPER", "SAME_LOWER"]))
    assume(
        not all(
            _ort_same_matches_spec(n, k, s, d)
            for n, k, s, d in zip(spatial, kernel, strides, dilations, strict=True)
        )
    )
    return (1, 2, *spatial), kernel, strides, dilations, auto_pad


@FEW_CASES
@given(
    geo=same_geometries(),
    seed=st.integers(0, 2**16),
    op=st.sampled_from(["AveragePool", "MaxPool", "LpPool"]),
    cip=st.integers(0, 1),
)
def test_same_padding_follows_spec_where_ort_deviates(geo, seed, op, cip):
    """SAME_* with dilation or stride > span: out = ceil(n/s), pad total max(0, ...) on the span.

    ORT computes these pads from the undilated kernel and lets them go negative; e.g.
    n=7, k=2, dilation=2, SAME_UPPER gives 6 outputs in ORT and 7 per the spec and ONNX shape
    inference. avgpool must follow the spec (= TensorFlow 'SAME').
    """
    shape, kernel, strides, dilations, auto_pad = geo
    assume(op != "MaxPool" or not _has_empty_window(shape, kernel, strides, dilations, auto_pad, None, 0))
    attrs = {"kernel_shape": kernel, "strides": strides, "dilations": dilations, "auto_pad": auto_pad}
    if op == "AveragePool":
        attrs["count_include_pad"] = cip
    x = _values(shape, np.float64, seed)
    expected = spec_pool(x, op, kernel, strides, dilations, auto_pad, cip=cip, p=2)
    w = _window(attrs, shape, op)
    assert w.output_shape(shape) == shape[:2] + tuple(-(-n // s) for n, s in zip(shape[2:], strides))
    if op == "AveragePool":
        got = avgpool.avg_pool(x, window=w)
    elif op == "MaxPool":
        got = avgpool.max_pool(x, window=w)
    else:
        got = avgpool.lp_pool(x, 2, window=w, convention="onnx")
    assert_close(got, expected)


@pytest.mark.xfail(reason="ORT computes SAME pads from the undilated kernel (spec: dilated span)")
def test_ort_same_with_dilation_deviates_from_spec():
    attrs = {"kernel_shape": [2], "dilations": [2], "auto_pad": "SAME_UPPER"}
    x = np.arange(1, 8, dtype=np.float32).reshape(1, 1, 7)
    w = _window(attrs, x.shape, "AveragePool")
    assert run_ort("AveragePool", attrs, x).shape == w.output_shape(x.shape) == (1, 1, 7)


# --------------------------------------------------------------------------------------------
# b. ONNX's own backend node test cases (onnx.backend.test.case.node), stored outputs

_POOL_MODULES = ("averagepool", "maxpool", "lppool", "globalaveragepool", "globalmaxpool")
_POOL_OPS = ("AveragePool", "MaxPool", "LpPool", "GlobalAveragePool", "GlobalMaxPool")


def _backend_cases() -> dict:
    """Importing a node-case module runs its export_* functions, which register the cases."""
    try:
        package = importlib.import_module("onnx.backend.test.case.node")
        for name in _POOL_MODULES:
            importlib.import_module(f"onnx.backend.test.case.node.{name}")
    except ImportError:  # pragma: no cover - onnx without its backend test package
        return {}
    cases = {}
    for case in package._NodeTestCases:
        if case.model is not None and case.model.graph.node[0].op_type in _POOL_OPS:
            cases.setdefault(case.name, case)
    return dict(sorted(cases.items()))


BACKEND_CASES = _backend_cases()

# float32 stored outputs come from float64 numpy references rounded to float32, so 1e-6 relative
# (~8 float32 eps) is their precision. One case stores a hand-typed 4-decimal literal.
BACKEND_TOL = {"rtol": 1e-6, "atol": 1e-6}
BACKEND_TOL_OVERRIDES = {
    "test_averagepool_2d_ceil_last_window_starts_on_pad": {"rtol": 0.0, "atol": 1e-4},
}


def test_backend_cases_found():
    assert len(BACKEND_CASES) >= 40, sorted(BACKEND_CASES)
    for prefix in ("test_averagepool", "test_maxpool", "test_lppool", "test_globalaveragepool"):
        assert any(name.startswith(prefix) for name in BACKEND_CASES), prefix


@pytest.mark.parametrize("name", list(BACKEND_CASES))
def test_onnx_backend_case(name):
    case = BACKEND_CASES[name]
    node = case.model.graph.node[0]
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    op = node.op_type
    for inputs, outputs in case.data_sets:
        (x,) = inputs
        w = _window(attrs, x.shape, op)
        assert w.output_shape(x.shape) == outputs[0].shape
        tol = BACKEND_TOL_OVERRIDES.get(name, BACKEND_TOL)
        if op in ("AveragePool", "GlobalAveragePool"):
            got = [avgpool.avg_pool(x, window=w)]
        elif op == "LpPool":
            got = [avgpool.lp_pool(x, attrs.get("p", 2), window=w, convention="onnx")]
        else:
            y, idx = avgpool.max_pool(x, window=w, return_indices=True)
            got = [y, onnx_indices(idx, x.shape[2:], attrs.get("storage_order", 0))]
        for actual, expected in zip(got, outputs, strict=False):
            assert actual.shape == expected.shape, (actual.shape, expected.shape)
            assert actual.dtype == expected.dtype, (actual.dtype, expected.dtype)
            if np.issubdtype(expected.dtype, np.floating):
                np.testing.assert_allclose(actual, expected, **tol)
            else:
                np.testing.assert_array_equal(actual, expected)


# --------------------------------------------------------------------------------------------
# c. Window.from_onnx rejects bad attributes, naming them


@pytest.mark.parametrize(
    ("attrs", "shape", "names"),
    [
        ({"kernel_shape": [2, 2], "pads": [0, -1, 0, 0]}, (1, 1, 4, 4), "pads"),
        ({"kernel_shape": [2], "strides": [0]}, (1, 1, 4), "stride"),
        ({"kernel_shape": [2, 2], "strides": [1, -2]}, (1, 1, 4, 4), "stride"),
        ({"kernel_shape": [2, 2], "pads": [1, 1]}, (1, 1, 4, 4), "pads"),
        ({"kernel_shape": [2, 2], "pads": [1, 1, 1, 1, 1, 1]}, (1, 1, 4, 4), "pads"),
        ({"kernel_shape": [2, 2], "auto_pad": "SAME"}, (1, 1, 4, 4), "auto_pad"),
        ({"kernel_shape": [2, 2], "auto_pad": b"FULL"}, (1, 1, 4, 4), "auto_pad"),
        ({"kernel_shape": [2, 2], "strides": [1]}, (1, 1, 4, 4), "stride"),
        ({"kernel_shape": [2, 2], "dilations": [1, 0]}, (1, 1, 4, 4), "dilation"),
        ({"kernel_shape": [0, 2]}, (1, 1, 4, 4), "kernel"),
        ({"kernel_shape": [2, 2, 2]}, (1, 1, 4, 4), "kernel_shape"),
        ({"strides": [1, 1]}, (1, 1, 4, 4), "kernel_shape"),
    ],
)
def test_from_onnx_rejects_bad_attrs(attrs, shape, names):
    with pytest.raises(avgpool.AvgPoolError, match=names):
        avgpool.Window.from_onnx(attrs, shape, op_type="AveragePool")
    assert issubclass(avgpool.AvgPoolError, ValueError)


def test_from_onnx_rejects_unknown_op_type():
    with pytest.raises(avgpool.AvgPoolError, match="op_type"):
        avgpool.Window.from_onnx({"kernel_shape": [2]}, (1, 1, 4), op_type="Conv")


@FEW_CASES
@given(
    geo=geometries(op="MaxPool", max_nd=2),
    seed=st.integers(0, 2**16),
    op=st.sampled_from(["AveragePool", "MaxPool", "LpPool"]),
)
def test_float16_matches_ort(geo, seed, op):
    """float16 in, float16 out; values within the float16 row of the tolerance table."""
    shape, attrs = geo
    attrs = {k: v for k, v in attrs.items() if k != "count_include_pad"}
    if op == "LpPool":
        attrs["p"] = 2
    x = _values(shape, np.float16, seed)
    w = _window(attrs, shape, op)
    expected = run_ort(op, attrs, x)
    if op == "AveragePool":
        got = avgpool.avg_pool(x, window=w)
    elif op == "MaxPool":
        got = avgpool.max_pool(x, window=w)
    else:
        got = avgpool.lp_pool(x, 2, window=w, convention="onnx")
    assert_close(got, expected, exact=op == "MaxPool")


def test_pads_not_smaller_than_kernel_follow_spec():
    """The spec allows any pads >= 0; ORT rejects pads >= kernel_shape at session creation.

    With count_include_pad=1 the result is well defined (onnx.reference agrees): pads add zeros
    and count in the divisor.
    """
    attrs = {"kernel_shape": [2], "pads": [3, 3], "count_include_pad": 1}
    x = np.arange(1, 4, dtype=np.float64).reshape(1, 1, 3)
    with pytest.raises(Exception, match="Pad should be smaller than kernel"):
        run_ort("AveragePool", attrs, x.astype(np.float32))
    expected = np.array([[[0.0, 0.0, 0.5, 1.5, 2.5, 1.5, 0.0, 0.0]]])
    assert_close(avgpool.avg_pool(x, window=_window(attrs, x.shape, "AveragePool")), expected)


def test_span_larger_than_padded_input_is_an_error():
    """Spec: floor((3 - 4) / 4) + 1 = 0 outputs; ORT truncates toward zero and returns one."""
    attrs = {"kernel_shape": [4], "strides": [4], "auto_pad": "VALID"}
    x = np.ones((1, 1, 3), dtype=np.float32)
    assert run_ort("AveragePool", attrs, x).shape == (1, 1, 1)
    with pytest.raises(avgpool.AvgPoolError):
        avgpool.avg_pool(x, window=_window({"kernel_shape": [4], "strides": [4]}, None, "AveragePool"))
    with pytest.raises(avgpool.AvgPoolError):
        _window(attrs, x.shape, "AveragePool")
