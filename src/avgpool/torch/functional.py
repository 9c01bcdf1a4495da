"""`avgpool.ops` on tensors: the same names, signatures, rules and results, as custom ops.

Each function validates its arguments exactly as its NumPy twin does (the same `Window`
construction: `Window.from_torch` for the ``*1d/2d/3d`` forms, PyTorch's refusals included),
then calls one ``torch.ops.avgpool`` op, so it differentiates (twice), compiles and exports.
Tensors are channels-first ``(N, C, *spatial)`` like PyTorch's, or ``(N, *spatial, C)`` with
``channels_last=True``; a channels_last *memory format* needs no flag: it is read in place
and the output keeps it.

Examples
--------
>>> import torch
>>> import avgpool.torch as apt
>>> apt.avg_pool2d(torch.arange(16.0).reshape(1, 1, 4, 4), 2)
tensor([[[[ 2.5000,  4.5000],
          [10.5000, 12.5000]]]])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from avgpool import ops
from avgpool import reference as ref
from avgpool._errors import AvgPoolError, torch_errors
from avgpool.conventions import from_torch
from avgpool.torch import _checks
from avgpool.torch._library import _spatial, call, lp_pool_grad, window_args
from avgpool.window import Window, _as_int

__all__ = list(ops.__all__)


def _tensor(x: Any, name: str = "input") -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    return x


def _finish(y: Tensor, out: Tensor | None) -> Tensor:
    if out is None:
        return y
    if not isinstance(out, Tensor) or out.shape != y.shape or out.dtype != y.dtype:
        raise AvgPoolError(f"out must be a tensor of shape {tuple(y.shape)} and dtype {y.dtype}")
    return out.copy_(y)


# -- average -----------------------------------------------------------------------------------


def avg_pool(
    x: Tensor,
    kernel_size: int | Sequence[int] | None = None,
    stride: int | Sequence[int] | None = None,
    padding: Any = 0,
    *,
    dilation: int | Sequence[int] = 1,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
    divisor_override: int | None = None,
    channels_last: bool = False,
    window: Window | None = None,
    out: Tensor | None = None,
) -> Tensor:
    """N-d average pooling of a tensor; see `avgpool.avg_pool`."""
    x = _tensor(x)
    w = ops._window(
        x.dim(),
        window,
        kernel_size,
        stride,
        padding,
        dilation=dilation,
        ceil_mode=ceil_mode,
        count_include_pad=count_include_pad,
        divisor_override=divisor_override,
        channels_last=channels_last,
    )
    return _finish(call.avg_pool(x, *window_args(w)), out)


def avg_pool_backward(
    grad_output: Tensor,
    input_shape: Sequence[int],
    kernel_size: int | Sequence[int] | None = None,
    stride: int | Sequence[int] | None = None,
    padding: Any = 0,
    *,
    dilation: int | Sequence[int] = 1,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
    divisor_override: int | None = None,
    channels_last: bool = False,
    window: Window | None = None,
) -> Tensor:
    """Gradient of `avg_pool` w.r.t. its input; see `avgpool.avg_pool_backward`."""
    grad_output = _tensor(grad_output, "grad_output")
    input_shape = [_as_int(s, "input_shape") for s in input_shape]
    w = ops._window(
        len(input_shape),
        window,
        kernel_size,
        stride,
        padding,
        dilation=dilation,
        ceil_mode=ceil_mode,
        count_include_pad=count_include_pad,
        divisor_override=divisor_override,
        channels_last=channels_last,
    )
    _check_grad(grad_output, w.output_shape(input_shape))
    return call.avg_pool_backward(grad_output, input_shape, *window_args(w))


def _check_grad(grad: Tensor, expected: Sequence[int]) -> None:
    if tuple(grad.shape) != tuple(expected):
        raise AvgPoolError(
            f"grad_output must have the forward output's shape {tuple(expected)}, got {tuple(grad.shape)}"
        )


def _check_avg3d(x: Tensor, w: Window) -> None:
    """PyTorch's avg_pool3d (so lp_pool3d) alone refuses an input smaller than the kernel."""
    if w.ndim != 3:
        return
    spatial = tuple(_spatial(x.shape, 3, w.channels_last))
    if any(n < k for n, k in zip(spatial, w.kernel_size)):
        raise AvgPoolError(
            f"input spatial shape {spatial} is smaller than kernel_size {w.kernel_size} "
            "(PyTorch's avg_pool3d refuses it even with padding)"
        )


