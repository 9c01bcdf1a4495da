"""avgpool's ops as PyTorch custom ops (namespace ``avgpool::``), with fake and autograd.

Every op takes a tensor and plain numbers: the `Window` travels as its fields (see
`window_args`), so the ops script, trace, compile and export like ATen's own. Each op has

* a CPU kernel: a zero-copy NumPy view of the tensor through `avgpool.ops` (the same
  `Window.resolve` geometry and Numba drivers as NumPy arrays get);
* a CUDA kernel: Triton for average and max pooling and their backward
  (`avgpool.kernels.triton_pool`); the other ops copy through the CPU kernels, with a debug
  log line saying so;
* a fake (meta) implementation giving the output's shape and strides for torch.compile and
  torch.export;
* autograd: the backward ops are themselves custom ops whose own backward is the forward op
  (average, adaptive average, blur: they are linear) or a gather (max), so double backward
  works; Lp pooling's backward is written with the average ops, so it differentiates again;
* an eager path, `call`: ``call.avg_pool(x, ...)`` is ``torch.ops.avgpool.avg_pool(x, ...)``
  minus the dispatcher's ~50 µs for a plain CPU tensor in eager mode (the same CPU kernel
  and autograd formulas, called directly); everything else goes through the dispatcher
  (`needs_dispatcher`). The modules, the functional API and the backward formulas use it.

This module is imported for its side effect (registration) by `avgpool.torch`.
"""

import functools
import logging
import math

import torch
from torch import Tensor

from avgpool import _dispatch, ops
from avgpool import reference as ref
from avgpool._arrays import Layout
from avgpool._errors import AvgPoolError, torch_errors
from avgpool.torch._arrays import (
    _cf_order,
    _cl_order,
    as_torch_gives,
    memory_channels_last,
    permute_shape,
    to_numpy,
    torch_output_strides,
)
from avgpool.window import Window

log = logging.getLogger("avgpool")

# -- the Window as op arguments ----------------------------------------------------------------


def window_args(w: Window) -> tuple:
    """A Window as the custom ops' geometry arguments, in their order.

    ``(kernel_size, stride, padding, padding_mode, dilation, ceil_mode, count_include_pad,
    divisor_override, channels_last, convention)``; an empty ``kernel_size`` is a global
    window, ``padding`` holds (before, after) per axis flattened, ``padding_mode`` is "" or
    "same" / "same_lower".
    """
    if isinstance(w.padding, str):
        padding, mode = [], w.padding
    else:
        padding, mode = [p for pair in w.padding for p in pair], ""
    return (
        list(w.kernel_size or []),
        list(w.stride),
        padding,
        mode,
        list(w.dilation),
        w.ceil_mode,
        w.count_include_pad,
        w.divisor_override,
        w.channels_last,
        w.convention,
    )


@functools.lru_cache(maxsize=4096)
def _window_cached(kernel, stride, padding, mode, dilation, ceil, cip, override, cl, convention) -> Window:
    pads = mode if mode else tuple(zip(padding[0::2], padding[1::2]))
    return Window(
        kernel or None,
        stride,
        pads,
        dilation=dilation,
        ceil_mode=ceil,
        count_include_pad=cip,
        divisor_override=override,
        channels_last=cl,
        ndim=len(stride),
        convention=convention,
    )


def window_of(kernel, stride, padding, mode, dilation, ceil, cip, override, cl, convention) -> Window:
    """The Window that `window_args` encoded (cached: ops rebuild it on every call)."""
    return _window_cached(
        tuple(kernel),
        tuple(stride),
        tuple(padding),
        mode,
        tuple(dilation),
        ceil,
        cip,
        override,
        cl,
        convention,
    )


def _spatial(shape, ndim: int, channels_last: bool) -> list:
    return list(shape[-ndim - 1 : -1] if channels_last else shape[len(shape) - ndim :])


def _with_spatial(shape, ndim: int, channels_last: bool, spatial) -> list:
    shape = list(shape)
    if channels_last:
        return [*shape[: -ndim - 1], *spatial, shape[-1]]
    return [*shape[: len(shape) - ndim], *spatial]


