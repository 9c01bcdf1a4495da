"""torch.nn's windowed pooling modules (average, max, Lp, global) computed by avgpool, in any
framework's convention: each reads its arguments by the convention's rules
(`convention_window`) and calls one ``torch.ops.avgpool`` custom op in ``forward``."""

from typing import Any

import torch
from torch import Tensor

import avgpool.torch  # noqa: F401  (registers torch.ops.avgpool)
from avgpool import conventions
from avgpool._errors import AvgPoolError, torch_errors
from avgpool.conventions import CONVENTIONS, RULES
from avgpool.torch import _checks
from avgpool.torch._library import avg_ready, lp_ready, max_ready, max_values_ready, window_args
from avgpool.window import Window

__all__ = [
    "AvgMaxPool",
    "AvgPool1d",
    "AvgPool2d",
    "AvgPool3d",
    "GlobalAvgPool",
    "GlobalMaxPool",
    "LPPool1d",
    "LPPool2d",
    "LPPool3d",
    "MaxPool1d",
    "MaxPool2d",
    "MaxPool3d",
    "convention_window",
]

#: The conventions whose stride defaults to 1 (torch.nn's ``stride`` attribute shows it).
_DEFAULT_STRIDE_IS_ONE = tuple(name for name, r in RULES.items() if r.default_stride == "one")


def convention_window(
    op: str,
    ndim: int,
    convention: str,
    kernel_size: Any,
    stride: Any = None,
    padding: Any = 0,
    dilation: Any = 1,
    ceil_mode: bool = False,
    count_include_pad: bool | None = None,
    divisor_override: int | None = None,
) -> Window:
    """A module's Window: torch.nn's arguments read by one framework's rules.

    `avgpool.conventions.window`, the builder `avgpool.inspect.window_for` and ``avgpool
    shape`` use too: the same defaults (None: the framework's), refusals and messages.
    """
    return conventions.window(
        convention,
        op,
        ndim,
        kernel_size,
        stride,
        padding,
        dilation=dilation,
        ceil_mode=ceil_mode,
        count_include_pad=count_include_pad,
        divisor_override=divisor_override,
    )


def _copy_mode(new: torch.nn.Module, old: torch.nn.Module) -> torch.nn.Module:
    new.train(old.training)
    return new


def _convention_repr(module: torch.nn.Module, base: str) -> str:
    convention = getattr(module, "convention", "torch")
    return base if convention == "torch" else f"{base}, convention={convention}"


# -- average -----------------------------------------------------------------------------------


#: torch.nn's attributes that make a module's geometry: assigning one rebuilds the Window.
_GEOMETRY = frozenset(
    ("kernel_size", "stride", "padding", "dilation", "ceil_mode", "count_include_pad", "divisor_override")
)


class _AvgMixin:
    op = "avg"
    #: Whether calls run torch.nn's input check (`_checks.input_of`) in the torch convention.
    _checks_input = True
    #: The NaN policy of the module's max pooling ("": the convention's).
    _nan_policy = ""
    _kernel: list[int]
    _stride: list[int]
    _padding: list[int]
    _padding_mode: str
    _dilation: list[int]
    _ceil: bool
    _cip: bool
    _divisor: int | None
    _channels_last: bool
    _convention: str

    def _set_window(self, window: Window) -> None:
        self.window = window
        self.convention = window.convention
        (
            self._kernel,
            self._stride,
            self._padding,
            self._padding_mode,
            self._dilation,
            self._ceil,
            self._cip,
            self._divisor,
            self._channels_last,
            self._convention,
        ) = window_args(window)
        # the op arguments as eager forwards pass them (TorchScript reads the fields above)
        self._avg_args = window_args(window)
        kernel, stride, padding, mode, dilation, ceil, _, _, cl, convention = self._avg_args
        self._max_args = (kernel, stride, padding, mode, dilation, ceil, cl, convention)
        # the eager call, built once (the custom op's arguments, its Window for the kernels),
        # and torch.nn's input check, which the ready call skips for a shape it has seen pass
        self._stale = False
        checked = self._checks_input and window.convention == "torch"
        self._check = _checks.input_check(self.op, window.ndim) if checked else None
        if self.op == "avg":
            self._ready = avg_ready(window)
        elif self.op == "max":
            self._ready = max_values_ready(window, self._nan_policy)
            self._ready_indices = max_ready(window, self._nan_policy)
        elif self.op == "lp":
            self._ready = lp_ready(getattr(self, "_norm", 0.0), *self._max_args)

    def _attribute_window(self) -> Window:
        """The Window of the module's torch.nn attributes as they are now."""
        raise NotImplementedError

    @torch_errors
    def _refresh(self) -> None:
        """Rebuild the Window after a geometry attribute was assigned a value no Window takes:
        the error is the call's, as torch.nn's modules raise theirs on the call."""
        self._set_window(self._attribute_window())

    def __setattr__(self, name: str, value: Any) -> None:
        super().__setattr__(name, value)
        # torch.nn's modules read their attributes on every call, so ``pool.kernel_size = 3``
        # takes effect; these keep the Window they build from them, rebuilt here
        if name in self._watched and "window" in self.__dict__:
            try:
                window = self._attribute_window()
            except (AvgPoolError, TypeError, ValueError):
                self.__dict__["_stale"] = True  # refused again, and raised, by the next call
                return
            self._set_window(window)

    _watched = _GEOMETRY


