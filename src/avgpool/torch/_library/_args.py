"""The custom ops' arguments and outputs: a `Window` as plain op arguments and back, and the
shapes, memory layouts and devices of their results (shared by the CPU, CUDA and fake
implementations)."""

import functools
import logging

from torch import Tensor

from avgpool._errors import AvgPoolError
from avgpool.torch._arrays import (
    _cf_order,
    as_torch_gives,
    memory_channels_last,
    permute_shape,
    torch_output_strides,
)
from avgpool.window import Window

log = logging.getLogger("avgpool")


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


def spatial(shape, ndim: int, channels_last: bool) -> list:
    return list(shape[-ndim - 1 : -1] if channels_last else shape[len(shape) - ndim :])


def with_spatial(shape, ndim: int, channels_last: bool, spatial) -> list:
    shape = list(shape)
    if channels_last:
        return [*shape[: -ndim - 1], *spatial, shape[-1]]
    return [*shape[: len(shape) - ndim], *spatial]


def check_rank(x: Tensor, ndim: int, name: str = "input") -> None:
    if x.dim() not in (ndim + 1, ndim + 2):
        raise AvgPoolError(
            f"{name} must have {ndim + 2} dimensions (batched) or {ndim + 1} (unbatched) for "
            f"{ndim}-d pooling, got shape {tuple(x.shape)}"
        )


def new_empty(
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


def torch_layout(y: Tensor, x: Tensor, w: Window, kind: str) -> Tensor:
    """A channels-first result in the memory layout PyTorch's pooling gives (`as_torch_gives`)."""
    return y if w.channels_last else as_torch_gives(y, x, w.ndim, kind)


def numpy_window(w: Window, channels_last: bool) -> Window:
    """The window in the layout the NumPy view is read in."""
    if channels_last == w.channels_last:
        return w
    args = window_args(w)
    return window_of(*args[:8], channels_last, args[9])


def through_cpu(name: str, fn, *tensors: Tensor, args: tuple = ()):
    """Run a CPU kernel for tensors on another device: the fallback, logged."""
    device = tensors[0].device
    log.debug("avgpool.torch: %s on %s through the CPU kernels (no GPU kernel for it)", name, device)
    result = fn(*(t.cpu() for t in tensors), *args)
    if isinstance(result, tuple):
        return tuple(r.to(device) for r in result)
    return result.to(device)