def _check_rank(x: Tensor, ndim: int, name: str = "input") -> None:
    if x.dim() not in (ndim + 1, ndim + 2):
        raise AvgPoolError(
            f"{name} must have {ndim + 2} dimensions (batched) or {ndim + 1} (unbatched) for "
            f"{ndim}-d pooling, got shape {tuple(x.shape)}"
        )


def _new_empty(
    like: Tensor, shape, ndim: int, channels_last: bool, dtype=None, kind: str | None = None
) -> Tensor:
    """An empty result with the memory format the CPU kernels give for input ``like``: for a
    forward ``kind`` of pooling, PyTorch's own (`torch_output_strides`)."""
    dtype = like.dtype if dtype is None else dtype
    if kind is not None and not channels_last:
        return like.new_empty_strided(shape, torch_output_strides(like, ndim, kind, shape), dtype=dtype)
    if not channels_last and memory_channels_last(like, ndim) and len(shape) == ndim + 2:
        return like.new_empty(permute_shape(shape, ndim), dtype=dtype).permute(*_cf_order(ndim))
    return like.new_empty(shape, dtype=dtype)


def _torch_layout(y: Tensor, x: Tensor, w: Window, kind: str) -> Tensor:
    """A channels-first result in the memory layout PyTorch's pooling gives (`as_torch_gives`)."""
    return y if w.channels_last else as_torch_gives(y, x, w.ndim, kind)


def _numpy_window(w: Window, channels_last: bool) -> Window:
    """The window in the layout the NumPy view is read in."""
    if channels_last == w.channels_last:
        return w
    args = window_args(w)
    return window_of(*args[:8], channels_last, args[9])


def _through_cpu(name: str, fn, *tensors: Tensor, args: tuple = ()):
    """Run a CPU kernel for tensors on another device: the fallback, logged."""
    device = tensors[0].device
    log.debug("avgpool.torch: %s on %s through the CPU kernels (no GPU kernel for it)", name, device)
    result = fn(*(t.cpu() for t in tensors), *args)
    if isinstance(result, tuple):
        return tuple(r.to(device) for r in result)
    return result.to(device)


# -- average pooling ---------------------------------------------------------------------------


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
    return _torch_layout(v.back(ops.avg_pool(v.array, window=_numpy_window(w, v.channels_last))), x, w, "avg")


avg_pool = torch.library.custom_op("avgpool::avg_pool", _avg_pool_cpu, mutates_args=(), device_types="cpu")


@avg_pool.register_fake
def _(x, kernel_size, stride, padding, padding_mode, dilation, ceil_mode, cip, override, cl, convention):
    w = window_of(
        kernel_size, stride, padding, padding_mode, dilation, ceil_mode, cip, override, cl, convention
    )
    _check_rank(x, w.ndim)
    out = [a.out for a in w.resolve(_spatial(x.shape, w.ndim, cl))]
    return _new_empty(x, _with_spatial(x.shape, w.ndim, cl, out), w.ndim, cl, kind="avg")


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
    return v.back(ops.avg_pool_backward(v.array, shape, window=_numpy_window(w, v.channels_last)))


avg_pool_backward = torch.library.custom_op(
    "avgpool::avg_pool_backward", _avg_pool_backward_cpu, mutates_args=(), device_types="cpu"
)


@avg_pool_backward.register_fake
def _(grad, input_shape, kernel_size, stride, *rest):
    return _new_empty(grad, list(input_shape), len(stride), rest[6])


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


# -- max pooling -------------------------------------------------------------------------------


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
    return _max_pool_numpy(x, *args, nan_policy, return_indices=True)


