"""Numba kernels over separable tap tables: adaptive pooling and anti-aliased (blur) pooling.

The tables are those of `avgpool.reference` (per axis, for output ``o`` and tap ``j``: the
input index ``pos[o, j]`` and a weight ``weight[o, j]``, 0 where the tap reads nothing), so the
fast path and the oracle share the geometry and differ only in how they loop. Arrays are 4-D
views ``(outer, D, H, W*C)`` as in `_common`; absent axes have a 1x1 table (pos 0, weight 1).

Windows here are short (adaptive windows span about n/out cells, blur filters at most 7), so
each output reads its taps directly: the cost per output is the window's size, and every
input cell is read about once per window that covers it. The backward runs the same kernels
on the transposed tables (`avgpool._cpu_plans.TapTables.transposed`): each input cell gathers
the gradients of the outputs that read it, so nothing is scattered and no thread writes where
another does.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from avgpool.kernels._common import split_runs
from avgpool.kernels._lanes import transpose8
from avgpool.kernels._nrt import keep_alive, unowned
from avgpool.kernels.registry import register


@register("adaptive_avg_pool", "blur_pool", "adaptive_avg_pool_backward", "blur_pool_backward")
@njit(parallel=True, cache=True)
def taps_sum(x, out, C, pos_d, w_d, pos_h, w_h, pos_w, w_w):
    """out[o, od, oh, ow*C + c] = sum of w_d * w_h * w_w * x over the taps (float64 sums).

    Each output sums its taps straight from the input: the fastest for channels-first windows
    that do not overlap down the plane (adaptive), whose rows the two-pass `taps_sum_rows`
    would filter just once anyway.
    """
    n_outer = x.shape[0]
    OD, OH, OW = pos_d.shape[0], pos_h.shape[0], pos_w.shape[0]
    for item in prange(n_outer * OD * OH):
        o = item // (OD * OH)
        od = (item // OH) % OD
        oh = item % OH
        orow = out[o, od, oh]
        for ow in range(OW):
            for c in range(C):
                acc = 0.0
                for jd in range(pos_d.shape[1]):
                    if w_d[od, jd] == 0.0:
                        continue
                    for jh in range(pos_h.shape[1]):
                        f = w_d[od, jd] * w_h[oh, jh]
                        if f == 0.0:
                            continue
                        row = x[o, pos_d[od, jd], pos_h[oh, jh]]
                        for jw in range(pos_w.shape[1]):
                            if w_w[ow, jw] != 0.0:
                                acc += f * w_w[ow, jw] * row[pos_w[ow, jw] * C + c]
                orow[ow * C + c] = acc


@njit(cache=True, inline="always")
def _rows_sum(X, ridx, rw, n, col):
    """col = the sum over k < n of rw[k] * X[ridx[k]], in col's dtype: the rows four at a time
    (one pass over ``col`` per four rows), the products of a group added left to right and the
    group's sum added to those before it. 0 when n is 0."""
    L = col.shape[0]
    t = col.dtype.type
    if n == 0:
        for i in range(L):
            col[i] = 0.0
        return
    a, wa = X[ridx[0]], t(rw[0])
    if n == 1:
        for i in range(L):
            col[i] = wa * t(a[i])
        return
    b, wb = X[ridx[1]], t(rw[1])
    if n == 2:
        for i in range(L):
            col[i] = wa * t(a[i]) + wb * t(b[i])
        return
    c, wc = X[ridx[2]], t(rw[2])
    if n == 3:
        for i in range(L):
            col[i] = (wa * t(a[i]) + wb * t(b[i])) + wc * t(c[i])
        return
    d, wd = X[ridx[3]], t(rw[3])
    for i in range(L):
        col[i] = ((wa * t(a[i]) + wb * t(b[i])) + wc * t(c[i])) + wd * t(d[i])
    k = 4
    while k + 4 <= n:
        a, b, c, d = X[ridx[k]], X[ridx[k + 1]], X[ridx[k + 2]], X[ridx[k + 3]]
        wa, wb, wc, wd = t(rw[k]), t(rw[k + 1]), t(rw[k + 2]), t(rw[k + 3])
        for i in range(L):
            col[i] += ((wa * t(a[i]) + wb * t(b[i])) + wc * t(c[i])) + wd * t(d[i])
        k += 4
    while k < n:
        a, wa = X[ridx[k]], t(rw[k])
        for i in range(L):
            col[i] += wa * t(a[i])
        k += 1


