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
from typing import Any

import dask.array as da
import numpy as np

from avgpool import reference as ref
from avgpool._arrays import FLOAT_DTYPES, INT_DTYPES, Layout
from avgpool._backends import NUMPY, Backend, _geometry
from avgpool._errors import AvgPoolError
from avgpool.dask import _backward, _global, _taps
from avgpool.dask._blocks import window_spans
from avgpool.dask._graph import Read, blocks
from avgpool.dask._local import INDEX, block_window, ceil_of, globalize, spatial_axes
from avgpool.window import Window

# -- block functions (module level: a distributed scheduler pickles them) ---------------------


def _avg_block(window: Window, ceil: bool, local: np.ndarray, reads: tuple) -> np.ndarray:
    return NUMPY.avg_pool(local, block_window(window, ceil, [r.info for r in reads]), None)


def _max_block(
    window: Window, ceil: bool, policy: str | None, spatial: tuple, with_index: bool, local, reads
):
    w = block_window(window, ceil, [r.info for r in reads])
    if not with_index:
        return NUMPY.max_pool(local, w, policy, None, False)
    y, index = NUMPY.max_pool(local, w, policy, None, True)
    local_spatial = Layout.of(local.shape, w.ndim, w.channels_last).spatial
    return y, globalize(index, local_spatial, [r.lo for r in reads], spatial)


def _lp_block(window: Window, ceil: bool, p: float, convention: str, local, reads) -> np.ndarray:
    return NUMPY.lp_pool(local, p, block_window(window, ceil, [r.info for r in reads]), convention)


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
        ceil = ceil_of(window)
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
            return _global.global_avg(x, window)
        (y,) = self._windowed(
            x, window, functools.partial(_avg_block, window, ceil_of(window)), [x.dtype], "avg-pool", None
        )
        return y

    def max_pool(self, x, window, nan_policy, out, return_indices):
        _no_out(out)
        if window.kernel_size is None:
            if return_indices:
                return _global.global_max_index(x, window, nan_policy)
            return _global.global_max(x, window, nan_policy)
        layout = Layout.of(x.shape, window.ndim, window.channels_last)
        fn = functools.partial(
            _max_block, window, ceil_of(window), nan_policy, layout.spatial, bool(return_indices)
        )
        metas = [x.dtype, INDEX] if return_indices else [x.dtype]
        result = self._windowed(x, window, fn, metas, "max-pool", (nan_policy, return_indices))
        return result if return_indices else result[0]

    def lp_pool(self, x, p, window, convention):
        fn = functools.partial(_lp_block, window, ceil_of(window), p, convention)
        (y,) = self._windowed(x, window, fn, [x.dtype], "lp-pool", (p, convention))
        return y

    # -- adaptive and blur pooling: the NumPy op's tap tables, cut per block -------------------

    def adaptive_avg_pool(self, x, layout, out):
        even = _even_window(layout, out)
        if even is not None:
            return self.avg_pool(x, even, None)
        taps = ref.adaptive_mean_weights(ref.adaptive_tables(layout.spatial, tuple(out)))
        return _taps.taps_sum(x, layout, taps, "adaptive-avg-pool", tuple(out))

    def adaptive_avg_pool_backward(self, grad, layout, out):
        even = _even_window(layout, out)
        if even is not None:
            return self.avg_pool_backward(grad, layout.shape, even)
        taps = ref.adaptive_mean_weights(ref.adaptive_tables(layout.spatial, tuple(out)))
        return _taps.taps_scatter_grad(grad, layout, taps, "adaptive-avg-backward", layout)

    def adaptive_max_pool(self, x, layout, out):
        even = _even_window(layout, out)
        if even is not None:
            return self.max_pool(x, even, "propagate", None, True)
        return _taps.taps_max(x, layout, ref.adaptive_tables(layout.spatial, tuple(out)), tuple(out))

    def adaptive_max_pool_backward(self, grad, x, layout, out):
        _, index = self.adaptive_max_pool(x, layout, out)
        taps = ref.adaptive_tables(layout.spatial, tuple(out))
        return _taps.index_scatter_grad(grad, index, x, layout, taps, tuple(out))

    def blur_pool(self, x, layout, filt_size, stride, mode, pad_off):
        taps = ref.blur_tables(layout.spatial, filt_size, stride, mode, pad_off)
        return _taps.taps_sum(x, layout, taps, "blur-pool", (filt_size, stride, mode, pad_off))

    def blur_pool_backward(self, grad, layout, filt_size, stride, mode, pad_off):
        taps = ref.blur_tables(layout.spatial, filt_size, stride, mode, pad_off)
        layout.check_grad_shape(grad, [t.out for t in taps])
        token = (layout, filt_size, stride, mode, pad_off)
        return _taps.taps_scatter_grad(grad, layout, taps, "blur-pool-backward", token)

    # -- windowed gradients --------------------------------------------------------------------

    def avg_pool_backward(self, grad, input_shape, window):
        layout, axes = _geometry(tuple(input_shape), window, "input_shape")
        layout.check_grad_shape(grad, [a.out for a in axes])
        if window.kernel_size is None and window.divisor_override is None:
            return _global.global_avg_backward(grad, tuple(input_shape), layout)
        return _backward.avg_backward(grad, tuple(input_shape), layout, axes, window, ceil_of(window))

    def max_pool_backward(self, grad, x, window, nan_policy, indices=None):
        layout, axes = _geometry(tuple(x.shape), window)
        layout.check_grad_shape(grad, [a.out for a in axes])
        if indices is not None:
            indices = _indices(indices, grad)
        if window.kernel_size is None:
            if indices is None:
                _, indices = _global.global_max_index(x, window, nan_policy)
            return _global.global_max_backward(grad, x, indices, layout)
        return _backward.max_backward(grad, x, layout, axes, window, ceil_of(window), nan_policy, indices)

    def lp_pool_backward(self, grad, x, p, window, convention):
        layout, axes = _geometry(tuple(x.shape), window)
        layout.check_grad_shape(grad, [a.out for a in axes])
        return _backward.lp_backward(grad, x, layout, axes, window, ceil_of(window), p, convention)


def _even_window(layout: Layout, out: tuple[int, ...]) -> Window | None:
    """Adaptive windows that divide the input evenly, as the plain window the NumPy op then
    computes with (kernel = stride = size / output); None otherwise."""
    if any(n % o for n, o in zip(layout.spatial, out)):
        return None
    kernel = tuple(n // o for n, o in zip(layout.spatial, out))
    return Window(kernel, kernel, ndim=layout.ndim, channels_last=layout.channels_last)


def _indices(indices: Any, grad: da.Array) -> da.Array:
    """Arg-max indices given to a backward: an integer Dask (or NumPy) array of the gradient's
    shape (their values are checked as each block computes)."""
    if not isinstance(indices, (np.ndarray, da.Array)) or indices.dtype.kind not in "iu":
        kind = f"{type(indices).__name__} of dtype {getattr(indices, 'dtype', None)}"
        raise TypeError(f"indices must be an integer Dask or NumPy array, got {kind}")
    if tuple(indices.shape) != tuple(grad.shape):
        raise AvgPoolError(
            f"indices must have grad_output's shape {tuple(grad.shape)}, got {tuple(indices.shape)}"
        )
    if isinstance(indices, np.ndarray):
        return da.from_array(indices, chunks=grad.chunks)
    return indices


def _no_out(out: Any) -> None:
    if out is not None:
        raise AvgPoolError(
            f"out must be None for Dask arrays (results are new lazy arrays), got {type(out).__name__}"
        )


BACKEND = DaskBackend()
