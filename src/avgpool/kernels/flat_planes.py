"""Pooling of many small channels-first planes as flat runs of cells.

For windows whose shape lets every output be a sum (or max) of shifted copies of the input
taken over a whole block of planes at once, the planes need no transposing (as in
`small_planes`): the loops run over the block's cells end to end, with no step per row or per
plane, and vectorise. `avg_same` and `max_same` serve stride-1 windows whose output has the
input's shape ("same" padding), with masks for the cells a shift moves out of their row or
plane; `avg_tiles` and `max_tiles` serve windows that tile the plane (kernel == stride, no padding,
the plane a whole number of windows: 2x2/2 on even planes), 2x2 windows eight outputs a step
(`_lanes.tiles_sum8`, `tiles_max8`) whatever the row's length. Planes 8 cells wide under a
3x3/1 pad-1 average (Inception's 8x8 blocks) are held a row per vector instead
(`_lanes.same3x3_rows8`).

Arrays are 1-D: the planes' cells ``x`` (planes * H*W) and ``out``, C-contiguous
(`small_planes.run_avg` and `small_planes.run_max` take the 3-D planes and reshape them).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from avgpool.kernels._lanes import LANES, same3x3_rows8, tiles_max8, tiles_sum8
from avgpool.kernels._nrt import keep_alive, unowned
from avgpool.kernels.registry import register


@register("avg_pool")
@njit(parallel=True, cache=True)
def avg_same(x, out, W, kh, ph, kw, pw, masks_h, masks_w, scale, divisor, empty_at, H, empty, acc, runs):
    """Average pooling at stride 1 whose output has the input's shape ("same" padding, the
    3x3/1 pad 1 of Inception), over a block of planes as one flat run of cells.

    Each window sum is a sum of shifted copies of the block: along W, the cells ``j - pw``
    .. ``j - pw + kw - 1`` of the flat block (``S``), then along H the rows ``-ph`` ..
    ``kh - 1 - ph`` of ``S`` (shifts by W cells), scaled; a shifted cell that leaves its row
    (column) or plane is masked to 0 by the tables (``masks_w[j]``, ``masks_h[j]``: 1 where
    tap j of the cell's window is a real cell), so every loop runs over the whole block with
    no per-row or per-plane step and vectorises. The tables are tiled over a block of
    ``masks_w.shape[1] // (H*W)`` planes (`_small_plans.small_same_tables`), so no index is
    taken modulo the plane size.

    A 3x3/1 pad-1 window on planes 8 cells wide, with results in the sums' dtype and no
    empty window, runs `_lanes.same3x3_rows8` a plane at a time instead: the same taps in the
    same order (the same bits), each row read once into a vector and its neighbours taken by
    shifting lanes, with no mask tables (Inception's 8x8 blocks).

    ``x``, ``out``: the planes' cells, 1-D (planes * H*W), C-contiguous; ``H`` the planes'
    height. ``scale``,
    ``divisor``, ``empty_at``: per cell of the block as in `avg_small` (``scale`` cast to
    ``acc``'s dtype as it is read; the tables hold it in that dtype, so no copy per call).
    Blocks at either end of ``x`` read their cells from a guarded copy (no read outside
    ``x``); the guard cells are only ever read by masked taps, so they are never zeroed.
    """
    L = masks_w.shape[1]
    N = x.shape[0]
    blocks = -(-N // L)
    if blocks == 0:
        return
    runs = max(1, min(runs, blocks))
    per = -(-blocks // runs)
    runs = -(-blocks // per)
    gw, gh = max(pw, kw - 1 - pw), W * max(ph, kh - 1 - ph)
    t = acc.dtype.type
    exact = out.itemsize == 8
    any_empty = empty_at.any()
    rows8 = W == LANES and kh == kw == 3 and ph == pw == 1 and not exact and not any_empty
    for run in prange(runs):
        # guard cells are never summed (every tap reading one is masked): no zeroing
        xp_ = np.empty(L + 2 * gw, x.dtype)
        S_ = np.empty(L + 2 * gh, acc.dtype)
        R_ = np.empty(L, acc.dtype)  # sums along H of windows other than 3 high
        xp, S, R = unowned(xp_), unowned(S_), unowned(R_)
        xu, ou, mw, mh = unowned(x), unowned(out), unowned(masks_w), unowned(masks_h)
        for b in range(run * per, min(blocks, (run + 1) * per)):
            j0 = b * L
            m = min(L, N - j0)
            if rows8:  # a row per vector: no masks, no guarded copy (shifts bring in zeros)
                for p in range(j0, j0 + m, H * W):
                    same3x3_rows8(ou, p, xu, p, scale, 0, H)
                continue
            if j0 - gw < 0 or j0 + m + gw > N:  # a block at an end: its cells between guards
                for k in range(m):
                    xp[gw + k] = xu[j0 + k]
                src = xp[gw - pw : gw - pw + m + kw - 1]
            else:
                src = xu[j0 - pw : j0 - pw + m + kw - 1]
            Sm = S[gh : gh + m]
            # along W: src[k + jw] is tap jw of cell k's window
            if kw == 3 and pw == 1:  # the middle tap is the cell itself: never masked
                a, c, e = src[0:m], src[1 : m + 1], src[2 : m + 2]
                m0, m2 = mw[0], mw[2]
                for k in range(m):
                    va, vc, ve = t(a[k]), t(c[k]), t(e[k])
                    Sm[k] = ((va if m0[k] else t(0.0)) + vc) + (ve if m2[k] else t(0.0))
            elif kw == 3:
                a, c, e = src[0:m], src[1 : m + 1], src[2 : m + 2]
                m0, m1, m2 = mw[0], mw[1], mw[2]
                for k in range(m):
                    va, vc, ve = t(a[k]), t(c[k]), t(e[k])
                    Sm[k] = ((va if m0[k] else t(0.0)) + (vc if m1[k] else t(0.0))) + (
                        ve if m2[k] else t(0.0)
                    )
            else:
                _masked_taps(src, 0, 1, kw, mw, Sm, m)
            # along H: S shifted by whole rows, scaled into the output
            o = ou[j0 : j0 + m]
            base = gh - ph * W
            if kh == 3:
                a, c, e = S[base : base + m], S[base + W : base + W + m], S[base + 2 * W : base + 2 * W + m]
                m0, m1, m2 = mh[0], mh[1], mh[2]
                if exact:
                    for k in range(m):
                        va, vc, ve = a[k], c[k], e[k]
                        v = ((va if m0[k] else t(0.0)) + (vc if m1[k] else t(0.0))) + (
                            ve if m2[k] else t(0.0)
                        )
                        o[k] = v / divisor[k]
                elif ph == 1:  # the middle row is the cell's own: never masked
                    for k in range(m):
                        va, vc, ve = a[k], c[k], e[k]
                        v = ((va if m0[k] else t(0.0)) + vc) + (ve if m2[k] else t(0.0))
                        o[k] = v * t(scale[k])
                else:
                    for k in range(m):
                        va, vc, ve = a[k], c[k], e[k]
                        v = ((va if m0[k] else t(0.0)) + (vc if m1[k] else t(0.0))) + (
                            ve if m2[k] else t(0.0)
                        )
                        o[k] = v * t(scale[k])
            else:
                _masked_taps(S, base, W, kh, mh, R, m)
                if exact:
                    for k in range(m):
                        o[k] = R[k] / divisor[k]
                else:
                    for k in range(m):
                        o[k] = R[k] * t(scale[k])
            if any_empty:
                for k in range(m):
                    if empty_at[k]:
                        o[k] = empty
        keep_alive(xp_)
        keep_alive(S_)
        keep_alive(R_)


@njit(cache=True)
def _masked_taps(src, first, step, taps, masks, dst, m):
    """dst[k] = the sum over taps j of src[first + j*step + k] where ``masks[j, k]`` (else 0),
    for k < m, in dst's dtype: two taps per sweep over the block, left to right."""
    t = dst.dtype.type
    zero = t(0.0)
    a, ma = src[first : first + m], masks[0]
    if taps == 1:
        for k in range(m):
            v = t(a[k])
            dst[k] = v if ma[k] else zero
        return
    b, mb = src[first + step : first + step + m], masks[1]
    for k in range(m):
        va, vb = t(a[k]), t(b[k])
        dst[k] = (va if ma[k] else zero) + (vb if mb[k] else zero)
    j = 2
    while j + 1 < taps:
        a, ma = src[first + j * step : first + j * step + m], masks[j]
        b, mb = src[first + (j + 1) * step : first + (j + 1) * step + m], masks[j + 1]
        for k in range(m):
            va, vb = t(a[k]), t(b[k])
            dst[k] += (va if ma[k] else zero) + (vb if mb[k] else zero)
        j += 2
    if j < taps:
        a, ma = src[first + j * step : first + j * step + m], masks[j]
        for k in range(m):
            va = t(a[k])
            dst[k] += va if ma[k] else zero


@register("max_pool")
@njit(parallel=True, cache=True)
def max_same(x, out, W, kh, ph, kw, pw, masks_h, masks_w, omit_nan, floor, lowest, runs):
    """Max pooling values at stride 1 whose output has the input's shape (the 3x3/1 pad 1
    max pools of GoogLeNet), as `avg_same`: the maxima of shifted copies of a block of planes
    along W (``S``), then along H, a shifted cell that leaves its row or plane masked to
    ``lowest``. NaN propagates (or, with ``omit_nan``, never wins and results are at least
    ``floor``). ``masks_h``, ``masks_w``: `_small_plans.small_same_masks`.
    """
    L = masks_w.shape[1]
    N = x.shape[0]
    blocks = -(-N // L)
    if blocks == 0:
        return
    runs = max(1, min(runs, blocks))
    per = -(-blocks // runs)
    runs = -(-blocks // per)
    gw, gh = max(pw, kw - 1 - pw), W * max(ph, kh - 1 - ph)
    for run in prange(runs):
        xp_ = np.zeros(L + 2 * gw, x.dtype)
        S_ = np.zeros(L + 2 * gh, x.dtype)
        xp, S = unowned(xp_), unowned(S_)
        xu, ou, mw, mh = unowned(x), unowned(out), unowned(masks_w), unowned(masks_h)
        for b in range(run * per, min(blocks, (run + 1) * per)):
            j0 = b * L
            m = min(L, N - j0)
            if j0 - gw < 0 or j0 + m + gw > N:  # a block at an end: its cells between guards
                for k in range(m):
                    xp[gw + k] = xu[j0 + k]
                src = xp[gw - pw : gw - pw + m + kw - 1]
            else:
                src = xu[j0 - pw : j0 - pw + m + kw - 1]
            _masked_max(src, 0, 1, kw, mw, S[gh : gh + m], m, omit_nan, lowest)
            o = ou[j0 : j0 + m]
            _masked_max(S, gh - ph * W, W, kh, mh, o, m, False, lowest)
            if omit_nan:
                for k in range(m):
                    o[k] = floor if o[k] < floor else o[k]
        keep_alive(xp_)
        keep_alive(S_)


@njit(cache=True)
def _masked_max(src, first, step, taps, masks, dst, m, omit_nan, lowest):
    """dst[k] = the max over taps j of src[first + j*step + k] where ``masks[j, k]`` (else
    ``lowest``; NaN read as ``lowest`` under ``omit_nan``), for k < m: three taps in one
    sweep (the 3x3 window without omit), else a tap per sweep."""
    if taps == 3 and not omit_nan:
        a, c, e = (
            src[first : first + m],
            src[first + step : first + step + m],
            src[first + 2 * step : first + 2 * step + m],
        )
        m0, m1, m2 = masks[0], masks[1], masks[2]
        for k in range(m):
            va, vc, ve = a[k], c[k], e[k]
            dst[k] = _bigger(
                _bigger(va if m0[k] else lowest, vc if m1[k] else lowest), ve if m2[k] else lowest
            )
        return
    for j in range(min(taps, 3)):
        a, ma = src[first + j * step : first + j * step + m], masks[j]
        if j == 0:
            for k in range(m):
                v = a[k]
                v = lowest if omit_nan and v != v else v
                dst[k] = v if ma[k] else lowest
        else:
            for k in range(m):
                v = a[k]
                v = lowest if omit_nan and v != v else v
                dst[k] = _bigger(dst[k], v if ma[k] else lowest)
    for j in range(3, taps):
        a, ma = src[first + j * step : first + j * step + m], masks[j]
        for k in range(m):
            v = a[k]
            v = lowest if omit_nan and v != v else v
            dst[k] = _bigger(dst[k], v if ma[k] else lowest)


#: Window sums along W that `avg_tiles` and `max_tiles` keep per chunk of output rows (in
#: the L1 cache).
TILE_CELLS = 4096


@njit(cache=True, inline="always")
def _chunks(rows, per_row, runs):
    """(chunk rows, chunks, runs, chunks per run) for ``rows`` output rows of ``per_row``
    window sums each."""
    chunk = max(1, TILE_CELLS // max(per_row, 1))
    chunks = -(-rows // chunk)
    runs = max(1, min(runs, chunks))
    per = -(-chunks // runs)
    return chunk, chunks, -(-chunks // per), per


@register("avg_pool")
@njit(parallel=True, cache=True)
def avg_tiles(x, out, W, kh, kw, scale, divisor, empty, acc, runs):
    """Average pooling over windows that tile the plane (kernel == stride along both axes,
    no padding, H and W multiples of the kernel): 2x2/2 on even planes.

    The kh input rows of a chunk of output rows are contiguous and hold no cell of another
    window group, so the sums along W are one pass over the chunk's cells end to end
    (``S[k]`` = the ``kw`` cells ``k*kw ..``), and the sums along H add the chunk's rows of
    ``S`` in groups of ``kh``, scaled by ``scale`` (float32 results) or divided by
    ``divisor`` (float64 results, as the reference). Every window is whole, so ``empty`` (the
    value of an empty window, in every average kernel's arguments) is not used. ``acc`` as
    `small_planes.avg_small`.
    """
    N = x.shape[0]
    OW = W // kw
    rows = N // (kh * W) if W > 0 else 0  # output rows of all planes
    if rows == 0:
        return
    chunk, chunks, runs, per = _chunks(rows, kh * OW, runs)
    t = acc.dtype.type
    s = t(scale)
    exact = out.itemsize == 8
    lanes = kh == 2 and kw == 2 and not exact and acc.itemsize == x.itemsize
    for run in prange(runs):
        S_ = np.empty(0 if lanes else chunk * kh * OW, acc.dtype)
        S, xu, ou = unowned(S_), unowned(x), unowned(out)
        for c in range(run * per, min(chunks, (run + 1) * per)):
            r0, r1 = c * chunk, min(rows, (c + 1) * chunk)
            if lanes:
                for r in range(r0, r1):
                    if _lanes_fit(r, r1, OW, W, N):
                        for v in range(0, OW, LANES):
                            tiles_sum8(ou, r * OW + v, xu, 2 * r * W + 2 * v, (2 * r + 1) * W + 2 * v, s)
                    else:
                        _tile_sums_cells(ou, xu, r, W, OW, s)
                continue
            m = (r1 - r0) * kh * OW
            src = xu[r0 * kh * W : r1 * kh * W]
            if kw == 2:
                for k in range(m):
                    S[k] = t(src[2 * k]) + t(src[2 * k + 1])
            elif kw == 1:
                for k in range(m):
                    S[k] = src[k]
            else:
                for k in range(m):
                    v = t(src[k * kw])
                    for i in range(1, kw):
                        v += t(src[k * kw + i])
                    S[k] = v
            o = ou[r0 * OW : r1 * OW]
            if kh == 2 and not exact:
                for r in range(r1 - r0):
                    a, b, orow = (
                        S[2 * r * OW : 2 * r * OW + OW],
                        S[(2 * r + 1) * OW : 2 * r * OW + 2 * OW],
                        o[r * OW : r * OW + OW],
                    )
                    for ow in range(OW):
                        orow[ow] = (a[ow] + b[ow]) * s
            else:
                for r in range(r1 - r0):
                    base = r * kh * OW
                    for ow in range(OW):
                        v = S[base + ow]
                        for j in range(1, kh):
                            v += S[base + j * OW + ow]
                        o[r * OW + ow] = v / divisor if exact else v * s
        keep_alive(S_)


@register("max_pool")
@njit(parallel=True, cache=True)
def max_tiles(x, out, W, kh, kw, omit_nan, floor, lowest, runs):
    """Max pooling values over windows that tile the plane, as `avg_tiles`: the maxima along
    W in one pass over a chunk's cells, then along H. NaN propagates (or, with ``omit_nan``,
    never wins and results are at least ``floor``); no window is empty."""
    N = x.shape[0]
    OW = W // kw
    rows = N // (kh * W) if W > 0 else 0
    if rows == 0:
        return
    chunk, chunks, runs, per = _chunks(rows, kh * OW, runs)
    lanes = kh == 2 and kw == 2 and not omit_nan
    for run in prange(runs):
        S_ = np.empty(0 if lanes else chunk * kh * OW, x.dtype)
        S, xu, ou = unowned(S_), unowned(x), unowned(out)
        for c in range(run * per, min(chunks, (run + 1) * per)):
            r0, r1 = c * chunk, min(rows, (c + 1) * chunk)
            if lanes:
                for r in range(r0, r1):
                    if _lanes_fit(r, r1, OW, W, N):
                        for v in range(0, OW, LANES):
                            tiles_max8(ou, r * OW + v, xu, 2 * r * W + 2 * v, (2 * r + 1) * W + 2 * v)
                    else:
                        _tile_maxima_cells(ou, xu, r, W, OW)
                continue
            m = (r1 - r0) * kh * OW
            src = xu[r0 * kh * W : r1 * kh * W]
            if kw == 2 and not omit_nan:
                for k in range(m):
                    S[k] = _bigger(src[2 * k], src[2 * k + 1])
            else:
                for k in range(m):
                    v = src[k * kw]
                    v = lowest if omit_nan and v != v else v
                    for i in range(1, kw):
                        u = src[k * kw + i]
                        v = _bigger(v, lowest if omit_nan and u != u else u)
                    S[k] = v
            o = ou[r0 * OW : r1 * OW]
            if kh == 2:
                for r in range(r1 - r0):
                    a, b, orow = (
                        S[2 * r * OW : 2 * r * OW + OW],
                        S[(2 * r + 1) * OW : 2 * r * OW + 2 * OW],
                        o[r * OW : r * OW + OW],
                    )
                    for ow in range(OW):
                        orow[ow] = _bigger(a[ow], b[ow])
            else:
                for r in range(r1 - r0):
                    base = r * kh * OW
                    for ow in range(OW):
                        v = S[base + ow]
                        for j in range(1, kh):
                            v = _bigger(v, S[base + j * OW + ow])
                        o[r * OW + ow] = v
            if omit_nan:
                for k in range((r1 - r0) * OW):
                    o[k] = floor if o[k] < floor else o[k]
        keep_alive(S_)


# The rows that `_lanes_fit` refuses take their windows cell by cell in a call of its own
# (``inline="never"``): inlined, that scalar loop beside the vector steps slowed the steps of
# every row, 512x14x14 planes 14.1 -> 9.5 µs without it (benchmarks/NOTES.md).


@njit(cache=True, inline="never")
def _tile_sums_cells(ou, xu, r, W, OW, s):
    """`avg_tiles`' 2x2 sums of output row ``r``, cell by cell, in the steps' order and dtype."""
    for ow in range(OW):
        i = 2 * r * W + 2 * ow
        a, b = xu[i] + xu[i + 1], xu[i + W] + xu[i + W + 1]
        ou[r * OW + ow] = (a + b) * s


@njit(cache=True, inline="never")
def _tile_maxima_cells(ou, xu, r, W, OW):
    """`max_tiles`' 2x2 maxima of output row ``r``, cell by cell, by `_bigger`'s rule."""
    for ow in range(OW):
        i = 2 * r * W + 2 * ow
        a, b = _bigger(xu[i], xu[i + 1]), _bigger(xu[i + W], xu[i + W + 1])
        ou[r * OW + ow] = _bigger(a, b)


@njit(cache=True, inline="always")
def _lanes_fit(r, r1, OW, W, N):
    """Whether output row ``r`` of a 2x2/2 chunk ending at row ``r1`` may be written in runs of
    `LANES` (`tiles_sum8`, `tiles_max8`): its last run reads no cell past the input's end, and
    the outputs it writes past the row's end (OW not a multiple of `LANES`) lie in the rows
    after it in the same chunk, which are written after it."""
    runs = -(-OW // LANES)
    return r * OW + runs * LANES <= r1 * OW and (2 * r + 1) * W + 2 * runs * LANES <= N


@njit(cache=True, inline="always")
def _bigger(a, b):
    """max(a, b) where a NaN wins (as `cpu_max`)."""
    return b if (b > a) | (b != b) else a