@njit(cache=True, inline="always")
def _gather_sum(col, pos, w, KW, acc):
    """acc[ow] = the sum over the taps jw of w[jw, ow] * col[pos[jw, ow]] (one channel), the
    taps in groups of four as `_rows_sum`."""
    OW = acc.shape[0]
    t = acc.dtype.type
    k = 0
    while k < KW:
        m = min(4, KW - k)
        pa, wa = pos[k], w[k]
        if m == 1:
            if k == 0:
                for ow in range(OW):
                    acc[ow] = t(wa[ow]) * col[pa[ow]]
            else:
                for ow in range(OW):
                    acc[ow] += t(wa[ow]) * col[pa[ow]]
        elif m == 2:
            pb, wb = pos[k + 1], w[k + 1]
            if k == 0:
                for ow in range(OW):
                    acc[ow] = t(wa[ow]) * col[pa[ow]] + t(wb[ow]) * col[pb[ow]]
            else:
                for ow in range(OW):
                    acc[ow] += t(wa[ow]) * col[pa[ow]] + t(wb[ow]) * col[pb[ow]]
        elif m == 3:
            pb, wb, pc, wc = pos[k + 1], w[k + 1], pos[k + 2], w[k + 2]
            if k == 0:
                for ow in range(OW):
                    acc[ow] = (t(wa[ow]) * col[pa[ow]] + t(wb[ow]) * col[pb[ow]]) + t(wc[ow]) * col[pc[ow]]
            else:
                for ow in range(OW):
                    acc[ow] += (t(wa[ow]) * col[pa[ow]] + t(wb[ow]) * col[pb[ow]]) + t(wc[ow]) * col[pc[ow]]
        else:
            pb, wb, pc, wc, pd, wd = pos[k + 1], w[k + 1], pos[k + 2], w[k + 2], pos[k + 3], w[k + 3]
            if k == 0:
                for ow in range(OW):
                    acc[ow] = (
                        (t(wa[ow]) * col[pa[ow]] + t(wb[ow]) * col[pb[ow]]) + t(wc[ow]) * col[pc[ow]]
                    ) + t(wd[ow]) * col[pd[ow]]
            else:
                for ow in range(OW):
                    acc[ow] += (
                        (t(wa[ow]) * col[pa[ow]] + t(wb[ow]) * col[pb[ow]]) + t(wc[ow]) * col[pc[ow]]
                    ) + t(wd[ow]) * col[pd[ow]]
        k += m


#: `taps_sum_rows` takes a row's regular W taps with no gather (`_span_sum`) where at least
#: this many outputs of the row have them: blur 4/2 on (1, 64, 111, 111), 55 of 56 outputs,
#: 257 -> 190 µs; on (1, 128, 56, 56), 27 of 28, 148 -> 156 (the fixed cost per row).
SPAN_MIN_OUTPUTS = 32


@njit(cache=True)
def _regular_span(pos, w):
    """(lo, hi, step): the outputs ``lo`` .. ``hi - 1`` of a transposed W table (taps, OW) whose
    every tap k reads cell ``pos[k, lo] + step * (ow - lo)`` with weight ``w[k, lo]``, step 1 or
    2: the inner windows of a blur or of equal windows. (0, 0, 0) where fewer than
    `SPAN_MIN_OUTPUTS` do."""
    KW, OW = pos.shape
    if OW < max(SPAN_MIN_OUTPUTS, 2):
        return 0, 0, 0
    mid = OW // 2
    step = pos[0, mid + 1] - pos[0, mid]
    if step != 1 and step != 2:
        return 0, 0, 0
    lo, hi = mid, mid + 1
    while lo > 0 and _follows(pos, w, KW, lo - 1, mid, step):
        lo -= 1
    while hi < OW and _follows(pos, w, KW, hi, mid, step):
        hi += 1
    return (lo, hi, step) if hi - lo >= SPAN_MIN_OUTPUTS else (0, 0, 0)


