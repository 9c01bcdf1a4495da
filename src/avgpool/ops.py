"""The public functional API: validate -> Window -> resolve -> compute -> back to the user's array.

Argument names and defaults follow ``torch.nn.functional``. Every windowed op also takes
``window=`` (a `Window` from any convention) in place of the geometry arguments. Outputs have
the input's dtype; float16 and float32 are computed in float64 and rounded once, except
averages over windows of at most `_cpu_drivers.F32_SUM_TAPS` taps, which sum in float32.
"""

from __future__ import annotations

import functools
import math
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from avgpool import _dispatch as compute
from avgpool import reference as ref
from avgpool._arrays import Layout, as_array, check_allocation
from avgpool._errors import AvgPoolError
from avgpool.conventions import EMPTY_AVERAGE, MAX_NAN_POLICY, from_torch
from avgpool.window import MAX_AXIS, Axis, Window, _as_int, _rank_of, kept_windows

__all__ = [
    "adaptive_avg_pool",
    "adaptive_avg_pool1d",
    "adaptive_avg_pool2d",
    "adaptive_avg_pool3d",
    "adaptive_avg_pool_backward",
    "adaptive_max_pool",
    "adaptive_max_pool1d",
    "adaptive_max_pool2d",
    "adaptive_max_pool3d",
    "adaptive_max_pool_backward",
    "avg_pool",
    "avg_pool1d",
    "avg_pool2d",
    "avg_pool3d",
    "avg_pool_backward",
    "blur_pool",
    "blur_pool1d",
    "blur_pool2d",
    "blur_pool3d",
    "blur_pool_backward",
    "global_avg_pool",
    "global_avg_pool_backward",
    "global_max_pool",
    "global_max_pool_backward",
    "lp_pool",
    "lp_pool1d",
    "lp_pool2d",
    "lp_pool3d",
    "lp_pool_backward",
    "max_pool",
    "max_pool1d",
    "max_pool2d",
    "max_pool3d",
    "max_pool_backward",
]


# -- geometry from arguments -------------------------------------------------------------------


def _window(
    array_ndim: int,
    window: Window | None,
    kernel_size: Any,
    stride: Any = None,
    padding: Any = 0,
    *,
    ndim: int | None = None,
    **options: Any,
) -> Window:
    """The op's Window: the one given, or one built from the geometry arguments."""
    if window is not None:
        if not isinstance(window, Window):
            raise TypeError(f"window must be an avgpool.Window, got {type(window).__name__}")
        if kernel_size is not None or stride is not None or not (isinstance(padding, int) and padding == 0):
            raise AvgPoolError("give either window= or kernel_size/stride/padding, not both")
        if ndim is not None and window.ndim != ndim:
            raise AvgPoolError(f"this op pools {ndim}-d, but the window is {window.ndim}-d")
        return window
    return _window_of(array_ndim, kernel_size, stride, padding, ndim=ndim, **options)


@kept_windows
def _window_of(
    array_ndim: int, kernel_size: Any, stride: Any, padding: Any, *, ndim: int | None, **options: Any
) -> Window:
    if kernel_size is None:
        raise AvgPoolError("kernel_size is required (or pass window=)")
    if ndim is None:
        pad = None if isinstance(padding, str) else padding
        ndim = _rank_of(kernel_size, stride, options.get("dilation"), pad) or array_ndim - 2
    return Window(kernel_size, stride, padding, ndim=ndim, **options)


@functools.lru_cache(maxsize=1024)
def _geometry(shape: tuple[int, ...], window: Window, name: str = "input") -> tuple[Layout, tuple[Axis, ...]]:
    """The layout of an array of this shape and the window resolved on it.

    Pure shape arithmetic on hashable, immutable values (the shape and the validated
    `Window`, whose equality covers every field, convention and layout included), so it is
    kept: a model calls each of its pooling layers with the same shapes again and again.
    """
    layout = Layout.of(shape, window.ndim, window.channels_last, name)
    return layout, tuple(a.bounded() for a in window.resolve(layout.spatial))


