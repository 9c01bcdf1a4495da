"""Float32 box averages of channels-first planes as trees of float32 additions.

For windows one depth deep, at stride 1 along W and 4-64 cells along an axis (7x7/1,
15x15/1, 1-D k=64): `avg_planes_tree` sums blocks of 4, 8, 16, ... cells as balanced trees,
in strips of output rows, one level a loop over the strip (no float64, no subtraction,
within 1e-6 of the window's mean magnitude by construction).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from avgpool.kernels._common import split_runs
from avgpool.kernels._nrt import keep_alive, unowned
from avgpool.kernels._planes import plane_divisors
from avgpool.kernels._prefetch import prefetch_write_row
from avgpool.kernels.registry import register

#: Column sums per strip of `avg_planes_tree` (output rows x their padded width): small enough
#: that its buffers stay in the L1 and L2 caches.
STRIP_CELLS = 2048


@register("avg_pool")
@njit(parallel=True, cache=True)
def avg_planes_tree(x, out, geo, count, zero, real, empty, blocks, hplan, wplan):
    """`avg_planes` for float32 results and windows `_cpu_plans.tree_window` admits (one depth deep,
    stride 1 along W, 4-64 cells along an axis): every sum a tree of float32 additions, with
    no float64 and no subtraction.

    A window of k cells along an axis is a few blocks of 4 * 2**j cells and up to three single
    cells (15 = 8 + 4 + 1 + 1 + 1; ``hplan``/``wplan``: `_cpu_plans.tree_plan`), added as a balanced
    tree. A plane is summed in strips of output rows (``STRIP_CELLS`` cells of column sums):

    * down the strip, each block level is a buffer of rows: blocks of 4 input rows, then blocks
      of two blocks of the level below (`_strip_levels`), each level one loop over the strip's
      rows end to end; the top level's one block is added from two blocks of the level below
      as the column sums are (`_col_sums`), never stored;
    * along W the same over the strip's column sums end to end (`_w_levels`; a block running
      off a row's end gives a value no output reads), then each output row's terms, scaled
      (`_row_terms`).

    Each sum is a tree at most `_cpu_plans.TREE_DEPTH` additions deep, within 1e-6 of the window's
    mean magnitude; a large value adds to its neighbours and is never subtracted from them,
    and inf and NaN come out as in a tap-by-tap sum. Each level is one loop over the strip's
    rows end to end, not a loop per row: on short rows a loop's own cost is as much again as
    its sums.

    A strip whose input rows are all real and have no W padding is read in place; others are
    copied between zeros, so the windows need no bounds. The output rows of the next strip are
    hinted for writing a row at a time (the input, already in cache, is not hinted:
    `_prefetch`). The loops are inlined functions over views of `_nrt.unowned` arrays
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
    _, (scale_d, scale_h, scale_w) = plane_divisors(count, zero, real, OD, OH, OW)
    scale_wt = scale_w.astype(np.float32)
    any_zero_w = zero[2, :OW].any()
    items = n * OD
    runs, per = split_runs(items, blocks)
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
    of a multiple of 4 KiB would make a level's loads and stores alias in the 4K-aliasing
    sense and stall)."""
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
    """The kept block levels along W of the first ``n`` cells of ``cols[0]``. Level j + 1 is
    summed over ``n - b`` cells (b: the level-j block), so it reads level j's first ``n`` cells
    and no further: the row buffers may be exactly ``n`` long. Its cells whose blocks run off the
    strip's end hold values no output reads."""
    kept = _kept(plan)
    if kept == 0:
        return
    a = cols[0]
    _sum4(cols[1, : n - 3], a, a[1:], a[2:], a[3:])
    for j in range(1, kept):
        b = 2 << j
        a = cols[j]
        _sum2(cols[j + 1, : n - b], a, a[b:n])


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
    """dst = the sum of the first ``nt`` terms, a balanced tree (`_cpu_plans.TREE_SHAPES`), scaled
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
