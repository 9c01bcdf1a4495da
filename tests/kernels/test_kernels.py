"""The Numba kernels against the float64 reference, on random geometries, layouts and dtypes.

Every kernel in the kernel table (`avgpool.kernels.registry`, filled by `register` beside each
kernel) is run on an input that reaches it and checked against the oracle, and every op it
serves has a random comparison here, run for each layout and dtype the kernels take; a test
fails if a kernel module defines a compiled entry point that is not registered. CI runs this
file a second time with NUMBA_BOUNDSCHECK=1, so an out-of-bounds read or write in a kernel
fails loudly.
"""

from __future__ import annotations

import math

import numba
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

import avgpool as ap
from avgpool import _cpu_drivers, _cpu_max_drivers, _cpu_plans, _small_plans
from avgpool.kernels import box_backward, cpu_max, plane_max, registry

KERNEL_LAYOUTS, KERNEL_DTYPES = registry.LAYOUTS, registry.DTYPES
KERNEL_OPS = registry.ops()

# Kernels vs the oracle, per dtype: float64 sums in another order; float32/16 rounded once.
TOLERANCE = {"float64": 1e-11, "float32": 2e-6, "float16": 2e-3}
SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _both(fn, *args, **kwargs):
    """(numba result, reference result) of the same call."""
    with ap.use_backend("numba"):
        fast = fn(*args, **kwargs)
    with ap.use_backend("reference"):
        slow = fn(*args, **kwargs)
    return fast, slow


def _close(fast, slow, dtype, scale=1.0):
    if isinstance(fast, tuple):
        np.testing.assert_array_equal(fast[1], slow[1])  # indices: exactly
        fast, slow = fast[0], slow[0]
    assert fast.dtype == slow.dtype and fast.shape == slow.shape
    tol = TOLERANCE[np.dtype(dtype).name]
    np.testing.assert_allclose(
        fast.astype(np.float64), slow.astype(np.float64), rtol=tol, atol=tol * scale, equal_nan=True
    )


@st.composite
def problems(draw, max_ndim=3, symmetric=False, min_ndim=1, dilated=True):
    """A random array and window: pads may exceed the kernel, windows may lie in padding."""
    ndim = draw(st.integers(min_ndim, max_ndim))
    kernel = draw(st.tuples(*[st.integers(1, 5)] * ndim))
    stride = draw(st.tuples(*[st.integers(1, 4)] * ndim))
    dilation = draw(st.tuples(*[st.sampled_from([1, 1, 2, 3] if dilated else [1])] * ndim))
    pads = draw(st.tuples(*[st.tuples(st.integers(0, 5), st.integers(0, 5))] * ndim))
    ceil_mode = draw(st.booleans())
    spans = [d * (k - 1) + 1 for k, d in zip(kernel, dilation)]
    spatial = tuple(
        draw(st.integers(max(1, s - b - a), max(1, s - b - a) + 9)) for s, (b, a) in zip(spans, pads)
    )
    batch = draw(st.integers(0, 2))
    channels = draw(st.integers(1, 4))
    window = ap.Window(kernel, stride, pads, dilation=dilation, ceil_mode=ceil_mode)
    return window, (batch, channels, *spatial), draw(st.integers(0, 2**16))


def _array(shape, dtype, seed, layout, specials=False):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    if specials and x.size:
        x.flat[rng.integers(0, x.size, 3)] = [np.nan, np.inf, -np.inf]
    x = x.astype(dtype)
    if layout == "channels_last":
        return np.ascontiguousarray(np.moveaxis(x, 1, -1))
    return x


def _noise(shape, dtype, seed):
    """A random gradient already in the output's layout."""
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def _layout_window(window, layout, **changes):
    return window.replace(channels_last=layout == "channels_last", **changes)


# -- one comparison per kernel-backed op ---------------------------------------------------------


@SETTINGS
@given(problem=problems(), cip=st.booleans(), override=st.sampled_from([None, None, 2, 7]))
def _avg(layout, dtype, problem, cip, override):
    window, shape, seed = problem
    w = _layout_window(window, layout, count_include_pad=cip, divisor_override=override)
    x = _array(shape, dtype, seed, layout)
    _close(*_both(ap.avg_pool, x, window=w), dtype)


@SETTINGS
@given(problem=problems(), cip=st.booleans())
def _avg_specials(layout, dtype, problem, cip):
    window, shape, seed = problem
    w = _layout_window(window, layout, count_include_pad=cip)
    x = _array(shape, dtype, seed, layout, specials=True)
    _close(*_both(ap.avg_pool, x, window=w), dtype)


@SETTINGS
@given(problem=problems(), cip=st.booleans(), override=st.sampled_from([None, 3]))
def _avg_backward(layout, dtype, problem, cip, override):
    window, shape, seed = problem
    w = _layout_window(window, layout, count_include_pad=cip, divisor_override=override)
    x = _array(shape, dtype, seed, layout)
    g = _noise(ap.avg_pool(x, window=w).shape, dtype, seed + 1)
    _close(*_both(ap.avg_pool_backward, g, x.shape, window=w), dtype)


@SETTINGS
@given(problem=problems(), omit=st.booleans(), indices=st.booleans())
def _max(layout, dtype, problem, omit, indices):
    window, shape, seed = problem
    w = _layout_window(window, layout)
    x = np.round(_array(shape, dtype, seed, layout, specials=True), 1)  # ties and NaN
    policy = "omit" if omit else "propagate"
    # without indices, channels-first 1-D/2-D windows run the values-only kernel
    _close(*_both(ap.max_pool, x, window=w, return_indices=indices, nan_policy=policy), dtype)


@SETTINGS
@given(problem=problems())
def _max_backward(layout, dtype, problem):
    window, shape, seed = problem
    w = _layout_window(window, layout)
    x = np.round(_array(shape, dtype, seed, layout), 1)
    g = np.ones(ap.max_pool(x, window=w).shape, dtype)
    _close(*_both(ap.max_pool_backward, g, x, window=w), dtype)


@pytest.mark.parametrize(
    "shape, window",
    [
        ((2, 7, 9, 8), ap.Window((2, 2), (2, 2), channels_last=True)),  # a lonely last row and column
        ((1, 6, 40), ap.Window((3,), (4,), 1, ceil_mode=True, channels_last=True)),  # a window in the padding
        ((2, 5, 4, 6, 16), ap.Window((2, 2, 3), (2, 3, 3), dilation=(1, 2, 1), channels_last=True)),
        ((3, 4, 4, 9), ap.Window((4, 4), channels_last=True)),  # the whole plane
    ],
)
def test_channels_last_disjoint_max_backward(caplog, shape, window):
    """Windows that share no cell, channels-last: each cell gathers its window's gradient
    (`cpu_max.max_backward_disjoint`), the reference's bits; NaN and ties in the input."""
    x = np.round(np.random.default_rng(3).standard_normal(shape), 1).astype(np.float32)
    x.flat[::37] = np.nan
    y, i = ap.max_pool(x, window=window, return_indices=True)
    g = np.random.default_rng(4).standard_normal(y.shape).astype(np.float32)
    with caplog.at_level("DEBUG", logger="avgpool"):
        fast, slow = _both(ap.max_pool_backward, g, x, window=window, indices=i)
    assert "max_backward_disjoint" in caplog.text
    np.testing.assert_array_equal(fast, slow)


@SETTINGS
@given(problem=problems(), p=st.sampled_from([1.0, 2.0, 3.0]), convention=st.sampled_from(["torch", "onnx"]))
def _lp(layout, dtype, problem, p, convention):
    window, shape, seed = problem
    w = _layout_window(window, layout)
    x = np.abs(_array(shape, dtype, seed, layout)) + dtype(0.25)
    _close(*_both(ap.lp_pool, x, p, window=w, convention=convention), dtype, scale=10)


@SETTINGS
@given(problem=problems(), p=st.sampled_from([1.0, 2.0]), convention=st.sampled_from(["torch", "onnx"]))
def _lp_backward(layout, dtype, problem, p, convention):
    window, shape, seed = problem
    w = _layout_window(window, layout)
    x = np.abs(_array(shape, dtype, seed, layout)) + dtype(0.25)
    g = np.ones(ap.lp_pool(x, p, window=w).shape, dtype)
    _close(*_both(ap.lp_pool_backward, g, x, p, window=w, convention=convention), dtype, scale=10)


@st.composite
def adaptive_problems(draw):
    ndim = draw(st.integers(1, 3))
    spatial = draw(st.tuples(*[st.integers(1, 9)] * ndim))
    out = draw(st.tuples(*[st.integers(1, 11)] * ndim))
    return (draw(st.integers(0, 2)), draw(st.integers(1, 3)), *spatial), out, draw(st.integers(0, 2**16))


@SETTINGS
@given(problem=adaptive_problems())
def _adaptive_avg(layout, dtype, problem):
    shape, out, seed = problem
    x = _array(shape, dtype, seed, layout)
    _close(*_both(ap.adaptive_avg_pool, x, out, channels_last=layout == "channels_last"), dtype)


@SETTINGS
@given(problem=adaptive_problems())
def _adaptive_avg_backward(layout, dtype, problem):
    shape, out, seed = problem
    x = _array(shape, dtype, seed, layout)
    cl = layout == "channels_last"
    g = _noise(ap.adaptive_avg_pool(x, out, channels_last=cl).shape, dtype, seed + 1)
    _close(*_both(ap.adaptive_avg_pool_backward, g, x.shape, channels_last=cl), dtype)


