"""Profile a small CNN's pooling layers, swap its stem max pool for an average pool (same
weights), profile again, and run the drift gate: the output shown in docs/monitor.md.

    python examples/monitor_pooling.py [OUTDIR]      # needs avgpool[monitor,inspect,torch]
"""

from __future__ import annotations

import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from avgpool.cli import main

#: PyTorch's own exporter calls a check PyTorch deprecates; the warning is about its code
LEAFSPEC = r"`isinstance\(treespec, LeafSpec\)` is deprecated"


class TinyNet(nn.Module):
    """32x32 RGB in: conv, 3x3/2 max pool, conv, 2x2 average pool, conv, global average, fc."""

    def __init__(self, stem_pool: nn.Module | None = None) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.pool1 = stem_pool if stem_pool is not None else nn.MaxPool2d(3, 2, 1)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.pool2 = nn.AvgPool2d(2)
        self.conv3 = nn.Conv2d(16, 16, 3, padding=1)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = self.pool1(F.relu(self.stem(x)))
        x = self.pool2(F.relu(self.conv2(x)))
        return self.fc(torch.flatten(self.gap(F.relu(self.conv3(x))), 1))


def export(model: nn.Module, path: Path) -> str:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", LEAFSPEC, FutureWarning)
        program = _export(model)
    program.save(str(path))
    return str(path)


def _export(model: nn.Module):
    return torch.onnx.export(
        model.eval(),
        (torch.randn(2, 3, 32, 32),),
        input_names=["image"],
        dynamic_shapes=({0: torch.export.Dim("batch")},),
        verbose=False,
    )


def sample_images(n: int, seed: int = 0) -> np.ndarray:
    """Smooth random images: white noise averaged over 4x4 blocks, then upsampled."""
    rng = np.random.default_rng(seed)
    coarse = rng.standard_normal((n, 3, 8, 8)).astype(np.float32)
    return np.repeat(np.repeat(coarse, 4, axis=2), 4, axis=3)


def build(out: Path) -> tuple[str, str, str]:
    torch.manual_seed(0)
    base = TinyNet()
    cand = TinyNet(nn.AvgPool2d(3, 2, 1))
    cand.load_state_dict(base.state_dict())
    data = out / "samples.npz"
    np.savez(data, image=sample_images(256))
    return export(base, out / "base.onnx"), export(cand, out / "candidate.onnx"), str(data)


def run(*argv: str) -> int:
    print(f"$ avgpool {' '.join(argv)}")
    code = main(list(argv))
    print(f"(exit {code})\n")
    return code


if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp())
    out.mkdir(parents=True, exist_ok=True)
    base, cand, data = build(out)
    o = str(out)
    run("profile", base, "--inputs", data, "-o", f"{o}/base.avgprof", "--no-progress")
    run("profile", cand, "--inputs", data, "-o", f"{o}/cand.avgprof", "--no-progress")
    run("drift", f"{o}/base.avgprof", f"{o}/cand.avgprof", "--plot", f"{o}/drift.png")
