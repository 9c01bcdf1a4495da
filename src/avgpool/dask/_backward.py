"""Gradients of the windowed ops on Dask arrays: each input block gathers from the outputs
whose windows touch it.

A block of input cells ``[i0, i1)`` along an axis receives gradient only from the outputs
``[g0, g1)`` whose windows reach into it (`touching`). Its task reads those outputs' gradient
(and, for max and Lp pooling, the input cells their windows cover, ``[lo, hi)``), runs the
NumPy backward on that stretch with the block's own window (the array's padding only at the
array's edges, `avgpool.dask._blocks.window_span`), and keeps the cells ``[i0, i1)``: every
window that touches them is in the stretch, so each cell sums the same contributions.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Sequence

import dask.array as da
import numpy as np

from avgpool._arrays import Layout
from avgpool._backends import NUMPY
from avgpool.dask._blocks import Span, offsets, window_span
from avgpool.dask._graph import Read, blocks
from avgpool.dask._local import block_window, localize, spatial_axes
from avgpool.window import Axis, Window


def touching(axis: Axis, i0: int, i1: int) -> tuple[int, int]:
    """[g0, g1): the outputs whose windows (first to last tap) reach some cell of [i0, i1)."""
    g0 = max(0, -(-(i0 + axis.pad_before - axis.span + 1) // axis.stride))
    g1 = min(axis.out, (i1 - 1 + axis.pad_before) // axis.stride + 1)
    g0 = min(g0, axis.out)
    return g0, max(g0, g1)


def grad_chunks(axis: Axis, chunks: Sequence[int]) -> tuple[int, ...]:
    """Input-space chunks for a gradient chunked ``chunks`` in output space: each output
    chunk's windows start in one input chunk."""
    cuts = {0, axis.size}
    for o in offsets(chunks)[1:-1]:
        c = o * axis.stride - axis.pad_before
        if 0 < c < axis.size:
            cuts.add(c)
    ordered = sorted(cuts)
    return tuple(b - a for a, b in itertools.pairwise(ordered))


def input_reads(axis: Axis, chunks: Sequence[int], sources: str) -> list[Read]:
    """The blocks of input cells (chunked ``chunks``) of a windowed backward along ``axis``.

    ``sources``: per source, "g" (read the touching outputs) or "x" (read the cells their
    windows cover). ``info``: (i0, i1, the outputs' `Span`, None when no window touches).
    """
    reads = []
    starts = offsets(chunks)
    for i0, i1 in itertools.pairwise(starts):
        g0, g1 = touching(axis, i0, i1)
        span = window_span(axis, g0, g1) if g0 < g1 else None
        x_cells = (span.in_start, span.in_stop) if span else (i0, i0)
        cells = tuple((g0, g1) if s == "g" else x_cells for s in sources)
        reads.append(Read(i1 - i0, cells, (i0, i1, span)))
    return reads


def _embed(
    local: np.ndarray | None, like: np.ndarray, spatial: Sequence[int], reads: tuple, dtype
) -> np.ndarray:
    """The block's cells [i0, i1) per axis, from a result over the stretch [lo, hi) (zeros
    where no window reaches)."""
    shape = list(like.shape)
    for axis, read in zip(spatial, reads):
        shape[axis] = read.size
    block = np.zeros(shape, dtype)
    if local is None:
        return block
    src, dst = [slice(None)] * len(shape), [slice(None)] * len(shape)
    for axis, read in zip(spatial, reads):
        i0, i1, span = read.info
        a, b = max(i0, span.in_start), min(i1, span.in_stop)
        if a >= b:
            return block
        src[axis] = slice(a - span.in_start, b - span.in_start)
        dst[axis] = slice(a - i0, b - i0)
    block[tuple(dst)] = local[tuple(src)]
    return block


def _local_shape(shape: Sequence[int], spatial: Sequence[int], spans: Sequence[Span]) -> tuple[int, ...]:
    local = list(shape)
    for axis, span in zip(spatial, spans):
        local[axis] = span.in_stop - span.in_start
    return tuple(local)