def _max_pool_numpy(
    x, kernel_size, stride, padding, mode, dilation, ceil, cl, convention, nan_policy, *, return_indices
):
    """`ops.max_pool` on the tensor's memory: (values, indices), or the values alone (the
    values-only kernels, several times faster) without ``return_indices``."""
    w = window_of(kernel_size, stride, padding, mode, dilation, ceil, False, None, cl, convention)
    v = to_numpy(x, w.ndim, w.channels_last)
    window, policy = _numpy_window(w, v.channels_last), nan_policy or None
    if not return_indices:
        return _torch_layout(
            v.back(ops.max_pool(v.array, window=window, nan_policy=policy)), x, w, "max_values"
        )
    y, index = ops.max_pool(v.array, window=window, return_indices=True, nan_policy=policy)
    return _torch_layout(v.back(y), x, w, "max"), _torch_layout(v.back(index), x, w, "max")


def _max_pool_values(x: Tensor, *args) -> Tensor:
    """The values of ``call.max_pool(x, *args)``. Where nothing needs the arg-max (a plain eager
    CPU tensor that no gradient flows through: inference) the values-only kernels run; else the
    op, whose indices autograd, tracing and other devices use."""
    if needs_dispatcher(x) or (torch.is_grad_enabled() and x.requires_grad):
        return call.max_pool(x, *args)[0]
    log.debug("avgpool.torch: max_pool values only (no gradient, eager CPU)")
    return _max_pool_numpy(x, *args, return_indices=False)


max_pool = torch.library.custom_op("avgpool::max_pool", _max_pool_cpu, mutates_args=(), device_types="cpu")


@max_pool.register_fake
def _(x, kernel_size, stride, padding, padding_mode, dilation, ceil_mode, cl, convention, nan_policy):
    w = window_of(
        kernel_size, stride, padding, padding_mode, dilation, ceil_mode, False, None, cl, convention
    )
    _check_rank(x, w.ndim)
    shape = _with_spatial(x.shape, w.ndim, cl, [a.out for a in w.resolve(_spatial(x.shape, w.ndim, cl))])
    return _new_empty(x, shape, w.ndim, cl, kind="max"), _new_empty(x, shape, w.ndim, cl, torch.int64, "max")


def _max_pool_backward_cpu(
    grad: Tensor, indices: Tensor, input_shape: list[int], ndim: int, channels_last: bool
) -> Tensor:
    """Scatter each output's gradient to its arg-max (max, adaptive max and global max)."""
    v = to_numpy(grad, ndim, channels_last)
    if v.channels_last != channels_last:
        index = indices.permute(*_cl_order(ndim)).contiguous().numpy()
        shape = permute_shape(input_shape, ndim)
    else:
        index, shape = indices.contiguous().numpy(), tuple(input_shape)
    layout = Layout.of(shape, ndim, v.channels_last, "input_shape")
    out_spatial = Layout.of(v.array.shape, ndim, v.channels_last, "grad").spatial
    layout.check_grad_shape(v.array, out_spatial)
    return v.back(_dispatch.max_backward(v.array, index, layout, out_spatial))


max_pool_backward = torch.library.custom_op(
    "avgpool::max_pool_backward", _max_pool_backward_cpu, mutates_args=(), device_types="cpu"
)


@max_pool_backward.register_fake
def _(grad, indices, input_shape, ndim, channels_last):
    return _new_empty(grad, list(input_shape), ndim, channels_last)


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


# -- Lp pooling --------------------------------------------------------------------------------


def _lp_pool_cpu(
    x: Tensor,
    norm_type: float,
    kernel_size: list[int],
    stride: list[int],
    padding: list[int],
    padding_mode: str,
    dilation: list[int],
    ceil_mode: bool,
    channels_last: bool,
    convention: str,
) -> Tensor:
    """``convention`` is Lp's own: "torch" (``F.lp_pool*d``) or "onnx" (LpPool)."""
    w = window_of(
        kernel_size, stride, padding, padding_mode, dilation, ceil_mode, True, None, channels_last, "torch"
    )
    v = to_numpy(x, w.ndim, w.channels_last)
    y = ops.lp_pool(v.array, norm_type, window=_numpy_window(w, v.channels_last), convention=convention)
    return _torch_layout(v.back(y), x, w, "lp")


lp_pool = torch.library.custom_op("avgpool::lp_pool", _lp_pool_cpu, mutates_args=(), device_types="cpu")


