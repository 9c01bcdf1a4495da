"""`avgpool.ops` on Dask arrays: the same ops, names and signatures, computed block by block.

Each function is `avgpool.ops`'s own, bound to the Dask backend (`avgpool.dask._backend`):
the same argument handling, `Window` construction and refusals, raised when the op is called
(from shapes and dtypes alone, before any compute), then a lazy Dask array. Other arrays are
refused; ``avgpool.avg_pool`` given a Dask array returns one too. Arrays are channels-first
``(N, C, *spatial)`` or ``(N, *spatial, C)`` with ``channels_last=True``, batched or not,
chunked any way (chunks of one cell, chunks smaller than the window, unequal chunks); their
chunk sizes must be known (``x.compute_chunk_sizes()`` after a boolean index).

How a pooling is split: along each spatial axis the outputs are cut where the input is, each
block taking the outputs whose windows start in one input chunk. Its task reads that chunk
and a halo of the next chunks where its windows cross into them (never the whole array, unless
one window spans it), and pools them with the NumPy backend under the array's `Window` with the
array's padding only where the block touches the array's edges and ceil mode only at its
end, so every output has the whole array's cells and divisor. Blur and adaptive pooling cut
the NumPy op's own tap tables the same way (blur's reflected padding reads the real
neighbouring cells). A gradient is chunked like the input; each of its blocks gathers from the
outputs whose windows reach it. The graph has one task per output block (two more picking
values and indices when both are returned); global pooling reduces chunk by chunk.

Precision against the NumPy op on the computed array:

* bit for bit: max pooling (values, indices into the whole input, gradient), blur pooling and
  its gradient, adaptive pooling with sizes that do not divide the input (average, max, both
  gradients), global max pooling and both global gradients;
* within a few float64 roundings of the largest window's magnitude: average pooling and its
  gradient, Lp pooling and its gradient, adaptive average pooling with sizes that divide the
  input (a box average), global average pooling. The NumPy kernels add a window's cells with
  running sums along its row of windows and pick their loops by the array's size, so the same
  sum taken in a block that starts elsewhere rounds differently; a global mean adds the chunks'
  sums in another order than the whole array's kernel. float32 and float16 results are then
  within one rounding of the result's dtype.

Examples
--------
>>> import dask.array as da
>>> import avgpool.dask as apd
>>> x = da.arange(16.0, chunks=3).reshape(1, 1, 4, 4)
>>> apd.avg_pool2d(x, 2).compute()[0, 0]
array([[ 2.5,  4.5],
       [10.5, 12.5]])
"""

from __future__ import annotations

from avgpool import ops
from avgpool.dask._backend import BACKEND

__all__ = list(ops.__all__)

#: The ops whose results are a few float64 roundings from the NumPy op's (the rest are exact).
_ROUNDED = {
    "avg_pool": "its window sums run in another order than the whole array's",
    "avg_pool_backward": "its sums over covering windows run in another order",
    "lp_pool": "its window sums run in another order than the whole array's",
    "lp_pool_backward": "its window sums run in another order than the whole array's",
    "global_avg_pool": "the chunks' float64 sums are added in another order",
    "adaptive_avg_pool": "exact unless the sizes divide the input (then a box average)",
    "adaptive_avg_pool_backward": "exact unless the sizes divide the input (then a box average)",
}
for _fixed in ("1d", "2d", "3d"):
    for _family in ("avg_pool", "lp_pool", "adaptive_avg_pool"):
        _ROUNDED[_family + _fixed] = _ROUNDED[_family]


def _on_dask(name: str):
    public = getattr(ops, name)
    bound = public.on(BACKEND)
    bound.__module__ = __name__
    summary = (public.__doc__ or "").strip().splitlines()[0]
    if name in _ROUNDED:
        precision = f"Within a few float64 roundings of the NumPy op's result: {_ROUNDED[name]}."
    else:
        precision = "Bit for bit the NumPy op's result."
    bound.__doc__ = (
        f"{summary}\n\n`avgpool.{name}` on Dask arrays, lazily (a TypeError for other arrays). {precision}"
    )
    return bound


for _name in __all__:
    globals()[_name] = _on_dask(_name)
del _name, _fixed, _family
