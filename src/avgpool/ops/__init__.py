"""The public functional API, defined once for every array library: arguments -> geometry ->
the array's backend computes.

Each op validates its arguments, builds its `Window` (or sizes) and hands them to the backend
of its first array (`avgpool._backends`): NumPy arrays are computed by the Numba kernels or
the float64 reference, ``torch.Tensor`` s by avgpool's torch custom ops, which differentiate,
compile and export. ``avgpool.torch.functional`` holds the same ops bound to tensors.
One module per family: average, max, Lp, adaptive, global and blur pooling.

Argument names and defaults follow ``torch.nn.functional``. Every windowed op also takes
``window=`` (a `Window` from any convention) in place of the geometry arguments. Outputs have
the input's dtype; float16 and float32 are computed in float64 and rounded once, except
averages over windows of at most `_cpu_drivers.F32_SUM_TAPS` taps, which sum in float32.
"""

from avgpool.ops._adaptive import (
    adaptive_avg_pool,
    adaptive_avg_pool1d,
    adaptive_avg_pool2d,
    adaptive_avg_pool3d,
    adaptive_avg_pool_backward,
    adaptive_max_pool,
    adaptive_max_pool1d,
    adaptive_max_pool2d,
    adaptive_max_pool3d,
    adaptive_max_pool_backward,
)
from avgpool.ops._avg import avg_pool, avg_pool1d, avg_pool2d, avg_pool3d, avg_pool_backward
from avgpool.ops._blur import blur_pool, blur_pool1d, blur_pool2d, blur_pool3d, blur_pool_backward
from avgpool.ops._global import (
    global_avg_pool,
    global_avg_pool_backward,
    global_max_pool,
    global_max_pool_backward,
)
from avgpool.ops._lp import lp_pool, lp_pool1d, lp_pool2d, lp_pool3d, lp_pool_backward
from avgpool.ops._max import max_pool, max_pool1d, max_pool2d, max_pool3d, max_pool_backward

__all__ = [
    "adaptive_avg_pool",
    "adaptive_avg_pool1d",
    "adaptive_avg_pool2d",
    "adaptive_avg_pool3d",
    "adaptive_avg_pool_backward",
    "adaptive_max_pool",
    "adaptive_max_pool1d",
    "adaptive_max_pool2d",
    "adaptive_max_pool3d",
    "adaptive_max_pool_backward",
    "avg_pool",
    "avg_pool1d",
    "avg_pool2d",
    "avg_pool3d",
    "avg_pool_backward",
    "blur_pool",
    "blur_pool1d",
    "blur_pool2d",
    "blur_pool3d",
    "blur_pool_backward",
    "global_avg_pool",
    "global_avg_pool_backward",
    "global_max_pool",
    "global_max_pool_backward",
    "lp_pool",
    "lp_pool1d",
    "lp_pool2d",
    "lp_pool3d",
    "lp_pool_backward",
    "max_pool",
    "max_pool1d",
    "max_pool2d",
    "max_pool3d",
    "max_pool_backward",
]

# Shown (and documented, and doctested) as avgpool.ops's: the family modules are private.
for _name in __all__:
    globals()[_name].__module__ = __name__
del _name
