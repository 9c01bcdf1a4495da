"""The tap-table kernels (`avgpool.kernels.cpu_taps`: blur and adaptive average pooling, forward
and backward) against the float64 reference.

Random blur geometries (filter sizes 1-7, strides 1-3, every padding mode, 1-3 spatial axes)
on both layouts, with plane counts on both sides of a block of planes; the float32 sums at
their documented error bound; the planes kernel bit for bit the rows kernel's sums. CI also
runs this file with NUMBA_BOUNDSCHECK=1.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import avgpool as ap
from avgpool import _backends, _cpu_plans, _cpu_taps, reference
from avgpool.kernels import cpu_taps

SETTINGS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
TOLERANCE = {"float32": 2e-6, "float64": 1e-12}


def _layouts(x: np.ndarray, cl: bool) -> np.ndarray:
    return np.ascontiguousarray(np.moveaxis(x, 1, -1)) if cl else x


def _back(y: np.ndarray, cl: bool) -> np.ndarray:
    return np.moveaxis(y, -1, 1) if cl else y


@st.composite
def blurs(draw):
    """(shape, filt_size, stride, pad_type, pad_off, channels_last, dtype, seed)."""
    ndim = draw(st.integers(1, 3))
    spatial = tuple(draw(st.integers(2, 12 if ndim < 3 else 6)) for _ in range(ndim))
    planes = draw(st.sampled_from([1, 3, 15, 16, 17, 40, 70]))
    shape = (draw(st.integers(1, 2)), planes, *spatial)
    filt = draw(st.integers(1, 7))
    mode = draw(st.sampled_from(["reflect", "replicate", "zero"]))
    if mode == "reflect":  # reflection needs a pad smaller than the axis
        filt = min(filt, 2 * min(spatial) - 1)
    return (
        shape,
        filt,
        draw(st.integers(1, 3)),
        mode,
        draw(st.integers(0, 1)) if mode != "reflect" else 0,
        draw(st.booleans()),
        draw(st.sampled_from(["float32", "float64"])),
        draw(st.integers(0, 2**16)),
    )


@SETTINGS
@given(blurs())
def test_blur_forward_and_backward_match_the_reference(case):
    shape, f, s, mode, off, cl, dtype, seed = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(dtype)
    kwargs = dict(pad_type=mode, pad_off=off, channels_last=cl)
    fast = _back(ap.blur_pool(_layouts(x, cl), f, s, **kwargs), cl)
    flat = x.astype(np.float64).reshape(-1, *shape[2:])
    exact = reference.blur_pool(flat, f, s, mode, off)
    np.testing.assert_allclose(fast.reshape(exact.shape), exact, rtol=TOLERANCE[dtype], atol=TOLERANCE[dtype])
    g = rng.standard_normal(fast.shape).astype(dtype)
    grad = _back(ap.blur_pool_backward(_layouts(g, cl), _layouts(x, cl).shape, f, s, **kwargs), cl)
    exact = reference.blur_pool_backward(
        g.astype(np.float64).reshape(-1, *g.shape[2:]), shape[2:], f, s, mode, off
    )
    np.testing.assert_allclose(
        grad.reshape(exact.shape), exact, rtol=TOLERANCE[dtype], atol=4 * TOLERANCE[dtype]
    )


@pytest.mark.parametrize("cl", [False, True], ids=["channels_first", "channels_last"])
@pytest.mark.parametrize("mode", ["zero", "reflect"])
def test_inf_and_nan_reach_only_the_outputs_that_read_them(cl, mode):
    """Taps of weight 0 (zero padding) read a zero cell, never the data: an inf at the border
    makes no NaN in the outputs whose windows only pad there; NaN spreads as in the reference."""
    x = np.random.default_rng(0).standard_normal((1, 20, 9, 10))
    x[0, :3, 0, 0], x[0, 3:6, 8, 9], x[0, 6, 4, 4] = np.inf, -np.inf, np.nan
    fast = _back(ap.blur_pool(_layouts(x, cl), 3, 2, pad_type=mode, channels_last=cl), cl)
    exact = reference.blur_pool(x[0], 3, 2, mode)
    np.testing.assert_array_equal(np.isnan(fast[0]), np.isnan(exact))
    np.testing.assert_allclose(fast[0], exact, rtol=1e-12)
    g = np.random.default_rng(1).standard_normal(fast.shape)
    g[0, :2, 0, 0] = np.inf
    grad = _back(
        ap.blur_pool_backward(_layouts(g, cl), _layouts(x, cl).shape, 3, 2, pad_type=mode, channels_last=cl),
        cl,
    )
    exact = reference.blur_pool_backward(g[0], x.shape[2:], 3, 2, mode)
    np.testing.assert_array_equal(np.isnan(grad[0]), np.isnan(exact))
    np.testing.assert_allclose(grad[0], exact, rtol=1e-12)


@pytest.mark.parametrize("cl", [False, True], ids=["channels_first", "channels_last"])
@pytest.mark.parametrize("f", [2, 4, 7])
def test_float32_blur_sums_stay_within_the_documented_bound(cl, f):
    """`_cpu_taps.F32_TAP_SUMS`: a 2-d float32 blur sums in float32 and stays within
    (taps + 2) * 2**-24 of the sum of |weight| * |x| over its taps. The input mixes magnitudes
    2**-12 .. 2**12 of both signs, so the sums cancel and round (they do round: the error is
    not 0)."""
    rng = np.random.default_rng(5)
    shape = (1, 40, 15, 14)
    x = rng.choice([-1.0, 1.0], shape) * 2.0 ** rng.integers(-12, 13, shape)
    x = (x + rng.standard_normal(shape) * 2.0 ** rng.integers(-12, 13, shape)).astype(np.float32)
    tables = _cpu_plans.tap_tables(reference.blur_tables(shape[2:], f, 2, "reflect", 0))
    assert _cpu_taps.tap_sum_dtype(np.dtype(np.float32), tables) == np.float32
    fast = _back(ap.blur_pool(_layouts(x, cl), f, 2, channels_last=cl), cl).astype(np.float64)
    flat = x.astype(np.float64).reshape(-1, *shape[2:])
    exact = reference.blur_pool(flat, f, 2, "reflect").reshape(fast.shape)
    magnitude = reference.blur_pool(np.abs(flat), f, 2, "reflect").reshape(fast.shape)
    error = np.abs(fast - exact)
    assert (error <= (2 * f + 2) * 2.0**-24 * magnitude).all()
    assert error.max() > 0


def test_tap_sums_past_the_limit_run_in_float64():
    """A 3-d 4-tap blur (16 D*H taps and 4 W taps) sums in float64: 1 + 2**-24 * 15 small
    terms keeps every small term, which float32 would lose one by one."""
    tables = _cpu_plans.tap_tables(reference.blur_tables((6, 6, 6), 4, 2, "reflect", 0))
    assert _cpu_taps.tap_sum_dtype(np.dtype(np.float32), tables) == np.float64
    assert (
        _cpu_taps.tap_sum_dtype(
            np.dtype(np.float64), _cpu_plans.tap_tables(reference.blur_tables((6, 6), 2, 2, "reflect", 0))
        )
        == np.float64
    )
    x = np.full((1, 1, 4, 4, 4), 2.0**-24, np.float32)
    x[0, 0, 1, 1, 1] = 1.0
    fast = ap.blur_pool(x, 4, 2)
    exact = reference.blur_pool(x[0].astype(np.float64), 4, 2, "reflect")
    assert fast.dtype == np.float32
    np.testing.assert_array_equal(fast[0], exact.astype(np.float32))


@pytest.mark.parametrize("shape", [(3, 23, 14, 13), (1, 77, 9, 10)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_planes_kernel_sums_as_the_rows_kernel(monkeypatch, caplog, dtype, shape):
    """Channels-first planes vectorised across planes (`taps_sum_planes`, blocks of 64 planes
    with a short last block of 5 or 13, planes of cells not a multiple of 8, transposed 8 by 8)
    give the bits of the row kernel (`taps_sum_rows`), blur and adaptive; windows of more
    than `F32_TAP_SUMS` taps sum float32 planes in float64, transposed in and out as such."""
    x = np.random.default_rng(2).standard_normal(shape).astype(dtype)
    calls = [lambda a: ap.blur_pool(a, 4, 2), lambda a: ap.blur_pool(a, 5, 1, pad_type="zero")]
    calls.append(lambda a: ap.blur_pool(a, 7, 1))  # 49 taps
    assert _cpu_taps.F32_TAP_SUMS < 49
    calls.append(lambda a: ap.adaptive_avg_pool(a, (5, 4)))
    results = []
    for planes_min in (1, 10**9):
        monkeypatch.setattr(_cpu_taps, "PLANES_MIN", planes_min)
        _backends.clear_plans()
        with caplog.at_level("DEBUG", logger="avgpool"):
            results.append([call(x) for call in calls[:3]])
        assert ("taps_sum_planes" in caplog.text) == (planes_min == 1)
        caplog.clear()
    for planes, rows in zip(*results):
        np.testing.assert_array_equal(planes, rows)
    monkeypatch.setattr(_cpu_taps, "PLANES_MIN", 1)
    _backends.clear_plans()
    exact = reference.adaptive_avg_pool(x.astype(np.float64).reshape(-1, *shape[2:]), (5, 4))
    tol = TOLERANCE[np.dtype(dtype).name]
    np.testing.assert_allclose(calls[3](x).reshape(exact.shape), exact, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_regular_width_taps_sum_as_the_planes_kernel(monkeypatch, caplog, dtype):
    """Rows whose W taps repeat a step of 1 or 2 (blur 4/2 and 5/2 reflect, 3/1 zero-padded,
    an adaptive pool of 2-wide windows) over at least `SPAN_MIN_OUTPUTS` outputs take them
    with no gather (`_span_sum`), in the rows kernel: the bits of the planes kernel, which
    gathers every tap, and the reference within the tolerance."""
    assert cpu_taps.SPAN_MIN_OUTPUTS <= 34
    x = np.random.default_rng(5).standard_normal((1, 18, 21, 70)).astype(dtype)
    x[0, 3, 4, 30:33] = [np.inf, -np.inf, np.nan]
    calls = [
        lambda a: ap.blur_pool(a, 4, 2),
        lambda a: ap.blur_pool(a, 5, 2),
        lambda a: ap.blur_pool(a, 3, 1, pad_type="zero"),
        lambda a: ap.adaptive_avg_pool(a, (20, 69)),
    ]
    results = []
    for planes_min, max_w in ((10**9, 32), (1, 128)):
        monkeypatch.setattr(_cpu_taps, "PLANES_MIN", planes_min)
        monkeypatch.setattr(_cpu_taps, "PLANES_MAX_W", max_w)
        _backends.clear_plans()
        with caplog.at_level("DEBUG", logger="avgpool"):
            results.append([call(x) for call in calls])
        assert ("taps_sum_rows" in caplog.text) == (planes_min > 1)
        caplog.clear()
    tol = TOLERANCE[np.dtype(dtype).name]
    for rows, planes, call in zip(*results, calls):
        np.testing.assert_array_equal(rows, planes)
        with ap.use_backend("reference"):
            want = call(x.astype(np.float64))
        np.testing.assert_allclose(rows, want, rtol=tol, atol=tol * 10, equal_nan=True)


def test_backward_is_the_same_for_any_thread_count(monkeypatch):
    """The scatter runs outer slices in order on any thread: one thread and two give the same
    bits (planned afresh each time, on every thread count the plan may take)."""
    from avgpool import _cpu_calls

    monkeypatch.setattr(_cpu_calls, "BYTES_PER_THREAD", 1)
    g = np.random.default_rng(4).standard_normal((4, 9, 6, 6)).astype(np.float32)
    g = np.ascontiguousarray(np.moveaxis(g, 1, -1))
    results = []
    before = ap.get_num_threads()
    try:
        for threads in (1, 2):
            ap.set_num_threads(threads)
            _backends.clear_plans()
            results.append(ap.blur_pool_backward(g, (4, 12, 11, 9), 4, 2, channels_last=True))
    finally:
        ap.set_num_threads(before)
    np.testing.assert_array_equal(*results)


@pytest.mark.parametrize("cl", [False, True], ids=["channels_first", "channels_last"])
@pytest.mark.parametrize("f, s", [(4, 2), (5, 1), (3, 2)])
def test_float32_blur_gradients_stay_within_the_documented_bound(cl, f, s):
    """The backward gathers, per input cell, the gradients of the outputs that read it (the
    transposed tables); a float32 gradient within `_cpu_taps.F32_TAP_SUMS` of those sums in
    float32 and stays within (taps + 2) * 2**-24 of the sum of |weight| * |grad|."""
    rng = np.random.default_rng(6)
    spatial = (15, 14)
    tables = _cpu_plans.tap_tables(reference.blur_tables(spatial, f, s, "reflect", 0)).transposed
    taps = tables.weight[3].shape[1] + tables.weight[5].shape[1]
    assert _cpu_taps.tap_sum_dtype(np.dtype(np.float32), tables) == np.float32
    out = tuple(tables.sizes[1:])
    shape = (1, 40, *out)
    g = rng.choice([-1.0, 1.0], shape) * 2.0 ** rng.integers(-12, 13, shape)
    g = (g + rng.standard_normal(shape) * 2.0 ** rng.integers(-12, 13, shape)).astype(np.float32)
    x_shape = _layouts(np.empty((1, 40, *spatial)), cl).shape
    fast = _back(ap.blur_pool_backward(_layouts(g, cl), x_shape, f, s, channels_last=cl), cl).astype(
        np.float64
    )
    flat = g.astype(np.float64).reshape(-1, *out)
    exact = reference.blur_pool_backward(flat, spatial, f, s, "reflect").reshape(fast.shape)
    magnitude = reference.blur_pool_backward(np.abs(flat), spatial, f, s, "reflect").reshape(fast.shape)
    error = np.abs(fast - exact)
    assert (error <= (taps + 2) * 2.0**-24 * magnitude).all()
    assert error.max() > 0
