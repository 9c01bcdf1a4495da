"""The task graph of a chunked pooling: one task per output block, reading only its inputs.

`blocks` is the one graph builder every op uses. Along each spatial axis the caller gives
the output blocks as `Read` s: the source cells ``[lo, hi)`` a block reads and how many
output cells it makes; the batch and channel axes keep the source's chunks. Each output
block's task takes the chunks that hold its cells: a chunk it needs whole (or mostly) as it
is, and from a neighbouring chunk only the few cells its windows reach (a halo, cut out by a
small task of its own, so a whole neighbour never travels for it). It joins them into the
cells ``[lo, hi)`` and hands those to the caller's block function with the block's `Read` s,
which computes with the NumPy backend. No task reads the whole array unless one block's
windows cover it.
"""

from __future__ import annotations

import itertools
import math
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import dask.array as da
import numpy as np
from dask.array.core import concatenate3
from dask.base import tokenize
from dask.highlevelgraph import HighLevelGraph

from avgpool._buffers import unpooled
from avgpool.dask._blocks import chunk_range, offsets


@dataclass(frozen=True)
class Read:
    """One block along one spatial axis: it makes ``size`` output cells from the cells
    ``[lo, hi)`` of each source (one pair per source); ``info`` is whatever the block
    function needs about it."""

    size: int
    cells: tuple[tuple[int, int], ...]
    info: Any = None

    @property
    def lo(self) -> int:
        return self.cells[0][0]

    @property
    def hi(self) -> int:
        return self.cells[0][1]


def _nested(keys: Callable[[tuple[int, ...]], tuple], ranges: Sequence[range]) -> Any:
    """Nested lists of ``keys(index)`` over the product of ``ranges`` (concatenate3's input)."""
    if not ranges:
        return keys(())
    head, rest = ranges[0], ranges[1:]
    return [_nested(lambda tail, i=i: keys((i, *tail)), rest) for i in head]


def _run(fn: Callable, reads: tuple, *parts: Any) -> Any:
    """Join each source's pieces (its chunks, or the cells of a chunk a block needs) and
    compute the block, its result outside avgpool's buffer pool: Dask owns it from here (a
    worker frees memory by spilling results, which a pooled block would not give back)."""
    with unpooled():
        return fn(*(np.ascontiguousarray(concatenate3(p)) for p in parts), reads)


def _pieces(starts: Sequence[int], lo: int, hi: int) -> list[tuple[int, slice]]:
    """(chunk, the cells of it in [lo, hi)) for each chunk that holds some; for no cells, an
    empty cut of the chunk around ``lo`` (every block's arrays keep their rank)."""
    pieces = []
    for c in chunk_range(starts, lo, hi):
        a, b = starts[c], starts[c + 1]
        first = min(max(lo, a), b)
        pieces.append((c, slice(first - a, max(min(hi, b), first) - a)))
    return pieces


def blocks(
    sources: Sequence[da.Array],
    spatial: Sequence[int],
    reads: Sequence[Sequence[Read]],
    fn: Callable[..., Any],
    metas: Sequence[np.dtype],
    name: str,
    token: Any,
) -> tuple[da.Array, ...]:
    """The arrays (one per dtype of ``metas``) made by ``fn`` on each block of ``sources``.

    ``spatial``: the spatial axes (the same in every source), in order; ``reads``: per
    spatial axis, its blocks. ``fn(*locals, reads)`` gets each source's cells for the block
    (the batch and channel axes whole for the chunk) and the block's `Read` per spatial
    axis, and returns the block's array (a tuple of arrays with more than one entry in
    ``metas``). Other axes keep the first source's chunks (the others are rechunked to them).
    """
    first = sources[0]
    place = {axis: i for i, axis in enumerate(spatial)}
    sources = [first] + [
        s.rechunk({a: first.chunks[a] for a in range(first.ndim) if a not in place}) for s in sources[1:]
    ]
    starts = [[offsets(c) for c in s.chunks] for s in sources]
    out_chunks = list(first.chunks)
    for axis, axis_reads in zip(spatial, reads):
        out_chunks[axis] = tuple(r.size for r in axis_reads)
    key = f"{name}-{tokenize(*(s.name for s in sources), token)}"
    halo = f"{key}-halo"
    layer: dict[tuple, Any] = {}
    halos: dict[tuple, tuple] = {}  # (source, chunk, cut) -> the task cutting those cells out
    halo_layer: dict[tuple, Any] = {}
    per_axis = [
        range(len(first.chunks[a])) if a not in place else range(len(reads[place[a]]))
        for a in range(first.ndim)
    ]

    def piece(k: int, chunk: tuple[int, ...], cut: tuple[slice, ...]) -> tuple:
        """A chunk's key; or, for a part of it, the cut done in the block's task (most of the
        chunk) or by a task of its own (a halo: only those cells move to the block's task)."""
        sizes = [sources[k].chunks[a][i] for a, i in enumerate(chunk)]
        key = (sources[k].name, *chunk)
        if all(c.start == 0 and c.stop == n for c, n in zip(cut, sizes)):
            return key
        if 2 * math.prod(c.stop - c.start for c in cut) >= math.prod(sizes):
            return (operator.getitem, key, cut)  # most of the chunk: cut in the block's task
        spec = (k, chunk, tuple((c.start, c.stop) for c in cut))
        if spec not in halos:
            halos[spec] = (halo, len(halos))
            halo_layer[halos[spec]] = (operator.getitem, (sources[k].name, *chunk), cut)
        return halos[spec]

    for index in itertools.product(*per_axis):
        block_reads = tuple(reads[place[a]][i] for a, i in enumerate(index) if a in place)
        parts = []
        for k, source in enumerate(sources):
            axes_pieces = []
            for axis, i in enumerate(index):
                if axis in place:
                    lo, hi = reads[place[axis]][i].cells[k]
                    axes_pieces.append(_pieces(starts[k][axis], lo, hi))
                else:
                    axes_pieces.append([(i, slice(0, source.chunks[axis][i]))])
            ranges = [range(len(p)) for p in axes_pieces]

            def keys(at: tuple[int, ...], k=k, axes_pieces=axes_pieces) -> tuple:
                chosen = [axes_pieces[a][j] for a, j in enumerate(at)]
                return piece(k, tuple(c for c, _ in chosen), tuple(cut for _, cut in chosen))

            parts.append(_nested(keys, ranges))
        layer[(key, *index)] = (_run, fn, block_reads, *parts)
    layers, dependencies = {}, {}
    for source in sources:
        graph = source.__dask_graph__()
        layers.update(graph.layers)
        dependencies.update(graph.dependencies)
    names = {s.name for s in sources}
    if halo_layer:
        layers[halo], dependencies[halo] = halo_layer, set(names)
        names.add(halo)
    layers[key], dependencies[key] = layer, names
    graph = HighLevelGraph(layers, dependencies)
    chunks = tuple(out_chunks)
    empty = (0,) * first.ndim
    if len(metas) == 1:
        return (da.Array(graph, key, chunks, meta=np.empty(empty, metas[0])),)
    whole = da.Array(graph, key, chunks, meta=np.empty(empty))
    arrays = []
    for k, dtype in enumerate(metas):
        part = f"{key}-{k}"
        picks = {(part, *idx[1:]): (operator.getitem, idx, k) for idx in layer}
        part_graph = HighLevelGraph.from_collections(part, picks, dependencies=[whole])
        arrays.append(da.Array(part_graph, part, chunks, meta=np.empty(empty, dtype)))
    return tuple(arrays)