@lp_pool.register_fake
def _(x, norm_type, kernel_size, stride, padding, padding_mode, dilation, ceil_mode, cl, convention):
    w = window_of(kernel_size, stride, padding, padding_mode, dilation, ceil_mode, True, None, cl, "torch")
    _check_rank(x, w.ndim)
    out = [a.out for a in w.resolve(_spatial(x.shape, w.ndim, cl))]
    return _new_empty(x, _with_spatial(x.shape, w.ndim, cl, out), w.ndim, cl, kind="lp")


def lp_pool_grad(grad: Tensor, x: Tensor, norm_type: float, geometry: tuple, convention: str) -> Tensor:
    """d lp_pool / dx, written with the average ops so that it differentiates again.

    torch: ``y = (K * avg(x**p))**(1/p)``, so ``dx = x**(p-1) * avg_backward(K * g * T**(1/p-1))``
    with ``T = K * avg(x**p)``; onnx: ``T = sum |x|**p`` and ``sign(x)|x|**(p-1)`` inside.
    0 where a window's power sum is 0, as `avgpool.lp_pool_backward`.
    """
    kernel, stride, padding, mode, dilation, ceil, cl = geometry
    p = float(norm_type)
    if convention == "torch":
        k = float(math.prod(kernel))
        avg_geometry = (kernel, stride, padding, mode, dilation, ceil, True, None, cl, "torch")
        total = call.avg_pool(x.pow(p), *avg_geometry) * k
        inner = x.pow(p - 1.0)
    else:
        k = 1.0
        avg_geometry = (kernel, stride, padding, mode, dilation, ceil, False, 1, cl, "onnx")
        total = call.avg_pool(x.abs().pow(p), *avg_geometry)
        inner = torch.sign(x) * x.abs().pow(p - 1.0)
    nonzero = total != 0
    safe = torch.where(nonzero, total, torch.ones_like(total))
    coef = torch.where(nonzero, grad * safe.pow(1.0 / p - 1.0) * k, torch.zeros_like(total))
    spread = call.avg_pool_backward(coef, list(x.shape), *avg_geometry)
    return inner * spread


def _lp_setup(ctx, inputs, output):
    ctx.save_for_backward(inputs[0])
    ctx.norm_type = inputs[1]
    ctx.geometry = tuple(inputs[2:9])
    ctx.convention = inputs[9]


def _lp_backward(ctx, grad):
    (x,) = ctx.saved_tensors
    return (lp_pool_grad(grad, x, ctx.norm_type, ctx.geometry, ctx.convention),) + (None,) * 9


lp_pool.register_autograd(_lp_backward, setup_context=_lp_setup)


# -- adaptive pooling --------------------------------------------------------------------------


def _adaptive_sizes(output_size, spatial) -> tuple[int, ...]:
    """-1 keeps the input's size on that axis (PyTorch's None)."""
    return tuple(n if o < 0 else o for o, n in zip(output_size, spatial))


def _adaptive_avg_pool_cpu(x: Tensor, output_size: list[int], channels_last: bool) -> Tensor:
    ndim = len(output_size)
    _check_rank(x, ndim)
    out = _adaptive_sizes(output_size, _spatial(x.shape, ndim, channels_last))
    v = to_numpy(x, ndim, channels_last)
    y = v.back(ops.adaptive_avg_pool(v.array, out, channels_last=v.channels_last, ndim=ndim))
    return y if channels_last else as_torch_gives(y, x, ndim, "adaptive")


adaptive_avg_pool = torch.library.custom_op(
    "avgpool::adaptive_avg_pool", _adaptive_avg_pool_cpu, mutates_args=(), device_types="cpu"
)


@adaptive_avg_pool.register_fake
def _(x, output_size, channels_last):
    ndim = len(output_size)
    _check_rank(x, ndim)
    spatial = _spatial(x.shape, ndim, channels_last)
    out = _adaptive_sizes(output_size, spatial)
    return _new_empty(
        x, _with_spatial(x.shape, ndim, channels_last, out), ndim, channels_last, kind="adaptive"
    )


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
    return _new_empty(grad, list(input_shape), ndim, channels_last)


