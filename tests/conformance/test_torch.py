"""Conformance of avgpool with PyTorch (torch.nn.functional), forward and backward, in float64.

Every geometry drawn here is one torch accepts: ``padding <= kernel // 2`` per axis (torch checks
the kernel, not the dilated span, for max pooling too), an output of at least one cell, and for
BlurPool a reflection pad smaller than the input. Values come from a seeded NumPy generator so
that hypothesis shrinks the geometry, not the floats.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import avgpool

from ._tolerances import conformance_tol

CASES = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
FEW_CASES = settings(CASES, max_examples=30)

ND = pytest.mark.parametrize("nd", [1, 2, 3])


# --------------------------------------------------------------------------------------------
# helpers


def _t(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x))


def _np(value) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().numpy()
    return np.asarray(value)


def assert_same(actual, expected) -> None:
    """``actual`` (avgpool) equals ``expected`` (torch): shape, dtype, values (NaN == NaN)."""
    expected = _np(expected)
    assert isinstance(actual, np.ndarray), type(actual)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    assert actual.dtype == expected.dtype, (actual.dtype, expected.dtype)
    if np.issubdtype(expected.dtype, np.integer):
        np.testing.assert_array_equal(actual, expected)
    else:
        np.testing.assert_allclose(actual, expected, equal_nan=True, **conformance_tol(expected.dtype))


def to_last(a):
    """Channels-first (N, C, *spatial) to channels-last (N, *spatial, C)."""
    return np.moveaxis(_np(a), 1, -1)


def torch_grad(fn, x: np.ndarray, grad_output: np.ndarray) -> np.ndarray:
    """d<grad_output, fn(x)>/dx by torch.autograd."""
    t = _t(x).clone().requires_grad_()
    y = fn(t)
    y.backward(_t(grad_output))
    return t.grad.numpy()


def values(rng: np.random.Generator, shape, mode: str) -> np.ndarray:
    if mode == "normal":
        return rng.standard_normal(shape)
    if mode == "positive":
        return rng.uniform(0.25, 2.0, shape)
    if mode == "ties":
        return rng.integers(-2, 3, shape).astype(np.float64)
    if mode in ("int32", "int64"):
        return rng.integers(-50, 50, shape).astype(mode)
    if mode == "special":
        x = rng.standard_normal(shape)
        u = rng.random(shape)
        x[u < 0.1] = np.nan
        x[(u >= 0.1) & (u < 0.2)] = np.inf
        x[(u >= 0.2) & (u < 0.3)] = -np.inf
        return x
    raise AssertionError(mode)


def _tup(v, nd):
    return tuple(v) if isinstance(v, tuple) else (v,) * nd


def empty_windows(geometry, spatial, out_shape) -> np.ndarray:
    """True where a max-pool window holds no real input cell (it lies wholly in the padding).

    torch reports -inf there with an index that is not in the window at all (its first tap,
    moved past the padding); see test_max_pool_window_wholly_in_padding_like_torch.
    """
    nd = len(spatial)
    k = _tup(geometry["kernel_size"], nd)
    s = k if geometry["stride"] is None else _tup(geometry["stride"], nd)
    p, d = _tup(geometry["padding"], nd), _tup(geometry["dilation"], nd)
    mask = np.zeros(out_shape[-nd:], dtype=bool)
    for axis in range(nd):
        starts = np.arange(out_shape[axis - nd]) * s[axis] - p[axis]
        taps = starts[:, None] + np.arange(k[axis]) * d[axis]
        empty = ~((taps >= 0) & (taps < spatial[axis])).any(axis=1)
        mask |= empty.reshape([-1 if a == axis else 1 for a in range(nd)])
    return np.broadcast_to(mask, out_shape)


@st.composite
def spelled(draw, values_):
    """A per-axis tuple, sometimes spelled as a bare int when every entry is equal."""
    if len(set(values_)) == 1 and draw(st.booleans()):
        return values_[0]
    return tuple(values_)


@st.composite
def torch_window(draw, nd, op):
    """A pooling geometry torch accepts, with an input spatial shape that fits it."""
    max_k, extra = (4, 5) if nd < 3 else (3, 3)
    k = tuple(draw(st.integers(1, max_k)) for _ in range(nd))
    d = tuple(draw(st.integers(1, 3)) for _ in range(nd)) if op == "max" else (1,) * nd
    s = None if draw(st.booleans()) else tuple(draw(st.integers(1, 3)) for _ in range(nd))
    p = (0,) * nd if op == "lp" else tuple(draw(st.integers(0, ki // 2)) for ki in k)
    ceil = draw(st.booleans())
    # torch's size rule: out = (n + 2p - span + (stride - 1 if ceil_mode else 0)) // stride + 1
    # must be >= 1, so in ceil mode a window may even be longer than the padded input.
    slack = [si - 1 if ceil else 0 for si in (s or k)]
    lows = [max(1, (ki - 1) * di + 1 - 2 * pi - sl) for ki, di, pi, sl in zip(k, d, p, slack, strict=True)]
    if op != "max" and nd == 3:  # avg_pool3d (so lp_pool3d) also wants the input >= kernel
        lows = [max(lo, ki) for lo, ki in zip(lows, k, strict=True)]
    size = tuple(draw(st.integers(lo, lo + extra)) for lo in lows)
    return {
        "kernel_size": draw(spelled(k)),
        "stride": None if s is None else draw(spelled(s)),
        "padding": draw(spelled(p)),
        "dilation": draw(spelled(d)),
        "ceil_mode": ceil,
        "size": size,
    }


@st.composite
def input_array(draw, size, *, modes=("normal",), batched=None):
    if batched is None:
        batched = draw(st.booleans())
    n, c = draw(st.integers(1, 2)), draw(st.integers(1, 3))
    shape = ((n,) if batched else ()) + (c, *size)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    return values(rng, shape, draw(st.sampled_from(modes))), rng, batched


# --------------------------------------------------------------------------------------------
# torch references


def torch_avg(t, nd, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor):
    if nd == 1 and divisor is not None:  # avg_pool1d has no divisor_override: go through 2-D
        out = F.avg_pool2d(
            t.unsqueeze(-1),
            (_tup(kernel_size, 1)[0], 1),
            None if stride is None else (_tup(stride, 1)[0], 1),
            (_tup(padding, 1)[0], 0),
            ceil_mode,
            count_include_pad,
            divisor,
        )
        return out.squeeze(-1)
    fn = getattr(F, f"avg_pool{nd}d")
    extra = () if nd == 1 else (divisor,)
    return fn(t, kernel_size, stride, padding, ceil_mode, count_include_pad, *extra)


def torch_blur(t, nd, filt_size, stride, pad_type, pad_off):
    """antialiased-cnns BlurPool / BlurPool1D, extended separably to 3-D, in float64."""
    a = torch.tensor([math.comb(filt_size - 1, i) for i in range(filt_size)], dtype=t.dtype)
    filt = a
    for _ in range(nd - 1):
        filt = filt[..., None] * a
    filt = filt / filt.sum()
    left = (filt_size - 1) // 2 + pad_off
    right = math.ceil((filt_size - 1) / 2) + pad_off
    layer = {"reflect": "ReflectionPad", "replicate": "ReplicationPad", "zero": "ZeroPad"}[pad_type]
    pad = getattr(torch.nn, f"{layer}{nd}d")((left, right) * nd)
    sub = (slice(None), slice(None)) + (slice(None, None, stride),) * nd
    if filt_size == 1:
        return t[sub] if pad_off == 0 else pad(t)[sub]
    channels = t.shape[1]
    weight = filt[None, None].repeat((channels,) + (1,) * (nd + 1))
    return getattr(F, f"conv{nd}d")(pad(t), weight, stride=stride, groups=channels)


# --------------------------------------------------------------------------------------------
# average pooling


@ND
@CASES
@given(data=st.data())
def test_avg_pool(nd, data):
    geo = data.draw(torch_window(nd, "avg"))
    cip = data.draw(st.booleans())
    divisor = data.draw(st.none() | st.integers(1, 7))
    x, rng, batched = data.draw(input_array(geo["size"], modes=("normal", "special")))
    k, s, p, ceil = geo["kernel_size"], geo["stride"], geo["padding"], geo["ceil_mode"]

    ref = torch_avg(_t(x), nd, k, s, p, ceil, cip, divisor)
    torch_style = getattr(avgpool, f"avg_pool{nd}d")
    kwargs = {"kernel_size": k, "stride": s, "padding": p, "ceil_mode": ceil}
    kwargs["count_include_pad"] = cip
    if nd > 1:
        assert_same(torch_style(x, **kwargs, divisor_override=divisor), ref)
    elif divisor is None:
        assert_same(torch_style(x, **kwargs), ref)
    if not batched:
        return

    geometry = {**kwargs, "divisor_override": divisor}
    assert_same(avgpool.avg_pool(x, **geometry), ref)
    assert_same(avgpool.avg_pool(to_last(x), **geometry, channels_last=True), to_last(ref))
    window = avgpool.Window.from_torch(
        k, s, p, ceil_mode=ceil, count_include_pad=cip, divisor_override=divisor, op="avg", ndim=nd
    )
    assert_same(avgpool.avg_pool(x, window=window), ref)

    gy = rng.standard_normal(ref.shape)
    gx = torch_grad(lambda t: torch_avg(t, nd, k, s, p, ceil, cip, divisor), x, gy)
    assert_same(avgpool.avg_pool_backward(gy, x.shape, **geometry), gx)
    assert_same(
        avgpool.avg_pool_backward(to_last(gy), to_last(x).shape, **geometry, channels_last=True),
        to_last(gx),
    )


# --------------------------------------------------------------------------------------------
# max pooling


@ND
@CASES
@given(data=st.data())
def test_max_pool(nd, data):
    geo = data.draw(torch_window(nd, "max"))
    modes = ("normal", "ties", "special") + (("int32", "int64") if nd > 1 else ())
    x, rng, batched = data.draw(input_array(geo["size"], modes=modes))
    geometry = {k: v for k, v in geo.items() if k != "size"}
    torch_fn = getattr(F, f"max_pool{nd}d")

    ref, ref_idx = torch_fn(_t(x), **geometry, return_indices=True)
    empty = empty_windows(geometry, geo["size"], ref.shape)

    def same_indices(idx, expected):  # windows wholly in the padding: see empty_windows
        assert_same(np.where(empty, -1, idx), np.where(empty, -1, expected))

    torch_style = getattr(avgpool, f"max_pool{nd}d")
    assert_same(torch_style(x, **geometry), torch_fn(_t(x), **geometry))
    y, idx = torch_style(x, **geometry, return_indices=True)
    assert_same(y, ref)
    same_indices(idx, ref_idx)
    if not batched:
        return

    y, idx = avgpool.max_pool(x, **geometry, return_indices=True)
    assert_same(y, ref)
    same_indices(idx, ref_idx)
    y, idx = avgpool.max_pool(to_last(x), **geometry, return_indices=True, channels_last=True)
    assert_same(y, to_last(ref))
    same_indices(np.moveaxis(idx, -1, 1), ref_idx)
    window = avgpool.Window.from_torch(
        geometry["kernel_size"],
        geometry["stride"],
        geometry["padding"],
        geometry["dilation"],
        geometry["ceil_mode"],
        op="max",
        ndim=nd,
    )
    assert_same(avgpool.max_pool(x, window=window), ref)
    if x.dtype.kind != "f":
        return

    # torch sends an empty window's gradient to the cell its stray index names: leave those out
    gy = np.where(empty, 0.0, rng.standard_normal(ref.shape))
    gx = torch_grad(lambda t: torch_fn(t, **geometry), x, gy)
    assert_same(avgpool.max_pool_backward(gy, x, **geometry), gx)
    assert_same(
        avgpool.max_pool_backward(to_last(gy), to_last(x), **geometry, channels_last=True),
        to_last(gx),
    )


# --------------------------------------------------------------------------------------------
# power-average (Lp) pooling


@ND
@CASES
@given(data=st.data())
def test_lp_pool(nd, data):
    geo = data.draw(torch_window(nd, "lp"))
    norm = data.draw(st.sampled_from([1, 2, 3, 1.5, 2.0]))
    # torch takes x**p and then a real p-th root: odd or fractional p needs x > 0 to stay real.
    modes = ("normal", "positive") if norm in (1, 2) else ("positive",)
    x, rng, batched = data.draw(input_array(geo["size"], modes=modes))
    k, s, ceil = geo["kernel_size"], geo["stride"], geo["ceil_mode"]
    if nd == 1:  # F.lp_pool1d multiplies by kernel_size itself: it must be an int
        k = _tup(k, 1)[0]
        s = None if s is None else _tup(s, 1)[0]
    torch_fn = getattr(F, f"lp_pool{nd}d")

    def reference(t):
        return torch_fn(t, norm, k, s, ceil)

    ref = reference(_t(x))
    torch_style = getattr(avgpool, f"lp_pool{nd}d")
    assert_same(torch_style(x, norm, k, s, ceil), ref)
    assert_same(torch_style(x, norm, kernel_size=k, stride=s, ceil_mode=ceil), ref)
    if not batched:
        return

    geometry = {"kernel_size": k, "stride": s, "ceil_mode": ceil}
    if nd == 1:
        geometry["kernel_size"] = (k,)  # a bare int is ambiguous for the N-d form only in 1-D
    assert_same(avgpool.lp_pool(x, norm, **geometry), ref)
    assert_same(avgpool.lp_pool(x, norm, **geometry, convention="torch"), ref)
    assert_same(avgpool.lp_pool(to_last(x), norm, **geometry, channels_last=True), to_last(ref))

    gy = rng.standard_normal(ref.shape)
    gx = torch_grad(reference, x, gy)
    assert_same(avgpool.lp_pool_backward(gy, x, norm, **geometry), gx)
    assert_same(
        avgpool.lp_pool_backward(to_last(gy), to_last(x), norm, **geometry, channels_last=True),
        to_last(gx),
    )


def test_lp_pool_ceil_mode_scales_partial_windows_like_torch():
    # torch averages a clipped ceil-mode window over its real cells, then multiplies by the
    # full kernel: the last window below is (2**2 * 3 / 1) ** 0.5, not 2.
    x = np.array([[[1.0, 1.0, 1.0, 2.0]]])
    ref = F.lp_pool1d(_t(x), 2, 3, 3, ceil_mode=True)
    np.testing.assert_allclose(ref.numpy(), [[[math.sqrt(3), math.sqrt(12)]]])
    assert_same(avgpool.lp_pool1d(x, 2, 3, 3, ceil_mode=True), ref)


def test_lp_pool_odd_norm_negative_sum_is_nan_like_torch():
    x = np.array([[[-1.0, -2.0, 0.5, 3.0]]])
    ref = F.lp_pool1d(_t(x), 3, 2)
    assert np.isnan(ref.numpy()[0, 0, 0]) and not np.isnan(ref.numpy()[0, 0, 1])
    assert_same(avgpool.lp_pool1d(x, 3, 2), ref)


# --------------------------------------------------------------------------------------------
# adaptive pooling


@st.composite
def adaptive_case(draw, nd):
    hi_in, hi_out = (7, 9) if nd < 3 else (5, 6)
    size = tuple(draw(st.integers(1, hi_in)) for _ in range(nd))
    out = [draw(st.none() | st.integers(1, hi_out) | st.just(n)) for n in size]
    if nd == 1:
        out = size[0] if out[0] is None else out[0]
    elif None not in out:
        out = draw(spelled(tuple(out)))
    else:
        out = tuple(out)
    return size, out


@ND
@CASES
@given(data=st.data())
def test_adaptive_avg_pool(nd, data):
    size, out = data.draw(adaptive_case(nd))
    x, rng, batched = data.draw(input_array(size, modes=("normal", "special")))
    torch_fn = getattr(F, f"adaptive_avg_pool{nd}d")

    ref = torch_fn(_t(x), out)
    assert_same(getattr(avgpool, f"adaptive_avg_pool{nd}d")(x, out), ref)
    if not batched:
        return
    general = out if isinstance(out, tuple) else (out,) * nd
    assert_same(avgpool.adaptive_avg_pool(x, general), ref)
    assert_same(avgpool.adaptive_avg_pool(to_last(x), general, channels_last=True), to_last(ref))

    gy = rng.standard_normal(ref.shape)
    gx = torch_grad(lambda t: torch_fn(t, out), x, gy)
    assert_same(avgpool.adaptive_avg_pool_backward(gy, x.shape), gx)
    assert_same(
        avgpool.adaptive_avg_pool_backward(to_last(gy), to_last(x).shape, channels_last=True),
        to_last(gx),
    )


@ND
@CASES
@given(data=st.data())
def test_adaptive_max_pool(nd, data):
    size, out = data.draw(adaptive_case(nd))
    x, rng, batched = data.draw(input_array(size, modes=("normal", "ties", "special")))
    torch_fn = getattr(F, f"adaptive_max_pool{nd}d")

    ref, ref_idx = torch_fn(_t(x), out, return_indices=True)
    torch_style = getattr(avgpool, f"adaptive_max_pool{nd}d")
    assert_same(torch_style(x, out), ref)
    y, idx = torch_style(x, out, return_indices=True)
    assert_same(y, ref)
    assert_same(idx, ref_idx)
    if not batched:
        return
    general = out if isinstance(out, tuple) else (out,) * nd
    y, idx = avgpool.adaptive_max_pool(x, general, return_indices=True)
    assert_same(y, ref)
    assert_same(idx, ref_idx)
    y, idx = avgpool.adaptive_max_pool(to_last(x), general, True, channels_last=True)
    assert_same(y, to_last(ref))
    assert_same(idx, to_last(ref_idx))

    gy = rng.standard_normal(ref.shape)
    gx = torch_grad(lambda t: torch_fn(t, out), x, gy)
    assert_same(avgpool.adaptive_max_pool_backward(gy, x), gx)
    assert_same(
        avgpool.adaptive_max_pool_backward(to_last(gy), to_last(x), channels_last=True),
        to_last(gx),
    )


# --------------------------------------------------------------------------------------------
# global pooling


@ND
@FEW_CASES
@given(data=st.data())
def test_global_pools(nd, data):
    size = tuple(data.draw(st.integers(1, 6 if nd < 3 else 4)) for _ in range(nd))
    keepdims = data.draw(st.booleans())
    ndim = data.draw(st.sampled_from([None, nd]))
    x, rng, _ = data.draw(input_array(size, modes=("normal", "special"), batched=True))
    dims = tuple(range(2, 2 + nd))
    opts = {"ndim": ndim, "keepdims": keepdims}

    def reduce_first(t, op):
        return getattr(torch, op)(t, dim=dims, keepdim=keepdims)

    def to_last_out(r):
        return to_last(r) if keepdims else _np(r)

    for op, reduction in (("avg", "mean"), ("max", "amax")):
        pool = getattr(avgpool, f"global_{op}_pool")
        ref = reduce_first(_t(x), reduction)
        assert_same(pool(x, **opts), ref)
        assert_same(pool(to_last(x), **opts, channels_last=True), to_last_out(ref))

        if op == "max":  # torch.amax shares the gradient among ties: draw distinct values
            x = rng.permutation(x.size).reshape(x.shape) * 0.25 - 1.0
        gy = rng.standard_normal(ref.shape)
        gx = torch_grad(lambda t, r=reduction: reduce_first(t, r), x, gy)
        backward = getattr(avgpool, f"global_{op}_pool_backward")
        first = x.shape if op == "avg" else x
        last = to_last(x).shape if op == "avg" else to_last(x)
        assert_same(backward(gy, first, ndim=ndim), gx)
        assert_same(backward(to_last_out(gy), last, ndim=ndim, channels_last=True), to_last(gx))


# --------------------------------------------------------------------------------------------
# BlurPool (antialiased-cnns)


@ND
@CASES
@given(data=st.data())
def test_blur_pool(nd, data):
    filt_size = data.draw(st.integers(1, 7))
    stride = data.draw(st.integers(1, 3))
    pad_type = data.draw(st.sampled_from(["reflect", "replicate", "zero"]))
    pad_off = data.draw(st.integers(0, 2))
    most_pad = math.ceil((filt_size - 1) / 2) + pad_off
    lo = most_pad + 1 if pad_type == "reflect" else 1  # ReflectionPad needs pad < size
    size = tuple(data.draw(st.integers(lo, lo + (5 if nd < 3 else 3))) for _ in range(nd))
    x, rng, _ = data.draw(input_array(size, batched=True))
    opts = {"filt_size": filt_size, "stride": stride, "pad_type": pad_type, "pad_off": pad_off}

    def reference(t):
        return torch_blur(t, nd, filt_size, stride, pad_type, pad_off)

    ref = reference(_t(x))
    assert_same(getattr(avgpool, f"blur_pool{nd}d")(x, **opts), ref)
    assert_same(avgpool.blur_pool(x, **opts), ref)
    assert_same(avgpool.blur_pool(x, **opts, ndim=nd), ref)
    assert_same(avgpool.blur_pool(to_last(x), **opts, channels_last=True), to_last(ref))

    gy = rng.standard_normal(ref.shape)
    gx = torch_grad(reference, x, gy)
    assert_same(avgpool.blur_pool_backward(gy, x.shape, **opts), gx)
    assert_same(avgpool.blur_pool_backward(gy, x.shape, **opts, ndim=nd), gx)
    assert_same(
        avgpool.blur_pool_backward(to_last(gy), to_last(x).shape, **opts, channels_last=True),
        to_last(gx),
    )


# --------------------------------------------------------------------------------------------
# non-finite values, explicitly


NAN, INF = float("nan"), float("inf")
SPECIAL_ROW = [1.0, NAN, 3.0, NAN, 2.0, -INF, -INF, -INF, INF, 0.5]


@pytest.mark.parametrize(
    ("kernel", "stride", "padding", "dilation", "ceil_mode"),
    [(4, 4, 0, 1, True), (3, 3, 1, 1, False), (2, 1, 1, 3, True), (3, 2, 1, 2, True)],
)
def test_max_pool_nan_and_inf_like_torch(kernel, stride, padding, dilation, ceil_mode):
    x = np.array([[SPECIAL_ROW]])
    geometry = {"kernel_size": kernel, "stride": stride, "padding": padding}
    geometry.update(dilation=dilation, ceil_mode=ceil_mode)
    ref, ref_idx = F.max_pool1d(_t(x), **geometry, return_indices=True)
    y, idx = avgpool.max_pool1d(x, **geometry, return_indices=True)
    assert_same(y, ref)
    assert_same(idx, ref_idx)
    x2 = np.stack([x[0], x[0][:, ::-1]], axis=-2)[None]  # (1, 1, 2, 10): the row both ways
    geometry = {"kernel_size": (2, kernel), "stride": (1, stride), "padding": (1, padding)}
    geometry.update(dilation=(1, dilation), ceil_mode=ceil_mode)
    ref, ref_idx = F.max_pool2d(_t(x2), **geometry, return_indices=True)
    y, idx = avgpool.max_pool2d(x2, **geometry, return_indices=True)
    assert_same(y, ref)
    assert_same(idx, ref_idx)


def test_max_pool_window_wholly_in_padding_differs_from_torch_on_purpose():
    # Taps -1 and 2 of a length-2 input are both padding. torch gives -inf and, as the index,
    # its first tap moved past the padding (2: outside the input); in 2-D that stray index
    # names a real cell of another row, and torch's backward sends the gradient there.
    # avgpool keeps the value, returns index -1 and sends that gradient nowhere
    # (docs/conformance.md).
    x = np.array([[[1.0, 2.0]]])
    ref, ref_idx = F.max_pool1d(_t(x), 2, 1, 1, 3, return_indices=True)
    assert ref.item() == -np.inf and ref_idx.item() == 2
    y, idx = avgpool.max_pool1d(x, 2, 1, 1, 3, return_indices=True)
    assert_same(y, ref)
    assert idx.item() == -1
    x = np.arange(6.0).reshape(1, 1, 3, 2)
    geometry = {"kernel_size": (1, 2), "stride": 1, "padding": (0, 1), "dilation": (1, 3)}
    ref, ref_idx = F.max_pool2d(_t(x), **geometry, return_indices=True)
    assert ref_idx.flatten().tolist() == [2, 4, 6]
    y, idx = avgpool.max_pool2d(x, **geometry, return_indices=True)
    assert_same(y, ref)
    assert idx.flatten().tolist() == [-1, -1, -1]
    grad = avgpool.max_pool_backward(np.ones(y.shape), x, **geometry)
    np.testing.assert_array_equal(grad, np.zeros_like(x))


@pytest.mark.parametrize(
    ("name", "shape", "args"),
    [
        ("avg_pool1d", (1, 1, 2), {"kernel_size": 3, "stride": 2, "ceil_mode": True}),
        ("avg_pool2d", (1, 1, 2, 5), {"kernel_size": (4, 2), "stride": 4, "ceil_mode": True}),
        ("max_pool1d", (1, 1, 2), {"kernel_size": 4, "stride": 4, "ceil_mode": True}),
        ("max_pool2d", (1, 2, 10), {"kernel_size": 4, "stride": 4, "ceil_mode": True}),
        ("lp_pool1d", (1, 1, 2), {"norm_type": 2, "kernel_size": 3, "stride": 2, "ceil_mode": True}),
    ],
)
def test_ceil_mode_window_longer_than_input_like_torch(name, shape, args):
    # torch's ceil-mode size rule admits one window when (n + 2p - span + stride - 1) >= 0,
    # even if the window is longer than the (padded) input: it is clipped like any other.
    x = np.random.default_rng(1).uniform(0.5, 2.0, shape)
    ref = getattr(F, name)(_t(x), **args)
    assert_same(getattr(avgpool, name)(x, **args), ref)


def test_max_pool_int64_like_torch():
    x = np.random.default_rng(2).integers(-1000, 1000, (2, 3, 5, 6), dtype=np.int64)
    ref, ref_idx = F.max_pool2d(_t(x), 3, 2, 1, ceil_mode=True, return_indices=True)
    y, idx = avgpool.max_pool2d(x, 3, 2, 1, ceil_mode=True, return_indices=True)
    assert_same(y, ref)
    assert_same(idx, ref_idx)


def test_adaptive_max_pool_nan_like_torch():
    x = np.array([[SPECIAL_ROW]])
    for out in (1, 3, 4, 10, 13):
        ref, ref_idx = F.adaptive_max_pool1d(_t(x), out, return_indices=True)
        y, idx = avgpool.adaptive_max_pool1d(x, out, return_indices=True)
        assert_same(y, ref)
        assert_same(idx, ref_idx)


@pytest.mark.parametrize("count_include_pad", [True, False])
def test_avg_pool_inf_like_torch(count_include_pad):
    x = np.array([[[1.0, INF, -INF, 2.0, NAN, 3.0, INF, INF]]])
    for kernel, stride, padding in ((2, 1, 0), (3, 2, 1), (4, 3, 2)):
        ref = F.avg_pool1d(_t(x), kernel, stride, padding, True, count_include_pad)
        y = avgpool.avg_pool1d(x, kernel, stride, padding, True, count_include_pad)
        assert_same(y, ref)
    ref = F.adaptive_avg_pool1d(_t(x), 3)
    assert_same(avgpool.adaptive_avg_pool1d(x, 3), ref)


def test_global_pools_nan_like_torch():
    x = np.array([[[1.0, NAN, 3.0], [-INF, 2.0, INF], [INF, INF, 0.0]]])
    assert_same(avgpool.global_avg_pool(x), torch.mean(_t(x), dim=2, keepdim=True))
    assert_same(avgpool.global_max_pool(x), torch.amax(_t(x), dim=2, keepdim=True))


# --------------------------------------------------------------------------------------------
# other dtypes and invalid geometry


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_is_preserved(dtype):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 7, 6)).astype(dtype)
    ref = F.avg_pool2d(_t(x), 3, 2, 1, True, False)
    assert_same(avgpool.avg_pool2d(x, 3, 2, 1, True, False), ref)
    assert_same(avgpool.max_pool2d(x, 3, 2, 1, 2), F.max_pool2d(_t(x), 3, 2, 1, 2))
    pos = np.abs(x) + dtype(0.5)
    assert_same(avgpool.lp_pool2d(pos, 2, 3, 2, True), F.lp_pool2d(_t(pos), 2, 3, 2, True))
    assert_same(avgpool.adaptive_avg_pool2d(x, (4, 5)), F.adaptive_avg_pool2d(_t(x), (4, 5)))


@pytest.mark.parametrize(
    ("op", "name", "args"),
    [
        ("avg", "avg_pool1d", {"kernel_size": 3, "padding": 2}),  # pad > kernel // 2
        ("avg", "avg_pool2d", {"kernel_size": 4, "padding": (1, 3)}),
        ("max", "max_pool1d", {"kernel_size": 3, "padding": 2, "dilation": 2}),  # kernel // 2
        ("max", "max_pool2d", {"kernel_size": 2, "stride": 1, "padding": 2, "dilation": 3}),
        ("avg", "avg_pool1d", {"kernel_size": 2, "dilation": 2}),  # avg takes no dilation
        ("lp", "lp_pool1d", {"kernel_size": 2, "padding": 1}),  # lp takes no padding
        ("avg", "avg_pool2d", {"kernel_size": 2, "divisor_override": 0}),
    ],
)
def test_window_from_torch_rejects_like_torch(op, name, args):
    x = np.zeros((1, 1, 8) + ((8,) if name.endswith("2d") else ()))
    nd = x.ndim - 2
    with pytest.raises((RuntimeError, TypeError)):
        if op == "lp":
            getattr(F, name)(_t(x), **args, norm_type=2)
        else:
            getattr(F, name)(_t(x), **args)
    with pytest.raises(avgpool.AvgPoolError):
        avgpool.Window.from_torch(**args, op=op, ndim=nd)


@pytest.mark.parametrize(
    ("name", "shape", "args"),
    [
        ("avg_pool1d", (1, 1, 8), {"kernel_size": 9}),  # no window fits
        ("max_pool2d", (1, 1, 8, 8), {"kernel_size": 3, "dilation": 4}),  # span 9 > 8
        ("avg_pool2d", (1, 1, 8, 8), {"kernel_size": 2, "divisor_override": 0}),
        ("avg_pool3d", (1, 1, 1, 1, 1), {"kernel_size": (1, 2, 1), "padding": (0, 1, 0)}),
    ],
)
def test_invalid_call_rejected_like_torch(name, shape, args):
    x = np.zeros(shape)
    with pytest.raises(RuntimeError):
        getattr(F, name)(_t(x), **args)
    with pytest.raises(avgpool.AvgPoolError):
        getattr(avgpool, name)(x, **args)