def _avg_block(window, ceil, spatial, grad, reads):
    spans = [r.info[2] for r in reads]
    if any(s is None for s in spans):
        return _embed(None, grad, spatial, reads, grad.dtype)
    local_shape = _local_shape(grad.shape, spatial, spans)  # the grad block's batch and channels
    y = NUMPY.avg_pool_backward(grad, local_shape, block_window(window, ceil, spans))
    return _embed(y, grad, spatial, reads, grad.dtype)


def _max_block(window, ceil, spatial, policy, grad, x, reads):
    spans = [r.info[2] for r in reads]
    if any(s is None for s in spans):
        return _embed(None, grad, spatial, reads, grad.dtype)
    y = NUMPY.max_pool_backward(grad, x, block_window(window, ceil, spans), policy, None)
    return _embed(y, grad, spatial, reads, grad.dtype)


def _index_block(window, ceil, spatial, full_spatial, x_dtype, grad, index, reads):
    """A block of the max gradient from the forward's indices: the input is not read (a
    stand-in of its shape and dtype), only the touching outputs' gradient and indices."""
    spans = [r.info[2] for r in reads]
    if any(s is None for s in spans):
        return _embed(None, grad, spatial, reads, grad.dtype)
    x = np.broadcast_to(np.zeros((), x_dtype), _local_shape(grad.shape, spatial, spans))
    local_spatial = [s.in_stop - s.in_start for s in spans]
    indices = localize(index, full_spatial, [s.in_start for s in spans], local_spatial)
    y = NUMPY.max_pool_backward(grad, x, block_window(window, ceil, spans), None, indices)
    return _embed(y, grad, spatial, reads, grad.dtype)


def _lp_block(window, ceil, spatial, p, convention, grad, x, reads):
    spans = [r.info[2] for r in reads]
    if any(s is None for s in spans):
        return _embed(None, grad, spatial, reads, grad.dtype)
    y = NUMPY.lp_pool_backward(grad, x, p, block_window(window, ceil, spans), convention)
    return _embed(y, grad, spatial, reads, grad.dtype)


def avg_backward(grad: da.Array, shape: tuple[int, ...], layout: Layout, axes, window: Window, ceil: bool):
    dims = spatial_axes(layout)
    reads = [input_reads(a, grad_chunks(a, grad.chunks[d]), "g") for a, d in zip(axes, dims)]
    fn = functools.partial(_avg_block, window, ceil, dims)
    (y,) = blocks([grad], dims, reads, fn, [grad.dtype], "avg-pool-backward", (window, shape))
    return y


def max_backward(grad, x, layout, axes, window, ceil, policy, indices):
    """The max gradient chunked as ``x``: from ``x`` (the arg-max found again per block, reading
    the cells the touching windows cover) or from the forward's ``indices``."""
    dims = spatial_axes(layout)
    if indices is None:
        reads = [input_reads(a, x.chunks[d], "gx") for a, d in zip(axes, dims)]
        fn = functools.partial(_max_block, window, ceil, dims, policy)
        arrays = [grad, x]
    else:
        reads = [input_reads(a, x.chunks[d], "gg") for a, d in zip(axes, dims)]
        fn = functools.partial(_index_block, window, ceil, dims, layout.spatial, x.dtype)
        arrays = [grad, indices]
    (y,) = blocks(arrays, dims, reads, fn, [grad.dtype], "max-pool-backward", (window, policy))
    return y


def lp_backward(grad, x, layout, axes, window, ceil, p, convention):
    dims = spatial_axes(layout)
    reads = [input_reads(a, x.chunks[d], "gx") for a, d in zip(axes, dims)]
    fn = functools.partial(_lp_block, window, ceil, dims, p, convention)
    (y,) = blocks([grad, x], dims, reads, fn, [grad.dtype], "lp-pool-backward", (window, p, convention))
    return y