def _avg_class(ndim: int, base: type) -> type:
    class AvgPool(_AvgMixin, base):
        def __init__(
            self,
            kernel_size: Any,
            stride: Any = None,
            padding: Any = 0,
            ceil_mode: bool = False,
            count_include_pad: bool | None = None,
            divisor_override: int | None = None,
            *,
            convention: str = "torch",
        ) -> None:
            window = convention_window(
                "avg",
                ndim,
                convention,
                kernel_size,
                stride,
                padding,
                1,
                ceil_mode,
                count_include_pad,
                divisor_override,
            )
            if ndim == 1:
                super().__init__(kernel_size, window.stride, padding, ceil_mode, window.count_include_pad)
                if isinstance(padding, str):
                    self.padding = padding
            else:
                super().__init__(
                    kernel_size,
                    stride,
                    padding,
                    ceil_mode,
                    window.count_include_pad,
                    divisor_override,
                )
                if stride is None:
                    self.stride = kernel_size if convention not in _DEFAULT_STRIDE_IS_ONE else 1
            self._set_window(window)

        @classmethod
        def from_module(cls, module: torch.nn.Module):
            """The avgpool twin of a ``torch.nn.AvgPool{n}d``."""
            return _copy_mode(
                cls(
                    module.kernel_size,
                    module.stride,
                    module.padding,
                    module.ceil_mode,
                    module.count_include_pad,
                    getattr(module, "divisor_override", None),
                ),
                module,
            )

        def extra_repr(self) -> str:
            return _convention_repr(self, super().extra_repr())

        def _attribute_window(self) -> Window:
            return convention_window(
                "avg",
                ndim,
                self.convention,
                self.kernel_size,
                self.stride,
                self.padding,
                1,
                self.ceil_mode,
                self.count_include_pad,
                getattr(self, "divisor_override", None),
            )

        def forward(self, input: Tensor) -> Tensor:
            if not torch.jit.is_scripting():
                if self._stale:
                    self._refresh()
                return self._ready(input, self._check)
            return torch.ops.avgpool.avg_pool(
                input,
                self._kernel,
                self._stride,
                self._padding,
                self._padding_mode,
                self._dilation,
                self._ceil,
                self._cip,
                self._divisor,
                self._channels_last,
                self._convention,
            )

    AvgPool.__name__ = AvgPool.__qualname__ = f"AvgPool{ndim}d"
    AvgPool.__module__ = __name__
    AvgPool.__doc__ = (
        f"``torch.nn.AvgPool{ndim}d`` computed by avgpool, in any convention.\n\n"
        "``count_include_pad=None`` takes the convention's rule (counted: torch, flax)."
    )
    return AvgPool


AvgPool1d = _avg_class(1, torch.nn.AvgPool1d)
AvgPool2d = _avg_class(2, torch.nn.AvgPool2d)
AvgPool3d = _avg_class(3, torch.nn.AvgPool3d)


# -- max ---------------------------------------------------------------------------------------


class _MaxMixin(_AvgMixin):
    op = "max"


class _GlobalMixin:
    _watched = frozenset(("ndim",))
    _checks_input = False

    def _attribute_window(self) -> Window:
        return Window(None, ndim=int(self.ndim), convention=self.convention)


