"""`avgpool.ops` on tensors: the same ops, names, signatures, rules and results, as custom ops.

Each function is `avgpool.ops`'s own, bound to the PyTorch backend (`avgpool.torch._backend`):
the same argument handling and `Window` construction (`Window.from_torch` for the
``*1d/2d/3d`` forms, with PyTorch's own checks first, in its words), then one
``torch.ops.avgpool`` op, so it differentiates (twice), compiles and exports. Other arrays are
refused (``avgpool.avg_pool2d`` takes either). Tensors are channels-first ``(N, C, *spatial)``
like PyTorch's, or ``(N, *spatial, C)`` with ``channels_last=True``; a channels_last *memory
format* needs no flag: it is read in place and the output keeps it.

Examples
--------
>>> import torch
>>> import avgpool.torch as apt
>>> apt.avg_pool2d(torch.arange(16.0).reshape(1, 1, 4, 4), 2)
tensor([[[[ 2.5000,  4.5000],
          [10.5000, 12.5000]]]])
"""

from __future__ import annotations

from avgpool import ops
from avgpool.torch._backend import BACKEND

__all__ = list(ops.__all__)


def _on_tensors(name: str):
    public = getattr(ops, name)
    bound = public.on(BACKEND)
    bound.__module__ = __name__
    summary = (public.__doc__ or "").strip().splitlines()[0]
    bound.__doc__ = f"{summary}\n\n`avgpool.{name}` on tensors (a TypeError for other arrays)."
    return bound


for _name in __all__:
    globals()[_name] = _on_tensors(_name)
del _name
