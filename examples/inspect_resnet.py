"""Build a small ResNet-style model, export it to ONNX, break a copy, and run avgpool's model
tools on both: the output shown in docs/inspect.md.

    python examples/inspect_resnet.py [OUTDIR]      # needs avgpool[inspect,torch]
"""

from __future__ import annotations

import sys
import tempfile
import warnings
from pathlib import Path

import onnx
import torch
from torch import nn
from torch.nn import functional as F

from avgpool.cli import main


class Downsample(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.pool = nn.AvgPool2d(2, ceil_mode=True, count_include_pad=False)  # ResNet-D shortcut
        self.conv = nn.Conv2d(c, 2 * c, 1)

    def forward(self, x):
        return self.conv(self.pool(x))


class TinyResNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 7, stride=2, padding=3)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.conv = nn.Conv2d(8, 8, 3, padding=1)
        self.down = Downsample(8)
        self.head_pool = nn.AvgPool2d(2)  # 7x7 -> 3x3: row and column 6 are never read
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = self.maxpool(F.relu(self.stem(x)))
        x = self.head_pool(self.down(F.relu(self.conv(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def build(out: Path) -> tuple[Path, Path]:
    torch.manual_seed(0)
    model = TinyResNet().eval()
    path = out / "tiny_resnet.onnx"
    with warnings.catch_warnings():
        # PyTorch's own exporter calls a check PyTorch deprecates; the warning is about its code
        warnings.filterwarnings("ignore", r"`isinstance\(treespec, LeafSpec\)` is deprecated", FutureWarning)
        program = torch.onnx.export(model, (torch.randn(1, 3, 56, 56),), input_names=["image"], verbose=False)
    program.save(str(path))
    broken = onnx.load(str(path))
    for node in broken.graph.node:
        if node.op_type == "MaxPool":  # a "harmless" edit: pads 1/1 -> 0/1 (TF-style SAME)
            pads = next(a for a in node.attribute if a.name == "pads")
            del pads.ints[:]
            pads.ints.extend([0, 0, 1, 1])
    del broken.graph.value_info[:]
    broken_path = out / "tiny_resnet_edited.onnx"
    onnx.save(broken, str(broken_path))
    return path, broken_path


if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp())
    out.mkdir(parents=True, exist_ok=True)
    model, edited = build(out)
    for argv in (
        ["inspect", str(model), "--target", "tflite"],
        ["diff", str(model), str(edited)],
        ["verify", str(model), "--random", "3"],
    ):
        print(f"$ avgpool {' '.join(argv)}")
        print(f"(exit {main(argv)})\n")
