"""Max pooling as the custom ops ``avgpool::max_pool`` (values and arg-max) and
``avgpool::max_pool_backward`` (a scatter to the arg-max; its backward is a gather), and the
values-only path of inference."""

import functools
import logging
from types import SimpleNamespace

import torch
from torch import Tensor

from avgpool import _args, _dispatch
from avgpool._arrays import Layout
from avgpool._backends import NUMPY
from avgpool._errors import AvgPoolError, TorchPoolError, torch_errors
from avgpool.torch._arrays import _cl_order, as_torch_gives, permute_shape, to_numpy
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
    MAX_DTYPES,
    Ready,
    call,
    needs_dispatcher,
    plain_array,
    tensor_call,
)
from avgpool.window import Window

log = logging.getLogger("avgpool")


class MaxReady(Ready):
    """``max_pool`` (values and arg-max) on one `Window` and NaN policy, ready (see `Ready`)."""

    __slots__ = ("nhwc", "policy", "window")
    name = "max_pool"

    def __init__(self, window: Window, nan_policy: str) -> None:
        self.window, self.policy = window, _args.nan_policy(nan_policy or None)
        self.nhwc = numpy_window(window, True)
        kernel, stride, padding, mode, dilation, ceil, _, _, cl, convention = window_args(window)
        self.args = (kernel, stride, padding, mode, dilation, ceil, cl, convention, nan_policy)

    def cpu(self, x: Tensor, return_indices: bool = True):
        """(values, indices), or the values alone (the values-only kernels, several times
        faster) without ``return_indices``."""
        w = self.window
        array = plain_array(x, MAX_DTYPES)
        if array is not None:  # contiguous: the NumPy results are the tensors PyTorch gives
            result = NUMPY.max_pool(array, w, self.policy, None, return_indices)
            if not return_indices:
                return _contiguous_like(torch.from_numpy(result), x, w, "max_values")
            y, index = result
            return _contiguous_like(torch.from_numpy(y), x, w, "max"), _contiguous_like(
                torch.from_numpy(index), x, w, "max"
            )
        v = to_numpy(x, w.ndim, w.channels_last)
        nw = w if v.channels_last == w.channels_last else self.nhwc
        result = NUMPY.max_pool(NUMPY.array(v.array, allow_int=True), nw, self.policy, None, return_indices)
        if not return_indices:
            return torch_layout(v.back(result), x, w, "max_values")
        return torch_layout(v.back(result[0]), x, w, "max"), torch_layout(v.back(result[1]), x, w, "max")

    @property
    def ndim(self) -> int:
        return self.window.ndim

    def plan(self, x: Tensor):
        array = plain_array(x, MAX_DTYPES)
        if array is None:
            return None
        return tensor_call(NUMPY.planned_max(array, self.window, self.policy, True), pair=True)

    def grad(self, ctx, grad: Tensor, _grad_indices) -> Tensor:
        if needs_dispatcher(grad) or (torch.is_grad_enabled() and grad.requires_grad):
            return _max_backward(ctx, grad, _grad_indices)[0]  # through call: differentiates again
        (indices,) = ctx.saved_tensors
        try:
            return _max_pool_backward_cpu(grad, indices, ctx.input_shape, ctx.ndim, ctx.channels_last)
        except TorchPoolError:
            raise
        except AvgPoolError as exc:
            raise TorchPoolError(str(exc)) from None


def _contiguous_like(y: Tensor, x: Tensor, w: Window, kind: str) -> Tensor:
    return y if w.channels_last or y.is_contiguous() else as_torch_gives(y, x, w.ndim, kind)


class MaxValuesReady(MaxReady):
    """The values of a `MaxReady` call. Where nothing needs the arg-max (a plain eager CPU
    tensor that no gradient flows through: inference) the values-only kernels run; else the
    op, whose indices autograd, tracing and other devices use."""

    __slots__ = ("with_indices",)

    def __init__(self, window: Window, nan_policy: str) -> None:
        super().__init__(window, nan_policy)
        self.with_indices = max_ready(window, nan_policy)

    def run(self, x: Tensor) -> Tensor:
        if needs_dispatcher(x) or (torch.is_grad_enabled() and x.requires_grad):
            return self.with_indices(x)[0]
        log.debug("avgpool.torch: max_pool values only (no gradient, eager CPU)")
        return self.cpu(x, return_indices=False)

    def recorded(self, x: Tensor, kept) -> Tensor:
        return self.with_indices(x)[0]  # the arg-max, which the backward reads

    def plan(self, x: Tensor):
        array = plain_array(x, MAX_DTYPES)
        if array is None:
            return None
        planned = NUMPY.planned_max(array, self.window, self.policy, False)
        values = getattr(planned, "values", None)  # a kernel call that pairs its values with None
        if values is not None:
            return tensor_call(values)
        return lambda a: torch.from_numpy(planned(a)[0])


@functools.lru_cache(maxsize=1024)
def max_ready(window: Window, nan_policy: str) -> MaxReady:
    """The ready ``max_pool`` of a Window and NaN policy ("" for the convention's)."""
    return MaxReady(window, nan_policy)


@functools.lru_cache(maxsize=1024)
def max_values_ready(window: Window, nan_policy: str) -> MaxValuesReady:
    """The ready values-only max pooling of a Window and NaN policy ("" for the convention's)."""
    return MaxValuesReady(window, nan_policy)


def _max_ready_of(kernel_size, stride, padding, mode, dilation, ceil, cl, convention, nan_policy):
    w = window_of(kernel_size, stride, padding, mode, dilation, ceil, False, None, cl, convention)
    return max_ready(w, nan_policy)


