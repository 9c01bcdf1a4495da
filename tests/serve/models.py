"""Small models for the serve tests, in every form `avgpool serve` loads: an ``nn.Module``
factory spec, ONNX, a ``.pt2`` ExportedProgram and a TorchScript file.

The factories are importable specs: ``tests.serve.models:tiny_net``.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

#: The input shape every model here takes (any batch size).
SHAPE = (1, 3, 16, 16)
#: PyTorch's own exporter calls a check PyTorch deprecates; the warning is about its code
LEAFSPEC = r"`isinstance\(treespec, LeafSpec\)` is deprecated"


class TinyNet(nn.Module):
    """16x16 RGB in: conv, 3x3/2 max pool, conv, 2x2 average pool, global average, fc."""

    example_input_shape = SHAPE

    def __init__(self, pool2: nn.Module | None = None) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.pool1 = nn.MaxPool2d(3, 2, 1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.pool2 = pool2 if pool2 is not None else nn.AvgPool2d(2)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        x = self.pool1(F.relu(self.stem(x)))
        x = self.pool2(F.relu(self.conv2(x)))
        return self.fc(torch.flatten(self.gap(x), 1))


def tiny_net() -> TinyNet:
    """The seeded model, in eval mode."""
    torch.manual_seed(0)
    return TinyNet().eval()


def tiny_avgpool_net() -> TinyNet:
    """The same model with avgpool's own average pool (a Numba kernel) as its second pool."""
    from avgpool.nn import AvgPool2d

    torch.manual_seed(0)
    return TinyNet(AvgPool2d(2)).eval()


def images(n: int = 2, seed: int = 0, shift: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, *SHAPE[1:])) + shift).astype(np.float32)


def to_onnx(path: Path, model: nn.Module | None = None, *, free_spatial: bool = False) -> str:
    model = model or tiny_net()
    axes = {0: "batch", 2: "height", 3: "width"} if free_spatial else {0: "batch"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter, fast here
        torch.onnx.export(
            model,
            (torch.zeros(SHAPE),),
            str(path),
            dynamo=False,
            input_names=["image"],
            output_names=["logits"],
            dynamic_axes={"image": axes, "logits": {0: "batch"}},
        )
    return str(path)


def to_pt2(path: Path, model: nn.Module | None = None) -> str:
    model = model or tiny_net()
    program = torch.export.export(
        model, (torch.zeros(2, *SHAPE[1:]),), dynamic_shapes=({0: torch.export.Dim("batch")},)
    )
    torch.export.save(program, str(path))
    return str(path)


def to_torchscript(path: Path, model: nn.Module | None = None) -> str:
    model = model or tiny_net()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(model), str(path))
    return str(path)


class _Bare(TinyNet):
    example_input_shape = None


def bare_net() -> TinyNet:
    """A model that declares no input shape."""
    torch.manual_seed(0)
    return _Bare().eval()


class _Failing(TinyNet):
    def forward(self, x):
        if bool((x > 100).any()):
            raise RuntimeError("input out of range")
        return super().forward(x)


def failing_net() -> TinyNet:
    """Raises on inputs above 100."""
    torch.manual_seed(0)
    return _Failing().eval()


class FunctionalNet(nn.Module):
    """A functional max pool (no module to hook) and an LPPool2d (several ops once exported)."""

    example_input_shape = SHAPE

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.lp = nn.LPPool2d(2, 2)

    def forward(self, x):
        x = F.max_pool2d(self.conv(x), 2)
        return self.lp(x.abs()).mean(dim=(2, 3))


def functional_net() -> FunctionalNet:
    torch.manual_seed(0)
    return FunctionalNet().eval()


class InplaceNet(TinyNet):
    """An in-place ReLU right after a pooling layer."""

    def forward(self, x):
        x = self.pool1(self.stem(x))
        return self.fc(torch.flatten(self.gap(F.relu(x, inplace=True)), 1))


def inplace_net() -> TinyNet:
    torch.manual_seed(0)
    return InplaceNet().eval()
