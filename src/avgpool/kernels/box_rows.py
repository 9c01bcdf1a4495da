"""Box-window averages in any layout: running sums over rows, or each window's taps.

Arrays and ``geo`` as in `avgpool.kernels._common`. `avg_forward`, per work item (one outer
slice, one output depth, one chunk of output rows):

* a float64 row buffer ``R[W*C]`` holds the sum over the window's depth and height taps of
  input rows; from one output row to the next it subtracts the rows that left the window and
  adds those that entered (when dilation is 1 and stride < kernel), so its cost per output
  row does not grow with the kernel height; a channels-last window of one row (1-D) reads
  that input row in place instead (a long row would not stay in cache through a buffer);
* a running sum along W over ``R`` gives each output, again independent of the kernel width;
* the sum is divided by the separable divisor ``count_d[od] * count_h[oh] * count_w[ow]``;
* with one channel the W pass adds each tap across a whole row at once, or differences a
  prefix sum for long windows, so it vectorises too.

The depth axis is summed tap by tap (its cost grows with the kernel depth; H and W do not).
`avg_direct` sums small channels-last windows tap by tap straight from the input.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from avgpool.kernels._common import CHUNK, width_taps
from avgpool.kernels._nrt import keep_alive, unowned
from avgpool.kernels.registry import register


@register("avg_pool", "lp_pool", "lp_pool_backward")
@njit(parallel=True, cache=True)
def avg_forward(x, out, C, geo, count, zero, real, empty, running):
    """out = window sum / (count_d * count_h * count_w), ``empty`` where the divisor is 0.

    ``count`` (3, n) holds per axis the divisor's factor (a divisor override is folded into
    them by the driver; their product is an exact integer, so the quotient is the same float
    as the oracle's sum / divisor), ``zero`` (3, n) whether that axis makes the divisor 0, ``real`` (3, n)
    whether the window has a real cell on that axis: a window without one sums to exactly 0 (a
    running sum would leave rounding residue there). ``running=False`` sums every window tap
    by tap (exact zeros for windows of zeros; cost grows with the kernel). A running sum
    cannot take an infinity or NaN back out of the window, so a chunk whose outputs come out
    non-finite is summed again tap by tap: IEEE sums, where needed.
    """
    n_outer = x.shape[0]
    OD, OH = out.shape[1], out.shape[2]
    run_h = running and geo[1, 2] == 1 and geo[1, 1] < geo[1, 0]
    run_w = running and geo[2, 2] == 1 and geo[2, 1] < geo[2, 0]
    n_chunks = (OH + CHUNK - 1) // CHUNK
    OW = out.shape[3] // C
    scale_w = np.zeros(OW)  # 1 / W count (0 for a window without a real cell), for float32 results
    any_zero_w = False
    for ow in range(OW):
        if real[2, ow] and not zero[2, ow]:
            scale_w[ow] = 1.0 / count[2, ow]
        any_zero_w |= zero[2, ow]
    for item in prange(n_outer * OD * n_chunks):
        o = item // (OD * n_chunks)
        od = (item // n_chunks) % OD
        oh0 = (item % n_chunks) * CHUNK
        args = (x, out, C, geo, count, zero, real, scale_w, any_zero_w, empty, o, od, oh0)
        if not _avg_chunk(*args, run_h, run_w) and (run_h or run_w):
            _avg_chunk(*args, False, False)


@njit(cache=True)
def _avg_chunk(x, out, C, geo, count, zero, real, scale_w, any_zero_w, empty, o, od, oh0, run_h, run_w):
    """One chunk of output rows; False if some output came out non-finite."""
    W = x.shape[3] // C
    OH, OW = out.shape[2], out.shape[3] // C
    kh, sh, dh, ph = geo[1, 0], geo[1, 1], geo[1, 2], geo[1, 3]
    kw, sw, dw, pw = geo[2, 0], geo[2, 1], geo[2, 2], geo[2, 3]
    single = C > 1 and kh == 1 and geo[0, 0] == 1  # one row per window: no row buffer
    tables = (count, zero, real)
    R = np.zeros(0 if single else x.shape[3], dtype=np.float64)
    acc = np.zeros(C, dtype=np.float64)
    tmp = np.zeros(OW, dtype=np.float64)
    prefix = np.zeros(W + 1, dtype=np.float64)
    check = np.zeros(C, dtype=np.float64)  # stays 0 unless some sum is inf or NaN
    exact = out.itemsize == 8
    for oh in range(oh0, min(OH, oh0 + CHUNK)):
        start = oh * sh - ph
        if single:
            pass
        elif oh == oh0 or not run_h:
            R[:] = 0.0
            for jh in range(kh):
                _add_row(x, R, o, od, start + jh * dh, geo, 1.0)
        elif sh == 1 and geo[0, 0] == 1 and 0 < start and start + kh - 1 < x.shape[2]:
            # one row leaves, one enters, both real: one sweep, in the order of the two below
            idp = od * geo[0, 1] - geo[0, 3]
            if 0 <= idp < x.shape[1]:
                old, new = x[o, idp, start - 1], x[o, idp, start + kh - 1]
                for i in range(R.shape[0]):
                    R[i] = (R[i] - old[i]) + new[i]
        else:
            for ih in range(start - sh, start):
                _add_row(x, R, o, od, ih, geo, -1.0)
            for ih in range(start - sh + kh, start + kh):
                _add_row(x, R, o, od, ih, geo, 1.0)
        orow = out[o, od, oh]
        f_row = count[0, od] * count[1, oh]
        zero_row = zero[0, od] or zero[1, oh]
        real_row = real[0, od] and real[1, oh]
        if C == 1:
            _row_sums_one(R, tmp, prefix, W, OW, kw, sw, dw, pw, run_w)
            count_w, zero_w, real_w = count[2], zero[2], real[2]
            bad = 0  # an integer "or" vectorises; a float sum would not (no fastmath: NaN matters)
            if exact:
                for ow in range(OW):
                    v = tmp[ow] if real_row and real_w[ow] else 0.0
                    bad |= v - v != 0.0
                    orow[ow] = empty if zero_row or zero_w[ow] else v / (f_row * count_w[ow])
            else:  # times reciprocals, no division and no branch; empty patched in after
                sc = 1.0 / f_row if real_row and not zero_row else 0.0
                for ow in range(OW):
                    v = tmp[ow]
                    bad |= v - v != 0.0
                    orow[ow] = v * (sc * scale_w[ow])
                if zero_row or any_zero_w:
                    for ow in range(OW):
                        if zero_row or zero_w[ow]:
                            orow[ow] = empty
            if bad:
                check[0] = np.nan
            continue
        if single:  # the window's one row, read in place (no float64 copy of a long row)
            ih, idp = start, od * geo[0, 1] - geo[0, 3]
            inside = 0 <= ih < x.shape[2] and 0 <= idp < x.shape[1]
            src = x[o, idp, ih] if inside else x[o, 0, 0]  # no real cell: outputs 0 or empty
            bad = _w_vectors(src, orow, acc, C, geo, run_w, (f_row, zero_row, real_row), tables, empty)
        else:
            bad = _w_vectors(R, orow, acc, C, geo, run_w, (f_row, zero_row, real_row), tables, empty)
        if bad:
            check[0] = np.nan
    return np.sum(check) == 0.0


@njit(cache=True)
def _add_row(x, R, o, od, ih, geo, sign):
    """R += (or -=, for sign < 0) the sum over the depth taps of input row ih."""
    D, H, WC = x.shape[1], x.shape[2], x.shape[3]
    if ih < 0 or ih >= H:
        return
    kd, sd, dd, pd = geo[0, 0], geo[0, 1], geo[0, 2], geo[0, 3]
    for jd in range(kd):
        idp = od * sd - pd + jd * dd
        if 0 <= idp < D:
            row = x[o, idp, ih]
            if sign > 0:
                for i in range(WC):
                    R[i] += row[i]
            else:
                for i in range(WC):
                    R[i] -= row[i]


@njit(cache=True)
def _w_vectors(src, orow, acc, C, geo, run_w, row, tables, empty):
    """One output row of channels-last sums along W, a C-vector at a time, from ``src`` (the
    row of sums over the window's rows, or the input row itself when the window has one
    row): a running sum (``run_w``) or tap by tap, scaled into ``orow``; 1 if some sum is not
    finite. ``row`` is the output row's (depth x height divisor factor, zero divisor, has a
    real cell), ``tables`` `avg_forward`'s (count, zero, real)."""
    W, OW, exact = src.shape[0] // C, orow.shape[0] // C, orow.itemsize == 8
    (f_row, zero_row, real_row), (count, zero, real) = row, tables
    any_bad = 0
    kw, sw, dw, pw = geo[2, 0], geo[2, 1], geo[2, 2], geo[2, 3]
    for ow in range(OW):
        wstart = ow * sw - pw
        if ow == 0 or not run_w:
            acc[:] = 0.0
            for jw in range(kw):
                iw = wstart + jw * dw
                if 0 <= iw < W:
                    cell = src[iw * C : iw * C + C]
                    for c in range(C):
                        acc[c] += cell[c]
        elif sw == 1 and 0 < wstart and wstart + kw - 1 < W:
            # one cell leaves, one enters, both real: one sweep, in the order of the two below
            out_, in_ = src[(wstart - 1) * C : wstart * C], src[(wstart + kw - 1) * C : (wstart + kw) * C]
            for c in range(C):
                acc[c] = (acc[c] - out_[c]) + in_[c]
        else:
            for iw in range(max(wstart - sw, 0), min(wstart, W)):
                cell = src[iw * C : iw * C + C]
                for c in range(C):
                    acc[c] -= cell[c]
            for iw in range(max(wstart - sw + kw, 0), min(wstart + kw, W)):
                cell = src[iw * C : iw * C + C]
                for c in range(C):
                    acc[c] += cell[c]
        base = ow * C
        if zero_row or zero[2, ow]:
            for c in range(C):
                orow[base + c] = empty
        elif not (real_row and real[2, ow]):
            for c in range(C):
                orow[base + c] = 0.0
        else:
            div = f_row * count[2, ow]
            cell = orow[base : base + C]
            bad = 0  # an integer "or" vectorises; a float sum would not (no fastmath)
            if exact:
                for c in range(C):
                    v = acc[c]
                    bad |= v - v != 0.0
                    cell[c] = v / div
            else:  # float32 results: times the reciprocal (no division; a float64 ulp off)
                inv = 1.0 / div
                for c in range(C):
                    v = acc[c]
                    bad |= v - v != 0.0
                    cell[c] = v * inv
            any_bad |= bad
    return any_bad


