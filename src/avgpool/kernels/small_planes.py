"""Pooling of many small channels-first planes at once, vectorised across planes.

Planes of 7x7 to 35x35 have rows of 7-35 cells: a kernel that walks each plane's rows (the
`box_planes` kernels) pays a loop's fixed cost per short row and per plane, and its loops are
too short to vectorise. Here a block of ``lanes`` planes is transposed into a scratch array
``T`` of shape (H*W, lanes), so that every cell of the plane is a row of ``lanes`` values, one
per plane; every step of the pooling is then a loop over ``lanes`` contiguous values, the same
for every plane of the block (LLVM vectorises it), and the results are transposed back.
`max_small` keeps blocks of 8 planes, one vector, and steps them with the explicit vector
steps of `_lanes` (a loop of a constant 8 would compile to 8 scalar steps). These kernels
take any undilated 1-D or 2-D window; `flat_planes` has faster ones for "same" windows and
windows that tile the plane, and `_small_plans.small_planes_kernel` says which kernel serves a
geometry. `run_avg` and `run_max` call the one a plan names.

The window is read through per-geometry tables built once (`avgpool._small_plans`): per
output row and column the range of input rows and columns its window reads (padding is never
read), and per output cell the divisor and whether the window is empty. No table is built per
plane or per call.

Arrays are 2-D: ``x`` (planes, H*W) and ``out`` (planes, OH*OW), C-contiguous (the
``*_planes`` functions take the 3-D planes and reshape them). Float32 sums of at most
`_cpu_drivers.F32_SUM_TAPS` taps run in float32 (the caller's ``acc``), in a fixed order: along
W, then along H, so within that bound.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange

from avgpool.kernels._lanes import LANES as LANES8
from avgpool.kernels._lanes import lanes_max3, transpose8
from avgpool.kernels._nrt import keep_alive, unowned
from avgpool.kernels.registry import register

#: Scratch arrays per run of plane blocks: each of ``T`` (the transposed planes), ``S`` (the
#: window sums along W) and ``Ob`` (the transposed outputs) holds at most this many values, so
#: that together they stay in the L2 cache.
SCRATCH_CELLS = 16384

#: Planes per block: at least 16 (one AVX-512 register of float32), at most 64.
LANES = (16, 64)

#: Runs of plane blocks per thread (each allocates its scratch once).
RUNS_PER_THREAD = 4


@njit(cache=True)
def _lanes_for(cells):
    """Planes per block for planes of ``cells`` cells (H*W or OH*OW, the larger): the most, up
    to 64, whose scratch fits `SCRATCH_CELLS` values, at least 16; a multiple of 16.

    >>> _lanes_for(49), _lanes_for(196), _lanes_for(1225)
    (64, 64, 16)
    """
    fit = SCRATCH_CELLS // max(cells, 1) // 16 * 16
    return min(max(fit, LANES[0]), LANES[1])


@njit(cache=True, inline="always")
def _sum_lanes(src, first, count, step, dst):
    """dst = the sum of ``count`` rows of ``src`` (rows ``first``, ``first + step``, ...), in
    dst's dtype; 0 when ``count`` is 0. The first one to three rows set ``dst`` in one sweep,
    then three more rows are added per sweep, left to right: the same additions in the same
    order for every geometry."""
    L = dst.shape[0]
    t = dst.dtype.type
    if count <= 0:
        for i in range(L):
            dst[i] = 0.0
        return
    a = src[first]
    if count == 1:
        for i in range(L):
            dst[i] = a[i]
        return
    b = src[first + step]
    if count == 2:
        for i in range(L):
            dst[i] = t(a[i]) + t(b[i])
        return
    c = src[first + 2 * step]
    for i in range(L):
        dst[i] = (t(a[i]) + t(b[i])) + t(c[i])
    r = first + 3 * step
    left = count - 3
    while left >= 3:
        a, b, c = src[r], src[r + step], src[r + 2 * step]
        for i in range(L):
            dst[i] = ((dst[i] + t(a[i])) + t(b[i])) + t(c[i])
        r += 3 * step
        left -= 3
    if left == 2:
        a, b = src[r], src[r + step]
        for i in range(L):
            dst[i] = (dst[i] + t(a[i])) + t(b[i])
    elif left == 1:
        a = src[r]
        for i in range(L):
            dst[i] = dst[i] + t(a[i])


@njit(cache=True, inline="always")
def _load_block(x, p0, m, T):
    """T[q, i] = x[p0 + i, q] for the block's ``m`` planes; lanes past ``m`` are 0."""
    HW, L = T.shape
    if m == L:
        for q in range(HW):
            row = T[q]
            for i in range(L):
                row[i] = x[p0 + i, q]
    else:
        for q in range(HW):
            row = T[q]
            for i in range(L):
                row[i] = 0.0
            for i in range(m):
                row[i] = x[p0 + i, q]