def _fixed_window(x: Tensor, window: Window | None, ndim: int, op: str, *args: Any, **kwargs: Any) -> Window:
    if window is not None:
        return ops._window(x.dim(), window, None, ndim=ndim)
    return from_torch(*args, op=op, ndim=ndim, **kwargs)


def _fixed_avg(ndim: int, name: str):
    def pool(
        input: Tensor,
        kernel_size: int | Sequence[int] | None = None,
        stride: int | Sequence[int] | None = None,
        padding: int | Sequence[int] = 0,
        ceil_mode: bool = False,
        count_include_pad: bool = True,
        divisor_override: int | None = None,
        *,
        channels_last: bool = False,
        window: Window | None = None,
    ) -> Tensor:
        input = _tensor(input)
        if window is None and not channels_last:
            _checks.pooling("avg", ndim, input, kernel_size, stride, padding, 1, ceil_mode, divisor_override)
        w = _fixed_window(
            input,
            window,
            ndim,
            "avg",
            kernel_size,
            stride,
            padding,
            1,
            ceil_mode,
            count_include_pad,
            divisor_override,
            channels_last=channels_last,
        )
        if window is None:
            _check_avg3d(input, w)
        return call.avg_pool(input, *window_args(w))

    pool.__name__ = pool.__qualname__ = name
    pool.__doc__ = f"{ndim}-d average pooling: ``torch.nn.functional.{name}``; see `avgpool.{name}`."
    return pool


avg_pool1d = _fixed_avg(1, "avg_pool1d")
avg_pool2d = _fixed_avg(2, "avg_pool2d")
avg_pool3d = _fixed_avg(3, "avg_pool3d")


# -- max ---------------------------------------------------------------------------------------


def _max_window(
    x: Tensor, kernel_size, stride, padding, dilation, ceil_mode, channels_last, window
) -> Window:
    return ops._window(
        x.dim(),
        window,
        kernel_size,
        stride,
        padding,
        dilation=dilation,
        ceil_mode=ceil_mode,
        channels_last=channels_last,
    )


def _max_args(w: Window, nan_policy: str | None) -> tuple:
    if nan_policy not in (None, "propagate", "omit"):
        raise AvgPoolError(f"nan_policy must be 'propagate' or 'omit', got {nan_policy!r}")
    kernel, stride, padding, mode, dilation, ceil, _, _, cl, convention = window_args(w)
    return (kernel, stride, padding, mode, dilation, ceil, cl, convention, nan_policy or "")


def max_pool(
    x: Tensor,
    kernel_size: int | Sequence[int] | None = None,
    stride: int | Sequence[int] | None = None,
    padding: Any = 0,
    *,
    dilation: int | Sequence[int] = 1,
    ceil_mode: bool = False,
    return_indices: bool = False,
    channels_last: bool = False,
    window: Window | None = None,
    nan_policy: str | None = None,
    out: Tensor | None = None,
) -> Tensor | tuple[Tensor, Tensor]:
    """N-d max pooling of a tensor; see `avgpool.max_pool`."""
    x = _tensor(x)
    w = _max_window(x, kernel_size, stride, padding, dilation, ceil_mode, channels_last, window)
    if not return_indices:
        return _finish(call.max_pool_values(x, *_max_args(w, nan_policy)), out)
    y, index = call.max_pool(x, *_max_args(w, nan_policy))
    return _finish(y, out), index