def _adaptive_avg_setup(ctx, inputs, output):
    ctx.input_shape = list(inputs[0].shape)
    ctx.ndim, ctx.channels_last = len(inputs[1]), inputs[2]


def _adaptive_avg_backward(ctx, grad):
    g = call.adaptive_avg_pool_backward(grad, ctx.input_shape, ctx.ndim, ctx.channels_last)
    return g, None, None


def _adaptive_avg_backward_setup(ctx, inputs, output):
    ctx.out = _spatial(inputs[0].shape, inputs[2], inputs[3])
    ctx.channels_last = inputs[3]


def _adaptive_avg_backward_backward(ctx, grad_grad):
    return call.adaptive_avg_pool(grad_grad, list(ctx.out), ctx.channels_last), None, None, None


adaptive_avg_pool.register_autograd(_adaptive_avg_backward, setup_context=_adaptive_avg_setup)
adaptive_avg_pool_backward.register_autograd(
    _adaptive_avg_backward_backward, setup_context=_adaptive_avg_backward_setup
)


def _adaptive_max_pool_cpu(x: Tensor, output_size: list[int], channels_last: bool) -> tuple[Tensor, Tensor]:
    ndim = len(output_size)
    _check_rank(x, ndim)
    out = _adaptive_sizes(output_size, _spatial(x.shape, ndim, channels_last))
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
    _check_rank(x, ndim)
    out = _adaptive_sizes(output_size, _spatial(x.shape, ndim, channels_last))
    shape = _with_spatial(x.shape, ndim, channels_last, out)
    return (
        _new_empty(x, shape, ndim, channels_last, kind="adaptive"),
        _new_empty(x, shape, ndim, channels_last, torch.int64, "adaptive"),
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


# -- blur pooling ------------------------------------------------------------------------------


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
    _check_rank(x, ndim)
    out = blur_output(_spatial(x.shape, ndim, channels_last), filt_size, stride, pad_off)
    return _new_empty(x, _with_spatial(x.shape, ndim, channels_last, out), ndim, channels_last)


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
    return _new_empty(grad, list(input_shape), ndim, channels_last)


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


# -- eager calls that skip the dispatcher ------------------------------------------------------


def _dispatch_checks() -> tuple | None:
    """The state queries `needs_dispatcher` makes; None (always dispatch) if this torch lacks one."""
    try:
        return (
            torch.compiler.is_compiling,
            torch.jit.is_tracing,
            torch._C._len_torch_dispatch_stack,
            torch._C._is_torch_function_mode_enabled,
            torch._C._are_functorch_transforms_active,
            torch._C._autograd._profiler_enabled,
        )
    except AttributeError:  # pragma: no cover (torch >= 2.3 has them all)
        return None


_CHECKS = _dispatch_checks()


def needs_dispatcher(x: Tensor) -> bool:
    """Whether a call on ``x`` must go through the dispatcher rather than straight to the kernel.

    A Python custom op costs about 50 µs a call in the dispatcher (Python -> C++ -> Python, for
    the autograd key and again for the CPU key), ten times the kernel on a small tensor. For
    a plain CPU tensor in eager mode the dispatcher would only pick the CPU kernel and the
    autograd formula registered here, so `call` runs those itself. Anything else goes through
    it: compiling (dynamo, export), jit tracing (the TorchScript ONNX exporter), tensor
    subclasses and fake tensors, other devices, dispatch and function modes (FakeTensorMode,
    make_fx, FlopCounterMode, ``with torch.device``), vmap and grad transforms, and the
    profiler, so that traces and profiles show the custom op.
    """
    checks = _CHECKS
    if checks is None:
        return True
    compiling, tracing, dispatch_modes, function_modes, transforms, profiling = checks
    return (
        compiling()
        or type(x) is not Tensor
        or not x.is_cpu
        or tracing()
        or dispatch_modes() > 0
        or function_modes()
        or transforms()
        or profiling()
    )


class _Calls:
    """``torch.ops.avgpool``'s ops, each run without the dispatcher where that changes nothing.

    ``call.avg_pool(x, ...)`` is ``torch.ops.avgpool.avg_pool(x, ...)``: the same kernel, the
    same result, the same autograd formula (through a ``torch.autograd.Function`` made of this
    module's setup_context and backward, whose backward calls these again, so double backward
    works as through the dispatcher). See `needs_dispatcher` for when the dispatcher runs.
    """

    def add(self, name: str, kernel, setup_context, backward, tensors: int = 1) -> None:
        op = getattr(torch.ops.avgpool, name)

        # ctx in forward, not a separate setup_context: Function.apply binds the arguments to
        # forward's signature (inspect.signature, ~10 µs) when setup_context is defined
        def forward(ctx, *args):
            output = kernel(*args)
            setup_context(ctx, args, output)
            return output

        function = type(
            f"EagerFor_avgpool_{name}",
            (torch.autograd.Function,),
            {"forward": staticmethod(forward), "backward": staticmethod(backward)},
        )

        def run(*args):
            if needs_dispatcher(args[0]):
                return op(*args)
            log.debug("avgpool.torch: %s without the dispatcher (a plain CPU tensor, eager)", name)
            if torch.is_grad_enabled() and (
                args[0].requires_grad or (tensors > 1 and any(t.requires_grad for t in args[1:tensors]))
            ):
                return function.apply(*args)
            return kernel(*args)

        run.__name__ = run.__qualname__ = name
        run.__doc__ = f"``torch.ops.avgpool.{name}``, without the dispatcher in plain eager calls."
        setattr(self, name, torch_errors(run))


call = _Calls()
call.add("avg_pool", _avg_pool_cpu, _avg_setup, _avg_backward)
call.add("avg_pool_backward", _avg_pool_backward_cpu, _avg_backward_setup, _avg_backward_backward)
call.add("max_pool", _max_pool_cpu, _max_setup, _max_backward)
call.max_pool_values = torch_errors(_max_pool_values)
call.add("max_pool_backward", _max_pool_backward_cpu, _max_backward_setup, _max_backward_backward, 2)
call.add("lp_pool", _lp_pool_cpu, _lp_setup, _lp_backward)
call.add("adaptive_avg_pool", _adaptive_avg_pool_cpu, _adaptive_avg_setup, _adaptive_avg_backward)
call.add(
    "adaptive_avg_pool_backward",
    _adaptive_avg_pool_backward_cpu,
    _adaptive_avg_backward_setup,
    _adaptive_avg_backward_backward,
)
call.add("adaptive_max_pool", _adaptive_max_pool_cpu, _adaptive_max_setup, _adaptive_max_backward)
call.add("blur_pool", _blur_pool_cpu, _blur_setup, _blur_backward)
call.add("blur_pool_backward", _blur_pool_backward_cpu, _blur_backward_setup, _blur_backward_backward)


# -- other devices -----------------------------------------------------------------------------

_CPU_ONLY = {
    "lp_pool": lp_pool,
    "adaptive_avg_pool": adaptive_avg_pool,
    "adaptive_avg_pool_backward": adaptive_avg_pool_backward,
    "adaptive_max_pool": adaptive_max_pool,
    "blur_pool": blur_pool,
    "blur_pool_backward": blur_pool_backward,
}


def _register_cuda() -> None:
    """CUDA kernels: Triton for avg/max pooling and their backward, the CPU kernels otherwise."""
    from avgpool.torch import _triton_ops

    _triton_ops.register(
        {
            "avg_pool": avg_pool,
            "avg_pool_backward": avg_pool_backward,
            "max_pool": max_pool,
            "max_pool_backward": max_pool_backward,
        }
    )
    for name, op in _CPU_ONLY.items():

        def kernel(*args, _op=op, _name=name):
            return _through_cpu(_name, _op, args[0], args=args[1:])

        op.register_kernel("cuda")(kernel)


_register_cuda()
