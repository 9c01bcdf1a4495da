"""The 8-lane vector steps (`avgpool.kernels._lanes`) against the same steps in NumPy: every
dtype the max kernels take, NaN (it wins), ties and signed zeros (the first is kept). CI also
runs this file with NUMBA_BOUNDSCHECK=1, where a run past an array's end is an IndexError."""

from __future__ import annotations

import numba
import numpy as np
import pytest
from numba import njit
from numba.core.errors import TypingError

from avgpool.kernels._lanes import lanes_max3, run_sum8, same3x3_rows8, tiles_max8, tiles_sum8, transpose8


@njit
def _max3(dst, d, src, i, j, k):
    lanes_max3(dst, d, src, i, src, j, src, k)


@njit
def _transpose(dst, d, dstep, src, s, sstep):
    transpose8(dst, d, dstep, src, s, sstep)


@njit
def _sum8(dst, d, src, i, j, scale):
    tiles_sum8(dst, d, src, i, j, scale)


@njit
def _pairs_max8(dst, d, src, i, j):
    tiles_max8(dst, d, src, i, j)


@njit
def _same8(dst, d, src, s, scale, t, rows):
    same3x3_rows8(dst, d, src, s, scale, t, rows)


@njit
def _run_sum(src, s, n):
    return run_sum8(src, s, n)


def _bigger(a, b):
    return b if (b > a) or (b != b) else a


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int8, np.uint8, np.int32, np.int64])
def test_lanes_max3_keeps_the_nan_and_tie_rules(dtype):
    rng = np.random.default_rng(3)
    src = (rng.standard_normal(40) * 40).round().astype(dtype)
    if np.dtype(dtype).kind == "f":
        src[[1, 12, 30, 31]] = [np.nan, np.nan, -0.0, 0.0]
        src[[22, 23]] = [0.0, -0.0]
    dst = np.zeros(20, dtype)
    _max3(dst, 5, src, 0, 10, 24)
    want = [_bigger(_bigger(src[i], src[10 + i]), src[24 + i]) for i in range(8)]
    got = dst[5:13]
    assert got.tobytes() == np.array(want, dtype).tobytes()
    assert not dst[:5].any() and not dst[13:].any()  # nothing written outside the run


def test_lanes_max3_reads_before_it_writes():
    src = np.arange(24, dtype=np.float32)[::-1].copy()
    _max3(src, 0, src, 0, 8, 16)  # the destination is also the first source
    np.testing.assert_array_equal(src[:8], np.arange(23, 15, -1, dtype=np.float32))


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int8, np.int64])
def test_transpose8_moves_every_cell(dtype):
    src = np.arange(300).astype(dtype)
    dst = np.zeros(400, dtype)
    _transpose(dst, 7, 41, src, 3, 33)
    for r in range(8):
        for c in range(8):
            assert dst[7 + c * 41 + r] == src[3 + r * 33 + c]
    assert np.count_nonzero(dst) == 64  # nothing else written (no cell of the tile is 0)


