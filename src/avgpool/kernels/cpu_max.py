"""Numba kernels for window maxima (with arg-max indices) and their backward scatter.

Arrays are 4-D views ``(outer, D, H, W*C)`` as in `_common`. The taps are scanned in row-major
(depth, row, column) order for every output at once, channels innermost: the first maximum
wins, a NaN always wins (so the last NaN), and the first real cell starts the scan (a window
of -inf points at its first real cell; a window with no real cell gives ``lowest`` and index
-1): PyTorch's tie rules. With indices, each window costs kernel_d x kernel_h x kernel_w
comparisons; work items are output rows, so any thread count gives the same bits. Without
indices no tie rule is needed and the reduction is separable: rows, then columns
(`max_values`), and for large windows `max_values_large`, whose cost per output does not grow
with the window height (van Herk / Gil-Werman) and grows as log2 of its width. Channels-first
planes have kernels of their own in `plane_max`, with the same rules.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from avgpool.kernels._common import split_runs, width_taps
from avgpool.kernels._nrt import unowned
from avgpool.kernels.registry import register


@register("max_pool", "max_pool_backward")
@njit(parallel=True, cache=True)
def max_forward(x, out, index, C, geo, omit_nan, floor, lowest, at_like):
    """out/index (outer, OD, OH, OW*C): window max and its flat spatial index (d*H + h)*W + w.

    ``omit_nan``: NaN never wins and results are at least ``floor`` (TensorFlow's rule).
    Channels-last, an output row's indices are kept in a row of ``at_like``'s dtype while its
    taps are scanned, then widened into ``index``: int32 where the spatial size allows (the
    driver's choice) takes half the vector steps of int64. A window's first real tap is copied
    rather than compared, so its later taps need no test for "nothing yet".
    """
    n_outer, D, H, WC = x.shape
    W = WC // C
    OD, OH, OWC = out.shape[1], out.shape[2], out.shape[3]
    OW = OWC // C
    kd, sd, dd, pd = geo[0, 0], geo[0, 1], geo[0, 2], geo[0, 3]
    kh, sh, dh, ph = geo[1, 0], geo[1, 1], geo[1, 2], geo[1, 3]
    kw, sw, dw, pw = geo[2, 0], geo[2, 1], geo[2, 2], geo[2, 3]
    at_type = at_like.dtype.type
    for item in prange(n_outer * OD * OH):
        o = item // (OD * OH)
        od = (item // OH) % OD
        oh = item % OH
        best = unowned(out)[o, od, oh]
        bidx = unowned(index)[o, od, oh]
        if C == 1:
            _max_row_scalar(x, best, bidx, o, od, oh, geo, omit_nan, floor, lowest)
            continue
        ats_ = np.empty(OWC, dtype=at_like.dtype)
        ats = unowned(ats_)
        best[:] = lowest  # windows with no real cell keep these
        ats[:] = -1
        first = True  # the first real row of the output row's windows (the same for each)
        for jd in range(kd):
            idp = od * sd - pd + jd * dd
            if idp < 0 or idp >= D:
                continue
            for jh in range(kh):
                ih = oh * sh - ph + jh * dh
                if ih < 0 or ih >= H:
                    continue
                row = unowned(x)[o, idp, ih]
                base = (idp * H + ih) * W
                for ow in range(OW):
                    bs, bi = best[ow * C : ow * C + C], ats[ow * C : ow * C + C]
                    fresh = first
                    for jw in range(kw):
                        iw = ow * sw - pw + jw * dw
                        if iw < 0 or iw >= W:
                            continue
                        # a C-vector of copies (the window's first real tap) or of selects
                        # (no branch per channel): the loops vectorise
                        src, at = row[iw * C : iw * C + C], at_type(base + iw)
                        if fresh:
                            fresh = False
                            for c in range(C):
                                v = src[c]
                                if omit_nan:
                                    v = lowest if v != v else v
                                bs[c] = v
                                bi[c] = at
                            continue
                        for c in range(C):
                            v = src[c]
                            if omit_nan:
                                v = lowest if v != v else v
                            b = bs[c]
                            take = (v > b) | (v != v)
                            bs[c] = v if take else b
                            bi[c] = at if take else bi[c]
                first = False
        for j in range(OWC):
            bidx[j] = ats[j]
            if omit_nan and best[j] < floor:
                best[j] = floor


@njit(cache=True)
def _max_row_scalar(x, best, bidx, o, od, oh, geo, omit_nan, floor, lowest):
    """One output row of one channel: each window scanned with its running max in registers."""
    D, H, W = x.shape[1], x.shape[2], x.shape[3]
    kd, sd, dd, pd = geo[0, 0], geo[0, 1], geo[0, 2], geo[0, 3]
    kh, sh, dh, ph = geo[1, 0], geo[1, 1], geo[1, 2], geo[1, 3]
    kw, sw, dw, pw = geo[2, 0], geo[2, 1], geo[2, 2], geo[2, 3]
    for ow in range(best.shape[0]):
        b = lowest
        bi = -1
        for jd in range(kd):
            idp = od * sd - pd + jd * dd
            if idp < 0 or idp >= D:
                continue
            for jh in range(kh):
                ih = oh * sh - ph + jh * dh
                if ih < 0 or ih >= H:
                    continue
                row = x[o, idp, ih]
                base = (idp * H + ih) * W
                for jw in range(kw):
                    iw = ow * sw - pw + jw * dw
                    if iw < 0 or iw >= W:
                        continue
                    v = row[iw]
                    if omit_nan and v != v:
                        v = lowest
                    if bi == -1 or v > b or v != v:
                        b = v
                        bi = base + iw
        if omit_nan and b < floor:
            b = floor
        best[ow] = b
        bidx[ow] = bi


@njit(cache=True)
def _scatter(row, g, index, C):
    """row (S*C) = 0, then += each output's g at its arg-max; outputs in order, -1 sends nothing."""
    row[:] = 0.0
    for jo in range(g.shape[0] // C):
        at = jo * C
        for c in range(C):
            i = index[at + c]
            if i >= 0:
                row[i * C + c] += g[at + c]


@register("max_pool_backward", "adaptive_max_pool_backward", "global_max_pool_backward")
@njit(parallel=True, cache=True)
def max_backward(g, index, grad, C, acc_like, blocks):
    """grad (outer, S*C) gets each output's g at its arg-max (S = spatial size); -1 sends nothing.

    Sums in ``acc_like``'s dtype: the result's own (when few windows share a cell, see
    `_cpu_max_drivers.scatter_to_index`), or float64 in a buffer per run of items, rounded once
    into the row. Each item is scanned in order: deterministic for any thread
    count. Items are split into at most ``blocks`` runs, each allocating its buffer once.
    """
    n_outer, SC = grad.shape[0], grad.shape[1]
    runs, per = split_runs(n_outer, blocks)
    direct = acc_like.dtype == grad.dtype
    for block in prange(runs):
        acc = np.empty(0 if direct else SC, dtype=acc_like.dtype)
        for o in range(block * per, min(n_outer, (block + 1) * per)):
            if direct:
                _scatter(grad[o], g[o], index[o], C)
            else:
                _scatter(acc, g[o], index[o], C)
                row = grad[o]
                for i in range(SC):
                    row[i] = acc[i]


@register("max_pool_backward", "global_max_pool_backward")
@njit(parallel=True, cache=True)
def max_backward_disjoint(g, index, grad, cells, lonely, C):
    """grad (outer, S*C), channels-last, for windows that share no input cell: each cell of a
    window gets the window's g where its arg-max is that cell, else 0; the cells no window
    reads get 0 (``cells``, ``lonely``: `_cpu_plans.disjoint_windows`).

    Every cell is written once, a C-vector at a time, with no zeroing pass and no scatter;
    the bits of `max_backward`'s (0.0 + g: a gradient of -0.0 arrives as 0.0). Returns how
    many windows have an arg-max index (other than -1) that names no cell of theirs: such a
    gradient was not sent (nor was any index outside the plane read or written through), so a
    caller with such indices must check them and scatter instead. Parallel over (outer, window).
    """
    n_outer, windows, taps = g.shape[0], cells.shape[0], cells.shape[1]
    zero = grad.dtype.type(0.0)
    stray = 0
    for item in prange(n_outer * windows):
        o, j = item // windows, item % windows
        gu, iu = unowned(g)[o, j * C : j * C + C], unowned(index)[o, j * C : j * C + C]
        row = unowned(grad)[o]
        # the window's cells are distinct, so each index names at most one: every index but
        # -1 names one of them when the hits are as many as those indices
        hits = 0
        for t in range(taps):
            s = cells[j, t]
            if s < 0:
                continue
            cell = row[s * C : s * C + C]
            for c in range(C):
                hit = iu[c] == s
                cell[c] = (zero + gu[c]) if hit else zero
                hits += hit
        for c in range(C):
            hits -= iu[c] != -1
        stray += hits != 0
        if j == 0:
            for s in lonely:
                row[s * C : s * C + C] = zero
    return stray


@register("max_pool_backward")
@njit(parallel=True, cache=True)
def max_backward_windows(g, index, grad, cells, C):
    """grad (outer, S*C), channels-last, for windows that may share input cells: zeroed, then
    each window in turn adds its g to the cells its arg-max indices name, a C-vector per tap
    and no scatter: at each of its cells (``cells``: `_cpu_plans.window_cells`) the channels
    whose index is that cell add g and the others add 0.0, which changes no sum (a sum that
    starts at 0.0 is never -0.0). Windows in order, sums in grad's dtype: `max_backward`'s
    bits when it sums in grad's dtype. A window costs its taps in vector steps rather than one
    scattered add per channel, so the driver sends only windows of few taps. Returns, as
    `max_backward_disjoint`, how many windows have an index (other than -1) that names no
    cell of theirs: the caller then scatters. Parallel over outer.
    """
    n_outer, windows, taps = g.shape[0], cells.shape[0], cells.shape[1]
    zero = grad.dtype.type(0.0)
    stray = 0
    for o in prange(n_outer):
        row = unowned(grad)[o]
        row[:] = zero
        missed = 0
        for j in range(windows):
            gu, iu = unowned(g)[o, j * C : j * C + C], unowned(index)[o, j * C : j * C + C]
            hits = 0
            for t in range(taps):
                s = cells[j, t]
                if s < 0:
                    continue
                cell = row[s * C : s * C + C]
                for c in range(C):
                    hit = iu[c] == s
                    cell[c] += gu[c] if hit else zero
                    hits += hit
            for c in range(C):
                hits -= iu[c] != -1
            missed += hits != 0
        stray += missed
    return stray


@register("global_max_pool", "global_max_pool_backward", "max_pool", "max_pool_backward")
@njit(parallel=True, cache=True)
def global_max(x, out, index, omit_nan, floor, lowest):
    """out/index (outer, C): max over S of x (outer, S, C) with the tie rules of max_forward."""
    n_outer, S, C = x.shape
    for o in prange(n_outer):
        for c in range(C):
            best = lowest
            bi = -1
            for s in range(S):
                v = x[o, s, c]
                if omit_nan and v != v:
                    v = lowest
                if bi == -1 or v > best or v != v:
                    best = v
                    bi = s
            if omit_nan and best < floor:
                best = floor
            out[o, c] = best
            index[o, c] = bi


@njit(cache=True, inline="always")
def _bigger(a, b):
    """max(a, b) where a NaN wins (the propagating rule; NaN is replaced before under omit)."""
    return b if (b > a) | (b != b) else a


@register("max_pool")
@njit(parallel=True, cache=True)
def max_values(x, out, C, geo, omit_nan, floor, lowest):
    """`max_forward` without the arg-max, for channels-last data (C > 1): values only.

    Work items are output rows. Each output cell's C maxima take its window's taps in (depth,
    height, width) order, read straight from the input a C-vector at a time (the way
    `box_rows.avg_direct` sums). The driver sends windows that read each input cell fewer than
    `_cpu_max_drivers.LARGE_MAX_READS` times here, so the taps per output stay few, and reading them in
    place beats a row buffer of the window rows' maxima. NaN propagates (or, with
    ``omit_nan``, never wins and results are at least ``floor``); a window with no real cell
    gives ``lowest``.
    """
    n_outer, D, H, WC = x.shape
    W = WC // C
    OD, OH, OW = out.shape[1], out.shape[2], out.shape[3] // C
    kd, sd, dd, pd = geo[0, 0], geo[0, 1], geo[0, 2], geo[0, 3]
    kh, sh, dh, ph = geo[1, 0], geo[1, 1], geo[1, 2], geo[1, 3]
    kw, sw, dw, pw = geo[2, 0], geo[2, 1], geo[2, 2], geo[2, 3]
    jw_lo, jw_hi = width_taps(W, OW, kw, sw, dw, pw)
    square = kd == 1 and kh == kw and (kh == 2 or kh == 3) and dh == 1 and dw == 1 and not omit_nan
    square = square and (C * x.itemsize < BLOCK_RUN_BYTES or x.size * x.itemsize <= BLOCK_INPUT_BYTES)
    for item in prange(n_outer * OD * OH):
        o = item // (OD * OH)
        od = (item // OH) % OD
        oh = item % OH
        xu = unowned(x)  # views with no reference count (`_nrt`): no atomic per row view
        orow = unowned(out)[o, od, oh]
        ih0 = oh * sh - ph
        # a 2x2 or 3x3 window one deep whose taps all lie in the input takes its taps in one
        # loop over the channels, in the same order (`_block_max`)
        whole = square and 0 <= od * sd - pd < D and 0 <= ih0 and ih0 + kh <= H
        for ow in range(OW):
            best = orow[ow * C : ow * C + C]
            start, jw0, jw1 = ow * sw - pw, jw_lo[ow], jw_hi[ow]
            if whole and jw1 - jw0 == kw:
                _block_max(xu[o, od * sd - pd], ih0, (start + jw0) * C, C, kh, best)
                continue
            first = True  # the first tap sets the maxima
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
                            if omit_nan:
                                for c in range(C):
                                    v = src[c]
                                    best[c] = lowest if v != v else v
                            else:
                                for c in range(C):
                                    best[c] = src[c]
                            first = False
                        elif omit_nan:
                            for c in range(C):
                                v = src[c]
                                best[c] = _bigger(best[c], lowest if v != v else v)
                        else:
                            for c in range(C):
                                best[c] = _bigger(best[c], src[c])
            if first:  # no real cell in the window
                best[:] = lowest
            if omit_nan:
                for c in range(C):
                    best[c] = floor if best[c] < floor else best[c]


#: `max_values` takes a whole 2x2 or 3x3 window in one loop over the channels (`_block_max`)
#: where its channel runs are shorter than this many bytes or the input is at most
#: `BLOCK_INPUT_BYTES`; long runs of a larger input (read from memory) take a pass per tap,
#: which measured up to 35% faster there, two threads, batch 32: 2x2/2 on (28, 28, 512)
#: 1774 µs a pass per tap, 2484 one loop; 3x3/2 on (35, 35, 288) 2224 and 2368; but on (17,
#: 17, 1024) 1675 and 1424, and on (112, 112, 64) 5836 and 4079. At batch 1 one loop won on
#: every shape measured (20.0 -> 16.7 µs on (28, 28, 512), 109 -> 99 on (71, 71, 192)).
BLOCK_RUN_BYTES = 512
BLOCK_INPUT_BYTES = 8 << 20


@njit(cache=True, inline="always")
def _block_max(plane, ih0, a, C, k, best):
    """``best`` = the maxima of a k x k block of taps (k 2 or 3) of ``plane`` (H, W*C) from row
    ``ih0``, element ``a``, by `_bigger` in row-major order: one loop over the channels."""
    r0, r1 = plane[ih0], plane[ih0 + 1]
    p0, p1, q0, q1 = r0[a : a + C], r0[a + C : a + 2 * C], r1[a : a + C], r1[a + C : a + 2 * C]
    if k == 2:
        for c in range(C):
            best[c] = _bigger(_bigger(_bigger(p0[c], p1[c]), q0[c]), q1[c])
        return
    r2, b = plane[ih0 + 2], a + 2 * C
    p2, q2 = r0[b : b + C], r1[b : b + C]
    u0, u1, u2 = r2[a : a + C], r2[a + C : a + 2 * C], r2[b : b + C]
    for c in range(C):
        v = _bigger(_bigger(_bigger(p0[c], p1[c]), p2[c]), q0[c])
        v = _bigger(_bigger(_bigger(v, q1[c]), q2[c]), u0[c])
        best[c] = _bigger(_bigger(v, u1[c]), u2[c])


@njit(cache=True)
def _depth_row(x, o, od, r, dst, geo, omit_nan, lowest):
    """dst = input row r reduced over output depth od's depth taps; ``lowest`` for a row outside
    the input or without a depth tap inside it; NaN is ``lowest`` under omit."""
    D, H, n = x.shape[1], x.shape[2], dst.shape[0]
    kd, sd, dd, pd = geo[0, 0], geo[0, 1], geo[0, 2], geo[0, 3]
    first = True
    if 0 <= r < H:
        for jd in range(kd):
            idp = od * sd - pd + jd * dd
            if idp < 0 or idp >= D:
                continue
            row = x[o, idp, r]
            if first:
                for i in range(n):
                    v = row[i]
                    dst[i] = lowest if omit_nan and v != v else v
            else:
                for i in range(n):
                    v = row[i]
                    dst[i] = _bigger(dst[i], lowest if omit_nan and v != v else v)
            first = False
    if first:
        for i in range(n):
            dst[i] = lowest


@register("max_pool")
@njit(parallel=True, cache=True)
def max_values_large(x, out, C, geo, omit_nan, floor, lowest, blocks):
    """Max pooling values over large windows (no dilation along H and W), either layout:
    the cost per output does not grow with the window height and grows as log2 of its width.

    Along H, van Herk / Gil-Werman: the padded rows fall into blocks of ``kh``; the window that
    starts at row j of block m is the max of block m's rows j.. (suffix maxima ``S``, made
    when the block is entered) and block m + 1's first j rows (``G``, grown one row at a time),
    so each input row costs two row sweeps and each output row one, vectorised across W*C.
    Along W, spans of 1, 2, 4, ... cells are built in sweeps (vectorised), and each output is
    the max of two overlapping spans of the largest power of two in its width. A max needs no
    tie rule, so the order does not change the value. NaN propagates (with ``omit_nan`` it
    never wins and results are at least ``floor``); a window with no real cell is ``lowest``.
    Depth taps are reduced into each row as it is read. Parallel over (outer, output depth,
    band of output rows): when there are fewer (outer, depth) items than ``blocks``, the
    output rows are split into up to ``blocks`` bands (each at least ``4 * kh`` input rows
    tall), and a band starts its first block afresh, so a single image still uses every thread.
    Shifted operands are slices, not offsets inside an index (Numba tests a signed index for
    wraparound on every element, and such loops do not vectorise).
    """
    n_outer, WC = x.shape[0], x.shape[3]
    W = WC // C
    OD, OH, OWC = out.shape[1], out.shape[2], out.shape[3]
    OW = OWC // C
    kh, sh, ph = geo[1, 0], geo[1, 1], geo[1, 3]
    kw, sw, pw = geo[2, 0], geo[2, 1], geo[2, 3]
    width = max(pw + W, (OW - 1) * sw + kw) * C
    levels, span = 1, 1  # spans[lvl] holds spans of 2 ** (lvl + 1) cells
    while 4 * span <= kw:
        levels += 1
        span *= 2
    items = n_outer * OD
    bands = 1
    if 0 < items < blocks:
        bands = max(1, min(-(-blocks // items), (OH * sh) // (4 * kh)))
    bands, per = split_runs(OH, bands)
    for item in prange(items * bands):
        o, od, band = item // (OD * bands), (item // bands) % OD, item % bands
        S = np.empty((kh, WC), dtype=x.dtype)
        G = np.empty(WC, dtype=x.dtype)
        row = np.empty(WC, dtype=x.dtype)
        Rp = np.full(width, lowest, dtype=x.dtype)
        spans = np.empty((levels, width), dtype=x.dtype)
        R = Rp[pw * C : pw * C + WC]
        block, grown = -1, 0
        for oh in range(band * per, min(OH, (band + 1) * per)):
            p = oh * sh  # the window's first row in padded rows (input row p - ph)
            m, j = p // kh, p % kh
            if m != block:  # block m's suffix maxima
                base = m * kh - ph
                _depth_row(x, o, od, base + kh - 1, S[kh - 1], geo, omit_nan, lowest)
                for jj in range(kh - 2, -1, -1):
                    _depth_row(x, o, od, base + jj, row, geo, omit_nan, lowest)
                    dst, nxt = S[jj], S[jj + 1]
                    for i in range(WC):
                        dst[i] = _bigger(nxt[i], row[i])
                block, grown = m, 0
            suffix = S[j]
            if j == 0:
                for i in range(WC):
                    R[i] = suffix[i]
            else:
                if grown == 0:
                    _depth_row(x, o, od, (m + 1) * kh - ph, G, geo, omit_nan, lowest)
                    grown = 1
                while grown < j:  # G = the max of block m + 1's first j rows
                    _depth_row(x, o, od, (m + 1) * kh - ph + grown, row, geo, omit_nan, lowest)
                    for i in range(WC):
                        G[i] = _bigger(G[i], row[i])
                    grown += 1
                for i in range(WC):
                    R[i] = _bigger(suffix[i], G[i])
            best = out[o, od, oh]
            if kw == 1:
                top, span = Rp, 1
            else:
                top, ahead = spans[0], Rp[C:]
                for i in range(width - C):
                    top[i] = _bigger(Rp[i], ahead[i])
                span = 2
                for lvl in range(1, levels):
                    src, top = spans[lvl - 1], spans[lvl]
                    ahead = src[span * C :]
                    for i in range(width - (2 * span - 1) * C):
                        top[i] = _bigger(src[i], ahead[i])
                    span *= 2
            ahead = top[(kw - span) * C :]
            if sw == 1:
                for i in range(OWC):
                    best[i] = _bigger(top[i], ahead[i])
            else:
                for ow in range(OW):
                    a = ow * sw * C
                    for c in range(C):
                        best[ow * C + c] = _bigger(top[a + c], ahead[a + c])
            if omit_nan:
                for i in range(OWC):
                    best[i] = floor if best[i] < floor else best[i]
