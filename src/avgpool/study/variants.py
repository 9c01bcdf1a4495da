"""The study's models: one small CNN for 8x8 digits, five ways to downsample and to pool the head.

Every built-in variant is the same network, ``conv3x3 1->16, ReLU, down1, conv3x3 16->32, ReLU,
down2, head``, with one thing changed: the two downsampling layers (8x8 -> 4x4 -> 2x2) or the
head. Pooling layers are avgpool.nn modules; the strided convolution is torch.nn.Conv2d.

- ``avg``: avgpool.nn.AvgPool2d(2) twice, flatten head (Linear(128, 10));
- ``max``: avgpool.nn.MaxPool2d(2) twice, flatten head;
- ``blur``: avgpool.nn.BlurPool2d(C) twice (antialiased-cnns' 4-tap binomial blur, stride 2,
  reflect padding), flatten head;
- ``strided``: torch.nn.Conv2d(C, C, 3, stride=2, padding=1) + ReLU twice (learned), flatten head;
- ``avg-gap``: avgpool.nn.AvgPool2d(2) twice, global-average head (avgpool.nn.GlobalAvgPool,
  then Linear(32, 10)).

``avg`` against ``avg-gap`` is the head comparison (global average vs flatten), everything else
equal. A `Variant` of your own takes any ``build`` callable and names the modules to watch.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from avgpool._errors import AvgPoolError

__all__ = ["DOWNSAMPLING", "HEADS", "VARIANTS", "Variant", "digits_cnn"]

#: Downsampling layers `digits_cnn` builds, and what each is.
DOWNSAMPLING = {
    "avg": "average 2x2 (avgpool.nn.AvgPool2d(2))",
    "max": "max 2x2 (avgpool.nn.MaxPool2d(2))",
    "blur": "blur pool (avgpool.nn.BlurPool2d(C): 4-tap binomial blur, stride 2, reflect padding)",
    "strided": "strided convolution (torch.nn.Conv2d(C, C, 3, stride=2, padding=1) + ReLU)",
}
#: Classifier heads `digits_cnn` builds.
HEADS = {
    "flatten": "flatten -> Linear",
    "gap": "global average (avgpool.nn.GlobalAvgPool) -> Linear",
}


@dataclass(frozen=True)
class Variant:
    """One model of the study: its name, what it is, how to build it and where to watch it.

    Parameters
    ----------
    name : str
        Short name (tables, plots, ``--variants``).
    downsampling, head : str
        What the model's downsampling layers and head are, in words (the report's columns).
    build : callable
        ``build() -> torch.nn.Module``, called right after ``torch.manual_seed(seed)``: every
        random initial weight comes from that seed.
    probes : tuple of str
        Module names (``model.named_modules()``) whose outputs the activation statistics
        watch: one per downsampling layer, in order.

    Examples
    --------
    >>> v = VARIANTS["avg-gap"]
    >>> v.downsampling.split(" (")[0], v.head.split(" ->")[0], v.probes
    ('average 2x2', 'global average', ('down1', 'down2'))
    """

    name: str
    downsampling: str
    head: str
    build: Callable[[], Any] = field(repr=False, compare=False)
    probes: tuple[str, ...] = ("down1", "down2")

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "downsampling": self.downsampling,
            "head": self.head,
            "probes": list(self.probes),
        }


def _downsample(kind: str, channels: int) -> Any:
    from torch import nn

    import avgpool.nn as apnn

    if kind == "avg":
        return apnn.AvgPool2d(2)
    if kind == "max":
        return apnn.MaxPool2d(2)
    if kind == "blur":
        return apnn.BlurPool2d(channels, pad_type="reflect", filt_size=4, stride=2)
    # a learned downsampling: the conv is followed by ReLU like the convs before the pools, so
    # its output (the probe) is a rectified activation too
    return nn.Sequential(nn.Conv2d(channels, channels, 3, stride=2, padding=1), nn.ReLU())


def digits_cnn(
    downsampling: str = "avg",
    head: str = "flatten",
    *,
    in_channels: int = 1,
    classes: int = 10,
    image_size: int = 8,
    widths: tuple[int, int] = (16, 32),
) -> Any:
    """The study's CNN: ``conv1, relu1, down1, conv2, relu2, down2, head`` (a named Sequential).

    Parameters
    ----------
    downsampling : {"avg", "max", "blur", "strided"}
        Both downsampling layers (each halves height and width).
    head : {"flatten", "gap"}
        Flatten the last ``widths[1] x image_size/4 x image_size/4`` map into a Linear layer, or
        average it globally first (``widths[1]`` features).
    in_channels, classes, image_size, widths
        Input channels, classes, the square input's side (a multiple of 4, at least 8) and the
        two convolutions' output channels.

    Examples
    --------
    >>> import torch
    >>> net = digits_cnn("blur", "gap")
    >>> net(torch.zeros(2, 1, 8, 8)).shape, type(net.down1).__name__, type(net.head[0]).__name__
    (torch.Size([2, 10]), 'BlurPool2d', 'GlobalAvgPool')
    """
    from torch import nn

    import avgpool.nn as apnn

    if downsampling not in DOWNSAMPLING:
        raise AvgPoolError(f"downsampling must be one of {sorted(DOWNSAMPLING)}, got {downsampling!r}")
    if head not in HEADS:
        raise AvgPoolError(f"head must be one of {sorted(HEADS)}, got {head!r}")
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 8 or image_size % 4:
        raise AvgPoolError(f"image_size must be a multiple of 4 and at least 8, got {image_size!r}")
    c1, c2 = widths
    side = image_size // 4
    if head == "flatten":
        top = nn.Sequential(nn.Flatten(), nn.Linear(c2 * side * side, classes))
    else:
        top = nn.Sequential(apnn.GlobalAvgPool(2, keepdims=False), nn.Linear(c2, classes))
    return nn.Sequential(
        OrderedDict(
            conv1=nn.Conv2d(in_channels, c1, 3, padding=1),
            relu1=nn.ReLU(),
            down1=_downsample(downsampling, c1),
            conv2=nn.Conv2d(c1, c2, 3, padding=1),
            relu2=nn.ReLU(),
            down2=_downsample(downsampling, c2),
            head=top,
        )
    )


def _builtin(name: str, downsampling: str, head: str) -> Variant:
    head_words = {"flatten": "flatten -> Linear(128, 10)", "gap": "global average -> Linear(32, 10)"}[head]
    return Variant(
        name=name,
        downsampling=DOWNSAMPLING[downsampling],
        head=head_words + (" (avgpool.nn.GlobalAvgPool)" if head == "gap" else ""),
        build=lambda: digits_cnn(downsampling, head),
    )


#: The built-in variants, in report order.
VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        _builtin("avg", "avg", "flatten"),
        _builtin("max", "max", "flatten"),
        _builtin("blur", "blur", "flatten"),
        _builtin("strided", "strided", "flatten"),
        _builtin("avg-gap", "avg", "gap"),
    )
}
