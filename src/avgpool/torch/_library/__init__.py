"""avgpool's ops as PyTorch custom ops (namespace ``avgpool::``), with fake and autograd.

Every op takes a tensor and plain numbers: the `Window` travels as its fields (see
`window_args`), so the ops script, trace, compile and export like ATen's own. Each op has

* a CPU kernel: the NumPy backend's method (`avgpool._backends.NumpyBackend`: the same
  `Window.resolve` geometry and Numba drivers as NumPy arrays get) on a zero-copy NumPy view
  of the tensor, with the op's arguments already checked into a `Window` or layout;
* a CUDA kernel: Triton for average and max pooling and their backward
  (`avgpool.kernels.triton_pool`); the other ops copy through the CPU kernels, with a debug
  log line saying so;
* a fake (meta) implementation giving the output's shape and strides for torch.compile and
  torch.export;
* autograd: the backward ops are themselves custom ops whose own backward is the forward op
  (average, adaptive average, blur: they are linear) or a gather (max), so double backward
  works; Lp pooling's backward is written with the average ops, so it differentiates again;
* an eager path, `call`: ``call.avg_pool(x, ...)`` is ``torch.ops.avgpool.avg_pool(x, ...)``
  minus the dispatcher's ~50 µs for a plain CPU tensor in eager mode (the same CPU kernel
  and autograd formulas, called directly); everything else goes through the dispatcher
  (`needs_dispatcher`). The modules, the functional API and the backward formulas use it;
  a `Ready` call (``avg_ready(window)`` and its kin) is the same with the arguments, the
  Window and the per-shape layouts built once, which a module keeps, and it keeps the NumPy
  plan of each contiguous input shape it has run, so a repeated call is a lookup, the kernel
  and ``torch.from_numpy`` (with the debug log on, every call takes the full path and logs it).

One module per family (avg, max, lp, adaptive, blur) defines its ops; `_args` turns a
`Window` into op arguments and back, `_eager` holds `call`. This package is imported for
its side effect (registration) by `avgpool.torch`.
"""

from avgpool.torch import _triton_ops
from avgpool.torch._library._args import through_cpu, window_args, window_of
from avgpool.torch._library._eager import call, needs_dispatcher
from avgpool.torch._library.adaptive import (
    adaptive_avg_pool,
    adaptive_avg_pool_backward,
    adaptive_avg_ready,
    adaptive_max_pool,
    adaptive_max_ready,
)
from avgpool.torch._library.avg import avg_pool, avg_pool_backward, avg_ready
from avgpool.torch._library.blur import blur_output, blur_pool, blur_pool_backward, blur_ready
from avgpool.torch._library.lp import lp_pool, lp_pool_grad, lp_ready
from avgpool.torch._library.max import (
    gather_max,
    max_pool,
    max_pool_backward,
    max_ready,
    max_values_ready,
)

__all__ = [
    "adaptive_avg_pool",
    "adaptive_avg_pool_backward",
    "adaptive_avg_ready",
    "adaptive_max_pool",
    "adaptive_max_ready",
    "avg_pool",
    "avg_pool_backward",
    "avg_ready",
    "blur_output",
    "blur_pool",
    "blur_pool_backward",
    "blur_ready",
    "call",
    "gather_max",
    "lp_pool",
    "lp_pool_grad",
    "lp_ready",
    "max_pool",
    "max_pool_backward",
    "max_ready",
    "max_values_ready",
    "needs_dispatcher",
    "window_args",
    "window_of",
]

# -- other devices -----------------------------------------------------------------------------

_CPU_ONLY = {
    "lp_pool": lp_pool,
    "adaptive_avg_pool": adaptive_avg_pool,
    "adaptive_avg_pool_backward": adaptive_avg_pool_backward,
    "adaptive_max_pool": adaptive_max_pool,
    "blur_pool": blur_pool,
    "blur_pool_backward": blur_pool_backward,
}


def _register_cuda() -> None:
    """CUDA kernels: Triton for avg/max pooling and their backward, the CPU kernels otherwise."""
    _triton_ops.register(
        {
            "avg_pool": avg_pool,
            "avg_pool_backward": avg_pool_backward,
            "max_pool": max_pool,
            "max_pool_backward": max_pool_backward,
        }
    )
    for name, op in _CPU_ONLY.items():

        def kernel(*args, _op=op, _name=name):
            return through_cpu(_name, _op, args[0], args=args[1:])

        op.register_kernel("cuda")(kernel)


_register_cuda()
