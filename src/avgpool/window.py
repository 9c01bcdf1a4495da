"""Canonical pooling geometry: one validated `Window`, resolved per input into plain numbers.

A `Window` holds what a pooling layer *says* (kernel, stride, dilation, padding, ceil mode,
divisor rules, layout). `Window.resolve(spatial_shape)` turns it into one `Axis` of plain ints
per spatial axis: the input length, the pads actually applied and the output length. Everything
downstream (reference, kernels, reports) works from those numbers alone.

Semantics shared by every convention (each framework is one choice of these knobs):

* window ``o`` on an axis covers input cells ``o*stride - pad_before + j*dilation`` for
  ``j < kernel``;
* floor mode: ``out = (n + pads - span) // stride + 1`` with ``span = dilation*(kernel-1) + 1``;
* ceil mode: ``out = ceil((n + pads - span) / stride) + 1``, then a last window that would
  start in the right padding is dropped (PyTorch's rule, also ONNX Runtime's); a window may
  then hang past the padded input, even when the span is longer than it by less than a stride;
* the average's divisor is the number of window cells inside the padded input
  (``count_include_pad=True``) or inside the real input (``False``), or ``divisor_override``;
  cells of a ceil-mode window that hang past the padded input are never counted;
* a window with no real cell averages to 0 (PyTorch's choice; Flax's NaN under its
  convention, see `Window`'s ``convention``) and max-pools to -inf.
"""

from __future__ import annotations

import dataclasses
import functools
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from avgpool._errors import AvgPoolError

__all__ = ["MAX_AXIS", "PADDING_MODES", "Axis", "Window"]

#: The longest spatial axis, padding included, and the longest output axis: every index the
#: kernels compute on an axis then fits int64 with room to spare, even multiplied by a row
#: length. Geometry arguments themselves may be any int up to 2**63 - 1 (a stride longer
#: than the padded input simply gives one window).
MAX_AXIS = 2**31 - 1
_INT64_MAX = 2**63 - 1

#: Padding strings accepted everywhere (case-insensitive); "same" extends at the end like
#: TensorFlow 'SAME' and ONNX SAME_UPPER, "same_lower" at the start like ONNX SAME_LOWER.
PADDING_MODES = ("valid", "same", "same_lower")
_PADDING_ALIASES = {"valid": "valid", "same": "same", "same_upper": "same", "same_lower": "same_lower"}


@dataclass(frozen=True)
class Axis:
    """The resolved geometry of one spatial axis: plain ints, no arrays, no options left."""

    size: int
    kernel: int
    stride: int
    dilation: int
    pad_before: int
    pad_after: int
    out: int

    @property
    def span(self) -> int:
        """Cells from the first to the last tap of one window, inclusive."""
        return self.dilation * (self.kernel - 1) + 1

    def bounded(self) -> Axis:
        """The same windows, described with no number larger than the padded input.

        A single window's stride is never used, so it becomes 1; a single tap's dilation
        likewise. The kernel is kept: Lp pooling scales by it, and a window that hangs past
        the padded input (ceil mode) is at most a stride longer than it. What the kernels
        compute is unchanged; their index arithmetic then stays far from int64's limits,
        whatever stride or dilation the caller gave.
        """
        stride = self.stride if self.out > 1 else 1
        dilation = self.dilation if self.kernel > 1 else 1
        if (stride, dilation) == (self.stride, self.dilation):
            return self
        return Axis(self.size, self.kernel, stride, dilation, self.pad_before, self.pad_after, self.out)


def _as_int(value: Any, name: str) -> int:
    if isinstance(value, (bool, np.bool_)) or not hasattr(value, "__index__"):
        raise TypeError(f"{name} must be an int or a tuple of ints, got {value!r}")
    value = operator.index(value)
    if not -_INT64_MAX - 1 <= value <= _INT64_MAX:
        raise AvgPoolError(f"{name} must fit a 64-bit integer (|value| < 2**63), got {value}")
    return value


def as_flag(value: Any, name: str) -> bool:
    """A bool, NumPy's bool, or 0/1; anything else is a TypeError naming ``name``."""
    if isinstance(value, (bool, np.bool_)) or (
        isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value in (0, 1)
    ):
        return bool(value)
    raise TypeError(f"{name} must be a bool, got {value!r}")


def _per_axis(value: Any, name: str, ndim: int | None) -> tuple[int, ...]:
    """An int broadcast to every axis, or a sequence with one int per axis."""
    if isinstance(value, Sequence) and not isinstance(value, str):
        values = tuple(_as_int(v, name) for v in value)
        if ndim is not None and len(values) == 1 and ndim > 1:
            values = values * ndim
        if ndim is not None and len(values) != ndim:
            raise AvgPoolError(f"{name} must have {ndim} entries (one per spatial axis), got {value!r}")
        return values
    scalar = _as_int(value, name)
    if ndim is None:
        raise AvgPoolError(f"the spatial rank is unknown: give ndim= or a tuple {name}")
    return (scalar,) * ndim