def _max_pool_cpu(
    x: Tensor,
    kernel_size: list[int],
    stride: list[int],
    padding: list[int],
    padding_mode: str,
    dilation: list[int],
    ceil_mode: bool,
    channels_last: bool,
    convention: str,
    nan_policy: str,
) -> tuple[Tensor, Tensor]:
    args = (kernel_size, stride, padding, padding_mode, dilation, ceil_mode, channels_last, convention)
    return _max_ready_of(*args, nan_policy).cpu(x)


def _max_pool_values(x: Tensor, *args) -> Tensor:
    """The values of ``call.max_pool(x, *args)`` (see `MaxValuesReady`)."""
    if needs_dispatcher(x) or (torch.is_grad_enabled() and x.requires_grad):
        return call.max_pool(x, *args)[0]
    return max_values_ready(_max_ready_of(*args).window, args[-1])(x)


max_pool = torch.library.custom_op("avgpool::max_pool", _max_pool_cpu, mutates_args=(), device_types="cpu")


@max_pool.register_fake
def _(x, kernel_size, stride, padding, padding_mode, dilation, ceil_mode, cl, convention, nan_policy):
    w = window_of(
        kernel_size, stride, padding, padding_mode, dilation, ceil_mode, False, None, cl, convention
    )
    check_rank(x, w.ndim)
    shape = with_spatial(x.shape, w.ndim, cl, [a.out for a in w.resolve(spatial(x.shape, w.ndim, cl))])
    return new_empty(x, shape, w.ndim, cl, kind="max"), new_empty(x, shape, w.ndim, cl, torch.int64, "max")


@functools.lru_cache(maxsize=1024)
def _scatter_geometry(input_shape: tuple, grad_shape: tuple, ndim: int, channels_last: bool):
    """The input's layout and the gradient's spatial shape, checked against each other."""
    layout = Layout.of(input_shape, ndim, channels_last, "input_shape")
    out_spatial = Layout.of(grad_shape, ndim, channels_last, "grad").spatial
    layout.check_grad_shape(SimpleNamespace(shape=grad_shape), out_spatial)
    return layout, out_spatial


def _max_pool_backward_cpu(
    grad: Tensor, indices: Tensor, input_shape: list[int], ndim: int, channels_last: bool
) -> Tensor:
    """Scatter each output's gradient to its arg-max (max, adaptive max and global max)."""
    array = plain_array(grad, MAX_DTYPES)
    if array is not None:  # contiguous: read in place, the result is the tensor PyTorch gives
        layout, out_spatial = _scatter_geometry(tuple(input_shape), array.shape, ndim, channels_last)
        index = indices.contiguous().numpy()
        return torch.from_numpy(_dispatch.max_backward(array, index, layout, out_spatial))
    v = to_numpy(grad, ndim, channels_last)
    if v.channels_last != channels_last:
        index = indices.permute(*_cl_order(ndim)).contiguous().numpy()
        shape = permute_shape(input_shape, ndim)
    else:
        index, shape = indices.contiguous().numpy(), tuple(input_shape)
    layout, out_spatial = _scatter_geometry(tuple(shape), v.array.shape, ndim, v.channels_last)
    return v.back(_dispatch.max_backward(v.array, index, layout, out_spatial))


max_pool_backward = torch.library.custom_op(
    "avgpool::max_pool_backward", _max_pool_backward_cpu, mutates_args=(), device_types="cpu"
)


@max_pool_backward.register_fake
def _(grad, indices, input_shape, ndim, channels_last):
    return new_empty(grad, list(input_shape), ndim, channels_last)


def gather_max(grad_grad: Tensor, indices: Tensor, ndim: int, channels_last: bool) -> Tensor:
    """The transpose of `max_pool_backward`: each output reads its arg-max cell (index -1: 0)."""
    if channels_last:
        grad_grad, indices = grad_grad.movedim(-1, -ndim - 1), indices.movedim(-1, -ndim - 1)
    out_shape = indices.shape
    flat_g = grad_grad.flatten(-ndim)
    flat_i = indices.flatten(-ndim)
    picked = torch.gather(flat_g, -1, flat_i.clamp(min=0))
    picked = torch.where(flat_i >= 0, picked, torch.zeros_like(picked)).reshape(out_shape)
    return picked.movedim(-ndim - 1, -1) if channels_last else picked


def _max_setup(ctx, inputs, output):
    x = inputs[0]
    ctx.input_shape = list(x.shape)
    ctx.ndim = len(inputs[2])
    ctx.channels_last = inputs[7]
    ctx.mark_non_differentiable(output[1])
    ctx.save_for_backward(output[1])


def _max_backward(ctx, grad, _grad_indices):
    (indices,) = ctx.saved_tensors
    g = call.max_pool_backward(grad, indices, ctx.input_shape, ctx.ndim, ctx.channels_last)
    return (g,) + (None,) * 9


def _max_backward_setup(ctx, inputs, output):
    ctx.save_for_backward(inputs[1])
    ctx.ndim, ctx.channels_last = inputs[3], inputs[4]


def _max_backward_backward(ctx, grad_grad):
    (indices,) = ctx.saved_tensors
    return gather_max(grad_grad, indices, ctx.ndim, ctx.channels_last), None, None, None, None


max_pool.register_autograd(_max_backward, setup_context=_max_setup)
max_pool_backward.register_autograd(_max_backward_backward, setup_context=_max_backward_setup)


MaxReady.setup_context = staticmethod(_max_setup)
MaxReady.backward = staticmethod(_max_backward)
call.add("max_pool", _max_pool_cpu, _max_setup, _max_backward)
call.max_pool_values = torch_errors(_max_pool_values)
call.add("max_pool_backward", _max_pool_backward_cpu, _max_backward_setup, _max_backward_backward, 2)
