"""Drivers of the tap-table kernels (`avgpool.kernels.cpu_taps`): adaptive pooling and blur.

The tables are `avgpool._cpu_plans.TapTables`, one per geometry (kept by `avgpool._dispatch`);
the forward calls are planned once per layout, tables and dtype, like the box and max kernels'
(`avgpool._cpu_calls.Planned`).
"""

from __future__ import annotations

import functools

import numpy as np

from avgpool import _buffers
from avgpool._arrays import Layout
from avgpool._cpu_calls import Planned
from avgpool._cpu_drivers import (
    PLANS_KEPT,
    _blocks,
    _full,
    _kernel_dtype,
    _lowest,
    _moved,
    _shape4,
    _threads_by_size,
    _view4,
    planned_call,
)
from avgpool._cpu_plans import TapTables


def clear_plans() -> None:
    """Forget the planned calls."""
    plan_taps_sum.cache_clear()
    plan_taps_max.cache_clear()


def taps_sum(x: np.ndarray, layout: Layout, tables: TapTables) -> np.ndarray:
    """sum over each output's taps of weight * x (adaptive average, blur)."""
    return plan_taps_sum(layout, tables, x.dtype)(x)


@functools.lru_cache(maxsize=PLANS_KEPT)
def plan_taps_sum(layout: Layout, tables: TapTables, dtype: np.dtype) -> Planned:
    """`taps_sum`'s kernel call: the two-pass `cpu_taps.taps_sum_rows` for channels-last data
    and for windows that read input rows more than once (blur), else `cpu_taps.taps_sum`."""
    from avgpool.kernels import cpu_taps

    view, c = _shape4(layout.full_shape, layout.channels_last, layout.ndim)
    out_view, _ = _shape4(layout.out_full_shape(tables.out), layout.channels_last, layout.ndim)
    nbytes = _moved(layout, tables.out, dtype)
    pos_h = tables.weight[2]
    if c > 1 or pos_h.shape[0] * pos_h.shape[1] > view[2]:
        kernel, args = cpu_taps.taps_sum_rows, (c, *tables.rows, _blocks(nbytes))
    else:
        kernel, args = cpu_taps.taps_sum, (c, *tables.weight)
    return planned_call("taps", kernel, args, layout, tables.out, dtype, view, out_view, nbytes)


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


@_threads_by_size
def taps_scatter(grad_output: np.ndarray, layout: Layout, tables: TapTables) -> np.ndarray:
    """The transpose of `taps_sum`: the backward of adaptive average and blur pooling."""
    from avgpool.kernels import cpu_taps

    result = _buffers.empty(layout.shape, grad_output.dtype)
    work = _buffers.empty(layout.full_shape, np.float64)
    g4, c = _view4(
        _full(grad_output, layout, tables.out).astype(np.float64, copy=False),
        layout.channels_last,
        layout.ndim,
    )
    grad4, _ = _view4(work, layout.channels_last, layout.ndim)
    cpu_taps.taps_scatter(g4, grad4, c, *tables.weight)
    result.reshape(layout.full_shape)[...] = work
    return result
