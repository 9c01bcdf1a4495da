"""The PyTorch front end: avgpool's ops on tensors, as ``torch.library`` custom ops.

Importing it registers the ops under the ``avgpool::`` namespace (``torch.ops.avgpool.*``)
with CPU kernels (zero-copy NumPy views through `avgpool.ops`), CUDA kernels (Triton), fake
implementations (torch.compile, torch.export) and autograd (double backward included).
Importing it also teaches torch.onnx.export the ops (see `avgpool.torch.onnx`).
The functions here are `avgpool.ops`'s bound to the torch backend: same names, same
signatures, same results; ``avgpool.avg_pool2d(tensor, ...)`` is the same op, finding that
backend from the tensor.
"""

from avgpool.torch import _library  # noqa: F401  (registers the custom ops)
from avgpool.torch.functional import *  # noqa: F403
from avgpool.torch.functional import __all__ as __all__
from avgpool.torch.onnx import install as _install_onnx

_install_onnx()