@njit(cache=True, inline="always")
def _store_block(Ob, out, p0, m):
    """out[p0 + i, q] = Ob[q, i] for the block's ``m`` planes."""
    OHW = Ob.shape[0]
    for i in range(m):
        orow = out[p0 + i]
        for q in range(OHW):
            orow[q] = Ob[q, i]


@register("avg_pool")
@njit(parallel=True, cache=True)
def avg_small(x, out, W, taps_h, taps_w, scale, divisor, empty_at, empty, acc, runs):
    """Average pooling of channels-first planes without dilation, ``lanes`` planes at a time.

    Per block of planes: the planes transposed into ``T`` (H*W, lanes) in the sums' dtype, the
    window sums along W of every input row (``S``, (H*OW, lanes)), then along H, scaled, into
    ``Ob`` (OH*OW, lanes), transposed back into ``out``. Only real cells are summed (padding
    adds nothing), so an inf or NaN reaches exactly the windows that read it.

    Parameters
    ----------
    x, out : ndarray
        (planes, H*W) and (planes, OH*OW), C-contiguous, float32 or float64.
    W : int
        The planes' width.
    taps_h, taps_w : ndarray of int64
        (OH, 2) and (OW, 2): each output row's (column's) first real input row (column) and
        how many it reads (`_small_plans.small_avg_tables`).
    scale, divisor : ndarray of float64
        (OH*OW,): each output's reciprocal divisor (float32 results multiply by it) and
        divisor (float64 results divide by it, as the reference does).
    empty_at : ndarray of bool
        (OH*OW,): outputs whose divisor is 0 (no cell counted); they get ``empty``.
    acc : ndarray
        An empty array of the sums' dtype (`_cpu_drivers.sum_dtype`): float32 sums for float32
        results over at most `_cpu_drivers.F32_SUM_TAPS` taps, else float64.
    runs : int
        How many runs the blocks of planes (`_lanes_for` planes each) are split into.
    """
    n, HW = x.shape
    OHW = out.shape[1]
    OH, OW = taps_h.shape[0], taps_w.shape[0]
    H = HW // W
    lanes = _lanes_for(max(HW, H * OW, OHW))
    exact = out.itemsize == 8
    blocks = -(-n // lanes)
    if blocks == 0:
        return
    runs = max(1, min(runs, blocks))
    per = -(-blocks // runs)
    runs = -(-blocks // per)
    scale_t = scale.astype(acc.dtype)
    for run in prange(runs):
        T_ = np.empty((HW, lanes), acc.dtype)
        S_ = np.empty((H * OW, lanes), acc.dtype)
        Ob_ = np.empty((OHW, lanes), out.dtype)
        T, S, Ob = unowned(T_), unowned(S_), unowned(Ob_)  # no reference count per row view
        xu, ou = unowned(x), unowned(out)
        for b in range(run * per, min(blocks, (run + 1) * per)):
            p0 = b * lanes
            m = min(lanes, n - p0)
            _load_block(xu, p0, m, T)
            for ih in range(H):
                for ow in range(OW):
                    _sum_lanes(T, ih * W + taps_w[ow, 0], taps_w[ow, 1], 1, S[ih * OW + ow])
            for oh in range(OH):
                for ow in range(OW):
                    q = oh * OW + ow
                    dst = Ob[q]
                    if exact:
                        _sum_lanes(S, taps_h[oh, 0] * OW + ow, taps_h[oh, 1], OW, dst)
                        d = divisor[q]
                        for i in range(lanes):
                            dst[i] = dst[i] / d
                    else:
                        # the sums in the sums' dtype, scaled in it, rounded once
                        _scaled_sum(S, taps_h[oh, 0] * OW + ow, taps_h[oh, 1], OW, dst, scale_t[q])
                    if empty_at[q]:
                        for i in range(lanes):
                            dst[i] = empty
            _store_block(Ob, ou, p0, m)
        keep_alive(T_)
        keep_alive(S_)
        keep_alive(Ob_)


@njit(cache=True, inline="always")
def _scaled_sum(src, first, count, step, dst, sc):
    """dst = sc * (the sum of ``count`` rows of ``src`` from ``first`` every ``step``), summed
    and scaled in src's dtype, rounded once into dst's."""
    L = dst.shape[0]
    if count <= 0:
        for i in range(L):
            dst[i] = 0.0
        return
    a = src[first]
    if count == 1:
        for i in range(L):
            dst[i] = a[i] * sc
        return
    b = src[first + step]
    if count == 2:
        for i in range(L):
            dst[i] = (a[i] + b[i]) * sc
        return
    c = src[first + 2 * step]
    if count == 3:
        for i in range(L):
            dst[i] = ((a[i] + b[i]) + c[i]) * sc
        return
    # longer windows: not the common case; sum in a row of src's dtype first
    for i in range(L):
        s = (a[i] + b[i]) + c[i]
        for r in range(3, count):
            s += src[first + r * step, i]
        dst[i] = s * sc


def threads_runs() -> int:
    """How many runs a kernel splits its work into: `RUNS_PER_THREAD` per thread."""
    return RUNS_PER_THREAD * numba.get_num_threads()


@njit(cache=True, inline="always")
def _bigger(a, b):
    """max(a, b) where a NaN wins (as `cpu_max`; NaN is replaced before under omit)."""
    return b if (b > a) | (b != b) else a


@njit(cache=True, inline="always")
def _load8(x, p0, m, T, spare):
    """T[8q + i] = x[p0 + i, q] for the block's ``m`` (<= 8) planes, lanes past ``m`` from
    ``spare`` (a plane of ``lowest``). A full block goes in 8x8 tiles (`_lanes.transpose8`),
    its last ``HW % 8`` cells one by one. A part block takes eight stores a cell, one per
    plane, at constant offsets with unsigned indices, which LLVM vectorises as an interleaved
    store (a transpose in shuffles; a quarter slower than the tiles on an AMD Zen 4 host)."""
    if m == 8:
        HW = x.shape[1]
        flat = x.reshape(x.shape[0] * HW)
        q = 0
        while q + 8 <= HW:
            transpose8(T, 8 * q, 8, flat, p0 * HW + q, HW)
            q += 8
        for c in range(q, HW):
            for i in range(8):
                T[8 * c + i] = flat[(p0 + i) * HW + c]
        return
    r0 = x[p0]
    r1 = x[p0 + 1] if m > 1 else spare
    r2 = x[p0 + 2] if m > 2 else spare
    r3 = x[p0 + 3] if m > 3 else spare
    r4 = x[p0 + 4] if m > 4 else spare
    r5 = x[p0 + 5] if m > 5 else spare
    r6 = x[p0 + 6] if m > 6 else spare
    r7 = x[p0 + 7] if m > 7 else spare
    for q in range(x.shape[1]):
        j = np.uint64(8 * q)
        T[j] = r0[q]
        T[j + np.uint64(1)] = r1[q]
        T[j + np.uint64(2)] = r2[q]
        T[j + np.uint64(3)] = r3[q]
        T[j + np.uint64(4)] = r4[q]
        T[j + np.uint64(5)] = r5[q]
        T[j + np.uint64(6)] = r6[q]
        T[j + np.uint64(7)] = r7[q]


@njit(cache=True, inline="always")
def _store8(Ob, out, p0, m, OHW):
    """out[(p0 + i) * OHW + q] = Ob[8q + i] for the block's ``m`` planes (``out`` the
    outputs end to end): 8x8 tiles (`_lanes.transpose8`), the last columns one by one."""
    if m < 8:
        for i in range(m):
            for q in range(OHW):
                out[(p0 + i) * OHW + q] = Ob[8 * q + i]
        return
    q = 0
    while q + 8 <= OHW:
        transpose8(out, p0 * OHW + q, OHW, Ob, 8 * q, 8)
        q += 8
    for c in range(q, OHW):
        for i in range(8):
            out[(p0 + i) * OHW + c] = Ob[8 * c + i]


@njit(cache=True, inline="always")
def _max_along_w(S, T, H, W, OW, taps_w, lowest):
    """S[(ih*OW + ow)*8 + i] = the max of row ih's cells of window column ow, lane by lane
    (`_lanes.lanes_max3`: three taps a step); the loop over rows is innermost, so each
    column's taps are read once."""
    for ow in range(OW):
        w0, wn = taps_w[ow, 0], taps_w[ow, 1]
        if wn <= 0:
            for k in range(H):
                for i in range(8):
                    S[(k * OW + ow) * 8 + i] = lowest
            continue
        a = w0 * 8
        b = a + 8 if wn > 1 else a  # fewer than 3 taps: a tap twice (max(v, v) is v)
        c = a + 16 if wn > 2 else b
        for k in range(H):
            lanes_max3(S, (k * OW + ow) * 8, T, k * W * 8 + a, T, k * W * 8 + b, T, k * W * 8 + c)
        for t in range(3, wn, 2):
            b = a + t * 8
            c = b + 8 if t + 1 < wn else b
            for k in range(H):
                d = (k * OW + ow) * 8
                lanes_max3(S, d, S, d, T, k * W * 8 + b, T, k * W * 8 + c)


@njit(cache=True, inline="always")
def _max_rows(dst, src, first, count, step, lowest):
    """dst[k] = the max over ``count`` runs of ``src`` (from ``first``, every ``step``) of
    their element k, for k < len(dst): one long loop per run, which LLVM vectorises."""
    n = dst.shape[0]
    if count <= 0:
        for k in range(n):
            dst[k] = lowest
        return
    a = src[first : first + n]
    if count == 1:
        for k in range(n):
            dst[k] = a[k]
        return
    b = src[first + step : first + step + n]
    if count == 2:
        for k in range(n):
            dst[k] = _bigger(a[k], b[k])
        return
    c = src[first + 2 * step : first + 2 * step + n]
    for k in range(n):
        dst[k] = _bigger(_bigger(a[k], b[k]), c[k])
    for t in range(3, count):
        a = src[first + t * step : first + t * step + n]
        for k in range(n):
            dst[k] = _bigger(dst[k], a[k])


@register("max_pool")
@njit(parallel=True, cache=True)
def max_small(x, out, W, taps_h, taps_w, omit_nan, floor, lowest, runs):
    """Max pooling values (no arg-max) of channels-first planes without dilation, 8 planes
    at a time.

    Per block of 8 planes: the block transposed into ``T`` (H*W runs of 8, one value per
    plane; NaN replaced by ``lowest`` under ``omit_nan``), the window maxima along W of
    every input row (``S``, H*OW runs, `_lanes.lanes_max3`), then along H as runs of whole
    output rows (``Ob``), transposed back in 8x8 tiles (`_lanes.transpose8`). A max needs no
    tie rule, so the separable order gives the same value as `plane_max.max_planes_values`: a
    NaN propagates (or, with ``omit_nan``, never wins and results are at least ``floor``); a
    window with no real cell gives ``lowest``. Arguments as `avg_small` (``taps_h``,
    ``taps_w``: `_small_plans.small_max_tables`).
    """
    n, HW = x.shape
    OHW = out.shape[1]
    OH, OW = taps_h.shape[0], taps_w.shape[0]
    H = HW // W
    blocks = -(-n // LANES8)
    if blocks == 0:
        return
    runs = max(1, min(runs, blocks))
    per = -(-blocks // runs)
    runs = -(-blocks // per)
    for run in prange(runs):
        T_ = np.empty(HW * LANES8, x.dtype)
        S_ = np.empty(H * OW * LANES8, x.dtype)
        Ob_ = np.empty(OHW * LANES8, x.dtype)
        spare_ = np.full(HW, lowest, x.dtype)
        T, S, Ob, spare = unowned(T_), unowned(S_), unowned(Ob_), unowned(spare_)
        xu, ou = unowned(x), unowned(out).reshape(n * OHW)
        for b in range(run * per, min(blocks, (run + 1) * per)):
            p0 = b * LANES8
            m = min(LANES8, n - p0)
            _load8(xu, p0, m, T, spare)
            if omit_nan:
                for q in range(HW * LANES8):
                    v = T[q]
                    T[q] = lowest if v != v else v
            _max_along_w(S, T, H, W, OW, taps_w, lowest)
            row = OW * LANES8
            for oh in range(OH):
                _max_rows(Ob[oh * row : (oh + 1) * row], S, taps_h[oh, 0] * row, taps_h[oh, 1], row, lowest)
            if omit_nan:
                for q in range(OHW * LANES8):
                    v = Ob[q]
                    Ob[q] = floor if v < floor else v
            _store8(Ob, ou, p0, m, OHW)
        keep_alive(T_)
        keep_alive(S_)
        keep_alive(Ob_)
        keep_alive(spare_)


@register("max_pool", "max_pool_backward")
@njit(parallel=True, cache=True)
def max_small_index(x, out, index, W, taps_h, taps_w, omit_nan, floor, lowest, runs):
    """`max_small` with each output's arg-max: its flat index ``ih * W + iw`` in the plane
    (int64 ``index``, shaped as ``out``), with the tie rules of `plane_max.max_planes`.

    Every window's real cells are offered in row-major order (its rows top to bottom, each
    left to right), ``lanes`` planes at a time: the first real cell sets the maximum, a
    later cell takes it if it is larger or NaN (so the first maximum wins, a NaN always wins,
    the last NaN, and a window of -inf points at its first real cell). A window with no real
    cell gives ``lowest`` and index -1. Under ``omit_nan`` NaN is ``lowest`` and results are at
    least ``floor`` (the index is kept). Arguments as `max_small`.
    """
    n, HW = x.shape
    OHW = out.shape[1]
    OH, OW = taps_h.shape[0], taps_w.shape[0]
    lanes = _lanes_for(max(HW, OHW))
    blocks = -(-n // lanes)
    if blocks == 0:
        return
    runs = max(1, min(runs, blocks))
    per = -(-blocks // runs)
    runs = -(-blocks // per)
    for run in prange(runs):
        T_ = np.empty((HW, lanes), x.dtype)
        Ob_ = np.empty((OHW, lanes), x.dtype)
        Ib_ = np.empty((OHW, lanes), np.int64)
        T, Ob, Ib = unowned(T_), unowned(Ob_), unowned(Ib_)  # no reference count per row view
        xu, ou, iu = unowned(x), unowned(out), unowned(index)
        for b in range(run * per, min(blocks, (run + 1) * per)):
            p0 = b * lanes
            m = min(lanes, n - p0)
            _load_block(xu, p0, m, T)
            if omit_nan:
                for q in range(HW):
                    row = T[q]
                    for i in range(lanes):
                        v = row[i]
                        row[i] = lowest if v != v else v
            for oh in range(OH):
                h0, hn = taps_h[oh, 0], taps_h[oh, 1]
                for ow in range(OW):
                    w0, wn = taps_w[ow, 0], taps_w[ow, 1]
                    best, at = Ob[oh * OW + ow], Ib[oh * OW + ow]
                    if hn <= 0 or wn <= 0:  # no real cell (under omit, floored as any result)
                        for i in range(lanes):
                            best[i] = floor if omit_nan and floor > lowest else lowest
                            at[i] = -1
                        continue
                    first = T[h0 * W + w0]
                    for i in range(lanes):
                        best[i] = first[i]
                        at[i] = h0 * W + w0
                    for ih in range(h0, h0 + hn):
                        for iw in range(w0 + 1 if ih == h0 else w0, w0 + wn):
                            cell = ih * W + iw
                            src = T[cell]
                            for i in range(lanes):
                                v = src[i]
                                take = (v > best[i]) | (v != v)
                                best[i] = v if take else best[i]
                                at[i] = cell if take else at[i]
                    if omit_nan:
                        for i in range(lanes):
                            best[i] = floor if best[i] < floor else best[i]
            _store_block(Ob, ou, p0, m)
            _store_block(Ib, iu, p0, m)
        keep_alive(T_)
        keep_alive(Ob_)
        keep_alive(Ib_)


def kernel_for(name):
    """The compiled kernel a `_small_plans.small_planes_kernel` name ("module.function") names,
    and the views it takes of channels-first planes (planes, H, W): ``"cells"`` (the planes'
    cells end to end, `flat_planes`) or ``"planes"`` ((planes, H*W), this module)."""
    from avgpool.kernels import flat_planes

    module, function = name.split(".")
    if module == "flat_planes":
        return getattr(flat_planes, function), "cells"
    return globals()[function], "planes"


def views(kind, shape):
    """The shape of the view a kernel of ``kind`` (`kernel_for`) takes of planes of ``shape``
    (planes, H, W)."""
    return (shape[0] * shape[1] * shape[2],) if kind == "cells" else (shape[0], shape[1] * shape[2])


def run_avg(x3, o3, plan, empty, acc_dtype):
    """Average (planes, H, W) into (planes, OH, OW), C-contiguous, with a plan of
    `_small_plans.small_avg_plan` (a kernel name and its tables); ``acc_dtype`` as
    `_cpu_drivers.sum_dtype`. The kernel is called as ``kernel(x, out, *tables, empty, acc,
    runs)`` on the views `views` says."""
    name, tables = plan
    kernel, kind = kernel_for(name)
    xv, ov = x3.reshape(views(kind, x3.shape)), o3.reshape(views(kind, o3.shape))
    kernel(xv, ov, *tables, empty, np.empty(0, acc_dtype), threads_runs())


def run_max(x3, o3, i3, plan, omit_nan, floor, lowest):
    """Max pooling of (planes, H, W) into (planes, OH, OW) values, and int64 indices into
    ``i3`` when the plan (`_small_plans.small_max_plan`) was made with indices (``i3`` None
    otherwise); ``floor`` and ``lowest`` as `plane_max.max_planes_values`. The kernel is called
    as ``kernel(x, out, [index,] *tables, omit_nan, floor, lowest, runs)``."""
    name, tables = plan
    kernel, kind = kernel_for(name)
    xv, ov = x3.reshape(views(kind, x3.shape)), o3.reshape(views(kind, o3.shape))
    if i3 is not None:
        kernel(xv, ov, i3.reshape(views(kind, i3.shape)), *tables, omit_nan, floor, lowest, threads_runs())
    else:
        kernel(xv, ov, *tables, omit_nan, floor, lowest, threads_runs())
