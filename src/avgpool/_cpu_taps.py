"""Drivers of the tap-table kernels (`avgpool.kernels.cpu_taps`): adaptive pooling and blur.

The tables are `avgpool._cpu_plans.TapTables`, one per geometry (kept by `avgpool._dispatch`);
the forward calls are planned once per layout, tables and dtype, like the box and max kernels'
(`avgpool._cpu_calls.Planned`).
"""

from __future__ import annotations

import functools
import math

import numpy as np

from avgpool._arrays import Layout
from avgpool._cpu_calls import Planned
from avgpool._cpu_drivers import (
    PLANS_KEPT,
    _blocks,
    _kernel_dtype,
    _moved,
    _shape4,
    planned_call,
)
from avgpool._cpu_max_drivers import _lowest
from avgpool._cpu_plans import TapTables

#: Float32 weighted tap sums (`cpu_taps.taps_sum_rows`) whose D*H taps and W taps number at
#: most this many together sum in float32: each tap's product (its weight rounded to float32,
#: times the value) and each addition round once, so a result is within (taps + 2) * 2**-24 of
#: the sum of |weight| * |value| over its taps (9.5e-7 at 14, inside the 1e-6 the kernels
#: promise; the 2-d blurs up to filt_size 7 fit). More taps sum in float64.
F32_TAP_SUMS = 14

#: Channels-first planes at most this wide, at least `PLANES_MIN` of them, run
#: `cpu_taps.taps_sum_planes` (vectorised across planes), in blocks of 16-64 planes of at most
#: `PLANE_CELLS` cells together. Blur 4/2 at batch 1, µs, rows kernel -> planes kernel:
#: 128x56x56 166 -> 137, 96x48x48 107 -> 84; wider rows take their regular W taps with no
#: gather in the rows kernel, which wins there (64x111x111 196 against 267).
PLANES_MAX_W = 64
PLANES_MIN = 16
PLANE_CELLS = 32768

#: Taps per output that cost about one pass over the data: a planned call with more taps
#: counts its bytes that many times over when it picks its threads (a 4x4 blur: twice).
TAPS_PER_PASS = 4


def _taps(tables: TapTables) -> int:
    """Taps of the two passes of `cpu_taps.taps_sum_rows`: D*H taps, then W taps."""
    return tables.weight[1].shape[1] * tables.weight[3].shape[1] + tables.weight[5].shape[1]


def tap_sum_dtype(dtype: np.dtype, tables: TapTables) -> np.dtype:
    """The dtype `cpu_taps.taps_sum_rows` sums in for inputs of ``dtype`` (as the kernel takes
    them): float32 for float32 within `F32_TAP_SUMS` taps, else float64."""
    small = _kernel_dtype(np.dtype(dtype)) == np.float32 and _taps(tables) <= F32_TAP_SUMS
    return np.dtype(np.float32 if small else np.float64)


def clear_plans() -> None:
    """Forget the planned calls."""
    plan_taps_sum.cache_clear()
    plan_taps_max.cache_clear()
    plan_taps_scatter.cache_clear()


def taps_sum(x: np.ndarray, layout: Layout, tables: TapTables) -> np.ndarray:
    """sum over each output's taps of weight * x (adaptive average, blur)."""
    return plan_taps_sum(layout, tables, x.dtype)(x)


@functools.lru_cache(maxsize=PLANS_KEPT)
def plan_taps_sum(layout: Layout, tables: TapTables, dtype: np.dtype) -> Planned:
    """`taps_sum`'s kernel call (`_sum_call`)."""
    view, c = _shape4(layout.full_shape, layout.channels_last, layout.ndim)
    out_view, _ = _shape4(layout.out_full_shape(tables.out), layout.channels_last, layout.ndim)
    acc = tap_sum_dtype(dtype, tables)
    nbytes = _moved(layout, tables.out, dtype)
    return _sum_call(tables, c, view, out_view, layout, tables.out, dtype, acc, nbytes)


def two_passes(tables: TapTables, c: int, view: tuple[int, ...]) -> bool:
    """Whether a tap sum over an array of this 4-d view runs in the two-pass order of
    `cpu_taps.taps_sum_rows` (whose bits `cpu_taps.taps_sum_planes` gives too) rather than
    `cpu_taps.taps_sum`'s: channels-last data, windows that read input rows more than once
    (blur), and many narrow channels-first planes."""
    pos_h = tables.weight[2]
    planes = c == 1 and tables.sizes[2] <= PLANES_MAX_W and view[0] >= PLANES_MIN
    return planes or c > 1 or pos_h.shape[0] * pos_h.shape[1] > view[2]


