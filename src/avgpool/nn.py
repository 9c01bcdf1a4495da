"""Drop-in pooling modules: torch.nn's, computed by avgpool, in any framework's convention.

Each class subclasses its torch.nn namesake (``isinstance(m, torch.nn.AvgPool2d)`` holds),
takes the same constructor arguments plus ``convention=`` ("torch", "onnx", "tensorflow",
"keras", "flax"), and calls one ``torch.ops.avgpool`` custom op in ``forward``: modules
train (double backward included), script, trace, compile, export and export to ONNX.
Every module carries its `avgpool.Window` as ``.window``. In eager mode on a CPU tensor the
op runs without the dispatcher (`avgpool.torch._library.call`: the same kernel and
gradients, ~50 µs a call less); TorchScript reads the op's arguments as separate fields,
so each ``forward`` spells the call out for it.

>>> import torch
>>> import avgpool.nn as apnn
>>> pool = apnn.AvgPool2d(3, 2, padding="same", convention="tensorflow")
>>> pool
AvgPool2d(kernel_size=3, stride=2, padding=same, convention=tensorflow)
>>> pool(torch.ones(1, 1, 4, 4)).shape
torch.Size([1, 1, 2, 2])

`swap_pooling(model)` replaces every torch.nn pooling module of a model with avgpool's
(identical outputs; state dicts load unchanged, pooling holds no state; a BlurPool given its
channels keeps antialiased-cnns' ``filt`` buffer, so that project's checkpoints load strictly).
"""

import math
from typing import Any

import torch
from torch import Tensor

import avgpool.torch  # noqa: F401  (registers torch.ops.avgpool)
from avgpool._errors import AvgPoolError, TorchPoolError, torch_errors
from avgpool.conventions import CONVENTIONS, from_torch
from avgpool.torch import _checks
from avgpool.torch._library import call, window_args
from avgpool.window import Window

__all__ = [
    "AdaptiveAvgPool1d",
    "AdaptiveAvgPool2d",
    "AdaptiveAvgPool3d",
    "AdaptiveMaxPool1d",
    "AdaptiveMaxPool2d",
    "AdaptiveMaxPool3d",
    "AvgPool1d",
    "AvgPool2d",
    "AvgPool3d",
    "BlurPool1d",
    "BlurPool2d",
    "BlurPool3d",
    "GlobalAvgPool",
    "GlobalMaxPool",
    "LPPool1d",
    "LPPool2d",
    "LPPool3d",
    "MaxPool1d",
    "MaxPool2d",
    "MaxPool3d",
    "from_module",
    "swap_pooling",
]