def max_pool_backward(
    grad_output: Tensor,
    x: Tensor,
    kernel_size: int | Sequence[int] | None = None,
    stride: int | Sequence[int] | None = None,
    padding: Any = 0,
    *,
    dilation: int | Sequence[int] = 1,
    ceil_mode: bool = False,
    channels_last: bool = False,
    window: Window | None = None,
    nan_policy: str | None = None,
) -> Tensor:
    """Gradient of `max_pool`: each window's grad goes to its arg-max cell."""
    grad_output, x = _tensor(grad_output, "grad_output"), _tensor(x)
    w = _max_window(x, kernel_size, stride, padding, dilation, ceil_mode, channels_last, window)
    _, index = call.max_pool(x.detach(), *_max_args(w, nan_policy))
    _check_grad(grad_output, index.shape)
    return call.max_pool_backward(grad_output, index, list(x.shape), w.ndim, w.channels_last)


def _fixed_max(ndim: int, name: str):
    def pool(
        input: Tensor,
        kernel_size: int | Sequence[int] | None = None,
        stride: int | Sequence[int] | None = None,
        padding: int | Sequence[int] = 0,
        dilation: int | Sequence[int] = 1,
        ceil_mode: bool = False,
        return_indices: bool = False,
        *,
        channels_last: bool = False,
        window: Window | None = None,
    ):
        input = _tensor(input)
        if window is None and not channels_last:
            _checks.pooling("max", ndim, input, kernel_size, stride, padding, dilation, ceil_mode)
        w = _fixed_window(
            input,
            window,
            ndim,
            "max",
            kernel_size,
            stride,
            padding,
            dilation,
            ceil_mode,
            channels_last=channels_last,
        )
        y, index = call.max_pool(input, *_max_args(w, None))
        if return_indices:
            return y, index
        if ndim == 1 and not w.channels_last and not (input.requires_grad and torch.is_grad_enabled()):
            return y.contiguous()  # PyTorch's values-only max_pool1d returns a contiguous tensor
        return y

    pool.__name__ = pool.__qualname__ = name
    pool.__doc__ = f"{ndim}-d max pooling: ``torch.nn.functional.{name}``; see `avgpool.{name}`."
    return pool


max_pool1d = _fixed_max(1, "max_pool1d")
max_pool2d = _fixed_max(2, "max_pool2d")
max_pool3d = _fixed_max(3, "max_pool3d")


# -- Lp ----------------------------------------------------------------------------------------


def _lp_args(x: Tensor, norm_type: float, w: Window, convention: str) -> tuple:
    p = ops._norm_type(norm_type)
    ref.check_lp_convention(convention)
    kernel, stride, padding, mode, dilation, ceil, _, _, cl, _ = window_args(w)
    if w.kernel_size is None:
        kernel = list(_spatial(x.shape, w.ndim, cl))
    return (p, kernel, stride, padding, mode, dilation, ceil, cl, convention)


def lp_pool(
    x: Tensor,
    norm_type: float,
    kernel_size: int | Sequence[int] | None = None,
    stride: int | Sequence[int] | None = None,
    padding: Any = 0,
    *,
    dilation: int | Sequence[int] = 1,
    ceil_mode: bool = False,
    channels_last: bool = False,
    window: Window | None = None,
    convention: str = "torch",
) -> Tensor:
    """N-d power-average pooling of a tensor; see `avgpool.lp_pool`."""
    x = _tensor(x)
    w = _max_window(x, kernel_size, stride, padding, dilation, ceil_mode, channels_last, window)
    return call.lp_pool(x, *_lp_args(x, norm_type, w, convention))


def lp_pool_backward(
    grad_output: Tensor,
    x: Tensor,
    norm_type: float,
    kernel_size: int | Sequence[int] | None = None,
    stride: int | Sequence[int] | None = None,
    padding: Any = 0,
    *,
    dilation: int | Sequence[int] = 1,
    ceil_mode: bool = False,
    channels_last: bool = False,
    window: Window | None = None,
    convention: str = "torch",
) -> Tensor:
    """Gradient of `lp_pool` w.r.t. its input (0 where a window's power sum is 0)."""
    grad_output, x = _tensor(grad_output, "grad_output"), _tensor(x)
    w = _max_window(x, kernel_size, stride, padding, dilation, ceil_mode, channels_last, window)
    p, *geometry, convention = _lp_args(x, norm_type, w, convention)
    _check_grad(grad_output, w.output_shape(x.shape))
    return lp_pool_grad(grad_output, x, p, tuple(geometry), convention)


