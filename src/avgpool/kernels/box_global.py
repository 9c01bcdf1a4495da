"""Global averages: one mean over the whole spatial extent of each plane or channel."""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from avgpool.kernels._common import split_runs
from avgpool.kernels._lanes import run_sum8
from avgpool.kernels._nrt import keep_alive, unowned
from avgpool.kernels._prefetch import prefetch_ahead
from avgpool.kernels.registry import register


@register("global_avg_pool", "avg_pool")
@njit(parallel=True, cache=True)
def global_avg(x, out, divisor, blocks, acc_like):
    """out (outer, C) = sum over S of x (outer, S, C) / divisor, for C > 1 (channels-last).

    Eight rows are added in the input's dtype (a tree three additions deep) before their sum
    joins the sums of a C-vector, in ``acc_like``'s dtype: float64, or the input's float32
    where `_cpu_drivers.global_roundings` stays within `_cpu_drivers.F32_GLOBAL_ROUNDINGS` (no
    conversions, half the bytes of sums to read and write per eight rows).
    One pass over the sums per eight rows, with no conversion per cell. A fixed order, so the
    same bits on any thread count. The items are split
    into at most ``blocks`` runs, each allocating its sums once.
    """
    n_outer, S, C = x.shape
    body = S - S % 8
    runs, per = split_runs(n_outer, blocks)
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


@register("global_avg_pool", "avg_pool")
@njit(parallel=True, cache=True, fastmath={"reassoc"})
def global_avg_planes(x, out, divisor):
    """out (outer,) = sum of each contiguous plane x (outer, S) / divisor (channels-first).

    Only reassociation is allowed (no fast-math on infinities or NaN, which still propagate):
    LLVM splits each plane's float64 sum into vector lanes, faster than one add chain and no
    less accurate. The order is fixed by the compiled code, so results are the
    same on any thread count (a machine with other vector widths may differ in the last bit).
    """
    n_outer, S = x.shape
    for o in prange(n_outer):
        plane = unowned(x)[o]  # no reference count per plane (`_nrt`)
        prefetch_ahead(plane, 0, S)
        acc = 0.0
        for s in range(S):
            acc += plane[s]
        out[o] = acc / divisor


@register("global_avg_pool", "avg_pool")
@njit(parallel=True, cache=True)
def global_avg_runs(x, out, divisor):
    """`global_avg_planes` summed in float32, in a fixed order (`_lanes.run_sum8`): each
    contiguous plane as runs of 8 cells added lane by lane, the lanes in a tree, then one
    division in float64. For float32 planes whose cells reach their mean through at most
    `_cpu_drivers.F32_GLOBAL_ROUNDINGS` roundings (`_cpu_drivers.global_roundings`); the same
    bits on any thread count and any x86 vector width.
    """
    n_outer, S = x.shape
    for o in prange(n_outer):
        out[o] = np.float64(run_sum8(unowned(x)[o], 0, S)) / divisor
