"""The task graph of a chunked pooling: one task per output block, reading only its inputs.

`blocks` is the one graph builder every op uses. Along each spatial axis the caller gives
the output blocks as `Read` s: the source cells ``[lo, hi)`` a block reads and how many
output cells it makes; the batch and channel axes keep the source's chunks. Each output
block's task takes the source chunks that hold its cells (its own and a halo of
neighbours, never the whole array unless one block needs it), joins them, cuts out
``[lo, hi)`` and hands that to the caller's block function with the block's `Read` s, which
computes with the NumPy backend.
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import dask.array as da
import numpy as np
from dask.array.core import concatenate3
from dask.base import tokenize
from dask.highlevelgraph import HighLevelGraph

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


def _run(fn: Callable, cuts: tuple, reads: tuple, *parts: Any) -> Any:
    """Join each source's chunks, cut out the block's cells, compute the block."""
    local = tuple(np.ascontiguousarray(concatenate3(p)[cut]) for p, cut in zip(parts, cuts))
    return fn(*local, reads)


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
    layer: dict[tuple, Any] = {}
    per_axis = [
        range(len(first.chunks[a])) if a not in place else range(len(reads[place[a]]))
        for a in range(first.ndim)
    ]
    for index in itertools.product(*per_axis):
        block_reads = tuple(reads[place[a]][i] for a, i in enumerate(index) if a in place)
        parts, cuts = [], []
        for k, source in enumerate(sources):
            ranges, cut = [], []
            for axis, i in enumerate(index):
                if axis in place:
                    lo, hi = reads[place[axis]][i].cells[k]
                    held = chunk_range(starts[k][axis], lo, hi)
                    at = starts[k][axis][held.start]
                    ranges.append(held)
                    cut.append(slice(lo - at, hi - at))
                else:
                    ranges.append(range(i, i + 1))
                    cut.append(slice(None))
            parts.append(_nested(lambda idx, n=source.name: (n, *idx), ranges))
            cuts.append(tuple(cut))
        layer[(key, *index)] = (_run, fn, tuple(cuts), block_reads, *parts)
    graph = HighLevelGraph.from_collections(key, layer, dependencies=sources)
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
