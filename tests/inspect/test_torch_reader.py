"""The PyTorch reader: modules, functional calls through fx, avgpool modules by duck typing,
the hooks fallback, and loading from .pt files and module:factory specs."""

from __future__ import annotations

import pytest

from avgpool import AvgPoolError, Window
from avgpool.inspect import ModelError, read_model
from avgpool.inspect.torch_reader import read_torch

from .conftest import SHAPES, nn, torch


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (
            "resnet",
            [
                ("maxpool", "max", "nn.MaxPool2d"),
                ("down.pool", "avg", "nn.AvgPool2d"),
                ("avgpool", "adaptive_avg", "nn.AdaptiveAvgPool2d"),
            ],
        ),
        (
            "inception",
            [
                ("mixed.branch_pool", "avg", "nn.AvgPool2d"),
                ("mixed.branch_max", "max", "nn.MaxPool2d"),
                ("reduce", "max", "nn.MaxPool2d"),
                ("mean", "global_avg", "Tensor.mean"),
            ],
        ),
        (
            "densenet",
            [
                ("transition1.pool", "avg", "nn.AvgPool2d"),
                ("adaptive_avg_pool2d", "adaptive_avg", "F.adaptive_avg_pool2d"),
                ("adaptive_max_pool2d", "adaptive_max", "F.adaptive_max_pool2d"),
            ],
        ),
    ],
)
def test_layers_of_real_architectures(torch_models, name, expected):
    inv = read_torch(torch_models[name], {"": SHAPES[name]})
    assert [(layer.name, layer.op, layer.source_op) for layer in inv] == expected
    assert inv.notes == ()


def test_geometry_shapes_and_fields_match_the_onnx_export(torch_models, onnx_models):
    for name in ("resnet", "inception"):
        t = read_torch(torch_models[name], {"": SHAPES[name]})
        o = read_model(onnx_models[name])
        assert [layer.key for layer in t][:3] == [layer.key for layer in o][:3]
        for a, b in zip(t, o):
            assert (a.input_shape, a.output_shape) == (b.input_shape, b.output_shape)
            assert (a.receptive_field, a.cumulative_stride) == (b.receptive_field, b.cumulative_stride)
    down = read_torch(torch_models["resnet"], {"": SHAPES["resnet"]}).by_name("down.pool")
    assert down.window == Window.from_torch(2, ceil_mode=True, count_include_pad=False, ndim=2)
    adaptive = read_torch(torch_models["densenet"], {"": SHAPES["densenet"]}).by_name("adaptive_avg_pool2d")
    assert (
        adaptive.window is None and adaptive.output_size == (2, 2) and adaptive.output_shape == (1, 6, 2, 2)
    )


class WindowPool(nn.Module):
    """Stands in for an avgpool.nn module: anything with a `window` Window attribute."""

    def __init__(self) -> None:
        super().__init__()
        self.window = Window.from_tensorflow(3, 2, "SAME", "NCHW")

    def forward(self, x):
        return torch.nn.functional.avg_pool2d(x, 2)  # the reader trusts the window, not forward


def test_modules_with_a_window_attribute_are_read_by_duck_typing():
    model = nn.Sequential(nn.Conv2d(1, 1, 3), WindowPool())
    (layer,) = read_torch(model, {"": (1, 1, 9, 9)}).layers
    assert layer.name == "1" and layer.op == "avg" and layer.source_op == "WindowPool"
    assert layer.convention == "tensorflow" and layer.window.padding == "same"


class Branchy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.pool = nn.AvgPool2d(2)

    def forward(self, x):
        if x.sum() > 0:  # data-dependent: fx cannot trace it
            x = x * 2
        return torch.nn.functional.max_pool2d(self.pool(x), 2)


def test_untraceable_models_fall_back_to_hooks():
    inv = read_torch(Branchy(), {"": (1, 1, 8, 8)})
    assert [(layer.name, layer.output_shape) for layer in inv] == [("pool", (1, 1, 4, 4))]
    assert "functional pooling calls and receptive fields are not shown" in inv.notes[0]


def test_needs_an_input_shape_and_a_working_one(torch_models):
    with pytest.raises(AvgPoolError, match="needs --input-shape"):
        read_torch(torch_models["resnet"])
    with pytest.raises(ModelError, match="failed on a random input of shape 1x5x32x32"):
        read_torch(torch_models["resnet"], {"": (1, 5, 32, 32)})


def test_pt_files_and_specs(tmp_path, torch_models):
    path = tmp_path / "resnet.pt"
    torch.save(torch_models["resnet"], path)
    with pytest.raises(ModelError, match="--trust-file"):
        read_model(path, {"": SHAPES["resnet"]})
    inv = read_model(path, {"": SHAPES["resnet"]}, trust=True)
    assert [layer.name for layer in inv] == ["maxpool", "down.pool", "avgpool"]
    torch.save(torch_models["resnet"].state_dict(), tmp_path / "weights.pt")
    with pytest.raises(ModelError, match=r"not an nn\.Module"):
        read_model(tmp_path / "weights.pt", {"": SHAPES["resnet"]})
    inv = read_model("tests.inspect.conftest:Inceptionish", {"": SHAPES["inception"]})
    assert inv.source == "tests.inspect.conftest:Inceptionish" and len(inv) == 4
    with pytest.raises(ModelError, match="no such model"):
        read_model("tests.inspect.conftest:Nope", {"": SHAPES["inception"]})
