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
and, from the next chunks, only the cells its windows reach (a halo, cut out by a small task
of its own), and pools them with the NumPy backend under the array's `Window` with the
array's padding only where the block touches the array's edges, so every output has the
whole array's cells and divisor. Averages (and Lp pooling) are cut into strips instead: the
NumPy kernels add a window's cells with running sums along whole rows, restarted every 32
output rows, and pick their loops by the plane's size, so a strip holds whole rows (and, in
channels-last arrays, all of a row's channels), starts where the sums restart and is a
plane larger than the small-plane kernels take (about an input chunk's cells); a 1-D average
is one block per batch and channel chunk. Blur and adaptive pooling cut the NumPy op's own
tap tables (blur's reflected padding reads the real neighbouring cells). A gradient is
chunked like the input, each of its blocks gathering from the outputs whose windows reach
it. The graph has one task per output block, plus the halo cuts (and two tasks picking
values and indices when both are returned); global pooling reduces chunk by chunk.

Precision against the NumPy op on the computed array, with the default "numba" backend:

* bit for bit: every forward op (average, max with indices into the whole input, Lp, blur,
  adaptive, global; the global average while a task of whole planes stays under
  `avgpool.dask._global.PLANE_TASK_BYTES`, 256 MiB), the gradients of max, blur and adaptive
  pooling whose sizes do not divide the input, and both global gradients;
* within a few float64 roundings of the largest window's magnitude: the gradients of average
  and Lp pooling (and of adaptive averages whose sizes divide the input: box windows), whose
  kernels sum the covering windows with running sums restarted every 32 input rows of the
  block they are given, and the global average of planes too large for a task, whose chunks'
  sums are added in another order than the whole array's kernel adds its cells. float32 and
  float16 gradients are then within one rounding of their dtype.

Under the float64 reference backend (``avgpool.use_backend("reference")``) maxima stay exact
and sums agree within the same roundings (NumPy's own reductions order a sum by the array's
shape).

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
    "avg_pool_backward": "its sums over the covering windows run in another order",
    "lp_pool_backward": "its sums over the covering windows run in another order",
    "global_avg_pool": (
        "exact while a task of whole planes stays under 256 MiB; larger planes are summed chunk by "
        "chunk, in another order"
    ),
    "adaptive_avg_pool_backward": (
        "exact unless the sizes divide the input (box windows, whose sums run in another order)"
    ),
}


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
del _name
