"""Global pooling of Dask arrays: reductions over the spatial axes, chunk by chunk.

The mean is the NumPy op's own on whole planes, bit for bit, whenever a task holding whole
planes (the spatial axes in one chunk, and the channels too in a channels-last array; the
other chunks as they are) stays under `PLANE_TASK_BYTES`: the array is rechunked so if it is
not. Larger planes
are reduced chunk by chunk: a float64 sum per chunk, the chunks' sums added, divided once,
the same cells as the NumPy op added in another order, so within a few ulps of it. The
maximum is exact: each chunk's maximum and arg-max (the NumPy op's, on the chunk), then the
chunks' combined by the same rules (NaN wins, the last one; else the first maximum in
row-major order). The gradients are exact: the mean's is the NumPy kernel's arithmetic
(``0 + (0 + g * 1/(D*H)) * 1/W``), the maximum's goes to the arg-max cell.
"""

from __future__ import annotations

import functools
import itertools
import math

import dask.array as da
import numpy as np

from avgpool._arrays import Layout
from avgpool._backends import NUMPY, _geometry, _nan_args
from avgpool._buffers import unpooled
from avgpool.dask._blocks import offsets
from avgpool.dask._graph import Read, blocks
from avgpool.dask._local import INDEX, globalize, spatial_axes
from avgpool.window import Window

#: The largest task (bytes of its input) the global mean pools whole planes in, exactly; a
#: larger one would not fit a worker, and is reduced chunk by chunk instead.
PLANE_TASK_BYTES = 256 << 20


def global_avg(x: da.Array, window: Window) -> da.Array:
    """The mean over the spatial axes: the NumPy op's on whole planes when a task of them stays
    under `PLANE_TASK_BYTES` (bit for bit), else chunked sums (a few ulps; see the module)."""
    layout, _ = _geometry(tuple(x.shape), window)
    dims = spatial_axes(layout)
    # whole planes, and in a channels-last array every channel of a cell together: the NumPy
    # kernels pick their loops by the channel count, which add in other orders
    whole = {d: -1 for d in dims} | ({x.ndim - 1: -1} if layout.channels_last else {})
    others = [max(c, default=0) for d, c in enumerate(x.chunks) if d not in whole]
    task = math.prod(x.shape[d] for d in whole) * math.prod(others) * x.dtype.itemsize
    if task <= PLANE_TASK_BYTES:
        planes = x.rechunk(whole)
        chunks = tuple((1,) if d in dims else c for d, c in enumerate(planes.chunks))
        meta = np.empty((0,) * x.ndim, x.dtype)
        return planes.map_blocks(
            functools.partial(_plane_means, window), chunks=chunks, dtype=x.dtype, meta=meta
        )
    total = x.astype(np.float64).sum(axis=tuple(dims), keepdims=True)
    return (total / math.prod(layout.spatial)).astype(x.dtype)


def _plane_means(window: Window, block: np.ndarray) -> np.ndarray:
    with unpooled():
        return NUMPY.avg_pool(np.ascontiguousarray(block), window, None)


def global_max(x: da.Array, window: Window, nan_policy: str | None) -> da.Array:
    """The maximum over the spatial axes, NaN rules as the NumPy op's (exact)."""
    layout, _ = _geometry(tuple(x.shape), window)
    if x.size == 0:  # Dask's reduction has no identity to start an empty maximum from
        return global_max_index(x, window, nan_policy)[0]
    x = _no_empty_chunks(x, spatial_axes(layout))
    policy, floor = _nan_args(nan_policy, window, x.dtype)
    if policy == "omit" and x.dtype.kind == "f":
        x = da.where(da.isnan(x), -np.inf, x)
    y = x.max(axis=tuple(spatial_axes(layout)), keepdims=True)
    if policy == "omit" and x.dtype.kind == "f":
        y = da.maximum(y, y.dtype.type(floor))
    return y


def _no_empty_chunks(x: da.Array, dims) -> da.Array:
    """``x`` without chunks of no cell along ``dims`` (Dask's maximum cannot start from one)."""
    empty = {d: tuple(c for c in x.chunks[d] if c) for d in dims if 0 in x.chunks[d]}
    return x.rechunk(empty) if empty else x


def _chunk_max(window: Window, omit: bool, spatial: tuple, local: np.ndarray, reads):
    """A chunk's maximum and its arg-max as a flat index into the whole plane."""
    if omit:
        local = np.where(np.isnan(local), -np.inf, local)
    y, index = NUMPY.max_pool(local, window, "propagate", None, True)
    local_spatial = Layout.of(local.shape, window.ndim, window.channels_last).spatial
    return y, globalize(index, local_spatial, [r.lo for r in reads], spatial)


