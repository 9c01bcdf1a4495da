"""The array edge: validate inputs, pick the working dtype, move layouts in and out.

The maths only ever sees channels-first ``(B, *spatial)`` float64 arrays; this module turns a
user's array (batched or not, channels-first or -last, any supported dtype) into that and
the result back into the user's layout and dtype.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache, cached_property, lru_cache
from typing import Any

import numpy as np

from avgpool._errors import AvgPoolError

FLOAT_DTYPES = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))
#: Integers that int64 holds, for the max family (computed in int64, never through floats).
INT_DTYPES = tuple(
    np.dtype(t) for t in (np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32)
)


def as_array(x: Any, name: str = "input", allow_int: bool = False) -> np.ndarray:
    """`x` as an ndarray of a supported dtype, or a TypeError that names what is allowed.

    Masked arrays are refused: pooling would read the hidden values as if they were data.
    """
    if isinstance(x, np.ma.MaskedArray):
        raise TypeError(
            f"{name} is a masked array; pooling has no masked semantics. Pass "
            f"{name}.filled(value) (or np.asarray({name}) to pool the hidden values too)"
        )
    if not isinstance(x, np.ndarray):
        if not isinstance(x, (list, tuple)) and not np.isscalar(x):
            raise TypeError(f"{name} must be a NumPy array, got {type(x).__name__}")
        x = np.asarray(x)
    allowed = FLOAT_DTYPES + (INT_DTYPES if allow_int else ())
    if x.dtype not in allowed:
        names = ", ".join(str(d) for d in allowed)
        raise TypeError(f"{name} dtype must be one of {names}; got {x.dtype}")
    return x


@cache
def allocation_limit() -> int:
    """The most bytes one result may take: this machine's physical memory."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # no sysconf here: only int64 bounds it
        return 2**63 - 1


def check_allocation(shape: Sequence[int], dtype: Any, what: str) -> None:
    """Refuse, before allocating, a result larger than `allocation_limit`, naming its size."""
    count = math.prod(shape)
    nbytes = count * np.dtype(dtype).itemsize
    limit = allocation_limit()
    if nbytes > limit:
        raise AvgPoolError(
            f"{what} would have shape {tuple(shape)}: {count} elements of {np.dtype(dtype)}, "
            f"{nbytes / 2**30:.1f} GiB, more than the {limit / 2**30:.1f} GiB of memory this "
            "machine has"
        )


@dataclass(frozen=True)
class Layout:
    """How a user's array maps onto the canonical (B, *spatial) working form.

    Its derived shapes are computed once per instance (layouts are immutable, and the ops
    keep one per input shape and window).
    """

    shape: tuple[int, ...]
    ndim: int
    channels_last: bool

    @classmethod
    def of(cls, shape: Sequence[int], ndim: int, channels_last: bool, name: str = "input") -> Layout:
        """The validated layout of an array of this shape (kept per shape: layouts are immutable)."""
        return _layout_of(tuple(int(s) for s in shape), ndim, bool(channels_last), name)

    @cached_property
    def batched(self) -> bool:
        return len(self.shape) == self.ndim + 2

    @cached_property
    def full_shape(self) -> tuple[int, ...]:
        return self.shape if self.batched else (1, *self.shape)

    @cached_property
    def spatial(self) -> tuple[int, ...]:
        full = self.full_shape
        return full[1:-1] if self.channels_last else full[2:]

    @cached_property
    def batch_channels(self) -> tuple[int, int]:
        full = self.full_shape
        return (full[0], full[-1]) if self.channels_last else (full[0], full[1])

    def to_work(self, x: np.ndarray) -> np.ndarray:
        """User array -> (B, *spatial) float64 (int64 for integer input)."""
        if x.shape != self.shape:
            raise AvgPoolError(f"expected an array of shape {self.shape}, got {x.shape}")
        full = x.reshape(self.full_shape)
        if self.channels_last:
            full = np.moveaxis(full, -1, 1)
        n, c = self.batch_channels
        work = np.int64 if x.dtype.kind in "iu" else np.float64
        return np.asarray(full, dtype=work).reshape(n * c, *self.spatial)

    def out_shape(self, out_spatial: Sequence[int]) -> tuple[int, ...]:
        full = self.out_full_shape(out_spatial)
        return full if self.batched else full[1:]

    def out_full_shape(self, out_spatial: Sequence[int]) -> tuple[int, ...]:
        """The batched shape of an output with these spatial sizes."""
        n, c = self.batch_channels
        return (n, *out_spatial, c) if self.channels_last else (n, c, *out_spatial)

    def from_work(self, y: np.ndarray, dtype: np.dtype) -> np.ndarray:
        """(B, *out_spatial) -> the user's layout and dtype (rounded once)."""
        n, c = self.batch_channels
        full = y.reshape(n, c, *y.shape[1:])
        if self.channels_last:
            full = np.moveaxis(full, 1, -1)
        if not self.batched:
            full = full[0]
        if dtype.kind in "iu":  # a window with no real cell holds int64's lowest value
            full = np.maximum(full, np.iinfo(dtype).min)
        return np.ascontiguousarray(full, dtype=dtype)

    def check_grad_shape(self, grad: np.ndarray, out_spatial: Sequence[int]) -> None:
        """A gradient must have the forward's output shape."""
        expected = self.out_shape(out_spatial)
        if grad.shape != expected:
            raise AvgPoolError(
                f"grad_output must have the forward output's shape {expected}, got {grad.shape}"
            )


@lru_cache(maxsize=1024)
def _layout_of(shape: tuple[int, ...], ndim: int, channels_last: bool, name: str) -> Layout:
    if not 1 <= ndim <= 3:
        raise AvgPoolError(
            f"the spatial rank must be 1, 2 or 3, got {ndim} for {name} of shape {shape}: give "
            "ndim= (or a tuple output_size) when the input has no batch and channel axes to infer it from"
        )
    if len(shape) not in (ndim + 1, ndim + 2):
        layout = "(N, *spatial, C)" if channels_last else "(N, C, *spatial)"
        raise AvgPoolError(
            f"{name} must have {ndim + 2} dimensions {layout} or {ndim + 1} (unbatched) "
            f"for {ndim}-d pooling, got shape {shape}"
        )
    layout = Layout(shape, ndim, channels_last)
    if any(n < 1 for n in layout.spatial):
        raise AvgPoolError(f"{name} spatial sizes must be >= 1, got {layout.spatial} in shape {shape}")
    return layout
