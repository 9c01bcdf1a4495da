"""Numba kernels over separable tap tables: adaptive pooling and anti-aliased (blur) pooling.

The tables are those of `avgpool.reference` (per axis, for output ``o`` and tap ``j``: the
input index ``pos[o, j]`` and a weight ``weight[o, j]``, 0 where the tap reads nothing), so the
fast path and the oracle share the geometry and differ only in how they loop. Arrays are 4-D
views ``(outer, D, H, W*C)`` as in `_common`; absent axes have a 1x1 table (pos 0, weight 1).

Windows here are short (adaptive windows span about n/out cells, blur filters at most 7), so
each output reads its taps directly: the cost per output is the window's size, and every
input cell is read about once per window that covers it.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from avgpool.kernels._common import split_runs
from avgpool.kernels._nrt import keep_alive, unowned
from avgpool.kernels.registry import register


@register("adaptive_avg_pool", "blur_pool")
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


@register("adaptive_avg_pool", "blur_pool")
@njit(parallel=True, cache=True)
def taps_sum_rows(x, out, C, pos_d, w_d, pos_h, w_h, pos_wt, w_wt, blocks):
    """`taps_sum` in two passes, for windows that overlap down the plane (blur) or channels-last.

    The tables are separable, so each input row an output reads is filtered along W once per
    (outer, output depth) item, into a float64 row buffer: ``pos_wt`` and ``w_wt`` are the W
    table transposed, (taps, OW), so one tap's positions and weights are contiguous and the
    loop over the outputs (and channels) vectorises. Then each output row is the weighted sum
    of its buffered rows, a whole row at a time. A zero weight adds exactly 0 (never 0 x inf):
    the taps that read padding hold weight 0. Items are split into at most ``blocks`` runs,
    each allocating its buffers once.
    """
    n_outer, H = x.shape[0], x.shape[2]
    OD, OH, OW = pos_d.shape[0], pos_h.shape[0], pos_wt.shape[1]
    KD, KH, KW = pos_d.shape[1], pos_h.shape[1], pos_wt.shape[0]
    width = OW * C
    items = n_outer * OD
    runs, per = split_runs(items, blocks)
    for block in prange(runs):
        rows_, used, acc_ = np.empty((H, width)), np.empty(H, np.bool_), np.empty(width)
        # views with no reference count (`_nrt`): a row or channel-vector view per tap costs
        # no atomic update
        rows, acc, xu, ou = unowned(rows_), unowned(acc_), unowned(x), unowned(out)
        pwu, wwu = unowned(pos_wt), unowned(w_wt)
        for item in range(block * per, min(items, (block + 1) * per)):
            o, od = item // OD, item % OD
            used[:] = False
            for oh in range(OH):
                for jh in range(KH):
                    if w_h[oh, jh] != 0.0:
                        used[pos_h[oh, jh]] = True
            for h in range(H):
                if not used[h]:
                    continue
                r = rows[h]
                r[:] = 0.0
                for jd in range(KD):
                    fd = w_d[od, jd]
                    if fd == 0.0:
                        continue
                    xrow = xu[o, pos_d[od, jd], h]
                    for jw in range(KW):
                        pos, wt = pwu[jw], wwu[jw]
                        if C == 1:
                            for ow in range(OW):
                                f = fd * wt[ow]
                                r[ow] += f * xrow[pos[ow]] if f != 0.0 else 0.0
                        else:
                            for ow in range(OW):
                                f = fd * wt[ow]
                                if f != 0.0:
                                    src = xrow[pos[ow] * C : pos[ow] * C + C]
                                    dst = r[ow * C : ow * C + C]
                                    for c in range(C):
                                        dst[c] += f * src[c]
            for oh in range(OH):
                acc[:] = 0.0
                for jh in range(KH):
                    f = w_h[oh, jh]
                    if f != 0.0:
                        r = rows[pos_h[oh, jh]]
                        for i in range(width):
                            acc[i] += f * r[i]
                orow = ou[o, od, oh]
                for i in range(width):
                    orow[i] = acc[i]
        keep_alive(rows_)
        keep_alive(acc_)


@register("adaptive_avg_pool_backward", "blur_pool_backward")
@njit(parallel=True, cache=True)
def taps_scatter(g, grad, C, pos_d, w_d, pos_h, w_h, pos_w, w_w):
    """The transpose of `taps_sum`: grad (outer, D, H, W*C) receives g times each tap's weight.

    One work item per outer slice, scanned in order: deterministic for any thread count.
    """
    n_outer = g.shape[0]
    OD, OH, OW = pos_d.shape[0], pos_h.shape[0], pos_w.shape[0]
    for o in prange(n_outer):
        grad[o] = 0.0
        for od in range(OD):
            for oh in range(OH):
                grow = g[o, od, oh]
                for jd in range(pos_d.shape[1]):
                    for jh in range(pos_h.shape[1]):
                        f = w_d[od, jd] * w_h[oh, jh]
                        if f == 0.0:
                            continue
                        target = grad[o, pos_d[od, jd], pos_h[oh, jh]]
                        for ow in range(OW):
                            for jw in range(pos_w.shape[1]):
                                fw = f * w_w[ow, jw]
                                if fw != 0.0:
                                    base = pos_w[ow, jw] * C
                                    for c in range(C):
                                        target[base + c] += fw * grow[ow * C + c]


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
