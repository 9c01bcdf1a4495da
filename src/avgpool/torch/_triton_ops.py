"""CUDA kernels of the custom ops: Triton for 1-D and 2-D average and max pooling and their
backward (`avgpool.kernels.triton_pool`, imported on the first CUDA call).

Everything else on a CUDA tensor (3-D windows, integer max pooling, TensorFlow's NaN-skipping
max) runs on the CPU kernels through a copy, and the debug log says so.
"""

import logging

import numpy as np
import torch

from avgpool.conventions import EMPTY_AVERAGE, MAX_NAN_POLICY
from avgpool.window import Axis

log = logging.getLogger("avgpool")
_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _kernels():
    from avgpool.kernels import triton_pool

    return triton_pool


def _as_nchw(t: torch.Tensor, ndim: int, channels_last: bool) -> torch.Tensor:
    """A (N, C, H, W) view of a batched or unbatched, channels-first or -last 1-D/2-D tensor."""
    if channels_last:
        t = t.movedim(-1, -ndim - 1)
    if t.dim() == ndim + 1:
        t = t.unsqueeze(0)
    return t.unsqueeze(-2) if ndim == 1 else t


def _axes(window, shape) -> tuple:
    from avgpool.torch._library import _spatial

    axes = window.resolve(_spatial(shape, window.ndim, window.channels_last))
    return (Axis(1, 1, 1, 1, 0, 0, 1), *axes) if window.ndim == 1 else axes


def _geometry(axes) -> tuple:
    h, w = axes
    return (h.kernel, w.kernel, h.stride, w.stride, h.dilation, w.dilation, h.pad_before, w.pad_before)


def _inverse_counts(axes, window, device) -> tuple:
    """Per-axis 1/count (the divisor is their product); an empty window: 0, NaN for Flax."""
    from avgpool._cpu import _counts

    counts = _counts(axes, window.count_include_pad)[-2:]
    empty = EMPTY_AVERAGE.get(window.convention, 0.0)
    inv = []
    for i, n in enumerate(counts):
        if window.divisor_override is not None:
            values = np.full(n.shape, 1.0 / window.divisor_override if i == 0 else 1.0)
        else:
            values = np.where(n > 0, 1.0 / np.maximum(n, 1), empty)
        inv.append(torch.tensor(values, dtype=torch.float64, device=device))
    return tuple(inv)


def _channels_inner(t4: torch.Tensor) -> bool:
    return t4.shape[1] > 1 and t4.stride(1) == 1


def _fits(x: torch.Tensor, window) -> bool:
    return window.ndim in (1, 2) and x.dtype in _FLOATS


_OPS: dict = {}


def _fallback(name: str, *tensors: torch.Tensor, args: tuple):
    from avgpool.torch._library import _through_cpu

    return _through_cpu(name, _OPS[name], *tensors, args=args)


def avg_pool(x, *geometry):
    """``avgpool::avg_pool`` on a CUDA tensor (any tensor under ``TRITON_INTERPRET=1``)."""
    from avgpool.torch._library import _new_empty, _with_spatial, window_of

    w = window_of(*geometry)
    if not _fits(x, w):
        return _fallback("avg_pool", x, args=geometry)
    axes = _axes(w, x.shape)
    shape = _with_spatial(x.shape, w.ndim, w.channels_last, [a.out for a in axes[-w.ndim :]])
    y = _new_empty(x, shape, w.ndim, w.channels_last)
    x4, y4 = _as_nchw(x, w.ndim, w.channels_last), _as_nchw(y, w.ndim, w.channels_last)
    inv = _inverse_counts(axes, w, x.device)
    _kernels().avg_forward(x4, y4, *inv, _geometry(axes), _channels_inner(x4))
    return y


def avg_pool_backward(grad, input_shape, *geometry):
    """``avgpool::avg_pool_backward`` on a CUDA tensor."""
    from avgpool.torch._library import _new_empty, window_of

    w = window_of(*geometry)
    if not _fits(grad, w):
        return _fallback("avg_pool_backward", grad, args=(input_shape, *geometry))
    axes = _axes(w, input_shape)
    dx = _new_empty(grad, list(input_shape), w.ndim, w.channels_last)
    g4, d4 = _as_nchw(grad, w.ndim, w.channels_last), _as_nchw(dx, w.ndim, w.channels_last)
    inv = _inverse_counts(axes, w, grad.device)
    _kernels().avg_backward(g4, d4, *inv, _geometry(axes), _channels_inner(d4))
    return dx


def max_pool(x, kernel, stride, padding, mode, dilation, ceil, cl, convention, nan_policy):
    """``avgpool::max_pool`` on a CUDA tensor."""
    from avgpool.torch._library import _new_empty, _with_spatial, window_of

    w = window_of(kernel, stride, padding, mode, dilation, ceil, False, None, cl, convention)
    policy = nan_policy or MAX_NAN_POLICY.get(convention, "propagate")
    if not _fits(x, w) or policy != "propagate":
        args = (kernel, stride, padding, mode, dilation, ceil, cl, convention, nan_policy)
        return _fallback("max_pool", x, args=args)
    axes = _axes(w, x.shape)
    shape = _with_spatial(x.shape, w.ndim, cl, [a.out for a in axes[-w.ndim :]])
    y = _new_empty(x, shape, w.ndim, cl)
    index = _new_empty(x, shape, w.ndim, cl, torch.int64)
    x4, y4, i4 = (_as_nchw(t, w.ndim, cl) for t in (x, y, index))
    _kernels().max_forward(x4, y4, i4, _geometry(axes), _channels_inner(x4))
    return y, index


def max_pool_backward(grad, indices, input_shape, ndim, channels_last):
    """``avgpool::max_pool_backward`` on a CUDA tensor: an atomic scatter to the arg-max."""
    from avgpool.torch._library import _new_empty

    if ndim not in (1, 2) or grad.dtype not in _FLOATS:
        return _fallback("max_pool_backward", grad, indices, args=(input_shape, ndim, channels_last))
    dx = _new_empty(grad, list(input_shape), ndim, channels_last)
    g4 = _as_nchw(grad, ndim, channels_last)
    i4 = _as_nchw(indices, ndim, channels_last)
    if i4.stride() != g4.stride():
        i4 = torch.empty_like(g4, dtype=torch.int64).copy_(i4)
    d4 = _as_nchw(dx, ndim, channels_last)
    n, c, h, w = d4.shape
    wide = torch.float64 if grad.dtype == torch.float64 else torch.float32
    acc = torch.zeros(n, c, h * w, dtype=wide, device=grad.device)
    _kernels().max_backward(g4, i4, acc)
    d4.copy_(acc.reshape(n, c, h, w))
    return dx


def register(ops: dict) -> None:
    """Register the four kernels above for CUDA; ``ops`` maps names to the custom ops."""
    _OPS.update(ops)
    for name, kernel in (
        ("avg_pool", avg_pool),
        ("avg_pool_backward", avg_pool_backward),
        ("max_pool", max_pool),
        ("max_pool_backward", max_pool_backward),
    ):
        ops[name].register_kernel("cuda")(kernel)