@pytest.mark.parametrize("pair", [(np.float32, np.float64), (np.float64, np.float32)])
def test_transpose8_between_float_dtypes_converts_as_assignment_does(pair):
    """float32 -> float64 exactly; float64 -> float32 rounded to nearest, as ``dst[i] = v``."""
    src_dtype, dst_dtype = pair
    src = (np.random.default_rng(0).standard_normal(300) * 1e3).astype(src_dtype)
    src[5:8] = [np.inf, np.nan, -0.0]
    dst = np.zeros(400, dst_dtype)
    _transpose(dst, 7, 41, src, 3, 33)
    for r in range(8):
        for c in range(8):
            got, want = dst[7 + c * 41 + r], dst_dtype(src[3 + r * 33 + c])
            assert got.tobytes() == want.tobytes()
    with pytest.raises(TypingError):
        _transpose(np.zeros(400, np.int64), 7, 41, src, 3, 33)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_tiles_sum8_adds_as_the_scalar_loop(dtype):
    """Each pair of a row first, then the two rows, then the scale: the scalar loop's order,
    so the bits agree (values that round differently in another order)."""
    src = (np.random.default_rng(4).standard_normal(60) * 10.0 ** np.arange(60) % 7).astype(dtype)
    dst = np.zeros(20, dtype)
    _sum8(dst, 6, src, 3, 29, 0.25)
    t = np.dtype(dtype).type
    want = [
        ((src[3 + 2 * k] + src[4 + 2 * k]) + (src[29 + 2 * k] + src[30 + 2 * k])) * t(0.25) for k in range(8)
    ]
    assert dst[6:14].tobytes() == np.array(want, dtype).tobytes()
    assert not dst[:6].any() and not dst[14:].any()


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int8, np.uint8, np.int64])
def test_tiles_max8_keeps_the_nan_and_tie_rules(dtype):
    rng = np.random.default_rng(6)
    src = (rng.standard_normal(50) * 40).round().astype(dtype)
    if np.dtype(dtype).kind == "f":
        src[[0, 5, 20, 21, 40, 41]] = [np.nan, np.nan, -0.0, 0.0, 0.0, -0.0]
    dst = np.zeros(12, dtype)
    _pairs_max8(dst, 2, src, 0, 17)
    want = [
        _bigger(_bigger(src[2 * k], src[2 * k + 1]), _bigger(src[17 + 2 * k], src[18 + 2 * k]))
        for k in range(8)
    ]
    assert dst[2:10].tobytes() == np.array(want, dtype).tobytes()
    assert not dst[:2].any() and not dst[10:].any()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("nan_at", [None, 3, 20, 31], ids=["no-nan", "nan-row-i", "nan-row-j", "nan-last"])
def test_tiles_max8_with_and_without_nan_in_the_run(dtype, nan_at):
    """A run that reads no NaN takes each larger value by one comparison, one that reads a
    NaN is reduced by the rule: both keep the first of equal values (-0.0 before 0.0, in
    either order) and let NaN win."""
    src = np.array([0.0, -0.0, -0.0, 0.0, 1.5, 1.5, -2.0, -3.0] * 4, dtype)
    src[8:16] = [-0.0, -1.0, 0.0, -1.0, 7.0, 7.0, -0.0, -0.0]
    if nan_at is not None:
        src[nan_at] = np.nan
    dst = np.zeros(8, dtype)
    _pairs_max8(dst, 0, src, 0, 16)
    want = [
        _bigger(_bigger(src[2 * k], src[2 * k + 1]), _bigger(src[16 + 2 * k], src[17 + 2 * k]))
        for k in range(8)
    ]
    assert dst.tobytes() == np.array(want, dtype).tobytes()


def _same_rows(x, scale, acc):
    """`same3x3_rows8` in NumPy: rows of 8 widened to ``acc``, +0.0 outside the plane."""
    x = x.astype(acc)
    col, row = np.zeros((x.shape[0], 1), acc), np.zeros((1, 8), acc)
    h = (np.concatenate([col, x[:, :-1]], 1) + x) + np.concatenate([x[:, 1:], col], 1)
    return ((np.concatenate([row, h[:-1]]) + h) + np.concatenate([h[1:], row])) * scale


