"""Blur and adaptive pooling of Dask arrays: the NumPy op's own tap tables, cut per block.

These ops are sums (or maxima) over per-axis tables of taps: for output ``o`` and tap ``j``
an input cell ``pos[o, j]`` (blur's reflected and replicated padding already resolved to
the real cell it copies) and a weight (`avgpool.reference.Taps`). A block of outputs takes
its rows of the whole array's tables, shifted to the input cells it reads (the span of
their taps: its chunk and a halo), and runs the kernel the NumPy op runs on the whole array
with those rows. Each output then adds the same products in the same order, so the result
is the NumPy op's bit for bit; the gradients scatter the same way, each input block from the
outputs whose taps reach it.
"""

from __future__ import annotations

import bisect
import dataclasses
import functools
import itertools
from collections.abc import Sequence

import dask.array as da
import numpy as np

from avgpool import _dispatch
from avgpool import reference as ref
from avgpool._arrays import Layout
from avgpool._cpu_calls import Planned
from avgpool._cpu_drivers import _kernel_dtype, _shape4
from avgpool._cpu_max_drivers import _lowest
from avgpool._cpu_plans import tap_tables
from avgpool._cpu_taps import tap_sum_dtype, taps_scatter, two_passes
from avgpool.dask._blocks import offsets
from avgpool.dask._graph import Read, blocks
from avgpool.dask._local import INDEX, globalize, localize, spatial_axes


def _reach(taps: ref.Taps) -> tuple[np.ndarray, np.ndarray]:
    """Per output, its first and last real input cell (-1, -1 for none)."""
    real = taps.real
    first = np.where(real, taps.pos, np.iinfo(INDEX).max).min(axis=1)
    last = np.where(real, taps.pos, -1).max(axis=1)
    return np.where(real.any(axis=1), first, -1), last


def _cut(taps: ref.Taps, o0: int, o1: int, lo: int, hi: int) -> ref.Taps:
    """Outputs [o0, o1) of an axis's table, read from the input cells [lo, hi)."""
    real = taps.real[o0:o1]
    pos = np.where(real, taps.pos[o0:o1] - lo, 0)
    return ref.Taps(hi - lo, pos, real, taps.counted[o0:o1], taps.weight[o0:o1])


def _stretch(first: np.ndarray, last: np.ndarray, o0: int, o1: int) -> tuple[int, int]:
    """The input cells outputs [o0, o1) read (at least one cell: a block keeps its rank)."""
    reached = first[o0:o1] >= 0
    if not reached.any():
        return 0, 1
    return int(first[o0:o1][reached].min()), int(last[o0:o1].max()) + 1


def output_reads(taps: ref.Taps, chunks: Sequence[int]) -> list[Read]:
    """Blocks of outputs that follow the input's chunks: each takes the outputs whose first
    tap lies in one chunk, and reads the cells all their taps reach."""
    first, last = _reach(taps)
    ordered = np.maximum.accumulate(np.where(first >= 0, first, 0))
    cuts = {0, taps.out}
    for c in offsets(chunks)[1:-1]:
        o = bisect.bisect_left(ordered, c)
        if 0 < o < taps.out:
            cuts.add(o)
    reads = []
    for o0, o1 in itertools.pairwise(sorted(cuts)):
        lo, hi = _stretch(first, last, o0, o1)
        reads.append(Read(o1 - o0, ((lo, hi),), _cut(taps, o0, o1, lo, hi)))
    return reads


@dataclasses.dataclass(frozen=True)
class Gather:
    """An input block ``[i0, i0 + size)`` of a gradient: the outputs whose taps reach it, as
    their cut table (None when none does), and the cells ``[lo, hi)`` those taps read."""

    i0: int
    taps: ref.Taps | None
    lo: int
    hi: int


