"""avgpool: average pooling (and its family) for every framework's convention.

Exact float64 reference semantics for PyTorch, ONNX, TensorFlow, Keras and Flax, one
canonical `Window` to describe any of them, and the ops on NumPy arrays and (with
`avgpool.torch` imported) torch tensors.
"""

from avgpool import ops
from avgpool._buffers import buffer_pool_info, empty_cache, set_buffer_pool
from avgpool._dispatch import get_backend, get_num_threads, set_backend, set_num_threads, use_backend
from avgpool._errors import AvgPoolError
from avgpool.ops import *  # noqa: F403  (the functional API; ops.__all__ lists it)
from avgpool.window import Window

__version__ = "0.1.0"

__all__ = [
    "AvgPoolError",
    "Window",
    "__version__",
    "buffer_pool_info",
    "empty_cache",
    "get_backend",
    "get_num_threads",
    "set_backend",
    "set_buffer_pool",
    "set_num_threads",
    "use_backend",
    *ops.__all__,
]