@njit(cache=True)
def _row_sums_one(R, tmp, prefix, W, OW, kw, sw, dw, pw, run_w):
    """tmp[ow] = sum of R over window ow, for one channel, with loops that vectorise.

    Long windows (run_w, more than 8 taps) difference a prefix sum; shorter ones add each tap
    across all outputs at once, bounds-free between the edges.
    """
    if run_w and kw > 8:
        prefix[0] = 0.0
        for i in range(W):
            prefix[i + 1] = prefix[i] + R[i]
        for ow in range(OW):
            a = min(max(ow * sw - pw, 0), W)
            b = min(max(ow * sw - pw + kw, 0), W)
            tmp[ow] = prefix[b] - prefix[a]
        return
    lo = min((pw + sw - 1) // sw, OW)  # first window whose first tap is inside
    hi = max(min((W - 1 + pw - (kw - 1) * dw) // sw + 1, OW), lo)  # after the last fully inside
    tmp[:] = 0.0
    n = hi - lo
    for jw in range(kw):
        off = jw * dw - pw
        # Slices with non-negative starts and a literal stride: the loop index is provably
        # >= 0 (no wraparound test per element), so LLVM vectorises the loads.
        dst = tmp[lo:hi]
        first = lo * sw + off
        if n > 0 and sw == 1:
            src = R[first : first + n]
            for i in range(n):
                dst[i] += src[i]
        elif n > 0 and sw == 2:
            src = R[first : first + 2 * n]
            for i in range(n):
                dst[i] += src[2 * i]
        elif n > 0:
            for i in range(n):
                dst[i] += R[first + i * sw]
        for ow in range(0, lo):
            iw = ow * sw + off
            if 0 <= iw < W:
                tmp[ow] += R[iw]
        for ow in range(hi, OW):
            iw = ow * sw + off
            if 0 <= iw < W:
                tmp[ow] += R[iw]


#: `avg_direct` sums a 2x2 block of channel runs one pass over the channels per column where a
#: run spans at least this many bytes (`_sum_2x2`); shorter runs take one loop.
COLUMN_PASS_BYTES = 512


@njit(cache=True, inline="always")
def _sum_2x2(p0, q0, p1, q1, cell, acc, C, column_pass, exact, div, inv):
    """``cell`` = (((p0 + q0) + p1) + q1) scaled: the 2x2 block's runs (p the top row, q the
    bottom), added column by column in ``acc``'s dtype, whatever the channel count.

    With ``column_pass`` the left column is summed into ``acc`` in one pass over the channels
    and the right column added in a second. Each pass then reads the two rows' runs at the
    same offsets, so every input row is read in memory order; one loop over all four runs
    reads two runs of each row side by side, a pattern the hardware prefetchers follow worse:
    from memory it ran 10-45% slower (benchmarks/NOTES.md). Short runs take the one loop (a
    second pass cost more than it saved).
    """
    t = acc.dtype.type
    if column_pass:
        for c in range(C):
            acc[c] = t(p0[c]) + t(q0[c])
        if exact:
            for c in range(C):
                cell[c] = ((acc[c] + t(p1[c])) + t(q1[c])) / div
        else:
            for c in range(C):
                cell[c] = ((acc[c] + t(p1[c])) + t(q1[c])) * inv
    elif exact:
        for c in range(C):
            cell[c] = (((t(p0[c]) + t(q0[c])) + t(p1[c])) + t(q1[c])) / div
    else:
        for c in range(C):
            cell[c] = (((t(p0[c]) + t(q0[c])) + t(p1[c])) + t(q1[c])) * inv


@register("avg_pool", "avg_pool_backward", "adaptive_avg_pool", "adaptive_avg_pool_backward")
@njit(parallel=True, cache=True)
def copy_cells(x, out, runs):
    """``out`` = ``x`` (1-D, C-contiguous, one dtype), in ``runs`` contiguous parts, one per
    work item: an average whose every window is the one cell it stands on (adaptive to the
    input's own size), or its gradient, on threads. Exact, and the bandwidth floor; on one
    thread `avgpool._cpu_calls.Copy` copies with NumPy instead."""
    n = x.shape[0]
    per = -(-n // max(runs, 1))
    for r in prange(max(runs, 1)):
        a = min(n, r * per)
        b = min(n, a + per)
        out[a:b] = x[a:b]


@register("avg_pool")
@njit(parallel=True, cache=True)
def avg_2x2_blocks(x, out, C):
    """Channels-last 2x2 averages at stride 2 whose windows all lie inside the input (no
    padding, no partial window at the end), one deep: views ``(outer, 1, H, W * C)`` and
    ``(outer, 1, OH, OW * C)``, sums in the output's dtype (float32 or float64).

    `avg_direct`'s 2x2 block (`_sum_2x2`: the same order, so the same bits; x / 4 and x * 0.25
    round alike) without its tables, its other windows and its per-row buffer: each output
    cell holds its own left-column sums. The DenseNet transition on (1, 14, 14, 512), one
    thread, the kernel alone: 8.4 µs through `avg_direct`, 6.9 here. Parallel over (outer,
    output row).
    """
    n_outer, OH, OW = out.shape[0], out.shape[2], out.shape[3] // C
    column_pass = C * x.itemsize >= COLUMN_PASS_BYTES
    exact = out.itemsize == 8
    inv = out.dtype.type(0.25)
    for item in prange(n_outer * OH):
        o, oh = item // OH, item % OH
        xu = unowned(x)
        r0, r1 = xu[o, 0, 2 * oh], xu[o, 0, 2 * oh + 1]
        orow = unowned(out)[o, 0, oh]
        for ow in range(OW):
            a, cell = 2 * ow * C, orow[ow * C : ow * C + C]
            p0, q0 = r0[a : a + C], r1[a : a + C]
            p1, q1 = r0[a + C : a + 2 * C], r1[a + C : a + 2 * C]
            _sum_2x2(p0, q0, p1, q1, cell, cell, C, column_pass, exact, 4.0, inv)


@register("avg_pool", "lp_pool", "lp_pool_backward")
@njit(parallel=True, cache=True)
def avg_direct(x, out, C, geo, count, zero, empty, acc_like):
    """Channels-last windows of few taps, summed straight from the input a C-vector at a time.

    One pass: each output cell's C sums (in ``acc_like``'s dtype, `_cpu_drivers.sum_dtype`) add its
    window's taps in (depth, height, width) order (a square 2x2 or 3x3 window whose real taps
    form a 2x2 block adds them column by column, `_sum_2x2`), read from the input where they lie
    (a small window's rows stay in cache), and are scaled into the output; no row buffer, no running
    sum, so infinities and NaNs need no second pass and windows entirely in padding sum to
    exactly 0. Its cost per output grows with the taps, so the driver sends only small windows
    here (`_cpu_drivers.DIRECT_READS`). Arguments as `avg_forward` (no ``real``: a window without a
    real cell adds no tap, its sum is 0). Float32 sums scale in float32 too (no conversion).
    Parallel over (outer, output depth, output row).
    """
    n_outer, D, H = x.shape[0], x.shape[1], x.shape[2]
    W = x.shape[3] // C
    OD, OH, OW = out.shape[1], out.shape[2], out.shape[3] // C
    kd, sd, dd, pd = geo[0, 0], geo[0, 1], geo[0, 2], geo[0, 3]
    kh, sh, dh, ph = geo[1, 0], geo[1, 1], geo[1, 2], geo[1, 3]
    kw, sw, dw, pw = geo[2, 0], geo[2, 1], geo[2, 2], geo[2, 3]
    exact = out.itemsize == 8
    jw_lo, jw_hi = width_taps(W, OW, kw, sw, dw, pw)
    square = kd == 1 and kh == kw and (kh == 2 or kh == 3) and dh == 1 and dw == 1
    column_pass = C * x.itemsize >= COLUMN_PASS_BYTES
    for item in prange(n_outer * OD * OH):
        o = item // (OD * OH)
        od = (item // OH) % OD
        oh = item % OH
        xu = unowned(x)  # views with no reference count (`_nrt`): no atomic per row view
        orow = unowned(out)[o, od, oh]
        acc_ = np.empty(C, dtype=acc_like.dtype)
        acc = unowned(acc_)
        f_row = count[0, od] * count[1, oh]
        zero_row = zero[0, od] or zero[1, oh]
        ih0 = oh * sh - ph
        # a square 2x2 or 3x3 undilated window one deep takes fused loops over the channels
        # wherever its real taps form a 2x2, 2x3, 3x2 or 3x3 block (inner windows and the
        # edges of a pad-1 window): the rows of this output row's windows that are real
        idp0, r_lo = od * sd - pd, max(ih0, 0)
        nr = min(ih0 + kh, H) - r_lo
        fused = square and 0 <= idp0 < D and nr >= 2
        for ow in range(OW):
            cell = orow[ow * C : ow * C + C]
            if zero_row or zero[2, ow]:
                cell[:] = empty
                continue
            # the width taps inside the input: no bounds test per tap, slices that vectorise
            start, jw0, jw1 = ow * sw - pw, jw_lo[ow], jw_hi[ow]
            div = f_row * count[2, ow]
            nc = jw1 - jw0
            if fused and nc >= 2:
                # the real taps added and scaled in fused loops over the channels, in the order
                # below (a 2x2 block column by column, others row by row, as the general loop);
                # p, q, u are the window's first, second, third real row
                a, t = (start + jw0) * C, acc_like.dtype.type
                inv = t(1.0 / div)
                r0, r1 = xu[o, idp0, r_lo], xu[o, idp0, r_lo + 1]
                p0, p1, q0, q1 = r0[a : a + C], r0[a + C : a + 2 * C], r1[a : a + C], r1[a + C : a + 2 * C]
                if nr == 2 and nc == 2:
                    _sum_2x2(p0, q0, p1, q1, cell, acc, C, column_pass, exact, div, inv)
                    continue
                b = a + 2 * C
                if nr == 2:  # 2 rows of 3
                    s0, s1, s2, s3, s4, s5 = p0, p1, r0[b : b + C], q0, q1, r1[b : b + C]
                else:
                    r2 = xu[o, idp0, r_lo + 2]
                    if nc == 2:  # 3 rows of 2
                        s0, s1, s2, s3, s4, s5 = p0, p1, q0, q1, r2[a : a + C], r2[a + C : a + 2 * C]
                    else:
                        p2, q2 = r0[b : b + C], r1[b : b + C]
                        u0, u1, u2 = r2[a : a + C], r2[a + C : a + 2 * C], r2[b : b + C]
                        for c in range(C):
                            v = ((t(p0[c]) + t(p1[c])) + t(p2[c])) + t(q0[c])
                            v = ((v + t(q1[c])) + t(q2[c])) + t(u0[c])
                            v = (v + t(u1[c])) + t(u2[c])
                            cell[c] = v / div if exact else v * inv
                        continue
                for c in range(C):
                    v = ((t(s0[c]) + t(s1[c])) + t(s2[c])) + t(s3[c])
                    v = (v + t(s4[c])) + t(s5[c])
                    cell[c] = v / div if exact else v * inv
                continue
            first = True  # the first tap sets the sums (no zeroing pass)
            for jd in range(kd):
                idp = od * sd - pd + jd * dd
                if idp < 0 or idp >= D:
                    continue
                for jh in range(kh):
                    ih = oh * sh - ph + jh * dh
                    if ih < 0 or ih >= H:
                        continue
                    row = xu[o, idp, ih]
                    for jw in range(jw0, jw1):
                        at = (start + jw * dw) * C
                        src = row[at : at + C]
                        if first:
                            for c in range(C):
                                acc[c] = src[c]
                            first = False
                        else:
                            for c in range(C):
                                acc[c] += src[c]
            if first:  # no real cell in the window
                acc[:] = 0.0
            if exact:  # float64 results divide: the quotient the oracle and PyTorch compute
                for c in range(C):
                    cell[c] = acc[c] / div
            else:
                inv = acc_like.dtype.type(1.0 / div)
                for c in range(C):
                    cell[c] = acc[c] * inv
        keep_alive(acc_)