def _fixed_lp(ndim: int, name: str):
    def pool(
        input: Tensor,
        norm_type: float,
        kernel_size: int | Sequence[int],
        stride: int | Sequence[int] | None = None,
        ceil_mode: bool = False,
        *,
        channels_last: bool = False,
    ) -> Tensor:
        input = _tensor(input)
        if not channels_last:
            _checks.pooling("lp", ndim, input, kernel_size, stride, 0, 1, ceil_mode)
        w = from_torch(kernel_size, stride, 0, 1, ceil_mode, op="lp", ndim=ndim, channels_last=channels_last)
        _check_avg3d(input, w)
        return call.lp_pool(input, *_lp_args(input, norm_type, w, "torch"))

    pool.__name__ = pool.__qualname__ = name
    pool.__doc__ = f"{ndim}-d power-average pooling: ``torch.nn.functional.{name}`` exactly."
    return pool


lp_pool1d = _fixed_lp(1, "lp_pool1d")
lp_pool2d = _fixed_lp(2, "lp_pool2d")
lp_pool3d = _fixed_lp(3, "lp_pool3d")


# -- adaptive ----------------------------------------------------------------------------------


def _adaptive_sizes(x: Tensor, output_size: Any, channels_last: bool, ndim: int | None) -> list[int]:
    ndim = ops._spatial_rank(x.dim(), output_size, ndim)
    if x.dim() not in (ndim + 1, ndim + 2):
        raise AvgPoolError(
            f"input must have {ndim + 2} dimensions or {ndim + 1} (unbatched) for {ndim}-d pooling, "
            f"got shape {tuple(x.shape)}"
        )
    return list(ops._output_size(output_size, _spatial(x.shape, ndim, channels_last)))


def adaptive_avg_pool(
    x: Tensor, output_size: Any, *, channels_last: bool = False, ndim: int | None = None
) -> Tensor:
    """Average over PyTorch's adaptive windows; see `avgpool.adaptive_avg_pool`."""
    x = _tensor(x)
    return call.adaptive_avg_pool(x, _adaptive_sizes(x, output_size, channels_last, ndim), channels_last)


def adaptive_avg_pool_backward(
    grad_output: Tensor, input_shape: Sequence[int], *, channels_last: bool = False, ndim: int | None = None
) -> Tensor:
    """Gradient of `adaptive_avg_pool` (its output size is read from ``grad_output``)."""
    grad_output = _tensor(grad_output, "grad_output")
    input_shape = [_as_int(s, "input_shape") for s in input_shape]
    ndim = len(input_shape) - 2 if ndim is None else ndim
    if grad_output.dim() != len(input_shape):
        raise AvgPoolError(
            f"grad_output must have as many dimensions as input_shape {tuple(input_shape)}, "
            f"got shape {tuple(grad_output.shape)}"
        )
    return call.adaptive_avg_pool_backward(grad_output, input_shape, ndim, channels_last)


def adaptive_max_pool(
    x: Tensor,
    output_size: Any,
    return_indices: bool = False,
    *,
    channels_last: bool = False,
    ndim: int | None = None,
):
    """Maximum over PyTorch's adaptive windows; see `avgpool.adaptive_max_pool`."""
    x = _tensor(x)
    y, index = call.adaptive_max_pool(x, _adaptive_sizes(x, output_size, channels_last, ndim), channels_last)
    return (y, index) if return_indices else y


