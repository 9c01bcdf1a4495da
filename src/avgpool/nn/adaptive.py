"""torch.nn's adaptive pooling modules (average and max, 1-3d) computed by avgpool."""

import functools
from typing import Any

import torch
from torch import Tensor

import avgpool.torch  # noqa: F401  (registers torch.ops.avgpool)
from avgpool._errors import AvgPoolError, torch_errors
from avgpool.nn.pooling import _copy_mode
from avgpool.torch import _checks
from avgpool.torch._library import adaptive_avg_ready, adaptive_max_ready

__all__ = [
    "AdaptiveAvgPool1d",
    "AdaptiveAvgPool2d",
    "AdaptiveAvgPool3d",
    "AdaptiveMaxPool1d",
    "AdaptiveMaxPool2d",
    "AdaptiveMaxPool3d",
]


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
    ready_of = adaptive_avg_ready if kind == "avg" else adaptive_max_ready

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
            self.convention = convention
            self._set_sizes(_adaptive_sizes(output_size, ndim))

        @torch_errors
        def _refresh(self) -> None:
            self._set_sizes(_adaptive_sizes(self.output_size, ndim))

        def _set_sizes(self, sizes: list[int]) -> None:
            self._sizes = sizes
            # the eager call, built once (see avgpool.nn.pooling)
            self._ready = ready_of(tuple(sizes), False)
            # torch.nn's input check, which the ready call skips for a shape it has seen pass
            self._check = functools.partial(_checks.adaptive, kind, ndim, output_size=self.output_size)
            self._stale = False

        def __setattr__(self, name: str, value: Any) -> None:
            super().__setattr__(name, value)
            # torch.nn's modules read output_size on every call: a new one takes effect
            if name == "output_size" and "_sizes" in self.__dict__:
                try:
                    sizes = _adaptive_sizes(value, ndim)
                except (AvgPoolError, TypeError):
                    self.__dict__["_stale"] = True  # refused again, and raised, by the next call
                    return
                self._set_sizes(sizes)

        @classmethod
        def from_module(cls, module: torch.nn.Module):
            """The avgpool twin of a ``torch.nn.Adaptive*Pool{n}d``."""
            extra = (module.return_indices,) if kind == "max" else ()
            return _copy_mode(cls(module.output_size, *extra), module)

        if kind == "avg":

            def forward(self, input: Tensor) -> Tensor:
                if not torch.jit.is_scripting():
                    if self._stale:
                        self._refresh()
                    return self._ready(input, self._check)
                return torch.ops.avgpool.adaptive_avg_pool(input, self._sizes, False)

        else:

            def forward(self, input: Tensor):
                if not torch.jit.is_scripting():
                    if self._stale:
                        self._refresh()
                    y, indices = self._ready(input, self._check)
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
