"""Average pooling as the custom ops ``avgpool::avg_pool`` and ``avgpool::avg_pool_backward``:
CPU kernels, fake implementations and autograd (each the other's backward: they are linear)."""

import torch
from torch import Tensor

from avgpool import ops
from avgpool.torch._arrays import permute_shape, to_numpy
from avgpool.torch._library._args import (
    check_rank,
    new_empty,
    numpy_window,
    spatial,
    torch_layout,
    window_of,
    with_spatial,
)
from avgpool.torch._library._eager import call


def _avg_pool_cpu(
    x: Tensor,
    kernel_size: list[int],
    stride: list[int],
    padding: list[int],
    padding_mode: str,
    dilation: list[int],
    ceil_mode: bool,
    count_include_pad: bool,
    divisor_override: int | None,
    channels_last: bool,
    convention: str,
) -> Tensor:
    w = window_of(
        kernel_size,
        stride,
        padding,
        padding_mode,
        dilation,
        ceil_mode,
        count_include_pad,
        divisor_override,
        channels_last,
        convention,
    )
    v = to_numpy(x, w.ndim, w.channels_last)
    return torch_layout(v.back(ops.avg_pool(v.array, window=numpy_window(w, v.channels_last))), x, w, "avg")


avg_pool = torch.library.custom_op("avgpool::avg_pool", _avg_pool_cpu, mutates_args=(), device_types="cpu")


@avg_pool.register_fake
def _(x, kernel_size, stride, padding, padding_mode, dilation, ceil_mode, cip, override, cl, convention):
    w = window_of(
        kernel_size, stride, padding, padding_mode, dilation, ceil_mode, cip, override, cl, convention
    )
    check_rank(x, w.ndim)
    out = [a.out for a in w.resolve(spatial(x.shape, w.ndim, cl))]
    return new_empty(x, with_spatial(x.shape, w.ndim, cl, out), w.ndim, cl, kind="avg")


def _avg_pool_backward_cpu(
    grad: Tensor,
    input_shape: list[int],
    kernel_size: list[int],
    stride: list[int],
    padding: list[int],
    padding_mode: str,
    dilation: list[int],
    ceil_mode: bool,
    count_include_pad: bool,
    divisor_override: int | None,
    channels_last: bool,
    convention: str,
) -> Tensor:
    w = window_of(
        kernel_size,
        stride,
        padding,
        padding_mode,
        dilation,
        ceil_mode,
        count_include_pad,
        divisor_override,
        channels_last,
        convention,
    )
    v = to_numpy(grad, w.ndim, w.channels_last)
    shape = input_shape if v.channels_last == channels_last else permute_shape(input_shape, w.ndim)
    return v.back(ops.avg_pool_backward(v.array, shape, window=numpy_window(w, v.channels_last)))


avg_pool_backward = torch.library.custom_op(
    "avgpool::avg_pool_backward", _avg_pool_backward_cpu, mutates_args=(), device_types="cpu"
)


@avg_pool_backward.register_fake
def _(grad, input_shape, kernel_size, stride, *rest):
    return new_empty(grad, list(input_shape), len(stride), rest[6])


def _avg_setup(ctx, inputs, output):
    ctx.input_shape = list(inputs[0].shape)
    ctx.geometry = inputs[1:]


def _avg_backward(ctx, grad):
    g = call.avg_pool_backward(grad, ctx.input_shape, *ctx.geometry)
    return (g,) + (None,) * len(ctx.geometry)


def _avg_backward_setup(ctx, inputs, output):
    ctx.geometry = inputs[2:]


def _avg_backward_backward(ctx, grad_grad):
    gg = call.avg_pool(grad_grad, *ctx.geometry)
    return (gg, None) + (None,) * len(ctx.geometry)


avg_pool.register_autograd(_avg_backward, setup_context=_avg_setup)
avg_pool_backward.register_autograd(_avg_backward_backward, setup_context=_avg_backward_setup)


call.add("avg_pool", _avg_pool_cpu, _avg_setup, _avg_backward)
call.add("avg_pool_backward", _avg_pool_backward_cpu, _avg_backward_setup, _avg_backward_backward)