def adaptive_max_pool_backward(
    grad_output: Tensor, x: Tensor, *, channels_last: bool = False, ndim: int | None = None
) -> Tensor:
    """Gradient of `adaptive_max_pool`: each window's grad goes to its arg-max cell."""
    grad_output, x = _tensor(grad_output, "grad_output"), _tensor(x)
    ndim = x.dim() - 2 if ndim is None else ndim
    sizes = _spatial(grad_output.shape, ndim, channels_last)
    _, index = call.adaptive_max_pool(x.detach(), list(sizes), channels_last)
    _check_grad(grad_output, index.shape)
    return call.max_pool_backward(grad_output, index, list(x.shape), ndim, channels_last)


def _fixed_adaptive(fn, ndim: int, name: str, with_indices: bool):
    if with_indices:

        def pool(
            input: Tensor, output_size: Any, return_indices: bool = False, *, channels_last: bool = False
        ):
            if not channels_last:
                _checks.adaptive("max", ndim, _tensor(input), output_size)
            return fn(input, output_size, return_indices, channels_last=channels_last, ndim=ndim)

    else:

        def pool(input: Tensor, output_size: Any, *, channels_last: bool = False):
            if not channels_last:
                _checks.adaptive("avg", ndim, _tensor(input), output_size)
            return fn(input, output_size, channels_last=channels_last, ndim=ndim)

    pool.__name__ = pool.__qualname__ = name
    pool.__doc__ = f"{ndim}-d adaptive pooling, call-compatible with ``torch.nn.functional.{name}``."
    return pool


adaptive_avg_pool1d = _fixed_adaptive(adaptive_avg_pool, 1, "adaptive_avg_pool1d", False)
adaptive_avg_pool2d = _fixed_adaptive(adaptive_avg_pool, 2, "adaptive_avg_pool2d", False)
adaptive_avg_pool3d = _fixed_adaptive(adaptive_avg_pool, 3, "adaptive_avg_pool3d", False)
adaptive_max_pool1d = _fixed_adaptive(adaptive_max_pool, 1, "adaptive_max_pool1d", True)
adaptive_max_pool2d = _fixed_adaptive(adaptive_max_pool, 2, "adaptive_max_pool2d", True)
adaptive_max_pool3d = _fixed_adaptive(adaptive_max_pool, 3, "adaptive_max_pool3d", True)


# -- global ------------------------------------------------------------------------------------


def _squeeze(y: Tensor, ndim: int, channels_last: bool, keepdims: bool) -> Tensor:
    if keepdims:
        return y
    first = y.dim() - ndim - (1 if channels_last else 0)
    return y.reshape(*y.shape[:first], *y.shape[first + ndim :])


def _unsqueeze(grad: Tensor, input_shape: Sequence[int], ndim: int, channels_last: bool) -> Tensor:
    """grad_output with its spatial axes restored to length 1 when it came without them."""
    if grad.dim() == len(input_shape):
        return grad
    keep = list(input_shape)
    for i in range(len(keep) - ndim - (1 if channels_last else 0), len(keep) - (1 if channels_last else 0)):
        keep[i] = 1
    return grad.reshape(keep)


def global_avg_pool(
    x: Tensor,
    *,
    ndim: int | None = None,
    keepdims: bool = True,
    channels_last: bool = False,
    window: Window | None = None,
) -> Tensor:
    """Mean over all spatial axes; see `avgpool.global_avg_pool`."""
    x = _tensor(x)
    w = ops._global_window(x.dim(), ndim, channels_last, window)
    return _squeeze(call.avg_pool(x, *window_args(w)), w.ndim, w.channels_last, keepdims)


def global_max_pool(
    x: Tensor,
    *,
    ndim: int | None = None,
    keepdims: bool = True,
    channels_last: bool = False,
    window: Window | None = None,
) -> Tensor:
    """Maximum over all spatial axes (NaN wins); see `avgpool.global_max_pool`."""
    x = _tensor(x)
    w = ops._global_window(x.dim(), ndim, channels_last, window)
    y = call.max_pool_values(x, *_max_args(w, "propagate"))
    return _squeeze(y, w.ndim, w.channels_last, keepdims)