def _combine(dims: tuple[int, ...], floor, values: np.ndarray, index: np.ndarray):
    """The chunks' maxima (along ``dims``) combined: NaN wins (the last), else the first
    maximum in row-major order (the smallest flat index among equal maxima)."""
    shape = list(values.shape)
    for d in dims:
        shape[d] = 1
    if values.size == 0:  # no plane (a batch of 0): nothing to combine
        return np.empty(shape, values.dtype), np.empty(shape, INDEX)
    v = np.moveaxis(values, dims, range(-len(dims), 0))
    i = np.moveaxis(index, dims, range(-len(dims), 0))
    v = v.reshape(*v.shape[: -len(dims)], -1)
    i = i.reshape(*i.shape[: -len(dims)], -1)
    if v.dtype.kind == "f":
        nan = np.isnan(v)
        best = np.max(np.where(nan, -np.inf, v), axis=-1, keepdims=True)
    else:
        nan = np.zeros(v.shape, bool)
        best = np.max(v, axis=-1, keepdims=True)
    tie = (v == best) & ~nan
    pick = np.min(np.where(tie, i, np.iinfo(INDEX).max), axis=-1)
    value = best[..., 0]
    if nan.any():
        last_nan = np.max(np.where(nan, i, -1), axis=-1)
        pick = np.where(nan.any(axis=-1), last_nan, pick)
        value = np.where(nan.any(axis=-1), np.nan, value).astype(v.dtype)
    if floor is not None:
        value = np.maximum(value, v.dtype.type(floor))
    return value.reshape(shape), pick.astype(INDEX).reshape(shape)


def global_max_index(x: da.Array, window: Window, nan_policy: str | None) -> tuple[da.Array, da.Array]:
    """(values, int64 flat indices into each plane) of the global maximum, exact."""
    layout, _ = _geometry(tuple(x.shape), window)
    dims = spatial_axes(layout)
    policy, floor = _nan_args(nan_policy, window, x.dtype)
    omit = policy == "omit" and x.dtype.kind == "f"
    pairs = [[(a, b) for a, b in itertools.pairwise(offsets(x.chunks[d])) if a < b] for d in dims]
    reads = [[Read(1, (pair,)) for pair in axis] for axis in pairs]  # chunks of no cell offer none
    fn = functools.partial(_chunk_max, window, omit, layout.spatial)
    values, index = blocks([x], dims, reads, fn, [x.dtype, INDEX], "global-max-chunks", (window, policy))
    whole = {d: -1 for d in dims}
    values, index = values.rechunk(whole), index.rechunk(whole)
    combine = functools.partial(_combine, tuple(dims), floor if omit else None)
    chunks = tuple((1,) if d in dims else c for d, c in enumerate(values.chunks))
    picked = [
        da.map_blocks(functools.partial(_pick, k, combine), values, index, chunks=chunks, dtype=dtype)
        for k, dtype in enumerate((x.dtype, INDEX))
    ]
    return picked[0], picked[1]


def _pick(k: int, combine, values: np.ndarray, index: np.ndarray) -> np.ndarray:
    return combine(values, index)[k]


def global_avg_backward(grad: da.Array, shape: tuple[int, ...], layout: Layout) -> da.Array:
    """Every cell of a plane gets ``0 + (0 + g * inv_h) * inv_w``: the NumPy kernel's float64
    operations in its order (``inv_h`` the reciprocals of every axis but the last, multiplied;
    ``inv_w`` the last's), so the same bits."""
    inv = [1.0] * (3 - layout.ndim) + [1.0 / n for n in layout.spatial]
    inv_h, inv_w = inv[0] * inv[1], inv[2]
    g = grad.reshape(layout.out_shape((1,) * layout.ndim))
    value = (0.0 + (0.0 + g.astype(np.float64) * inv_h) * inv_w).astype(grad.dtype)
    dims = spatial_axes(layout)
    auto = da.core.normalize_chunks("auto", shape, dtype=grad.dtype)
    chunks = tuple(auto[d] if d in dims else value.chunks[d] for d in range(len(shape)))
    return da.broadcast_to(value, shape, chunks=chunks)


def _max_scatter(dims, spatial, grad: np.ndarray, index: np.ndarray, reads) -> np.ndarray:
    """A block of the gradient: each plane's g at its arg-max cell, if the block holds it."""
    cells = np.ix_(*[np.arange(r.info[0], r.info[1]) for r in reads])
    flat = np.ravel_multi_index(cells, tuple(spatial))
    shape = list(grad.shape)
    for d, r in zip(dims, reads):
        shape[d] = r.size
    flat_b = np.zeros(shape, INDEX)
    flat_b[...] = np.expand_dims(flat, tuple(a for a in range(len(shape)) if a not in dims))
    return np.where(flat_b == index, 0.0 + grad, np.zeros((), grad.dtype)).astype(grad.dtype)


def global_max_backward(grad: da.Array, x: da.Array, index: da.Array, layout: Layout) -> da.Array:
    """The gradient of the global maximum: g at each plane's arg-max (chunked as ``x``)."""
    dims = spatial_axes(layout)
    reads = [
        [Read(b - a, ((0, 1), (0, 1)), (a, b)) for a, b in itertools.pairwise(offsets(x.chunks[d]))]
        for d in dims
    ]
    fn = functools.partial(_max_scatter, dims, layout.spatial)
    (y,) = blocks([grad, index], dims, reads, fn, [grad.dtype], "global-max-backward", None)
    return y
