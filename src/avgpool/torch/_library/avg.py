"""Average pooling as the custom ops ``avgpool::avg_pool`` and ``avgpool::avg_pool_backward``:
CPU kernels, fake implementations and autograd (each the other's backward: they are linear)."""

import functools
import logging

import torch
from torch import Tensor

from avgpool._args import input_shape as input_shape_arg
from avgpool._backends import NUMPY, _kept
from avgpool._errors import AvgPoolError, TorchPoolError
from avgpool._settings import get_backend
from avgpool.torch._arrays import as_torch_gives, permute_shape, to_numpy
from avgpool.torch._library._args import (
    check_rank,
    new_empty,
    numpy_window,
    spatial,
    torch_layout,
    window_args,
    window_of,
    with_spatial,
)
from avgpool.torch._library._eager import (
    FLOATS,
    Ready,
    call,
    needs_dispatcher,
    plain_array,
    tensor_call,
)
from avgpool.window import Window

log = logging.getLogger("avgpool")


class AvgReady(Ready):
    """``avg_pool`` on one `Window`, ready (see `Ready`)."""

    __slots__ = ("nhwc", "window")
    name = "avg_pool"

    def __init__(self, window: Window) -> None:
        self.window = window
        self.nhwc = numpy_window(window, True)
        self.args = window_args(window)

    def cpu(self, x: Tensor) -> Tensor:
        w = self.window
        array = plain_array(x, FLOATS)
        if array is not None:  # contiguous: the NumPy result is the tensor PyTorch gives
            y = torch.from_numpy(NUMPY.avg_pool(array, w, None))
            return y if w.channels_last or y.is_contiguous() else as_torch_gives(y, x, w.ndim, "avg")
        v = to_numpy(x, w.ndim, w.channels_last)
        nw = w if v.channels_last == w.channels_last else self.nhwc
        return torch_layout(v.back(NUMPY.avg_pool(NUMPY.array(v.array), nw, None)), x, w, "avg")

    @property
    def ndim(self) -> int:
        return self.window.ndim

    def plan(self, x: Tensor):
        array = plain_array(x, FLOATS)
        if array is None:
            return None
        return tensor_call(NUMPY.planned_avg(array, self.window))

    def backward_cpu(self, grad: Tensor, input_shape) -> Tensor:
        """``avg_pool_backward``'s CPU kernel on this Window."""
        w = self.window
        array = plain_array(grad, FLOATS)
        if array is not None:
            shape = tuple(input_shape)
            if log.isEnabledFor(logging.DEBUG):  # the NumPy op's path, with its debug lines
                return torch.from_numpy(NUMPY.avg_pool_backward(array, shape, w))
            key = (self, "backward", shape, array.shape, array.dtype, get_backend())
            return _kept(key, lambda: tensor_call(NUMPY.planned_avg_backward(array, shape, w)))(array)
        v = to_numpy(grad, w.ndim, w.channels_last)
        if v.channels_last != w.channels_last:
            input_shape, w = permute_shape(input_shape, w.ndim), self.nhwc
        grad_array = NUMPY.array(v.array, "grad_output")
        return v.back(NUMPY.avg_pool_backward(grad_array, input_shape_arg(input_shape), w))

    def grad(self, ctx, grad: Tensor) -> Tensor:
        if needs_dispatcher(grad) or (torch.is_grad_enabled() and grad.requires_grad):
            return _avg_backward(ctx, grad)[0]  # through call, so it differentiates again
        try:
            return self.backward_cpu(grad, ctx.input_shape)
        except TorchPoolError:
            raise
        except AvgPoolError as exc:
            raise TorchPoolError(str(exc)) from None


@functools.lru_cache(maxsize=1024)
def avg_ready(window: Window) -> AvgReady:
    """The ready ``avg_pool`` of a Window (kept: a model calls each layer again and again)."""
    return AvgReady(window)


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
    return avg_ready(w).cpu(x)


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
    return avg_ready(w).backward_cpu(grad, input_shape)


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


AvgReady.setup_context = staticmethod(_avg_setup)
AvgReady.backward = staticmethod(_avg_backward)
call.add("avg_pool", _avg_pool_cpu, _avg_setup, _avg_backward)
call.add("avg_pool_backward", _avg_pool_backward_cpu, _avg_backward_setup, _avg_backward_backward)
