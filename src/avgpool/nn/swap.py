"""avgpool's twins of pooling modules: one module converted, or every one of a model."""

import sys
from collections.abc import Sequence

import torch

import avgpool.torch  # noqa: F401  (registers torch.ops.avgpool)
from avgpool._errors import AvgPoolError
from avgpool.nn.adaptive import (
    AdaptiveAvgPool1d,
    AdaptiveAvgPool2d,
    AdaptiveAvgPool3d,
    AdaptiveMaxPool1d,
    AdaptiveMaxPool2d,
    AdaptiveMaxPool3d,
)
from avgpool.nn.pooling import (
    AvgPool1d,
    AvgPool2d,
    AvgPool3d,
    LPPool1d,
    LPPool2d,
    LPPool3d,
    MaxPool1d,
    MaxPool2d,
    MaxPool3d,
)
from avgpool.torch import _foreign

__all__ = ["from_module", "swap_pooling"]


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


_TORCH_TYPES = tuple(t for t, _ in _TWINS)


def from_module(module: torch.nn.Module) -> torch.nn.Module:
    """avgpool's twin of one pooling module of torch.nn, timm or antialiased-cnns (same outputs).

    Which modules of timm and antialiased-cnns have twins, and which conventions reproduce
    them, is listed in docs/dropin.md; those libraries are recognised by their classes'
    module names, never imported.

    Raises
    ------
    TypeError
        ``module`` is no pooling module that avgpool has a twin for.
    AvgPoolError
        ``module`` is one, with arguments avgpool cannot reproduce exactly (timm's BlurPool2d
        with an even ``filt_size``, for one).
    """
    for torch_cls, ours in _TWINS:
        if type(module) is torch_cls:
            return ours.from_module(module)
    # _foreign builds twins from the avgpool.nn package it is handed, so it never imports nn
    twin = _foreign.twin(module, sys.modules["avgpool.nn"])
    if twin is not None:
        return twin
    names = ", ".join(t.__name__ for t, _ in _TWINS)
    raise TypeError(
        f"module must be one of torch.nn's {names}, or a pooling module of timm or "
        f"antialiased-cnns; got {type(module).__module__}.{type(module).__name__}"
    )


def swap_pooling(model: torch.nn.Module, include: Sequence[str] = _foreign.LIBRARIES) -> torch.nn.Module:
    """Replace, in place, every pooling module of ``model`` with avgpool's twin.

    Parameters
    ----------
    model : torch.nn.Module
        Any model: torchvision's and timm's included. Its weights are kept and its state dict
        keeps its keys (pooling holds no state; an antialiased-cnns BlurPool's ``filt`` buffer
        stays).
    include : sequence of str
        Whose pooling modules to swap: any of "torch" (torch.nn's), "timm" and
        "antialiased_cnns". Subclasses of torch.nn's modules from elsewhere (avgpool's own
        included) are left alone.

    Returns
    -------
    torch.nn.Module
        ``model`` (the same object, unless ``model`` itself is a pooling module).

    Raises
    ------
    AvgPoolError
        ``include`` names another library, or a pooling module has no exact twin (the message
        names it); ``model`` is then partly swapped.

    Examples
    --------
    >>> import torch
    >>> import avgpool.nn as apnn
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.MaxPool2d(2))
    >>> type(apnn.swap_pooling(net)[1]).__module__
    'avgpool.nn'
    """
    include = (include,) if isinstance(include, str) else tuple(include)
    unknown = sorted(set(include) - set(_foreign.LIBRARIES))
    if unknown:
        raise AvgPoolError(f"include must name libraries among {_foreign.LIBRARIES}, got {unknown}")
    return _swap(model, include)


def _swap(model: torch.nn.Module, include: tuple[str, ...]) -> torch.nn.Module:
    library = _foreign.library_of(model)
    if library in include:
        if library == "torch":
            if type(model) in _TORCH_TYPES:
                return from_module(model)
        else:
            twin = _foreign.twin(model, sys.modules["avgpool.nn"])
            if twin is not None:
                return twin
    for name, child in list(model.named_children()):
        swapped = _swap(child, include)
        if swapped is not child:
            setattr(model, name, swapped)
    return model
