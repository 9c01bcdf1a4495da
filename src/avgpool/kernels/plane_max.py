"""Numba kernels for channels-first 1-D and 2-D window maxima, one plane per work item.

Planes are 3-D views ``(planes, H, W)``; a work item is a whole plane, so any thread count
gives the same bits. The tie rules are `cpu_max`'s (PyTorch's): taps in row-major order, the
first maximum wins, a NaN always wins, a window with no real cell gives ``lowest`` (index -1).

`max_planes` keeps the arg-max; `max_planes_values` drops it and reduces the window separably
(the column maxima of its rows into a row buffer, then the taps along the buffer);
`max3s2_planes` serves the commonest window of all, 3x3 at stride 2, eight windows of a row
at a time from the rows as they lie (`_lanes.windows3s2_max8`). Short planes with
many per call go to `small_planes` and `flat_planes` instead (`_small_plans.small_planes_kernel`).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from avgpool.kernels._lanes import windows3s2_max8
from avgpool.kernels._nrt import unowned
from avgpool.kernels._prefetch import prefetch_ahead
from avgpool.kernels.cpu_max import _bigger
from avgpool.kernels.registry import register


@register("max_pool", "max_pool_backward")
@njit(parallel=True, cache=True)
def max_planes(x, out, index, geo, omit_nan, floor, lowest):
    """Channels-first 1-D/2-D max pooling without dilation: one plane per work item.

    Each tap row is copied into a buffer padded with ``lowest`` (so windows read it without
    bounds tests) and every column tap is taken across the whole output row at once with
    branch-free selects, in row-major tap order: the first maximum wins, a NaN always wins.
    A window whose choice landed on padding (all its real cells are ``lowest``) is redone
    tap by tap, so it points at its first real cell as the tie rules say.
    """
    n, H, W = x.shape
    OH, OW = out.shape[1], out.shape[2]
    kh, sh, ph = geo[1, 0], geo[1, 1], geo[1, 3]
    kw, sw, pw = geo[2, 0], geo[2, 1], geo[2, 3]
    width = max(pw + W, (OW - 1) * sw + kw)
    for o in prange(n):
        Rp = np.full(width, lowest, dtype=x.dtype)
        col = np.zeros(OW, dtype=np.int64)
        for oh in range(OH):
            best = out[o, oh]
            bidx = index[o, oh]
            best[:] = lowest
            col[:] = -1
            bidx[:] = -1
            start = oh * sh - ph
            prefetch_ahead(x[o, min(max(start, 0), H - 1)], 0, sh * W)
            for ih in range(max(start, 0), min(start + kh, H)):
                row = x[o, ih]
                for i in range(W):
                    v = row[i]
                    Rp[pw + i] = lowest if omit_nan and v != v else v
                for j in range(kw):
                    # literal strides: LLVM vectorises the selects only with a known stride
                    if sw == 2:
                        _take_taps(Rp[j:], best, col, bidx, ih, j, 2)
                    elif sw == 1:
                        _take_taps(Rp[j:], best, col, bidx, ih, j, 1)
                    else:
                        _take_taps(Rp[j:], best, col, bidx, ih, j, sw)
            for ow in range(OW):
                c = col[ow] - pw
                if bidx[ow] >= 0 and 0 <= c < W:
                    bidx[ow] = bidx[ow] * W + c
                elif bidx[ow] >= 0:  # landed on padding: every real cell is lowest
                    _max_window_plane(x, best, bidx, o, oh, ow, kh, sh, ph, kw, sw, pw, omit_nan, lowest)
                if omit_nan and best[ow] < floor:
                    best[ow] = floor


@register("max_pool")
@njit(parallel=True, cache=True)
def max_planes_values(x, out, geo, omit_nan, floor, lowest):
    """`max_planes` without the arg-max: the values only (``max_pool`` without indices).

    Separable, as a max needs no tie rule: the column maxima of the window's rows go into a
    row buffer padded with ``lowest`` (one sweep per row, the first two rows in one), then
    each output takes the max of its ``kw`` buffer cells (the first two in one sweep). At
    stride 2 the buffer is held as its even and odd cells, filled straight from the input rows
    (`_column_pairs`, `_pair_taps`). A NaN propagates (or, with ``omit_nan``, never wins and
    the result is at least ``floor``); a window with no real cell gives ``lowest``.
    """
    n, H, W = x.shape
    OH, OW = out.shape[1], out.shape[2]
    kh, sh, ph = geo[1, 0], geo[1, 1], geo[1, 3]
    kw, sw, pw = geo[2, 0], geo[2, 1], geo[2, 3]
    width = max(pw + W, (OW - 1) * sw + kw) if sw != 2 else 0
    # at stride 2: input cell iw is buffer cell pw + iw, so the input's even cells land in
    # the buffer's even cells from pw / 2 (pw even) or in its odd cells (pw odd), and so on
    na, nb = (W + 1) // 2, W // 2
    half = max(pw // 2 + na, (pw + 1) // 2 + nb, OW + (kw - 1) // 2) if sw == 2 else 0
    for o in prange(n):
        Rp = np.full(width, lowest, dtype=x.dtype)
        R = Rp[pw : pw + W]
        even = np.full(half, lowest, dtype=x.dtype)
        odd = np.full(half, lowest, dtype=x.dtype)
        A = (even if pw % 2 == 0 else odd)[pw // 2 : pw // 2 + na]
        B = (odd if pw % 2 == 0 else even)[(pw + 1) // 2 : (pw + 1) // 2 + nb]
        for oh in range(OH):
            start = oh * sh - ph
            lo, hi = max(start, 0), min(start + kh, H)
            prefetch_ahead(x[o, min(max(start, 0), H - 1)], 0, sh * W)
            best = out[o, oh]
            if sw == 2:
                _column_pairs(x, o, lo, hi, A, B, omit_nan, lowest)
                _pair_taps(even, odd, best, kw)
            else:
                if lo >= hi:
                    R[:] = lowest
                elif omit_nan:
                    row = x[o, lo]
                    for i in range(W):
                        v = row[i]
                        R[i] = lowest if v != v else v
                    for ih in range(lo + 1, hi):
                        row = x[o, ih]
                        for i in range(W):
                            v = row[i]
                            R[i] = _bigger(R[i], lowest if v != v else v)
                else:
                    # the first two rows in one sweep (no copy of the first)
                    row, nxt = x[o, lo], min(lo + 2, hi)
                    if nxt - lo == 2:
                        row1 = x[o, lo + 1]
                        for i in range(W):
                            R[i] = _bigger(row[i], row1[i])
                    else:
                        for i in range(W):
                            R[i] = row[i]
                    for ih in range(nxt, hi):
                        row = x[o, ih]
                        for i in range(W):
                            R[i] = _bigger(R[i], row[i])
                # literal strides: LLVM vectorises only with a known stride
                if sw == 1:
                    _row_max(Rp, best, kw, 1)
                else:
                    _row_max(Rp, best, kw, sw)
            if omit_nan:
                for ow in range(OW):
                    best[ow] = floor if best[ow] < floor else best[ow]


#: `max3s2_planes` hints the rows ahead (`_prefetch`) on planes at least this wide. Measured,
#: two threads, batch 1, µs with / without: 113 / 173 at 147x147 (64 planes), 78 / 73 at
#: 71x71 (192), 72 / 67 at 112x112 (64), 41 / 38 at 35x35 (288): narrow rows lose to it.
PREFETCH_MIN_WIDTH = 128


@register("max_pool")
@njit(parallel=True, cache=True)
def max3s2_planes(x, out, W, OW, ph, pw, lowest):
    """`max_planes_values` for 3x3 windows at stride 2 (NaN propagating), on planes held flat:
    ``x`` ``(planes, H * W)``, ``out`` ``(planes, OH * OW)``. The windows of a row that lie
    inside the plane go eight a step (`_lanes.windows3s2_max8`; the last step overlaps the one
    before), the windows that reach into the padding cell by cell. Same taps in the same
    order as `max_planes_values`, so the same bits.

    The loop over a plane's inner rows holds the vector steps; the windows in the padding
    are calls of their own (`_row_cells3s2` for the ends of those rows, each while its row is
    in cache; `_edges3s2` for the rows at the top and bottom). Inlined into the loop, that
    scalar code slowed the steps 2.2x on 17x17 planes although it did no work there.
    """
    n = x.shape[0]
    H, OH = x.shape[1] // W, out.shape[1] // OW
    # windows ow0 .. ow1 - 1 lie inside the row: 0 <= 2 ow - pw and 2 ow - pw + 2 < W
    ow0 = min((pw + 1) // 2, OW)
    ow1 = max(min(OW, (W - 3 + pw) // 2 + 1), ow0)
    m = ow1 - ow0 if ow1 - ow0 >= 8 else 0  # windows in vector steps
    # the same along H: rows oh0 .. oh1 - 1 read three real rows
    oh0 = min((ph + 1) // 2, OH)
    oh1 = max(min(OH, (H - 3 + ph) // 2 + 1), oh0)
    for o in prange(n):
        xo = unowned(x)[o]
        bo = unowned(out)[o]
        if W >= PREFETCH_MIN_WIDTH:
            for oh in range(oh0, oh1):
                p = (2 * oh - ph) * W - pw
                prefetch_ahead(xo, p + pw + 3 * W, 2 * W)
                _steps3s2(bo, oh * OW, xo, p, p + W, p + 2 * W, ow0, ow1, m)
                if OW > m:
                    _row_cells3s2(bo, oh * OW, xo, p, p + W, p + 2 * W, W, OW, ow0, m, pw, lowest)
        elif OW > m:
            for oh in range(oh0, oh1):
                p = (2 * oh - ph) * W - pw
                _steps3s2(bo, oh * OW, xo, p, p + W, p + 2 * W, ow0, ow1, m)
                _row_cells3s2(bo, oh * OW, xo, p, p + W, p + 2 * W, W, OW, ow0, m, pw, lowest)
        else:
            for oh in range(oh0, oh1):
                p = (2 * oh - ph) * W - pw
                _steps3s2(bo, oh * OW, xo, p, p + W, p + 2 * W, ow0, ow1, m)
        if oh0 > 0 or oh1 < OH:
            _edges3s2(bo, xo, W, OW, ph, pw, ow0, ow1, m, oh0, oh1, lowest)


@njit(cache=True, inline="always")
def _steps3s2(bo, d, xo, p, q, r, ow0, ow1, m):
    """`max3s2_planes`' vector steps along one output row (at ``bo[d]``) from rows that
    start at ``p``, ``q`` and ``r`` (shifted by the padding): the ``m`` windows from ``ow0``."""
    for s in range(m // 8):
        ow = ow0 + 8 * s
        windows3s2_max8(bo, d + ow, xo, p + 2 * ow, q + 2 * ow, r + 2 * ow)
    if m % 8:
        ow = ow1 - 8
        windows3s2_max8(bo, d + ow, xo, p + 2 * ow, q + 2 * ow, r + 2 * ow)


@njit(cache=True, inline="always")
def _cells3s2(bo, d, xo, p, q, r, W, OW, ow0, m, pw, lowest):
    """The windows of one output row that `_steps3s2` leaves (every one when it takes none),
    tap by tap in row-major order."""
    for e in range(OW - m):
        ow = e if e < ow0 or not m else e + m
        first = True
        for c in range(max(2 * ow, pw), min(2 * ow + 3, W + pw)):
            v = _bigger(_bigger(xo[p + c], xo[q + c]), xo[r + c])
            bo[d + ow] = v if first else _bigger(bo[d + ow], v)
            first = False
        if first:
            bo[d + ow] = lowest


@njit(cache=True, inline="never")
def _row_cells3s2(bo, d, xo, p, q, r, W, OW, ow0, m, pw, lowest):
    """`_cells3s2` as a call of its own, for `max3s2_planes`' inner rows: their windows in the
    padding, taken while the row is in cache."""
    _cells3s2(bo, d, xo, p, q, r, W, OW, ow0, m, pw, lowest)


@njit(cache=True, inline="never")
def _edges3s2(bo, xo, W, OW, ph, pw, ow0, ow1, m, oh0, oh1, lowest):
    """One plane's rows at the top and bottom whose windows reach into the padding, whole, for
    `max3s2_planes` (a window over two rows, or one, names a row twice, which gives the same
    bits)."""
    H, OH = xo.shape[0] // W, bo.shape[0] // OW
    for oh in range(OH):
        if oh0 <= oh < oh1:
            continue
        start = oh * 2 - ph
        lo, hi = max(start, 0), min(start + 3, H)
        d = oh * OW
        if lo >= hi:
            bo[d : d + OW] = lowest
            continue
        p, q, r = lo * W - pw, (lo + (hi - lo) // 3) * W - pw, (hi - 1) * W - pw
        _steps3s2(bo, d, xo, p, q, r, ow0, ow1, m)
        _cells3s2(bo, d, xo, p, q, r, W, OW, ow0, m, pw, lowest)


# The stride-2 row's helpers are calls of their own (``inline="never"``, once per output row):
# inlined, their loops beside the other strides' slowed those, 2x2/1 on (64, 112, 112) 150 ->
# 137 µs without them, and the stride-2 path itself, 2x2/2 on (64, 224, 224) 485-494 ->
# 349-450.


@njit(cache=True, inline="never")
def _column_pairs(x, o, lo, hi, A, B, omit_nan, lowest):
    """``A[i]``, ``B[i]`` = the max over rows ``lo`` .. ``hi - 1`` of plane ``o``'s cells ``2i``
    and ``2i + 1`` (rows in order; NaN as ``lowest`` under ``omit_nan``; ``lowest`` for no row).
    Each loop reads its rows' cells in pairs, which LLVM vectorises as shuffles of whole
    vectors, and three rows (3x3/2) are taken in one sweep."""
    W = x.shape[2]
    nb = B.shape[0]
    if lo >= hi:
        A[:] = lowest
        B[:] = lowest
        return
    if hi - lo == 3 and not omit_nan:
        r0, r1, r2 = x[o, lo], x[o, lo + 1], x[o, lo + 2]
        for i in range(nb):
            A[i] = _bigger(_bigger(r0[2 * i], r1[2 * i]), r2[2 * i])
            B[i] = _bigger(_bigger(r0[2 * i + 1], r1[2 * i + 1]), r2[2 * i + 1])
        if W % 2:
            A[nb] = _bigger(_bigger(r0[W - 1], r1[W - 1]), r2[W - 1])
        return
    row = x[o, lo]
    for i in range(nb):
        a, b = row[2 * i], row[2 * i + 1]
        A[i] = lowest if omit_nan and a != a else a
        B[i] = lowest if omit_nan and b != b else b
    if W % 2:
        a = row[W - 1]
        A[nb] = lowest if omit_nan and a != a else a
    for ih in range(lo + 1, hi):
        row = x[o, ih]
        for i in range(nb):
            a, b = row[2 * i], row[2 * i + 1]
            A[i] = _bigger(A[i], lowest if omit_nan and a != a else a)
            B[i] = _bigger(B[i], lowest if omit_nan and b != b else b)
        if W % 2:
            a = row[W - 1]
            A[nb] = _bigger(A[nb], lowest if omit_nan and a != a else a)


@njit(cache=True, inline="always")
def _row_max(Rp, best, kw, step):
    """best[ow] = the max of Rp[ow * step : ow * step + kw] (tap by tap across the row, the
    first two taps in one sweep)."""
    if kw == 1:
        for ow in range(best.shape[0]):
            best[ow] = Rp[ow * step]
    else:
        for ow in range(best.shape[0]):
            best[ow] = _bigger(Rp[ow * step], Rp[ow * step + 1])
    for j in range(2, kw):
        for ow in range(best.shape[0]):
            best[ow] = _bigger(best[ow], Rp[ow * step + j])


@njit(cache=True, inline="never")
def _pair_taps(even, odd, best, kw):
    """`_row_max` at step 2 from the row held as its even and odd cells: tap j of window ow,
    ``Rp[2 * ow + j]``, is ``even[ow + j // 2]`` or ``odd[ow + j // 2]``, so every loop reads
    cells side by side. (A loop reading every other cell compiles to gathers, which some x86
    cores, AMD's Zen 4 among them, run several times slower.) Taps are taken in
    `_row_max`'s order, so the result is the same.
    """
    n = best.shape[0]
    # Two or three taps a loop, the first loop starting from tap 0 rather than from a copy
    if kw % 2:  # taps 0; (1, 2), (3, 4), ...: odd[ow + t], even[ow + t + 1]
        if kw == 1:
            for ow in range(n):
                best[ow] = even[ow]
        for t in range(kw // 2):
            for ow in range(n):
                first = even[ow] if t == 0 else best[ow]
                best[ow] = _bigger(_bigger(first, odd[ow + t]), even[ow + t + 1])
    else:  # taps (0, 1), (2, 3), ...: even[ow + t], odd[ow + t]
        for t in range(kw // 2):
            for ow in range(n):
                first = even[ow] if t == 0 else _bigger(best[ow], even[ow + t])
                best[ow] = _bigger(first, odd[ow + t])


@njit(cache=True, inline="always")
def _take_taps(src, best, col, bidx, ih, j, step):
    """Offer tap src[ow * step] to every window ow of the row (row-major tie rules)."""
    for ow in range(best.shape[0]):
        v = src[ow * step]
        take = (col[ow] < 0) | (v > best[ow]) | (v != v)
        best[ow] = v if take else best[ow]
        col[ow] = ow * step + j if take else col[ow]
        bidx[ow] = ih if take else bidx[ow]


@njit(cache=True)
def _max_window_plane(x, best, bidx, o, oh, ow, kh, sh, ph, kw, sw, pw, omit_nan, lowest):
    """One window scanned tap by tap over real cells only (first real cell starts the scan)."""
    H, W = x.shape[1], x.shape[2]
    b = lowest
    bi = -1
    for ih in range(max(oh * sh - ph, 0), min(oh * sh - ph + kh, H)):
        for iw in range(max(ow * sw - pw, 0), min(ow * sw - pw + kw, W)):
            v = x[o, ih, iw]
            if omit_nan and v != v:
                v = lowest
            if bi == -1 or v > b or v != v:
                b = v
                bi = ih * W + iw
    best[ow] = b
    bidx[ow] = bi
