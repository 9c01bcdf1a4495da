"""torch.nn twins of the study's models: the same network with every avgpool.nn pooling module
replaced by torch.nn layers that compute the same outputs.

Timing a model beside its twin separates the pooling *choice* from the pooling
*implementation*: a variant can be slow because of what it computes, or because of how the
library computes it. avgpool.nn's modules run through ``torch.ops.avgpool`` custom ops; the
twins use torch's built-in kernels:

- ``AvgPool2d``, ``MaxPool2d``, ``LPPool2d`` (torch convention), ``AdaptiveAvgPool2d``,
  ``AdaptiveMaxPool2d`` -> their torch.nn namesakes with the same arguments;
- ``BlurPool2d`` -> a reflect (replicate, zero) pad and a depthwise ``Conv2d`` holding the
  binomial filter, as antialiased-cnns computes it;
- ``GlobalAvgPool`` -> ``AdaptiveAvgPool2d(1)`` (and ``Flatten`` when ``keepdims=False``).
"""

from __future__ import annotations

import copy
from typing import Any

from avgpool._errors import AvgPoolError

__all__ = ["torch_twin"]


def _blur_twin(module: Any) -> Any:
    import numpy as np
    import torch
    from torch import nn

    from avgpool import reference as ref

    if module.ndim != 2 or module.channels is None:
        raise AvgPoolError("a torch.nn twin of BlurPool needs a 2-d BlurPool2d built with channels=")
    before, after = ref.blur_pads(module.filt_size, module.pad_off)
    pads = (before, after, before, after)
    pad = {"reflect": nn.ReflectionPad2d, "replicate": nn.ReplicationPad2d, "zero": nn.ZeroPad2d}[
        module.pad_type
    ](pads)
    c, f = module.channels, module.filt_size
    conv = nn.Conv2d(c, c, f, stride=module.stride, groups=c, bias=False)
    taps = ref.blur_filter(f)
    kernel = torch.from_numpy(np.outer(taps, taps).astype(np.float32))
    with torch.no_grad():
        conv.weight.copy_(kernel.expand(c, 1, f, f))
    conv.weight.requires_grad_(False)
    return nn.Sequential(pad, conv)


def _twin_of(module: Any) -> Any | None:
    """The torch.nn replacement of one avgpool.nn module, or None when it is not one."""
    if type(module).__module__ != "avgpool.nn":
        return None
    from torch import nn

    import avgpool.nn as apnn

    if isinstance(module, (apnn.AvgPool2d, apnn.MaxPool2d)) and module.convention != "torch":
        raise AvgPoolError(f"only torch-convention pooling has a torch.nn twin, got {module!r}")
    if isinstance(module, apnn.AvgPool2d):
        return nn.AvgPool2d(
            module.kernel_size,
            module.stride,
            module.padding,
            module.ceil_mode,
            module.count_include_pad,
            module.divisor_override,
        )
    if isinstance(module, apnn.MaxPool2d):
        return nn.MaxPool2d(
            module.kernel_size, module.stride, module.padding, module.dilation, False, module.ceil_mode
        )
    if isinstance(module, apnn.LPPool2d):
        if module.convention != "torch":
            raise AvgPoolError(f"only torch-convention Lp pooling has a torch.nn twin, got {module!r}")
        return nn.LPPool2d(module.norm_type, module.kernel_size, module.stride, module.ceil_mode)
    if isinstance(module, apnn.AdaptiveAvgPool2d):
        return nn.AdaptiveAvgPool2d(module.output_size)
    if isinstance(module, apnn.AdaptiveMaxPool2d):
        return nn.AdaptiveMaxPool2d(module.output_size, module.return_indices)
    if isinstance(module, apnn.BlurPool2d):
        return _blur_twin(module)
    if isinstance(module, apnn.GlobalAvgPool):
        if module.ndim != 2:
            raise AvgPoolError(f"only a 2-d GlobalAvgPool has a torch.nn twin here, got ndim={module.ndim}")
        return (
            nn.AdaptiveAvgPool2d(1)
            if module.keepdims
            else nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
        )
    raise AvgPoolError(f"no torch.nn twin for avgpool.nn's {type(module).__name__}")


def torch_twin(model: Any) -> tuple[Any, int]:
    """A copy of ``model`` with avgpool.nn pooling replaced by torch.nn layers, and how many
    modules were replaced (0: the copy is the same network).

    Raises
    ------
    AvgPoolError
        The model holds an avgpool.nn module that torch.nn cannot compute the same way (a
        convention other than torch's, a 1-d or 3-d blur or global pool): a partial twin
        would time a mix.

    Examples
    --------
    >>> import torch
    >>> from avgpool.study.variants import digits_cnn
    >>> net = digits_cnn("blur", "gap").eval()
    >>> twin, swapped = torch_twin(net)
    >>> x = torch.randn(3, 1, 8, 8)
    >>> swapped, torch.allclose(net(x), twin(x), atol=1e-6), type(twin.down1[1]).__name__
    (3, True, 'Conv2d')
    """
    twin = copy.deepcopy(model)
    swapped = 0

    def walk(parent: Any) -> None:
        nonlocal swapped
        for name, child in list(parent.named_children()):
            replacement = _twin_of(child)
            if replacement is None:
                walk(child)
            else:
                replacement.train(child.training)
                setattr(parent, name, replacement)
                swapped += 1

    replacement = _twin_of(twin)
    if replacement is not None:
        return replacement, 1
    walk(twin)
    return twin, swapped