def _sum_call(tables, c, view, out_view, layout, out_spatial, dtype, acc, nbytes, two_pass=False) -> Planned:
    """A weighted tap sum's kernel call: `cpu_taps.taps_sum_planes` for many narrow
    channels-first planes (`PLANES_MAX_W`, `PLANES_MIN`), the two-pass `cpu_taps.taps_sum_rows`
    for other channels-last data and windows that read input rows more than once (blur), else
    `cpu_taps.taps_sum` (unless ``two_pass``). Its threads count the taps (`TAPS_PER_PASS`)."""
    from avgpool.kernels import cpu_taps

    nbytes *= max(1, _taps(tables) // TAPS_PER_PASS)
    acc = np.empty(0, acc)
    if c == 1 and tables.sizes[2] <= PLANES_MAX_W and view[0] >= PLANES_MIN:
        cells = max(math.prod(tables.sizes), math.prod(out_view[1:]))
        lanes = min(max(PLANE_CELLS // cells // 16 * 16, 16), 64)
        kernel, args = cpu_taps.taps_sum_planes, (lanes, *tables.rows, _blocks(nbytes), acc)
    elif two_pass or two_passes(tables, c, view):
        kernel, args = cpu_taps.taps_sum_rows, (c, *tables.rows, _blocks(nbytes), acc)
    else:
        kernel, args = cpu_taps.taps_sum, (c, *tables.weight)
    return planned_call("taps", kernel, args, layout, out_spatial, dtype, view, out_view, nbytes)


def taps_max(x: np.ndarray, layout: Layout, tables: TapTables) -> tuple[np.ndarray, np.ndarray]:
    """Max over each output's real taps and its flat spatial index (adaptive max)."""
    return plan_taps_max(layout, tables, x.dtype)(x)


@functools.lru_cache(maxsize=PLANS_KEPT)
def plan_taps_max(layout: Layout, tables: TapTables, dtype: np.dtype) -> Planned:
    """`taps_max`'s kernel call (values and int64 indices)."""
    from avgpool.kernels import cpu_taps

    view, c = _shape4(layout.full_shape, layout.channels_last, layout.ndim)
    out_view, _ = _shape4(layout.out_full_shape(tables.out), layout.channels_last, layout.ndim)
    args = (c, *tables.real, _lowest(_kernel_dtype(np.dtype(dtype))))
    nbytes = 2 * _moved(layout, tables.out, dtype)
    return planned_call(
        "taps", cpu_taps.taps_max, args, layout, tables.out, dtype, view, out_view, nbytes, True
    )


def taps_scatter(
    grad_output: np.ndarray, layout: Layout, tables: TapTables, acc: np.dtype | None = None
) -> np.ndarray:
    """The transpose of `taps_sum`: the backward of adaptive average and blur pooling. Sums run
    in ``acc`` (by default `tap_sum_dtype` of the transposed tables; a chunk of a larger array
    passes the whole array's)."""
    if acc is None:
        acc = tap_sum_dtype(grad_output.dtype, tables.transposed)
    return plan_taps_scatter(layout, tables, grad_output.dtype, np.dtype(acc))(grad_output)


@functools.lru_cache(maxsize=PLANS_KEPT)
def plan_taps_scatter(layout: Layout, tables: TapTables, dtype: np.dtype, acc: np.dtype) -> Planned:
    """`taps_scatter`'s kernel call: the forward's kernels on the transposed tables
    (`avgpool._cpu_plans.TapTables.transposed`), each input cell gathering the gradients of
    the outputs that read it, always in the two-pass order (so that a chunk of the array, whose
    tables hold fewer taps, fewer planes or fewer channels, sums as the whole does)."""
    g_view, c = _shape4(layout.out_full_shape(tables.out), layout.channels_last, layout.ndim)
    view, _ = _shape4(layout.full_shape, layout.channels_last, layout.ndim)
    nbytes = _moved(layout, tables.out, dtype)
    spatial = layout.spatial
    return _sum_call(tables.transposed, c, g_view, view, layout, spatial, dtype, acc, nbytes, two_pass=True)
