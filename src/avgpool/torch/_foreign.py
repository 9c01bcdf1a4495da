"""avgpool twins of the pooling modules of timm and antialiased-cnns, for `avgpool.nn.swap_pooling`.

A module is recognised by where its class is defined (``type(module).__module__``) and its name,
so neither library is ever imported here: a model that does not use them never loads them.
Each twin computes what the original computes:

- timm ``MaxPool2dSame`` pads with -inf to TensorFlow's 'SAME' size (the odd cell at the end)
  and then runs PyTorch's max, where NaN wins: ONNX's SAME_UPPER max pool, dilation included,
  so the twin is ``MaxPool2d(..., padding="same", convention="onnx")`` (TensorFlow's own max
  would skip NaN and takes no dilation).
- timm ``AvgPool2dSame`` pads with zeros to the 'SAME' size and then averages over whole
  windows, counting the zeros whatever its ``count_include_pad`` says. That is Flax's
  ``avg_pool(padding="SAME")``, not TensorFlow's (which averages real cells only), so the twin
  is ``AvgPool2d(..., padding="same", convention="flax")``.
- timm ``BlurPool2d`` pads ``(stride - 1 + filt_size - 1) // 2`` on every side; for an odd
  ``filt_size`` that is antialiased-cnns' padding plus a ``pad_off``, so the twin is a
  `avgpool.nn.BlurPool2d`. An even ``filt_size`` pads symmetrically where antialiased-cnns
  pads one more cell after, and has no twin.
- timm's adaptive pools (``SelectAdaptivePool2d``'s ``pool``): the ``Fast*`` means and maxima
  over H, W become `GlobalAvgPool` / `GlobalMaxPool`; ``avgmax`` / ``catavgmax`` become an
  `AvgMaxPool` holding avgpool's average and max pools. ``SelectAdaptivePool2d`` itself stays:
  only its ``pool`` changes.
- antialiased-cnns ``BlurPool`` / ``BlurPool1D`` become ``BlurPool2d`` / ``BlurPool1d`` with the
  same ``filt`` buffer (the checkpoint loads strictly).
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import torch

from avgpool._errors import AvgPoolError

__all__ = ["LIBRARIES", "library_of", "twin"]

#: The libraries whose pooling modules `twin` knows, as `avgpool.nn.swap_pooling` names them.
LIBRARIES = ("torch", "timm", "antialiased_cnns")

# antialiased-cnns keeps no pad_type: its pad layer's class says which padding it is
_ANTIALIASED_PADS = {
    "ReflectionPad1d": "reflect",
    "ReflectionPad2d": "reflect",
    "ReplicationPad1d": "replicate",
    "ReplicationPad2d": "replicate",
    "ZeroPad1d": "zero",
    "ZeroPad2d": "zero",
}
# F.pad's modes, as timm's BlurPool2d passes them, in antialiased-cnns' words
_TIMM_PADS = {"reflect": "reflect", "replicate": "replicate", "constant": "zero"}


def library_of(module: torch.nn.Module) -> str | None:
    """Which library defines the class of ``module``: "torch", "timm", "antialiased_cnns" or None."""
    where = type(module).__module__
    for library in LIBRARIES:
        if where == library or where.startswith(library + "."):
            return library
    return None


def _refuse(module: torch.nn.Module, why: str) -> AvgPoolError:
    return AvgPoolError(f"{type(module).__module__}.{type(module).__name__} has no exact avgpool twin: {why}")


def twin(module: torch.nn.Module, nn: ModuleType) -> torch.nn.Module | None:
    """avgpool's twin of one timm or antialiased-cnns pooling module, or None for any other.

    ``nn`` is `avgpool.nn` (passed in, so that this module does not import it). A pooling
    module whose arguments avgpool cannot reproduce exactly raises AvgPoolError.
    """
    library, name = library_of(module), type(module).__name__
    if library == "antialiased_cnns" and name in ("BlurPool", "BlurPool1D"):
        ours = nn.BlurPool2d if name == "BlurPool" else nn.BlurPool1d
        return from_antialiased(ours, module)
    if library != "timm":
        return None
    build = _TIMM.get(name)
    return None if build is None else build(module, nn).train(module.training)


def from_antialiased(cls: type, module: torch.nn.Module) -> torch.nn.Module:
    """``cls`` (BlurPool1d or BlurPool2d) built from an antialiased-cnns BlurPool, its buffer loaded."""
    theirs = {"BlurPool1d": "BlurPool1D", "BlurPool2d": "BlurPool"}.get(cls.__name__)
    if library_of(module) != "antialiased_cnns" or type(module).__name__ != theirs:
        raise TypeError(
            f"module must be an antialiased_cnns.{theirs} for {cls.__name__}, "
            f"got {type(module).__module__}.{type(module).__name__}"
        )
    pad_type = _ANTIALIASED_PADS.get(type(module.pad).__name__)
    if pad_type is None:
        raise _refuse(module, f"its pad layer {type(module.pad).__name__} is not reflect, replicate or zero")
    ours = cls(int(module.channels), pad_type, int(module.filt_size), int(module.stride), int(module.pad_off))
    ours.load_state_dict(module.state_dict(), strict=True)
    return ours.to(module.filt.device, module.filt.dtype).train(module.training)


def _same_pool(module: torch.nn.Module, nn: ModuleType) -> torch.nn.Module:
    if module.ceil_mode:
        raise _refuse(module, "ceil_mode=True on 'SAME' padding is no framework's convention")
    if type(module).__name__ == "AvgPool2dSame":
        return nn.AvgPool2d(module.kernel_size, module.stride, "same", convention="flax")
    # timm hands its ceil_mode to torch's return_indices slot; its forward returns values only
    return nn.MaxPool2d(module.kernel_size, module.stride, "same", module.dilation, convention="onnx")


def _timm_blur(module: torch.nn.Module, nn: ModuleType) -> torch.nn.Module:
    filt_size, stride = int(module.filt_size), int(module.stride)
    pad_type = _TIMM_PADS.get(module.pad_mode)
    if pad_type is None:
        raise _refuse(module, f"pad_mode must be one of {sorted(_TIMM_PADS)}, got {module.pad_mode!r}")
    pads = {int(p) for p in module.padding}
    pad_off = min(pads) - (filt_size - 1) // 2
    if len(pads) != 1 or filt_size % 2 == 0 or pad_off < 0:
        raise _refuse(
            module,
            f"filt_size={filt_size} with padding {list(module.padding)} is not a binomial blur's "
            "(f-1)//2 + pad_off on both sides (timm pads an even filt_size symmetrically)",
        )
    # no channels argument: timm keeps its filter out of the state dict, so must the twin
    ours = nn.BlurPool2d(None, pad_type, filt_size, stride, pad_off)
    ours.channels = module.channels  # still checked in forward
    return ours


def _fast_pool(module: torch.nn.Module, nn: ModuleType) -> torch.nn.Module:
    dims = getattr(module, "dim", getattr(module, "dim_reduce", None))
    if tuple(dims) != (2, 3):
        raise _refuse(module, f"it pools axes {tuple(dims)}; avgpool's global pools take NCHW input")
    keepdims = not module.flatten
    name = type(module).__name__
    if name == "FastAdaptiveAvgPool":
        return nn.GlobalAvgPool(2, keepdims)
    if name == "FastAdaptiveMaxPool":
        return nn.GlobalMaxPool(2, keepdims)
    dim = getattr(module, "dim_cat", 1)
    return nn.AvgMaxPool(nn.GlobalAvgPool(2, keepdims), nn.GlobalMaxPool(2, keepdims), "Cat" in name, dim)


def _adaptive_avgmax(module: torch.nn.Module, nn: ModuleType) -> torch.nn.Module:
    size = module.output_size
    concat = type(module).__name__ == "AdaptiveCatAvgMaxPool2d"
    return nn.AvgMaxPool(nn.AdaptiveAvgPool2d(size), nn.AdaptiveMaxPool2d(size), concat)


_TIMM: dict[str, Any] = {
    "AvgPool2dSame": _same_pool,
    "MaxPool2dSame": _same_pool,
    "BlurPool2d": _timm_blur,
    "FastAdaptiveAvgPool": _fast_pool,
    "FastAdaptiveMaxPool": _fast_pool,
    "FastAdaptiveAvgMaxPool": _fast_pool,
    "FastAdaptiveCatAvgMaxPool": _fast_pool,
    "AdaptiveAvgMaxPool2d": _adaptive_avgmax,
    "AdaptiveCatAvgMaxPool2d": _adaptive_avgmax,
}
