"""Blur pooling as the custom ops ``avgpool::blur_pool`` and ``avgpool::blur_pool_backward``
(linear, each the other's backward)."""

import functools

import numpy as np
import torch
from torch import Tensor

from avgpool import _args, ops
from avgpool import reference as ref
from avgpool._arrays import Layout
from avgpool._backends import NUMPY
from avgpool._errors import AvgPoolError, TorchPoolError
from avgpool.torch._arrays import permute_shape, to_numpy
from avgpool.torch._library._args import (
    check_rank,
    new_empty,
    spatial,
    with_spatial,
)
from avgpool.torch._library._eager import FLOATS, Ready, call, needs_dispatcher, plain_array


class BlurReady(Ready):
    """``blur_pool`` on one filter, stride and padding, ready (see `Ready`); the layout and
    validated arguments of each input shape are kept, as `avgpool.ops` would build them."""

    __slots__ = ("channels_last", "geometry", "ndim")
    name = "blur_pool"

    def __init__(self, filt_size, stride, pad_type, pad_off, ndim: int, channels_last: bool) -> None:
        self.args = (filt_size, stride, pad_type, pad_off, ndim, channels_last)
        self.ndim, self.channels_last = ndim, channels_last
        self.geometry: dict = {}

    def _geometry(self, shape: tuple, channels_last: bool) -> tuple:
        key = (shape, channels_last)
        found = self.geometry.get(key)
        if found is None:
            layout = Layout.of(shape, self.ndim, channels_last, "input")
            filt_size, stride, pad_type, pad_off = self.args[:4]
            found = (layout, *_args.blur_args(filt_size, stride, pad_type, pad_off, layout.spatial))
            if len(self.geometry) > 64:  # a model feeds few shapes; a sweep should not grow it
                self.geometry.clear()
            self.geometry[key] = found
        return found

    def _run(self, array: np.ndarray, channels_last: bool) -> np.ndarray:
        return NUMPY.blur_pool(array, *self._geometry(array.shape, channels_last))

    def grad(self, ctx, grad: Tensor) -> Tensor:
        array = None
        if not (needs_dispatcher(grad) or (torch.is_grad_enabled() and grad.requires_grad)):
            array = plain_array(grad, FLOATS)
        if array is None:  # through call: differentiates again, or copies what it must
            return _blur_backward(ctx, grad)[0]
        try:
            geometry = self._geometry(tuple(ctx.input_shape), self.channels_last)
            _args.grad_out_size(array, geometry[0])
            return torch.from_numpy(NUMPY.blur_pool_backward(array, *geometry))
        except TorchPoolError:
            raise
        except AvgPoolError as exc:
            raise TorchPoolError(str(exc)) from None

    def plan(self, x: Tensor):
        array = plain_array(x, FLOATS)
        if array is None:
            return None
        geometry = self._geometry(array.shape, self.channels_last)
        blur_pool = NUMPY.blur_pool
        return lambda a: torch.from_numpy(blur_pool(a, *geometry))

    def cpu(self, x: Tensor) -> Tensor:
        array = plain_array(x, FLOATS)
        if array is not None:  # contiguous: the NumPy result is the tensor PyTorch gives
            return torch.from_numpy(self._run(array, self.channels_last))
        v = to_numpy(x, self.ndim, self.channels_last)
        return v.back(self._run(NUMPY.array(v.array), v.channels_last))


@functools.lru_cache(maxsize=1024)
def blur_ready(filt_size, stride, pad_type, pad_off, ndim: int, channels_last: bool) -> BlurReady:
    """The ready ``blur_pool`` of these arguments (kept: a model calls each layer again and again)."""
    return BlurReady(filt_size, stride, pad_type, pad_off, ndim, channels_last)


def _blur_pool_cpu(
    x: Tensor, filt_size: int, stride: int, pad_type: str, pad_off: int, ndim: int, channels_last: bool
) -> Tensor:
    return blur_ready(filt_size, stride, pad_type, pad_off, ndim, channels_last).cpu(x)


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


BlurReady.setup_context = staticmethod(_blur_setup)
BlurReady.backward = staticmethod(_blur_backward)
call.add("blur_pool", _blur_pool_cpu, _blur_setup, _blur_backward)
call.add("blur_pool_backward", _blur_pool_backward_cpu, _blur_backward_setup, _blur_backward_backward)
