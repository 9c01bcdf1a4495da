"""PyTorch's own checks for its pooling functions, in its order and with its words.

``avgpool.torch``'s ``*1d/2d/3d`` functions (and so ``avgpool.nn``'s modules) run these before
avgpool's own validation, so an argument PyTorch refuses is refused the same way: a
`TorchPoolError` (a RuntimeError, or also a ValueError where PyTorch raises one) whose message
starts with PyTorch's wording, then says what avgpool allows where that adds something.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import torch

from avgpool._errors import TorchPoolError

_LONG = {
    torch.int64: "Long",
    torch.int32: "Int",
    torch.int16: "Short",
    torch.int8: "Char",
    torch.uint8: "Byte",
}


def _ints(value: Any, ndim: int) -> tuple[int, ...] | None:
    """Per-axis ints as PyTorch broadcasts them, or None when they are not plain ints."""
    if isinstance(value, torch.Tensor) or value is None:
        return None
    if isinstance(value, Sequence) and not isinstance(value, str):
        if len(value) == 1:
            value = tuple(value) * ndim
        values = tuple(value)
    else:
        values = (value,) * ndim
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return None
    return values


def _shape(x: torch.Tensor) -> str:
    return "[" + ", ".join(str(n) for n in x.shape) + "]"


def _plain(value: Any) -> Any:
    """``value`` as a cache key when it is None, an int or a sequence of ints (by type: True
    and 1.0 are not 1 here), else a marker that keeps the call from the cache."""
    kind = type(value)
    if value is None or kind is int or kind is bool:
        return (kind, value)
    if (kind is tuple or kind is list) and all(type(v) is int for v in value):
        return tuple(value)
    return _UNKEYED


_UNKEYED = object()
#: The argument sets (and input shapes) that passed `pooling`: a model's layers repeat theirs.
_PASSED: set = set()


def pooling(
    op: str,
    ndim: int,
    x: torch.Tensor,
    kernel_size: Any,
    stride: Any,
    padding: Any,
    dilation: Any = 1,
    ceil_mode: bool = False,
    divisor_override: Any = None,
) -> None:
    """avg/max/lp pooling's checks (``op``: "avg", "max" or "lp"); a set of plain arguments
    and input shape that passed once passes again without them (eager calls only)."""
    if torch.jit.is_tracing():  # sizes are traced tensors; the op itself still checks
        return
    key = None
    if not torch.compiler.is_compiling():
        args = (kernel_size, stride, padding, dilation, ceil_mode, divisor_override)
        key = (op, ndim, tuple(x.shape), *map(_plain, args))
        if _UNKEYED in key:
            key = None
        elif key in _PASSED:
            return
    _pooling(op, ndim, x, kernel_size, stride, padding, dilation, ceil_mode, divisor_override)
    if key is not None:
        if len(_PASSED) > 4096:  # a sweep of shapes should not grow it without bound
            _PASSED.clear()
        _PASSED.add(key)


def _pooling(
    op: str,
    ndim: int,
    x: torch.Tensor,
    kernel_size: Any,
    stride: Any,
    padding: Any,
    dilation: Any,
    ceil_mode: Any,
    divisor_override: Any,
) -> None:
    kernel = _ints(kernel_size, ndim)
    strides = (
        kernel if stride is None or (isinstance(stride, Sequence) and not stride) else _ints(stride, ndim)
    )
    pads = _ints(padding, ndim)
    dilations = _ints(dilation, ndim)
    if kernel is None or strides is None or pads is None or dilations is None:
        return  # not plain ints: avgpool's own validation says what is wrong
    one = ndim == 1

    def say(values: tuple[int, ...]) -> Any:
        return values[0] if one else values

    if any(k <= 0 for k in kernel):
        raise TorchPoolError(f"kernel_size must be greater than zero, but got {say(kernel)}")
    if any(s <= 0 for s in strides):
        raise TorchPoolError(f"stride must be greater than zero, but got {say(strides)}")
    if any(d <= 0 for d in dilations):
        raise TorchPoolError(f"dilation must be greater than zero, but got {say(dilations)}")
    if any(p < 0 for p in pads):
        raise TorchPoolError(f"pad must be non-negative, but got pad: {say(pads)}")
    for p, k, d in zip(pads, kernel, dilations):
        if p > ((k - 1) * d + 1) // 2:
            raise TorchPoolError(
                f"pad should be at most half of effective kernel size, but got pad={p}, "
                f"kernel_size={k} and dilation={d} (PyTorch's rule; avgpool.{op}_pool takes any padding)"
            )
    if divisor_override is not None and divisor_override == 0:
        raise TorchPoolError("divisor must be not zero")
    input_of(op, ndim, x)
    for axis, (n, k, s, p, d) in enumerate(zip(x.shape[-ndim:], kernel, strides, pads, dilations)):
        room = n + 2 * p - d * (k - 1) - 1
        out = (-(-room // s) if ceil_mode else room // s) + 1
        if ceil_mode and (out - 1) * s >= n + p:
            out -= 1
        if out < 1:
            if op == "max" and one:
                raise TorchPoolError(f"max_pool1d() Invalid computed output size: {out}")
            raise TorchPoolError(
                f"Given input size: {_shape(x)}. Calculated output size on spatial axis {axis}: {out}. "
                "Output size is too small"
            )


@functools.cache
def input_check(op: str, ndim: int) -> Callable[[torch.Tensor], None]:
    """`input_of` of one op and rank as a function of the input (one object per pair, so calls
    that kept a plan under it share it: see `avgpool.torch._library.Ready`)."""
    return functools.partial(input_of, op, ndim)


def input_of(op: str, ndim: int, x: torch.Tensor) -> None:
    """The input's rank, and no empty dimension but the batch (also what torch.nn's modules
    check on each call)."""
    if torch.jit.is_tracing():  # sizes are traced tensors; the op itself still checks
        return
    rank = x.dim()
    # the common case in one test (eager only: compiled code keeps its per-axis guards)
    if (rank == ndim + 2 or rank == ndim + 1) and not torch.compiler.is_compiling() and x.numel():
        return
    ranks = f"{ndim + 1}D or {ndim + 2}D"
    batched = x.dim() == ndim + 2
    rest = x.shape[1:] if batched else x.shape
    # comparisons and a loop, not `in` and all(): torch.compile reads them on symbolic sizes
    if rank == ndim + 1 or rank == ndim + 2:
        for n in rest:
            if n <= 0:
                break
        else:
            return
    if op == "max" and ndim == 3 and x.dim() in (4, 5):
        raise TorchPoolError(
            "Expected input's non-batch dimensions to have positive length, but input has a shape of "
            + _shape(x)
        )
    if op == "max":
        raise TorchPoolError(
            f"Expected {ranks} (batch mode) tensor with optional 0 dim batch size for input, "
            f"but got: {_shape(x)}"
        )
    raise TorchPoolError(f"non-empty {ranks} (batch mode) tensor expected for input, but got: {_shape(x)}")


def _plain_sizes(output_size: Any, ndim: int) -> bool:
    """Whether ``output_size`` is one the checks below pass: an int >= 0, or ``ndim`` (or one)
    of them or None."""
    if type(output_size) is int:
        return output_size >= 0
    if type(output_size) not in (tuple, list) or len(output_size) not in (1, ndim):
        return False
    return all(s is None or (type(s) is int and s >= 0) for s in output_size)


def _adaptive_name(kind: str, ndim: int) -> str:
    return f"adaptive_{kind}_pool{int(ndim)}d"


def adaptive(kind: str, ndim: int, x: torch.Tensor, output_size: Any) -> None:
    """adaptive_avg/max_pool's checks (``kind``: "avg" or "max")."""
    if torch.jit.is_tracing():  # sizes are traced tensors; the op itself still checks
        return
    rank = x.dim()
    # the common case in one test (eager only: compiled code keeps its per-axis guards)
    if (
        (rank == ndim + 2 or rank == ndim + 1)
        and not torch.compiler.is_compiling()
        and x.numel()
        and (kind == "avg" or x.dtype.is_floating_point)
        and _plain_sizes(output_size, ndim)
    ):
        return

    def name() -> str:  # only where an error says it: torch.compile may hold ndim as a symbol
        return _adaptive_name(kind, ndim)

    if x.dim() <= ndim:
        raise TorchPoolError(f"Input dimension should be at least {ndim + 1}")
    sizes = output_size if isinstance(output_size, Sequence) else (output_size,) * ndim
    if isinstance(output_size, Sequence) and len(output_size) == 1 and ndim > 1:
        sizes = tuple(output_size) * ndim
    if len(sizes) != ndim:
        if ndim == 1:
            raise TorchPoolError(f"{name()}: 'output_size' should contain one int, got {output_size!r}")
        if kind == "max":
            raise TorchPoolError(
                f"{name()}(): internal error: output_size.size() must be {ndim}, got {output_size!r}"
            )
        raise TorchPoolError(f"{name()}: output_size must be {ndim}, got {output_size!r}")
    if x.dim() != ndim + 2 and x.dim() != ndim + 1:
        raise TorchPoolError(f"{name()}(): Expected {ndim + 1}D or {ndim + 2}D tensor, but got {_shape(x)}")
    known = [s for s in sizes if s is not None]
    if any(isinstance(s, int) and s < 0 for s in known):
        if kind == "max":
            bad = next(s for s in known if s < 0)
            raise TorchPoolError(f"Trying to create tensor with negative dimension {bad}: {list(sizes)}")
        raise TorchPoolError(
            f"elements of output_size must be greater than or equal to 0 but received {sizes}"
        )
    # PyTorch: every spatial axis non-empty; for max pooling, batched channels too
    batched = x.dim() == ndim + 2
    rest = x.shape[1:] if batched and kind == "max" else x.shape[-ndim:]
    empty = False
    for n in rest:  # a loop, not any(): torch.compile reads it on symbolic sizes
        if n == 0:
            empty = True
    if empty:
        raise TorchPoolError(
            f"{name()}(): Expected input to have non-zero size for non-batch dimensions, but input has sizes "
            f"{_shape(x)} with dimension {list(rest).index(0) + x.dim() - len(rest)} being empty"
        )
    if kind == "max" and not x.dtype.is_floating_point:
        raise TorchPoolError(f"\"{name()}\" not implemented for '{_LONG.get(x.dtype, str(x.dtype))}'")