@SETTINGS
@given(problem=adaptive_problems())
def _adaptive_max(layout, dtype, problem):
    shape, out, seed = problem
    x = np.round(_array(shape, dtype, seed, layout, specials=True), 1)
    cl = layout == "channels_last"
    _close(*_both(ap.adaptive_max_pool, x, out, True, channels_last=cl), dtype)


@SETTINGS
@given(problem=adaptive_problems())
def _adaptive_max_backward(layout, dtype, problem):
    shape, out, seed = problem
    x = np.round(_array(shape, dtype, seed, layout), 1)
    cl = layout == "channels_last"
    g = np.ones(ap.adaptive_max_pool(x, out, channels_last=cl).shape, dtype)
    _close(*_both(ap.adaptive_max_pool_backward, g, x, channels_last=cl), dtype)


@SETTINGS
@given(problem=adaptive_problems())
def _global_avg(layout, dtype, problem):
    shape, _, seed = problem
    x = _array(shape, dtype, seed, layout, specials=seed % 3 == 0)
    _close(*_both(ap.global_avg_pool, x, channels_last=layout == "channels_last"), dtype)


@SETTINGS
@given(problem=adaptive_problems())
def _global_avg_backward(layout, dtype, problem):
    shape, _, seed = problem
    cl = layout == "channels_last"
    x = _array(shape, dtype, seed, layout)
    g = _noise(ap.global_avg_pool(x, channels_last=cl).shape, dtype, seed + 1)
    _close(*_both(ap.global_avg_pool_backward, g, x.shape, channels_last=cl), dtype)


@SETTINGS
@given(problem=adaptive_problems())
def _global_max(layout, dtype, problem):
    shape, _, seed = problem
    x = np.round(_array(shape, dtype, seed, layout, specials=True), 1)
    _close(*_both(ap.global_max_pool, x, channels_last=layout == "channels_last"), dtype)


@SETTINGS
@given(problem=adaptive_problems())
def _global_max_backward(layout, dtype, problem):
    shape, _, seed = problem
    cl = layout == "channels_last"
    x = np.round(_array(shape, dtype, seed, layout), 1)
    g = np.ones(ap.global_max_pool(x, channels_last=cl).shape, dtype)
    _close(*_both(ap.global_max_pool_backward, g, x, channels_last=cl), dtype)


@st.composite
def blur_problems(draw):
    ndim = draw(st.integers(1, 3))
    filt = draw(st.integers(1, 7))
    pad_type = draw(st.sampled_from(["reflect", "replicate", "zero"]))
    low = filt // 2 + 1 if pad_type == "reflect" else 1
    spatial = draw(st.tuples(*[st.integers(low, low + 8)] * ndim))
    shape = (draw(st.integers(0, 2)), draw(st.integers(1, 3)), *spatial)
    return shape, filt, draw(st.integers(1, 3)), pad_type, draw(st.integers(0, 2**16))


@SETTINGS
@given(problem=blur_problems())
def _blur(layout, dtype, problem):
    shape, filt, stride, pad_type, seed = problem
    x = _array(shape, dtype, seed, layout)
    kwargs = {"pad_type": pad_type, "ndim": len(shape) - 2, "channels_last": layout == "channels_last"}
    _close(*_both(ap.blur_pool, x, filt, stride, **kwargs), dtype)


@SETTINGS
@given(problem=blur_problems())
def _blur_backward(layout, dtype, problem):
    shape, filt, stride, pad_type, seed = problem
    x = _array(shape, dtype, seed, layout)
    kwargs = {"pad_type": pad_type, "ndim": len(shape) - 2, "channels_last": layout == "channels_last"}
    g = _noise(ap.blur_pool(x, filt, stride, **kwargs).shape, dtype, seed + 1)
    _close(*_both(ap.blur_pool_backward, g, x.shape, filt, stride, **kwargs), dtype)


COMPARISONS = {
    "avg_pool": _avg,
    "avg_pool_backward": _avg_backward,
    "max_pool": _max,
    "max_pool_backward": _max_backward,
    "lp_pool": _lp,
    "lp_pool_backward": _lp_backward,
    "adaptive_avg_pool": _adaptive_avg,
    "adaptive_avg_pool_backward": _adaptive_avg_backward,
    "adaptive_max_pool": _adaptive_max,
    "adaptive_max_pool_backward": _adaptive_max_backward,
    "global_avg_pool": _global_avg,
    "global_avg_pool_backward": _global_avg_backward,
    "global_max_pool": _global_max,
    "global_max_pool_backward": _global_max_backward,
    "blur_pool": _blur,
    "blur_pool_backward": _blur_backward,
}


def test_every_op_with_a_kernel_has_a_comparison():
    assert set(COMPARISONS) == set(KERNEL_OPS)


@pytest.mark.parametrize("dtype", KERNEL_DTYPES)
@pytest.mark.parametrize("layout", KERNEL_LAYOUTS)
@pytest.mark.parametrize("op", sorted(KERNEL_OPS))
def test_kernel_matches_reference(op, layout, dtype):
    COMPARISONS[op](layout, np.dtype(dtype).type)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layout", KERNEL_LAYOUTS)
@pytest.mark.parametrize("large", [True, False], ids=["large-window-kernel", "taps"])
def test_max_values_on_each_path(monkeypatch, caplog, large, layout, dtype):
    """Max pooling without indices takes `max_values_large` or the tap kernels by how often a
    window reads each cell: each path forced, on random geometries with ties, NaN and inf."""
    monkeypatch.setattr(_cpu_max_drivers, "LARGE_MAX_READS", (0, 0) if large else (math.inf, math.inf))
    with caplog.at_level("DEBUG", logger="avgpool"):
        _max(layout, dtype)
        # one example sure to qualify (the drawn ones may all be empty, dilated or with indices)
        x = _array((2, 3, 9, 8), dtype, 0, layout, specials=True)
        w = _layout_window(ap.Window(3, 1, 1, ndim=2), layout)
        _close(*_both(ap.max_pool, x, window=w), dtype)
    assert ("cpu_max.max_values_large" in caplog.text) == large