def _typed(value: Any) -> Any:
    """``value`` with the type of every part beside it: 2, 2.0, True and numpy's 2 all differ."""
    if type(value) is tuple:
        return (tuple, *map(_typed, value))
    return (type(value), value)


def typed_key(args: tuple, kwargs: dict[str, Any]) -> tuple:
    """A key for a call's arguments that compares their types too, at any depth: ``(2, 2.0)``
    is not ``(2, 2)`` and ``True`` is not ``1``, so a value that validation refuses never finds
    one it accepted. Keyword arguments in another order make another key. Hashing it raises
    TypeError when an argument is unhashable (a list, an array)."""
    values = (*args, *kwargs.values())
    types = tuple(map(type, values))
    if tuple in types:  # the types of a tuple's items too
        return ("typed", tuple(kwargs), *map(_typed, values))
    # scalars: their types beside them (a few µs less per call, which is most of it)
    return ("flat", tuple(kwargs), values, types)


#: How many argument sets `kept_windows` keeps per builder.
_WINDOWS_KEPT = 1024


def kept_windows(build: Callable[..., Window]) -> Callable[..., Window]:
    """Keep the Windows ``build`` makes, per arguments: building one validates every field.

    Windows are immutable, so a call with the same arguments gets the same Window back.
    Arguments are compared with their types, at any depth (``(2, 2.0)`` is not ``(2, 2)``,
    ``True`` is not ``1``), so a value the validation would refuse never finds one it
    accepted; keyword arguments in another order are another key (built once more); a call
    with an unhashable argument (a list, an array) builds afresh, and errors are raised on
    every call, never kept.
    """
    kept: dict[Any, Window] = {}

    @functools.wraps(build)
    def keeping(*args: Any, **kwargs: Any) -> Window:
        key = typed_key(args, kwargs)
        try:
            return kept[key]
        except KeyError:
            pass
        except TypeError:  # unhashable: a list or an array among the arguments
            return build(*args, **kwargs)
        window = build(*args, **kwargs)
        if len(kept) >= _WINDOWS_KEPT:
            kept.clear()
        kept[key] = window
        return window

    keeping.cache_clear = kept.clear  # type: ignore[attr-defined]
    return keeping


def _rank_of(*values: Any) -> int | None:
    for value in values:
        if isinstance(value, Sequence) and not isinstance(value, str) and len(value) > 1:
            return len(value)
    for value in values:
        if isinstance(value, Sequence) and not isinstance(value, str):
            return len(value)
    return None


def _padding(padding: Any, ndim: int) -> tuple[tuple[int, int], ...] | str:
    if isinstance(padding, str):
        mode = _PADDING_ALIASES.get(padding.lower())
        if mode is None:
            allowed = ", ".join(repr(m) for m in (*PADDING_MODES, "same_upper"))
            raise AvgPoolError(f"padding must be an int, a tuple or one of {allowed}; got {padding!r}")
        return ((0, 0),) * ndim if mode == "valid" else mode
    if isinstance(padding, Sequence) and any(isinstance(p, Sequence) for p in padding):
        if len(padding) != ndim or not all(
            isinstance(p, Sequence) and not isinstance(p, str) and len(p) == 2 for p in padding
        ):
            raise AvgPoolError(f"padding as pairs must hold {ndim} (before, after) pairs, got {padding!r}")
        pairs = tuple((_as_int(b, "padding"), _as_int(a, "padding")) for b, a in padding)
    else:
        pairs = tuple((p, p) for p in _per_axis(padding, "padding", ndim))
    if any(p < 0 for pair in pairs for p in pair):
        raise AvgPoolError(f"padding must be >= 0 on every side, got {padding!r}")
    return pairs


