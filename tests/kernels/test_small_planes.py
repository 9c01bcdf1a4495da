"""The small-plane kernels (`avgpool.kernels.small_planes`) against the float64 reference.

Random undilated 1-D and 2-D geometries (asymmetric and ceil-mode padding, windows in the
padding, planes smaller than the window), plane counts on both sides of a block of planes,
both float dtypes; float32 sums at the documented error bound. CI also runs this file with
NUMBA_BOUNDSCHECK=1.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import avgpool as ap
from avgpool import _cpu_drivers, _small_plans, reference
from avgpool.kernels import flat_planes, small_planes

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
TOLERANCE = {"float32": 2e-6, "float64": 1e-12}


@st.composite
def geometries(draw, shape="any"):
    """(axes, planes, seed): an undilated 1-D or 2-D geometry resolved on a small plane;
    ``shape`` "same" (stride 1, the output the input's size) or "tiles" (windows that tile
    the plane) for the kernels that take only those."""
    ndim = draw(st.integers(1, 2))
    kernel = draw(st.tuples(*[st.integers(1, 5)] * ndim))
    if shape == "tiles":
        spatial = tuple(k * draw(st.integers(1, 8)) for k in kernel)
        axes = ap.Window(kernel, kernel).resolve(spatial)
        return axes, draw(st.sampled_from([0, 1, 3, 17, 70, 130])), draw(st.integers(0, 2**16))
    if shape == "same":
        stride = (1,) * ndim
        pads = tuple((b, k - 1 - b) for k in kernel for b in [draw(st.integers(0, k - 1))])
        ceil_mode = False
    else:
        stride = draw(st.tuples(*[st.integers(1, 4)] * ndim))
        pads = draw(st.tuples(*[st.tuples(st.integers(0, 5), st.integers(0, 5))] * ndim))
        ceil_mode = draw(st.booleans())
    spatial = tuple(
        draw(st.integers(max(1, k - b - a), max(1, k - b - a) + 12)) for k, (b, a) in zip(kernel, pads)
    )
    window = ap.Window(kernel, stride, pads, ceil_mode=ceil_mode)
    axes = window.resolve(spatial)
    planes = draw(st.sampled_from([0, 1, 3, 17, 70, 130]))  # none  # within one block, a few, a ragged tail
    return axes, planes, draw(st.integers(0, 2**16))


def _planes(axes, planes, dtype, seed, specials=False):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((planes, *(a.size for a in axes)))
    if specials and x.size:
        x.flat[rng.integers(0, x.size, 3)] = [np.nan, np.inf, -np.inf]
        x = np.round(x, 1)  # ties
    return x.astype(dtype)


def _as3(a):
    return a.reshape(a.shape[0], 1, a.shape[1]) if a.ndim == 2 else a


def _avg(x, axes, cip, override, empty, shape="any"):
    """(kernel result, float64 reference) on planes ``x`` (planes, *spatial): `avg_small`,
    or for the shape of window they take, `avg_same` or `avg_tiles`."""
    out = np.empty((x.shape[0], *(a.out for a in axes)), x.dtype)
    acc = _cpu_drivers.sum_dtype(x.dtype, int(np.prod([a.kernel for a in axes])))
    if shape == "same":
        assert _small_plans.same_window(axes)
        plan = "flat_planes.avg_same", _small_plans.small_same_tables(axes, cip, override, acc == np.float32)
    elif shape == "tiles":
        assert _small_plans.tiled_window(axes)
        plan = "flat_planes.avg_tiles", _small_plans.small_tiles_tables(axes, override)
    else:
        plan = "small_planes.avg_small", _small_plans.small_avg_tables(axes, cip, override)
    small_planes.run_avg(_as3(x), _as3(out), plan, empty, acc)
    return out, reference.avg_pool(x.astype(np.float64), axes, cip, override, empty)


def _close(fast, slow, dtype):
    tol = TOLERANCE[np.dtype(dtype).name]
    np.testing.assert_allclose(fast.astype(np.float64), slow, rtol=tol, atol=tol, equal_nan=True)


SHAPES = ["any", "same", "tiles"]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES)
@SETTINGS
@given(data=st.data(), cip=st.booleans(), override=st.sampled_from([None, None, 2, 7]))
def test_avg_matches_reference(dtype, shape, data, cip, override):
    axes, planes, seed = data.draw(geometries(shape))
    empty = data.draw(st.sampled_from([0.0, np.nan]))  # PyTorch's and Flax's empty window
    x = _planes(axes, planes, dtype, seed)
    fast, slow = _avg(x, axes, cip, override, empty, shape)
    _close(fast, slow, dtype)


@pytest.mark.parametrize("shape", SHAPES)
@SETTINGS
@given(data=st.data(), cip=st.booleans())
def test_avg_non_finite_reaches_only_its_windows(shape, data, cip):
    axes, planes, seed = data.draw(geometries(shape))
    x = _planes(axes, planes, np.float32, seed, specials=True)
    fast, slow = _avg(x, axes, cip, None, 0.0, shape)
    _close(fast, slow, np.float32)


def test_avg_empty_windows_get_the_empty_value():
    # a 2x2/2 window with 3 cells of padding before: the first output row and column see
    # only padding; not counting it, their divisor is 0
    axes = ap.Window((2, 2), (2, 2), ((3, 0), (3, 0))).resolve((4, 4))
    x = np.ones((5, 4, 4), np.float32)
    for same in (np.nan, 0.0):
        fast, slow = _avg(x, axes, False, None, same)
        np.testing.assert_array_equal(np.isnan(fast), np.isnan(slow))
        _close(fast, slow, np.float32)
    fast, _ = _avg(x, axes, False, None, np.nan)
    assert np.isnan(fast[:, 0, :]).all() and np.isnan(fast[:, :, 0]).all() and fast[0, 2, 2] == 1.0


def test_float64_is_exact_against_the_reference():
    # sums of integers are exact in any order, and float64 results divide as the reference does
    axes = ap.Window((3, 3), (1, 1), 1).resolve((7, 7))
    x = np.random.default_rng(1).integers(-1000, 1000, (70, 7, 7)).astype(np.float64)
    for cip, shape in [(True, "any"), (False, "any"), (True, "same"), (False, "same")]:
        fast, slow = _avg(x, axes, cip, None, 0.0, shape)
        np.testing.assert_array_equal(fast, slow)
    axes = ap.Window((2, 2), (2, 2)).resolve((14, 14))
    x = np.random.default_rng(3).integers(-1000, 1000, (70, 14, 14)).astype(np.float64)
    fast, slow = _avg(x, axes, True, None, 0.0, "tiles")
    np.testing.assert_array_equal(fast, slow)
    axes = ap.Window((2, 3), (2, 1), ((0, 1), (1, 0))).resolve((9, 8))
    x = np.random.default_rng(2).integers(-1000, 1000, (70, 9, 8)).astype(np.float64)
    fast, slow = _avg(x, axes, False, None, 0.0)
    np.testing.assert_array_equal(fast, slow)


@pytest.mark.parametrize(
    ("kernel", "stride", "padding", "taps"),
    [
        ((3, 3), (1, 1), 1, 9),
        ((3, 3), (2, 2), 0, 9),
        ((2, 2), (2, 2), 0, 4),
        ((3, 3), (3, 3), 0, 9),
        ((3, 5), (1, 1), (1, 2), 15),
    ],
)
def test_float32_error_stays_within_the_documented_bound(kernel, stride, padding, taps):
    """`_cpu_drivers.F32_SUM_TAPS`: float32 sums of at most 9 taps, scaled, stay within
    (taps + 3) * 2**-24 of the window's mean magnitude; wider windows sum in float64. The
    input mixes magnitudes 2**-12 .. 2**12 of both signs, so the sums cancel and round."""
    axes = ap.Window(kernel, stride, padding).resolve((18, 18))
    rng = np.random.default_rng(3)
    shape = (130, 18, 18)
    x = rng.choice([-1.0, 1.0], shape) * 2.0 ** rng.integers(-12, 13, shape)
    x = (x + rng.standard_normal(shape) * 2.0 ** rng.integers(-12, 13, shape)).astype(np.float32)
    fitting = [("same", _small_plans.same_window), ("tiles", _small_plans.tiled_window)]
    kernels = ["any"] + [k for k, fits in fitting if fits(axes)]
    for cip, shape in [(cip, shape) for cip in (True, False) for shape in kernels]:
        fast, slow = _avg(x, axes, cip, None, 0.0, shape)
        magnitude = reference.avg_pool(np.abs(x.astype(np.float64)), axes, cip)
        n = min(taps, _cpu_drivers.F32_SUM_TAPS)
        bound = (n + 3) * 2.0**-24 * magnitude
        error = np.abs(fast.astype(np.float64) - slow)
        assert (error <= bound).all(), float((error / bound).max())
        assert error.max() > 0  # the float32 sums do round here


def test_float32_sums_in_float64_past_nine_taps():
    # 1 + 2**-24 * (24 ones) sums exactly in float64; in float32 each small term is lost
    axes = ap.Window((5, 5), (5, 5)).resolve((5, 5))
    x = np.full((3, 5, 5), 2.0**-24, np.float32)
    x[:, 0, 0] = 1.0
    fast, slow = _avg(x, axes, True, None, 0.0)
    np.testing.assert_allclose(fast[:, 0, 0], np.float32((1.0 + 24 * 2.0**-24) / 25), rtol=0)
    assert fast[0, 0, 0] == np.float32(slow[0, 0, 0])


def _max(x, axes, omit, indices=False, shape="any"):
    """(kernel values, reference values), or with ``indices`` (kernel (values, indices),
    reference (values, indices)): `max_small` (`max_small_index`), or for the shape of
    window they take, `max_same` or `max_tiles`."""
    out = np.empty((x.shape[0], *(a.out for a in axes)), x.dtype)
    lowest = x.dtype.type(-np.inf)
    floor = x.dtype.type(np.finfo(x.dtype).min) if omit else lowest
    policy = "omit" if omit else "propagate"
    value, index = reference.max_pool(x, axes, policy, float(np.finfo(x.dtype).min))
    if indices:
        at = np.empty(out.shape, np.int64)
        plan = "small_planes.max_small_index", _small_plans.small_max_tables(axes)
        small_planes.run_max(_as3(x), _as3(out), _as3(at), plan, omit, floor, lowest)
        return (out, at), (value, index)
    small_planes.run_max(_as3(x), _as3(out), None, _max_plan(axes, shape), omit, floor, lowest)
    return out, value


def _max_plan(axes, shape):
    if shape == "tiles":
        return "flat_planes.max_tiles", _small_plans.small_tiles_tables(axes)[:3]
    if shape == "same":
        return "flat_planes.max_same", _small_plans.small_same_masks(axes)
    return "small_planes.max_small", _small_plans.small_max_tables(axes)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES)
@SETTINGS
@given(data=st.data(), omit=st.booleans())
def test_max_values_match_reference(dtype, shape, data, omit):
    axes, planes, seed = data.draw(geometries(shape))
    x = _planes(axes, planes, dtype, seed, specials=True)
    fast, slow = _max(x, axes, omit, shape=shape)
    np.testing.assert_array_equal(fast, slow)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@SETTINGS
@given(data=st.data(), omit=st.booleans())
def test_max_indices_match_reference(dtype, data, omit):
    """Ties (values rounded to 0.1), NaN and inf: the same values and arg-max as the reference."""
    axes, planes, seed = data.draw(geometries())
    x = _planes(axes, planes, dtype, seed, specials=True)
    (fast, at), (slow, index) = _max(x, axes, omit, indices=True)
    np.testing.assert_array_equal(fast, slow)
    np.testing.assert_array_equal(at, index)


def test_max_index_tie_rules():
    axes = ap.Window((2, 2), (2, 2), ((1, 0), (1, 0))).resolve((4, 4))
    x = np.zeros((3, 4, 4), np.float32)
    x[1] = -np.inf
    x[2, 1:3, 1:3] = [[np.nan, 1.0], [np.nan, 5.0]]
    (fast, at), (_, index) = _max(x, axes, False, indices=True)
    np.testing.assert_array_equal(at, index)
    assert at[0, 1, 1] == 1 * 4 + 1  # a tie: the first cell in row-major order
    assert at[1, 1, 1] == 5  # all -inf: the first real cell
    assert at[2, 1, 1] == 2 * 4 + 1 and np.isnan(fast[2, 1, 1])  # NaN wins, the last one
    assert at[0, 0, 0] == 0  # the corner window: its only real cell


@pytest.mark.parametrize("width", [2, 4, 6, 14, 16, 18, 28, 30, 56, 112])
def test_2x2_tiles_in_runs_of_8_agree_with_the_scalar_order(width):
    """2x2/2 on planes of every width class (fewer outputs per row than a run, a run and a
    part, whole runs), enough planes for several chunks, on 1 and 3 runs: the runs of 8 that
    spill into the next row, and the rows at a chunk's end done one output at a time, give the
    bits of the scalar loop everywhere."""
    planes = 3 + 3 * flat_planes.TILE_CELLS // (width * width // 2) + 1
    x = np.random.default_rng(width).standard_normal((planes, width, width)).astype(np.float32)
    x[1, 1, 1] = np.nan
    a, b, c, d = x[:, 0::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 0::2], x[:, 1::2, 1::2]
    want_avg = ((a + b) + (c + d)) * np.float32(0.25)
    want_max = np.maximum(np.maximum(a, b), np.maximum(c, d))
    flat = x.reshape(-1)
    for runs in (1, 3):
        out = np.full(want_avg.size, -7.0, np.float32)
        flat_planes.avg_tiles(flat, out, width, 2, 2, 0.25, 4.0, 0.0, np.empty(0, np.float32), runs)
        assert out.tobytes() == want_avg.tobytes()
        out[:] = -7.0
        flat_planes.max_tiles(flat, out, width, 2, 2, False, -np.inf, -np.inf, runs)
        assert out.tobytes() == want_max.tobytes()


@pytest.mark.parametrize("cip", [False, True])
@pytest.mark.parametrize("height", [1, 2, 3, 8, 13])
def test_3x3_same_on_rows_of_8_agrees_with_the_masked_order(height, cip):
    """3x3/1 pad 1 on planes 8 wide (a row per vector, neighbours by shifting lanes in which
    +0.0 comes in at the edge) gives the bits of the masked loop's order: along W
    ``(left + cell) + right``, then along H ``(above + row) + below``, a missing tap +0.0,
    times the cell's scale. With NaN, inf and -0.0 inputs (-0.0 + +0.0 is +0.0), enough planes
    for several blocks, on 1 and 3 runs."""
    axes = ap.Window(3, 1, 1, ndim=2).resolve((height, 8))
    planes = 3 * max(1, _small_plans.SAME_BLOCK_CELLS // (8 * height)) + 5
    x = np.random.default_rng(height).standard_normal((planes, height, 8)).astype(np.float32)
    x[0] = -0.0
    x[1, 0, 3], x[2, -1, 0], x[3, 0, 7] = np.nan, np.inf, -np.inf
    zero_col = np.zeros((planes, height, 1), np.float32)
    zero_row = np.zeros((planes, 1, 8), np.float32)
    h = (np.concatenate([zero_col, x[:, :, :-1]], 2) + x) + np.concatenate([x[:, :, 1:], zero_col], 2)
    v = (np.concatenate([zero_row, h[:, :-1]], 1) + h) + np.concatenate([h[:, 1:], zero_row], 1)
    tables = _small_plans.small_same_tables(axes, cip, None, True)
    want = v * tables[7][: 8 * height].reshape(height, 8)
    for runs in (1, 3):
        out = np.full(x.size, -7.0, np.float32)
        flat_planes.avg_same(x.reshape(-1), out, *tables, 0.0, np.empty(0, np.float32), runs)
        assert out.tobytes() == want.tobytes()


@pytest.mark.parametrize("dtype", [np.int8, np.uint8, np.int32, np.int64])
def test_max_kernels_take_integers(dtype):
    """The max family takes integer arrays: a window with no real cell gives the dtype's
    lowest value (index -1)."""
    info = np.iinfo(dtype)
    x = np.random.default_rng(5).integers(info.min, info.max, (20, 12, 12), endpoint=True).astype(dtype)
    lowest = dtype(info.min)
    for kernel, stride, padding in [((2, 2), (2, 2), 0), ((3, 3), (2, 2), ((3, 1), (1, 1)))]:
        axes = ap.Window(kernel, stride, padding).resolve((12, 12))
        value, index = reference.max_pool(x, axes)
        out = np.empty(value.shape, dtype)
        small_planes.run_max(x, out, None, _max_plan(axes, "any"), False, lowest, lowest)
        np.testing.assert_array_equal(out, value)
        at = np.empty(value.shape, np.int64)
        plan = "small_planes.max_small_index", _small_plans.small_max_tables(axes)
        small_planes.run_max(x, out, at, plan, False, lowest, lowest)
        np.testing.assert_array_equal(out, value)
        np.testing.assert_array_equal(at, index)
        if _small_plans.tiled_window(axes):
            small_planes.run_max(x, out, None, _max_plan(axes, "tiles"), False, lowest, lowest)
            np.testing.assert_array_equal(out, value)
    axes = ap.Window((3, 3), (1, 1), 1).resolve((12, 12))
    out = np.empty_like(x)
    small_planes.run_max(x, out, None, _max_plan(axes, "same"), False, lowest, lowest)
    np.testing.assert_array_equal(out, reference.max_pool(x, axes)[0])


@pytest.mark.parametrize("size, padding", [(17, 0), (35, 0), (14, 1), (56, 1), (9, ((3, 0), (0, 2)))])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int32])
@pytest.mark.parametrize("omit", [False, True])
def test_max_small_on_inception_planes(size, padding, dtype, omit):
    """`max_small` keeps 8 planes a block: 21 planes (two whole blocks and 5 more), planes
    of 17x17 to 56x56 (output rows not a multiple of 8 cells), NaN and inf, the values of
    the reference bit for bit."""
    axes = ap.Window((3, 3), (2, 2), padding).resolve((size, size))
    x = _planes(axes, 21, np.float64, size, specials=True) * 100
    if np.dtype(dtype).kind == "i":
        x = np.nan_to_num(x, nan=0.0, posinf=1e6, neginf=-1e6).astype(dtype)
        out = np.empty((21, axes[0].out, axes[1].out), dtype)
        lowest = dtype(np.iinfo(dtype).min)
        small_planes.run_max(x, out, None, _max_plan(axes, "any"), False, lowest, lowest)
        np.testing.assert_array_equal(out, reference.max_pool(x, axes)[0])
        return
    x = x.astype(dtype)
    x[3, :3, :3] = np.nan  # a window that is all NaN
    fast, slow = _max(x, axes, omit)
    assert fast.tobytes() == slow.astype(dtype).tobytes()
    if padding == 0:  # the first window is the NaN block
        assert np.isnan(fast[3, 0, 0]) != omit


def test_max_windows_in_padding_and_nan_rules():
    axes = ap.Window((2, 2), (2, 2), ((3, 0), (3, 0))).resolve((4, 4))
    x = np.full((2, 4, 4), -np.inf, np.float32)
    x[0, 2, 2] = np.nan  # in the last output's window (rows and columns 1-2)
    fast, slow = _max(x, axes, omit=False)
    np.testing.assert_array_equal(fast, slow)
    assert fast[0, 0, 0] == -np.inf and np.isnan(fast[0, 2, 2]) and fast[1, 2, 2] == -np.inf
    fast, slow = _max(x, axes, omit=True)
    np.testing.assert_array_equal(fast, slow)
    assert fast[0, 2, 2] == np.finfo(np.float32).min and fast[0, 0, 0] == np.finfo(np.float32).min


def test_the_predicate_picks_by_window_and_plane_size():
    def pick(op, kernel, stride, padding, size, f32=True, f64=False):
        axes = ap.Window(kernel, stride, padding).resolve(size)
        return _small_plans.small_planes_kernel(op, axes, f32, f64)

    assert pick("avg_pool", (3, 3), (1, 1), 1, (7, 7)) == "flat_planes.avg_same"
    assert pick("avg_pool", (3, 3), (1, 1), 1, (112, 112)) is None
    assert pick("avg_pool", (5, 5), (1, 1), 2, (17, 17), f32=False) == "flat_planes.avg_same"
    assert pick("avg_pool", (5, 5), (1, 1), 2, (28, 28), f32=False) is None
    assert pick("avg_pool", (5, 5), (1, 1), 2, (56, 56), f32=False, f64=True) == "flat_planes.avg_same"
    assert pick("avg_pool", (3, 3), (2, 2), 1, (28, 28), f32=False, f64=True) == "small_planes.avg_small"
    assert pick("avg_pool", (2, 2), (2, 2), 0, (56, 56)) == "flat_planes.avg_tiles"
    assert pick("avg_pool", (2, 2), (2, 2), 0, (7, 7)) == "small_planes.avg_small"  # not tiled
    assert pick("avg_pool", (3, 3), (2, 2), 1, (35, 35)) is None
    assert pick("max_pool", (2, 2), (2, 2), 0, (14, 14)) == "flat_planes.max_tiles"
    assert pick("max_pool", (3, 3), (1, 1), 1, (112, 112)) == "flat_planes.max_same"
    assert pick("max_pool", (5, 5), (1, 1), 2, (28, 28)) == "small_planes.max_small"
    assert pick("max_pool", (5, 5), (1, 1), 2, (112, 112)) is None
    assert pick("max_pool", (3, 3), (2, 2), 0, (35, 35)) == "small_planes.max_small"
    assert pick("max_pool", (3, 3), (2, 2), 1, (56, 56)) == "small_planes.max_small"
    assert pick("max_pool", (3, 3), (2, 2), 0, (71, 71)) is None
    assert pick("max_pool_index", (3, 3), (2, 2), 1, (56, 56)) == "small_planes.max_small_index"
    assert pick("max_pool_index", (3, 3), (2, 2), 1, (112, 112)) is None
    assert (
        _small_plans.small_planes_kernel("avg_pool", ap.Window((3, 3), 1, 1, dilation=2).resolve((9, 9)))
        is None
    )
    plan = _small_plans.small_avg_plan(ap.Window((2, 2), (2, 2)).resolve((14, 14)), True, None, True)
    assert plan[0] == "flat_planes.avg_tiles" and plan[1] == (14, 2, 2, 0.25, 4.0)


def test_run_avg_and_run_max_follow_the_plan():
    x = np.random.default_rng(4).standard_normal((20, 14, 14)).astype(np.float32)
    for kernel, stride, padding in [((3, 3), (1, 1), 1), ((2, 2), (2, 2), 0), ((3, 3), (2, 2), 1)]:
        axes = ap.Window(kernel, stride, padding).resolve((14, 14))
        assert _small_plans.small_avg_plan(axes, False, None, True)
        assert _small_plans.small_max_plan(axes, False)
        out = np.empty((20, axes[0].out, axes[1].out), np.float32)
        small_planes.run_avg(x, out, _small_plans.small_avg_plan(axes, False, None, True), 0.0, np.float32)
        _close(out, reference.avg_pool(x.astype(np.float64), axes, False), np.float32)
        for with_index in (False, True):
            at = np.empty(out.shape, np.int64) if with_index else None
            lowest = np.float32(-np.inf)
            small_planes.run_max(
                x, out, at, _small_plans.small_max_plan(axes, with_index), False, lowest, lowest
            )
            value, index = reference.max_pool(x, axes)
            np.testing.assert_array_equal(out, value)
            if with_index:
                np.testing.assert_array_equal(at, index)


def test_tables_are_read_only_and_kept():
    axes = ap.Window((3, 3), (1, 1), 1).resolve((7, 7))
    tables = _small_plans.small_same_tables(axes, False, None)
    assert tables is _small_plans.small_same_tables(axes, False, None)
    assert not any(t.flags.writeable for t in tables[5:10])
    assert not any(t.flags.writeable for t in _small_plans.small_avg_tables(axes, True, None)[1:])


def test_results_do_not_depend_on_the_thread_count():
    """Blocks and chunks are fixed per geometry, never per thread: the same bits on 1 and on
    2 threads (the runs split the same blocks differently)."""
    import numba

    x = np.random.default_rng(6).standard_normal((150, 14, 14)).astype(np.float32)
    results = []
    for threads in (1, min(2, numba.config.NUMBA_NUM_THREADS)):
        before = numba.get_num_threads()
        numba.set_num_threads(threads)
        try:
            outs = []
            for kernel, stride, padding in [((3, 3), (1, 1), 1), ((2, 2), (2, 2), 0), ((3, 3), (2, 2), 1)]:
                axes = ap.Window(kernel, stride, padding).resolve((14, 14))
                out = np.empty((150, axes[0].out, axes[1].out), np.float32)
                small_planes.run_avg(
                    x, out, _small_plans.small_avg_plan(axes, False, None, True), 0.0, np.float32
                )
                outs.append(out)
            results.append(outs)
        finally:
            numba.set_num_threads(before)
    for a, b in zip(*results, strict=True):
        np.testing.assert_array_equal(a, b)
