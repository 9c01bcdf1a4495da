"""The loops the channels-first plane kernels (`box_planes`, `box_trees`) share: per-axis
divisors, sums of a window's rows down the plane, and the W passes over a row of sums.

Each W pass is spelled out for its window width, or kept in a function of its own, because
that is how LLVM vectorises it (see each function); they return 1 if some sum is not finite.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def plane_divisors(count, zero, real, OD, OH, OW):
    """Per-axis divisors and their reciprocals (0 for a window with no real cell: it sums to
    0; a zero count keeps divisor 1 and gets ``empty`` later). A divisor override lives in the
    depth factor, the others are then 1."""
    div = (np.ones(OD), np.ones(OH), np.ones(OW))
    scale = (np.zeros(OD), np.zeros(OH), np.zeros(OW))
    for axis in range(3):
        for i in range(div[axis].shape[0]):
            if not zero[axis, i]:
                div[axis][i] = count[axis, i]
                scale[axis][i] = 1.0 / div[axis][i] if real[axis, i] else 0.0
    return div, scale


@njit(cache=True, inline="always")
def next_row(d, h, h0, h1):
    """The row after (d, h) in a window's rows h0..h1 of each depth (counters in place of a
    division and a remainder per row)."""
    return (d, h + 1) if h + 1 < h1 else (d + 1, h0)


@njit(cache=True, inline="always")
def sum_rows(x, o, d0, d1, h0, h1, R):
    """R = the sum of the rows x[o, d0:d1, h0:h1]: set by the first 1-4 rows in one sweep, then
    four rows added per sweep (a 2x2x2 window: one sweep over R), in R's dtype."""
    W = R.shape[0]
    t = R.dtype.type  # the sums' dtype
    rows = max(d1 - d0, 0) * max(h1 - h0, 0)
    if rows == 0:
        R[:] = 0.0
        return
    first = rows - 4 * ((rows - 1) // 4)
    d, h = d0, h0
    a = x[o, d, h]
    if first == 1:
        for i in range(W):
            R[i] = a[i]
    else:
        d, h = next_row(d, h, h0, h1)
        b = x[o, d, h]
        if first == 2:
            for i in range(W):
                R[i] = t(a[i]) + t(b[i])
        else:
            d, h = next_row(d, h, h0, h1)
            c = x[o, d, h]
            if first == 3:
                for i in range(W):
                    R[i] = t(a[i]) + t(b[i]) + t(c[i])
            else:
                d, h = next_row(d, h, h0, h1)
                e = x[o, d, h]
                for i in range(W):
                    R[i] = (t(a[i]) + t(b[i])) + (t(c[i]) + t(e[i]))
    for _ in range(first, rows, 4):
        d, h = next_row(d, h, h0, h1)
        a = x[o, d, h]
        d, h = next_row(d, h, h0, h1)
        b = x[o, d, h]
        d, h = next_row(d, h, h0, h1)
        c = x[o, d, h]
        d, h = next_row(d, h, h0, h1)
        e = x[o, d, h]
        for i in range(W):
            R[i] += (t(a[i]) + t(b[i])) + (t(c[i]) + t(e[i]))


@njit(cache=True)
def slide_rows(x, o, d0, d1, R, start, sh, kh, H, W):
    """Move the running column sums ``R`` down by ``sh`` rows: drop the rows that leave the
    window and add the rows that enter (each summed over depths d0..d1), a leaving and an
    entering row in one sweep."""
    out_lo, out_hi = max(start - sh, 0), min(start, H)
    in_lo, in_hi = max(start - sh + kh, 0), min(start + kh, H)
    pairs = max(0, min(out_hi - out_lo, in_hi - in_lo))
    for idp in range(d0, d1):
        for p in range(pairs):
            a, b = x[o, idp, out_lo + p], x[o, idp, in_lo + p]
            for i in range(W):
                R[i] += np.float64(b[i]) - np.float64(a[i])
        for ih in range(out_lo + pairs, out_hi):
            row = x[o, idp, ih]
            for i in range(W):
                R[i] -= row[i]
        for ih in range(in_lo + pairs, in_hi):
            row = x[o, idp, ih]
            for i in range(W):
                R[i] += row[i]


@njit(cache=True, inline="always")
def fused_w(Rp, orow, OW, kw, sw, sc, scale_w):
    """orow = the W sums of Rp scaled by ``sc * scale_w``, for the windows
    `_cpu_drivers.fused_w_window` admits; 1 if some is not finite. Windows 2-3 wide are spelled out
    here, the others in `fused_w_stride1`. For `avg_planes_direct` only: `_plane_chunk`
    spells the same loops out in its own body, where this function, inlined or called, made
    the running windows slower."""
    bad = 0
    if kw == 2 and sw == 2:
        for ow in range(OW):
            v = Rp[2 * ow] + Rp[2 * ow + 1]
            bad |= v - v != 0.0
            orow[ow] = v * (sc * scale_w[ow])
    elif kw == 3 and sw == 1:
        for ow in range(OW):
            v = Rp[ow] + Rp[ow + 1] + Rp[ow + 2]
            bad |= v - v != 0.0
            orow[ow] = v * (sc * scale_w[ow])
    elif kw == 3 and sw == 2:
        for ow in range(OW):
            v = Rp[2 * ow] + Rp[2 * ow + 1] + Rp[2 * ow + 2]
            bad |= v - v != 0.0
            orow[ow] = v * (sc * scale_w[ow])
    elif kw == 2 and sw == 1:
        for ow in range(OW):
            v = Rp[ow] + Rp[ow + 1]
            bad |= v - v != 0.0
            orow[ow] = v * (sc * scale_w[ow])
    else:
        bad = fused_w_stride1(Rp, orow, OW, kw, sc, scale_w)
    return bad


@njit(cache=True)
def fused_w_stride1(Rp, orow, OW, kw, sc, scale_w):
    """orow = the stride-1 W sums of Rp for windows 1 or 4-7 wide, scaled; 1 if some is not
    finite (2 and 3 have branches of their own in `_plane_chunk`).

    Each width spelled out: LLVM vectorises a loop whose taps are literal offsets (one sweep,
    no buffer), but neither an inner loop over the taps nor one sweep per tap into a buffer."""
    bad = 0
    if kw == 1:
        for ow in range(OW):
            v = Rp[ow]
            bad |= v - v != 0.0
            orow[ow] = v * (sc * scale_w[ow])
    elif kw == 4:
        for ow in range(OW):
            v = Rp[ow] + Rp[ow + 1] + Rp[ow + 2] + Rp[ow + 3]
            bad |= v - v != 0.0
            orow[ow] = v * (sc * scale_w[ow])
    elif kw == 5:
        for ow in range(OW):
            v = Rp[ow] + Rp[ow + 1] + Rp[ow + 2] + Rp[ow + 3] + Rp[ow + 4]
            bad |= v - v != 0.0
            orow[ow] = v * (sc * scale_w[ow])
    elif kw == 6:
        for ow in range(OW):
            v = Rp[ow] + Rp[ow + 1] + Rp[ow + 2] + Rp[ow + 3] + Rp[ow + 4] + Rp[ow + 5]
            bad |= v - v != 0.0
            orow[ow] = v * (sc * scale_w[ow])
    else:
        for ow in range(OW):
            v = Rp[ow] + Rp[ow + 1] + Rp[ow + 2] + Rp[ow + 3] + Rp[ow + 4] + Rp[ow + 5] + Rp[ow + 6]
            bad |= v - v != 0.0
            orow[ow] = v * (sc * scale_w[ow])
    return bad


@njit(cache=True)
def prefix_w(Rp, prefix, orow, OW, kw, sw, sc, scale_w):
    """orow = the W sums of Rp for windows longer than 7 (float32 results), as differences of a
    prefix sum, fused with the scaling; 1 if some is not finite. In a function of its own and
    with no row buffer between: faster than the same prefix sum in `_plane_chunk`'s body
    followed by a scaling sweep, and than `block_sweeps`."""
    prefix[0] = 0.0
    for i in range(Rp.shape[0]):
        prefix[i + 1] = prefix[i] + Rp[i]
    return scaled_differences(prefix, orow, OW, kw, sw, sc, scale_w)


@njit(cache=True, inline="always")
def scaled_differences(prefix, orow, OW, kw, sw, sc, scale_w):
    """orow = differences of ``prefix`` ``kw`` apart (one per output, ``sw`` apart), scaled by
    ``sc * scale_w``; 1 if some is not finite. Inlined: called per row, a call cost as much
    as the loop."""
    bad = 0
    hi, lo = prefix[kw:], prefix[:]  # two views, not offsets: the loop vectorises better
    if sw == 1:
        for ow in range(OW):
            v = hi[ow] - lo[ow]
            bad |= v - v != 0.0
            orow[ow] = v * (sc * scale_w[ow])
    else:
        for ow in range(OW):
            v = hi[ow * sw] - lo[ow * sw]
            bad |= v - v != 0.0
            orow[ow] = v * (sc * scale_w[ow])
    return bad


@njit(cache=True)
def prefix_rows4(R4, P4, oplane, g0, OW, kw, sw, sc, scale_w):
    """oplane[g0 : g0 + 4] = the W sums of the four rows of ``R4`` (running windows longer
    than 7, float32 results), scaled by ``sc[k] * scale_w``; 1 if some is not finite.

    A row's prefix sum is a chain of dependent adds; the four rows' chains run side by side
    in one loop (each row's sums in `prefix_w`'s order: the same bits), and the four rows'
    differences follow in the same call (a call per row cost about as much as the work)."""
    a, b, c, e = R4[0], R4[1], R4[2], R4[3]
    pa, pb, pc, pe = P4[0], P4[1], P4[2], P4[3]
    sa = sb = sc_ = se = 0.0
    pa[0] = pb[0] = pc[0] = pe[0] = 0.0
    for i in range(a.shape[0]):
        sa += a[i]
        sb += b[i]
        sc_ += c[i]
        se += e[i]
        pa[i + 1] = sa
        pb[i + 1] = sb
        pc[i + 1] = sc_
        pe[i + 1] = se
    bad = 0
    for k in range(4):
        bad |= scaled_differences(P4[k], oplane[g0 + k], OW, kw, sw, sc[k], scale_w)
    return bad


@njit(cache=True)
def tap_sweeps(Rp, tmp, kw, OW):
    """tmp[ow] = sum of Rp[ow : ow + kw]: one vectorised sweep per tap, the first one setting."""
    for i in range(OW):
        tmp[i] = Rp[i]
    for j in range(1, kw):
        src = Rp[j:]
        for i in range(OW):
            tmp[i] += src[i]


@njit(cache=True)
def block_sweeps(Rp, P4, tmp, kw, OW):
    """tmp[ow] = sum of Rp[ow : ow + kw] for windows 8-24 wide and float64 results: sums of 4
    cells (one sweep, literal offsets), then one vectorised sweep per 4 taps and per tap left
    over (15 wide: 7 sweeps). Closer to the tap-by-tap sum than a prefix sum's differences;
    float32 results take `prefix_w`, faster."""
    for i in range(Rp.shape[0] - 3):
        P4[i] = Rp[i] + Rp[i + 1] + Rp[i + 2] + Rp[i + 3]
    q = kw // 4
    for i in range(OW):
        tmp[i] = P4[i]
    for t in range(1, q):
        src = P4[4 * t :]
        for i in range(OW):
            tmp[i] += src[i]
    for r in range(4 * q, kw):
        src = Rp[r:]
        for i in range(OW):
            tmp[i] += src[i]