@dataclass(frozen=True, init=False)
class Window:
    """A validated pooling window in avgpool's canonical form.

    Parameters
    ----------
    kernel_size : int or tuple of int or None
        Window extent per spatial axis; ``None`` means a global window (the whole axis).
    stride : int or tuple of int, optional
        Step between windows; defaults to ``kernel_size`` (1 for a global window).
    padding : int, tuple, tuple of (before, after) pairs, or str
        Implicit padding; ``"valid"`` (none), ``"same"`` (TensorFlow 'SAME' / ONNX SAME_UPPER:
        the odd cell goes at the end) or ``"same_lower"`` (ONNX SAME_LOWER). The ``same`` modes
        are resolved from each input's size.
    dilation : int or tuple of int
        Distance between taps of one window.
    ceil_mode : bool
        Round the output length up (see the module docstring for the rule).
    count_include_pad : bool
        Whether padded cells count in the average's divisor.
    divisor_override : int, optional
        A constant non-zero divisor for the average, as PyTorch's (a negative one flips the
        sign, as there).
    channels_last : bool
        Arrays are (N, *spatial, C) rather than (N, C, *spatial).
    ndim : int, optional
        Spatial rank; inferred from any tuple argument.
    convention : str
        The framework whose rules built this window ("avgpool" when built directly). Besides
        naming it (in reports, and in equality: windows of two conventions never compare
        equal), it changes results where the frameworks compute differently from the same
        geometry, by the tables of `avgpool.conventions`:

        * average of a window with no counted cell (a ``count_include_pad=False`` window wholly
          in the padding): NaN for "flax" (its 0/0), else 0 (``EMPTY_AVERAGE``);
        * max pooling's NaN rule: "tensorflow" and "keras" skip NaN and floor results at the
          dtype's lowest finite value, others let NaN win (``MAX_NAN_POLICY``; an explicit
          ``nan_policy=`` overrides it);
        * `avgpool.nn`'s LPPool modules compute PyTorch's Lp for "torch" and ONNX LpPool's
          (``|x|**p``) for "onnx" (`avgpool.lp_pool` takes that choice as its own
          ``convention=`` argument);
        * `avgpool.nn`'s modules run PyTorch's input checks, with its messages, for "torch".

        Build windows of a framework through `avgpool.conventions` (``Window.from_torch``,
        ``Window.from_onnx``, ... there), which also applies the framework's defaults and
        refusals.

    Examples
    --------
    >>> w = Window(3, stride=2, padding="same", count_include_pad=False, ndim=2)
    >>> w.output_shape((1, 3, 5, 5))
    (1, 3, 3, 3)
    >>> w.pads((5, 5))
    ((1, 1), (1, 1))
    """

    # avgpool.conventions, which builds on this module, adds the constructors of each
    # framework's spelling: from_torch, from_onnx, from_tensorflow, from_keras, from_flax.

    kernel_size: tuple[int, ...] | None
    stride: tuple[int, ...]
    dilation: tuple[int, ...]
    padding: tuple[tuple[int, int], ...] | str
    ceil_mode: bool
    count_include_pad: bool
    divisor_override: int | None
    channels_last: bool
    ndim: int
    convention: str

    def __init__(
        self,
        kernel_size: int | Sequence[int] | None,
        stride: int | Sequence[int] | None = None,
        padding: Any = 0,
        *,
        dilation: int | Sequence[int] = 1,
        ceil_mode: bool = False,
        count_include_pad: bool = True,
        divisor_override: int | None = None,
        channels_last: bool = False,
        ndim: int | None = None,
        convention: str = "avgpool",
    ) -> None:
        pad_tuple = padding if not isinstance(padding, str) else None
        inferred = _rank_of(kernel_size, stride, dilation, pad_tuple)
        if ndim is None:
            ndim = inferred
        if ndim is None:
            raise AvgPoolError("the spatial rank is unknown: give ndim= or a tuple kernel_size")
        ndim = _as_int(ndim, "ndim")
        if not 1 <= ndim <= 3:
            raise AvgPoolError(f"ndim (the spatial rank) must be 1, 2 or 3, got {ndim}")
        if kernel_size is None:
            kernel = None
            strides = (1,) * ndim if stride is None else _per_axis(stride, "stride", ndim)
        else:
            kernel = _per_axis(kernel_size, "kernel_size", ndim)
            if stride is None or (isinstance(stride, Sequence) and len(stride) == 0):
                strides = kernel
            else:
                strides = _per_axis(stride, "stride", ndim)
        dilations = _per_axis(dilation, "dilation", ndim)
        for name, values in (("kernel_size", kernel), ("stride", strides), ("dilation", dilations)):
            if values is not None and any(v < 1 for v in values):
                raise AvgPoolError(f"{name} must be >= 1 for every spatial axis, got {values}")
        pads = _padding(padding, ndim)
        if kernel is None and (pads != ((0, 0),) * ndim or set(strides) != {1}):
            raise AvgPoolError("a global window (kernel_size=None) takes no stride or padding")
        if divisor_override is not None:
            divisor_override = _as_int(divisor_override, "divisor_override")
            if divisor_override == 0:  # a negative one divides by it, as PyTorch's does
                raise AvgPoolError("divisor_override must be a non-zero int or None, got 0")
        ceil_mode = as_flag(ceil_mode, "ceil_mode")
        count_include_pad = as_flag(count_include_pad, "count_include_pad")
        channels_last = as_flag(channels_last, "channels_last")
        set_ = object.__setattr__
        set_(self, "kernel_size", kernel)
        set_(self, "stride", strides)
        set_(self, "dilation", dilations)
        set_(self, "padding", pads)
        set_(self, "ceil_mode", bool(ceil_mode))
        set_(self, "count_include_pad", bool(count_include_pad))
        set_(self, "divisor_override", divisor_override)
        set_(self, "channels_last", bool(channels_last))
        set_(self, "ndim", ndim)
        set_(self, "convention", str(convention))

    def __hash__(self) -> int:
        # kept once computed: a window keys every planned call, so it is hashed on each call
        try:
            return self.__dict__["_hash"]
        except KeyError:
            value = hash(tuple(getattr(self, f.name) for f in dataclasses.fields(self)))
            object.__setattr__(self, "_hash", value)
            return value

    def __getstate__(self) -> dict[str, Any]:
        # the kept hash stays behind: string hashes differ from one process to the next
        return {k: v for k, v in self.__dict__.items() if k != "_hash"}

    # -- resolution -------------------------------------------------------------------------

    def spatial_shape(self, input_shape: Sequence[int]) -> tuple[int, ...]:
        """The spatial part of a batched or unbatched input shape in this window's layout."""
        shape = tuple(_as_int(s, "input shape") for s in input_shape)
        if len(shape) not in (self.ndim + 1, self.ndim + 2):
            raise AvgPoolError(
                f"input must have {self.ndim + 1} (unbatched) or {self.ndim + 2} (batched) "
                f"dimensions for a {self.ndim}-d window, got shape {shape}"
            )
        return shape[-self.ndim - 1 : -1] if self.channels_last else shape[-self.ndim :]

    def resolve(self, spatial_shape: Sequence[int]) -> tuple[Axis, ...]:
        """Per-axis geometry for an input of this spatial shape.

        Raises AvgPoolError when no window fits on some axis.
        """
        spatial = tuple(_as_int(s, "spatial shape") for s in spatial_shape)
        if len(spatial) != self.ndim:
            raise AvgPoolError(f"expected {self.ndim} spatial sizes, got {spatial}")
        axes = []
        for i, n in enumerate(spatial):
            if n < 1:
                raise AvgPoolError(f"input spatial size must be >= 1 on every axis, got {spatial}")
            k = n if self.kernel_size is None else self.kernel_size[i]
            s, d = self.stride[i], self.dilation[i]
            span = d * (k - 1) + 1
            if isinstance(self.padding, str):
                out = -(-n // s)
                total = max((out - 1) * s + span - n, 0)
                small = total // 2
                before = small if self.padding == "same" else total - small
                after = total - before
            else:
                before, after = self.padding[i]
            if n + before + after > MAX_AXIS:
                raise AvgPoolError(
                    f"spatial axis {i} is too long: {n} cells + padding {before} + {after} "
                    f"exceeds the limit of {MAX_AXIS} cells per axis"
                )
            room = n + before + after - span
            if self.ceil_mode and not isinstance(self.padding, str):
                # ceil admits one partial window even when the span exceeds the padded input
                # by less than a stride (PyTorch, ONNX); the drop rule cannot empty the axis.
                out = -(-room // s) + 1
                if (out - 1) * s >= n + before:
                    out -= 1
            else:
                out = room // s + 1
            if out < 1:
                raise AvgPoolError(
                    f"the window (span {span} = dilation*(kernel_size-1)+1) is larger than the "
                    f"padded input ({n}+{before}+{after}) on spatial axis {i}: no window fits"
                )
            if span > MAX_AXIS:  # ceil mode admits a window up to a stride past the input
                raise AvgPoolError(
                    f"the window's span on spatial axis {i} ({span} cells) exceeds the limit of "
                    f"{MAX_AXIS} cells per axis"
                )
            axes.append(Axis(n, k, s, d, before, after, out))
        return tuple(axes)

    def pads(self, spatial_shape: Sequence[int]) -> tuple[tuple[int, int], ...]:
        """The (before, after) padding applied on each axis for this spatial shape."""
        return tuple((a.pad_before, a.pad_after) for a in self.resolve(spatial_shape))

    def output_shape(self, input_shape: Sequence[int]) -> tuple[int, ...]:
        """The output array's shape for an input of this (batched or unbatched) shape."""
        shape = tuple(input_shape)
        outs = tuple(a.out for a in self.resolve(self.spatial_shape(shape)))
        if self.channels_last:
            return (*shape[: -self.ndim - 1], *outs, shape[-1])
        return (*shape[: -self.ndim], *outs)

    def replace(self, **changes: Any) -> Window:
        """A copy with some arguments changed (validated again)."""
        args = {
            "kernel_size": self.kernel_size,
            "stride": self.stride,
            "padding": self.padding,
            "dilation": self.dilation,
            "ceil_mode": self.ceil_mode,
            "count_include_pad": self.count_include_pad,
            "divisor_override": self.divisor_override,
            "channels_last": self.channels_last,
            "ndim": self.ndim,
            "convention": self.convention,
        }
        args.update(changes)
        return Window(**args)
