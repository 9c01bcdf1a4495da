"""The PyTorch backend of `avgpool.ops`: tensors in, one ``torch.ops.avgpool`` custom op call.

`avgpool.ops` has validated the arguments and built the `Window`; this adapter checks that the
array is a tensor, runs PyTorch's own checks for the ``*1d/2d/3d`` forms (`_checks`, in
PyTorch's order and words), and calls the custom op through `call` (the dispatcher where it
matters, straight to the kernel in plain eager CPU calls). avgpool's errors reach its callers
as `TorchPoolError` s: RuntimeErrors, as PyTorch's own are, and still ValueErrors.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from avgpool._backends import Backend
from avgpool._errors import AvgPoolError, TorchPoolError
from avgpool.torch import _checks
from avgpool.torch._library import (
    adaptive_avg_ready,
    adaptive_max_ready,
    avg_ready,
    blur_ready,
    call,
    lp_pool_grad,
    max_ready,
    max_values_ready,
)
from avgpool.torch._library._args import spatial, window_args
from avgpool.window import Window


def _finish(y: Tensor, out: Tensor | None) -> Tensor:
    if out is None:
        return y
    if not isinstance(out, Tensor) or out.shape != y.shape or out.dtype != y.dtype:
        raise AvgPoolError(f"out must be a tensor of shape {tuple(y.shape)} and dtype {y.dtype}")
    return out.copy_(y)


def _check_grad(grad: Tensor, expected: Sequence[int]) -> None:
    if tuple(grad.shape) != tuple(expected):
        raise AvgPoolError(
            f"grad_output must have the forward output's shape {tuple(expected)}, got {tuple(grad.shape)}"
        )


def _max_args(w: Window, nan_policy: str | None) -> tuple:
    kernel, stride, padding, mode, dilation, ceil, _, _, cl, convention = window_args(w)
    return (kernel, stride, padding, mode, dilation, ceil, cl, convention, nan_policy or "")


def _lp_geometry(x: Tensor, w: Window) -> tuple:
    """The lp op's geometry arguments; a global window is a kernel of the whole input."""
    kernel, stride, padding, mode, dilation, ceil, _, _, cl, _ = window_args(w)
    if w.kernel_size is None:
        kernel = spatial(x.shape, w.ndim, cl)
    return (kernel, stride, padding, mode, dilation, ceil, cl)


def _checked_indices(indices: Any, x: Tensor, w: Window) -> Tensor:
    """The forward's arg-max given to a backward: an int64 tensor on ``x``'s device whose
    values lie in [-1, cells of a spatial plane), or an error (never a write out of bounds)."""
    if not isinstance(indices, Tensor) or indices.dtype != torch.int64:
        raise TypeError(
            f"indices must be an int64 torch.Tensor, got {getattr(indices, 'dtype', type(indices))}"
        )
    cells = math.prod(spatial(x.shape, w.ndim, w.channels_last))
    if indices.numel() and (int(indices.min()) < -1 or int(indices.max()) >= cells):
        raise AvgPoolError(f"indices must lie in [-1, {cells}) (flat positions in a spatial plane)")
    return indices


class TorchBackend(Backend):
    """``torch.Tensor`` s, computed by avgpool's custom ops (`avgpool.torch._library`)."""

    name = "torch"
    errors = TorchPoolError

    def array(self, x: Any, name: str = "input", allow_int: bool = False) -> Tensor:
        # dtypes are the op's to refuse, in PyTorch's words (`_checks`)
        if not isinstance(x, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
        return x

    def precheck_pooling(self, op: str, ndim: int, x: Tensor, *args: Any) -> None:
        _checks.pooling(op, ndim, x, *args)

    def precheck_adaptive(self, kind: str, ndim: int, x: Tensor, output_size: Any) -> None:
        _checks.adaptive(kind, ndim, x, output_size)

    def avg_pool(self, x, window, out):
        if torch.compiler.is_compiling():  # traced as the op, no cached lookups
            return _finish(call.avg_pool(x, *window_args(window)), out)
        return _finish(avg_ready(window)(x), out)

    def avg_pool_backward(self, grad, input_shape, window):
        _check_grad(grad, window.output_shape(input_shape))
        return call.avg_pool_backward(grad, list(input_shape), *window_args(window))

    def max_pool(self, x, window, nan_policy, out, return_indices):
        if torch.compiler.is_compiling():  # traced as the op, no cached lookups
            args = _max_args(window, nan_policy)
            if return_indices:
                y, index = call.max_pool(x, *args)
                return _finish(y, out), index
            y = call.max_pool_values(x, *args)
        elif return_indices:
            y, index = max_ready(window, nan_policy or "")(x)
            return _finish(y, out), index
        else:
            y = max_values_ready(window, nan_policy or "")(x)
        if (
            window.ndim == 1
            and not window.channels_last
            and not (x.requires_grad and torch.is_grad_enabled())
        ):
            y = y.contiguous()  # PyTorch's values-only max_pool1d returns a contiguous tensor
        return _finish(y, out)

    def max_pool_backward(self, grad, x, window, nan_policy, indices=None):
        if indices is None:
            _, index = call.max_pool(x.detach(), *_max_args(window, nan_policy))
        else:
            index = _checked_indices(indices, x, window)
        _check_grad(grad, index.shape)
        return call.max_pool_backward(grad, index, list(x.shape), window.ndim, window.channels_last)

    def lp_pool(self, x, p, window, convention):
        return call.lp_pool(x, p, *_lp_geometry(x, window), convention)

    def lp_pool_backward(self, grad, x, p, window, convention):
        _check_grad(grad, window.output_shape(x.shape))
        return lp_pool_grad(grad, x, p, _lp_geometry(x, window), convention)

    def adaptive_avg_pool(self, x, layout, out):
        if torch.compiler.is_compiling():  # traced as the op, no cached lookups
            return call.adaptive_avg_pool(x, list(out), layout.channels_last)
        return adaptive_avg_ready(tuple(out), layout.channels_last)(x)

    def adaptive_avg_pool_backward(self, grad, layout, out):
        return call.adaptive_avg_pool_backward(grad, list(layout.shape), layout.ndim, layout.channels_last)

    def adaptive_max_pool(self, x, layout, out):
        if torch.compiler.is_compiling():  # traced as the op, no cached lookups
            return call.adaptive_max_pool(x, list(out), layout.channels_last)
        return adaptive_max_ready(tuple(out), layout.channels_last)(x)

    def adaptive_max_pool_backward(self, grad, x, layout, out):
        _, index = call.adaptive_max_pool(x.detach(), list(out), layout.channels_last)
        _check_grad(grad, index.shape)
        return call.max_pool_backward(grad, index, list(x.shape), layout.ndim, layout.channels_last)

    def blur_pool(self, x, layout, filt_size, stride, mode, pad_off):
        args = (filt_size, stride, mode, pad_off, layout.ndim, layout.channels_last)
        if torch.compiler.is_compiling():  # traced as the op, no cached lookups
            return call.blur_pool(x, *args)
        return blur_ready(*args)(x)

    def blur_pool_backward(self, grad, layout, filt_size, stride, mode, pad_off):
        shape = list(layout.shape)
        return call.blur_pool_backward(
            grad, shape, filt_size, stride, mode, pad_off, layout.ndim, layout.channels_last
        )


BACKEND = TorchBackend()