@pytest.mark.parametrize(
    "src_t, acc_t, dst_t",
    [
        (np.float32,) * 3,
        (np.float64,) * 3,
        (np.float32, np.float64, np.float32),
        (np.float32, np.float64, np.float64),
    ],
)
@pytest.mark.parametrize("rows", [1, 2, 5])
def test_same3x3_rows8_sums_in_the_masked_order(src_t, acc_t, dst_t, rows):
    """Along W ``(left + cell) + right``, then ``(above + row) + below``, a tap outside the
    plane +0.0 (so a plane of -0.0 gives +0.0 at its edges), times the cell's scale, in ``scale``'s dtype;
    the runs at the offsets given, nothing written outside the plane's."""
    rng = np.random.default_rng(rows)
    src = (rng.standard_normal(8 * rows + 9) * 10.0 ** rng.integers(-3, 4, 8 * rows + 9)).astype(src_t)
    src[5 : 5 + 8 * rows : 7] = -0.0
    scale = rng.random(8 * rows + 4).astype(acc_t)
    dst = np.zeros(8 * rows + 6, dst_t)
    _same8(dst, 3, src, 5, scale, 2, rows)
    want = _same_rows(src[5 : 5 + 8 * rows].reshape(rows, 8), scale[2 : 2 + 8 * rows].reshape(rows, 8), acc_t)
    assert dst[3 : 3 + 8 * rows].tobytes() == want.astype(dst_t).reshape(-1).tobytes()
    assert not dst[:3].any() and not dst[3 + 8 * rows :].any()
    zeros, ones = np.full((rows, 8), -0.0, src_t), np.ones((rows, 8), acc_t)
    _same8(dst, 0, zeros.reshape(-1), 0, ones.reshape(-1), 0, rows)
    edge = np.ones((rows, 8), bool)
    edge[1:-1, 1:-1] = False
    assert (np.signbit(dst[: 8 * rows]) == ~edge.reshape(-1)).all()  # -0.0 inside, +0.0 at edges


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_run_sum8_adds_in_its_documented_order(dtype):
    """Lane l adds cells l, l + 8, ... in turn from +0.0, then ((0 + 4) + (2 + 6)) + ((1 + 5) +
    (3 + 7)): bit for bit against that order spelled out in NumPy, on values spread over 12
    orders of magnitude (where another order gives other bits), for every length up to 40 and
    a run ending at the array's last cell; inf and NaN propagate."""
    rng = np.random.default_rng(0)
    src = (rng.standard_normal(60) * 10.0 ** rng.integers(-6, 6, 60)).astype(dtype)
    for s, n in [(3, n) for n in range(41)] + [(60 - n, n) for n in (1, 7, 8, 9, 60)]:
        lanes = np.zeros(8, dtype)
        for k in range(n):
            lanes[k % 8] += src[s + k]
        four = lanes[:4] + lanes[4:]
        two = four[:2] + four[2:]
        got = _run_sum(src, s, n)
        assert np.array(got, dtype).tobytes() == np.array(two[0] + two[1], dtype).tobytes(), (s, n)
    src[20], src[33] = np.inf, np.nan
    assert _run_sum(src, 18, 5) == np.inf and np.isnan(_run_sum(src, 18, 16))


@pytest.mark.skipif(
    not numba.config.BOUNDSCHECK, reason="runs past the end are checked under NUMBA_BOUNDSCHECK=1"
)
def test_runs_past_the_end_are_index_errors():
    src = np.zeros(20, np.float32)
    with pytest.raises(IndexError):
        _max3(np.zeros(10, np.float32), 3, src, 0, 1, 2)
    with pytest.raises(IndexError):
        _transpose(np.zeros(100, np.float32), 0, 8, src, 0, 2)
    with pytest.raises(IndexError):
        _sum8(np.zeros(10, np.float32), 0, src, 0, 5, 1.0)  # a run of 16 from 5 ends past 20
    with pytest.raises(IndexError):
        _pairs_max8(np.zeros(10, np.float32), 3, src, 0, 4)  # 8 written from 3 end past 10
    with pytest.raises(IndexError):
        _same8(np.zeros(24, np.float32), 0, src, 0, np.ones(24, np.float32), 0, 3)  # row 3 of src
    with pytest.raises(IndexError):
        _same8(np.zeros(24, np.float32), 0, np.zeros(24, np.float32), 0, np.ones(20, np.float32), 0, 3)
    with pytest.raises(IndexError):
        _run_sum(src, 13, 8)  # cells 13-20: the last is past the end
