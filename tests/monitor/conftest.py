"""A tiny CNN with three pooling layers (max, average, global average), a twin whose stem max
pool is an average pool (same weights), both exported to ONNX, and sample inputs."""

from __future__ import annotations

import warnings

import numpy as np
import pytest


def twins() -> dict[str, object]:
    """base; stem_avg: pool1 is AvgPool2d(2); head_max: gap is AdaptiveMaxPool2d(1)."""
    torch = pytest.importorskip("torch")
    from torch import nn
    from torch.nn import functional as F

    class TinyNet(nn.Module):
        def __init__(self, stem_pool=None, head=None) -> None:
            super().__init__()
            self.stem = nn.Conv2d(3, 4, 3, padding=1)
            self.pool1 = stem_pool if stem_pool is not None else nn.MaxPool2d(2)
            self.conv2 = nn.Conv2d(4, 6, 3, padding=1)
            self.pool2 = nn.AvgPool2d(2)
            self.gap = head if head is not None else nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(6, 3)

        def forward(self, x):
            x = self.pool1(F.relu(self.stem(x)))
            x = self.pool2(F.relu(self.conv2(x)))
            return self.fc(torch.flatten(self.gap(x), 1))

    torch.manual_seed(0)
    base = TinyNet().eval()
    out = {"base": base}
    for name, kwargs in (
        ("stem_avg", {"stem_pool": nn.AvgPool2d(2)}),
        ("head_max", {"head": nn.AdaptiveMaxPool2d(1)}),
    ):
        m = TinyNet(**kwargs).eval()
        m.load_state_dict(base.state_dict())
        out[name] = m
    return out


@pytest.fixture(scope="session")
def models():
    return twins()


@pytest.fixture(scope="session")
def images():
    rng = np.random.default_rng(0)
    return rng.standard_normal((48, 3, 12, 12)).astype(np.float32)


def export(model, path) -> str:
    import torch

    with warnings.catch_warnings():
        # the TorchScript exporter, which torch deprecates, made most ONNX files in use: the node
        # names these tests read (/maxpool/MaxPool) are its
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model,
            (torch.zeros(1, 3, 12, 12),),
            str(path),
            dynamo=False,
            input_names=["image"],
            dynamic_axes={"image": {0: "batch"}},
        )
    return str(path)


@pytest.fixture(scope="session")
def onnx_files(tmp_path_factory, models):
    pytest.importorskip("onnxruntime")
    root = tmp_path_factory.mktemp("monitor_onnx")
    return {name: export(m, root / f"{name}.onnx") for name, m in models.items()}


@pytest.fixture(scope="session")
def npz(tmp_path_factory, images):
    path = tmp_path_factory.mktemp("monitor_data") / "samples.npz"
    np.savez(path, image=images)
    return str(path)
