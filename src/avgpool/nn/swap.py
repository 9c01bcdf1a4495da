"""avgpool's twins of torch.nn's pooling modules: one module converted, or every one of a model."""

import torch

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