@njit(cache=True, inline="always")
def _follows(pos, w, KW, ow, mid, step):
    """Whether output ``ow``'s taps are output ``mid``'s, shifted by ``step`` cells an output."""
    for k in range(KW):
        if pos[k, ow] != pos[k, mid] + step * (ow - mid) or w[k, ow] != w[k, mid]:
            return False
    return True


@njit(cache=True, inline="always")
def _span_sum(col, even, odd, off, wk, KW, acc, lo, hi, step):
    """`_gather_sum` over the outputs ``lo`` .. ``hi - 1`` of a `_regular_span`, with no
    gather: tap k of output ow reads ``col[step * ow + off[k]]`` with weight ``wk[k]``. At
    step 2 ``col`` is read as its even and odd cells (``even``, ``odd``, filled here in one
    loop that LLVM vectorises with shuffles), so every loop reads cells side by side. Same
    products, same order, so the same bits."""
    if step == 2:
        for i in range(even.shape[0]):
            even[i] = col[2 * i]
            odd[i] = col[2 * i + 1]
        _span_taps(even, odd, off, wk, KW, acc, lo, hi, 2)
    else:
        _span_taps(col, col, off, wk, KW, acc, lo, hi, 1)


@njit(cache=True, inline="always")
def _span_taps(even, odd, off, wk, KW, acc, lo, hi, step):
    """The taps of `_span_sum` in `_gather_sum`'s groups of four: tap k reads ``even`` or
    ``odd`` (by the parity of ``off[k]``; at step 1 both are the row) at ``ow + off[k] // 2``
    (at step 1, ``ow + off[k]``), as slices read from 0 (indices known not to wrap)."""
    t = acc.dtype.type
    n = hi - lo
    dst = acc[lo:hi]
    k = 0
    while k < KW:
        m = min(4, KW - k)
        a = _span_source(even, odd, off[k], step, lo, n)
        b = _span_source(even, odd, off[min(k + 1, KW - 1)], step, lo, n)
        c = _span_source(even, odd, off[min(k + 2, KW - 1)], step, lo, n)
        d = _span_source(even, odd, off[min(k + 3, KW - 1)], step, lo, n)
        wa, wb = t(wk[k]), t(wk[min(k + 1, KW - 1)])
        wc, wd = t(wk[min(k + 2, KW - 1)]), t(wk[min(k + 3, KW - 1)])
        _add_group(dst, n, k == 0, m, a, b, c, d, wa, wb, wc, wd)
        k += m


@njit(cache=True, inline="always")
def _span_source(even, odd, off, step, lo, n):
    """The ``n`` cells a `_span_taps` tap at offset ``off`` reads for outputs ``lo`` on."""
    if step == 1:
        return even[lo + off : lo + off + n]
    first = lo + off // 2
    return (even if off % 2 == 0 else odd)[first : first + n]


@njit(cache=True, inline="always")
def _channels_sum(col, pos, w, KW, ow, C, dst):
    """dst[c] = the sum over the taps jw of w[jw, ow] * col[pos[jw, ow] * C + c] (C channels of
    output ``ow``), the taps in groups of four as `_rows_sum`."""
    t = dst.dtype.type
    k = 0
    while k < KW:
        m = min(4, KW - k)
        # a group's missing taps repeat its last (`_add_group` reads only the first m)
        ka, kb, kc, kd = k, min(k + 1, KW - 1), min(k + 2, KW - 1), min(k + 3, KW - 1)
        a, b = col[pos[ka, ow] * C :], col[pos[kb, ow] * C :]
        c, d = col[pos[kc, ow] * C :], col[pos[kd, ow] * C :]
        wa, wb, wc, wd = t(w[ka, ow]), t(w[kb, ow]), t(w[kc, ow]), t(w[kd, ow])
        _add_group(dst, C, k == 0, m, a, b, c, d, wa, wb, wc, wd)
        k += m