def input_reads(taps: ref.Taps, chunks: Sequence[int], sources: int) -> list[Read]:
    """Blocks of input cells (chunked ``chunks``) for a gradient: each reads, from each of
    ``sources`` output-space arrays, the outputs whose taps reach it (`Gather`)."""
    first, last = _reach(taps)
    reads = []
    for i0, i1 in itertools.pairwise(offsets(chunks)):
        # the outputs whose first-to-last tap hull meets the block: every output with a tap in
        # it, and perhaps a neighbour whose taps skip it (it adds nothing there)
        hits = (first >= 0) & (first < i1) & (last >= i0)
        if not hits.any():
            reads.append(Read(i1 - i0, ((0, 0),) * sources, Gather(i0, None, i0, i0)))
            continue
        found = np.flatnonzero(hits)
        g0, g1 = int(found[0]), int(found[-1]) + 1
        lo, hi = _stretch(first, last, g0, g1)
        reads.append(Read(i1 - i0, ((g0, g1),) * sources, Gather(i0, _cut(taps, g0, g1, lo, hi), lo, hi)))
    return reads


def grad_chunks(taps: ref.Taps, chunks: Sequence[int]) -> tuple[int, ...]:
    """Input-space chunks for a gradient chunked ``chunks`` in output space: a cut at each
    output chunk's first tap."""
    first, _ = _reach(taps)
    cuts = {0, taps.size}
    for o in offsets(chunks)[1:-1]:
        if 0 < first[o] < taps.size:
            cuts.add(int(first[o]))
    return tuple(b - a for a, b in itertools.pairwise(sorted(cuts)))


# -- block functions ---------------------------------------------------------------------------


def _sum_planned(layout: Layout, tables, dtype, rows: bool) -> Planned:
    """`avgpool._cpu_taps.plan_taps_sum` with its kernel chosen for the whole array."""
    from avgpool.kernels import cpu_taps

    view, c = _shape4(layout.full_shape, layout.channels_last, layout.ndim)
    out_view, _ = _shape4(layout.out_full_shape(tables.out), layout.channels_last, layout.ndim)
    if rows:
        kernel, args = cpu_taps.taps_sum_rows, (c, *tables.rows, 1, np.empty(0, tap_sum_dtype(dtype, tables)))
    else:
        kernel, args = cpu_taps.taps_sum, (c, *tables.weight)
    out_shape = layout.out_shape(tables.out)
    return Planned(
        kernel, args, view=view, out_shape=out_shape, out_view=out_view, dtype=dtype, nbytes=0, path="taps"
    )


def _sum_block(ndim: int, channels_last: bool, rows: bool, local: np.ndarray, reads) -> np.ndarray:
    taps = [r.info for r in reads]
    layout = Layout.of(local.shape, ndim, channels_last)
    if _dispatch.get_backend() != "numba" or local.size == 0:
        return layout.from_work(ref.weighted_sum(layout.to_work(local), taps), local.dtype)
    return _sum_planned(layout, tap_tables(taps), local.dtype, rows)(local)


def _max_block(ndim: int, channels_last: bool, spatial: tuple, local: np.ndarray, reads):
    taps = [r.info for r in reads]
    layout = Layout.of(local.shape, ndim, channels_last)
    if _dispatch.get_backend() != "numba" or local.size == 0:
        y, index = ref.max_forward(layout.to_work(local), taps)
        y, index = layout.from_work(y, local.dtype), layout.from_work(index, INDEX)
    else:
        from avgpool.kernels import cpu_taps

        tables = tap_tables(taps)
        view, c = _shape4(layout.full_shape, layout.channels_last, layout.ndim)
        out_view, _ = _shape4(layout.out_full_shape(tables.out), layout.channels_last, layout.ndim)
        args = (c, *tables.real, _lowest(_kernel_dtype(local.dtype)))
        planned = Planned(
            cpu_taps.taps_max,
            args,
            view=view,
            out_shape=layout.out_shape(tables.out),
            out_view=out_view,
            dtype=local.dtype,
            nbytes=0,
            path="taps",
            index=True,
        )
        y, index = planned(local)
    return y, globalize(index, layout.spatial, [r.lo for r in reads], spatial)


def _gathered(grad: np.ndarray, dims: Sequence[int], reads, compute) -> np.ndarray:
    """A gradient block: ``compute(layout of the stretch, cut tables)`` over the cells the
    reaching outputs read, then the block's cells out of it (0 where no tap reaches)."""
    shape, stretch = list(grad.shape), list(grad.shape)
    for d, r in zip(dims, reads):
        shape[d], stretch[d] = r.size, r.info.hi - r.info.lo
    block = np.zeros(shape, grad.dtype)
    if any(r.info.taps is None for r in reads):
        return block
    src, dst = [slice(None)] * grad.ndim, [slice(None)] * grad.ndim
    for d, r in zip(dims, reads):
        g = r.info
        a, b = max(g.i0, g.lo), min(g.i0 + r.size, g.hi)
        if a >= b:
            return block
        src[d], dst[d] = slice(a - g.lo, b - g.lo), slice(a - g.i0, b - g.i0)
    local = compute(tuple(stretch), [r.info.taps for r in reads])
    block[tuple(dst)] = local[tuple(src)]
    return block