def _max_class(ndim: int, base: type) -> type:
    class MaxPool(_MaxMixin, base):
        __constants__ = (*base.__constants__, "return_indices")

        def __init__(
            self,
            kernel_size: Any,
            stride: Any = None,
            padding: Any = 0,
            dilation: Any = 1,
            return_indices: bool = False,
            ceil_mode: bool = False,
            *,
            convention: str = "torch",
        ) -> None:
            window = convention_window(
                "max", ndim, convention, kernel_size, stride, padding, dilation, ceil_mode, False
            )
            super().__init__(kernel_size, stride, padding, dilation, return_indices, ceil_mode)
            if stride is None:
                self.stride = kernel_size if convention not in _DEFAULT_STRIDE_IS_ONE else 1
            self._set_window(window)

        @classmethod
        def from_module(cls, module: torch.nn.Module):
            """The avgpool twin of a ``torch.nn.MaxPool{n}d``."""
            return _copy_mode(
                cls(
                    module.kernel_size,
                    module.stride,
                    module.padding,
                    module.dilation,
                    module.return_indices,
                    module.ceil_mode,
                ),
                module,
            )

        def extra_repr(self) -> str:
            return _convention_repr(self, super().extra_repr())

        def _attribute_window(self) -> Window:
            return convention_window(
                "max",
                ndim,
                self.convention,
                self.kernel_size,
                self.stride,
                self.padding,
                self.dilation,
                self.ceil_mode,
                False,
            )

        def forward(self, input: Tensor):
            if not torch.jit.is_scripting():
                if self._stale:
                    self._refresh()
                if not self.return_indices:  # inference skips the arg-max (values-only kernels)
                    return self._ready(input, self._check)
                y, indices = self._ready_indices(input, self._check)
            else:
                y, indices = torch.ops.avgpool.max_pool(
                    input,
                    self._kernel,
                    self._stride,
                    self._padding,
                    self._padding_mode,
                    self._dilation,
                    self._ceil,
                    self._channels_last,
                    self._convention,
                    "",
                )
            if self.return_indices:
                return y, indices
            return y

    MaxPool.__name__ = MaxPool.__qualname__ = f"MaxPool{ndim}d"
    MaxPool.__module__ = __name__
    MaxPool.__doc__ = f"``torch.nn.MaxPool{ndim}d`` computed by avgpool, in any convention."
    return MaxPool


MaxPool1d = _max_class(1, torch.nn.MaxPool1d)
MaxPool2d = _max_class(2, torch.nn.MaxPool2d)
MaxPool3d = _max_class(3, torch.nn.MaxPool3d)


# -- Lp ----------------------------------------------------------------------------------------


def _lp_class(ndim: int, base: type) -> type:
    class LPPool(_AvgMixin, base):
        op = "lp"
        _norm: float
        _watched = _GEOMETRY | {"norm_type"}

        def __init__(
            self,
            norm_type: float,
            kernel_size: Any,
            stride: Any = None,
            ceil_mode: bool = False,
            *,
            convention: str = "torch",
        ) -> None:
            """``convention="torch"``: ``F.lp_pool{n}d``; ``"onnx"``: ONNX LpPool (|x|**p, stride 1)."""
            window = convention_window("lp", ndim, convention, kernel_size, stride, 0, 1, ceil_mode, False)
            super().__init__(norm_type, kernel_size, stride, ceil_mode)
            self._norm = float(norm_type)
            self._set_window(window)

        @classmethod
        def from_module(cls, module: torch.nn.Module):
            """The avgpool twin of a ``torch.nn.LPPool{n}d``."""
            return _copy_mode(
                cls(module.norm_type, module.kernel_size, module.stride, module.ceil_mode), module
            )

        def extra_repr(self) -> str:
            return _convention_repr(self, super().extra_repr())

        def _attribute_window(self) -> Window:
            self._norm = float(self.norm_type)
            return convention_window(
                "lp", ndim, self.convention, self.kernel_size, self.stride, 0, 1, self.ceil_mode, False
            )

        def forward(self, input: Tensor) -> Tensor:
            if not torch.jit.is_scripting():
                if self._stale:
                    self._refresh()
                return self._ready(input, self._check)
            return torch.ops.avgpool.lp_pool(
                input,
                self._norm,
                self._kernel,
                self._stride,
                self._padding,
                self._padding_mode,
                self._dilation,
                self._ceil,
                self._channels_last,
                self._convention,
            )

    LPPool.__name__ = LPPool.__qualname__ = f"LPPool{ndim}d"
    LPPool.__module__ = __name__
    LPPool.__doc__ = f"``torch.nn.LPPool{ndim}d`` computed by avgpool (torch's or ONNX's Lp)."
    return LPPool


