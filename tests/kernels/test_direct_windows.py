"""`box_rows.avg_direct`'s fused loops for channels-last 2x2 and 3x3 windows, taken wherever a
window's real taps form a 2x2, 2x3, 3x2 or 3x3 block (inner windows and the edges of a pad-1
window), add the taps in the order of its general loop, (depth, height, width), so the two
agree to the bit, but for a 2x2 block of real taps, which they add column by column, whatever
the channel count; other windows (a single real row or column) take the general loop."""

import numpy as np
import pytest

import avgpool as ap
from avgpool.kernels import box_rows


def _sequential(x, k, s, p, out_h, out_w, cip):
    """float32 sums of each window's real taps in row-major order (a 2x2 block of them in
    column-major order), the first tap setting the sum (no 0.0 added), times the reciprocal of
    the window's divisor."""
    n, h, w, c = x.shape
    want = np.empty((n, out_h, out_w, c), np.float32)
    for oh in range(out_h):
        for ow in range(out_w):
            rows = [r for r in range(oh * s - p, oh * s - p + k) if 0 <= r < h]
            cols = [q for q in range(ow * s - p, ow * s - p + k) if 0 <= q < w]
            if len(rows) == len(cols) == 2:
                taps = [x[:, r, q] for q in cols for r in rows]
            else:
                taps = [x[:, r, q] for r in rows for q in cols]
            acc = taps[0].copy()
            for tap in taps[1:]:
                acc = acc + tap
            # the window's cells that lie in the input or in its padding (not past the ceil edge)
            padded = min(oh * s - p + k, h + p) - (oh * s - p), min(ow * s - p + k, w + p) - (ow * s - p)
            divisor = padded[0] * padded[1] if cip else len(taps)
            want[:, oh, ow] = acc * np.float32(1.0 / divisor)
    return want


@pytest.mark.parametrize("channels", [37, 160])  # 160 float32 = 640 bytes: a pass per column
@pytest.mark.parametrize("cip", [False, True])
@pytest.mark.parametrize("k, s, p", [(2, 2, 0), (3, 1, 1), (3, 2, 1), (2, 1, 0), (2, 1, 1), (3, 3, 1)])
def test_fused_windows_give_the_general_loops_bits(k, s, p, cip, channels):
    assert (channels * 4 >= box_rows.COLUMN_PASS_BYTES) == (channels == 160)
    rng = np.random.default_rng(k * 10 + s)
    x = (rng.standard_normal((2, 9, 10, channels)) * 1e3).astype(np.float32)
    x[0, 4, 5, :3] = [np.inf, -np.inf, np.nan]
    x[1, :2, :2, :4] = -0.0  # a corner of -0.0: its sums stay -0.0 (no 0.0 added first)
    y = ap.avg_pool(x, k, s, p, channels_last=True, count_include_pad=cip)
    want = _sequential(x, k, s, p, y.shape[1], y.shape[2], cip)
    assert y.tobytes() == want.tobytes()


@pytest.mark.parametrize("k, s, p, channels", [(3, 1, 1, 5), (2, 2, 0, 5), (2, 2, 0, 80), (2, 1, 1, 80)])
def test_fused_windows_in_float64_match_the_reference(k, s, p, channels):
    x = np.random.default_rng(3).standard_normal((1, 7, 7, channels))
    got = ap.avg_pool(x, k, s, p, channels_last=True, count_include_pad=False)
    with ap.use_backend("reference"):
        want = ap.avg_pool(x, k, s, p, channels_last=True, count_include_pad=False)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("k, s, p", [(2, 2, 0), (3, 2, 1)])
def test_float16_windows_sum_in_float32_and_round_once(k, s, p):
    x = (np.random.default_rng(5).standard_normal((2, 8, 9, 320)) * 100).astype(np.float16)  # 640 bytes
    y = ap.avg_pool(x, k, s, p, channels_last=True)
    want = _sequential(x.astype(np.float32), k, s, p, y.shape[1], y.shape[2], True).astype(np.float16)
    assert y.dtype == np.float16
    assert y.tobytes() == want.tobytes()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("channels", [37, 160])
def test_inner_2x2_blocks_take_their_own_kernel_with_the_same_bits(caplog, dtype, channels):
    """2x2/2 windows that all lie inside the input (odd sizes leave the last row or column out;
    a single window along an axis) run `box_rows.avg_2x2_blocks`, which adds each block column
    by column as `avg_direct` does and scales by 0.25: the bits of those sums in NumPy, NaN,
    infinities and -0.0 included. Padding, or a ceil-mode window past the edge, keeps
    `avg_direct`."""
    rng = np.random.default_rng(channels)
    for shape, ceil in [((3, 8, 10), False), ((2, 9, 11), False), ((1, 2, 7), False), ((1, 8, 8), True)]:
        x = (rng.standard_normal((*shape, channels)) * 1e3).astype(dtype)
        x[0, 0, 1, :3] = [np.inf, -np.inf, np.nan]
        x[-1, :2, :2, 3:5] = -0.0
        caplog.clear()
        with caplog.at_level("DEBUG", logger="avgpool"):
            y = ap.avg_pool(x, 2, channels_last=True, ceil_mode=ceil)
        assert "box_rows.avg_2x2_blocks" in caplog.text, shape
        n, oh, ow, c = y.shape
        b = x[:, : 2 * oh, : 2 * ow].reshape(n, oh, 2, ow, 2, c)
        want = (((b[:, :, 0, :, 0] + b[:, :, 1, :, 0]) + b[:, :, 0, :, 1]) + b[:, :, 1, :, 1]) * dtype(0.25)
        assert y.dtype == dtype and y.tobytes() == want.tobytes(), shape
    x = rng.standard_normal((2, 9, 11, channels)).astype(dtype)
    for kwargs in ({"padding": 1}, {"ceil_mode": True}, {"stride": 1}):
        caplog.clear()
        with caplog.at_level("DEBUG", logger="avgpool"):
            ap.avg_pool(x, 2, channels_last=True, **kwargs)
        assert "box_rows.avg_direct" in caplog.text, kwargs