@pytest.mark.parametrize("layout", KERNEL_LAYOUTS)
@pytest.mark.parametrize("kernel", [(9, 13), (15, 15), (1, 64), (13, 1)])
def test_large_max_windows_match_the_reference(layout, kernel):
    x = np.round(_array((2, 3, 40, 70), np.float32, sum(kernel), layout, specials=True), 1)
    cl = layout == "channels_last"
    for stride, pad, policy in ((1, 0, "propagate"), (3, (kernel[0] // 2, kernel[1] // 2), "omit")):
        args = dict(channels_last=cl, ceil_mode=True, nan_policy=policy)
        _close(*_both(ap.max_pool, x, kernel, stride, pad, **args), np.float32)


@pytest.mark.parametrize("blocks", [2, 5, 64])
@pytest.mark.parametrize("layout", KERNEL_LAYOUTS)
def test_large_max_splits_one_image_into_bands(monkeypatch, layout, blocks):
    """With more runs to fill than images, `max_values_large` splits each image's output rows
    into bands, each starting its first block of rows afresh: bands that start inside a block,
    at its first row and past the last real row, against the reference."""
    monkeypatch.setattr(_cpu_max_drivers, "LARGE_MAX_READS", (0, 0))
    monkeypatch.setattr(_cpu_max_drivers, "_blocks", lambda nbytes: blocks)
    x = np.round(_array((1, 3, 61, 20), np.float32, blocks, layout, specials=True), 1)
    cl = layout == "channels_last"
    for kernel, stride, pad in (((2, 2), 1, 0), ((5, 3), 2, (2, 1)), ((3, 3), 1, 1), ((7, 7), 3, 3)):
        args = dict(channels_last=cl, ceil_mode=True)
        _close(*_both(ap.max_pool, x, kernel, stride, pad, **args), np.float32)


@pytest.mark.parametrize("kw", [*range(1, 8), 10])
def test_plane_max_at_stride_2_reads_even_and_odd_cells(caplog, kw):
    """`max_planes_values` at stride 2 holds each row as its even and odd cells, filled from
    the input rows in pairs, and takes two or three taps a loop: every window width, 1-4 rows
    high (3: one sweep), odd and even padding (the input's even cells land in the buffer's
    odd cells), odd and even widths, ragged last windows (ceil mode), NaN and infinities,
    against the reference; and the taps alone, bit for bit against tap-by-tap `_row_max` on
    zeros of both signs (a max keeps the first of equal values, so the taps' order shows)."""
    for width in (67, 66):
        x = _array((1, 3, 61, width), np.float32, kw, "channels_first", specials=True)
        rows = ((3, "propagate", 0), (3, "omit", 1), (1, "propagate", kw // 2), (4, "omit", 0))
        for kh, policy, pad in rows:
            args = dict(ceil_mode=True, nan_policy=policy)
            with caplog.at_level("DEBUG", logger="avgpool"):
                fast, slow = _both(ap.max_pool, x, (kh, kw), (1, 2), (kh // 2, pad), **args)
            assert "plane_max.max_planes_values" in caplog.text
            np.testing.assert_array_equal(fast, slow)

    rng = np.random.default_rng(kw)
    row = rng.choice(np.array([0.0, -0.0, 1.0, -1.0, np.nan], np.float32), 2 * 37 + kw + 1)
    pairs, taps = np.empty(37, np.float32), np.empty(37, np.float32)
    _row_steps(row, row[0::2].copy(), row[1::2].copy(), pairs, taps, kw)
    np.testing.assert_array_equal(pairs.view(np.uint32), taps.view(np.uint32))


@pytest.mark.parametrize("kw", [1, 2, 3, 5])
def test_plane_max_at_stride_1_or_3_takes_two_rows_and_two_taps_a_sweep(caplog, kw):
    """`max_planes_values` at strides other than 2 takes the first two rows of a window in one
    sweep into its row buffer and the first two taps along it in one sweep: windows 1-4 rows
    high (one real row at a padded edge), 1-5 wide, padded or not, ragged last windows (ceil
    mode), NaN and infinities under both policies, against the reference."""
    x = _array((1, 3, 61, 67), np.float32, kw, "channels_first", specials=True)
    for kh, sh, sw, policy in (
        (1, 1, 1, "propagate"),
        (2, 1, 1, "propagate"),
        (2, 2, 3, "omit"),
        (4, 3, 1, "propagate"),
    ):
        for pad in ((0, 0), (kh // 2, kw // 2)):
            if sh == sw == 1 and 2 * pad[0] == kh - 1 and 2 * pad[1] == kw - 1:
                continue  # an output the input's size: `flat_planes.max_same`
            args = dict(ceil_mode=True, nan_policy=policy)
            with caplog.at_level("DEBUG", logger="avgpool"):
                fast, slow = _both(ap.max_pool, x, (kh, kw), (sh, sw), pad, **args)
            assert "plane_max.max_planes_values" in caplog.text
            caplog.clear()
            np.testing.assert_array_equal(fast, slow)


@numba.njit
def _row_steps(row, even, odd, pairs, taps, kw):
    plane_max._pair_taps(even, odd, pairs, kw)
    plane_max._row_max(row, taps, kw, 2)


@pytest.mark.parametrize("omit_nan", [False, True])
def test_channels_last_max_indices_are_the_same_scanned_in_int32_or_int64(omit_nan):
    """`cpu_max.max_forward` keeps a row's indices in int32 while it scans (int64 where a flat
    index could pass 2**31): both give the oracle's values and indices, also for windows in the
    padding, all -inf or NaN windows and ties, in 2-D and 3-D."""
    from avgpool.kernels import cpu_max

    rng = np.random.default_rng(5)
    for spatial, k, s, p in [((9, 11), (3, 3), (2, 2), (1, 1)), ((5, 6, 7), (2, 3, 2), (1, 2, 2), (1, 1, 0))]:
        x = rng.standard_normal((2, *spatial, 12)).astype(np.float32)
        x.reshape(-1, 12)[:4] = -np.inf
        x.reshape(-1, 12)[7:9, 3] = np.nan
        x.reshape(-1, 12)[20:40:2] = 0.5  # ties
        axes = ap.Window(k, s, p, ceil_mode=True, ndim=len(spatial)).resolve(spatial)
        geo = _cpu_plans.max_plan(axes).geo
        outs = [a.out for a in axes]
        x4 = x.reshape(2, *((1,) * (3 - len(spatial))), *spatial[:-1], spatial[-1] * 12)
        shape4 = (2, *((1,) * (3 - len(spatial))), *outs[:-1], outs[-1] * 12)
        got = []
        for at in (np.int32, np.int64):
            out, index = np.empty(shape4, np.float32), np.empty(shape4, np.int64)
            lowest, floor = np.float32(-np.inf), np.float32(-1.0)
            cpu_max.max_forward(x4, out, index, 12, geo, omit_nan, floor, lowest, np.empty(0, at))
            got.append((out.reshape(2, *outs, 12), index.reshape(2, *outs, 12)))
        np.testing.assert_array_equal(got[0][0], got[1][0])
        np.testing.assert_array_equal(got[0][1], got[1][1])
        if not omit_nan:
            with ap.use_backend("reference"):
                want, want_index = ap.max_pool(
                    x, k, s, p, ceil_mode=True, channels_last=True, return_indices=True
                )
            np.testing.assert_array_equal(got[0][0], want)
            np.testing.assert_array_equal(got[0][1], want_index)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int32])
def test_3x3s2_plane_max_in_vector_steps(caplog, monkeypatch, fresh_plans, dtype):
    """`max3s2_planes` takes a row's inner windows 8 a step (the last step overlapping)
    and the windows that reach into the padding one by one: every plane width from the
    narrowest a step serves to past two 16-steps, padding on either side or both, ceil mode,
    and windows of one or two rows at the top and bottom, with NaN and infinities, against
    the reference; the float results bit for bit against `max_planes_values` on zeros of both
    signs, as a max keeps the first of equal values and NaN wins, so the taps' order shows,
    on planes of 1-4 rows too, where few rows or none read three real ones."""
    monkeypatch.setattr(_small_plans, "WINDOWS3S2_PADDED_MIN", _small_plans.WINDOWS3S2_MIN)  # padded too
    for width in range(17, 52):
        pads = [(0, 0), (1, 1), (0, 1), (1, 0), (2, 3)]
        for n, (ph, pw) in enumerate(pads):
            x = _array((1, 2, 5 + n, width), dtype, width, "channels_first", specials=dtype != np.int32)
            w = ap.Window((3, 3), (2, 2), ((ph, ph + n % 2), (pw, pw)), ceil_mode=n % 2 == 1)
            caplog.clear()
            with caplog.at_level("DEBUG", logger="avgpool"):
                fast, slow = _both(ap.max_pool, x, window=w)
            assert "plane_max.max3s2_planes" in caplog.text or width < 19, (width, ph, pw)
            np.testing.assert_array_equal(fast, slow)
    if dtype == np.int32:
        return
    rng = np.random.default_rng(3)
    lowest = dtype(-np.inf)
    # heights 1-4: planes whose rows all reach into the padding (no inner row) or only some
    for height, pad in [(9, 0), (9, 1), (3, 0), (4, 0), (1, 1), (2, 1), (3, 1), (4, 1), (1, 2), (3, 2)]:
        x = rng.choice(np.array([0.0, -0.0, 1.0, np.nan], dtype), (3, height, 61))
        oh, ow = (height + 2 * pad - 3) // 2 + 1, 30 + pad
        out = np.empty((3, oh, ow), dtype)
        geo = np.array([[1, 1, 1, 0], [3, 2, 1, pad], [3, 2, 1, pad]], np.int64)
        plane_max.max_planes_values(x, out, geo, False, lowest, lowest)
        steps = np.empty((3, out[0].size), dtype)
        plane_max.max3s2_planes(x.reshape(3, -1), steps, 61, ow, pad, pad, lowest)
        got = steps.reshape(out.shape).view(np.uint8)
        np.testing.assert_array_equal(got, out.view(np.uint8), err_msg=f"height {height}, pad {pad}")


@pytest.mark.parametrize("channels", [5, 64])
@pytest.mark.parametrize("k, s, p", [(3, 2, 1), (3, 2, 0), (2, 2, 0), (2, 1, 0), (2, 1, 1)])
def test_channels_last_max_blocks_take_their_taps_in_row_major_order(caplog, k, s, p, channels):
    """`cpu_max.max_values` takes a 2x2 or 3x3 window whose taps all lie in the input in one
    loop over the channels (`_block_max`), the others tap by tap: both in row-major order, so
    on -1, zeros of both signs, 1 and NaN the values are the indexed kernel's to the bit (the
    first of equal values kept, NaN winning), and the reference's."""
    rng = np.random.default_rng(k * 10 + s + channels)
    for dtype in (np.float32, np.float64):
        cells = np.array([-1.0, 0.0, -0.0, 1.0, np.nan], dtype)
        x = rng.choice(cells, (2, 9, 10, channels), p=[0.6, 0.17, 0.17, 0.03, 0.03])
        caplog.clear()
        with caplog.at_level("DEBUG", logger="avgpool"):
            values = ap.max_pool(x, k, s, p, channels_last=True)
        assert "cpu_max.max_values (" in caplog.text
        indexed, _ = ap.max_pool(x, k, s, p, channels_last=True, return_indices=True)
        assert values.tobytes() == indexed.tobytes()
        with ap.use_backend("reference"):
            want = ap.max_pool(x, k, s, p, channels_last=True)
        assert values.tobytes() == want.tobytes()
    # long channel runs of an input past `BLOCK_INPUT_BYTES` take a pass per tap instead
    assert 160 * 4 >= cpu_max.BLOCK_RUN_BYTES and 2 * 90 * 100 * 160 * 4 > cpu_max.BLOCK_INPUT_BYTES
    x = rng.choice(cells.astype(np.float32), (2, 90, 100, 160), p=[0.6, 0.17, 0.17, 0.03, 0.03])
    values = ap.max_pool(x, k, s, p, channels_last=True)
    assert values.tobytes() == ap.max_pool(x, k, s, p, channels_last=True, return_indices=True)[0].tobytes()


GATHER_SHAPES = [((2, 8, 8, 70), 1), ((1, 5, 9, 33), 0), ((2, 1, 3, 40), 1), ((1, 2, 2, 9), 1)]


@pytest.mark.parametrize("cip", [False, True])
@pytest.mark.parametrize("shape, pad", GATHER_SHAPES)
def test_3x3_stride_1_gradients_gathered_as_the_running_sums(caplog, shape, pad, cip):
    """Channels-last 3x3/1 gradients gather each cell's covering outputs at once
    (`box_backward.avg_backward_3x3`, float64 sums): within an ulp of float32 of the running
    sums of `avg_backward` on the same tables (another order of float64 roundings), the same
    infinities and NaN, +0.0 where every contribution is -0.0 (exactly: the running sums
    leave a residue there), and the reference's values within the tolerance; planes of 1-3
    rows and columns (no cell covered three times) too."""
    g_shape = (shape[0], shape[1] + 2 * pad - 2, shape[2] + 2 * pad - 2, shape[3])
    g = np.random.default_rng(5).standard_normal(g_shape).astype(np.float32)
    g[0, 0, 0, :3] = [np.inf, -np.inf, np.nan]
    g[..., 8] = -0.0
    kwargs = {"channels_last": True, "count_include_pad": cip}
    with caplog.at_level("DEBUG", logger="avgpool"):
        fast = ap.avg_pool_backward(g, shape, 3, 1, pad, **kwargs)
    assert "box_backward.avg_backward_3x3" in caplog.text
    layout = _cpu_drivers.Layout.of(shape, 2, True)
    axes = tuple(a.bounded() for a in ap.Window(3, 1, pad, ndim=2).resolve(layout.spatial))
    planned = _cpu_drivers.plan_avg_backward(layout, axes, cip, None, np.dtype(np.float32))
    c, *tables = planned.args
    geo = _cpu_plans.avg_backward_plan(axes, cip, None).geo
    running = np.empty(shape, np.float32)
    box_backward.avg_backward(g.reshape(planned.view), running.reshape(planned.out_view), c, geo, *tables)
    finite = np.isfinite(running)
    # an ulp of float32 apart; where the true sum is 0 the running sums leave a residue of
    # their subtractions (-5.6e-17 here) and the gathered sum is exact
    np.testing.assert_allclose(fast[finite], running[finite], rtol=2.0**-23, atol=1e-15)
    np.testing.assert_array_equal(np.isnan(fast), np.isnan(running))
    np.testing.assert_array_equal(fast[np.isinf(running)], running[np.isinf(running)])
    assert (fast[..., 8] == 0.0).all() and not np.signbit(fast[..., 8]).any()
    with ap.use_backend("reference"):
        want = ap.avg_pool_backward(g.astype(np.float64), shape, 3, 1, pad, **kwargs)
    np.testing.assert_allclose(fast, want, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("kw", [*range(1, 10), 15, 24, 25])
@pytest.mark.parametrize("specials", [False, True], ids=["finite", "inf-nan"])
def test_every_w_pass_of_the_plane_kernel(kw, specials):
    """`avg_planes` sums rows by width: float32 results spell out 1-7 and take prefix sums
    fused with the scaling beyond (at stride 3; at stride 1 `avg_planes_tree` takes them);
    float64 results sum 8-24 in blocks of 4 and take prefix sums beyond (also at stride 3).
    Each, with padding and with inf and NaN (a chunk holding one is summed again)."""
    for dtype in (np.float32, np.float64):
        x = _array((2, 3, 11, 29), dtype, kw, "channels_first", specials=specials)
        for pad in (0, kw // 2):
            for stride in (1, (1, 3)):
                _close(*_both(ap.avg_pool, x, (3, kw), stride, pad, count_include_pad=False), dtype)


@settings(SETTINGS, max_examples=80)
@given(
    kh=st.integers(1, 9),
    sh=st.sampled_from([1, 1, 2, 3]),
    ph=st.integers(0, 4),
    kw=st.integers(8, 20),
    sw=st.integers(1, 3),
    pw=st.integers(0, 7),
    depths=st.sampled_from([(0, 1), (0, 1), (0, 2), (1, 3), (2, 2)]),
    rows=st.tuples(st.integers(0, 40), st.integers(1, 40)),
    specials=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_four_row_prefix_chunk_is_the_one_row_chunk_to_the_bit(
    kh, sh, ph, kw, sw, pw, depths, rows, specials, seed
):
    """`box_planes._prefix_chunk` (float32 results, W windows longer than 7: four rows' prefix
    sums side by side) against `_plane_chunk` on the same chunk: the same bits and the same
    verdict on non-finite outputs, for partial groups of four, strides down the plane that
    copy and slide, depth taps, rows in padding and zeroed rows."""
    from avgpool.kernels import box_planes

    rng = np.random.default_rng(seed)
    D, H, W = 3, rng.integers(1, 60), rng.integers(max(1, kw - pw), 40)
    x = _array((2, D, H, W), np.float32, seed, "channels_first", specials=specials)
    OW = (W + 2 * pw - kw) // sw + 1
    OH = max((H + 2 * ph - kh) // sh + 1, 1)
    oh0 = min(rows[0], OH - 1)
    oh1 = min(oh0 + rows[1], OH)
    width = max(pw + W, (OW - 1) * sw + kw)
    scale_h, scale_w = rng.uniform(0.01, 1, OH), rng.uniform(0.01, 1, OW)
    zero_h, zero_w = rng.random(OH) < 0.1, rng.random(OW) < 0.1
    depth = (*depths, 1.0, 0.5, False)
    run_h = sh < kh
    one = np.full((OH, OW), -1, np.float32)
    four = one.copy()
    window = (kh, sh, ph, kw, sw, pw)
    scaling = (np.ones(OH), np.ones(OW), scale_h, scale_w, zero_h, zero_w, zero_w.any(), np.float32(7))
    row_buffers = (np.zeros(width), np.zeros(OW), np.zeros(width + 1))
    ok_one = box_planes._plane_chunk(x, one, 1, depth, oh0, oh1, row_buffers, window, scaling, run_h, True)
    group_buffers = (np.zeros((4, width)), np.zeros((4, width + 1)))
    ok_four = box_planes._prefix_chunk(x, four, 1, depth, oh0, oh1, group_buffers, window, scaling, run_h)
    assert ok_one == ok_four
    np.testing.assert_array_equal(four.view(np.uint32), one.view(np.uint32))


def test_prefetch_hints_past_the_end_of_an_array_are_harmless_and_compiled():
    """`_prefetch.prefetch_ahead` hints lines far past the array (as the kernels' last rows
    do): nothing faults, nothing changes, also under NUMBA_BOUNDSCHECK; the machine code holds
    the prefetch instructions; anything but an array and an integer is a typing error."""
    from avgpool.kernels._prefetch import prefetch, prefetch_ahead

    @numba.njit
    def hint(a, far):
        prefetch_ahead(a, far, 4096)
        prefetch(a, -far)
        return a.sum()

    a = np.arange(10, dtype=np.float32)
    assert hint(a, 10**9) == 45.0 and np.array_equal(a, np.arange(10, dtype=np.float32))
    assert "prefetch" in hint.inspect_asm(hint.signatures[0])

    @numba.njit
    def wrong(a):
        prefetch(a, 0.5)

    with pytest.raises(numba.core.errors.TypingError):
        wrong(a)


def test_write_hints_change_nothing_and_compile_to_prefetchw():
    """`_prefetch.prefetch_write_row` hints a row's lines for writing (the tree kernel's next
    output rows): the values stay, the machine code holds PREFETCHW, and a row past the
    array's end (a view of no cells) hints nothing."""
    import llvmlite.binding

    from avgpool.kernels._prefetch import prefetch_write, prefetch_write_row

    @numba.njit
    def hint(a):
        prefetch_write_row(a[3:])
        prefetch_write_row(a[a.shape[0] :])
        prefetch_write(a, 10**9)
        return a.sum()

    a = np.arange(100, dtype=np.float32)
    assert hint(a) == 4950.0 and np.array_equal(a, np.arange(100, dtype=np.float32))
    if llvmlite.binding.get_host_cpu_features().get("prfchw"):  # else LLVM may drop the hint
        assert "prefetchw" in hint.inspect_asm(hint.signatures[0])


def test_unowned_views_are_the_same_memory_without_a_reference_count():
    """`_nrt.unowned` gives the array's data, shape and strides with no owner: views of it
    read and write the array itself and have no reference count to update, where views of the
    owned array share its count. A scratch array behind `keep_alive` outlives the unowned
    views of it."""
    from numba.extending import intrinsic

    from avgpool.kernels._nrt import keep_alive, unowned

    @numba.njit
    def fill(a):
        u = unowned(a)
        for i in range(u.shape[0]):
            row = u[i]
            row[:] = i
        scratch_ = np.zeros(u.shape[1])
        scratch = unowned(scratch_)
        for i in range(u.shape[0]):
            scratch += u[i]
        keep_alive(scratch_)
        return scratch.sum(), u.shape, u.strides

    a = np.zeros((4, 3))[:, ::-1]  # negative strides too
    total, shape, strides = fill(a)
    assert total == 18.0 and shape == a.shape and strides == a.strides
    assert np.array_equal(a, np.repeat(np.arange(4.0), 3).reshape(4, 3))

    @intrinsic
    def owner(typingctx, a):  # the address of the array's reference count (0: none)
        def codegen(context, builder, sig, args):
            meminfo = context.make_array(a)(context, builder, value=args[0]).meminfo
            return builder.ptrtoint(meminfo, context.get_value_type(numba.types.intp))

        return numba.types.intp(a), codegen

    @numba.njit
    def owners(a):
        return owner(a), owner(a[0]), owner(unowned(a)), owner(unowned(a)[0])

    counted, counted_view, none, none_view = owners(np.zeros((2, 2)))
    assert counted != 0 and counted_view == counted and none == none_view == 0

    @numba.njit
    def wrong(x):
        return unowned(x)

    with pytest.raises(numba.core.errors.TypingError):
        wrong(1.0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_undilated_3d_channels_first_average_takes_the_plane_kernel(dtype, caplog):
    @SETTINGS
    @given(
        problem=problems(min_ndim=3, dilated=False), cip=st.booleans(), override=st.sampled_from([None, 5])
    )
    def check(problem, cip, override):
        window, shape, seed = problem
        w = window.replace(count_include_pad=cip, divisor_override=override)
        x = _array(shape, dtype, seed, "channels_first", specials=seed % 2 == 1)
        _close(*_both(ap.avg_pool, x, window=w), dtype)

    with caplog.at_level("DEBUG", logger="avgpool"):
        check()
    assert "box_planes.avg_planes" in caplog.text


def test_tree_plans_sum_each_window_once_within_the_depth_the_shapes_give():
    """`_cpu_plans.tree_plan` covers a window of k cells with blocks of 4 << j, largest first,
    and up to three single cells, end to end; `_cpu_plans.tree_depth` is the deepest term's
    blocks plus its place in `_cpu_plans.TREE_SHAPES`."""
    for k in range(1, _cpu_plans.TREE_MAX + 1):
        plan = _cpu_plans.tree_plan(k)
        levels, offsets = plan[2 : 2 + 2 * plan[1] : 2], plan[3 : 3 + 2 * plan[1] : 2]
        sizes = [4 << (level - 1) if level else 1 for level in levels]
        assert list(offsets) == [sum(sizes[:i]) for i in range(len(sizes))] and sum(sizes) == k
        assert sizes == sorted(sizes, reverse=True) and sizes.count(1) == k % 4
        assert plan[0] == max(levels) and 1 <= plan[1] <= 7
    assert [_cpu_plans.tree_depth(k) for k in (1, 2, 3, 4, 5, 7, 8, 15, 31, 32, 63, 64)] == [
        0, 1, 2, 2, 3, 4, 3, 5, 7, 5, 8, 6
    ]  # fmt: skip


@pytest.mark.parametrize(
    "kernel, takes",
    [((15, 15), True), ((7, 7), True), ((1, 64), True), ((3, 9), True), ((31, 31), False), ((1, 65), False)],
)
def test_float32_windows_take_the_tree_kernel_within_its_depth(kernel, takes, caplog):
    x = _array((1, 2, 70, 70), np.float32, 0, "channels_first")
    with caplog.at_level("DEBUG", logger="avgpool"):
        _close(*_both(ap.avg_pool, x, kernel, 1), np.float32)
    assert ("box_trees.avg_planes_tree" in caplog.text) == takes


def test_tree_kernel_stays_within_1e_6_of_the_windows_mean_magnitude(caplog):
    """`box_trees.avg_planes_tree` on random windows it takes (up to its depth limit, strides
    down the plane, padding as wide as the window, ceil mode, windows in padding, 3-D with a
    kernel one deep and depth padding; several strips a plane and planes a run), on
    +/-(1e4 +/- 1), whose means nearly cancel: within 1e-6 of each window's mean magnitude."""

    @settings(SETTINGS, max_examples=60)
    # a strip exactly as long as its row buffers (8 rows of pitch 64): W's block levels once
    # read one cell past them (found by the bounds-checked run)
    @example(
        kernel=(9, 33),
        sh=2,
        pads=((6, 7), (0, 31)),
        ceil_mode=True,
        cip=False,
        deep=False,
        extra=(0, 0),
        seed=0,
    )
    @given(
        kernel=st.tuples(st.integers(1, 40), st.integers(1, 40)),
        sh=st.sampled_from([1, 1, 2, 3, 17]),
        pads=st.tuples(*[st.tuples(st.integers(0, 39), st.integers(0, 39))] * 2),
        ceil_mode=st.booleans(),
        cip=st.booleans(),
        deep=st.booleans(),
        extra=st.tuples(st.integers(0, 30), st.integers(0, 30)),
        seed=st.integers(0, 2**16),
    )
    def check(kernel, sh, pads, ceil_mode, cip, deep, extra, seed):
        kh, kw = kernel
        assume(_cpu_plans.tree_window(np.array([[1, 1, 1, 0], [kh, sh, 1, 0], [kw, 1, 1, 0]])))
        direct = (
            kh * kw <= _cpu_drivers.F32_SUM_TAPS or sh >= kh
        )  # `avg_planes_direct`'s, if it spells kw out
        assume(not (direct and _cpu_drivers.fused_w_window(kw, 1)))
        pads = tuple((min(a, k - 1), min(b, k - 1)) for (a, b), k in zip(pads, kernel))
        spatial, kernel, stride = (kh + extra[0], kw + extra[1]), (kh, kw), (sh, 1)
        if deep:  # a third, outer axis: kernel 1, stride 2, a padding row on each side
            spatial, kernel, stride, pads = (3, *spatial), (1, *kernel), (2, *stride), ((1, 1), *pads)
        window = ap.Window(kernel, stride, pads, ceil_mode=ceil_mode, count_include_pad=cip)
        axes = window.resolve(spatial)
        # a window over the whole plane is a global average (the global kernels)
        assume(not all(a.out == 1 and a.kernel == a.size and a.pad_before == a.pad_after == 0 for a in axes))
        # ... and small planes have kernels of their own (`_small_plans.small_planes_kernel`)
        f32_sums = _cpu_drivers.sum_dtype(np.dtype(np.float32), kh * kw) == np.float32
        assume(_small_plans.small_avg_plan(axes, cip, None, f32_sums) is None)
        rng = np.random.default_rng(seed)
        shape = (2, 3, *spatial)
        x = (rng.choice([-1.0, 1.0], shape) * (1e4 + rng.uniform(-1, 1, shape))).astype(np.float32)
        caplog.clear()
        with caplog.at_level("DEBUG", logger="avgpool"):
            fast = ap.avg_pool(x, window=window)
        assert "box_trees.avg_planes_tree" in caplog.text
        with ap.use_backend("reference"):
            exact = ap.avg_pool(x.astype(np.float64), window=window)
            magnitude = ap.avg_pool(np.abs(x.astype(np.float64)), window=window)
        assert (np.abs(fast - exact) <= 1e-6 * magnitude).all()

    check()


@pytest.mark.parametrize("kernel", [(15, 15), (4, 9), (1, 64)])
def test_tree_kernel_keeps_infinities_and_nan_as_a_tap_by_tap_sum(kernel):
    x = _array((2, 3, 40, 80), np.float32, 5, "channels_first")
    x[0, 0, 10, 20], x[0, 1, 5, 5], x[0, 1, 5, 9], x[1, 2, 30, 70] = np.inf, np.inf, -np.inf, np.nan
    _close(
        *_both(ap.avg_pool, x, kernel, 1, (kernel[0] // 2, kernel[1] // 2), count_include_pad=False),
        np.float32,
    )


FUSED_W = [(1, 1), (2, 2), (3, 2), (2, 1), (3, 1), (4, 1), (5, 1)]


def test_every_width_the_direct_plane_kernel_admits_is_summed_right(caplog):
    """`_cpu_drivers.fused_w_window` sends a (width, stride) to `avg_planes_direct` only if
    `_planes.fused_w` spells that window out: every pair up to 10 wide and stride 4, checked
    against the oracle, with the kernel that ran."""
    from avgpool._cpu_drivers import fused_w_window

    # planes too large for the small-plane kernels (`_small_plans.small_planes_kernel`)
    x = _array((2, 3, 7, 301), np.float32, 0, "channels_first", specials=True)
    for kw in range(1, 11):
        for sw in range(1, 5):
            caplog.clear()
            with caplog.at_level("DEBUG", logger="avgpool"):
                _close(*_both(ap.avg_pool, x, (2, kw), (2, sw), (0, kw // 2)), np.float32)
            assert ("box_planes.avg_planes_direct" in caplog.text) == fused_w_window(kw, sw), (kw, sw)


@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.float64])
def test_windows_that_do_not_overlap_down_the_plane_take_the_direct_plane_kernel(dtype, caplog):
    """Channels-first windows with stride >= kernel along H and a W pass that `_fused_w` spells
    out sum each row afresh (`avg_planes_direct`, float32 work); float64 results divide, in
    `avg_planes`. 1-3 spatial dims, padding, ceil mode, windows in padding, inf and NaN."""

    @SETTINGS
    @given(problem=problems(dilated=False), cip=st.booleans(), override=st.sampled_from([None, 5]))
    def check(problem, cip, override):
        window, shape, seed = problem
        kernel, stride = list(window.kernel_size), list(window.stride)
        if len(kernel) > 1:
            stride[-2] = max(stride[-2], kernel[-2])  # no overlap down the plane
            fused = [(kw, sw) for kw, sw in FUSED_W if kw <= kernel[-1]]  # inputs fit the kernel
            kernel[-1], stride[-1] = fused[seed % len(fused)]
        w = window.replace(
            kernel_size=tuple(kernel), stride=tuple(stride), count_include_pad=cip, divisor_override=override
        )
        x = _array(shape, dtype, seed, "channels_first", specials=seed % 3 == 0)
        _close(*_both(ap.avg_pool, x, window=w), dtype)

    with caplog.at_level("DEBUG", logger="avgpool"):
        check()
        # the drawn planes are mostly small enough for the small-plane kernels: one larger than
        # they take, so the direct kernel's turn never depends on the draw
        x = _array((1, 2, 130, 130), dtype, 0, "channels_first", specials=False)
        _close(*_both(ap.avg_pool, x, 2, 2), dtype)
    taken = "box_planes.avg_planes_direct" in caplog.text
    assert taken == (dtype != np.float64)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("reads", [0, math.inf], ids=["running", "direct"])
def test_channels_last_average_on_each_path(monkeypatch, caplog, reads, dtype):
    """Channels-last averages take `avg_direct` or the running sums by how often a window
    reads each cell and whether it sums in float32: each path forced, against the oracle, also
    with inf and NaN."""
    monkeypatch.setattr(_cpu_drivers, "DIRECT_READS", reads)
    if reads == 0:  # float32 sums always go direct: none, for the running path
        monkeypatch.setattr(_cpu_drivers, "F32_SUM_TAPS", 0)
    with caplog.at_level("DEBUG", logger="avgpool"):
        _avg("channels_last", dtype)
        _avg_specials("channels_last", dtype)
    assert ("box_rows.avg_direct" in caplog.text) == (reads > 0)


@pytest.mark.parametrize("layout", KERNEL_LAYOUTS)
@pytest.mark.parametrize("limit", [0, 10**6], ids=["float64-sums", "float32-sums"])
def test_float32_average_on_each_side_of_the_float32_sum_limit(monkeypatch, layout, limit):
    """Float32 averages over at most `_cpu_drivers.F32_SUM_TAPS` taps sum in float32 in the direct
    kernels: no window, then every window, forced there, against the oracle, with inf and NaN."""
    monkeypatch.setattr(_cpu_drivers, "F32_SUM_TAPS", limit)
    _avg(layout, np.float32)
    _avg_specials(layout, np.float32)


def test_float32_sums_only_for_float32_results_of_few_taps():
    assert _cpu_drivers.sum_dtype(np.dtype(np.float32), _cpu_drivers.F32_SUM_TAPS) == np.float32
    assert _cpu_drivers.sum_dtype(np.dtype(np.float32), _cpu_drivers.F32_SUM_TAPS + 1) == np.float64
    assert _cpu_drivers.sum_dtype(np.dtype(np.float64), 1) == np.float64


@pytest.mark.parametrize("layout", KERNEL_LAYOUTS)
@pytest.mark.parametrize(
    "kernel, stride, pad",
    [((2, 2), 2, 0), ((3, 3), 2, 1), ((3, 3), 1, 1), ((1, 9), 1, 0), ((2, 2, 2), 2, 0), ((3, 3), 3, 1)],
)
def test_float32_sums_stay_within_1e_6_of_the_windows_mean_magnitude(layout, kernel, stride, pad):
    """The kernels' 1e-6 accuracy bound where it is tightest: float32 sums (windows of at
    most `_cpu_drivers.F32_SUM_TAPS` taps) of +/-(1e4 +/- 1), whose means nearly cancel, stay within
    1e-6 of the mean magnitude of each window (that of |x|, with the same divisor)."""
    assert _cpu_drivers.sum_dtype(np.dtype(np.float32), math.prod(kernel)) == np.float32
    rng = np.random.default_rng(3)
    shape = (2, 5) + (9,) * (len(kernel) - 1) + (33,)
    x = (rng.choice([-1.0, 1.0], shape) * (1e4 + rng.uniform(-1, 1, shape))).astype(np.float32)
    cl = layout == "channels_last"
    x = np.ascontiguousarray(np.moveaxis(x, 1, -1)) if cl else x
    args = dict(kernel_size=kernel, stride=stride, padding=pad, channels_last=cl)
    fast = ap.avg_pool(x, **args, count_include_pad=False)
    with ap.use_backend("reference"):
        exact = ap.avg_pool(x.astype(np.float64), **args, count_include_pad=False)
        magnitude = ap.avg_pool(np.abs(x.astype(np.float64)), **args, count_include_pad=False)
    assert (np.abs(fast - exact) <= 1e-6 * magnitude).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_backward_of_disjoint_windows_takes_its_kernel_and_the_same_bits(monkeypatch, caplog, dtype):
    """Channels-first windows no wider and no taller than their strides backpropagate through
    `avg_backward_planes_disjoint`: one product per output, bit for bit what the running
    transpose `avg_backward_planes` gives, also with padding, ceil mode, uncounted padding, a
    divisor override, gaps between windows and inf/NaN."""
    from avgpool.kernels import box_backward

    cases = [
        (2, 2, 0, {}),
        ((2, 3), (3, 3), (1, 1), {"ceil_mode": True}),
        (3, 4, 1, {"count_include_pad": False}),
        ((2, 2), 2, 0, {"divisor_override": 3, "ceil_mode": True}),
        ((3,), (5,), (2,), {}),
    ]
    for i, (k, s, p, kwargs) in enumerate(cases):
        ndim = len(k) if isinstance(k, tuple) else 2
        x = _array((2, 3) + (11,) * (ndim - 1) + (13,), dtype, i, "channels_first", specials=True)
        w = ap.Window(k, s, p, ndim=ndim, **kwargs)
        g = _noise(ap.avg_pool(x, window=w).shape, dtype, i)
        g.flat[:3] = [np.inf, np.nan, -np.inf]
        caplog.clear()
        with caplog.at_level("DEBUG", logger="avgpool"):
            fast, slow = _both(ap.avg_pool_backward, g, x.shape, window=w)
        assert "box_backward.avg_backward_planes_disjoint" in caplog.text
        _close(fast, slow, dtype)
        with monkeypatch.context() as m:
            running = lambda *a: box_backward.avg_backward_planes(*a, True)  # noqa: E731
            m.setattr(box_backward, "avg_backward_planes_disjoint", running)
            np.testing.assert_array_equal(ap.avg_pool_backward(g, x.shape, window=w), fast)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_backward_of_disjoint_windows_in_any_layout_takes_its_kernel(monkeypatch, caplog, dtype):
    """Channels-last and 3-D windows no larger than their strides backpropagate through
    `avg_backward_disjoint` (one product per output, written into the cells it covers): against
    the oracle and the running transpose `avg_backward`, with padding, ceil mode, uncounted
    padding, a divisor override, gaps between windows, 1-3 dims and inf/NaN."""
    from avgpool.kernels import box_backward

    cases = [
        ("channels_last", 2, 2, 0, {}),
        ("channels_last", (2, 3), (3, 3), (1, 1), {"ceil_mode": True}),
        ("channels_last", (3,), (4,), (1,), {"count_include_pad": False}),
        ("channels_last", (2, 1, 3), (2, 1, 3), (1, 0, 1), {"divisor_override": 3, "ceil_mode": True}),
        ("channels_first", (2, 2, 2), (2, 3, 2), (0, 1, 1), {"count_include_pad": False}),
    ]
    for i, (layout, k, s, p, kwargs) in enumerate(cases):
        ndim = len(k) if isinstance(k, tuple) else 2
        x = _array((2, 3) + (7,) * (ndim - 1) + (9,), dtype, i, layout)
        w = ap.Window(k, s, p, ndim=ndim, channels_last=layout == "channels_last", **kwargs)
        g = _noise(ap.avg_pool(x, window=w).shape, dtype, i)
        g.flat[:3] = [np.inf, np.nan, -np.inf]
        caplog.clear()
        with caplog.at_level("DEBUG", logger="avgpool"):
            fast, slow = _both(ap.avg_pool_backward, g, x.shape, window=w)
        assert "box_backward.avg_backward_disjoint" in caplog.text, (layout, k)
        _close(fast, slow, dtype)
        with monkeypatch.context() as m:
            m.setattr(box_backward, "avg_backward_disjoint", _running_backward)
            np.testing.assert_array_equal(ap.avg_pool_backward(g, x.shape, window=w), fast)


def _running_backward(g, grad, C, geo, inv_d, inv_h, inv_w):
    """`box_backward.avg_backward` with the cover tables the disjoint kernel does without."""
    from avgpool.kernels import box_backward

    def cover(axis, size, out):
        k, s, p = geo[axis, 0], geo[axis, 1], geo[axis, 3]
        i = np.arange(size)
        lo = np.maximum(-((k - 1 - i - p) // s), 0)
        return np.stack([lo, np.minimum((i + p) // s, out - 1)], axis=1).astype(np.int64)

    W, OW = grad.shape[3] // C, g.shape[3] // C
    cover_h, cover_w = cover(1, grad.shape[2], g.shape[2]), cover(2, W, OW)
    box_backward.avg_backward(g, grad, C, geo, inv_d, inv_h, inv_w, cover_h, cover_w)


def test_overlapping_windows_backward_keeps_the_running_transpose(caplog):
    g = _noise((2, 3, 5, 5), np.float32, 0)
    with caplog.at_level("DEBUG", logger="avgpool"):
        _close(*_both(ap.avg_pool_backward, g, (2, 3, 11, 11), 3, 2), np.float32)
    assert "box_backward.avg_backward_planes" in caplog.text and "disjoint" not in caplog.text


@pytest.mark.parametrize("layout", KERNEL_LAYOUTS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_global_average_keeps_infinities_and_nan(layout, dtype):
    """The plane sums may be reassociated (vector lanes), but inf and NaN still propagate."""
    x = _array((3, 4, 9, 13), dtype, 5, layout)
    sl = (slice(None), 0) if layout == "channels_first" else (slice(None), slice(None), slice(None), 0)
    x[sl][0].flat[[3, 50]] = np.inf  # +inf twice: inf
    x[sl][1].flat[[7, 90]] = [np.inf, -np.inf]  # inf - inf: NaN
    x[sl][2].flat[11] = np.nan
    cl = layout == "channels_last"
    fast, slow = _both(ap.global_avg_pool, x, channels_last=cl)
    _close(fast, slow, dtype)
    first, rest = (fast[..., 0], fast[..., 1:]) if cl else (fast[:, 0], fast[:, 1:])
    first = first.ravel()
    assert first[0] == np.inf and np.isnan(first[1]) and np.isnan(first[2])
    assert np.isfinite(rest).all()


@pytest.mark.parametrize(
    "layout, spatial, f32",
    [
        *(("channels_last", s, True) for s in ((7, 7), (7, 8), (5, 11), (1, 3), (8, 8), (8, 13))),
        *(("channels_last", s, False) for s in ((7, 9), (3, 35), (15, 15))),
        *(("channels_first", s, True) for s in ((7, 7), (1, 3), (8, 8), (9, 11), (8, 13))),
        *(("channels_first", s, False) for s in ((15, 7), (3, 35), (15, 15))),
    ],
)
def test_global_average_sums_in_float32_within_1e_6(caplog, layout, spatial, f32):
    """Float32 global windows sum in float32 when no cell reaches its mean through more than
    `_cpu_drivers.F32_GLOBAL_ROUNDINGS` roundings in the kernel's order (channels-last: 55 and
    104 cells exactly that many, 63 and 105 one more; channels-first: 104 and 105), else in
    float64: on +/-(1e4 +/- 1), whose means nearly cancel, each output is within 1e-6 of its
    window's mean magnitude; inf and NaN propagate on either path."""
    cl = layout == "channels_last"
    cells = spatial[0] * spatial[1]
    small = _cpu_drivers.global_sum_dtype(np.dtype(np.float32), cells, planes=not cl) == np.float32
    assert small == f32
    rng = np.random.default_rng(cells)
    shape = (3, *spatial, 40) if cl else (3, 40, *spatial)
    x = (rng.choice([-1.0, 1.0], shape) * (1e4 + rng.uniform(-1, 1, shape))).astype(np.float32)
    with caplog.at_level("DEBUG", logger="avgpool"):
        fast = ap.global_avg_pool(x, channels_last=cl)
    if not cl:
        assert ("global_avg_runs" in caplog.text) == f32
    with ap.use_backend("reference"):
        exact = ap.global_avg_pool(x.astype(np.float64), channels_last=cl)
        magnitude = ap.global_avg_pool(np.abs(x.astype(np.float64)), channels_last=cl)
    assert fast.dtype == np.float32 and (np.abs(fast - exact) <= 1e-6 * magnitude).all()
    where = [(0, 1), (1, 2), (2, 3)]
    cells_of = (lambda n, ch: x[n, ..., ch]) if cl else (lambda n, ch: x[n, ch])
    cells_of(0, 1)[0, 0] = np.inf
    cells_of(1, 2)[-1, -1] = np.nan
    cells_of(2, 3)[0, -1] = -np.inf
    cells_of(2, 3)[-1, 0] = np.inf
    out = ap.global_avg_pool(x, channels_last=cl).reshape(3, 40)
    assert out[0, 1] == np.inf and np.isnan(out[1, 2]) and np.isnan(out[2, 3])
    assert np.isfinite(np.delete(out, [n * 40 + ch for n, ch in where])).all()


# -- accuracy, determinism, buffers ----------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "kernel, padding, cip",
    [((5, 5), 0, True), ((15, 15), 7, False), ((7, 3), (3, 1), True), ((4, 6), (1, 2), False)],
)
def test_channels_last_running_sums_slide_one_row_and_one_cell(monkeypatch, kernel, padding, cip, dtype):
    """Channels-last running sums at stride 1 (`box_rows.avg_forward`), where each step takes
    one row (cell) out and one in, in one sweep where both are real and tap by tap at the
    edges; with an infinity and a NaN (their chunks summed again tap by tap)."""
    monkeypatch.setattr(_cpu_drivers, "DIRECT_READS", 0)
    monkeypatch.setattr(_cpu_drivers, "F32_SUM_TAPS", 0)
    rng = np.random.default_rng(sum(kernel))
    x = (rng.standard_normal((2, 40, 23, 6)) * 100).astype(dtype)
    x[1, 30, 11, 2], x[1, 5, 20, 4] = np.inf, np.nan
    args = dict(channels_last=True, count_include_pad=cip)
    fast, slow = _both(ap.avg_pool, x, kernel, 1, padding, **args)
    _close(fast, slow, dtype, scale=100.0)


def test_float32_running_sums_stay_accurate_on_long_rows_with_an_offset():
    # 1e4 +/- 1 over 200k cells: a float32 running sum would drift by far more than 1e-6.
    rng = np.random.default_rng(0)
    x = (1e4 + rng.uniform(-1, 1, (1, 2, 200_000))).astype(np.float32)
    fast, slow = _both(ap.avg_pool1d, x, 64, 1)
    np.testing.assert_allclose(fast, slow, rtol=1e-6)
    fast, slow = _both(ap.avg_pool, x.reshape(1, 2, 400, 500), 15, 1, 7)
    np.testing.assert_allclose(fast, slow, rtol=1e-6)
    last = np.ascontiguousarray(np.moveaxis(x, 1, -1))  # channels-last rows, summed in place
    fast, slow = _both(ap.avg_pool1d, last, 64, 1, channels_last=True)
    np.testing.assert_allclose(fast, slow, rtol=1e-6)


@pytest.mark.parametrize("layout", KERNEL_LAYOUTS)
def test_results_are_bitwise_identical_for_any_thread_count(layout):
    x = _array((3, 5, 67, 45), np.float32, 1, layout)
    cl = layout == "channels_last"
    g = np.ones(ap.avg_pool(x, 7, 2, 1, channels_last=cl).shape, np.float32)
    calls = [
        lambda: ap.avg_pool(x, 7, 1, 3, channels_last=cl),
        lambda: ap.avg_pool(x, 15, 1, 0, channels_last=cl),
        lambda: ap.avg_pool_backward(g, x.shape, 7, 2, 1, channels_last=cl),
        lambda: ap.max_pool(x, 3, 2, 1, channels_last=cl),
    ]
    before = numba.get_num_threads()
    try:
        results = []
        for threads in sorted({1, numba.config.NUMBA_NUM_THREADS}):
            ap.set_num_threads(threads)
            results.append([call() for call in calls])
            results.append([call() for call in calls])  # and run to run
    finally:
        ap.set_num_threads(before)
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_array_equal(a, b)


def test_out_buffer_is_written_and_returned():
    x = _array((2, 3, 8, 8), np.float32, 2, "channels_first")
    out = np.full((2, 3, 4, 4), np.nan, np.float32)
    result = ap.avg_pool(x, 2, out=out)
    assert result is out
    np.testing.assert_array_equal(out, ap.avg_pool(x, 2))
    values = np.empty((2, 3, 4, 4), np.float32)
    assert ap.max_pool(x, 2, out=values) is values
    with pytest.raises(ap.AvgPoolError, match="out must be an array of shape"):
        ap.avg_pool(x, 2, out=np.empty((2, 3, 4, 4), np.float64))


def test_non_contiguous_and_negative_strides():
    x = _array((2, 3, 20, 30), np.float64, 3, "channels_first")
    view = x[:, ::-1, 3:17:2, ::-3]
    fast, slow = _both(ap.avg_pool2d, view, 3, 1, 1)
    np.testing.assert_allclose(fast, slow, rtol=1e-12)


def test_set_num_threads_checks_its_argument():
    with pytest.raises(ap.AvgPoolError, match="threads must be an int between 1 and"):
        ap.set_num_threads(0)


def test_backend_switch_checks_its_argument():
    with pytest.raises(ap.AvgPoolError, match="backend must be one of"):
        ap.set_backend("cuda")
    assert ap.get_backend() == "numba"


@pytest.mark.parametrize("layout", KERNEL_LAYOUTS)
def test_max_window_of_minus_infinity_points_at_its_first_real_cell(layout):
    # The first tap of each edge window is padding; every real cell is -inf.
    x = _array((1, 2, 3, 4), np.float32, 5, layout)
    x[...] = -np.inf
    cl = layout == "channels_last"
    fast, slow = _both(ap.max_pool2d, x, 3, 2, 1, return_indices=True, channels_last=cl)
    np.testing.assert_array_equal(fast[1], slow[1])
    np.testing.assert_array_equal(fast[0], slow[0])
    first = fast[1][0, ..., 0] if cl else fast[1][0, 0]
    assert first[0, 0] == 0  # row 0, column 0: the window's first real cell


# -- the kernel table ----------------------------------------------------------------------------

#: For each registered kernel, a float32 call that reaches it: (op, layout, keyword arguments),
#: on an input of shape ``CASE_SHAPE``, or of ``LARGE_SHAPE`` for the channels-first plane
#: kernels that small planes no longer reach (`_small_plans.small_planes_kernel`). A kernel
#: registered without a case here fails `test_every_kernel_has_a_case`.
CASE_SHAPE = (2, 3, 12, 13)
K2 = {"kernel_size": 2}
LARGE_SHAPE = (1, 2, 60, 61)
K3S2 = {"kernel_size": 3, "stride": 2}
KERNEL_CASES = {
    "box_rows.avg_forward": ("avg_pool", "channels_last", {"kernel_size": 4, "stride": 1, "padding": 1}),
    "box_rows.avg_direct": ("avg_pool", "channels_last", {"kernel_size": 2, "padding": 1}),
    "box_rows.avg_2x2_blocks": ("avg_pool", "channels_last", K2),
    "box_rows.copy_cells": (
        "adaptive_avg_pool",
        "channels_last",
        {"output_size": (12, 13)},
        (16, 64, 12, 13),
    ),
    "box_planes.avg_planes": (
        "avg_pool",
        "channels_first",
        {"kernel_size": (3, 9), "stride": (1, 3)},
        LARGE_SHAPE,
    ),
    "box_planes.avg_planes_direct": (
        "avg_pool",
        "channels_first",
        {"kernel_size": 3, "stride": 2},
        LARGE_SHAPE,
    ),
    "box_trees.avg_planes_tree": (
        "avg_pool",
        "channels_first",
        {"kernel_size": 7, "stride": 1, "padding": 3},
        LARGE_SHAPE,
    ),
    "box_backward.avg_backward": ("avg_pool_backward", "channels_last", K3S2),
    "box_backward.avg_backward_3x3": (
        "avg_pool_backward",
        "channels_last",
        {"kernel_size": 3, "stride": 1, "padding": 1},
    ),
    "box_backward.avg_backward_disjoint": ("avg_pool_backward", "channels_last", {"kernel_size": 2}),
    "box_backward.avg_backward_planes": ("avg_pool_backward", "channels_first", K3S2),
    "box_backward.avg_backward_planes_disjoint": ("avg_pool_backward", "channels_first", {"kernel_size": 2}),
    "box_backward.global_spread": ("avg_pool_backward", "channels_last", {"kernel_size": (12, 13)}),
    "box_global.global_avg": ("global_avg_pool", "channels_last", {}),
    "box_global.global_avg_planes": ("global_avg_pool", "channels_first", {}),
    "box_global.global_avg_runs": ("global_avg_pool", "channels_first", {}, (2, 3, 7, 9)),
    "cpu_max.max_forward": ("max_pool", "channels_last", {**K3S2, "return_indices": True}),
    "plane_max.max_planes": ("max_pool", "channels_first", {**K3S2, "return_indices": True}, LARGE_SHAPE),
    "plane_max.max_planes_values": (
        "max_pool",
        "channels_first",
        {"kernel_size": (3, 2), "stride": 2},
        LARGE_SHAPE,
    ),
    "plane_max.max3s2_planes": ("max_pool", "channels_first", K3S2, LARGE_SHAPE),
    "cpu_max.max_values": ("max_pool", "channels_last", K3S2),
    "cpu_max.max_values_large": ("max_pool", "channels_last", {"kernel_size": 5, "stride": 1}),
    "cpu_max.global_max": ("global_max_pool", "channels_last", {}),
    "cpu_max.max_backward": ("max_pool_backward", "channels_first", K3S2),
    "cpu_max.max_backward_disjoint": ("max_pool_backward", "channels_last", K2, (2, 16, 7, 9)),
    "cpu_max.max_backward_windows": ("max_pool_backward", "channels_last", K3S2, (2, 128, 7, 9)),
    "cpu_taps.taps_sum": ("adaptive_avg_pool", "channels_first", {"output_size": (4, 5)}),
    "cpu_taps.taps_sum_rows": ("blur_pool", "channels_first", {"filt_size": 4, "stride": 2}),
    "cpu_taps.taps_sum_planes": (
        "blur_pool",
        "channels_first",
        {"filt_size": 3, "stride": 2},
        (2, 17, 9, 11),
    ),
    "cpu_taps.taps_max": ("adaptive_max_pool", "channels_first", {"output_size": (5, 4)}),
    "small_planes.avg_small": ("avg_pool", "channels_first", K3S2),
    "small_planes.max_small": ("max_pool", "channels_first", K3S2),
    "small_planes.max_small_index": ("max_pool", "channels_first", {**K3S2, "return_indices": True}),
    "flat_planes.avg_same": ("avg_pool", "channels_first", {"kernel_size": 3, "stride": 1, "padding": 1}),
    "flat_planes.avg_tiles": ("avg_pool", "channels_first", {"kernel_size": (2, 1), "stride": (2, 1)}),
    "flat_planes.max_tiles": ("max_pool", "channels_first", {"kernel_size": (2, 1), "stride": (2, 1)}),
    "flat_planes.max_same": ("max_pool", "channels_first", {"kernel_size": 3, "stride": 1, "padding": 1}),
}


def _run_case(op, x, cl, kwargs):
    """(numba, reference) results of ``op`` on ``x``; a backward gets a gradient of ones."""
    kwargs = dict(kwargs, channels_last=cl)
    if op == "avg_pool_backward":
        g = _noise(ap.avg_pool(x, **kwargs).shape, x.dtype, 1)
        return _both(ap.avg_pool_backward, g, x.shape, **kwargs)
    if op == "max_pool_backward":
        g = _noise(ap.max_pool(x, **kwargs).shape, x.dtype, 1)
        return _both(ap.max_pool_backward, g, x, **kwargs)
    if op == "adaptive_avg_pool_backward":
        size = kwargs.pop("output_size")
        g = _noise(ap.adaptive_avg_pool(x, size, **kwargs).shape, x.dtype, 1)
        return _both(ap.adaptive_avg_pool_backward, g, x.shape, **kwargs)
    if op.startswith("adaptive_"):
        return _both(getattr(ap, op), x, kwargs.pop("output_size"), **kwargs)
    return _both(getattr(ap, op), x, **kwargs)


def test_every_kernel_has_a_case():
    assert set(KERNEL_CASES) == set(registry.kernels())


@pytest.mark.parametrize("name", sorted(registry.kernels()))
def test_every_registered_kernel_runs_and_matches_the_reference(name, monkeypatch):
    """Each kernel in the table, reached through one of the ops it registered for (every kernel
    spied on, so the case must reach this one), against the oracle, with inf and NaN."""
    import importlib

    called = []
    for other, kernel in registry.kernels().items():
        module, function = other.split(".")

        def spy(*args, _kernel=kernel):
            called.append(_kernel.name)
            return _kernel.function(*args)

        monkeypatch.setattr(importlib.import_module(f"avgpool.kernels.{module}"), function, spy)
    op, layout, kwargs, *shape = KERNEL_CASES[name]
    assert op in registry.kernels()[name].ops
    x = _array(shape[0] if shape else CASE_SHAPE, np.float32, 7, layout, specials=not op.endswith("backward"))
    fast, slow = _run_case(op, x, layout == "channels_last", kwargs)
    assert name in called, called
    _close(fast, slow, np.float32)


def test_every_compiled_entry_point_is_registered():
    """A public ``@njit`` function of a kernel module is an entry point a driver calls: it must
    be in the table (and the table holds the module's own compiled function)."""
    import importlib

    from numba.core.registry import CPUDispatcher

    table = registry.kernels()
    assert "box_planes" in registry.kernel_modules() and "registry" not in registry.kernel_modules()
    found = set()
    for module_name in registry.kernel_modules():
        module = importlib.import_module(f"avgpool.kernels.{module_name}")
        for attr, value in vars(module).items():
            if attr.startswith("_") or not isinstance(value, CPUDispatcher):
                continue
            if value.py_func.__module__ != module.__name__:
                continue  # imported from a helper module
            found.add(f"{module_name}.{attr}")
            assert table.get(f"{module_name}.{attr}", None) is not None, (
                f"{module_name}.{attr} is not registered"
            )
            assert table[f"{module_name}.{attr}"].function is value
    assert found == set(table)


def test_register_names_the_module_and_function_and_needs_ops():
    from avgpool.kernels import box_planes

    assert registry.kernels()["box_planes.avg_planes"].function is box_planes.avg_planes
    assert "box_backward.avg_backward_planes_disjoint" in KERNEL_OPS["avg_pool_backward"]
    with pytest.raises(ValueError, match="register needs the ops the kernel serves"):
        registry.register()


@pytest.mark.parametrize("override", [None, 3])
@pytest.mark.parametrize("spatial", [(7,), (5, 6), (1, 1), (40, 3)])
@pytest.mark.parametrize("dtype", KERNEL_DTYPES)
def test_global_backward_shortcut_is_the_plane_kernel_to_the_bit(dtype, spatial, override, caplog):
    # A global window's backward skips box_backward.avg_backward_planes (a slice per column there)
    # for the same float64 operations in NumPy; signed zeros, underflow, inf and NaN included.
    from avgpool import _cpu_drivers
    from avgpool._arrays import Layout
    from avgpool.kernels import box_backward

    dtype = np.dtype(dtype)
    shape = (4, 5, *spatial)
    window = ap.Window(None, ndim=len(spatial), divisor_override=override)
    layout = Layout.of(shape, window.ndim, False)
    axes = window.resolve(layout.spatial)
    specials = [-0.0, 0.0, 5e-324, -1e-45, 6e-8, np.inf, -np.inf, np.nan, 1e308, -65504.0, 1.0]
    g = np.random.default_rng(1).standard_normal(20)
    g[: len(specials)] = specials
    with np.errstate(over="ignore"):
        g = g.astype(dtype).reshape(layout.out_shape((1,) * len(spatial)))
    with caplog.at_level("DEBUG", logger="avgpool"):
        got = _cpu_drivers.avg_backward(g, layout, axes, True, override)
    assert "global window, one value per plane" in caplog.text

    plan = _cpu_plans.avg_backward_plan(tuple(axes), True, override)
    inv, cover_h, _, inv_h = plan.tables
    work_dtype = np.float32 if dtype == np.float16 else dtype
    planes = (20, *((1,) * (2 - len(spatial))), *spatial)  # (planes, H, W); 1-D: H = 1
    work = np.empty(planes, work_dtype)
    box_backward.avg_backward_planes(
        g.astype(work_dtype).reshape(20, 1, 1), work, plan.geo, inv_h, inv[2], cover_h, True
    )
    want = work.astype(dtype).reshape(shape)
    bits = np.dtype(f"u{dtype.itemsize}")
    np.testing.assert_array_equal(got.view(bits), want.view(bits))
