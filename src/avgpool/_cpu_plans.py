"""Per-geometry tables for the CPU kernels, built once from shapes and kept.

A resolved geometry (a tuple of `Axis`) becomes the plain int and float arrays the kernels
take: ``geo`` (kernel, stride, dilation, pad_before per axis D, H, W), the average's divisor
factors, reciprocals and cover tables, the tree kernel's sum plans and the tap tables of
adaptive and blur pooling. Everything here is shape arithmetic, with no data array: each
table is cached per geometry, read-only, and serves every call whatever the batch, channels
or dtype. Which kernel takes small channels-first planes, and its tables, is `_small_plans`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from avgpool.window import Axis

_UNIT = np.array([1, 1, 1, 0], dtype=np.int64)  # an absent axis: kernel 1, stride 1, dilation 1, pad 0


def _geo(axes: Sequence[Axis]) -> np.ndarray:
    rows = [_UNIT] * (3 - len(axes)) + [
        np.array([a.kernel, a.stride, a.dilation, a.pad_before], dtype=np.int64) for a in axes
    ]
    return np.stack(rows)


def tap_counts(axes: Sequence[Axis], count_include_pad: bool) -> list[np.ndarray]:
    """Per-axis number of counted taps of each window (the divisor is their product)."""
    counts = [np.ones(1)] * (3 - len(axes))
    for a in axes:
        # taps j < kernel with lo <= start + j*dilation < hi, counted by arithmetic: a table
        # of every tap would take out*kernel memory
        start = np.arange(a.out, dtype=np.int64) * a.stride - a.pad_before
        lo, hi = (-a.pad_before, a.size + a.pad_after) if count_include_pad else (0, a.size)
        first = np.maximum(0, -((start - lo) // a.dilation))
        last = np.minimum(a.kernel - 1, (hi - 1 - start) // a.dilation)
        counts.append(np.maximum(last - first + 1, 0).astype(np.float64))
    return counts


#: The shapes of `box_trees._tree` by number of terms: each term's depth in the tree.
TREE_SHAPES = {
    1: (0,),
    2: (1, 1),
    3: (2, 2, 1),
    4: (2, 2, 2, 2),
    5: (2, 2, 3, 3, 2),
    6: (3, 3, 3, 3, 2, 2),
    7: (3, 3, 3, 3, 3, 3, 2),
}

#: `box_trees.avg_planes_tree`'s windows: each output is a tree of float32 additions at most this
#: deep (both axes), then three roundings in the scaling and one in the float32 divisor: its
#: error stays within 16 * 2**-24 = 9.5e-7 of the window's mean magnitude (within the 1e-6
#: the kernels promise). 15x15 is 5 + 5 deep; 31x31 (7 + 7) goes to `box_planes.avg_planes`.
TREE_DEPTH = 12

#: ... and each axis at most this long (a buffer of rows per block level down a strip).
TREE_MAX = 64


@functools.lru_cache(maxsize=2 * TREE_MAX)
def tree_plan(k: int) -> np.ndarray:
    """How `box_trees.avg_planes_tree` sums a window of ``k`` cells along an axis:
    ``[levels, terms, (level, offset) per term]``, padded to 16 (read-only: one per ``k``,
    kept, as building it on every call would cost more than a small call's work). Terms are
    blocks of ``4 << j`` cells (level ``j + 1``), largest first, then up to three single
    cells (level 0).

    >>> tree_plan(15)[:12].tolist()  # 15 = 8 + 4 + 1 + 1 + 1
    [2, 5, 2, 0, 1, 8, 0, 12, 0, 13, 0, 14]
    """
    terms = [(j + 1, 4 << j) for j in range((k >> 2).bit_length() - 1, -1, -1) if k >> (j + 2) & 1]
    terms += [(0, 1)] * (k & 3)
    plan = [(k >> 2).bit_length(), len(terms)]
    at = 0
    for level, size in terms:
        plan += [level, at]
        at += size
    plan = np.array(plan + [0] * (16 - len(plan)), dtype=np.int64)
    plan.flags.writeable = False
    return plan


@functools.lru_cache(maxsize=2 * TREE_MAX)
def tree_depth(k: int) -> int:
    """How many float32 additions deep `box_trees.avg_planes_tree`'s sum of ``k`` cells is.

    >>> tree_depth(15), tree_depth(7), tree_depth(64), tree_depth(1)
    (5, 4, 6, 0)
    """
    plan = tree_plan(k)
    levels = plan[2 : 2 + 2 * plan[1] : 2]
    own = [int(level) + 1 if level else 0 for level in levels]  # a block of 4 << j: j + 2 deep
    return max(a + b for a, b in zip(own, TREE_SHAPES[int(plan[1])], strict=True))


def tree_window(geo: np.ndarray) -> bool:
    """Whether `box_trees.avg_planes_tree` takes a channels-first float32 window: one depth deep,
    stride 1 along W, 4 or more cells along H or W, at most ``TREE_MAX`` along each, and sums
    no deeper than ``TREE_DEPTH``."""
    kd, (kh, kw, sw) = geo[0, 0], (int(geo[1, 0]), int(geo[2, 0]), geo[2, 1])
    if kd != 1 or sw != 1 or max(kh, kw) < 4 or max(kh, kw) > TREE_MAX:
        return False
    return tree_depth(kh) + tree_depth(kw) <= TREE_DEPTH


#: Resolved geometries whose kernel tables are kept (each entry holds a few small arrays).
TABLES_CACHED = 1024


class Plan(NamedTuple):
    """A resolved geometry as the box and max kernels take it, built once per geometry.

    ``tables`` are the op's per-axis arrays: (factor, zero, real) for the average's forward
    (`avg_plan`), (inv, cover_h, cover_w, inv_h) for its backward (`avg_backward_plan`), ()
    for max (`max_plan`). Every array is read-only: one plan serves every call.
    """

    geo: np.ndarray
    out: tuple[int, ...]
    undilated: bool  #: no axis is dilated (the average's plane kernel takes 3-D too)
    whole: bool  #: every window is the whole input (a global window): one output per plane
    reads: float  #: how many windows read an input cell: taps per window over the strides' product
    tables: tuple

    @property
    def planes(self) -> bool:
        """The 1-D/2-D plane kernels apply (to channels-first data): at most 2 axes, undilated."""
        return self.undilated and len(self.out) <= 2


def _read_only(value):
    """Arrays (in tuples, at any depth) made read-only, so no caller can change a kept table."""
    if isinstance(value, tuple):
        return tuple(_read_only(v) for v in value)
    if isinstance(value, np.ndarray):
        value.flags.writeable = False
    return value


def _plan_of(axes: tuple[Axis, ...], tables: tuple) -> Plan:
    return Plan(
        _read_only(_geo(axes)),
        tuple(a.out for a in axes),
        all(a.dilation == 1 for a in axes),
        all(
            a.out == 1 and a.kernel == a.size and a.dilation == 1 and a.pad_before == a.pad_after == 0
            for a in axes
        ),
        math.prod(a.kernel for a in axes) / math.prod(a.stride for a in axes),
        _read_only(tables),
    )


@functools.lru_cache(maxsize=TABLES_CACHED)
def max_plan(axes: tuple[Axis, ...]) -> Plan:
    """The max kernels' geometry, kept per resolved geometry."""
    return _plan_of(axes, ())


@functools.lru_cache(maxsize=TABLES_CACHED)
def avg_plan(axes: tuple[Axis, ...], count_include_pad: bool, divisor_override: int | None) -> Plan:
    """The average's forward tables ``(factor, zero, real)``, kept per resolved geometry.

    Pure shape arithmetic, so one entry serves every call with these axes, whatever the
    batch, channels or dtype.
    """
    counts = tap_counts(axes, count_include_pad)
    width = max(len(n) for n in counts)
    factor, zero, real = np.ones((3, width)), np.zeros((3, width), np.bool_), np.zeros((3, width), np.bool_)
    for i, (n, r) in enumerate(zip(counts, tap_counts(axes, False))):
        if divisor_override is None:
            factor[i, : len(n)] = n
            zero[i, : len(n)] = n == 0
        elif i == 0:
            factor[i, : len(n)] = divisor_override
        real[i, : len(r)] = r > 0
    return _plan_of(axes, (factor, zero, real))


@functools.lru_cache(maxsize=TABLES_CACHED)
def avg_backward_plan(axes: tuple[Axis, ...], count_include_pad: bool, divisor_override: int | None) -> Plan:
    """The average's backward tables ``(inv, cover_h, cover_w, inv_h)``, kept per geometry.

    ``inv``: per axis (D, H, W) the reciprocal divisors; ``inv_h``: the plane kernel's H
    factor (a divisor override lives in the absent depth factor).
    """
    if divisor_override is not None:
        inv = [np.ones(1)] * (3 - len(axes)) + [np.ones(a.out) for a in axes]
        inv[0] = inv[0] / divisor_override
    else:
        with np.errstate(divide="ignore"):
            inv = [np.where(n > 0, 1.0 / n, 0.0) for n in tap_counts(axes, count_include_pad)]
    covers = [_cover(a) for a in axes[-2:]]
    cover_h, cover_w = ([np.zeros((1, 2), np.int64)] * (2 - len(covers))) + covers
    return _plan_of(axes, (tuple(inv), cover_h, cover_w, inv[1] * inv[0][0]))


def _cover(a: Axis) -> np.ndarray:
    """(size, 2): the first and last output whose undilated window covers each input cell."""
    i = np.arange(a.size)
    lo = np.maximum(-((a.kernel - 1 - i - a.pad_before) // a.stride), 0)
    hi = np.minimum((i + a.pad_before) // a.stride, a.out - 1)
    return np.stack([lo, hi], axis=1).astype(np.int64)


def _axis_taps(a: Axis) -> np.ndarray:
    """(out, kernel): each window's input cells along one axis, -1 for a tap in the padding."""
    taps = np.arange(a.out)[:, None] * a.stride - a.pad_before + a.dilation * np.arange(a.kernel)
    return np.where((taps >= 0) & (taps < a.size), taps, -1)


def _cells(per_axis: Sequence[np.ndarray], axes: Sequence[Axis]) -> np.ndarray:
    """(outputs, taps): each window's flat row-major input cells, -1 for a tap in the padding."""
    cells = np.zeros((1, 1), np.int64)  # (outputs so far, taps so far)
    for a, taps in zip(axes, per_axis, strict=True):
        flat = cells[:, None, :, None] * a.size + taps[None, :, None, :]
        real = (cells[:, None, :, None] >= 0) & (taps[None, :, None, :] >= 0)
        cells = np.where(real, flat, -1).reshape(cells.shape[0] * a.out, -1)
    return cells


@functools.lru_cache(maxsize=TABLES_CACHED)
def disjoint_windows(axes: tuple[Axis, ...]) -> tuple[np.ndarray, np.ndarray] | None:
    """For windows that share no input cell: ``(cells, lonely)``, each window's input cells
    (outputs x taps, flat row-major indices, -1 for a tap in the padding) and the cells no
    window reads; None when some cell is read by two windows. Read-only, kept per geometry."""
    per_axis = [_axis_taps(a) for a in axes]
    # windows that share a cell along one axis share one in N-d when every axis has a real
    # cell: refused here, before a table of every output's taps is built
    shared = [np.bincount(t[t >= 0], minlength=1).max() > 1 for t in per_axis]
    if any(shared) and all((t >= 0).any() for t in per_axis):
        return None
    cells = _cells(per_axis, axes)
    reads = np.bincount(cells[cells >= 0], minlength=math.prod(a.size for a in axes))
    if reads.max(initial=0) > 1:
        return None
    return _read_only((cells, np.flatnonzero(reads == 0).astype(np.int64)))


#: The most entries (outputs x taps) of a `window_cells` table: 8 MiB of int64.
WINDOW_CELLS_MOST = 1 << 20


@functools.lru_cache(maxsize=TABLES_CACHED)
def window_cells(axes: tuple[Axis, ...]) -> np.ndarray | None:
    """Each window's input cells (outputs x taps, flat row-major indices, -1 for a tap in the
    padding), windows that share cells or not; None past `WINDOW_CELLS_MOST` entries.
    Read-only, kept per geometry."""
    if math.prod(a.out * a.kernel for a in axes) > WINDOW_CELLS_MOST:
        return None
    return _read_only(_cells([_axis_taps(a) for a in axes], axes))


def _tables(taps: Sequence, field: str) -> list[np.ndarray]:
    from avgpool.kernels.cpu_taps import unit_table

    pos1, w1 = unit_table()
    unit = w1 if field != "real" else w1.astype(bool)
    out: list[np.ndarray] = []
    for _ in range(3 - len(taps)):
        out += [pos1, unit]
    for t in taps:
        pos = np.where(t.real, t.pos, 0).astype(np.int64)
        out += [pos, np.ascontiguousarray(getattr(t, field))]
    return out


@dataclass(frozen=True, eq=False)
class TapTables:
    """Tap tables as the tap kernels take them, built once per geometry (see `tap_tables`).

    ``out``: the output's spatial sizes; ``weight`` and ``real``: per axis (D, H, W) the tap
    positions followed by their weights, or by whether each tap reads a real cell (an absent
    axis has one unit tap); ``sizes``: the input's spatial sizes (D, H, W), 1 for an absent
    axis.
    """

    out: tuple[int, ...]
    weight: tuple[np.ndarray, ...]
    real: tuple[np.ndarray, ...]
    sizes: tuple[int, int, int]

    @property
    def rows(self) -> tuple[np.ndarray, ...]:
        """`weight` with the W axis's tables transposed to (taps, out), as
        `cpu_taps.taps_sum_rows` takes them: a tap of weight 0 reads position W, the zero cell
        past the end of the kernel's row buffer, so that no tap needs a test."""
        return self.weight[:4] + self._w_by_tap

    @functools.cached_property
    def _w_by_tap(self) -> tuple[np.ndarray, np.ndarray]:
        pos, weight = (np.ascontiguousarray(t.T) for t in self.weight[4:])
        return _read_only((np.where(weight != 0.0, pos, self.sizes[2]).astype(np.int64), weight))

    @functools.cached_property
    def transposed(self) -> TapTables:
        """The tables of the transpose (the backward): per input cell along each axis, the
        outputs whose taps of nonzero weight read it, with those weights, in (output, tap)
        order, padded with weight 0; its ``out`` is the input's sizes and its ``sizes`` the
        output's."""
        tables = []
        for a in range(3):
            pos, weight = self.weight[2 * a], self.weight[2 * a + 1]
            reads: list[list[tuple[int, float]]] = [[] for _ in range(self.sizes[a])]
            for o, j in zip(*np.nonzero(weight)):
                reads[pos[o, j]].append((int(o), float(weight[o, j])))
            t_pos = np.zeros((self.sizes[a], max(1, *map(len, reads))), np.int64)
            t_weight = np.zeros(t_pos.shape)
            for i, cell in enumerate(reads):
                for k, (o, w) in enumerate(cell):
                    t_pos[i, k], t_weight[i, k] = o, w
            tables += [t_pos, t_weight]
        ndim = len(self.out)
        sizes = (1,) * (3 - ndim) + tuple(self.out)
        real = tuple(t if i % 2 == 0 else t != 0 for i, t in enumerate(tables))
        return TapTables(self.sizes[3 - ndim :], _read_only(tuple(tables)), _read_only(real), sizes)


def tap_tables(taps: Sequence) -> TapTables:
    """Kernel-ready, read-only tables of per-axis `avgpool.reference.Taps`."""
    weight, real = _read_only(tuple(_tables(taps, "weight"))), _read_only(tuple(_tables(taps, "real")))
    sizes = (1,) * (3 - len(taps)) + tuple(t.size for t in taps)
    return TapTables(tuple(t.out for t in taps), weight, real, sizes)
