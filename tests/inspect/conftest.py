"""Small ResNet-, Inception- and DenseNet-style models, exported to ONNX once per session, and
hand-broken ONNX variants (a pool removed, a kernel changed, pads made asymmetric)."""

from __future__ import annotations

import warnings

import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402


class BasicBlock(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)

    def forward(self, x):
        return F.relu(x + self.conv2(F.relu(self.conv1(x))))


class Downsample(nn.Module):
    """ResNet-D shortcut: average 2x2 (ceil, padding excluded), then a 1x1 conv."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.pool = nn.AvgPool2d(2, ceil_mode=True, count_include_pad=False)
        self.conv = nn.Conv2d(c, c, 1)

    def forward(self, x):
        return self.conv(self.pool(x))


class ResNetish(nn.Module):
    """input 1x3x32x32: stem, 3x3/2 max pool, a block, an avg-pool shortcut, global average."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = BasicBlock(4)
        self.down = Downsample(4)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, 5)

    def forward(self, x):
        x = self.down(self.layer1(self.maxpool(F.relu(self.stem(x)))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class InceptionBlock(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.b1 = nn.Conv2d(c, 2, 1)
        self.b3 = nn.Conv2d(c, 2, 3, padding=1)
        self.branch_pool = nn.AvgPool2d(3, 1, 1)  # counts padded cells (torch's default)
        self.pool_proj = nn.Conv2d(c, 2, 1)
        self.branch_max = nn.MaxPool2d(3, 1, 1)

    def forward(self, x):
        return torch.cat([self.b1(x), self.b3(x), self.pool_proj(self.branch_pool(x)), self.branch_max(x)], 1)


class Inceptionish(nn.Module):
    """input 1x3x17x17: a 3x3/2 valid stem (8x8), a block, a 3x3/2 valid reduction (cell 7 is
    never read), global average written as x.mean((2, 3))."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, stride=2)
        self.mixed = InceptionBlock(4)
        self.reduce = nn.MaxPool2d(3, 2)
        self.fc = nn.Linear(10, 5)

    def forward(self, x):
        x = self.reduce(self.mixed(F.relu(self.stem(x))))
        return self.fc(x.mean((2, 3)))


class DenseLayer(nn.Module):
    def __init__(self, c: int, growth: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(c)
        self.conv = nn.Conv2d(c, growth, 3, padding=1)

    def forward(self, x):
        return torch.cat([x, self.conv(F.relu(self.norm(x)))], 1)


class Transition(nn.Module):
    def __init__(self, c: int, out: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c, out, 1)
        self.pool = nn.AvgPool2d(2, stride=2)

    def forward(self, x):
        return self.pool(self.conv(x))


class DenseNetish(nn.Module):
    """input 1x3x16x16: stem, dense block, transition (avg 2x2/2), dense block, functional
    adaptive average to 2x2 (valid for this input size only once exported), global max."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.block1 = nn.Sequential(DenseLayer(4, 2), DenseLayer(6, 2))
        self.transition1 = Transition(8, 4)
        self.block2 = nn.Sequential(DenseLayer(4, 2))
        self.fc = nn.Linear(6, 5)

    def forward(self, x):
        x = self.block2(self.transition1(self.block1(self.stem(x))))
        x = F.adaptive_avg_pool2d(x, (2, 2))
        return self.fc(torch.flatten(F.adaptive_max_pool2d(x, 1), 1))


SHAPES = {"resnet": (1, 3, 32, 32), "inception": (1, 3, 17, 17), "densenet": (1, 3, 16, 16)}
BUILDERS = {"resnet": ResNetish, "inception": Inceptionish, "densenet": DenseNetish}


def export(model: nn.Module, shape: tuple[int, ...], path) -> str:
    torch.manual_seed(0)
    model.eval()
    with warnings.catch_warnings():
        # the TorchScript exporter, which torch deprecates, made most ONNX files in use: the node
        # names these tests read (/maxpool/MaxPool) are its
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model, (torch.randn(*shape),), str(path), dynamo=False, opset_version=17, input_names=["x"]
        )
    return str(path)


@pytest.fixture(scope="session")
def torch_models():
    torch.manual_seed(0)
    return {name: build().eval() for name, build in BUILDERS.items()}


@pytest.fixture(scope="session")
def onnx_models(tmp_path_factory, torch_models):
    root = tmp_path_factory.mktemp("onnx")
    return {name: export(m, SHAPES[name], root / f"{name}.onnx") for name, m in torch_models.items()}


def node(model, name):
    return next(n for n in model.graph.node if n.name == name)


def set_ints(n, attr, values):
    for a in n.attribute:
        if a.name == attr:
            del a.ints[:]
            a.ints.extend(values)
            return
    n.attribute.append(onnx.helper.make_attribute(attr, values))


def save(model, path) -> str:
    for vi in list(model.graph.value_info):  # shapes change: let inference redo them
        model.graph.value_info.remove(vi)
    onnx.save(model, str(path))
    return str(path)


@pytest.fixture(scope="session")
def broken(tmp_path_factory, onnx_models):
    """Hand-edited ResNet variants: the shortcut's pool removed, the max kernel changed to 2,
    the max pool's pads made asymmetric, and a dilated SAME max pool (ORT's known deviation)."""
    root = tmp_path_factory.mktemp("broken")
    out = {}

    m = onnx.load(onnx_models["resnet"])
    pool = node(m, "/down/pool/AveragePool")
    for other in m.graph.node:
        for i, name in enumerate(other.input):
            if name == pool.output[0]:
                other.input[i] = pool.input[0]
    m.graph.node.remove(pool)
    out["removed"] = save(m, root / "removed.onnx")

    m = onnx.load(onnx_models["resnet"])
    set_ints(node(m, "/maxpool/MaxPool"), "kernel_shape", [2, 2])
    out["kernel"] = save(m, root / "kernel.onnx")

    m = onnx.load(onnx_models["resnet"])
    set_ints(node(m, "/maxpool/MaxPool"), "pads", [0, 0, 1, 1])
    out["asymmetric"] = save(m, root / "asymmetric.onnx")

    m = onnx.load(onnx_models["resnet"])
    n = node(m, "/maxpool/MaxPool")
    for a in list(n.attribute):
        if a.name == "pads":
            n.attribute.remove(a)
    n.attribute.append(onnx.helper.make_attribute("auto_pad", "SAME_UPPER"))
    set_ints(n, "kernel_shape", [2, 2])
    set_ints(n, "dilations", [2, 2])
    set_ints(n, "strides", [1, 1])
    out["dilated_same"] = save(m, root / "dilated_same.onnx")
    return out
