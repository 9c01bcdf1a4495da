"""Drivers for the Numba kernels: layout views, buffers, geometry tables and threads, and the
averages' drivers (max pooling's: `avgpool._cpu_max_drivers`).

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
from collections.abc import Sequence

import numpy as np

from avgpool import _buffers
from avgpool._arrays import Layout
from avgpool._cpu_calls import Copy, Planned, kernel_name, threads_for
from avgpool._cpu_plans import (
    avg_backward_plan,
    avg_plan,
    tree_plan,
    tree_window,
)
from avgpool._errors import AvgPoolError
from avgpool._settings import get_num_threads
from avgpool._small_plans import small_avg_plan
from avgpool.window import Axis

log = logging.getLogger("avgpool")


#: Planned calls each ``plan_*`` function keeps (per layout, geometry and dtype).
PLANS_KEPT = 256


def clear_plans() -> None:
    """Forget the planned calls (after changing a tuning constant below, as tests do)."""
    for plan in (plan_avg_forward, plan_avg_backward, plan_global_avg, small_avg_plan):
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


def _one_cell_windows(axes: Sequence[Axis], divisor_override: int | None) -> bool:
    """Whether the average (and its gradient) is a copy: every window the one cell it stands
    on, divided by 1."""
    return divisor_override in (None, 1) and all(_one_cell(a) for a in axes)


def _copy_call(op: str, layout: Layout, dtype, nbytes: int) -> Planned | Copy:
    """An average whose every window is the one cell it stands on, or its gradient: a copy,
    by NumPy (`Copy`) when the work is one thread's or its dtype not the kernels' own, else by
    `box_rows.copy_cells` on threads (adaptive 7x7 on VGG's 7x7 maps at batch 32, forward
    71 -> 50 µs)."""
    from avgpool.kernels import box_rows

    threads, size = threads_for(nbytes), math.prod(layout.shape)
    if threads == 1 or _kernel_dtype(np.dtype(dtype)) != dtype:
        return Copy(layout.shape, dtype, f"{op}: copy (every window is one cell)")
    path = f"{op}: {kernel_name(box_rows.copy_cells)} (every window is one cell)"
    return Planned(
        box_rows.copy_cells,
        (threads,),
        view=(size,),
        out_shape=layout.shape,
        out_view=(size,),
        dtype=dtype,
        nbytes=nbytes,
        path=path,
    )


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
    copy (`_copy_call`).
    """
    from avgpool.kernels import box_planes, box_rows, box_trees

    plan = avg_plan(axes, count_include_pad, divisor_override)
    if plan.whole and divisor_override is None:
        return plan_global_avg(layout, dtype)
    nbytes = _moved(layout, plan.out, dtype)
    if _one_cell_windows(axes, divisor_override):
        return _copy_call("avg_pool", layout, dtype, nbytes)
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
    elif c > 1 and acc.dtype == work and divisor_override is None and _inner_2x2_blocks(axes):
        # the commonest channels-last average (DenseNet's transitions): `avg_direct`'s 2x2
        # block alone, with the same bits
        kernel, args = box_rows.avg_2x2_blocks, (c,)
    elif c > 1 and (plan.reads <= DIRECT_READS or acc.dtype == np.float32):
        # channels-last windows read by few outputs, or summed in float32; its work grows with
        # the taps, so the thread count counts each input cell once per window that reads it
        # (a 3x3/1 average on 1280 8x8 channels, 640 KiB moved: 31 -> 22 µs on two threads)
        kernel, args = box_rows.avg_direct, (c, geo, factor, zero, empty, acc)
        nbytes = _moved(layout, plan.out, dtype, reads=max(1.0, plan.reads))
    else:
        kernel, args = box_rows.avg_forward, (c, geo, factor, zero, real, empty, running)
    return planned_call("avg_pool", kernel, args, layout, plan.out, dtype, view, out_view, nbytes)


def _inner_2x2_blocks(axes: Sequence[Axis]) -> bool:
    """Whether 2-D windows are 2x2 at stride 2 (a single window's stride is 1), undilated, with
    no padding and every window inside the input (`box_rows.avg_2x2_blocks`)."""
    return len(axes) == 2 and all(
        a.kernel == 2
        and (a.stride == 2 or a.out == 1)
        and a.dilation == 1
        and a.pad_before == 0
        and 2 * a.out <= a.size
        for a in axes
    )


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
    spreads each gradient over its plane (`box_backward.global_spread`); windows of one cell
    each copy it (`_copy_call`); windows that do not overlap scatter each gradient to its own
    cells; others sum the covering windows' gradients."""
    from avgpool.kernels import box_backward

    plan = avg_backward_plan(axes, count_include_pad, divisor_override)
    geo, (inv, cover_h, cover_w, inv_h) = plan.geo, plan.tables
    view, c = _shape4(layout.out_full_shape(plan.out), layout.channels_last, layout.ndim)
    out_view, _ = _shape4(layout.full_shape, layout.channels_last, layout.ndim)
    nbytes = _moved(layout, plan.out, dtype)
    if not plan.whole and _one_cell_windows(axes, divisor_override):
        return _copy_call("avg_pool_backward", layout, dtype, nbytes)
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
    elif c > 1 and len(axes) == 2 and all(a.kernel == 3 and a.stride == a.dilation == 1 for a in axes):
        # Inception's 3x3/1 averages: each cell gathers its few covering gradients at once
        kernel, args = box_backward.avg_backward_3x3, (c, *inv, cover_h, cover_w)
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