LPPool1d = _lp_class(1, torch.nn.LPPool1d)
LPPool2d = _lp_class(2, torch.nn.LPPool2d)
LPPool3d = _lp_class(3, torch.nn.LPPool3d)


# -- global ------------------------------------------------------------------------------------


class GlobalAvgPool(_GlobalMixin, _AvgMixin, torch.nn.Module):
    """Mean over every spatial axis: ONNX GlobalAveragePool, Keras GlobalAveragePooling*D.

    ``keepdims=False`` returns ``(N, C)`` (a classifier head's input); ``ndim`` is the
    spatial rank (2 for images).
    """

    __constants__ = ("ndim", "keepdims")

    def __init__(self, ndim: int = 2, keepdims: bool = True, *, convention: str = "torch") -> None:
        super().__init__()
        if convention not in CONVENTIONS:
            raise AvgPoolError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
        self.ndim, self.keepdims = int(ndim), bool(keepdims)
        self._set_window(Window(None, ndim=self.ndim, convention=convention))

    def extra_repr(self) -> str:
        return _convention_repr(self, f"ndim={self.ndim}, keepdims={self.keepdims}")

    def forward(self, input: Tensor) -> Tensor:
        if not torch.jit.is_scripting():
            if self._stale:
                self._refresh()
            y = self._ready(input)
        else:
            y = torch.ops.avgpool.avg_pool(
                input,
                self._kernel,
                self._stride,
                self._padding,
                self._padding_mode,
                self._dilation,
                self._ceil,
                self._cip,
                self._divisor,
                self._channels_last,
                self._convention,
            )
        if self.keepdims:
            return y
        return y.flatten(input.dim() - self.ndim - 1)


class GlobalMaxPool(_GlobalMixin, _MaxMixin, torch.nn.Module):
    """Maximum over every spatial axis (NaN wins): ONNX GlobalMaxPool."""

    __constants__ = ("ndim", "keepdims")
    _nan_policy = "propagate"

    def __init__(self, ndim: int = 2, keepdims: bool = True, *, convention: str = "torch") -> None:
        super().__init__()
        if convention not in CONVENTIONS:
            raise AvgPoolError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
        self.ndim, self.keepdims = int(ndim), bool(keepdims)
        self._set_window(Window(None, ndim=self.ndim, convention=convention))

    def extra_repr(self) -> str:
        return _convention_repr(self, f"ndim={self.ndim}, keepdims={self.keepdims}")

    def forward(self, input: Tensor) -> Tensor:
        if not torch.jit.is_scripting():
            if self._stale:
                self._refresh()
            y = self._ready(input)
        else:
            y, _ = torch.ops.avgpool.max_pool(
                input,
                self._kernel,
                self._stride,
                self._padding,
                self._padding_mode,
                self._dilation,
                self._ceil,
                self._channels_last,
                self._convention,
                "propagate",
            )
        if self.keepdims:
            return y
        return y.flatten(input.dim() - self.ndim - 1)


class AvgMaxPool(torch.nn.Module):
    """An average and a max pool of the same input, combined as timm's ``avgmax`` /
    ``catavgmax`` pooling combines them: ``0.5 * (avg + max)``, or both concatenated along
    ``dim`` (the channels). `swap_pooling` builds it for timm's avg-max pools."""

    def __init__(self, avg: torch.nn.Module, max: torch.nn.Module, concat: bool, dim: int = 1) -> None:
        super().__init__()
        self.avg, self.max = avg, max
        self.concat, self.dim = bool(concat), int(dim)

    def extra_repr(self) -> str:
        return f"concat={self.concat}, dim={self.dim}" if self.concat else "concat=False"

    def forward(self, input: Tensor) -> Tensor:
        a, m = self.avg(input), self.max(input)
        if self.concat:
            return torch.cat((a, m), self.dim)
        # timm's two spellings, 0.5 * (a + m) and 0.5 * a + 0.5 * m, round alike: halving is
        # exact (short of overflow and subnormals)
        return 0.5 * (a + m)