def _out_arg(out: Any, x: np.ndarray) -> tuple[Any, np.ndarray | None]:
    """(``out`` for the kernels to write into, an array to copy the result into afterwards).

    An ``out`` that shares memory with the input would be overwritten while windows still
    read it, so the result is computed apart and copied; a read-only one is refused.
    """
    if isinstance(out, np.ndarray):
        if not out.flags.writeable:
            raise AvgPoolError("out must be a writeable array, got a read-only one")
        if np.may_share_memory(out, x):
            return None, out
    return out, None


def _prepare(x: Any, window: Window, allow_int: bool = False):
    x = as_array(x, allow_int=allow_int)
    layout, axes = _geometry(x.shape, window)
    check_allocation(layout.out_shape([a.out for a in axes]), x.dtype, "the output")
    return x, layout, axes


# -- average pooling ---------------------------------------------------------------------------


def avg_pool(
    x: Any,
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
    out: np.ndarray | None = None,
) -> np.ndarray:
    """N-d average pooling, spatial rank from ``kernel_size``, ``window`` or ``x.ndim - 2``.

    Parameters
    ----------
    x : ndarray
        (N, C, *spatial), or (N, *spatial, C) with ``channels_last=True``; float16/32/64.
    kernel_size, stride, padding, dilation, ceil_mode, count_include_pad, divisor_override
        As `Window` (PyTorch's meanings; ``padding`` also takes pairs, "valid", "same",
        "same_lower").
    window : Window, optional
        A ready geometry (e.g. ``Window.from_tensorflow(...)``) instead of the arguments.
    out : ndarray, optional
        A C-contiguous array of the output's shape and dtype to write into.

    Returns
    -------
    ndarray
        The pooled array, same dtype and layout as ``x``.

    Raises
    ------
    AvgPoolError
        A geometry argument is out of range or no window fits the input.
    TypeError
        ``x`` is not a float array, or a size is not an integer.

    Examples
    --------
    >>> x = np.arange(16.0).reshape(1, 1, 4, 4)
    >>> avg_pool(x, 2)[0, 0]
    array([[ 2.5,  4.5],
           [10.5, 12.5]])
    """
    w = _window(
        np.ndim(x),
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
    x, layout, axes = _prepare(x, w)
    empty = EMPTY_AVERAGE.get(w.convention, 0.0)
    out, later = _out_arg(out, x)
    if w.kernel_size is None and out is None:
        y = compute.global_avg(x, layout, empty)
    else:
        y = compute.avg_forward(x, layout, axes, w.count_include_pad, w.divisor_override, empty, out)
    return compute.into(later, y)


def avg_pool_backward(
    grad_output: Any,
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
) -> np.ndarray:
    """Gradient of `avg_pool` w.r.t. its input: each window's grad split over its cells.

    Examples
    --------
    >>> g = np.ones((1, 1, 2, 2))
    >>> avg_pool_backward(g, (1, 1, 4, 4), 2)[0, 0, 0]
    array([0.25, 0.25, 0.25, 0.25])
    """
    input_shape = tuple(_as_int(s, "input_shape") for s in input_shape)
    w = _window(
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
    grad_output = as_array(grad_output, "grad_output")
    layout, axes = _geometry(input_shape, w, "input_shape")
    layout.check_grad_shape(grad_output, [a.out for a in axes])
    check_allocation(input_shape, grad_output.dtype, "the gradient (input_shape)")
    return compute.avg_backward(grad_output, layout, axes, w.count_include_pad, w.divisor_override)


def _torch_window(input: Any, window: Window | None, ndim: int, op: str, *args: Any, **kwargs: Any) -> Window:
    """The *1d/2d/3d forms: PyTorch's rules and refusals (`Window.from_torch`), or a given window."""
    if window is not None:
        return _window(np.ndim(input), window, None, ndim=ndim)
    return from_torch(*args, op=op, ndim=ndim, **kwargs)


def _refuse_like_avg_pool3d(input: Any, window: Window) -> None:
    """PyTorch's avg_pool3d (so lp_pool3d) alone refuses an input smaller than the kernel."""
    if window.ndim != 3:
        return
    spatial = Layout.of(np.shape(input), 3, window.channels_last).spatial
    if any(n < k for n, k in zip(spatial, window.kernel_size)):
        raise AvgPoolError(
            f"input spatial shape {spatial} is smaller than kernel_size {window.kernel_size} "
            "(PyTorch's avg_pool3d refuses it even with padding)"
        )


def _fixed_avg(ndim: int, name: str):
    def pool(
        input: Any,
        kernel_size: int | Sequence[int] | None = None,
        stride: int | Sequence[int] | None = None,
        padding: int | Sequence[int] = 0,
        ceil_mode: bool = False,
        count_include_pad: bool = True,
        divisor_override: int | None = None,
        *,
        channels_last: bool = False,
        window: Window | None = None,
    ) -> np.ndarray:
        w = _torch_window(
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
            _refuse_like_avg_pool3d(input, w)
        return avg_pool(input, window=w)

    pool.__name__ = pool.__qualname__ = name
    pool.__doc__ = (
        f"{ndim}-d average pooling: ``torch.nn.functional.{name}``, its rules and refusals too.\n\n"
        "Also takes unbatched input, ``channels_last`` and ``window=``; for padding PyTorch\n"
        "refuses (asymmetric, 'same', more than kernel // 2) use `avg_pool`."
    )
    return pool


avg_pool1d = _fixed_avg(1, "avg_pool1d")
avg_pool2d = _fixed_avg(2, "avg_pool2d")
avg_pool3d = _fixed_avg(3, "avg_pool3d")


# -- max pooling -------------------------------------------------------------------------------


def _max_window(x: Any, kernel_size, stride, padding, dilation, ceil_mode, channels_last, window, ndim=None):
    return _window(
        np.ndim(x),
        window,
        kernel_size,
        stride,
        padding,
        ndim=ndim,
        dilation=dilation,
        ceil_mode=ceil_mode,
        channels_last=channels_last,
    )


def _nan_args(nan_policy: str | None, window: Window, dtype: np.dtype) -> tuple[str, float]:
    policy = MAX_NAN_POLICY.get(window.convention, "propagate") if nan_policy is None else nan_policy
    if policy not in ("propagate", "omit"):
        raise AvgPoolError(f"nan_policy must be 'propagate' or 'omit', got {nan_policy!r}")
    info = np.finfo(dtype) if dtype.kind == "f" else np.iinfo(dtype)
    return policy, float(info.min)


def max_pool(
    x: Any,
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
    out: np.ndarray | None = None,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """N-d max pooling; padded cells never win.

    With ``return_indices=True`` also returns int64 indices into each (sample, channel)'s
    flattened spatial plane, PyTorch's convention (also for channels-last arrays).

    ``nan_policy``: "propagate" (a NaN wins, the last one; PyTorch, ONNX, Flax) or "omit" (NaN
    never wins and results are floored at the dtype's lowest finite value, as TensorFlow's
    max_pool does). Default: the window's convention decides ("omit" for tensorflow and keras
    windows, else "propagate").

    Examples
    --------
    >>> x = np.array([[[1.0, 5.0, 2.0, 2.0]]])
    >>> max_pool(x, 2, return_indices=True)
    (array([[[5., 2.]]]), array([[[1, 2]]]))
    """
    w = _max_window(x, kernel_size, stride, padding, dilation, ceil_mode, channels_last, window)
    x, layout, axes = _prepare(x, w, allow_int=True)
    out, later = _out_arg(out, x)
    if w.kernel_size is None and out is None:
        y, index = compute.global_max(x, layout, *_nan_args(nan_policy, w, x.dtype))
    else:
        y, index = compute.max_forward(
            x, layout, axes, *_nan_args(nan_policy, w, x.dtype), out, with_index=return_indices
        )
    y = compute.into(later, y)
    return (y, index) if return_indices else y


def max_pool_backward(
    grad_output: Any,
    x: Any,
    kernel_size: int | Sequence[int] | None = None,
    stride: int | Sequence[int] | None = None,
    padding: Any = 0,
    *,
    dilation: int | Sequence[int] = 1,
    ceil_mode: bool = False,
    channels_last: bool = False,
    window: Window | None = None,
    nan_policy: str | None = None,
) -> np.ndarray:
    """Gradient of `max_pool`: each window's grad goes to its arg-max cell."""
    w = _max_window(x, kernel_size, stride, padding, dilation, ceil_mode, channels_last, window)
    x, layout, axes = _prepare(x, w, allow_int=True)
    grad_output = as_array(grad_output, "grad_output")
    out_spatial = [a.out for a in axes]
    layout.check_grad_shape(grad_output, out_spatial)
    if w.kernel_size is None:
        _, index = compute.global_max(x, layout, *_nan_args(nan_policy, w, x.dtype))
    else:
        _, index = compute.max_forward(x, layout, axes, *_nan_args(nan_policy, w, x.dtype))
    return compute.max_backward(grad_output, index, layout, out_spatial)


def _fixed_max(ndim: int, name: str):
    def pool(
        input: Any,
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
        w = _torch_window(
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
        return max_pool(input, window=w, return_indices=return_indices)

    pool.__name__ = pool.__qualname__ = name
    pool.__doc__ = f"{ndim}-d max pooling: ``torch.nn.functional.{name}``, its rules and refusals too."
    return pool


max_pool1d = _fixed_max(1, "max_pool1d")
max_pool2d = _fixed_max(2, "max_pool2d")
max_pool3d = _fixed_max(3, "max_pool3d")


# -- power-average (Lp) pooling ----------------------------------------------------------------


def _norm_type(norm_type: Any) -> float:
    if isinstance(norm_type, bool) or not isinstance(norm_type, (int, float, np.integer, np.floating)):
        raise TypeError(f"norm_type must be a number, got {norm_type!r}")
    if not (math.isfinite(norm_type) and norm_type > 0):
        raise AvgPoolError(f"norm_type must be a finite number > 0, got {norm_type}")
    return float(norm_type)


def lp_pool(
    x: Any,
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
) -> np.ndarray:
    """N-d power-average pooling ``(sum x**p)**(1/p)`` in PyTorch's or ONNX's definition.

    ``convention="torch"`` reproduces ``F.lp_pool*d`` exactly (``x**p`` keeps the sign for odd
    p; a ceil-mode partial window is scaled as if full); ``"onnx"`` is ONNX LpPool
    (``|x|**p``; padded cells add 0).

    Examples
    --------
    >>> lp_pool(np.array([[[3.0, 4.0]]]), 2, 2)
    array([[[5.]]])
    """
    p = _norm_type(norm_type)
    ref.check_lp_convention(convention)
    w = _max_window(x, kernel_size, stride, padding, dilation, ceil_mode, channels_last, window)
    x, layout, axes = _prepare(x, w)
    return compute.lp_forward(x, layout, axes, p, convention)


def lp_pool_backward(
    grad_output: Any,
    x: Any,
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
) -> np.ndarray:
    """Gradient of `lp_pool` w.r.t. its input (0 where a window's power sum is 0)."""
    p = _norm_type(norm_type)
    ref.check_lp_convention(convention)
    w = _max_window(x, kernel_size, stride, padding, dilation, ceil_mode, channels_last, window)
    x, layout, axes = _prepare(x, w)
    grad_output = as_array(grad_output, "grad_output")
    layout.check_grad_shape(grad_output, [a.out for a in axes])
    return compute.lp_backward(grad_output, x, layout, axes, p, convention)


def _fixed_lp(ndim: int, name: str):
    def pool(
        input: Any,
        norm_type: float,
        kernel_size: int | Sequence[int],
        stride: int | Sequence[int] | None = None,
        ceil_mode: bool = False,
        *,
        channels_last: bool = False,
    ) -> np.ndarray:
        w = _torch_window(
            input, None, ndim, "lp", kernel_size, stride, 0, 1, ceil_mode, channels_last=channels_last
        )
        _refuse_like_avg_pool3d(input, w)
        return lp_pool(input, norm_type, window=w)

    pool.__name__ = pool.__qualname__ = name
    pool.__doc__ = f"{ndim}-d power-average pooling: ``torch.nn.functional.{name}`` exactly."
    return pool


lp_pool1d = _fixed_lp(1, "lp_pool1d")
lp_pool2d = _fixed_lp(2, "lp_pool2d")
lp_pool3d = _fixed_lp(3, "lp_pool3d")


# -- adaptive and global pooling ---------------------------------------------------------------


def _output_size(output_size: Any, spatial: Sequence[int]) -> tuple[int, ...]:
    """PyTorch's output_size: an int, or a tuple whose None entries keep the input size."""
    ndim = len(spatial)
    if output_size is None or (
        isinstance(output_size, (int, np.integer)) and not isinstance(output_size, bool)
    ):
        sizes: tuple[Any, ...] = (output_size,) * ndim
    elif isinstance(output_size, Sequence) and len(output_size) == ndim:
        sizes = tuple(output_size)
    else:
        raise AvgPoolError(f"output_size must be an int or a tuple of {ndim}, got {output_size!r}")
    out = tuple(n if s is None else _as_int(s, "output_size") for s, n in zip(sizes, spatial))
    if any(o < 1 for o in out):
        raise AvgPoolError(f"output_size must be >= 1 on every axis, got {output_size!r}")
    if any(o > MAX_AXIS for o in out):
        raise AvgPoolError(f"output_size must be at most {MAX_AXIS} on every axis, got {output_size!r}")
    return out


def _spatial_rank(array_ndim: int, output_size: Any, ndim: int | None) -> int:
    if ndim is not None:
        return ndim
    if isinstance(output_size, Sequence):
        return len(output_size)
    return array_ndim - 2


def adaptive_avg_pool(x: Any, output_size: Any, *, channels_last: bool = False, ndim: int | None = None):
    """Average over PyTorch's adaptive windows ``[floor(i*n/out), ceil((i+1)*n/out))``.

    Examples
    --------
    >>> adaptive_avg_pool(np.arange(5.0).reshape(1, 1, 5), 2)
    array([[[1., 3.]]])
    """
    x = as_array(x)
    layout = Layout.of(x.shape, _spatial_rank(x.ndim, output_size, ndim), channels_last)
    out = _output_size(output_size, layout.spatial)
    check_allocation(layout.out_shape(out), x.dtype, "the output")
    return compute.adaptive_avg_forward(x, layout, out)


def adaptive_avg_pool_backward(
    grad_output: Any, input_shape: Sequence[int], *, channels_last: bool = False, ndim: int | None = None
):
    """Gradient of `adaptive_avg_pool` (its output size is read from ``grad_output``)."""
    grad_output = as_array(grad_output, "grad_output")
    input_shape = tuple(_as_int(s, "input_shape") for s in input_shape)
    layout = Layout.of(input_shape, len(input_shape) - 2 if ndim is None else ndim, channels_last)
    out = Layout.of(grad_output.shape, layout.ndim, channels_last, "grad_output").spatial
    layout.check_grad_shape(grad_output, out)
    check_allocation(input_shape, grad_output.dtype, "the gradient (input_shape)")
    return compute.adaptive_avg_backward(grad_output, layout, out)


def adaptive_max_pool(
    x: Any,
    output_size: Any,
    return_indices: bool = False,
    *,
    channels_last: bool = False,
    ndim: int | None = None,
):
    """Maximum over PyTorch's adaptive windows (indices as `max_pool`)."""
    x = as_array(x, allow_int=True)
    layout = Layout.of(x.shape, _spatial_rank(x.ndim, output_size, ndim), channels_last)
    out = _output_size(output_size, layout.spatial)
    check_allocation(layout.out_shape(out), np.int64, "the output with its indices")
    y, index = compute.adaptive_max_forward(x, layout, out)
    return (y, index) if return_indices else y


def adaptive_max_pool_backward(
    grad_output: Any, x: Any, *, channels_last: bool = False, ndim: int | None = None
):
    """Gradient of `adaptive_max_pool`: each window's grad goes to its arg-max cell."""
    x = as_array(x, allow_int=True)
    grad_output = as_array(grad_output, "grad_output")
    layout = Layout.of(x.shape, x.ndim - 2 if ndim is None else ndim, channels_last)
    out = Layout.of(grad_output.shape, layout.ndim, channels_last, "grad_output").spatial
    layout.check_grad_shape(grad_output, out)
    _, index = compute.adaptive_max_forward(x, layout, out)
    return compute.max_backward(grad_output, index, layout, out)


def _fixed_adaptive(fn, ndim: int, name: str, with_indices: bool):
    if with_indices:

        def pool(input: Any, output_size: Any, return_indices: bool = False, *, channels_last: bool = False):
            return fn(input, output_size, return_indices, channels_last=channels_last, ndim=ndim)

    else:

        def pool(input: Any, output_size: Any, *, channels_last: bool = False):
            return fn(input, output_size, channels_last=channels_last, ndim=ndim)

    pool.__name__ = pool.__qualname__ = name
    pool.__doc__ = (
        f"{ndim}-d {fn.__name__.replace('_', ' ')}, call-compatible with ``torch.nn.functional.{name}``."
    )
    return pool


adaptive_avg_pool1d = _fixed_adaptive(adaptive_avg_pool, 1, "adaptive_avg_pool1d", False)
adaptive_avg_pool2d = _fixed_adaptive(adaptive_avg_pool, 2, "adaptive_avg_pool2d", False)
adaptive_avg_pool3d = _fixed_adaptive(adaptive_avg_pool, 3, "adaptive_avg_pool3d", False)
adaptive_max_pool1d = _fixed_adaptive(adaptive_max_pool, 1, "adaptive_max_pool1d", True)
adaptive_max_pool2d = _fixed_adaptive(adaptive_max_pool, 2, "adaptive_max_pool2d", True)
adaptive_max_pool3d = _fixed_adaptive(adaptive_max_pool, 3, "adaptive_max_pool3d", True)


def _global_window(x_ndim: int, ndim: int | None, channels_last: bool, window: Window | None) -> Window:
    if window is not None:
        if window.kernel_size is not None:
            raise AvgPoolError("window must be a global window (kernel_size=None)")
        return window
    return _global_window_of(x_ndim - 2 if ndim is None else ndim, channels_last)


@kept_windows
def _global_window_of(ndim: int, channels_last: bool) -> Window:
    return Window(None, ndim=ndim, channels_last=channels_last)


def _squeeze(y: np.ndarray, layout: Layout, keepdims: bool) -> np.ndarray:
    if keepdims:
        return y
    first = len(layout.shape) - layout.ndim - (1 if layout.channels_last else 0)
    return y.reshape(y.shape[:first] + y.shape[first + layout.ndim :])


def global_avg_pool(
    x: Any,
    *,
    ndim: int | None = None,
    keepdims: bool = True,
    channels_last: bool = False,
    window: Window | None = None,
) -> np.ndarray:
    """Mean over all spatial axes (ONNX GlobalAveragePool; Keras with keepdims).

    Examples
    --------
    >>> global_avg_pool(np.arange(8.0).reshape(1, 2, 4), keepdims=False)
    array([[1.5, 5.5]])
    """
    x = as_array(x)
    w = _global_window(x.ndim, ndim, channels_last, window)
    return _squeeze(avg_pool(x, window=w), Layout.of(x.shape, w.ndim, w.channels_last), keepdims)


def global_max_pool(
    x: Any,
    *,
    ndim: int | None = None,
    keepdims: bool = True,
    channels_last: bool = False,
    window: Window | None = None,
) -> np.ndarray:
    """Maximum over all spatial axes (ONNX GlobalMaxPool, Keras GlobalMaxPooling*; NaN wins).

    Keras' global max is a plain reduce_max, which propagates NaN, unlike its windowed max.
    """
    x = as_array(x, allow_int=True)
    w = _global_window(x.ndim, ndim, channels_last, window)
    y = max_pool(x, window=w, nan_policy="propagate")
    return _squeeze(y, Layout.of(x.shape, w.ndim, w.channels_last), keepdims)


def _global_grad(grad_output: np.ndarray, layout: Layout) -> np.ndarray:
    """grad_output with its spatial axes restored to length 1 when it came without them."""
    keep = layout.out_shape((1,) * layout.ndim)
    if grad_output.shape != keep and grad_output.size == math.prod(keep):
        return grad_output.reshape(keep)
    return grad_output


def global_avg_pool_backward(
    grad_output: Any, input_shape: Sequence[int], *, ndim: int | None = None, channels_last: bool = False
) -> np.ndarray:
    """Gradient of `global_avg_pool` (``grad_output`` with or without the kept dims)."""
    grad_output = as_array(grad_output, "grad_output")
    w = _global_window(len(input_shape), ndim, channels_last, None)
    layout = Layout.of(input_shape, w.ndim, channels_last, "input_shape")
    return avg_pool_backward(_global_grad(grad_output, layout), input_shape, window=w)


def global_max_pool_backward(
    grad_output: Any, x: Any, *, ndim: int | None = None, channels_last: bool = False
) -> np.ndarray:
    """Gradient of `global_max_pool`: each channel's grad goes to its arg-max cell."""
    x = as_array(x, allow_int=True)
    grad_output = as_array(grad_output, "grad_output")
    w = _global_window(x.ndim, ndim, channels_last, None)
    layout = Layout.of(x.shape, w.ndim, channels_last)
    return max_pool_backward(_global_grad(grad_output, layout), x, window=w, nan_policy="propagate")


# -- anti-aliased (blur) pooling ---------------------------------------------------------------

_BLUR_PAD_TYPES = {
    "reflect": "reflect",
    "refl": "reflect",
    "replicate": "replicate",
    "repl": "replicate",
    "zero": "zero",
}


def _blur_args(filt_size: Any, stride: Any, pad_type: Any, pad_off: Any, spatial: Sequence[int]) -> tuple:
    filt_size = _as_int(filt_size, "filt_size")
    stride = _as_int(stride, "stride")
    pad_off = _as_int(pad_off, "pad_off")
    if not 1 <= filt_size <= 7:
        raise AvgPoolError(f"filt_size must be between 1 and 7, got {filt_size}")
    if stride < 1:
        raise AvgPoolError(f"stride must be >= 1, got {stride}")
    if pad_off < 0:
        raise AvgPoolError(f"pad_off must be >= 0, got {pad_off}")
    mode = _BLUR_PAD_TYPES.get(pad_type) if isinstance(pad_type, str) else None
    if mode is None:
        raise AvgPoolError(f"pad_type must be one of {sorted(_BLUR_PAD_TYPES)}, got {pad_type!r}")
    before, after = ref.blur_pads(filt_size, pad_off)
    if mode == "reflect" and any(max(before, after) >= n for n in spatial):
        raise AvgPoolError(
            f"reflect padding ({before}, {after}) must be smaller than every spatial size, "
            f"got spatial shape {tuple(spatial)}; use pad_type='replicate' or 'zero'"
        )
    return filt_size, stride, mode, pad_off


def blur_pool(
    x: Any,
    filt_size: int = 4,
    stride: int = 2,
    *,
    pad_type: str = "reflect",
    pad_off: int = 0,
    ndim: int | None = None,
    channels_last: bool = False,
) -> np.ndarray:
    """Anti-aliased downsampling: a binomial blur, then subsampling by ``stride``.

    Reproduces antialiased-cnns' BlurPool (Zhang, "Making Convolutional Networks
    Shift-Invariant Again", 2019): filter row ``filt_size - 1`` of Pascal's triangle (outer
    product over axes, normalised), padding ``(f-1)//2`` before and ``ceil((f-1)/2)`` after
    (plus ``pad_off``) by reflection, replication or zeros.

    Examples
    --------
    >>> blur_pool(np.ones((1, 1, 6, 6)), 3).shape
    (1, 1, 3, 3)
    """
    x = as_array(x)
    layout = Layout.of(x.shape, x.ndim - 2 if ndim is None else ndim, channels_last)
    args = _blur_args(filt_size, stride, pad_type, pad_off, layout.spatial)
    return compute.blur_forward(x, layout, *args)


def blur_pool_backward(
    grad_output: Any,
    input_shape: Sequence[int],
    filt_size: int = 4,
    stride: int = 2,
    *,
    pad_type: str = "reflect",
    pad_off: int = 0,
    ndim: int | None = None,
    channels_last: bool = False,
) -> np.ndarray:
    """Gradient of `blur_pool` w.r.t. its input."""
    grad_output = as_array(grad_output, "grad_output")
    input_shape = tuple(_as_int(s, "input_shape") for s in input_shape)
    layout = Layout.of(
        input_shape, len(input_shape) - 2 if ndim is None else ndim, channels_last, "input_shape"
    )
    args = _blur_args(filt_size, stride, pad_type, pad_off, layout.spatial)
    out = Layout.of(grad_output.shape, layout.ndim, channels_last, "grad_output").spatial
    layout.check_grad_shape(grad_output, out)
    check_allocation(input_shape, grad_output.dtype, "the gradient (input_shape)")
    return compute.blur_backward(grad_output, layout, *args)


def _fixed_blur(ndim: int, name: str):
    def pool(
        input: Any,
        filt_size: int = 4,
        stride: int = 2,
        *,
        pad_type: str = "reflect",
        pad_off: int = 0,
        channels_last: bool = False,
    ) -> np.ndarray:
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
    pool.__doc__ = f"{ndim}-d anti-aliased downsampling; see `blur_pool`."
    return pool


blur_pool1d = _fixed_blur(1, "blur_pool1d")
blur_pool2d = _fixed_blur(2, "blur_pool2d")
blur_pool3d = _fixed_blur(3, "blur_pool3d")


# -- the array edge ----------------------------------------------------------------------------


def _is_tensor(value: Any) -> bool:
    """A torch.Tensor, found without importing torch (einops' ``_backends`` pattern)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.Tensor)


def _array_edge(fn):
    """Send a call whose array is a torch tensor to the PyTorch front end's op of that name.

    The maths never asks which array library it has: tensors are turned back into zero-copy
    NumPy views by `avgpool.torch`, which registers each op with torch.library first.
    """

    @functools.wraps(fn)
    def op(*args: Any, **kwargs: Any):
        array = args[0] if args else kwargs.get("x", kwargs.get("input", kwargs.get("grad_output")))
        if _is_tensor(array):
            from avgpool.torch import functional

            return getattr(functional, fn.__name__)(*args, **kwargs)
        return fn(*args, **kwargs)

    return op


for _name in __all__:
    globals()[_name] = _array_edge(globals()[_name])
del _name
