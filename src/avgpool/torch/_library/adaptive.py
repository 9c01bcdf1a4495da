"""Adaptive pooling as the custom ops ``avgpool::adaptive_avg_pool`` (and its backward) and
``avgpool::adaptive_max_pool`` (whose backward is max pooling's scatter)."""

import torch
from torch import Tensor

from avgpool import ops
from avgpool.torch._arrays import as_torch_gives, permute_shape, to_numpy
from avgpool.torch._library._args import (
    check_rank,
    new_empty,
    spatial,
    with_spatial,
)
from avgpool.torch._library._eager import call


def _adaptive_sizes(output_size, spatial) -> tuple[int, ...]:
    """-1 keeps the input's size on that axis (PyTorch's None)."""
    return tuple(n if o < 0 else o for o, n in zip(output_size, spatial))


def _adaptive_avg_pool_cpu(x: Tensor, output_size: list[int], channels_last: bool) -> Tensor:
    ndim = len(output_size)
    check_rank(x, ndim)
    out = _adaptive_sizes(output_size, spatial(x.shape, ndim, channels_last))
    v = to_numpy(x, ndim, channels_last)
    y = v.back(ops.adaptive_avg_pool(v.array, out, channels_last=v.channels_last, ndim=ndim))
    return y if channels_last else as_torch_gives(y, x, ndim, "adaptive")


adaptive_avg_pool = torch.library.custom_op(
    "avgpool::adaptive_avg_pool", _adaptive_avg_pool_cpu, mutates_args=(), device_types="cpu"
)


@adaptive_avg_pool.register_fake
def _(x, output_size, channels_last):
    ndim = len(output_size)
    check_rank(x, ndim)
    out = _adaptive_sizes(output_size, spatial(x.shape, ndim, channels_last))
    return new_empty(x, with_spatial(x.shape, ndim, channels_last, out), ndim, channels_last, kind="adaptive")


def _adaptive_avg_pool_backward_cpu(
    grad: Tensor, input_shape: list[int], ndim: int, channels_last: bool
) -> Tensor:
    v = to_numpy(grad, ndim, channels_last)
    shape = input_shape if v.channels_last == channels_last else permute_shape(input_shape, ndim)
    return v.back(ops.adaptive_avg_pool_backward(v.array, shape, channels_last=v.channels_last, ndim=ndim))


adaptive_avg_pool_backward = torch.library.custom_op(
    "avgpool::adaptive_avg_pool_backward",
    _adaptive_avg_pool_backward_cpu,
    mutates_args=(),
    device_types="cpu",
)


@adaptive_avg_pool_backward.register_fake
def _(grad, input_shape, ndim, channels_last):
    return new_empty(grad, list(input_shape), ndim, channels_last)


def _adaptive_avg_setup(ctx, inputs, output):
    ctx.input_shape = list(inputs[0].shape)
    ctx.ndim, ctx.channels_last = len(inputs[1]), inputs[2]


def _adaptive_avg_backward(ctx, grad):
    g = call.adaptive_avg_pool_backward(grad, ctx.input_shape, ctx.ndim, ctx.channels_last)
    return g, None, None


def _adaptive_avg_backward_setup(ctx, inputs, output):
    ctx.out = spatial(inputs[0].shape, inputs[2], inputs[3])
    ctx.channels_last = inputs[3]


def _adaptive_avg_backward_backward(ctx, grad_grad):
    return call.adaptive_avg_pool(grad_grad, list(ctx.out), ctx.channels_last), None, None, None


adaptive_avg_pool.register_autograd(_adaptive_avg_backward, setup_context=_adaptive_avg_setup)
adaptive_avg_pool_backward.register_autograd(
    _adaptive_avg_backward_backward, setup_context=_adaptive_avg_backward_setup
)


def _adaptive_max_pool_cpu(x: Tensor, output_size: list[int], channels_last: bool) -> tuple[Tensor, Tensor]:
    ndim = len(output_size)
    check_rank(x, ndim)
    out = _adaptive_sizes(output_size, spatial(x.shape, ndim, channels_last))
    v = to_numpy(x, ndim, channels_last)
    y, index = ops.adaptive_max_pool(v.array, out, True, channels_last=v.channels_last, ndim=ndim)
    if channels_last:
        return v.back(y), v.back(index)
    return as_torch_gives(v.back(y), x, ndim, "adaptive"), as_torch_gives(v.back(index), x, ndim, "adaptive")


adaptive_max_pool = torch.library.custom_op(
    "avgpool::adaptive_max_pool", _adaptive_max_pool_cpu, mutates_args=(), device_types="cpu"
)


@adaptive_max_pool.register_fake
def _(x, output_size, channels_last):
    ndim = len(output_size)
    check_rank(x, ndim)
    out = _adaptive_sizes(output_size, spatial(x.shape, ndim, channels_last))
    shape = with_spatial(x.shape, ndim, channels_last, out)
    return (
        new_empty(x, shape, ndim, channels_last, kind="adaptive"),
        new_empty(x, shape, ndim, channels_last, torch.int64, "adaptive"),
    )


def _adaptive_max_setup(ctx, inputs, output):
    ctx.input_shape = list(inputs[0].shape)
    ctx.ndim, ctx.channels_last = len(inputs[1]), inputs[2]
    ctx.mark_non_differentiable(output[1])
    ctx.save_for_backward(output[1])


def _adaptive_max_backward(ctx, grad, _grad_indices):
    (indices,) = ctx.saved_tensors
    g = call.max_pool_backward(grad, indices, ctx.input_shape, ctx.ndim, ctx.channels_last)
    return g, None, None


adaptive_max_pool.register_autograd(_adaptive_max_backward, setup_context=_adaptive_max_setup)


call.add("adaptive_avg_pool", _adaptive_avg_pool_cpu, _adaptive_avg_setup, _adaptive_avg_backward)
call.add(
    "adaptive_avg_pool_backward",
    _adaptive_avg_pool_backward_cpu,
    _adaptive_avg_backward_setup,
    _adaptive_avg_backward_backward,
)
call.add("adaptive_max_pool", _adaptive_max_pool_cpu, _adaptive_max_setup, _adaptive_max_backward)
