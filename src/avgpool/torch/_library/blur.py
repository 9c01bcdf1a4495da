"""Blur pooling as the custom ops ``avgpool::blur_pool`` and ``avgpool::blur_pool_backward``
(linear, each the other's backward)."""

import torch
from torch import Tensor

from avgpool import ops
from avgpool import reference as ref
from avgpool.torch._arrays import permute_shape, to_numpy
from avgpool.torch._library._args import (
    check_rank,
    new_empty,
    spatial,
    with_spatial,
)
from avgpool.torch._library._eager import call


def _blur_pool_cpu(
    x: Tensor, filt_size: int, stride: int, pad_type: str, pad_off: int, ndim: int, channels_last: bool
) -> Tensor:
    v = to_numpy(x, ndim, channels_last)
    y = ops.blur_pool(
        v.array,
        filt_size,
        stride,
        pad_type=pad_type,
        pad_off=pad_off,
        ndim=ndim,
        channels_last=v.channels_last,
    )
    return v.back(y)


def blur_output(spatial, filt_size: int, stride: int, pad_off: int) -> list:
    before, after = ref.blur_pads(filt_size, pad_off)
    return [(n + before + after - filt_size) // stride + 1 for n in spatial]


blur_pool = torch.library.custom_op("avgpool::blur_pool", _blur_pool_cpu, mutates_args=(), device_types="cpu")


@blur_pool.register_fake
def _(x, filt_size, stride, pad_type, pad_off, ndim, channels_last):
    check_rank(x, ndim)
    out = blur_output(spatial(x.shape, ndim, channels_last), filt_size, stride, pad_off)
    return new_empty(x, with_spatial(x.shape, ndim, channels_last, out), ndim, channels_last)


def _blur_pool_backward_cpu(
    grad: Tensor,
    input_shape: list[int],
    filt_size: int,
    stride: int,
    pad_type: str,
    pad_off: int,
    ndim: int,
    channels_last: bool,
) -> Tensor:
    v = to_numpy(grad, ndim, channels_last)
    shape = input_shape if v.channels_last == channels_last else permute_shape(input_shape, ndim)
    g = ops.blur_pool_backward(
        v.array,
        shape,
        filt_size,
        stride,
        pad_type=pad_type,
        pad_off=pad_off,
        ndim=ndim,
        channels_last=v.channels_last,
    )
    return v.back(g)


blur_pool_backward = torch.library.custom_op(
    "avgpool::blur_pool_backward", _blur_pool_backward_cpu, mutates_args=(), device_types="cpu"
)


@blur_pool_backward.register_fake
def _(grad, input_shape, filt_size, stride, pad_type, pad_off, ndim, channels_last):
    return new_empty(grad, list(input_shape), ndim, channels_last)


def _blur_setup(ctx, inputs, output):
    ctx.input_shape = list(inputs[0].shape)
    ctx.args = inputs[1:]


def _blur_backward(ctx, grad):
    g = call.blur_pool_backward(grad, ctx.input_shape, *ctx.args)
    return (g,) + (None,) * len(ctx.args)


def _blur_backward_setup(ctx, inputs, output):
    ctx.args = inputs[2:]


def _blur_backward_backward(ctx, grad_grad):
    return (call.blur_pool(grad_grad, *ctx.args), None) + (None,) * len(ctx.args)


blur_pool.register_autograd(_blur_backward, setup_context=_blur_setup)
blur_pool_backward.register_autograd(_blur_backward_backward, setup_context=_blur_backward_setup)


call.add("blur_pool", _blur_pool_cpu, _blur_setup, _blur_backward)
call.add("blur_pool_backward", _blur_pool_backward_cpu, _blur_backward_setup, _blur_backward_backward)
