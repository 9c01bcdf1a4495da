"""The tensor edge: zero-copy NumPy views of CPU tensors, and tensors back from NumPy results.

avgpool's kernels take NumPy arrays channels-first ``(N, C, *spatial)`` or channels-last
``(N, *spatial, C)``. A CPU tensor in either memory format is one of those without a copy:
a contiguous tensor as it is, a channels_last-contiguous ``(N, C, H, W)`` tensor as its
``(N, H, W, C)`` permutation (the kernels then run with ``channels_last=True`` and the result
is permuted back, so the output keeps the input's memory format, as PyTorch's pooling does).
Anything else (a strided slice, bfloat16, which NumPy lacks) is copied once, and the debug log
says so.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import torch

log = logging.getLogger("avgpool")

#: Tensor dtypes the NumPy kernels take as they are; bfloat16 goes through a float32 copy.
_NUMPY_DTYPES = (
    torch.float16,
    torch.float32,
    torch.float64,
    torch.int8,
    torch.int16,
    torch.int32,
    torch.int64,
    torch.uint8,
)


class View(NamedTuple):
    """A NumPy view of a tensor, the layout the kernels should read it in, and the way back."""

    array: np.ndarray
    channels_last: bool
    back: Callable[[np.ndarray], torch.Tensor]


def _cl_order(ndim: int) -> tuple[int, ...]:
    """(N, C, *spatial) -> (N, *spatial, C)."""
    return (0, *range(2, ndim + 2), 1)


def _cf_order(ndim: int) -> tuple[int, ...]:
    """(N, *spatial, C) -> (N, C, *spatial)."""
    return (0, ndim + 1, *range(1, ndim + 1))


_CL_ORDERS = {n: _cl_order(n) for n in (1, 2, 3)}
_CF_ORDERS = {n: _cf_order(n) for n in (1, 2, 3)}


def memory_channels_last(x: torch.Tensor, ndim: int) -> bool:
    """Whether a batched channels-first tensor is stored channels-last (and not also contiguous)."""
    return (
        x.dim() == ndim + 2
        and x.shape[1] > 1
        and not x.is_contiguous()
        and x.permute(_CL_ORDERS.get(ndim) or _cl_order(ndim)).is_contiguous()
    )


def _permuted_back(order: tuple[int, ...]) -> Callable[[np.ndarray], torch.Tensor]:
    return lambda y: torch.from_numpy(y).permute(order)


_BACK_FROM_NHWC = {n: _permuted_back(order) for n, order in _CF_ORDERS.items()}


def to_numpy(x: torch.Tensor, ndim: int, channels_last: bool) -> View:
    """A NumPy view of ``x`` (a copy only when no view fits) and how to turn a result back.

    ``channels_last`` is the tensor's logical layout (the ops' argument); the returned
    `View.channels_last` is the layout the array must be read in.
    """
    if not x.is_cpu:
        raise RuntimeError(f"the NumPy kernels take CPU tensors, got one on {x.device}")
    x = x.detach()
    dtype = x.dtype
    if dtype not in _NUMPY_DTYPES:
        if not dtype.is_floating_point:
            raise TypeError(f"input dtype {dtype} is not supported")
        log.debug("avgpool.torch: %s input computed through a float32 copy", dtype)
        x = x.float()

        def cast(t: torch.Tensor) -> torch.Tensor:
            return t if not t.dtype.is_floating_point else t.to(dtype)

    else:
        cast = None

    if x.is_contiguous():  # first: the common case, and never a channels_last memory format
        back = torch.from_numpy
        array, layout = x.numpy(), channels_last
    elif not channels_last and memory_channels_last(x, ndim):
        back = _BACK_FROM_NHWC.get(ndim) or _permuted_back(_cf_order(ndim))
        array, layout = x.permute(_CL_ORDERS.get(ndim) or _cl_order(ndim)).numpy(), True
    else:
        log.debug("avgpool.torch: non-contiguous input copied")
        back = torch.from_numpy
        array, layout = x.contiguous().numpy(), channels_last
    if cast is None:
        return View(array, layout, back)
    return View(array, layout, lambda y: cast(back(y)))


def permute_shape(shape, ndim: int) -> tuple[int, ...]:
    """A batched channels-first shape as the channels-last shape of the same tensor."""
    return tuple(shape[i] for i in _cl_order(ndim))


def _format_of(u: torch.Tensor, exact_first: bool) -> torch.memory_format:
    """PyTorch's suggested memory format of a batched tensor (its pooling picks its output's
    format so); ``exact_first`` tries the channels-last contiguity test first, as max_pool3d's
    CPU kernel does."""
    from torch._prims_common import suggest_memory_format

    if exact_first and not u.is_contiguous():
        cl = torch.channels_last if u.dim() == 4 else torch.channels_last_3d
        if u.is_contiguous(memory_format=cl):
            return cl
    return suggest_memory_format(u)


def torch_output_strides(x: torch.Tensor, ndim: int, kind: str, out_shape) -> tuple[int, ...]:
    """The strides PyTorch's own CPU pooling gives its output for input ``x`` (channels-first).

    ``kind``: "avg", "lp", "adaptive" (average or max), "max" (with indices) or "max_values".
    PyTorch keeps a channels-last input's layout, sliced or unbatched ones included, except
    where its 3-D averages and adaptive pools and its 1-D values-only max return contiguous
    results; 1-D pools run as 2-D pools over a height of 1.
    """
    out_shape = list(out_shape)
    if (ndim == 3 and kind not in ("max", "max_values")) or (ndim == 1 and kind == "max_values"):
        return torch.empty(out_shape, device="meta").stride()
    u = x.unsqueeze(-2) if ndim == 1 else x
    batched = u.dim() == max(ndim, 2) + 2
    if not batched:
        u = u.unsqueeze(0)
    shape = [*out_shape[:-1], 1, out_shape[-1]] if ndim == 1 else out_shape
    if not batched:
        shape = [1, *shape]
    fmt = _format_of(u, exact_first=ndim == 3)
    o = torch.empty(shape, device="meta", memory_format=fmt)
    if ndim == 1:
        o = o.squeeze(-2)
    return (o if batched else o[0]).stride()


@functools.lru_cache(maxsize=1024)
def _output_strides(shape: tuple, stride: tuple, ndim: int, kind: str, out_shape: tuple) -> tuple[int, ...]:
    """`torch_output_strides` of an input of this shape and strides (kept: it probes with meta
    tensors, and a model feeds each layer the same layout again and again)."""
    probe = torch.empty_strided(shape, stride, device="meta")
    return torch_output_strides(probe, ndim, kind, out_shape)


def as_torch_gives(y: torch.Tensor, x: torch.Tensor, ndim: int, kind: str) -> torch.Tensor:
    """``y`` (an output for input ``x``) in the memory layout PyTorch's pooling would give it."""
    if y.is_contiguous() and x.is_contiguous():  # the common case, decided without a probe
        return y
    strides = _output_strides(tuple(x.shape), x.stride(), ndim, kind, tuple(y.shape))
    if y.stride() == strides or y.numel() <= 1:
        return y
    out = torch.empty_strided(y.shape, strides, dtype=y.dtype, device=y.device)
    return out.copy_(y)
