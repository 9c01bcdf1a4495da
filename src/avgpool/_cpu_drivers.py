"""Drivers for the Numba kernels: layout views, buffers, geometry tables and threads.

A driver takes the user's validated array and its `Layout`, makes the zero-copy 4-D view
``(outer, D, H, W*C)`` the kernels expect (copying only a non-contiguous or float16 input),
takes the resolved geometry's plain int/float tables (`avgpool._cpu_plans`), picks and calls
one kernel and returns the result in the user's layout and dtype. Kernels are imported here, on first use, so
``import avgpool`` compiles and imports nothing of Numba.

float16 is computed from a float32 copy and rounded once at the end. Sums are float64, except
the float32 average over a window of at most `F32_SUM_TAPS` taps (`sum_dtype`).
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable, Sequence

import numpy as np

from avgpool import _buffers
from avgpool._arrays import Layout
from avgpool._cpu_calls import Copy, Planned, _on_threads, kernel_name, threads_for
from avgpool._cpu_plans import (
    avg_backward_plan,
    avg_plan,
    disjoint_windows,
    max_plan,
    tree_plan,
    tree_window,
    window_cells,
)
from avgpool._errors import AvgPoolError
from avgpool._settings import get_num_threads
from avgpool._small_plans import rows_of_3x3s2, small_avg_plan, small_max_plan
from avgpool.window import Axis

log = logging.getLogger("avgpool")


#: Planned calls each ``plan_*`` function keeps (per layout, geometry and dtype).
PLANS_KEPT = 256


def clear_plans() -> None:
    """Forget the planned calls (after changing a tuning constant below, as tests do)."""
    for plan in (plan_avg_forward, plan_avg_backward, plan_max_forward, plan_global_avg, plan_global_max):
        plan.cache_clear()


def _kernel_dtype(dtype: np.dtype) -> np.dtype:
    return np.dtype(np.float32) if dtype == np.float16 else dtype


def _full(x: np.ndarray, layout: Layout, out_spatial: Sequence[int] | None = None) -> np.ndarray:
    """The batched, C-contiguous array in the kernel's dtype (a copy only when needed).

    ``x`` has the layout's shape, or with ``out_spatial`` the shape of an output (a gradient).
    """
    shape = layout.full_shape if out_spatial is None else layout.out_full_shape(out_spatial)
    return np.ascontiguousarray(x.reshape(shape), dtype=_kernel_dtype(x.dtype))


def _view4(full: np.ndarray, channels_last: bool, ndim: int) -> tuple[np.ndarray, int]:
    """(N, C, *sp) or (N, *sp, C) -> (outer, D, H, W*C), and C."""
    if channels_last:
        outer, sp, c = full.shape[0], full.shape[1:-1], full.shape[-1]
    else:
        outer, sp, c = full.shape[0] * full.shape[1], full.shape[2:], 1
    d, h, w = (1,) * (3 - ndim) + tuple(sp)
    return full.reshape(outer, d, h, w * c), c


#: Channels-last averages whose windows read each input cell at most this many times (taps
#: over the product of the strides) sum every tap straight from the input
#: (`box_rows.avg_direct`: one pass, no row buffer); denser windows use running sums, whose cost
#: per output does not grow with the window. Windows that sum in float32 (`sum_dtype`)
#: always go direct (the measurements behind both: benchmarks/NOTES.md).
DIRECT_READS = 4

#: Max pooling without indices whose windows read each cell at least this many times
#: (channels-first, channels-last), with no dilation along H and W, runs
#: `cpu_max.max_values_large`: its cost per output does not grow with the window height and
#: grows as log2 of its width; other windows take their taps one by one (on short
#: channels-first rows its fixed cost per row dominates, hence the higher threshold there).
LARGE_MAX_READS = (81, 5)


#: Parallel kernels whose items need scratch buffers split them into this many runs per thread,
#: each allocating its buffers once; more than one per thread evens out the threads' loads.
BLOCKS_PER_THREAD = 4


#: Float32 averages over windows of at most this many taps sum (and scale) in float32: n - 1
#: float32 additions and at most four roundings in the scaling (per-axis reciprocals, their
#: product, the result) stay within (n + 3) * 2**-24 of the window's mean magnitude (7.2e-7
#: at 9 taps, inside the 1e-6 the kernels promise). Larger windows and running sums (whose
#: error grows with the row) sum in float64. Float32 sums read and add twice as many values
#: per instruction as float64 ones, with no conversion.
F32_SUM_TAPS = 9


def sum_dtype(work: np.dtype, taps: int) -> np.dtype:
    """The dtype a direct (not running) average sums in: float32 for float32 results over at
    most `F32_SUM_TAPS` taps, else float64.

    >>> sum_dtype(np.dtype(np.float32), 9), sum_dtype(np.dtype(np.float32), 10)
    (dtype('float32'), dtype('float64'))
    """
    small = work == np.float32 and taps <= F32_SUM_TAPS
    return np.dtype(np.float32 if small else np.float64)


#: Float32 global averages sum in float32 (`box_global.global_avg` channels-last,
#: `box_global.global_avg_runs` channels-first) when no cell reaches its mean through more than
#: this many roundings (`global_roundings`): within 16 * 2**-24 = 9.5e-7 of the mean magnitude,
#: inside the 1e-6 the kernels promise. Others sum in float64.
F32_GLOBAL_ROUNDINGS = 16


def global_roundings(cells: int, planes: bool = False) -> int:
    """The most roundings between a cell and its mean in the float32 order over ``cells``
    cells, the division included. Channels-last (`box_global.global_avg`): blocks of 8 cells
    are summed three additions deep, then the blocks and the last ``cells % 8`` cells join the
    sum one after another (the first onto 0.0, exactly). Channels-first, ``planes``
    (`_lanes.run_sum8`): 8 lanes each add every 8th cell one after another (the first onto
    0.0), then the lanes meet in a tree three additions deep.

    >>> [global_roundings(n) for n in (1, 7, 49, 55, 56, 63, 64, 104, 105)]
    [1, 7, 10, 16, 10, 17, 11, 16, 17]
    >>> [global_roundings(n, planes=True) for n in (1, 8, 9, 49, 64, 104, 105)]
    [4, 4, 5, 10, 11, 16, 17]
    """
    if planes:
        return -(-cells // 8) + 3
    if cells < 8:
        return cells
    return 3 + cells // 8 + cells % 8


def global_sum_dtype(work: np.dtype, cells: int, planes: bool = False) -> np.dtype:
    """The dtype a global average of ``cells`` cells sums in (``planes``: channels-first):
    float32 for float32 results within `F32_GLOBAL_ROUNDINGS`, else float64."""
    small = work == np.float32 and global_roundings(cells, planes) <= F32_GLOBAL_ROUNDINGS
    return np.dtype(np.float32 if small else np.float64)


def fused_w_window(kw: int, sw: int) -> bool:
    """Whether `_planes.fused_w` spells out a W pass for this window width and stride: 2 or 3
    wide at stride 1 or 2, or 1 and 4-7 wide at stride 1 (one sweep, fused with the scaling)."""
    return (kw in (2, 3) and sw in (1, 2)) or (sw == 1 and (kw == 1 or 4 <= kw <= 7))


def _alloc(layout: Layout, out_spatial: Sequence[int], dtype: np.dtype, out: np.ndarray | None):
    """(result in the user's shape, its batched full view) for a kernel to write into."""
    shape = layout.out_shape(out_spatial)
    if out is None:
        result = _buffers.empty(shape, dtype)
    else:
        if not isinstance(out, np.ndarray) or out.shape != shape or out.dtype != dtype:
            raise AvgPoolError(
                f"out must be an array of shape {shape} and dtype {dtype}, got {_describe(out)}"
            )
        if not out.flags.c_contiguous:
            raise AvgPoolError("out must be C-contiguous")
        result = out
    full_shape = shape if layout.batched else (1, *shape)
    return result, result.reshape(full_shape)


def _describe(a: object) -> str:
    return f"{a.shape} {a.dtype}" if isinstance(a, np.ndarray) else type(a).__name__


def _finish(work: np.ndarray, result: np.ndarray, out_full: np.ndarray) -> np.ndarray:
    """Round a float32 work buffer once into a float16 result; otherwise the kernel wrote it."""
    if work is not out_full:
        out_full[...] = work
    return result


def _work_out(out_full: np.ndarray) -> np.ndarray:
    return _buffers.empty(out_full.shape, np.float32) if out_full.dtype == np.float16 else out_full


# -- average pooling ---------------------------------------------------------------------------


def _shape4(full_shape: Sequence[int], channels_last: bool, ndim: int) -> tuple[tuple[int, ...], int]:
    """`_view4`'s shape for an array of this batched shape, and C."""
    if channels_last:
        outer, sp, c = full_shape[0], tuple(full_shape[1:-1]), full_shape[-1]
    else:
        outer, sp, c = full_shape[0] * full_shape[1], tuple(full_shape[2:]), 1
    d, h, w = (1,) * (3 - ndim) + sp
    return (outer, d, h, w * c), c


def _checked_out(out: np.ndarray | None, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray | None:
    """``out`` if it is a C-contiguous array of this shape and dtype, else an AvgPoolError."""
    if out is None:
        return None
    if not isinstance(out, np.ndarray) or out.shape != shape or out.dtype != dtype:
        raise AvgPoolError(f"out must be an array of shape {shape} and dtype {dtype}, got {_describe(out)}")
    if not out.flags.c_contiguous:
        raise AvgPoolError("out must be C-contiguous")
    return out


def _moved(layout: Layout, out_spatial: Sequence[int], dtype: np.dtype, reads: float = 1.0) -> int:
    """Bytes a forward call reads and writes, each input cell read ``reads`` times."""
    cells = math.prod(layout.shape) * reads + math.prod(layout.out_shape(out_spatial))
    return int(cells) * np.dtype(dtype).itemsize


def _blocks(nbytes: int) -> int:
    """Runs of scratch-using items for a planned call: `BLOCKS_PER_THREAD` per thread it may use."""
    threads = min(threads_for(nbytes), get_num_threads())
    return 1 if threads == 1 else BLOCKS_PER_THREAD * threads


def planned_call(
    op: str,
    kernel,
    args: tuple,
    layout: Layout,
    out_spatial: Sequence[int],
    dtype,
    view: tuple[int, ...],
    out_view: tuple[int, ...],
    nbytes: int,
    index: bool = False,
) -> Planned:
    """A forward's `Planned` call: output in the layout's shape, its path named after the kernel."""
    out_shape = layout.out_shape(out_spatial)
    path = f"{op}: {kernel_name(kernel)}"
    return Planned(
        kernel,
        args,
        view=view,
        out_shape=out_shape,
        out_view=out_view,
        dtype=dtype,
        nbytes=nbytes,
        path=path,
        index=index,
    )


def avg_forward(
    x: np.ndarray,
    layout: Layout,
    axes: Sequence[Axis],
    count_include_pad: bool,
    divisor_override: int | None,
    empty: float,
    out: np.ndarray | None = None,
    running: bool = True,
) -> np.ndarray:
    """Window sums / divisor. ``running=False`` sums tap by tap (exact zeros; O(kernel))."""
    planned = plan_avg_forward(
        layout, tuple(axes), count_include_pad, divisor_override, empty, x.dtype, running
    )
    return planned(x, _checked_out(out, planned.out_shape, x.dtype))


def _one_cell(a: Axis) -> bool:
    """Whether every window along this axis is the one cell it stands on."""
    return a.kernel == 1 and a.stride == 1 and a.pad_before == 0 and a.out == a.size


@functools.lru_cache(maxsize=PLANS_KEPT)
def plan_avg_forward(
    layout: Layout,
    axes: tuple[Axis, ...],
    count_include_pad: bool,
    divisor_override: int | None,
    empty: float,
    dtype: np.dtype,
    running: bool = True,
) -> Planned:
    """The average's kernel call for inputs of this layout and dtype (see `avg_forward`).

    A window that covers the whole input (kernel == size, no padding, one output) is a global
    average, however it was written (``avg_pool2d(x, 7)`` on 7x7, adaptive to 1): it runs the
    global kernels. Windows of one cell each at stride 1 (adaptive to the input's size) are a
    copy (`avgpool._cpu_calls.Copy`) when the work is one thread's; a larger one runs the
    kernels, on threads.
    """
    from avgpool.kernels import box_planes, box_rows, box_trees

    plan = avg_plan(axes, count_include_pad, divisor_override)
    if plan.whole and divisor_override is None:
        return plan_global_avg(layout, dtype)
    nbytes = _moved(layout, plan.out, dtype)
    if divisor_override in (None, 1) and all(_one_cell(a) for a in axes) and threads_for(nbytes) == 1:
        return Copy(layout.shape, dtype, "avg_pool: copy (every window is one cell)")
    geo, (factor, zero, real) = plan.geo, plan.tables
    work = _kernel_dtype(np.dtype(dtype))
    view, c = _shape4(layout.full_shape, layout.channels_last, layout.ndim)
    out_view, _ = _shape4(layout.out_full_shape(plan.out), layout.channels_last, layout.ndim)
    blocks = _blocks(nbytes)
    (kh, sh), (kw, sw) = geo[1, :2], geo[2, :2]
    acc = np.empty(0, sum_dtype(work, int(np.prod(geo[:, 0]))))
    small = (
        c == 1
        and plan.planes
        and small_avg_plan(
            axes, count_include_pad, divisor_override, acc.dtype == np.float32, work == np.float64
        )
    )
    if small:
        # channels-first planes of up to 17x17 (any window), 56x56 ("same" windows), 112x112
        # (2x2/2 tiles): many planes per pass (`_small_plans.small_planes_kernel`)
        kernel, view, out_view = _small_call(small[0], view, out_view)
        args = (*small[1], empty, acc, blocks)
    elif c == 1 and plan.undilated:
        # channels-first without dilation: the plane kernels (simplest loops, fastest); float32
        # results whose windows do not overlap down the plane or sum in float32: every row
        # summed afresh
        direct = acc.dtype == np.float32 or not (running and sh < kh)
        if work == np.float32 and direct and fused_w_window(kw, sw):
            kernel, args = box_planes.avg_planes_direct, (geo, factor, zero, real, empty, blocks, acc)
        elif work == np.float32 and running and tree_window(geo):
            # wider or running windows, float32 results: float32 sums as trees of blocks
            plans = tree_plan(int(kh)), tree_plan(int(kw))
            kernel, args = box_trees.avg_planes_tree, (geo, factor, zero, real, empty, blocks, *plans)
        else:
            kernel, args = box_planes.avg_planes, (geo, factor, zero, real, empty, running, blocks)
    elif c > 1 and (plan.reads <= DIRECT_READS or acc.dtype == np.float32):
        # channels-last windows read by few outputs, or summed in float32; its work grows with
        # the taps, so the thread count counts each input cell once per window that reads it
        # (a 3x3/1 average on 1280 8x8 channels, 640 KiB moved: 31 -> 22 µs on two threads)
        kernel, args = box_rows.avg_direct, (c, geo, factor, zero, empty, acc)
        nbytes = _moved(layout, plan.out, dtype, reads=max(1.0, plan.reads))
    else:
        kernel, args = box_rows.avg_forward, (c, geo, factor, zero, real, empty, running)
    return planned_call("avg_pool", kernel, args, layout, plan.out, dtype, view, out_view, nbytes)


def avg_backward(
    grad_output: np.ndarray,
    layout: Layout,
    axes: Sequence[Axis],
    count_include_pad: bool,
    divisor_override: int | None,
) -> np.ndarray:
    cip, override = count_include_pad, divisor_override
    return plan_avg_backward(layout, tuple(axes), cip, override, grad_output.dtype)(grad_output)


@functools.lru_cache(maxsize=PLANS_KEPT)
def plan_avg_backward(
    layout: Layout, axes: tuple[Axis, ...], count_include_pad: bool, divisor_override: int | None, dtype
) -> Planned:
    """The average's backward call for gradients of this layout and dtype: a global window
    spreads each gradient over its plane (`box_backward.global_spread`); windows that do not overlap
    scatter each gradient to its own cells; others sum the covering windows' gradients."""
    from avgpool.kernels import box_backward

    plan = avg_backward_plan(axes, count_include_pad, divisor_override)
    geo, (inv, cover_h, cover_w, inv_h) = plan.geo, plan.tables
    view, c = _shape4(layout.out_full_shape(plan.out), layout.channels_last, layout.ndim)
    out_view, _ = _shape4(layout.full_shape, layout.channels_last, layout.ndim)
    nbytes = _moved(layout, plan.out, dtype)
    disjoint = (geo[:, 0] <= geo[:, 1]).all()
    if plan.whole:
        outer, size, c = _shape3(layout.full_shape, layout.channels_last)
        kernel, args = box_backward.global_spread, (inv[0][0] * inv[1][0], inv[2][0])
        view, out_view = (outer, 1, c), (outer, size, c)
        path = "avg_pool_backward: global window, one value per plane or channel"
    elif c == 1 and plan.planes:
        view, out_view = _planes(view), _planes(out_view)
        if (geo[1:, 0] <= geo[1:, 1]).all():
            kernel, args = box_backward.avg_backward_planes_disjoint, (geo, inv_h, inv[2], cover_h)
        else:
            kernel, args = box_backward.avg_backward_planes, (geo, inv_h, inv[2], cover_h, True)
    elif plan.undilated and disjoint:
        kernel, args = box_backward.avg_backward_disjoint, (c, geo, *inv)
    else:
        kernel, args = box_backward.avg_backward, (c, geo, *inv, cover_h, cover_w)
    if not plan.whole:
        path = f"avg_pool_backward: {kernel_name(kernel)}"
    return Planned(
        kernel,
        args,
        view=view,
        out_shape=layout.shape,
        out_view=out_view,
        dtype=dtype,
        nbytes=nbytes,
        path=path,
    )


# -- max pooling -------------------------------------------------------------------------------


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


def _small_call(name: str, view: tuple[int, ...], out_view: tuple[int, ...]):
    """(kernel, view, out view) of the small-plane kernel ``name`` (`_small_plans.small_avg_plan`,
    `small_max_plan`) for the 4-D views (outer, 1, H, W) of a channels-first call."""
    from avgpool.kernels import small_planes

    kernel, kind = small_planes.kernel_for(name)
    return kernel, small_planes.views(kind, _planes(view)), small_planes.views(kind, _planes(out_view))


def _planes(shape4: tuple[int, ...]) -> tuple[int, ...]:
    """(outer, 1, H, W) -> (outer, H, W): the plane kernels' view."""
    return (shape4[0], shape4[2], shape4[3])


def _flat_planes(shape4: tuple[int, ...]) -> tuple[int, ...]:
    """(outer, 1, H, W) -> (outer, H * W): each plane one run."""
    return (shape4[0], shape4[2] * shape4[3])


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


# -- global pooling ----------------------------------------------------------------------------


def global_avg(x: np.ndarray, layout: Layout) -> np.ndarray:
    return plan_global_avg(layout, x.dtype)(x)


def _shape3(full_shape: Sequence[int], channels_last: bool) -> tuple[int, int, int]:
    """(outer, S, C): the global kernels' view of an array of this batched shape."""
    if channels_last:
        return full_shape[0], math.prod(full_shape[1:-1]), full_shape[-1]
    return full_shape[0] * full_shape[1], math.prod(full_shape[2:]), 1


@functools.lru_cache(maxsize=PLANS_KEPT)
def plan_global_avg(layout: Layout, dtype: np.dtype) -> Planned:
    """The global average's kernel call: one mean per plane (channels-first) or per channel."""
    from avgpool.kernels import box_global

    outer, size, c = _shape3(layout.full_shape, layout.channels_last)
    ones = (1,) * layout.ndim
    nbytes = _moved(layout, ones, dtype)
    common = {"out_shape": layout.out_shape(ones), "dtype": dtype, "nbytes": nbytes}
    if c == 1:
        f32 = global_sum_dtype(_kernel_dtype(np.dtype(dtype)), size, planes=True) == np.float32
        kernel = box_global.global_avg_runs if f32 else box_global.global_avg_planes
        args, views = (float(size),), ((outer, size), (outer,))
    else:
        acc = np.empty(0, global_sum_dtype(_kernel_dtype(np.dtype(dtype)), size))
        kernel, args = box_global.global_avg, (float(size), _blocks(nbytes), acc)
        views = ((outer, size, c), (outer, c))
    return Planned(
        kernel,
        args,
        view=views[0],
        out_view=views[1],
        path=f"avg_pool: {kernel_name(kernel)}",
        **common,
    )


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
