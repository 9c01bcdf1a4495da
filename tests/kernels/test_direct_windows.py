"""`box_rows.avg_direct`'s fused loop for channels-last 2x2 and 3x3 windows inside the input
adds the taps in the order of its general loop, (depth, height, width), so the two agree to the
bit; border windows take the general loop."""

import numpy as np
import pytest

import avgpool as ap


def _sequential(x, k, s, p, out_h, out_w):
    """float32 sums in row-major tap order over each window inside the input; NaN elsewhere."""
    n, h, w, c = x.shape
    want = np.full((n, out_h, out_w, c), np.nan, np.float32)
    for oh in range(out_h):
        for ow in range(out_w):
            h0, w0 = oh * s - p, ow * s - p
            if h0 < 0 or w0 < 0 or h0 + k > h or w0 + k > w:
                continue
            acc = x[:, h0, w0].copy()
            for jh in range(k):
                for jw in range(k):
                    if jh or jw:
                        acc = acc + x[:, h0 + jh, w0 + jw]
            want[:, oh, ow] = acc * np.float32(1.0 / (k * k))
    return want


@pytest.mark.parametrize("k, s, p", [(2, 2, 0), (3, 1, 1), (3, 2, 1), (2, 1, 0)])
def test_fused_inner_windows_give_the_general_loops_bits(k, s, p):
    rng = np.random.default_rng(k * 10 + s)
    x = (rng.standard_normal((2, 9, 10, 37)) * 1e3).astype(np.float32)
    x[0, 4, 5, :3] = [np.inf, -np.inf, np.nan]
    y = ap.avg_pool(x, k, s, p, channels_last=True, count_include_pad=False)
    want = _sequential(x, k, s, p, y.shape[1], y.shape[2])
    inner = ~np.isnan(want).all(axis=-1)
    assert inner.any() and (~inner).any() == (p > 0)
    np.testing.assert_array_equal(y[:, inner[0]], want[:, inner[0]])


def test_fused_windows_in_float64_match_the_reference():
    x = np.random.default_rng(3).standard_normal((1, 7, 7, 5))
    got = ap.avg_pool(x, 3, 1, 1, channels_last=True, count_include_pad=False)
    with ap.use_backend("reference"):
        want = ap.avg_pool(x, 3, 1, 1, channels_last=True, count_include_pad=False)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)
