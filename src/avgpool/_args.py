"""The ops' arguments turned into what the backends compute with: Windows, sizes, numbers.

Pure argument and shape arithmetic, no arrays: every function takes plain values (sizes,
shapes) and returns validated ones, or raises an `AvgPoolError` (a `TypeError` for a value
of the wrong type) that names the argument. `avgpool.ops` calls these once per call,
whichever backend then computes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from avgpool import reference as ref
from avgpool._arrays import Layout
from avgpool._errors import AvgPoolError
from avgpool.conventions import from_torch
from avgpool.window import MAX_AXIS, Window, _as_int, _rank_of, kept_windows

# -- windows -----------------------------------------------------------------------------------


def window(
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


def max_window(
    array_ndim: int, kernel_size, stride, padding, dilation, ceil_mode, channels_last, window_
) -> Window:
    """The Window of max and Lp pooling (no divisor): given, or from the arguments."""
    return window(
        array_ndim,
        window_,
        kernel_size,
        stride,
        padding,
        dilation=dilation,
        ceil_mode=ceil_mode,
        channels_last=channels_last,
    )


def torch_window(
    array_ndim: int, window_: Window | None, ndim: int, op: str, *args: Any, **kwargs: Any
) -> Window:
    """The ``*1d/2d/3d`` forms' Window: PyTorch's rules and refusals (`Window.from_torch`), or
    the window given."""
    if window_ is not None:
        return window(array_ndim, window_, None, ndim=ndim)
    return from_torch(*args, op=op, ndim=ndim, **kwargs)


def refuse_like_avg_pool3d(shape: Sequence[int], window: Window) -> None:
    """PyTorch's avg_pool3d (so lp_pool3d) alone refuses an input smaller than the kernel."""
    if window.ndim != 3:
        return
    spatial = Layout.of(shape, 3, window.channels_last).spatial
    if any(n < k for n, k in zip(spatial, window.kernel_size)):
        raise AvgPoolError(
            f"input spatial shape {spatial} is smaller than kernel_size {window.kernel_size} "
            "(PyTorch's avg_pool3d refuses it even with padding)"
        )


def global_window(array_ndim: int, ndim: int | None, channels_last: bool, window: Window | None) -> Window:
    """A global window (the one given, which must be global, or one of this rank)."""
    if window is not None:
        if window.kernel_size is not None:
            raise AvgPoolError("window must be a global window (kernel_size=None)")
        return window
    return _global_window_of(array_ndim - 2 if ndim is None else ndim, channels_last)


@kept_windows
def _global_window_of(ndim: int, channels_last: bool) -> Window:
    return Window(None, ndim=ndim, channels_last=channels_last)


# -- other arguments ---------------------------------------------------------------------------


def input_shape(shape: Sequence[Any]) -> tuple[int, ...]:
    return tuple(_as_int(s, "input_shape") for s in shape)


def nan_policy(policy: str | None) -> str | None:
    """The max family's ``nan_policy``: None (the window's convention decides) or a policy."""
    if policy not in (None, "propagate", "omit"):
        raise AvgPoolError(f"nan_policy must be 'propagate' or 'omit', got {policy!r}")
    return policy


def norm_type(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"norm_type must be a number, got {value!r}")
    if not (math.isfinite(value) and value > 0):
        raise AvgPoolError(f"norm_type must be a finite number > 0, got {value}")
    return float(value)


def lp_convention(convention: str | None, window: Window | None = None) -> str:
    """Whose Lp definition to compute: ``convention`` when given, else the window's own when it
    has one (a window read from an ONNX LpPool computes ONNX's), else PyTorch's."""
    if convention is None:
        has_own = window is not None and window.convention in ref.LP_CONVENTIONS
        convention = window.convention if has_own else "torch"
    ref.check_lp_convention(convention)
    return convention


def spatial_rank(array_ndim: int, output_size: Any, ndim: int | None) -> int:
    """An adaptive op's spatial rank: ``ndim``, else a tuple output_size's length, else the
    array's rank minus the batch and channel axes."""
    if ndim is not None:
        return ndim
    if isinstance(output_size, Sequence):
        return len(output_size)
    return array_ndim - 2