#: Each convention's default stride (None: the kernel size) and count_include_pad.
_DEFAULT_STRIDE_IS_ONE = ("onnx", "flax")
_COUNTS_PADDING = {"torch": True, "onnx": False, "tensorflow": False, "keras": False, "flax": True}


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

    "torch" applies `Window.from_torch` (PyTorch's checks and refusals); the others take any
    padding `Window` takes ("same", "valid", pairs, ...) with their own defaults: stride 1 for
    onnx and flax, the kernel size otherwise; padded cells counted by torch and flax only.
    TensorFlow and Keras have no ceil mode and never count padded cells.
    """
    if convention not in CONVENTIONS:
        raise AvgPoolError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
    if convention == "torch":
        cip = True if count_include_pad is None else count_include_pad
        return from_torch(
            kernel_size, stride, padding, dilation, ceil_mode, cip, divisor_override, op=op, ndim=ndim
        )
    if divisor_override is not None:
        raise AvgPoolError(f"divisor_override is PyTorch's; the {convention} convention has none")
    if convention in ("tensorflow", "keras", "flax") and ceil_mode:
        raise AvgPoolError(f"ceil_mode=True is not part of the {convention} convention")
    default_cip = _COUNTS_PADDING[convention]
    if convention in ("tensorflow", "keras") and count_include_pad:
        raise AvgPoolError(
            f"count_include_pad=True is not the {convention} convention (it averages real cells)"
        )
    if stride is None and convention in _DEFAULT_STRIDE_IS_ONE:
        stride = 1
    return Window(
        kernel_size,
        stride,
        padding,
        dilation=dilation,
        ceil_mode=ceil_mode,
        count_include_pad=default_cip if count_include_pad is None else count_include_pad,
        ndim=ndim,
        convention=convention,
    )


def _convention_repr(module: torch.nn.Module, base: str) -> str:
    convention = getattr(module, "convention", "torch")
    return base if convention == "torch" else f"{base}, convention={convention}"


# -- average -----------------------------------------------------------------------------------


class _AvgMixin:
    op = "avg"
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

        def forward(self, input: Tensor) -> Tensor:
            if not torch.jit.is_scripting():
                if self._convention == "torch":
                    _checks.input_of("avg", ndim, input)
                return call.avg_pool(input, *self._avg_args)
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

        def forward(self, input: Tensor):
            if not torch.jit.is_scripting():
                if self._convention == "torch":
                    _checks.input_of("max", ndim, input)
                if not self.return_indices:  # inference skips the arg-max (values-only kernels)
                    return call.max_pool_values(input, *self._max_args, "")
                y, indices = call.max_pool(input, *self._max_args, "")
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
            if convention not in ("torch", "onnx"):
                raise AvgPoolError(f"convention must be 'torch' or 'onnx' for Lp pooling, got {convention!r}")
            window = convention_window("lp", ndim, convention, kernel_size, stride, 0, 1, ceil_mode, False)
            super().__init__(norm_type, kernel_size, stride, ceil_mode)
            self._set_window(window)
            self._norm = float(norm_type)

        @classmethod
        def from_module(cls, module: torch.nn.Module):
            """The avgpool twin of a ``torch.nn.LPPool{n}d``."""
            return _copy_mode(
                cls(module.norm_type, module.kernel_size, module.stride, module.ceil_mode), module
            )

        def extra_repr(self) -> str:
            return _convention_repr(self, super().extra_repr())

        def forward(self, input: Tensor) -> Tensor:
            if not torch.jit.is_scripting():
                if self._convention == "torch":
                    _checks.input_of("lp", ndim, input)
                return call.lp_pool(input, self._norm, *self._max_args)
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


# -- adaptive ----------------------------------------------------------------------------------


def _adaptive_sizes(output_size: Any, ndim: int) -> list[int]:
    sizes = output_size if isinstance(output_size, (tuple, list)) else (output_size,) * ndim
    if len(sizes) == 1 and ndim > 1:
        sizes = tuple(sizes) * ndim
    if len(sizes) != ndim:
        raise AvgPoolError(f"output_size must be an int or a tuple of {ndim}, got {output_size!r}")
    out = []
    for s in sizes:
        if s is None:
            out.append(-1)
        elif isinstance(s, bool) or not isinstance(s, int) or s < 1:
            raise AvgPoolError(f"output_size must be >= 1 (or None) on every axis, got {output_size!r}")
        else:
            out.append(int(s))
    return out


def _adaptive_class(ndim: int, base: type, kind: str) -> type:
    class Adaptive(base):
        op = f"adaptive_{kind}"
        _sizes: list[int]

        def __init__(
            self, output_size: Any, return_indices: bool = False, *, convention: str = "torch"
        ) -> None:
            if convention != "torch":
                raise AvgPoolError(
                    f"adaptive pooling is PyTorch's alone: convention must be 'torch', got {convention!r}"
                )
            if kind == "max":
                super().__init__(output_size, return_indices)
            elif return_indices:
                raise AvgPoolError("return_indices applies to adaptive max pooling only")
            else:
                super().__init__(output_size)
            self._sizes = _adaptive_sizes(output_size, ndim)
            self.convention = convention

        @classmethod
        def from_module(cls, module: torch.nn.Module):
            """The avgpool twin of a ``torch.nn.Adaptive*Pool{n}d``."""
            extra = (module.return_indices,) if kind == "max" else ()
            return _copy_mode(cls(module.output_size, *extra), module)

        if kind == "avg":

            def forward(self, input: Tensor) -> Tensor:
                if not torch.jit.is_scripting():
                    _checks.adaptive("avg", ndim, input, self.output_size)
                    return call.adaptive_avg_pool(input, self._sizes, False)
                return torch.ops.avgpool.adaptive_avg_pool(input, self._sizes, False)

        else:

            def forward(self, input: Tensor):
                if not torch.jit.is_scripting():
                    _checks.adaptive("max", ndim, input, self.output_size)
                    y, indices = call.adaptive_max_pool(input, self._sizes, False)
                else:
                    y, indices = torch.ops.avgpool.adaptive_max_pool(input, self._sizes, False)
                if self.return_indices:
                    return y, indices
                return y

    name = f"Adaptive{kind.capitalize()}Pool{ndim}d"
    Adaptive.__name__ = Adaptive.__qualname__ = name
    Adaptive.__module__ = __name__
    Adaptive.__doc__ = f"``torch.nn.{name}`` computed by avgpool."
    if kind == "max":
        Adaptive.__constants__ = (*base.__constants__, "return_indices")
    return Adaptive


AdaptiveAvgPool1d = _adaptive_class(1, torch.nn.AdaptiveAvgPool1d, "avg")
AdaptiveAvgPool2d = _adaptive_class(2, torch.nn.AdaptiveAvgPool2d, "avg")
AdaptiveAvgPool3d = _adaptive_class(3, torch.nn.AdaptiveAvgPool3d, "avg")
AdaptiveMaxPool1d = _adaptive_class(1, torch.nn.AdaptiveMaxPool1d, "max")
AdaptiveMaxPool2d = _adaptive_class(2, torch.nn.AdaptiveMaxPool2d, "max")
AdaptiveMaxPool3d = _adaptive_class(3, torch.nn.AdaptiveMaxPool3d, "max")


# -- global ------------------------------------------------------------------------------------


class GlobalAvgPool(_AvgMixin, torch.nn.Module):
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
            y = call.avg_pool(input, *self._avg_args)
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


class GlobalMaxPool(_MaxMixin, torch.nn.Module):
    """Maximum over every spatial axis (NaN wins): ONNX GlobalMaxPool."""

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
            y = call.max_pool_values(input, *self._max_args, "propagate")
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


# -- blur --------------------------------------------------------------------------------------


def _binomial_filter(filt_size: int, ndim: int, channels: int) -> Tensor:
    """antialiased-cnns' ``filt`` buffer: the normalised binomial filter, one copy per channel,
    shaped (channels, 1, *[filt_size] * ndim)."""
    row = torch.tensor([float(math.comb(filt_size - 1, k)) for k in range(filt_size)])
    filt = row if ndim == 1 else row[:, None] * row[None, :]
    filt = filt / filt.sum()
    return filt.expand(channels, 1, *filt.shape).clone()


def _blur_class(ndim: int) -> type:
    class BlurPool(torch.nn.Module):
        op = "blur"
        __constants__ = ("pad_type", "filt_size", "stride", "pad_off", "ndim")
        channels: int | None

        def __init__(
            self,
            channels: int | None = None,
            pad_type: str = "reflect",
            filt_size: int = 4,
            stride: int = 2,
            pad_off: int = 0,
        ) -> None:
            """antialiased-cnns' ``BlurPool`` arguments, in its order; ``channels`` is only checked."""
            super().__init__()
            from avgpool._args import BLUR_PAD_TYPES as _BLUR_PAD_TYPES
            from avgpool._args import blur_args as _blur_args

            _blur_args(filt_size, stride, pad_type, pad_off, ())
            self.channels = channels
            self.pad_type = _BLUR_PAD_TYPES[pad_type]
            self.filt_size, self.stride, self.pad_off = int(filt_size), int(stride), int(pad_off)
            self.ndim = ndim
            if channels is not None and ndim <= 2:
                # antialiased-cnns keeps its filter as a buffer: the same buffer here, so its
                # checkpoints load with strict=True (the kernels compute the binomial blur; a
                # loaded filter must be that one, see _load_from_state_dict)
                self.register_buffer("filt", _binomial_filter(self.filt_size, ndim, int(channels)))

        def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
            super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
            loaded = state_dict.get(prefix + "filt")
            if loaded is not None and loaded.shape == self.filt.shape:
                want = _binomial_filter(self.filt_size, self.ndim, loaded.shape[0]).to(loaded)
                if not torch.allclose(loaded, want, rtol=1e-5, atol=1e-7):
                    raise ValueError(
                        f"{prefix}filt is not the {self.filt_size}-tap binomial filter that BlurPool "
                        "computes; avgpool's BlurPool cannot run another filter"
                    )

        def extra_repr(self) -> str:
            return (
                f"channels={self.channels}, pad_type={self.pad_type}, filt_size={self.filt_size}, "
                f"stride={self.stride}, pad_off={self.pad_off}"
            )

        def forward(self, input: Tensor) -> Tensor:
            channels = self.channels
            if channels is not None and input.shape[input.dim() - self.ndim - 1] != channels:
                raise TorchPoolError(f"expected {channels} channels, got input of shape {input.shape}")
            if not torch.jit.is_scripting():
                return call.blur_pool(
                    input, self.filt_size, self.stride, self.pad_type, self.pad_off, self.ndim, False
                )
            return torch.ops.avgpool.blur_pool(
                input, self.filt_size, self.stride, self.pad_type, self.pad_off, self.ndim, False
            )

    BlurPool.__name__ = BlurPool.__qualname__ = f"BlurPool{ndim}d"
    BlurPool.__module__ = __name__
    BlurPool.__doc__ = (
        f"{ndim}-d anti-aliased downsampling (antialiased-cnns' BlurPool): a binomial blur, "
        "then subsampling; see `avgpool.blur_pool`."
    )
    return BlurPool


BlurPool1d = _blur_class(1)
BlurPool2d = _blur_class(2)
BlurPool3d = _blur_class(3)


# -- conversion --------------------------------------------------------------------------------


def _copy_mode(new: torch.nn.Module, old: torch.nn.Module) -> torch.nn.Module:
    new.train(old.training)
    return new


_TWINS: list[tuple[type, type]] = [
    (torch.nn.AvgPool1d, AvgPool1d),
    (torch.nn.AvgPool2d, AvgPool2d),
    (torch.nn.AvgPool3d, AvgPool3d),
    (torch.nn.MaxPool1d, MaxPool1d),
    (torch.nn.MaxPool2d, MaxPool2d),
    (torch.nn.MaxPool3d, MaxPool3d),
    (torch.nn.LPPool1d, LPPool1d),
    (torch.nn.LPPool2d, LPPool2d),
    (torch.nn.LPPool3d, LPPool3d),
    (torch.nn.AdaptiveAvgPool1d, AdaptiveAvgPool1d),
    (torch.nn.AdaptiveAvgPool2d, AdaptiveAvgPool2d),
    (torch.nn.AdaptiveAvgPool3d, AdaptiveAvgPool3d),
    (torch.nn.AdaptiveMaxPool1d, AdaptiveMaxPool1d),
    (torch.nn.AdaptiveMaxPool2d, AdaptiveMaxPool2d),
    (torch.nn.AdaptiveMaxPool3d, AdaptiveMaxPool3d),
]


def from_module(module: torch.nn.Module) -> torch.nn.Module:
    """avgpool's twin of one torch.nn pooling module (same arguments, same outputs).

    Raises
    ------
    TypeError
        ``module`` is not one of torch.nn's pooling modules that avgpool has a twin for.
    """
    for torch_cls, ours in _TWINS:
        if type(module) is torch_cls:
            return ours.from_module(module)
    names = ", ".join(t.__name__ for t, _ in _TWINS)
    raise TypeError(f"module must be one of torch.nn's {names}; got {type(module).__name__}")


def swap_pooling(model: torch.nn.Module) -> torch.nn.Module:
    """Replace, in place, every torch.nn pooling module of ``model`` with avgpool's twin.

    Outputs are identical; subclasses of torch's modules (avgpool's own included) are left
    alone. Returns ``model`` (the same object, unless ``model`` itself is a pooling module).

    >>> import torch
    >>> import avgpool.nn as apnn
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.MaxPool2d(2))
    >>> type(apnn.swap_pooling(net)[1]).__module__
    'avgpool.nn'
    """
    torch_types = tuple(t for t, _ in _TWINS)
    if type(model) in torch_types:
        return from_module(model)
    for name, child in list(model.named_children()):
        if type(child) in torch_types:
            setattr(model, name, from_module(child))
        else:
            swap_pooling(child)
    return model


def _raise_torch_errors(classes: list[type]) -> None:
    """Construction errors as `TorchPoolError`s: RuntimeErrors, like torch.nn's (forward errors
    already are: they come from the ops). forward itself stays unwrapped for TorchScript."""
    done: set[type] = set()
    for cls in classes:
        for owner in cls.__mro__:
            if owner.__module__ != __name__ or owner in done:
                continue
            done.add(owner)
            if "__init__" in vars(owner):
                owner.__init__ = torch_errors(vars(owner)["__init__"])


_raise_torch_errors([c for c in map(globals().get, __all__) if isinstance(c, type)])