def _scatter_block(ndim: int, channels_last: bool, dims, acc, grad: np.ndarray, reads) -> np.ndarray:
    def compute(shape, taps):
        layout = Layout.of(shape, ndim, channels_last, "input_shape")
        if _dispatch.get_backend() != "numba" or grad.size == 0:
            grad_layout = Layout(layout.out_shape([t.out for t in taps]), ndim, channels_last)
            return layout.from_work(ref.scatter(grad_layout.to_work(grad), taps), grad.dtype)
        return taps_scatter(grad, layout, tap_tables(taps), acc)

    return _gathered(grad, dims, reads, compute)


def _index_block(ndim, channels_last, dims, spatial, grad, index, reads) -> np.ndarray:
    def compute(shape, taps):
        layout = Layout.of(shape, ndim, channels_last)
        local_index = localize(index, spatial, [r.info.lo for r in reads], layout.spatial)
        return _dispatch.max_backward(grad, local_index, layout, [t.out for t in taps])

    return _gathered(grad, dims, reads, compute)


# -- the ops -----------------------------------------------------------------------------------


def _rows(layout: Layout, taps: Sequence[ref.Taps]) -> bool:
    """Whether the NumPy op sums these taps on the whole array in two passes
    (`avgpool._cpu_taps.two_passes`), so that every block sums in the same order."""
    view, c = _shape4(layout.full_shape, layout.channels_last, layout.ndim)
    return two_passes(tap_tables(taps), c, view)


def taps_sum(x: da.Array, layout: Layout, taps: Sequence[ref.Taps], name: str, token) -> da.Array:
    dims = spatial_axes(layout)
    reads = [output_reads(t, x.chunks[d]) for t, d in zip(taps, dims)]
    fn = functools.partial(_sum_block, layout.ndim, layout.channels_last, _rows(layout, taps))
    (y,) = blocks([x], dims, reads, fn, [x.dtype], name, token)
    return y


def taps_max(x: da.Array, layout: Layout, taps: Sequence[ref.Taps], token) -> tuple[da.Array, da.Array]:
    dims = spatial_axes(layout)
    reads = [output_reads(t, x.chunks[d]) for t, d in zip(taps, dims)]
    fn = functools.partial(_max_block, layout.ndim, layout.channels_last, layout.spatial)
    y, index = blocks([x], dims, reads, fn, [x.dtype, INDEX], "adaptive-max-pool", token)
    return y, index


def taps_scatter_grad(grad: da.Array, layout: Layout, taps: Sequence[ref.Taps], name: str, token) -> da.Array:
    """The transposed taps sum: chunked like the gradient's outputs, mapped to input cells."""
    dims = spatial_axes(layout)
    reads = [input_reads(t, grad_chunks(t, grad.chunks[d]), 1) for t, d in zip(taps, dims)]
    acc = tap_sum_dtype(grad.dtype, tap_tables(taps).transposed)  # the whole array's
    fn = functools.partial(_scatter_block, layout.ndim, layout.channels_last, dims, acc)
    (y,) = blocks([grad], dims, reads, fn, [grad.dtype], name, token)
    return y


def index_scatter_grad(
    grad: da.Array, index: da.Array, x: da.Array, layout: Layout, taps: Sequence[ref.Taps], token
) -> da.Array:
    """The max gradient: each output's grad at its arg-max (``index``, flat in the whole
    plane), chunked as ``x``; each block gathers from the outputs whose taps reach it."""
    dims = spatial_axes(layout)
    reads = [input_reads(t, x.chunks[d], 2) for t, d in zip(taps, dims)]
    fn = functools.partial(_index_block, layout.ndim, layout.channels_last, dims, layout.spatial)
    (y,) = blocks([grad, index], dims, reads, fn, [grad.dtype], "adaptive-max-backward", token)
    return y