def output_size(size: Any, spatial: Sequence[int]) -> tuple[int, ...]:
    """PyTorch's output_size: an int, or a tuple whose None entries keep the input size."""
    ndim = len(spatial)
    if size is None or (isinstance(size, (int, np.integer)) and not isinstance(size, bool)):
        sizes: tuple[Any, ...] = (size,) * ndim
    elif isinstance(size, Sequence) and len(size) == ndim:
        sizes = tuple(size)
    else:
        raise AvgPoolError(f"output_size must be an int or a tuple of {ndim}, got {size!r}")
    out = tuple(n if s is None else _as_int(s, "output_size") for s, n in zip(sizes, spatial))
    if any(o < 1 for o in out):
        raise AvgPoolError(f"output_size must be >= 1 on every axis, got {size!r}")
    if any(o > MAX_AXIS for o in out):
        raise AvgPoolError(f"output_size must be at most {MAX_AXIS} on every axis, got {size!r}")
    return out


#: antialiased-cnns' names for its padding modes, and ours.
BLUR_PAD_TYPES = {
    "reflect": "reflect",
    "refl": "reflect",
    "replicate": "replicate",
    "repl": "replicate",
    "zero": "zero",
}


def blur_args(filt_size: Any, stride: Any, pad_type: Any, pad_off: Any, spatial: Sequence[int]) -> tuple:
    """(filt_size, stride, padding mode, pad_off), validated for inputs of this spatial shape."""
    filt_size = _as_int(filt_size, "filt_size")
    stride = _as_int(stride, "stride")
    pad_off = _as_int(pad_off, "pad_off")
    if not 1 <= filt_size <= 7:
        raise AvgPoolError(f"filt_size must be between 1 and 7, got {filt_size}")
    if stride < 1:
        raise AvgPoolError(f"stride must be >= 1, got {stride}")
    if pad_off < 0:
        raise AvgPoolError(f"pad_off must be >= 0, got {pad_off}")
    mode = BLUR_PAD_TYPES.get(pad_type) if isinstance(pad_type, str) else None
    if mode is None:
        raise AvgPoolError(f"pad_type must be one of {sorted(BLUR_PAD_TYPES)}, got {pad_type!r}")
    before, after = ref.blur_pads(filt_size, pad_off)
    if mode == "reflect" and any(max(before, after) >= n for n in spatial):
        raise AvgPoolError(
            f"reflect padding ({before}, {after}) must be smaller than every spatial size, "
            f"got spatial shape {tuple(spatial)}; use pad_type='replicate' or 'zero'"
        )
    return filt_size, stride, mode, pad_off


def blur_out(spatial: Sequence[int], filt_size: int, stride: int, pad_off: int) -> tuple[int, ...]:
    """The spatial output size of a blur pool of an input of this spatial size."""
    before, after = ref.blur_pads(filt_size, pad_off)
    return tuple((n + before + after - filt_size) // stride + 1 for n in spatial)


def grad_out_size(grad: Any, layout: Layout) -> tuple[int, ...]:
    """The output size a gradient (of an input of this layout) was taken at, read from its
    shape, which must be that of an output of this input."""
    out = Layout.of(grad.shape, layout.ndim, layout.channels_last, "grad_output").spatial
    layout.check_grad_shape(grad, out)
    return out


# -- shapes of the global ops ------------------------------------------------------------------


def squeezed_shape(shape: Sequence[int], ndim: int, channels_last: bool) -> tuple[int, ...]:
    """A global op's output shape without its (length 1) spatial axes."""
    first = len(shape) - ndim - (1 if channels_last else 0)
    return (*shape[:first], *shape[first + ndim :])


def kept_shape(grad_shape: Sequence[int], layout: Layout) -> tuple[int, ...] | None:
    """The shape a global op's gradient takes back its spatial axes in, when it came without
    them; None when it has them (or is not that gradient: the backend then says so)."""
    keep = layout.out_shape((1,) * layout.ndim)
    if tuple(grad_shape) != keep and math.prod(grad_shape) == math.prod(keep):
        return keep
    return None
