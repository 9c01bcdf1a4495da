"""Adaptive pooling as the custom ops ``avgpool::adaptive_avg_pool`` (and its backward) and
``avgpool::adaptive_max_pool`` (whose backward is max pooling's scatter)."""

import functools
import logging

import numpy as np
import torch
from torch import Tensor

from avgpool import _args, _dispatch, ops
from avgpool._arrays import Layout
from avgpool._backends import NUMPY, _kept
from avgpool._errors import AvgPoolError, TorchPoolError
from avgpool._settings import get_backend
from avgpool.torch._arrays import as_torch_gives, permute_shape, to_numpy
from avgpool.torch._library._args import (
    check_rank,
    new_empty,
    spatial,
    with_spatial,
)
from avgpool.torch._library._eager import (
    FLOATS,
    MAX_DTYPES,
    Ready,
    call,
    needs_dispatcher,
    plain_array,
    tensor_call,
)

log = logging.getLogger("avgpool")


def _adaptive_sizes(output_size, spatial) -> tuple[int, ...]:
    """-1 keeps the input's size on that axis (PyTorch's None)."""
    return tuple(n if o < 0 else o for o, n in zip(output_size, spatial))


class _AdaptiveReady(Ready):
    """An adaptive op on one output size, ready (see `Ready`); the layout and output size of
    each input shape are kept, as `avgpool.ops` would build them."""

    __slots__ = ("channels_last", "geometry", "ndim", "sizes")
    dtypes = FLOATS
    #: Whether the op returns (values, indices).
    pairs = False

    def __init__(self, output_size: tuple[int, ...], channels_last: bool) -> None:
        self.sizes, self.channels_last, self.ndim = output_size, channels_last, len(output_size)
        self.args = (list(output_size), channels_last)
        self.geometry: dict = {}

    def _layout(self, shape: tuple[int, ...], channels_last: bool) -> tuple[Layout, tuple[int, ...]]:
        key = (shape, channels_last)
        found = self.geometry.get(key)
        if found is None:
            layout = Layout.of(shape, self.ndim, channels_last)
            out = _args.output_size(_adaptive_sizes(self.sizes, layout.spatial), layout.spatial)
            if len(self.geometry) > 64:  # a model feeds few shapes; a sweep should not grow it
                self.geometry.clear()
            found = self.geometry[key] = (layout, out)
        return found

    def _run(self, array: np.ndarray, channels_last: bool):
        raise NotImplementedError

    def cpu(self, x: Tensor):
        check_rank(x, self.ndim)
        array = plain_array(x, self.dtypes)
        if array is not None:  # contiguous: the NumPy result is the tensor PyTorch gives
            return self._back(self._run(array, self.channels_last), x, torch.from_numpy)
        v = to_numpy(x, self.ndim, self.channels_last)
        array = NUMPY.array(v.array, allow_int=self.dtypes is not FLOATS)
        return self._back(self._run(array, v.channels_last), x, v.back)

    def plan(self, x: Tensor):
        array = plain_array(x, self.dtypes)
        if array is None:
            return None
        layout, out = self._layout(array.shape, self.channels_last)
        return tensor_call(self.planner(layout, out, array.dtype, array.size), self.pairs)

    def _back(self, result, x: Tensor, back):
        if isinstance(result, tuple):
            return tuple(self._back(r, x, back) for r in result)
        y = back(result)
        return y if self.channels_last else as_torch_gives(y, x, self.ndim, "adaptive")


class AdaptiveAvgReady(_AdaptiveReady):
    """``adaptive_avg_pool`` on one output size (-1: the input's), ready."""

    __slots__ = ()
    name = "adaptive_avg_pool"

    planner = staticmethod(_dispatch.plan_adaptive_avg)

    def _run(self, array, channels_last):
        return NUMPY.adaptive_avg_pool(array, *self._layout(array.shape, channels_last))

    def grad(self, ctx, grad: Tensor) -> Tensor:
        array = None
        if not (needs_dispatcher(grad) or (torch.is_grad_enabled() and grad.requires_grad)):
            array = plain_array(grad, FLOATS)
        if array is None:  # through call: differentiates again, or copies what it must
            return _adaptive_avg_backward(ctx, grad)[0]
        try:
            shape = tuple(ctx.input_shape)
            layout, out = self._layout(shape, self.channels_last)
            layout.check_grad_shape(array, out)
            if log.isEnabledFor(logging.DEBUG):  # the NumPy op's path, with its debug lines
                return torch.from_numpy(NUMPY.adaptive_avg_pool_backward(array, layout, out))
            key = (self, "backward", shape, array.shape, array.dtype, get_backend())
            plan = NUMPY.planned_adaptive_avg_backward
            return _kept(key, lambda: tensor_call(plan(array, layout, out)))(array)
        except TorchPoolError:
            raise
        except AvgPoolError as exc:
            raise TorchPoolError(str(exc)) from None


class AdaptiveMaxReady(_AdaptiveReady):
    """``adaptive_max_pool`` (values and arg-max) on one output size (-1: the input's), ready."""

    __slots__ = ()
    name = "adaptive_max_pool"
    dtypes = MAX_DTYPES

    planner = staticmethod(_dispatch.plan_adaptive_max)
    pairs = True

    def _run(self, array, channels_last):
        return NUMPY.adaptive_max_pool(array, *self._layout(array.shape, channels_last))


@functools.lru_cache(maxsize=1024)
def adaptive_avg_ready(output_size: tuple[int, ...], channels_last: bool) -> AdaptiveAvgReady:
    """The ready ``adaptive_avg_pool`` of an output size (kept per size and layout)."""
    return AdaptiveAvgReady(tuple(output_size), bool(channels_last))


@functools.lru_cache(maxsize=1024)
def adaptive_max_ready(output_size: tuple[int, ...], channels_last: bool) -> AdaptiveMaxReady:
    """The ready ``adaptive_max_pool`` of an output size (kept per size and layout)."""
    return AdaptiveMaxReady(tuple(output_size), bool(channels_last))


def _adaptive_avg_pool_cpu(x: Tensor, output_size: list[int], channels_last: bool) -> Tensor:
    return adaptive_avg_ready(tuple(output_size), channels_last).cpu(x)


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
    return adaptive_max_ready(tuple(output_size), channels_last).cpu(x)


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


AdaptiveAvgReady.setup_context = staticmethod(_adaptive_avg_setup)
AdaptiveAvgReady.backward = staticmethod(_adaptive_avg_backward)
AdaptiveMaxReady.setup_context = staticmethod(_adaptive_max_setup)
AdaptiveMaxReady.backward = staticmethod(_adaptive_max_backward)
call.add("adaptive_avg_pool", _adaptive_avg_pool_cpu, _adaptive_avg_setup, _adaptive_avg_backward)
call.add(
    "adaptive_avg_pool_backward",
    _adaptive_avg_pool_backward_cpu,
    _adaptive_avg_backward_setup,
    _adaptive_avg_backward_backward,
)
call.add("adaptive_max_pool", _adaptive_max_pool_cpu, _adaptive_max_setup, _adaptive_max_backward)