@njit(cache=True, inline="always")
def _add_group(dst, n, first, m, a, b, c, d, wa, wb, wc, wd):
    """dst[:n] set (``first``) or added to with one group of `_rows_sum`'s taps: the first
    ``m`` (1-4) of ``wa * a``, ``wb * b``, ``wc * c``, ``wd * d``, added left to right."""
    if m == 1:
        if first:
            for j in range(n):
                dst[j] = wa * a[j]
        else:
            for j in range(n):
                dst[j] += wa * a[j]
    elif m == 2:
        if first:
            for j in range(n):
                dst[j] = wa * a[j] + wb * b[j]
        else:
            for j in range(n):
                dst[j] += wa * a[j] + wb * b[j]
    elif m == 3:
        if first:
            for j in range(n):
                dst[j] = (wa * a[j] + wb * b[j]) + wc * c[j]
        else:
            for j in range(n):
                dst[j] += (wa * a[j] + wb * b[j]) + wc * c[j]
    elif first:
        for j in range(n):
            dst[j] = ((wa * a[j] + wb * b[j]) + wc * c[j]) + wd * d[j]
    else:
        for j in range(n):
            dst[j] += ((wa * a[j] + wb * b[j]) + wc * c[j]) + wd * d[j]


@register("adaptive_avg_pool", "blur_pool", "adaptive_avg_pool_backward", "blur_pool_backward")
@njit(parallel=True, cache=True)
def taps_sum_rows(x, out, C, pos_d, w_d, pos_h, w_h, pos_wt, w_wt, blocks, acc):
    """`taps_sum` in two passes over whole rows: for windows that overlap down the plane (blur)
    and for channels-last data.

    The tables are separable, so each output row first sums the input rows its D and H taps
    read, weighted, into a row buffer ``col`` (`_rows_sum`: contiguous W*C values, four rows
    per pass, which vectorises; a tap of weight 0 is skipped), then filters that one row along
    W: ``pos_wt`` and ``w_wt`` are the W table transposed, (taps, OW), and a tap of weight 0
    reads position W, a zero cell past the row's end, so the W pass has no test and adds
    exactly 0 there (never 0 x inf). Each input row is read once per output row that uses it,
    and output rows are subsampled before any W filtering. Sums run in ``acc``'s dtype
    (`avgpool._cpu_taps.sum_dtype`) in a fixed order per output. Output rows are split into at
    most ``blocks`` runs, each allocating its buffers once. With one channel, the outputs whose
    W taps repeat a step along the row (`_regular_span`) take them with no gather
    (`_span_sum`).
    """
    n_outer, D, H, WC = x.shape
    OD, OH, OW = pos_d.shape[0], pos_h.shape[0], pos_wt.shape[1]
    KD, KH, KW = pos_d.shape[1], pos_h.shape[1], pos_wt.shape[0]
    lo, hi, step = _regular_span(pos_wt, w_wt) if C == 1 else (0, 0, 0)
    off = np.empty(KW, np.int64)
    wk = np.empty(KW, w_wt.dtype)
    for k in range(KW):
        off[k] = pos_wt[k, lo] - step * lo
        wk[k] = w_wt[k, lo]
    X3 = x.reshape(n_outer, D * H, WC)
    O3 = out.reshape(n_outer, OD * OH, OW * C)
    items = n_outer * OD * OH
    runs, per = split_runs(items, blocks)
    for block in prange(runs):
        col_, acc_ = np.zeros(WC + C, acc.dtype), np.empty(OW * C, acc.dtype)
        ridx_, rw_ = np.empty(KD * KH, np.int64), np.empty(KD * KH)
        even_, odd_ = np.empty((WC + C) // 2, acc.dtype), np.empty((WC + C) // 2, acc.dtype)
        # views with no reference count (`_nrt`): a row view per tap costs no atomic update
        col, accu, xu, ou = unowned(col_), unowned(acc_), unowned(X3), unowned(O3)
        ridx, rw, pwu, wwu = unowned(ridx_), unowned(rw_), unowned(pos_wt), unowned(w_wt)
        even, odd = unowned(even_), unowned(odd_)
        colw = col[:WC]
        start, stop = block * per, min(items, (block + 1) * per)
        o, r = start // (OD * OH), start % (OD * OH)
        for _ in range(start, stop):
            od, oh = r // OH, r % OH
            n = 0
            for jd in range(KD):
                for jh in range(KH):
                    f = w_d[od, jd] * w_h[oh, jh]
                    if f != 0.0:
                        ridx[n], rw[n] = pos_d[od, jd] * H + pos_h[oh, jh], f
                        n += 1
            _rows_sum(xu[o], ridx, rw, n, colw)
            orow = ou[o, r]
            if C == 1 and hi > lo:
                _gather_sum(col, pwu[:, :lo], wwu[:, :lo], KW, accu[:lo])
                _span_sum(col, even, odd, off, wk, KW, accu, lo, hi, step)
                _gather_sum(col, pwu[:, hi:], wwu[:, hi:], KW, accu[hi:])
            elif C == 1:
                _gather_sum(col, pwu, wwu, KW, accu)
            else:
                for ow in range(OW):
                    _channels_sum(col, pwu, wwu, KW, ow, C, accu[ow * C : ow * C + C])
            for i in range(OW * C):
                orow[i] = accu[i]
            r += 1
            if r == OD * OH:
                o, r = o + 1, 0
        keep_alive(col_)
        keep_alive(acc_)
        keep_alive(ridx_)
        keep_alive(rw_)
        keep_alive(even_)
        keep_alive(odd_)


@register("adaptive_avg_pool", "blur_pool", "adaptive_avg_pool_backward", "blur_pool_backward")
@njit(parallel=True, cache=True)
def taps_sum_planes(x, out, lanes, pos_d, w_d, pos_h, w_h, pos_wt, w_wt, blocks, acc):
    """`taps_sum_rows` for small channels-first planes, vectorised across planes: a block of
    ``lanes`` planes is transposed into a scratch array ``T`` (D*H, W*lanes) in ``acc``'s dtype,
    so that each input row holds ``lanes`` interleaved planes, as channels-last data with
    ``lanes`` channels; `taps_sum_rows`' two passes then run over rows of W*lanes values, and the
    output rows (OW*lanes) are transposed back. On rows of 7-28 cells the per-row passes of
    `taps_sum_rows` are too short to vectorise; here every loop is ``lanes`` long or longer.
    Sums and their order per output are `taps_sum_rows`'; lanes past the last plane read 0.
    The transposes go 8 planes by 8 cells at a time (`_to_lanes`, `_from_lanes`).
    Blocks of planes are split into at most ``blocks`` runs, each allocating its scratch once.
    """
    n, D, H, W = x.shape
    OD, OH, OW = pos_d.shape[0], pos_h.shape[0], pos_wt.shape[1]
    KD, KH, KW = pos_d.shape[1], pos_h.shape[1], pos_wt.shape[0]
    L = lanes
    xflat, oflat = x.reshape(-1), out.reshape(-1)
    groups = -(-n // L)
    runs, per = split_runs(groups, blocks)
    for block in prange(runs):
        T_, col_ = np.empty((D * H, W * L), acc.dtype), np.zeros((W + 1) * L, acc.dtype)
        Ob_ = np.empty((OD * OH, OW * L), acc.dtype)
        ridx_, rw_ = np.empty(KD * KH, np.int64), np.empty(KD * KH)
        T, col, Ob, xf, of = unowned(T_), unowned(col_), unowned(Ob_), unowned(xflat), unowned(oflat)
        ridx, rw, pwu, wwu = unowned(ridx_), unowned(rw_), unowned(pos_wt), unowned(w_wt)
        colw = col[: W * L]
        for g in range(block * per, min(groups, (block + 1) * per)):
            p0 = g * L
            m = min(L, n - p0)
            _to_lanes(xf, p0, m, D * H * W, T.reshape(-1), L)
            for od in range(OD):
                for oh in range(OH):
                    k = 0
                    for jd in range(KD):
                        for jh in range(KH):
                            f = w_d[od, jd] * w_h[oh, jh]
                            if f != 0.0:
                                ridx[k], rw[k] = pos_d[od, jd] * H + pos_h[oh, jh], f
                                k += 1
                    _rows_sum(T, ridx, rw, k, colw)
                    orow = Ob[od * OH + oh]
                    for ow in range(OW):
                        _channels_sum(col, pwu, wwu, KW, ow, L, orow[ow * L : ow * L + L])
            _from_lanes(Ob.reshape(-1), OD * OH * OW, L, of, p0, m)
        keep_alive(T_)
        keep_alive(col_)
        keep_alive(Ob_)
        keep_alive(ridx_)
        keep_alive(rw_)


@njit(cache=True, inline="always")
def _to_lanes(xf, p0, m, Q, Tf, L):
    """``T[q, i] = x[p0 + i, q]`` for the ``m`` planes from ``p0``, with ``xf`` the planes of
    ``Q`` cells and ``Tf`` the scratch ``(Q, L)``, both flat; 0 in the lanes past them. Eight
    planes by eight cells at a time, in registers (`_lanes.transpose8`): a cell-by-cell loop
    over the planes, reading one cell of each plane a step, ran at half the speed of a loop
    over 8x8 tiles, and that loop at a third of the registers' speed."""
    m8, q8 = m // 8 * 8, Q // 8 * 8
    for i0 in range(0, m8, 8):
        for q0 in range(0, q8, 8):
            transpose8(Tf, q0 * L + i0, L, xf, (p0 + i0) * Q + q0, Q)
        for q in range(q8, Q):
            for a in range(8):
                Tf[q * L + i0 + a] = xf[(p0 + i0 + a) * Q + q]
    if m8 < L:
        for q in range(Q):
            trow = Tf[q * L : q * L + L]
            for i in range(m8, m):
                trow[i] = xf[(p0 + i) * Q + q]
            for i in range(m, L):
                trow[i] = 0.0


@njit(cache=True, inline="always")
def _from_lanes(Of, Q, L, outf, p0, m):
    """``out[p0 + i, q] = O[q, i]`` for the first ``m`` lanes, ``Of`` (Q, L) and ``outf`` the
    planes of ``Q`` cells, both flat: `_to_lanes` backwards."""
    m8, q8 = m // 8 * 8, Q // 8 * 8
    for i0 in range(0, m8, 8):
        for q0 in range(0, q8, 8):
            transpose8(outf, (p0 + i0) * Q + q0, Q, Of, q0 * L + i0, L)
        for q in range(q8, Q):
            for a in range(8):
                outf[(p0 + i0 + a) * Q + q] = Of[q * L + i0 + a]
    for i in range(m8, m):
        dst = outf[(p0 + i) * Q : (p0 + i) * Q + Q]
        for q in range(Q):
            dst[q] = Of[q * L + i]


@register("adaptive_max_pool", "adaptive_max_pool_backward")
@njit(parallel=True, cache=True)
def taps_max(x, out, index, C, pos_d, real_d, pos_h, real_h, pos_w, real_w, lowest):
    """Max over the real taps and its flat spatial index, scanned in row-major tap order.

    Tie rules as `cpu_max.max_forward`: first maximum wins, the last NaN wins, the first real
    cell starts the scan; no real cell gives ``lowest`` and -1.
    """
    n_outer, H, WC = x.shape[0], x.shape[2], x.shape[3]
    W = WC // C
    OD, OH, OW = pos_d.shape[0], pos_h.shape[0], pos_w.shape[0]
    for item in prange(n_outer * OD * OH):
        o = item // (OD * OH)
        od = (item // OH) % OD
        oh = item % OH
        orow = out[o, od, oh]
        irow = index[o, od, oh]
        for ow in range(OW):
            for c in range(C):
                best = lowest
                bi = -1
                for jd in range(pos_d.shape[1]):
                    if not real_d[od, jd]:
                        continue
                    for jh in range(pos_h.shape[1]):
                        if not real_h[oh, jh]:
                            continue
                        idp, ih = pos_d[od, jd], pos_h[oh, jh]
                        row = x[o, idp, ih]
                        for jw in range(pos_w.shape[1]):
                            if not real_w[ow, jw]:
                                continue
                            v = row[pos_w[ow, jw] * C + c]
                            if bi == -1 or v > best or v != v:
                                best = v
                                bi = (idp * H + ih) * W + pos_w[ow, jw]
                orow[ow * C + c] = best
                irow[ow * C + c] = bi


def unit_table() -> tuple[np.ndarray, np.ndarray]:
    """The 1x1 table of an absent axis: tap 0 with weight 1."""
    return np.zeros((1, 1), dtype=np.int64), np.ones((1, 1), dtype=np.float64)
