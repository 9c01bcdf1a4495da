"""Drivers for the max-pooling kernels: forward (values, and the arg-max where asked), the
backward that adds each output's gradient at its arg-max, and the global max.

Shares `avgpool._cpu_drivers`' views, buffers and planned calls; the kernels are imported on
first use, as there.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable, Sequence

import numpy as np

from avgpool._arrays import Layout
from avgpool._cpu_calls import Planned, _on_threads, threads_for
from avgpool._cpu_drivers import (
    F32_SUM_TAPS,
    PLANS_KEPT,
    _alloc,
    _blocks,
    _checked_out,
    _finish,
    _flat_planes,
    _kernel_dtype,
    _moved,
    _planes,
    _shape3,
    _shape4,
    _small_call,
    _work_out,
    planned_call,
)
from avgpool._cpu_plans import disjoint_windows, max_plan, window_cells
from avgpool._small_plans import rows_of_3x3s2, small_max_plan
from avgpool.window import Axis

log = logging.getLogger("avgpool")


def clear_plans() -> None:
    """Forget the planned calls (after changing a tuning constant below, as tests do)."""
    for plan in (plan_max_forward, plan_global_max, small_max_plan):
        plan.cache_clear()


#: Max pooling without indices whose windows read each cell at least this many times
#: (channels-first, channels-last), with no dilation along H and W, runs
#: `cpu_max.max_values_large`: its cost per output does not grow with the window height and
#: grows as log2 of its width; other windows take their taps one by one (on short
#: channels-first rows its fixed cost per row dominates, hence the higher threshold there).
LARGE_MAX_READS = (81, 5)


def _lowest(dtype: np.dtype):
    return dtype.type(-np.inf) if dtype.kind == "f" else np.iinfo(dtype).min


def _lowest_and_floor(dtype: np.dtype, floor: float) -> tuple:
    """(the dtype's lowest value, ``floor`` as that dtype, at least the lowest; integers: the
    lowest) for the max kernels."""
    lowest = _lowest(dtype)
    return lowest, (dtype.type(max(floor, lowest)) if dtype.kind == "f" else lowest)


def max_forward(
    x: np.ndarray,
    layout: Layout,
    axes: Sequence[Axis],
    nan_policy: str,
    floor: float,
    out: np.ndarray | None = None,
    with_index: bool = True,
) -> tuple[np.ndarray, np.ndarray | None]:
    """(values, indices); without ``with_index`` the arg-max may be skipped and the indices
    are then None (see `plan_max_forward`)."""
    planned = plan_max_forward(layout, tuple(axes), nan_policy, floor, x.dtype, with_index)
    result = planned(x, _checked_out(out, planned.out_shape, x.dtype))
    return result if planned.index else (result, None)


@functools.lru_cache(maxsize=PLANS_KEPT)
def plan_max_forward(
    layout: Layout, axes: tuple[Axis, ...], nan_policy: str, floor: float, dtype: np.dtype, with_index: bool
) -> Planned:
    """Max pooling's kernel call for inputs of this layout and dtype.

    Without ``with_index`` the arg-max is skipped (no tie rule to keep, so faster): large
    windows (`LARGE_MAX_READS`) run van Herk / Gil-Werman along H and span doubling along W;
    others, channels-first 1-D/2-D, a separable plane kernel (3x3/2 windows, NaN propagating,
    eight a vector step: `_small_plans.rows_of_3x3s2`); channels-last, each window's
    taps read straight from the input a C-vector at a time. A window that covers the whole
    input is a global max (`plan_global_max`, with its indices).
    """
    from avgpool.kernels import cpu_max, plane_max

    plan = max_plan(axes)
    if plan.whole:
        return plan_global_max(layout, nan_policy, floor, dtype)
    geo = plan.geo
    omit = nan_policy == "omit"
    work = _kernel_dtype(np.dtype(dtype))
    lowest, floor_value = _lowest_and_floor(work, floor)
    vectors = layout.channels_last and layout.full_shape[-1] > 1  # channels-last, C > 1
    view, c = _shape4(layout.full_shape, layout.channels_last, layout.ndim)
    out_view, _ = _shape4(layout.out_full_shape(plan.out), layout.channels_last, layout.ndim)
    kernel, args, index = None, (c, geo, omit, floor_value, lowest), with_index
    small = c == 1 and plan.planes and small_max_plan(axes, with_index)
    if c == 1 and plan.planes and not (with_index or omit) and rows_of_3x3s2(axes):
        kernel, args = plane_max.max3s2_planes, (view[-1], out_view[-1], geo[1, 3], geo[2, 3], lowest)
        view, out_view = _flat_planes(view), _flat_planes(out_view)
    elif small and (with_index or plan.reads < LARGE_MAX_READS[vectors]):
        # channels-first small planes, many per pass (`_small_plans.small_planes_kernel`)
        kernel, view, out_view = _small_call(small[0], view, out_view)
        args = (*small[1], omit, floor_value, lowest, _blocks(_moved(layout, plan.out, dtype)))
    elif not with_index:
        if plan.reads >= LARGE_MAX_READS[vectors] and geo[1, 2] == geo[2, 2] == 1:
            kernel = cpu_max.max_values_large
            args = (*args, _blocks(_moved(layout, plan.out, dtype)))
        elif plan.planes and not layout.channels_last:
            kernel, args = plane_max.max_planes_values, (geo, omit, floor_value, lowest)
            view, out_view = _planes(view), _planes(out_view)
        elif vectors:
            kernel = cpu_max.max_values
    if kernel is None:
        index = True
        if c == 1 and plan.planes:
            kernel, args = plane_max.max_planes, (geo, omit, floor_value, lowest)
            view, out_view = _planes(view), _planes(out_view)
        else:
            # indices kept in int32 while scanned where every flat index fits
            kernel = cpu_max.max_forward
            at_like = np.empty(0, np.int32 if math.prod(layout.spatial) < 2**31 else np.int64)
            args = (*args, at_like)
    nbytes = _moved(layout, plan.out, dtype) * (2 if index else 1)
    return planned_call("max_pool", kernel, args, layout, plan.out, dtype, view, out_view, nbytes, index)


#: Channels-last max backward over windows that share no cell gathers
#: (`cpu_max.max_backward_disjoint`) from this many channels (a cell's C values are one
#: vector loop); fewer scatter.
DISJOINT_CHANNELS = 8

#: Channels-last max backward over windows that share cells adds each window's gradient a
#: C-vector per tap (`cpu_max.max_backward_windows`) from this many channels, for windows of at
#: most `WINDOW_TAPS` taps whose sums are in the result's dtype; fewer channels, or more taps,
#: scatter. 3x3 windows, float32, two threads, the kernels alone, ms, scatter -> vectors:
#: 3x3/2 (32, 17, 17, 768) 1.80 -> 1.68, (32, 35, 35, 288) 3.73 -> 2.82, (32, 56, 56, 128) pad 1
#: 4.24 -> 3.93, (32, 147, 147, 64) 12.1 -> 12.4, (32, 56, 56, 96) pad 1 2.91 -> 3.02, 16
#: channels 0.35 -> 0.67; 3x3/1 pad 1 (8, 28, 28, 192) 0.94 -> 0.73, 32 channels 0.16 -> 0.22.
WINDOW_CHANNELS = 128
WINDOW_TAPS = 9


def scatter_to_index(
    grad_output: np.ndarray,
    index: np.ndarray,
    layout: Layout,
    out_spatial: Sequence[int],
    sharing: int | None = None,
    axes: tuple[Axis, ...] | None = None,
    check_range: Callable[[], None] | None = None,
) -> np.ndarray:
    """Max-pool backward: each output's gradient added at its arg-max (index -1: nowhere).

    ``sharing``: the most windows that share one cell (None: not known). A cell then sums at
    most that many gradients: up to `F32_SUM_TAPS` of them sum in the result's dtype, in the
    outputs' order (float32: within (sharing - 1) * 2**-24 of their magnitudes' sum; one
    window per cell is exact), more in float64, rounded once. With the geometry (``axes``),
    channels-last windows that share no cell are gathered instead: each cell reads its one
    window's gradient (`cpu_max.max_backward_disjoint`), the same bits with no scatter, and
    windows that share cells add their gradients a C-vector per tap
    (`cpu_max.max_backward_windows`, `WINDOW_CHANNELS`), the same bits too; an index that
    names no cell of its window (indices of another geometry, or out of range) is found there,
    and the gradient is then scattered as without ``axes``. ``check_range``
    (indices from the caller) runs before any scatter.
    """
    from avgpool.kernels import cpu_max

    result, grad_full = _alloc(layout, layout.spatial, grad_output.dtype, None)
    work = _work_out(grad_full)
    few = sharing is not None and sharing <= F32_SUM_TAPS
    acc = np.empty(0, work.dtype if few else np.float64)
    out_full = layout.out_full_shape(out_spatial)
    g = np.ascontiguousarray(grad_output.reshape(out_full), dtype=work.dtype)
    idx = np.ascontiguousarray(index.reshape(out_full))
    n, c = layout.batch_channels
    outer, chans = (n, c) if layout.channels_last else (n * c, 1)
    per_out, per_in = math.prod(out_spatial) * chans, math.prod(layout.spatial) * chans
    threads = threads_for(2 * grad_full.nbytes)
    g2, idx2, grad2 = g.reshape(outer, per_out), idx.reshape(outer, per_out), work.reshape(outer, per_in)
    disjoint = disjoint_windows(axes) if axes is not None and chans >= DISJOINT_CHANNELS else None
    if disjoint is not None:
        stray = _on_threads(cpu_max.max_backward_disjoint, threads)(g2, idx2, grad2, *disjoint, chans)
        if stray == 0:
            log.debug("max_pool_backward: cpu_max.max_backward_disjoint")
            return _finish(work, result, grad_full)
    elif few and chans >= WINDOW_CHANNELS and axes is not None:
        cells = window_cells(axes) if math.prod(a.kernel for a in axes) <= WINDOW_TAPS else None
        if cells is not None:
            stray = _on_threads(cpu_max.max_backward_windows, threads)(g2, idx2, grad2, cells, chans)
            if stray == 0:
                log.debug("max_pool_backward: cpu_max.max_backward_windows")
                return _finish(work, result, grad_full)
    if check_range is not None:
        check_range()
    log.debug("max_pool_backward: cpu_max.max_backward (%s sums)", acc.dtype)
    # threads by the bytes read and written; one thread runs the serial twin, with no switch
    # of Numba's thread count (a lock and microseconds per call)
    _on_threads(cpu_max.max_backward, threads)(g2, idx2, grad2, chans, acc, _blocks(2 * grad_full.nbytes))
    return _finish(work, result, grad_full)


def global_max(x: np.ndarray, layout: Layout, nan_policy: str, floor: float) -> tuple[np.ndarray, np.ndarray]:
    return plan_global_max(layout, nan_policy, floor, x.dtype)(x)


@functools.lru_cache(maxsize=PLANS_KEPT)
def plan_global_max(layout: Layout, nan_policy: str, floor: float, dtype: np.dtype) -> Planned:
    """The global max's kernel call (values and flat spatial indices)."""
    from avgpool.kernels import cpu_max

    outer, size, c = _shape3(layout.full_shape, layout.channels_last)
    ones = (1,) * layout.ndim
    lowest, floor_value = _lowest_and_floor(_kernel_dtype(np.dtype(dtype)), floor)
    return Planned(
        cpu_max.global_max,
        (nan_policy == "omit", floor_value, lowest),
        view=(outer, size, c),
        out_shape=layout.out_shape(ones),
        out_view=(outer, c),
        dtype=dtype,
        nbytes=_moved(layout, ones, dtype),
        path="max_pool: cpu_max.global_max",
        index=True,
    )
