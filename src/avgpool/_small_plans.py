"""Which kernel serves a channels-first call on small planes, and that kernel's tables.

Planes of a few hundred to a few thousand cells (7x7 to 56x56, the pools of real CNNs) have
rows too short for the row kernels (`box_planes`, `plane_max`) to stream, so kernels of their
own take many planes per pass: `kernels.small_planes` (8 planes side by side, transposed),
`kernels.flat_planes` (windows that tile the plane, "same" windows) and
`plane_max.max3s2_planes` (3x3/2 maxima, eight windows a vector step). `small_planes_kernel`
picks one from the window's shape and the plane's size, on the measured thresholds below;
`small_avg_plan` and `small_max_plan` pair the choice with its tables. As in `_cpu_plans`,
the tables are shape arithmetic only, read-only, and kept per geometry.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from avgpool._cpu_plans import TABLES_CACHED, _read_only, avg_plan
from avgpool.window import Axis


def _real_taps(a: Axis) -> np.ndarray:
    """(out, 2): each output's first real input cell along an undilated axis and how many real
    cells its window reads (0 for a window in the padding)."""
    start = np.arange(a.out, dtype=np.int64) * a.stride - a.pad_before
    first = np.clip(start, 0, a.size)
    end = np.clip(start + a.kernel, 0, a.size)
    return np.stack([first, np.maximum(end - first, 0)], axis=1).astype(np.int64)


def _plane_axes(axes: tuple[Axis, ...]) -> tuple[Axis, Axis]:
    """(H, W) axes of a 1-D or 2-D geometry (1-D: H is a unit axis)."""
    if len(axes) == 1:
        return Axis(1, 1, 1, 1, 0, 0, 1), axes[0]
    return axes[0], axes[1]


@functools.lru_cache(maxsize=TABLES_CACHED)
def small_avg_tables(
    axes: tuple[Axis, ...], count_include_pad: bool, divisor_override: int | None
) -> tuple[np.ndarray, ...]:
    """`small_planes.avg_small`'s tables ``(W, taps_h, taps_w, scale, divisor, empty_at)`` for
    an undilated 1-D or 2-D geometry, read-only and kept per geometry: the plane's width, per
    output row and column the real input cells its window reads, per output cell (OH*OW) the
    reciprocal divisor (0 where the divisor is 0), the divisor and whether it is 0 (the output
    is then the empty value). Every small-plane kernel's tables start with W.

    The divisor is the product of the per-axis factors of `avg_plan` (a divisor override in
    place of the counts), computed once here rather than per plane.
    """
    ah, aw = _plane_axes(axes)
    factor, zero, _ = avg_plan(axes, count_include_pad, divisor_override).tables
    OH, OW = ah.out, aw.out
    div = factor[0, 0] * np.outer(factor[1, :OH], factor[2, :OW]).reshape(-1)
    empty_at = (zero[0, 0] | zero[1, :OH][:, None] | zero[2, :OW][None, :]).reshape(-1)
    div = np.where(empty_at, 1.0, div)
    scale = np.where(empty_at, 0.0, 1.0 / div)
    return _read_only((aw.size, _real_taps(ah), _real_taps(aw), scale, div, empty_at))


#: `flat_planes.avg_same` works on blocks of whole planes of about this many cells (its
#: tables are tiled over one block).
SAME_BLOCK_CELLS = 4096


def same_window(axes: tuple[Axis, ...]) -> bool:
    """Whether `flat_planes.avg_same` takes the geometry: 1-D or 2-D, undilated, stride 1,
    each output the same size as the input ("same" padding)."""
    return len(axes) <= 2 and all(a.stride == 1 and a.dilation == 1 and a.out == a.size for a in axes)


@functools.lru_cache(maxsize=TABLES_CACHED)
def small_same_masks(axes: tuple[Axis, ...]) -> tuple:
    """`flat_planes.max_same`'s tables ``(W, kh, ph, kw, pw, masks_h, masks_w)`` for a
    `same_window` geometry (the plane's width, the window's height, pad above, width and pad
    left, then arrays
    tiled over a block of ``max(1, SAME_BLOCK_CELLS // (H*W))`` planes), read-only and kept
    per geometry: ``masks_h[jh, k]`` (``masks_w[jw, k]``) whether tap row jh (column jw) of
    cell k's window is a real cell."""
    ah, aw = _plane_axes(axes)
    H, W = ah.size, aw.size
    planes = max(1, SAME_BLOCK_CELLS // (H * W))
    rows = np.tile(np.repeat(np.arange(H), W), planes)
    cols = np.tile(np.arange(W), H * planes)
    at_h = rows[None, :] + (np.arange(ah.kernel) - ah.pad_before)[:, None]
    at_w = cols[None, :] + (np.arange(aw.kernel) - aw.pad_before)[:, None]
    window = (W, ah.kernel, ah.pad_before, aw.kernel, aw.pad_before)
    return _read_only((*window, (0 <= at_h) & (at_h < H), (0 <= at_w) & (at_w < W)))


@functools.lru_cache(maxsize=TABLES_CACHED)
def small_same_tables(
    axes: tuple[Axis, ...], count_include_pad: bool, divisor_override: int | None, float32_sums: bool = False
) -> tuple:
    """`flat_planes.avg_same`'s tables ``(W, kh, ph, kw, pw, masks_h, masks_w, scale, divisor,
    empty_at, H)``: `small_same_masks` and the per-cell divisor tables of `small_avg_tables`,
    tiled as the masks, ``scale`` in the sums' dtype (float32 with ``float32_sums``), then the
    plane's height; read-only and kept per geometry."""
    masks = small_same_masks(axes)
    planes = masks[6].shape[1] // math.prod(a.size for a in axes)
    _, _, _, scale, divisor, empty_at = small_avg_tables(axes, count_include_pad, divisor_override)
    scale = scale.astype(np.float32) if float32_sums else scale
    tiled = (np.tile(a, planes) for a in (scale, divisor, empty_at))
    return _read_only((*masks, *tiled, _plane_axes(axes)[0].size))


@functools.lru_cache(maxsize=TABLES_CACHED)
def small_max_tables(axes: tuple[Axis, ...]) -> tuple[np.ndarray, np.ndarray]:
    """`small_planes.max_small`'s tables ``(W, taps_h, taps_w)`` (as `small_avg_tables`) for an
    undilated 1-D or 2-D geometry, read-only and kept per geometry."""
    ah, aw = _plane_axes(axes)
    return _read_only((aw.size, _real_taps(ah), _real_taps(aw)))


def tiled_window(axes: tuple[Axis, ...]) -> bool:
    """Whether `flat_planes.avg_tiles` and `flat_planes.max_tiles` take the geometry: 1-D or
    2-D, windows that tile the input (kernel == stride, no padding, dilation 1, the size a
    multiple of the kernel)."""
    return len(axes) <= 2 and all(
        a.stride == a.kernel
        and a.dilation == 1
        and a.pad_before == a.pad_after == 0
        and a.out * a.kernel == a.size
        for a in axes
    )


@functools.lru_cache(maxsize=TABLES_CACHED)
def small_tiles_tables(axes: tuple[Axis, ...], divisor_override: int | None = None) -> tuple:
    """`flat_planes.avg_tiles`'s ``(W, kh, kw, scale, divisor)`` for a `tiled_window` geometry
    (`flat_planes.max_tiles` takes the first three): every window is whole, so one divisor
    (the window's cells, or the override) serves all."""
    ah, aw = _plane_axes(axes)
    divisor = float(divisor_override if divisor_override is not None else ah.kernel * aw.kernel)
    return (aw.size, ah.kernel, aw.kernel, 1.0 / divisor, divisor)


#: Planes of at most this many cells (17x17) run the transposed kernels
#: (`small_planes.avg_small`, `small_planes.max_small`) rather than the row kernels
#: (`box_planes`, `plane_max.max_planes_values`). Measured on one thread, float32, ns per input
#: cell, row kernel -> transposed: avg 2x2/2 1.01 -> 0.53 (7x7), 0.63 -> 0.53 (14x14), 0.45 ->
#: 0.55 (17x17); avg 3x3/2 pad 1 1.63 -> 0.60, 0.80 -> 0.55, 0.71 -> 0.61; max 2x2/2 1.85 ->
#: 0.53, 0.85 -> 0.52, 0.60 -> 0.54; max 3x3/2 pad 1 3.73 -> 0.61, 1.11 -> 0.56, 0.92 -> 0.62;
#: max 3x3/1 pad 1 6.94 -> 0.93 (7x7), 1.70 -> 1.07 (17x17). At 28x28 the row kernels win
#: (avg 2x2/2 0.35 against 0.69, max 2x2/2 0.44 against 0.67): their rows are long enough.
SMALL_PLANE_CELLS = 17 * 17

#: Max pooling values (no arg-max) run `small_planes.max_small` on planes of up to this many
#: cells: it keeps 8 planes side by side and steps them as vectors, so it beats the row
#: kernel `plane_max.max_planes_values` past 17x17. Float32, ns per input cell, one thread,
#: max_planes_values -> max_small: 3x3/2 0.94 -> 0.23 (17x17), 0.53 -> 0.33 (35x35), 3x3/2
#: pad 1 0.42 -> 0.30 (56x56); two threads, batch 1: 0.50 -> 0.12, 0.27 -> 0.15, 0.29 ->
#: 0.18; 3x3/2 at 71x71 0.37 -> 0.34 (one thread), too close to move. Other windows, one
#: thread: 5x5/1 pad 2 2.11 -> 0.84 (28x28), 1.32 -> 0.84 (56x56); 3x3/1 1.17 -> 0.55
#: (28x28); 3x3/3 0.53 -> 0.21 (27x27); the one loss measured, 2x2/1 0.54 -> 0.59 (56x56).
SMALL_MAX_CELLS = 56 * 56

#: 3x3/2 max pooling values (no arg-max, NaN propagating) run `plane_max.max3s2_planes`, eight
#: windows a vector step, when a row has at least this many windows inside the plane (one
#: step) and none reaching into the padding, or at least `WINDOWS3S2_PADDED_MIN` inside: before
#: `small_planes.max_small`, whatever the plane's size. Two threads, batch 1, float32, µs,
#: max_small or max_planes_values -> max3s2_planes: 52 -> 34 (768x17x17), 98 -> 47
#: (288x35x35), 181 -> 89 (192x71x71), 187 -> 133 (64x147x147), 9.3 -> 10.0 (64x19x19); pad
#: 1: 37 -> 32 (64x56x56), 141 -> 98 (64x112x112), but 32 -> 38 (128x28x28), 13 -> 22
#: (64x23x23), where the windows in the padding, taken one by one, cost more than the rest.
WINDOWS3S2_MIN = 8
WINDOWS3S2_PADDED_MIN = 24


def rows_of_3x3s2(axes: tuple[Axis, ...]) -> bool:
    """Whether `plane_max.max3s2_planes` takes the geometry: 2-D, 3x3 at stride 2, undilated,
    with `WINDOWS3S2_MIN` or more windows of a row inside the plane (`WINDOWS3S2_PADDED_MIN`
    when others reach into the padding).

    >>> from avgpool.window import Window
    >>> rows_of_3x3s2(Window((3, 3), (2, 2)).resolve((17, 17)))
    True
    >>> rows_of_3x3s2(Window((3, 3), (2, 2), 1).resolve((28, 28)))  # 13 inside, 1 in the padding
    False
    >>> rows_of_3x3s2(Window((3, 3), (2, 2), 1).resolve((56, 56)))
    True
    """
    if len(axes) != 2 or any((a.kernel, a.stride, a.dilation) != (3, 2, 1) for a in axes):
        return False
    w = axes[1]
    inside = min(w.out, (w.size - 3 + w.pad_before) // 2 + 1) - (w.pad_before + 1) // 2
    return inside >= (WINDOWS3S2_MIN if inside == w.out else WINDOWS3S2_PADDED_MIN)


#: ... and float64 averages on planes of up to this many cells (the row kernels divide, cell
#: by cell): avg 2x2/2 2.16 -> 0.75 (14x14), 1.24 -> 0.78 (28x28), 0.82 -> 0.91 (56x56); avg
#: 3x3/2 pad 1 2.30 -> 0.89, 1.25 -> 0.85, 0.99 -> 0.97.
SMALL_PLANE_CELLS_F64 = 28 * 28

#: "Same" windows summed in float32 (at most `_cpu_drivers.F32_SUM_TAPS` taps) and float64
#: averages run `flat_planes.avg_same` on planes of up to this many cells: 3x3/1 pad 1,
#: float32, row kernel -> avg_same, ns per cell: 2.97 -> 0.37 (7x7), 1.26 -> 0.37 (17x17),
#: 0.70 -> 0.35 (35x35), 0.54 -> 0.33 (56x56), 0.36 -> 0.36 (112x112), 0.28 -> 0.37
#: (224x224); float64: 7.90 -> 0.82 (7x7), 2.14 -> 0.83 (56x56); 5x5/1 pad 2, float64: 8.39
#: -> 1.94 (7x7), 2.30 -> 1.71 (56x56).
SAME_PLANE_CELLS = 56 * 56

#: ... and float32 averages over wider "same" windows (float64 sums) on planes of up to this
#: many cells: 5x5/1 pad 2 6.42 -> 1.46 (7x7), 2.42 -> 1.32 (14x14), 2.19 -> 1.44 (17x17),
#: 1.34 -> 1.30 (28x28), 1.23 -> 1.40 (35x35); 7x7/1 pad 3 4.82 -> 1.98, 2.72 -> 1.86, 2.36 ->
#: 1.98, 1.51 -> 1.70 (28x28).
SAME_WIDE_CELLS = 17 * 17

#: Max pooling with indices runs `small_planes.max_small_index` on planes of up to this many
#: cells (`plane_max.max_planes` sets up two row buffers per plane): float32, one thread, ns per
#: input cell, max_planes -> max_small_index: 2x2/2 7.52 -> 0.69 (7x7), 4.73 -> 0.71 (14x14),
#: 4.02 -> 0.88 (28x28), 1.17 -> 1.04 (56x56), 0.96 -> 1.06 (112x112); 3x3/2 pad 1 12.75 ->
#: 0.97 (7x7), 6.86 -> 1.36 (28x28), 1.86 -> 1.50 (56x56), 1.62 -> 1.52 (112x112); 3x3/1 pad 1
#: 31.2 -> 2.40 (7x7), 5.96 -> 4.65 (28x28).
INDEX_PLANE_CELLS = 56 * 56


#: Windows that tile the plane, at most 2 wide (2x2/2 on even planes, the pools of VGG and
#: DenseNet), run `flat_planes.avg_tiles` / `flat_planes.max_tiles` on planes of up to this
#: many cells: float32, one thread, ns per input cell, row kernel -> tiles: avg 2x2/2 1.36 ->
#: 0.39 (6x6), 0.64 -> 0.30 (14x14), 0.34 -> 0.22 (28x28), 0.20 -> 0.19 (56x56), 0.19 -> 0.18
#: (112x112); max 2x2/2 2.53 -> 0.45, 0.86 -> 0.32, 0.45 -> 0.23, 0.28 -> 0.19, 0.21 -> 0.18.
#: Wider tiles sum tap by tap (3x3/3: 0.86-0.96) and go to the transposed kernels.
TILES_PLANE_CELLS = 112 * 112

#: "Same" max pooling windows at most 3x3 (GoogLeNet's 3x3/1 pad 1) run
#: `flat_planes.max_same` on planes of up to this many cells: float32, one thread, ns per
#: input cell, `plane_max.max_planes_values` -> max_same: 4.83 -> 0.45 (7x7), 2.32 -> 0.44
#: (14x14), 1.11 -> 0.45 (28x28), 0.68 -> 0.45 (56x56), 0.50 -> 0.45 (112x112).
SAME_MAX_CELLS = 112 * 112


def small_planes_kernel(
    op: str, axes: tuple[Axis, ...], float32_sums: bool = False, float64: bool = False
) -> str | None:
    """Which small-plane kernel serves channels-first data with this geometry
    (``"module.function"`` as `kernels.registry` names it), or None for the plane kernels
    that serve it today (`box_planes`, `box_trees`, `cpu_max`).

    ``op``: "avg_pool" (``float32_sums``: the average sums in float32,
    `_cpu_drivers.sum_dtype`; ``float64``: float64 results), "max_pool" (values only, no
    arg-max) or "max_pool_index" (values and arg-max). Only 1-D and 2-D undilated windows
    qualify; the choice rests on the window's shape and the plane's size
    (`SMALL_PLANE_CELLS`, `SMALL_MAX_CELLS`, `SMALL_PLANE_CELLS_F64`, `SAME_PLANE_CELLS`,
    `SAME_WIDE_CELLS`, `INDEX_PLANE_CELLS`, `TILES_PLANE_CELLS`, `SAME_MAX_CELLS`, where the
    measurements are),
    whatever the number of planes.

    >>> from avgpool.window import Window
    >>> small_planes_kernel("avg_pool", Window((3, 3), (1, 1), 1).resolve((35, 35)), True)
    'flat_planes.avg_same'
    >>> small_planes_kernel("max_pool", Window((2, 2), (2, 2)).resolve((28, 28)))
    'flat_planes.max_tiles'
    >>> small_planes_kernel("max_pool", Window((3, 3), (2, 2)).resolve((14, 14)))
    'small_planes.max_small'
    >>> small_planes_kernel("max_pool", Window((3, 3), (2, 2)).resolve((35, 35)))
    'small_planes.max_small'
    >>> small_planes_kernel("max_pool", Window((3, 3), (2, 2)).resolve((71, 71))) is None
    True
    """
    if len(axes) > 2 or any(a.dilation != 1 for a in axes):
        return None
    cells = math.prod(a.size for a in axes)
    tiles = tiled_window(axes) and axes[-1].kernel <= 2 and cells <= TILES_PLANE_CELLS
    if op == "avg_pool":
        if same_window(axes) and cells <= (SAME_PLANE_CELLS if float32_sums or float64 else SAME_WIDE_CELLS):
            return "flat_planes.avg_same"
        if tiles:
            return "flat_planes.avg_tiles"
        return (
            "small_planes.avg_small"
            if cells <= (SMALL_PLANE_CELLS_F64 if float64 else SMALL_PLANE_CELLS)
            else None
        )
    if op == "max_pool":
        if same_window(axes) and max(a.kernel for a in axes) <= 3 and cells <= SAME_MAX_CELLS:
            return "flat_planes.max_same"
        if tiles:
            return "flat_planes.max_tiles"
        return "small_planes.max_small" if cells <= SMALL_MAX_CELLS else None
    if op == "max_pool_index":
        return "small_planes.max_small_index" if cells <= INDEX_PLANE_CELLS else None
    return None


@functools.lru_cache(maxsize=TABLES_CACHED)
def small_avg_plan(
    axes: tuple[Axis, ...],
    count_include_pad: bool,
    divisor_override: int | None,
    float32_sums: bool,
    float64: bool = False,
) -> tuple[str, tuple] | None:
    """(kernel name, its tables) for a channels-first average of this geometry when a
    small-plane kernel serves it (`small_planes_kernel`), else None; kept per geometry.
    `small_planes.run_avg` takes the pair."""
    name = small_planes_kernel("avg_pool", axes, float32_sums, float64)
    if name is None:
        return None
    if name == "flat_planes.avg_same":
        return name, small_same_tables(axes, count_include_pad, divisor_override, float32_sums)
    if name == "flat_planes.avg_tiles":
        return name, small_tiles_tables(axes, divisor_override)
    return name, small_avg_tables(axes, count_include_pad, divisor_override)


@functools.lru_cache(maxsize=TABLES_CACHED)
def small_max_plan(axes: tuple[Axis, ...], with_index: bool) -> tuple[str, tuple] | None:
    """As `small_avg_plan` for max pooling, values only or with indices
    (`small_planes.run_max` takes the pair)."""
    name = small_planes_kernel("max_pool_index" if with_index else "max_pool", axes)
    if name is None:
        return None
    if name == "flat_planes.max_same":
        return name, small_same_masks(axes)
    return name, small_tiles_tables(axes)[:3] if name == "flat_planes.max_tiles" else small_max_tables(axes)
