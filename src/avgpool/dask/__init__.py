"""`avgpool.ops` on Dask arrays: the same ops, names and signatures, computed chunk by chunk.

Each function is `avgpool.ops`'s own, bound to the Dask backend (`avgpool.dask._backend`):
the same argument handling, `Window` construction and refusals (raised when the op is
called, from shapes and dtypes alone), then a lazy Dask array whose task graph holds one task
per output block. Each task pools its block with the NumPy backend from the input cells its
windows cover: its own chunk and a halo of the neighbouring chunks where windows cross a
chunk boundary, padded only where the block touches the array's edges. Other arrays are
refused (``avgpool.avg_pool`` takes a Dask array too, and returns one).

Windows, padding, ceil mode and divisors are the whole array's on every chunking. Max
pooling is exact; average pooling is exact under the float64 reference
(``avgpool.use_backend("reference")``) and within a few ulps of the NumPy op under the
kernels, whose running sums add a window's cells in an order that depends on where the
block starts. See `avgpool.dask` 's documentation for each op's guarantee.

Examples
--------
>>> import dask.array as da
>>> import avgpool.dask as apd
>>> x = da.arange(16.0, chunks=2).reshape(1, 1, 4, 4)
>>> apd.avg_pool(x, 2).compute()[0, 0]
array([[ 2.5,  4.5],
       [10.5, 12.5]])
"""

from __future__ import annotations

from avgpool import ops
from avgpool.dask._backend import BACKEND

__all__ = list(ops.__all__)


def _on_dask(name: str):
    public = getattr(ops, name)
    bound = public.on(BACKEND)
    bound.__module__ = __name__
    summary = (public.__doc__ or "").strip().splitlines()[0]
    bound.__doc__ = f"{summary}\n\n`avgpool.{name}` on Dask arrays (a TypeError for other arrays)."
    return bound


for _name in __all__:
    globals()[_name] = _on_dask(_name)
del _name