def global_avg_pool_backward(
    grad_output: Tensor, input_shape: Sequence[int], *, ndim: int | None = None, channels_last: bool = False
) -> Tensor:
    """Gradient of `global_avg_pool` (``grad_output`` with or without the kept dims)."""
    grad_output = _tensor(grad_output, "grad_output")
    w = ops._global_window(len(input_shape), ndim, channels_last, None)
    grad = _unsqueeze(grad_output, input_shape, w.ndim, channels_last)
    return avg_pool_backward(grad, input_shape, window=w)


def global_max_pool_backward(
    grad_output: Tensor, x: Tensor, *, ndim: int | None = None, channels_last: bool = False
) -> Tensor:
    """Gradient of `global_max_pool`: each channel's grad goes to its arg-max cell."""
    grad_output, x = _tensor(grad_output, "grad_output"), _tensor(x)
    w = ops._global_window(x.dim(), ndim, channels_last, None)
    grad = _unsqueeze(grad_output, x.shape, w.ndim, channels_last)
    return max_pool_backward(grad, x, window=w, nan_policy="propagate")


# -- blur --------------------------------------------------------------------------------------


def _blur(
    x_dim: int, shape: Sequence[int], filt_size, stride, pad_type, pad_off, ndim, channels_last
) -> tuple:
    ndim = x_dim - 2 if ndim is None else ndim
    if x_dim not in (ndim + 1, ndim + 2) or ndim not in (1, 2, 3):
        raise AvgPoolError(
            f"input must have {ndim + 2} dimensions or {ndim + 1} (unbatched) for {ndim}-d pooling, "
            f"got shape {tuple(shape)}"
        )
    spatial = _spatial(shape, ndim, channels_last)
    filt_size, stride, mode, pad_off = ops._blur_args(filt_size, stride, pad_type, pad_off, spatial)
    return filt_size, stride, mode, pad_off, ndim, bool(channels_last)


def blur_pool(
    x: Tensor,
    filt_size: int = 4,
    stride: int = 2,
    *,
    pad_type: str = "reflect",
    pad_off: int = 0,
    ndim: int | None = None,
    channels_last: bool = False,
) -> Tensor:
    """Anti-aliased downsampling of a tensor; see `avgpool.blur_pool`."""
    x = _tensor(x)
    return call.blur_pool(
        x, *_blur(x.dim(), x.shape, filt_size, stride, pad_type, pad_off, ndim, channels_last)
    )


def blur_pool_backward(
    grad_output: Tensor,
    input_shape: Sequence[int],
    filt_size: int = 4,
    stride: int = 2,
    *,
    pad_type: str = "reflect",
    pad_off: int = 0,
    ndim: int | None = None,
    channels_last: bool = False,
) -> Tensor:
    """Gradient of `blur_pool` w.r.t. its input."""
    grad_output = _tensor(grad_output, "grad_output")
    input_shape = [_as_int(s, "input_shape") for s in input_shape]
    args = _blur(len(input_shape), input_shape, filt_size, stride, pad_type, pad_off, ndim, channels_last)
    return call.blur_pool_backward(grad_output, input_shape, *args)


def _fixed_blur(ndim: int, name: str):
    def pool(
        input: Tensor,
        filt_size: int = 4,
        stride: int = 2,
        *,
        pad_type: str = "reflect",
        pad_off: int = 0,
        channels_last: bool = False,
    ) -> Tensor:
        return blur_pool(
            input,
            filt_size,
            stride,
            pad_type=pad_type,
            pad_off=pad_off,
            ndim=ndim,
            channels_last=channels_last,
        )

    pool.__name__ = pool.__qualname__ = name
    pool.__doc__ = f"{ndim}-d anti-aliased downsampling; see `avgpool.blur_pool`."
    return pool


blur_pool1d = _fixed_blur(1, "blur_pool1d")
blur_pool2d = _fixed_blur(2, "blur_pool2d")
blur_pool3d = _fixed_blur(3, "blur_pool3d")


# Errors from the torch front end are RuntimeErrors too, as PyTorch's own are.
for _name in __all__:
    globals()[_name] = torch_errors(globals()[_name])
del _name
