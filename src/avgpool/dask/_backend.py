"""The Dask backend of `avgpool.ops`: lazy Dask arrays in, lazy Dask arrays out.

`avgpool.ops` has validated the arguments and built the geometry; this adapter checks the
array (a ``dask.array.Array`` of a supported dtype with known chunk sizes), resolves the
geometry on its shape (so every refusal comes before any compute, in the NumPy op's words),
and builds a task graph of one task per output block (`avgpool.dask._graph`). Each task
pools its block with the NumPy backend: the block's input cells (its chunk and a halo where
windows cross into the next chunks, `avgpool.dask._blocks`), with the array's padding only
where the block touches the array's edges.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Sequence
from typing import Any

import dask.array as da
import numpy as np

from avgpool._arrays import FLOAT_DTYPES, INT_DTYPES, Layout
from avgpool._backends import NUMPY, Backend, _geometry
from avgpool._errors import AvgPoolError
from avgpool.dask._blocks import window_spans
from avgpool.dask._graph import Read, blocks
from avgpool.window import Window

INDEX = np.dtype(np.int64)


def spatial_axes(layout: Layout) -> list[int]:
    """The array axes of a layout's spatial dimensions."""
    first = len(layout.shape) - layout.ndim - (1 if layout.channels_last else 0)
    return list(range(first, first + layout.ndim))


def _ceil(window: Window) -> bool:
    """The ceil mode the resolved pads are used with: a 'same' padding already rounds up."""
    return window.ceil_mode and not isinstance(window.padding, str)


def _local(window: Window, ceil: bool, reads: Sequence[Read]) -> Window:
    """The window of one block: the array's padding where it touches the array's edges."""
    pads = tuple((r.info.pad_before, r.info.pad_after) for r in reads)
    return _replaced(window, pads, ceil)


@functools.lru_cache(maxsize=1024)
def _replaced(window: Window, pads: tuple, ceil: bool) -> Window:
    return window.replace(padding=pads, ceil_mode=ceil)


def _globalize(
    index: np.ndarray, layout: Layout, starts: Sequence[int], spatial: Sequence[int]
) -> np.ndarray:
    """A block's arg-max indices (flat in its own spatial plane) as flat indices into the
    whole array's plane; -1 (a window with no cell) stays."""
    found = index >= 0
    cells = np.unravel_index(np.where(found, index, 0), layout.spatial)
    flat = np.ravel_multi_index(tuple(c + s for c, s in zip(cells, starts)), tuple(spatial))
    return np.where(found, flat, -1).astype(INDEX, copy=False)


# -- block functions (module level: a distributed scheduler pickles them) ---------------------


def _avg_block(window: Window, ceil: bool, local: np.ndarray, reads: tuple) -> np.ndarray:
    return NUMPY.avg_pool(local, _local(window, ceil, reads), None)


def _max_block(
    window: Window, ceil: bool, policy: str | None, spatial: tuple, with_index: bool, local, reads
):
    w = _local(window, ceil, reads)
    if not with_index:
        return NUMPY.max_pool(local, w, policy, None, False)
    y, index = NUMPY.max_pool(local, w, policy, None, True)
    layout = Layout.of(local.shape, w.ndim, w.channels_last)
    return y, _globalize(index, layout, [r.lo for r in reads], spatial)


def _lp_block(window: Window, ceil: bool, p: float, convention: str, local, reads) -> np.ndarray:
    return NUMPY.lp_pool(local, p, _local(window, ceil, reads), convention)


class DaskBackend(Backend):
    """``dask.array.Array`` s: lazy results, each block pooled by the NumPy backend."""

    name = "dask"

    def array(self, x: Any, name: str = "input", allow_int: bool = False) -> da.Array:
        if not isinstance(x, da.Array):
            raise TypeError(f"{name} must be a dask.array.Array, got {type(x).__name__}")
        allowed = FLOAT_DTYPES + (INT_DTYPES if allow_int else ())
        if x.dtype not in allowed:
            names = ", ".join(str(d) for d in allowed)
            raise TypeError(f"{name} dtype must be one of {names}; got {x.dtype}")
        if any(math.isnan(c) for c in itertools.chain.from_iterable(x.chunks)):
            raise AvgPoolError(
                f"{name} has unknown chunk sizes (NaN), got chunks {x.chunks}: pooling plans its "
                f"blocks from them; call {name}.compute_chunk_sizes() first"
            )
        return x

    # -- windowed forwards ---------------------------------------------------------------------

    def _windowed(self, x: da.Array, window: Window, fn, metas, name: str, token: Any):
        """``fn(window, ceil, ...)`` on each output block of the window's pooling of ``x``."""
        layout, axes = _geometry(tuple(x.shape), window)
        dims = spatial_axes(layout)
        ceil = _ceil(window)
        reads = [
            [
                Read(s.out_stop - s.out_start, ((s.in_start, s.in_stop),), s)
                for s in window_spans(axis, x.chunks[d], ceil)
            ]
            for axis, d in zip(axes, dims)
        ]
        return blocks([x], dims, reads, fn, metas, name, (window, token))

    def avg_pool(self, x, window, out):
        _no_out(out)
        if window.kernel_size is None:
            return _global_avg(x, window)
        (y,) = self._windowed(
            x, window, functools.partial(_avg_block, window, _ceil(window)), [x.dtype], "avg-pool", None
        )
        return y

    def max_pool(self, x, window, nan_policy, out, return_indices):
        _no_out(out)
        if window.kernel_size is None and not return_indices:
            return _global_max(x, window, nan_policy)
        layout = Layout.of(x.shape, window.ndim, window.channels_last)
        fn = functools.partial(
            _max_block, window, _ceil(window), nan_policy, layout.spatial, bool(return_indices)
        )
        metas = [x.dtype, INDEX] if return_indices else [x.dtype]
        result = self._windowed(x, window, fn, metas, "max-pool", (nan_policy, return_indices))
        return result if return_indices else result[0]

    def lp_pool(self, x, p, window, convention):
        fn = functools.partial(_lp_block, window, _ceil(window), p, convention)
        (y,) = self._windowed(x, window, fn, [x.dtype], "lp-pool", (p, convention))
        return y


def _no_out(out: Any) -> None:
    if out is not None:
        raise AvgPoolError(
            f"out must be None for Dask arrays (results are new lazy arrays), got {type(out).__name__}"
        )


def _global_avg(x: da.Array, window: Window) -> da.Array:
    """The mean over the spatial axes: float64 sums of each chunk, added across chunks."""
    layout, _ = _geometry(tuple(x.shape), window)
    total = x.astype(np.float64).sum(axis=tuple(spatial_axes(layout)), keepdims=True)
    return (total / math.prod(layout.spatial)).astype(x.dtype)


def _global_max(x: da.Array, window: Window, nan_policy: str | None) -> da.Array:
    from avgpool._backends import _nan_args

    layout, _ = _geometry(tuple(x.shape), window)
    policy, floor = _nan_args(nan_policy, window, x.dtype)
    if policy == "omit" and x.dtype.kind == "f":
        lowest = x.dtype.type(floor)
        x = da.where(da.isnan(x), lowest, x)
    return x.max(axis=tuple(spatial_axes(layout)), keepdims=True)


BACKEND = DaskBackend()
