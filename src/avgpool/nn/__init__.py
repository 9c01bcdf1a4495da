"""Drop-in pooling modules: torch.nn's, computed by avgpool, in any framework's convention.

Each class subclasses its torch.nn namesake (``isinstance(m, torch.nn.AvgPool2d)`` holds),
takes the same constructor arguments plus ``convention=`` ("torch", "onnx", "tensorflow",
"keras", "flax"), and calls one ``torch.ops.avgpool`` custom op in ``forward``: modules
train (double backward included), script, trace, compile, export and export to ONNX.
Every module carries its `avgpool.Window` as ``.window``. In eager mode on a CPU tensor the
op runs without the dispatcher (`avgpool.torch._library.call`: the same kernel and
gradients, ~50 µs a call less), from a ready call each module builds once and rebuilds when a
torch.nn attribute such as ``kernel_size`` is assigned; TorchScript reads the op's arguments as
separate fields, so each ``forward`` spells the call out for it.

>>> import torch
>>> import avgpool.nn as apnn
>>> pool = apnn.AvgPool2d(3, 2, padding="same", convention="tensorflow")
>>> pool
AvgPool2d(kernel_size=3, stride=2, padding=same, convention=tensorflow)
>>> pool(torch.ones(1, 1, 4, 4)).shape
torch.Size([1, 1, 2, 2])

One module per family: `pooling` (average, max, Lp, global: the windowed modules and
`convention_window`), `adaptive`, `blur`, and `swap` (`from_module`, `swap_pooling`).

`swap_pooling(model)` replaces every pooling module of a model (torch.nn's, timm's,
antialiased-cnns') with avgpool's (same outputs; state dicts load unchanged, pooling holds no
state; a BlurPool given its channels keeps antialiased-cnns' ``filt`` buffer, so that project's
checkpoints load strictly). See docs/dropin.md.
"""

from avgpool._errors import torch_errors
from avgpool.nn.adaptive import (
    AdaptiveAvgPool1d,
    AdaptiveAvgPool2d,
    AdaptiveAvgPool3d,
    AdaptiveMaxPool1d,
    AdaptiveMaxPool2d,
    AdaptiveMaxPool3d,
)
from avgpool.nn.blur import BlurPool1d, BlurPool2d, BlurPool3d
from avgpool.nn.pooling import (
    AvgMaxPool,
    AvgPool1d,
    AvgPool2d,
    AvgPool3d,
    GlobalAvgPool,
    GlobalMaxPool,
    LPPool1d,
    LPPool2d,
    LPPool3d,
    MaxPool1d,
    MaxPool2d,
    MaxPool3d,
)
from avgpool.nn.pooling import convention_window as convention_window
from avgpool.nn.swap import from_module, swap_pooling

__all__ = [
    "AdaptiveAvgPool1d",
    "AdaptiveAvgPool2d",
    "AdaptiveAvgPool3d",
    "AdaptiveMaxPool1d",
    "AdaptiveMaxPool2d",
    "AdaptiveMaxPool3d",
    "AvgMaxPool",
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


def _raise_torch_errors(classes: list[type]) -> None:
    """Construction errors as `TorchPoolError`s: RuntimeErrors, like torch.nn's (forward errors
    already are: they come from the ops). forward itself stays unwrapped for TorchScript."""
    done: set[type] = set()
    for cls in classes:
        for owner in cls.__mro__:
            if not owner.__module__.startswith(__name__) or owner in done:
                continue
            done.add(owner)
            if "__init__" in vars(owner):
                owner.__init__ = torch_errors(vars(owner)["__init__"])


# Shown (and pickled, and scripted) as avgpool.nn's, the one public place to import them from.
for _name in __all__:
    globals()[_name].__module__ = __name__
del _name
_raise_torch_errors([c for c in map(globals().get, __all__) if isinstance(c, type)])
