"""Numba kernels for box-window sums: average pooling forward and backward.

Arrays are 4-D views ``(outer, D, H, W*C)``: a row of W cells with C channels interleaved
(channels-first data has C == 1 and outer = batch x channels; channels-last data has outer =
batch). 1-D and 2-D pooling use D == 1 (and H == 1). ``geo[axis, field]`` is an int64 array
over the axes (D, H, W) with the fields (kernel, stride, dilation, pad_before).

Forward, per work item (one outer slice, one output depth, one chunk of output rows):

* a float64 row buffer ``R[W*C]`` holds the sum over the window's depth and height taps of
  input rows; from one output row to the next it subtracts the rows that left the window and
  adds those that entered (when dilation is 1 and stride < kernel), so its cost per output
  row does not grow with the kernel height; a channels-last window of one row (1-D) reads
  that input row in place instead (1-D k=64 NLC: 2.4x faster than through a 8 MiB buffer);
* a running sum along W over ``R`` gives each output, again independent of the kernel width;
* the sum is divided by the separable divisor ``count_d[od] * count_h[oh] * count_w[ow]``;
* with one channel (channels-first data) the W pass adds each tap across a whole row at once,
  or differences a prefix sum for long windows, so it vectorises too; the prefix sums of four
  output rows run side by side (`_prefix_chunk`), as a prefix sum is a chain of dependent adds;
* channels-first kernels, whose rows are short runs, prefetch the input ahead of the rows
  they read (`_prefetch`);
* float32 results of channels-first windows one depth deep, at stride 1 along W and 4-64
  cells along an axis (7x7/1, 15x15/1, 1-D k=64), take none of the above: `avg_planes_tree`
  sums blocks of 4, 8, 16, ... cells as trees of float32 additions, in strips of output rows,
  one level a loop over the strip (no float64, no subtraction, within 1e-6 of the window's
  mean magnitude by construction).

The backward is the transpose, with running sums over the outputs that cover each input cell.
Running sums restart at every chunk of ``CHUNK`` rows: that bounds float drift and fixes the
order of every addition, so results are bitwise identical for any thread count. The depth
axis is summed tap by tap (its cost grows with the kernel depth; H and W do not).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from avgpool.kernels._nrt import keep_alive, unowned
from avgpool.kernels._prefetch import PREFETCH_BYTES, prefetch_ahead, prefetch_write_row

#: Rows per work item; the running sums restart at each chunk.
CHUNK = 32
#: Channels-first planes prefetch ahead (`_prefetch`) when an output row's step down the
#: plane reads at most this many bytes: longer runs (1-D rows) gain nothing from it.
PREFETCH_MAX_STEP = 4096
#: Column sums per strip of `avg_planes_tree` (output rows x their padded width): 1024-4096
#: measured alike on 128-wide 15x15 planes; its buffers stay in the L1 and L2 caches.
STRIP_CELLS = 2048


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
def width_taps(W, OW, kw, sw, dw, pw):
    """(first, end): for each output column, the range of its width taps that read the input
    (not padding), once per call rather than two divisions per output cell."""
    jw_lo, jw_hi = np.empty(OW, np.int64), np.empty(OW, np.int64)
    for ow in range(OW):
        start = ow * sw - pw
        jw_lo[ow] = max(0, (dw - 1 - start) // dw)
        jw_hi[ow] = min(kw, (W - 1 - start) // dw + 1)
    return jw_lo, jw_hi


@njit(parallel=True, cache=True)
def avg_direct(x, out, C, geo, count, zero, empty, acc_like):
    """Channels-last windows of few taps, summed straight from the input a C-vector at a time.

    One pass: each output cell's C sums (in ``acc_like``'s dtype, `_cpu.sum_dtype`) add its
    window's taps in (depth, height, width) order, read from the input where they lie (a small
    window's rows stay in cache), and are scaled into the output; no row buffer, no running
    sum, so infinities and NaNs need no second pass and windows entirely in padding sum to
    exactly 0. Its cost per output grows with the taps, so the driver sends only small windows
    here (`_cpu.DIRECT_READS`). Arguments as `avg_forward` (no ``real``: a window without a
    real cell adds no tap, its sum is 0). Float32 sums scale in float32 too (25-30% faster
    than float64 sums on 2x2/2 and 3x3/2).
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
    for item in prange(n_outer * OD * OH):
        o = item // (OD * OH)
        od = (item // OH) % OD
        oh = item % OH
        xu = unowned(x)  # views with no reference count (`_nrt`): 3x3/2 8% faster
        orow = unowned(out)[o, od, oh]
        acc_ = np.empty(C, dtype=acc_like.dtype)
        acc = unowned(acc_)
        f_row = count[0, od] * count[1, oh]
        zero_row = zero[0, od] or zero[1, oh]
        for ow in range(OW):
            cell = orow[ow * C : ow * C + C]
            if zero_row or zero[2, ow]:
                cell[:] = empty
                continue
            # the width taps inside the input: no bounds test per tap, slices that vectorise
            start, jw0, jw1 = ow * sw - pw, jw_lo[ow], jw_hi[ow]
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
            div = f_row * count[2, ow]
            if exact:  # float64 results divide: the quotient the oracle and PyTorch compute
                for c in range(C):
                    cell[c] = acc[c] / div
            else:
                inv = acc_like.dtype.type(1.0 / div)
                for c in range(C):
                    cell[c] = acc[c] * inv
        keep_alive(acc_)


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


@njit(cache=True)
def _covers(i, o, k, s, d, p):
    """Whether output o's window (with dilation) has a tap on input cell i."""
    off = i - (o * s - p)
    return off >= 0 and off % d == 0 and off // d < k


@njit(cache=True)
def _add_grad_row(g, T, o, idp, oh, geo, inv_d, inv_h, sign):
    """T += sign * sum over output depths covering input depth idp of g[o, od, oh] * inv."""
    OD = g.shape[1]
    OWC = g.shape[3]
    kd, sd, dd, pd = geo[0, 0], geo[0, 1], geo[0, 2], geo[0, 3]
    for od in range(OD):
        if _covers(idp, od, kd, sd, dd, pd):
            f = sign * inv_d[od] * inv_h[oh]
            row = g[o, od, oh]
            for i in range(OWC):
                T[i] += row[i] * f


@njit(parallel=True, cache=True)
def avg_backward(g, grad, C, geo, inv_d, inv_h, inv_w, cover_h, cover_w):
    """grad = sum over the windows covering each input cell of g * inv_d * inv_h * inv_w.

    ``inv_*`` are per-axis reciprocal divisors (the divisor is separable; the driver folds a
    divisor override into them). ``cover_h``/``cover_w`` (n, 2) hold, for each input row and
    column, the first and last output whose undilated window covers it (last < first: none).
    Parallel over (outer, input depth, chunks of input rows); a chunk with non-finite results
    is summed again output by output, as in `avg_forward`.
    """
    n_outer, D, H = grad.shape[0], grad.shape[1], grad.shape[2]
    run_h = geo[1, 2] == 1
    run_w = geo[2, 2] == 1
    n_chunks = (H + CHUNK - 1) // CHUNK
    for item in prange(n_outer * D * n_chunks):
        o = item // (D * n_chunks)
        idp = (item // n_chunks) % D
        ih0 = (item % n_chunks) * CHUNK
        args = (g, grad, C, geo, inv_d, inv_h, inv_w, cover_h, cover_w, o, idp, ih0)
        if not _avg_backward_chunk(*args, run_h, run_w) and (run_h or run_w):
            _avg_backward_chunk(*args, False, False)


@njit(cache=True)
def _avg_backward_chunk(g, grad, C, geo, inv_d, inv_h, inv_w, cover_h, cover_w, o, idp, ih0, run_h, run_w):
    H, W = grad.shape[2], grad.shape[3] // C
    OH, OWC = g.shape[2], g.shape[3]
    OW = OWC // C
    kh, sh, dh, ph = geo[1, 0], geo[1, 1], geo[1, 2], geo[1, 3]
    T = np.zeros(OWC, dtype=np.float64)
    acc = np.zeros(C, dtype=np.float64)
    check = np.zeros(C, dtype=np.float64)
    finite = True
    lo_cur, hi_cur = 0, -1
    for ih in range(ih0, min(H, ih0 + CHUNK)):
        # T = sum over the output rows whose windows cover input row ih
        if run_h:
            lo, hi = cover_h[ih, 0], cover_h[ih, 1]
            if ih == ih0 or lo > hi_cur:
                T[:] = 0.0
                lo_cur, hi_cur = lo, lo - 1
            while lo_cur < lo:
                _add_grad_row(g, T, o, idp, lo_cur, geo, inv_d, inv_h, -1.0)
                lo_cur += 1
            while hi_cur < hi:
                hi_cur += 1
                _add_grad_row(g, T, o, idp, hi_cur, geo, inv_d, inv_h, 1.0)
        else:
            T[:] = 0.0
            for oh in range(OH):
                if _covers(ih, oh, kh, sh, dh, ph):
                    _add_grad_row(g, T, o, idp, oh, geo, inv_d, inv_h, 1.0)
        grow = grad[o, idp, ih]
        if C == 1:
            finite &= _spread_scalar(T, grow, W, OW, geo, inv_w, cover_w, run_w)
            continue
        wlo_cur, whi_cur = 0, -1
        for iw in range(W):
            if run_w:
                wlo, whi = cover_w[iw, 0], cover_w[iw, 1]
                if iw == 0 or wlo > whi_cur:
                    acc[:] = 0.0
                    wlo_cur, whi_cur = wlo, wlo - 1
                while wlo_cur < wlo:
                    for c in range(C):
                        acc[c] -= T[wlo_cur * C + c] * inv_w[wlo_cur]
                    wlo_cur += 1
                while whi_cur < whi:
                    whi_cur += 1
                    for c in range(C):
                        acc[c] += T[whi_cur * C + c] * inv_w[whi_cur]
            else:
                acc[:] = 0.0
                for ow in range(OW):
                    if _covers(iw, ow, geo[2, 0], geo[2, 1], geo[2, 2], geo[2, 3]):
                        for c in range(C):
                            acc[c] += T[ow * C + c] * inv_w[ow]
            for c in range(C):
                check[c] += acc[c] * 0.0
                grow[iw * C + c] = acc[c]
    return finite and np.sum(check) == 0.0


@njit(cache=True)
def _spread_scalar(T, grow, W, OW, geo, inv_w, cover_w, run_w):
    """The transposed W pass for one channel: scalar running sum over the covering outputs."""
    check = 0.0
    acc = 0.0
    wlo_cur, whi_cur = 0, -1
    for iw in range(W):
        if run_w:
            wlo, whi = cover_w[iw, 0], cover_w[iw, 1]
            if iw == 0 or wlo > whi_cur:
                acc = 0.0
                wlo_cur, whi_cur = wlo, wlo - 1
            while wlo_cur < wlo:
                acc -= T[wlo_cur] * inv_w[wlo_cur]
                wlo_cur += 1
            while whi_cur < whi:
                whi_cur += 1
                acc += T[whi_cur] * inv_w[whi_cur]
        else:
            acc = 0.0
            for ow in range(OW):
                if _covers(iw, ow, geo[2, 0], geo[2, 1], geo[2, 2], geo[2, 3]):
                    acc += T[ow] * inv_w[ow]
        check += acc * 0.0
        grow[iw] = acc
    return check == 0.0


@njit(parallel=True, cache=True)
def global_avg(x, out, divisor, blocks, acc_like):
    """out (outer, C) = sum over S of x (outer, S, C) / divisor, for C > 1 (channels-last).

    Eight rows are added in the input's dtype (a tree three additions deep) before their sum
    joins the sums of a C-vector, in ``acc_like``'s dtype: float64, or the input's float32
    for at most `_cpu.F32_GLOBAL_CELLS` rows (each sum within (2 + S // 8 + S % 8) * 2**-24 of
    its magnitude; no conversions, half the bytes of sums to read and write per eight rows: global
    7x7 on (128, 7, 7, 2048) 1.88 -> 1.76 ms in interleaved A/Bs, 0.069 -> 0.064 ns per cell
    in cache on one thread). One pass over the sums per eight rows, where a conversion per
    cell cost 3-5%. A fixed order, so the same bits on any thread count. The items are split
    into at most ``blocks`` runs, each allocating its sums once.
    """
    n_outer, S, C = x.shape
    body = S - S % 8
    runs, per = _runs(n_outer, blocks)
    for block in prange(runs):
        accs_ = np.empty(C, dtype=acc_like.dtype)
        accs, xu, ou = unowned(accs_), unowned(x), unowned(out)
        for o in range(block * per, min(n_outer, (block + 1) * per)):
            accs[:] = 0.0
            for s in range(0, body, 8):
                r0, r1, r2, r3 = xu[o, s], xu[o, s + 1], xu[o, s + 2], xu[o, s + 3]
                r4, r5, r6, r7 = xu[o, s + 4], xu[o, s + 5], xu[o, s + 6], xu[o, s + 7]
                for c in range(C):
                    accs[c] += ((r0[c] + r1[c]) + (r2[c] + r3[c])) + ((r4[c] + r5[c]) + (r6[c] + r7[c]))
            for s in range(body, S):
                row = xu[o, s]
                for c in range(C):
                    accs[c] += row[c]
            orow = ou[o]
            for c in range(C):
                orow[c] = np.float64(accs[c]) / divisor
        keep_alive(accs_)


@njit(parallel=True, cache=True, fastmath={"reassoc"})
def global_avg_planes(x, out, divisor):
    """out (outer,) = sum of each contiguous plane x (outer, S) / divisor (channels-first).

    Only reassociation is allowed (no fast-math on infinities or NaN, which still propagate):
    LLVM splits each plane's float64 sum into vector lanes, 1.3-1.5x faster than one add
    chain and no less accurate. The order is fixed by the compiled code, so results are the
    same on any thread count (a machine with other vector widths may differ in the last bit).
    """
    n_outer, S = x.shape
    for o in prange(n_outer):
        prefetch_ahead(x[o], 0, S)
        acc = 0.0
        for s in range(S):
            acc += x[o, s]
        out[o] = acc / divisor


@njit(cache=True)
def _runs(items, blocks):
    """(runs, items per run): ``items`` split into at most ``blocks`` runs of equal length."""
    runs = max(1, min(blocks, items))
    per = -(-items // runs)
    return (-(-items // per) if per else 0), per


@njit(parallel=True, cache=True)
def avg_planes(x, out, geo, count, zero, real, empty, running, blocks):
    """Channels-first average pooling without dilation: one plane (and output depth) per item.

    The common case gets a kernel of its own with the simplest loops: a float64 row buffer
    padded by ``pad_before`` zeros on the left (and enough on the right) so that every window
    reads it without a bounds test, holding the sum over the window's depth taps and rows:
    running sums down the plane (restarted every ``CHUNK`` rows; a leaving and an entering row
    are applied in one sweep), then a W pass fused with the scaling: float32 results spell out
    windows 1-7 wide (`_fused_w_stride1`, and 2-3 wide at stride 2) and difference a prefix sum
    for longer ones (four output rows at a time, `_prefix_chunk`); float64 results sum 8-24 wide
    windows in blocks of 4, longer ones by a prefix sum, others tap by tap, and divide. The
    divisor is a product of per-axis reciprocals (0 for a window with no real cell), ``empty``
    patched in where a count is 0. ``x`` (planes, D, H, W), ``out`` (planes, OD, OH, OW);
    ``geo``, ``count``, ``zero``, ``real`` as `avg_forward`. Non-finite chunks are summed again
    tap by tap. Windows that do not overlap down the plane, with float32 results, go to
    `avg_planes_direct` instead.

    The items are split into at most ``blocks`` runs (`_cpu.scratch_blocks`: a few per thread),
    each allocating its row buffers once: allocating them per item cost 11-16% on
    16384-wide rows (k=64 in 1-D).
    """
    n, D, W = x.shape[0], x.shape[1], x.shape[3]
    OD, OH, OW = out.shape[1], out.shape[2], out.shape[3]
    kd, sd, pd = geo[0, 0], geo[0, 1], geo[0, 3]
    kh, sh, ph = geo[1, 0], geo[1, 1], geo[1, 3]
    kw, sw, pw = geo[2, 0], geo[2, 1], geo[2, 3]
    width = max(pw + W, (OW - 1) * sw + kw)
    (div_d, div_h, div_w), (scale_d, scale_h, scale_w) = _plane_divisors(count, zero, real, OD, OH, OW)
    any_zero_w = zero[2, :OW].any()
    items = n * OD
    runs, per = _runs(items, blocks)
    rows4 = out.itemsize == 4 and kw > 7 and OH > 1  # float32 prefix-sum windows: `_prefix_chunk`
    for block in prange(runs):
        Rp = np.zeros(width, dtype=np.float64)
        tmp = np.zeros(OW, dtype=np.float64)
        prefix = np.zeros(width + 1, dtype=np.float64)
        R4 = np.zeros((4 if rows4 else 0, width), dtype=np.float64)
        P4 = np.zeros((4 if rows4 else 0, width + 1), dtype=np.float64)
        for item in range(block * per, min(items, (block + 1) * per)):
            o, od = item // OD, item % OD
            d0, d1 = max(od * sd - pd, 0), min(od * sd - pd + kd, D)
            depth = (d0, d1, div_d[od], scale_d[od], zero[0, od])
            for oh0 in range(0, OH, CHUNK):
                oh1 = min(OH, oh0 + CHUNK)
                run_h, run_w = running and sh < kh, running and sw < kw
                for _attempt in range(2):  # a second, tap-by-tap pass only if the first met inf/NaN
                    # fmt: off
                    if rows4 and run_w:
                        ok = _prefix_chunk(x, out[o, od], o, depth, oh0, oh1, R4, P4, kh, sh, ph, kw, sw, pw,
                                           scale_h, scale_w, zero[1], zero[2], any_zero_w, empty, run_h)
                    else:
                        ok = _plane_chunk(x, out[o, od], o, depth, oh0, oh1, Rp, tmp, prefix, kh, sh, ph,
                                          kw, sw, pw, div_h, div_w, scale_h, scale_w, zero[1], zero[2],
                                          any_zero_w, empty, run_h, run_w)
                    # fmt: on
                    if ok or not (run_h or run_w):
                        break
                    run_h = run_w = False


@njit(cache=True)
def _plane_divisors(count, zero, real, OD, OH, OW):
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


@njit(parallel=True, cache=True)
def avg_planes_direct(x, out, geo, count, zero, real, empty, blocks, acc):
    """`avg_planes` for float32 results and a W window `_fused_w` spells out
    (`_cpu.fused_w_window`), when the windows do not overlap down the plane or sum in float32:
    every output row's taps summed afresh, four input rows per sweep, then one fused W pass.

    ``acc`` is an empty array of the sums' dtype (`_cpu.sum_dtype`): float32 for windows of
    few taps, which then also scale in float32, float64 otherwise. A float32 window of two or
    four rows, 2 wide at stride 2 and reading no W padding (2x2/2, 2x2x2/2) adds its taps
    straight from the input rows in one sweep, with no row buffer.

    Nothing runs or restarts, so there is no second pass for inf and NaN. A kernel of its own,
    with its loops inlined into the item body: against the same work behind `avg_planes`'s
    per-chunk call, 2x2x2/2 on 64-wide rows takes 23% less time and 2x2/2 on 128-wide rows 15%
    (with the W pass behind a call: 10% and 2%). Float32 sums took another 25% off 2x2/2 and
    3x3/2 (float64 conversions and the row buffer's traffic were most of its time). Other
    arguments as `avg_planes`.
    """
    n, D, H, W = x.shape[0], x.shape[1], x.shape[2], x.shape[3]
    OD, OH, OW = out.shape[1], out.shape[2], out.shape[3]
    kd, sd, pd = geo[0, 0], geo[0, 1], geo[0, 3]
    kh, sh, ph = geo[1, 0], geo[1, 1], geo[1, 3]
    kw, sw, pw = geo[2, 0], geo[2, 1], geo[2, 3]
    width = max(pw + W, (OW - 1) * sw + kw)
    _, (scale_d, scale_h, scale_w) = _plane_divisors(count, zero, real, OD, OH, OW)
    t = acc.dtype.type
    scale_wt = scale_w.astype(acc.dtype)
    any_zero_w = zero[2, :OW].any()
    pairs = acc.itemsize == 4 and kw == 2 and sw == 2 and pw == 0 and 2 * OW <= W
    items = n * OD
    HW, ahead = H * W, PREFETCH_BYTES // x.itemsize
    runs, per = _runs(items, blocks)
    for block in prange(runs):
        Rp_ = np.zeros(width, dtype=acc.dtype)  # zeros left and right of R: the padding
        Rp = unowned(Rp_)  # views with no reference count (`_nrt`): 3x3/1 10% faster
        R = Rp[pw : pw + W]
        xu, ou, zu, swu = unowned(x), unowned(out), unowned(zero), unowned(scale_wt)
        for item in range(block * per, min(items, (block + 1) * per)):
            o, od = item // OD, item % OD
            d0, d1 = max(od * sd - pd, 0), min(od * sd - pd + kd, D)
            oplane, zero_d = ou[o, od], zu[0, od]
            for oh in range(OH):
                start = oh * sh - ph
                h0, h1 = max(start, 0), min(start + kh, H)
                rows = max(d1 - d0, 0) * max(h1 - h0, 0)
                orow, sc = oplane[oh], t(scale_h[oh] * scale_d[od])
                if rows > 0:  # hint the lines each depth's rows read next
                    at = h0 * W
                    if at + ahead >= HW:  # past this slice: the slice this tap reads next
                        at += (sd - 1) * HW
                    for d in range(d0, d1):
                        prefetch_ahead(xu[o, d], at, sh * W)
                if pairs and (rows == 2 or rows == 4):
                    a = xu[o, d0, h0]
                    d, h = _next_row(d0, h0, h0, h1)
                    b = xu[o, d, h]
                    if rows == 2:
                        for ow in range(OW):
                            i = 2 * ow
                            v = (t(a[i]) + t(a[i + 1])) + (t(b[i]) + t(b[i + 1]))
                            orow[ow] = v * (sc * swu[ow])
                    else:
                        d, h = _next_row(d, h, h0, h1)
                        c = xu[o, d, h]
                        d, h = _next_row(d, h, h0, h1)
                        e = xu[o, d, h]
                        for ow in range(OW):
                            i = 2 * ow
                            v = ((t(a[i]) + t(a[i + 1])) + (t(b[i]) + t(b[i + 1]))) + (
                                (t(c[i]) + t(c[i + 1])) + (t(e[i]) + t(e[i + 1]))
                            )
                            orow[ow] = v * (sc * swu[ow])
                else:
                    _sum_rows(xu, o, d0, d1, h0, h1, R)
                    _fused_w(Rp, orow, OW, kw, sw, sc, swu)
                zero_row = zu[1, oh] or zero_d
                if zero_row or any_zero_w:
                    for ow in range(OW):
                        if zero_row or zu[2, ow]:
                            orow[ow] = empty
        keep_alive(Rp_)


@njit(parallel=True, cache=True)
def avg_planes_tree(x, out, geo, count, zero, real, empty, blocks, hplan, wplan):
    """`avg_planes` for float32 results and windows `_cpu.tree_window` admits (one depth deep,
    stride 1 along W, 4-64 cells along an axis): every sum a tree of float32 additions, with
    no float64 and no subtraction.

    A window of k cells along an axis is a few blocks of 4 * 2**j cells and up to three single
    cells (15 = 8 + 4 + 1 + 1 + 1; ``hplan``/``wplan``: `_cpu.tree_plan`), added as a balanced
    tree. A plane is summed in strips of output rows (``STRIP_CELLS`` cells of column sums):

    * down the strip, each block level is a buffer of rows: blocks of 4 input rows, then blocks
      of two blocks of the level below (`_strip_levels`), each level one loop over the strip's
      rows end to end; the top level's one block is added from two blocks of the level below
      as the column sums are (`_col_sums`), never stored;
    * along W the same over the strip's column sums end to end (`_w_levels`; a block running
      off a row's end gives a value no output reads), then each output row's terms, scaled
      (`_row_terms`).

    Each sum is a tree at most `_cpu.TREE_DEPTH` additions deep, within the kernels issue's
    1e-6 of the window's mean magnitude; a large value adds to its neighbours and is never
    subtracted from them, and inf and NaN come out as in a tap-by-tap sum. The bits are those
    of the ring-of-rows kernel this replaced (its sums, in the same order), which did the same
    additions a row at a time: a loop per row of 128 cells cost as much again as its sums.

    A strip whose input rows are all real and have no W padding is read in place; others are
    copied between zeros, so the windows need no bounds. The output rows of the next strip are
    hinted for writing a row at a time (5% less time on (16, 64, 128, 128) 15x15/1; hints of
    the input, at once or a row at a time, and non-temporal stores of the output were 5-20%
    slower: `_prefetch`). The loops are inlined functions over views of `_nrt.unowned` arrays
    in the parallel loop's body. Other arguments as `avg_planes`.
    """
    n, D, H, W = x.shape[0], x.shape[1], x.shape[2], x.shape[3]
    OD, OH, OW = out.shape[1], out.shape[2], out.shape[3]
    sd, pd = geo[0, 1], geo[0, 3]
    kh, sh, ph = geo[1, 0], geo[1, 1], geo[1, 3]
    kw, pw = geo[2, 0], geo[2, 3]
    pitch = max(pw + W, OW - 1 + kw)  # a row between its padding
    staged = pitch != W  # rows with W padding are copied between zeros
    strip = max(1, min(OH, STRIP_CELLS // pitch))  # output rows per strip
    hcells = _level_cells(((strip - 1) * sh + kh) * pitch)
    cells = _level_cells(strip * pitch)
    _, (scale_d, scale_h, scale_w) = _plane_divisors(count, zero, real, OD, OH, OW)
    scale_wt = scale_w.astype(np.float32)
    any_zero_w = zero[2, :OW].any()
    items = n * OD
    runs, per = _runs(items, blocks)
    x3 = x.reshape((n, D, H * W))  # planes end to end: a strip's rows are one run
    for block in prange(runs):
        hrows_ = np.zeros((_kept(hplan) + 1, hcells), dtype=np.float32)  # [0]: copied rows
        cols_ = np.zeros((_kept(wplan) + 1, cells), dtype=np.float32)  # [0]: column sums
        need_ = np.zeros(hplan[0] + 1, dtype=np.int64)
        hrows, cols, need = unowned(hrows_), unowned(cols_), unowned(need_)
        xu, ou, zu, swt = unowned(x3), unowned(out), unowned(zero), unowned(scale_wt)
        for item in range(block * per, min(items, (block + 1) * per)):
            o, od = item // OD, item % OD
            d = od * sd - pd
            live = 0 <= d < D  # else the window's depth is all padding: every row is zeros
            xp, oplane = xu[o, min(max(d, 0), D - 1)], ou[o, od]
            for oh0 in range(0, OH, strip):
                ns = min(strip, OH - oh0)
                nin = (ns - 1) * sh + kh  # input rows the strip's windows read
                i0 = oh0 * sh - ph  # the first of them
                if not staged and live and i0 >= 0 and i0 + nin <= H:
                    X = xp[i0 * W : (i0 + nin) * W]
                else:
                    X = hrows[0]
                    _copy_rows(X, xp, i0, nin, H, W, pw, pitch, live)
                _strip_levels(X, hrows, need, hplan, ns, sh, pitch)
                calls, span = (1, ns * pitch) if sh == 1 else (ns, pitch)  # the rows at once if they all sum
                for q in range(calls):
                    _col_sums(X, hrows, hplan, q * sh, pitch, cols[0, q * pitch : q * pitch + span])
                _w_levels(cols, ns * pitch, wplan)
                for q in range(ns):
                    oh = oh0 + q
                    orow = oplane[oh]
                    if oh + ns < OH:
                        prefetch_write_row(oplane[oh + ns])
                    _row_terms(cols, q * pitch, wplan, orow, swt, np.float32(scale_d[od] * scale_h[oh]))
                    zero_row = zu[1, oh] or zu[0, od]
                    if zero_row or any_zero_w:
                        for i in range(OW):
                            if zero_row or zu[2, i]:
                                orow[i] = empty
        keep_alive(hrows_)
        keep_alive(cols_)
        keep_alive(need_)


@njit(cache=True)
def _level_cells(cells):
    """A level buffer's length for ``cells`` cells: levels 2 KiB apart modulo 4 KiB (a pitch
    of a multiple of 4 KiB cost 1.7x: 4K aliasing between a level's loads and stores)."""
    return cells + (512 - cells % 1024) % 1024


@njit(cache=True, inline="always")
def _copy_rows(X, xp, i0, nin, H, W, pw, pitch, live):
    """X's first ``nin`` rows (``pitch`` cells each) = the plane's rows ``i0``, ``i0 + 1``, ...
    with ``pw`` zeros before and the rest of the pitch after; zeros for rows outside it."""
    H = xp.shape[0] // W
    for r in range(nin):
        row = X[r * pitch : (r + 1) * pitch]
        ih = i0 + r
        if live and 0 <= ih < H:
            src = xp[ih * W : (ih + 1) * W]
            for i in range(pw):
                row[i] = 0.0
            for i in range(W):
                row[pw + i] = src[i]
            for i in range(pw + W, pitch):
                row[i] = 0.0
        else:
            row[:] = 0.0


@njit(cache=True, inline="always")
def _kept(plan):
    """How many block levels of ``plan`` are kept in buffers: all but the top one, whose one
    block its term adds from two of the level below (blocks of 4, level 1, are kept)."""
    return plan[0] - 1 if plan[0] >= 2 else plan[0]


@njit(cache=True, inline="always")
def _strip_levels(X, hrows, need, plan, ns, sh, p):
    """The kept block levels of a strip of ``ns`` output rows, each for the rows (``p`` cells
    each) that the column sums or the level above read (``need``: rows per level)."""
    top, kept = plan[0], _kept(plan)
    if kept == 0:
        return
    for j in range(top + 1):
        need[j] = 0
    for t in range(plan[1]):
        level, off = plan[2 + 2 * t], plan[3 + 2 * t]
        need[level] = max(need[level], off + (ns - 1) * sh + 1)
    for j in range(top, 1, -1):  # a block of level j is two of level j - 1, 2**j rows apart
        need[j - 1] = max(need[j - 1], need[j] + (2 << (j - 1)))
    _sum4_rows(hrows[1], X, need[1], p)
    for j in range(1, kept):
        a = hrows[j]
        _sum2(hrows[j + 1, : need[j + 1] * p], a, a[(2 << j) * p :])


@njit(cache=True, inline="always")
def _sum4_rows(dst, X, rows, p):
    """dst's first ``rows`` rows (``p`` cells each) = the blocks of four rows of X starting at
    each, summed as `_sum4` does; four rows at a time, which read seven rows of X, not 16."""
    r = 0
    while r + 4 <= rows:
        x0, x1, x2, x3 = X[r * p :], X[(r + 1) * p :], X[(r + 2) * p :], X[(r + 3) * p :]
        x4, x5, x6 = X[(r + 4) * p :], X[(r + 5) * p :], X[(r + 6) * p :]
        d0, d1 = dst[r * p : (r + 1) * p], dst[(r + 1) * p : (r + 2) * p]
        d2, d3 = dst[(r + 2) * p : (r + 3) * p], dst[(r + 3) * p : (r + 4) * p]
        for i in range(p):
            b, c, d, e, f = x1[i], x2[i], x3[i], x4[i], x5[i]
            cd, de, ef = c + d, d + e, e + f
            d0[i] = (x0[i] + b) + cd
            d1[i] = (b + c) + de
            d2[i] = cd + ef
            d3[i] = de + (f + x6[i])
        r += 4
    _sum4(dst[r * p : rows * p], X[r * p :], X[(r + 1) * p :], X[(r + 2) * p :], X[(r + 3) * p :])


@njit(cache=True, inline="always")
def _w_levels(cols, n, plan):
    """The kept block levels along W of the first ``n`` cells of ``cols[0]``."""
    kept = _kept(plan)
    if kept == 0:
        return
    a = cols[0]
    _sum4(cols[1, : n - 3], a, a[1:], a[2:], a[3:])
    for j in range(1, kept):
        b = 2 << j
        a = cols[j]
        _sum2(cols[j + 1, : n - b + 1], a, a[b:])


@njit(cache=True, inline="always")
def _sum4(dst, a, b, c, d):
    """dst = (a + b) + (c + d) over dst's length."""
    for i in range(dst.shape[0]):
        dst[i] = (a[i] + b[i]) + (c[i] + d[i])


@njit(cache=True, inline="always")
def _sum2(dst, a, b):
    """dst = a + b over dst's length."""
    for i in range(dst.shape[0]):
        dst[i] = a[i] + b[i]


@njit(cache=True, inline="always")
def _col_term(X, hrows, plan, t, row0, p):
    """Term ``t`` of the windows whose first row is ``row0``: rows of a kept level, or of X."""
    level, off = plan[2 + 2 * t], plan[3 + 2 * t]
    if level == 0:
        return X[(row0 + off) * p :]
    return hrows[level, (row0 + off) * p :]


@njit(cache=True, inline="always")
def _col_sums(X, hrows, plan, row0, p, dst):
    """dst = the column sums of the windows whose first row is ``row0`` (and of those after
    it, ``p`` cells a row, over dst's length)."""
    nt = plan[1]
    b = _col_term(X, hrows, plan, 1, row0, p) if nt > 1 else X
    c = _col_term(X, hrows, plan, 2, row0, p) if nt > 2 else X
    d = _col_term(X, hrows, plan, 3, row0, p) if nt > 3 else X
    e = _col_term(X, hrows, plan, 4, row0, p) if nt > 4 else X
    f = _col_term(X, hrows, plan, 5, row0, p) if nt > 5 else X
    g = _col_term(X, hrows, plan, 6, row0, p) if nt > 6 else X
    top = plan[0]
    if top >= 2:  # the top block: two blocks of the level below, 2**top rows apart
        h, at = hrows[top - 1], row0 + plan[3]
        _tree(dst, nt, h[at * p :], h[(at + (2 << (top - 1))) * p :], b, c, d, e, f, g, None, 1.0)
    else:
        _tree(dst, nt, _col_term(X, hrows, plan, 0, row0, p), None, b, c, d, e, f, g, None, 1.0)


@njit(cache=True, inline="always")
def _row_terms(cols, at, plan, orow, scale, k):
    """orow = the W sums of the windows starting at cells at, at+1, ... of ``cols[0]``, scaled
    (`_scaled`)."""
    nt = plan[1]
    b = cols[plan[4], at + plan[5] :] if nt > 1 else cols[0]
    c = cols[plan[6], at + plan[7] :] if nt > 2 else cols[0]
    d = cols[plan[8], at + plan[9] :] if nt > 3 else cols[0]
    e = cols[plan[10], at + plan[11] :] if nt > 4 else cols[0]
    f = cols[plan[12], at + plan[13] :] if nt > 5 else cols[0]
    g = cols[plan[14], at + plan[15] :] if nt > 6 else cols[0]
    top = plan[0]
    if top >= 2:
        h, s = cols[top - 1], at + plan[3]
        _tree(orow, nt, h[s:], h[s + (2 << (top - 1)) :], b, c, d, e, f, g, scale, k)
    else:
        _tree(orow, nt, cols[plan[2], at + plan[3] :], None, b, c, d, e, f, g, scale, k)


@njit(cache=True, inline="always")
def _tree(dst, nt, a, a2, b, c, d, e, f, g, scale, k):
    """dst = the sum of the first ``nt`` terms, a balanced tree (`_cpu.TREE_SHAPES`), scaled
    (`_scaled`); the first term is a, or the block a + a2 (`_head`)."""
    if nt == 1:
        for i in range(dst.shape[0]):
            dst[i] = _scaled(_head(a, a2, i), scale, k, i)
    elif nt == 2:
        for i in range(dst.shape[0]):
            dst[i] = _scaled(_head(a, a2, i) + b[i], scale, k, i)
    elif nt == 3:
        for i in range(dst.shape[0]):
            dst[i] = _scaled((_head(a, a2, i) + b[i]) + c[i], scale, k, i)
    elif nt == 4:
        for i in range(dst.shape[0]):
            dst[i] = _scaled((_head(a, a2, i) + b[i]) + (c[i] + d[i]), scale, k, i)
    elif nt == 5:
        for i in range(dst.shape[0]):
            dst[i] = _scaled((_head(a, a2, i) + b[i]) + ((c[i] + d[i]) + e[i]), scale, k, i)
    elif nt == 6:
        for i in range(dst.shape[0]):
            dst[i] = _scaled(((_head(a, a2, i) + b[i]) + (c[i] + d[i])) + (e[i] + f[i]), scale, k, i)
    else:
        for i in range(dst.shape[0]):
            v = ((_head(a, a2, i) + b[i]) + (c[i] + d[i])) + ((e[i] + f[i]) + g[i])
            dst[i] = _scaled(v, scale, k, i)


@njit(cache=True, inline="always")
def _head(a, a2, i):
    """a[i], or the block a[i] + a2[i] if ``a2`` is not None (decided when compiling)."""
    if a2 is None:
        return a[i]
    return a[i] + a2[i]


@njit(cache=True, inline="always")
def _scaled(v, scale, k, i):
    """v * (k * scale[i]), or v if ``scale`` is None (decided when compiling)."""
    if scale is None:
        return v
    return v * (k * scale[i])


@njit(cache=True, inline="always")
def _fused_w(Rp, orow, OW, kw, sw, sc, scale_w):
    """orow = the W sums of Rp scaled by ``sc * scale_w``, for the windows
    `_cpu.fused_w_window` admits; 1 if some is not finite. Windows 2-3 wide are spelled out
    here, the others in `_fused_w_stride1`. For `avg_planes_direct` only: `_plane_chunk`
    spells the same loops out in its own body, where this function, inlined or called, made
    the running windows 8-30% slower (3x3/1 and 7x7/1, measured)."""
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
        bad = _fused_w_stride1(Rp, orow, OW, kw, sc, scale_w)
    return bad


@njit(cache=True)
def _prefix_w(Rp, prefix, orow, OW, kw, sw, sc, scale_w):
    """orow = the W sums of Rp for windows longer than 7 (float32 results), as differences of a
    prefix sum, fused with the scaling; 1 if some is not finite. In a function of its own and
    with no row buffer between: 1-D k=64/1 took 43% less time than the same prefix sum in
    `_plane_chunk`'s body followed by a scaling sweep, 15x15/1 7-15% less than `_block_sweeps`."""
    prefix[0] = 0.0
    for i in range(Rp.shape[0]):
        prefix[i + 1] = prefix[i] + Rp[i]
    return _scaled_differences(prefix, orow, OW, kw, sw, sc, scale_w)


@njit(cache=True, inline="always")
def _scaled_differences(prefix, orow, OW, kw, sw, sc, scale_w):
    """orow = differences of ``prefix`` ``kw`` apart (one per output, ``sw`` apart), scaled by
    ``sc * scale_w``; 1 if some is not finite. Inlined: called per row, a call cost as much
    as the loop (0.38 against 0.22 ns per cell on 128-wide rows)."""
    bad = 0
    hi, lo = prefix[kw:], prefix[:]  # two views: 8-10% faster than offsets on 16384-wide rows
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
def _prefix_rows4(R4, P4, oplane, g0, OW, kw, sw, sc, scale_w):
    """oplane[g0 : g0 + 4] = the W sums of the four rows of ``R4`` (running windows longer
    than 7, float32 results), scaled by ``sc[k] * scale_w``; 1 if some is not finite.

    A row's prefix sum is a chain of dependent adds; the four rows' chains run side by side
    in one loop (each row's sums in `_prefix_w`'s order: the same bits), and the four rows'
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
        bad |= _scaled_differences(P4[k], oplane[g0 + k], OW, kw, sw, sc[k], scale_w)
    return bad


@njit(cache=True)
def _prefix_chunk(
    x,
    oplane,
    o,
    depth,
    oh0,
    oh1,
    R4,
    P4,
    kh,
    sh,
    ph,
    kw,
    sw,
    pw,
    scale_h,
    scale_w,
    zero_h,
    zero_w,
    any_zero_w,
    empty,
    run_h,
):
    """`_plane_chunk` for float32 results and running W windows longer than 7 (15x15/1), four
    output rows at a time: their column sums in the four rows of ``R4`` (each row's running
    sum continues from the one before it, as in `_plane_chunk`: the same bits), then their W
    sums in one call (`_prefix_rows4`). False if some output came out non-finite.

    15x15/1 on (16, 64, 128, 128): 13.3 -> 11.8 ms against `_plane_chunk`'s row at a time
    (interleaved A/B). Calls and array views cost tens of nanoseconds each here, as much as a
    row's work: a copy of the row above by slice assignment, or a call to slide each row into
    its buffer, made it slower than the row at a time."""
    H, W = x.shape[2], x.shape[3]
    OW = oplane.shape[1]
    d0, d1, _, scale_d, zero_d = depth
    hint = sh * W if sh <= PREFETCH_MAX_STEP // (W * x.itemsize) else 0  # no overflow: sh may be large
    sc = np.empty(4)
    bad = 0
    for g0 in range(oh0, oh1, 4):
        g1 = min(g0 + 4, oh1)
        for oh in range(g0, g1):
            start = oh * sh - ph
            for d in range(d0, d1):
                prefetch_ahead(x[o, d, min(max(start, 0), H - 1)], 0, hint)
            R = R4[oh - g0, pw : pw + W]
            src = R4[(oh - g0 - 1) % 4, pw : pw + W]
            if oh == oh0 or not run_h:
                _sum_rows(x, o, d0, d1, max(start, 0), min(start + kh, H), R)
            elif sh == 1 and d1 - d0 == 1 and 0 < start and start + kh <= H:
                # the row above, slid down: one row leaving and one entering, in one sweep
                # (the additions of `_slide_rows`, in its order)
                a, b = x[o, d0, start - 1], x[o, d0, start + kh - 1]
                for i in range(W):
                    R[i] = src[i] + (np.float64(b[i]) - np.float64(a[i]))
            else:  # the row above, copied and slid
                for i in range(W):
                    R[i] = src[i]
                _slide_rows(x, o, d0, d1, R, start, sh, kh, H, W)
        for oh in range(g0, g1):
            sc[oh - g0] = scale_h[oh] * scale_d
        if g1 - g0 == 4:
            bad |= _prefix_rows4(R4, P4, oplane, g0, OW, kw, sw, sc, scale_w)
        else:
            for oh in range(g0, g1):
                bad |= _prefix_w(R4[oh - g0], P4[0], oplane[oh], OW, kw, sw, sc[oh - g0], scale_w)
        for oh in range(g0, g1):
            zero_row = zero_h[oh] or zero_d
            if zero_row or any_zero_w:
                orow = oplane[oh]
                for ow in range(OW):
                    if zero_row or zero_w[ow]:
                        orow[ow] = empty
    return bad == 0


@njit(cache=True)
def _fused_w_stride1(Rp, orow, OW, kw, sc, scale_w):
    """orow = the stride-1 W sums of Rp for windows 1 or 4-7 wide, scaled; 1 if some is not
    finite (2 and 3 have branches of their own in `_plane_chunk`).

    Each width spelled out: LLVM vectorises a loop whose taps are literal offsets (one sweep,
    no buffer), but neither an inner loop over the taps nor one sweep per tap into a buffer
    (2-3x slower here, measured on 5x5 and 7x7 windows)."""
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


@njit(cache=True, inline="always")
def _next_row(d, h, h0, h1):
    """The row after (d, h) in a window's rows h0..h1 of each depth (counters in place of a
    division and a remainder per row)."""
    return (d, h + 1) if h + 1 < h1 else (d + 1, h0)


@njit(cache=True, inline="always")
def _sum_rows(x, o, d0, d1, h0, h1, R):
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
        d, h = _next_row(d, h, h0, h1)
        b = x[o, d, h]
        if first == 2:
            for i in range(W):
                R[i] = t(a[i]) + t(b[i])
        else:
            d, h = _next_row(d, h, h0, h1)
            c = x[o, d, h]
            if first == 3:
                for i in range(W):
                    R[i] = t(a[i]) + t(b[i]) + t(c[i])
            else:
                d, h = _next_row(d, h, h0, h1)
                e = x[o, d, h]
                for i in range(W):
                    R[i] = (t(a[i]) + t(b[i])) + (t(c[i]) + t(e[i]))
    for _ in range(first, rows, 4):
        d, h = _next_row(d, h, h0, h1)
        a = x[o, d, h]
        d, h = _next_row(d, h, h0, h1)
        b = x[o, d, h]
        d, h = _next_row(d, h, h0, h1)
        c = x[o, d, h]
        d, h = _next_row(d, h, h0, h1)
        e = x[o, d, h]
        for i in range(W):
            R[i] += (t(a[i]) + t(b[i])) + (t(c[i]) + t(e[i]))


@njit(cache=True)
def _tap_sweeps(Rp, tmp, kw, OW):
    """tmp[ow] = sum of Rp[ow : ow + kw]: one vectorised sweep per tap, the first one setting."""
    for i in range(OW):
        tmp[i] = Rp[i]
    for j in range(1, kw):
        src = Rp[j:]
        for i in range(OW):
            tmp[i] += src[i]


@njit(cache=True)
def _block_sweeps(Rp, P4, tmp, kw, OW):
    """tmp[ow] = sum of Rp[ow : ow + kw] for windows 8-24 wide and float64 results: sums of 4
    cells (one sweep, literal offsets), then one vectorised sweep per 4 taps and per tap left
    over (15 wide: 7 sweeps). Closer to the tap-by-tap sum than a prefix sum's differences;
    float32 results take `_prefix_w`, faster."""
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


@njit(cache=True)
def _slide_rows(x, o, d0, d1, R, start, sh, kh, H, W):
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


@njit(cache=True)
def _plane_chunk(
    x,
    oplane,
    o,
    depth,
    oh0,
    oh1,
    Rp,
    tmp,
    prefix,
    kh,
    sh,
    ph,
    kw,
    sw,
    pw,
    div_h,
    div_w,
    scale_h,
    scale_w,
    zero_h,
    zero_w,
    any_zero_w,
    empty,
    run_h,
    run_w,
):
    """Output rows oh0..oh1 of ``oplane`` (plane o at one output depth, whose window spans the
    input depths d0..d1); False if some output came out non-finite."""
    H, W = x.shape[2], x.shape[3]
    OW = oplane.shape[1]
    d0, d1, div_d, scale_d, zero_d = depth
    R = Rp[pw : pw + W]
    bad = 0
    hint = sh * W if sh <= PREFETCH_MAX_STEP // (W * x.itemsize) else 0  # no overflow: sh may be large
    for oh in range(oh0, oh1):
        start = oh * sh - ph
        for d in range(d0, d1):
            prefetch_ahead(x[o, d, min(max(start, 0), H - 1)], 0, hint)
        if oh == oh0 or not run_h:
            _sum_rows(x, o, d0, d1, max(start, 0), min(start + kh, H), R)
        else:
            _slide_rows(x, o, d0, d1, R, start, sh, kh, H, W)
        orow = oplane[oh]
        sc, dh, exact = scale_h[oh] * scale_d, div_h[oh] * div_d, oplane.itemsize == 8
        # the common windows, float32 results: W sums fused with the scaling, no row buffer
        # in between (float64 results divide, as PyTorch and the oracle do: the exact quotient)
        if not exact and kw == 2 and sw == 2:
            for ow in range(OW):
                v = Rp[2 * ow] + Rp[2 * ow + 1]
                bad |= v - v != 0.0
                orow[ow] = v * (sc * scale_w[ow])
        elif not exact and kw == 3 and sw == 1:
            for ow in range(OW):
                v = Rp[ow] + Rp[ow + 1] + Rp[ow + 2]
                bad |= v - v != 0.0
                orow[ow] = v * (sc * scale_w[ow])
        elif not exact and kw == 3 and sw == 2:
            for ow in range(OW):
                v = Rp[2 * ow] + Rp[2 * ow + 1] + Rp[2 * ow + 2]
                bad |= v - v != 0.0
                orow[ow] = v * (sc * scale_w[ow])
        elif not exact and sw == 1 and (kw == 1 or 4 <= kw <= 7):
            bad |= _fused_w_stride1(Rp, orow, OW, kw, sc, scale_w)
        elif not exact and kw == 2 and sw == 1:
            for ow in range(OW):
                v = Rp[ow] + Rp[ow + 1]
                bad |= v - v != 0.0
                orow[ow] = v * (sc * scale_w[ow])
        elif not exact and run_w and kw > 7:
            bad |= _prefix_w(Rp, prefix, orow, OW, kw, sw, sc, scale_w)
        else:
            # in functions of their own: the same loops inlined here run 1.5-2x slower
            if sw == 1 and 8 <= kw <= 24:
                _block_sweeps(Rp, prefix, tmp, kw, OW)
            elif run_w and kw > 8:
                prefix[0] = 0.0
                for i in range(Rp.shape[0]):
                    prefix[i + 1] = prefix[i] + Rp[i]
                for ow in range(OW):
                    tmp[ow] = prefix[ow * sw + kw] - prefix[ow * sw]
            elif sw == 1:
                _tap_sweeps(Rp, tmp, kw, OW)
            else:
                tmp[:] = 0.0
                for j in range(kw):
                    if sw == 2:
                        src = Rp[j : j + 2 * OW - 1]
                        for i in range(OW):
                            tmp[i] += src[2 * i]
                    else:
                        for i in range(OW):
                            tmp[i] += Rp[i * sw + j]
            if exact:
                for ow in range(OW):
                    v = tmp[ow] if sc != 0.0 and scale_w[ow] != 0.0 else 0.0
                    bad |= v - v != 0.0
                    orow[ow] = v / (dh * div_w[ow])
            else:
                for ow in range(OW):
                    v = tmp[ow]
                    bad |= v - v != 0.0
                    orow[ow] = v * (sc * scale_w[ow])
        zero_row = zero_h[oh] or zero_d
        if zero_row or any_zero_w:
            for ow in range(OW):
                if zero_row or zero_w[ow]:
                    orow[ow] = empty
    return bad == 0


@njit(parallel=True, cache=True)
def avg_backward_planes(g, grad, geo, inv_h, inv_w, cover_h, running):
    """The transpose of `avg_planes` (channels-first 1-D/2-D, no dilation): one plane per item.

    For each input row, a float64 row ``T`` holds the sum over the output rows whose windows
    cover it of ``g * inv_h`` (a running sum down the plane, restarted every ``CHUNK`` rows);
    each column tap then adds ``T * inv_w`` into a zero-padded row at a literal stride, and the
    real part of that row is the gradient. Non-finite chunks are summed again row by row.
    """
    n, H, W = grad.shape
    OW = g.shape[2]
    kw, sw, pw = geo[2, 0], geo[2, 1], geo[2, 3]
    width = max(pw + W, (OW - 1) * sw + kw)
    for o in prange(n):
        T = np.zeros(OW, dtype=np.float64)
        spread = np.zeros(width, dtype=np.float64)
        for ih0 in range(0, H, CHUNK):
            ih1 = min(H, ih0 + CHUNK)
            run = running
            for _attempt in range(2):  # a second, row-by-row pass only if the first met inf/NaN
                ok = _backward_plane_chunk(
                    g, grad, o, ih0, ih1, T, spread, inv_h, inv_w, cover_h, kw, sw, pw, run
                )
                if ok or not run:
                    break
                run = False


@njit(parallel=True, cache=True)
def avg_backward_planes_disjoint(g, grad, geo, inv_h, inv_w, cover_h):
    """`avg_backward_planes` for windows that do not overlap (kernel <= stride along H and W):
    each input cell takes ``g * inv_h * inv_w`` of the one output covering it, or 0.

    No running sum, no row of sums: one product per output (the same float64 product as
    `avg_backward_planes`, so the same bits), written straight into the rows it covers; a
    2-wide window at stride 2 with no W padding writes each pair of cells in one sweep.
    2x2/2 on 128x128 planes ran 2.5x faster than through `avg_backward_planes`.
    """
    n, H, W = grad.shape
    OW = g.shape[2]
    kw, sw, pw = geo[2, 0], geo[2, 1], geo[2, 3]
    width = max(pw + W, (OW - 1) * sw + kw)
    pairs = kw == 2 and sw == 2 and pw == 0 and 2 * OW <= W
    for o in prange(n):
        spread = np.zeros(width, dtype=grad.dtype)  # cells no window covers stay 0
        for ih in range(H):
            lo, hi = cover_h[ih, 0], cover_h[ih, 1]
            grow = grad[o, ih]
            if lo > hi:
                grow[:] = 0.0
                continue
            f, grow_g = inv_h[lo], g[o, lo]
            if pairs:
                for ow in range(OW):
                    v = (grow_g[ow] * f) * inv_w[ow]
                    grow[2 * ow] = v
                    grow[2 * ow + 1] = v
                grow[2 * OW :] = 0.0
            else:
                for ow in range(OW):
                    v = (grow_g[ow] * f) * inv_w[ow]
                    for j in range(kw):
                        spread[ow * sw + j] = v
                grow[:] = spread[pw : pw + W]


@njit(parallel=True, cache=True)
def avg_backward_disjoint(g, grad, C, geo, inv_d, inv_h, inv_w):
    """`avg_backward` for undilated windows that do not overlap (kernel <= stride on every
    axis), any layout: each input cell takes ``g * inv_d * inv_h * inv_w`` of the one output
    covering it (``(i + pad) // stride``, if its window reaches ``i``), or 0.

    One float64 product per output cell and row, a C-vector written per input cell: no running
    sums over the covering outputs, so no chunks and no second pass for inf and NaN.
    Channels-last 2x2/2 ran 1.5x faster than through `avg_backward`. Parallel over (outer,
    input depth, input row); arguments as `avg_backward` (no cover tables).
    """
    n_outer, D, H = grad.shape[0], grad.shape[1], grad.shape[2]
    W = grad.shape[3] // C
    OD, OH, OW = g.shape[1], g.shape[2], g.shape[3] // C
    kd, sd, pd = geo[0, 0], geo[0, 1], geo[0, 3]
    kh, sh, ph = geo[1, 0], geo[1, 1], geo[1, 3]
    kw, sw, pw = geo[2, 0], geo[2, 1], geo[2, 3]
    for item in prange(n_outer * D * H):
        o = item // (D * H)
        idp = (item // H) % D
        ih = item % H
        grow = grad[o, idp, ih]
        od, oh = (idp + pd) // sd, (ih + ph) // sh
        if od >= OD or idp + pd - od * sd >= kd or oh >= OH or ih + ph - oh * sh >= kh:
            grow[:] = 0.0
            continue
        f, grow_g = inv_d[od] * inv_h[oh], g[o, od, oh]
        for iw in range(W):
            ow = (iw + pw) // sw
            cell = grow[iw * C : iw * C + C]
            if ow >= OW or iw + pw - ow * sw >= kw:
                cell[:] = 0.0
                continue
            s, src = f * inv_w[ow], grow_g[ow * C : ow * C + C]
            for c in range(C):
                cell[c] = src[c] * s


@njit(cache=True)
def _backward_plane_chunk(g, grad, o, ih0, ih1, T, spread, inv_h, inv_w, cover_h, kw, sw, pw, run):
    """Input rows ih0..ih1 of plane o; False if some gradient came out non-finite."""
    W = grad.shape[2]
    OW = g.shape[2]
    lo_cur, hi_cur = 0, -1
    bad = 0
    for ih in range(ih0, ih1):
        lo, hi = cover_h[ih, 0], cover_h[ih, 1]
        if not run or ih == ih0 or lo > hi_cur:
            T[:] = 0.0
            lo_cur, hi_cur = lo, lo - 1
        while lo_cur < lo:
            f = inv_h[lo_cur]
            row = g[o, lo_cur]
            for i in range(OW):
                T[i] -= row[i] * f
            lo_cur += 1
        while hi_cur < hi:
            hi_cur += 1
            f = inv_h[hi_cur]
            row = g[o, hi_cur]
            for i in range(OW):
                T[i] += row[i] * f
        spread[:] = 0.0
        for j in range(kw):
            # literal strides: LLVM vectorises the scattered adds only with a known stride
            if sw == 1:
                dst = spread[j : j + OW]
                for i in range(OW):
                    dst[i] += T[i] * inv_w[i]
            elif sw == 2:
                dst = spread[j : j + 2 * OW - 1]
                for i in range(OW):
                    dst[2 * i] += T[i] * inv_w[i]
            else:
                for i in range(OW):
                    spread[i * sw + j] += T[i] * inv_w[i]
        grow = grad[o, ih]
        src = spread[pw : pw + W]
        for i in range(W):
            v = src[i]
            bad |= v - v != 0.0
            grow[i] = v
    return bad == 0
