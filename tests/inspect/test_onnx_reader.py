"""The ONNX reader on exported ResNet-, Inception- and DenseNet-style models: exact layers,
windows, shapes, receptive fields; Pad folding; bad files."""

from __future__ import annotations

import numpy as np
import pytest

from avgpool import AvgPoolError
from avgpool.inspect import ModelError, read_model
from avgpool.inspect.lint import lint
from avgpool.inspect.onnx_reader import read_onnx

from .conftest import SHAPES, onnx, torch

EXPECTED = {
    # name: (source_op, kernel, stride, pads, ceil, count_include_pad, in, out, rf, jump)
    "resnet": [
        (
            "/maxpool/MaxPool",
            "MaxPool",
            (3, 3),
            (2, 2),
            ((1, 1), (1, 1)),
            False,
            (1, 4, 32, 32),
            (1, 4, 16, 16),
            (5, 5),
            (2, 2),
        ),
        (
            "/down/pool/AveragePool",
            "AveragePool",
            (2, 2),
            (2, 2),
            ((0, 0), (0, 0)),
            True,
            (1, 4, 16, 16),
            (1, 4, 8, 8),
            (15, 15),
            (4, 4),
        ),
        (
            "/avgpool/GlobalAveragePool",
            "GlobalAveragePool",
            None,
            (1, 1),
            ((0, 0), (0, 0)),
            False,
            (1, 4, 8, 8),
            (1, 4, 1, 1),
            (43, 43),
            (32, 32),
        ),
    ],
    "inception": [
        (
            "/mixed/branch_pool/AveragePool",
            "AveragePool",
            (3, 3),
            (1, 1),
            ((1, 1), (1, 1)),
            False,
            (1, 4, 8, 8),
            (1, 4, 8, 8),
            (7, 7),
            (2, 2),
        ),
        (
            "/mixed/branch_max/MaxPool",
            "MaxPool",
            (3, 3),
            (1, 1),
            ((1, 1), (1, 1)),
            False,
            (1, 4, 8, 8),
            (1, 4, 8, 8),
            (7, 7),
            (2, 2),
        ),
        (
            "/reduce/MaxPool",
            "MaxPool",
            (3, 3),
            (2, 2),
            ((0, 0), (0, 0)),
            False,
            (1, 10, 8, 8),
            (1, 10, 3, 3),
            (11, 11),
            (4, 4),
        ),
        (
            "/ReduceMean",
            "ReduceMean",
            None,
            (1, 1),
            ((0, 0), (0, 0)),
            False,
            (1, 10, 3, 3),
            (1, 10),
            (19, 19),
            (12, 12),
        ),
    ],
    "densenet": [
        (
            "/transition1/pool/AveragePool",
            "AveragePool",
            (2, 2),
            (2, 2),
            ((0, 0), (0, 0)),
            False,
            (1, 4, 16, 16),
            (1, 4, 8, 8),
            (8, 8),
            (2, 2),
        ),
        (
            "/AveragePool",
            "AveragePool",
            (4, 4),
            (4, 4),
            ((0, 0), (0, 0)),
            False,
            (1, 6, 8, 8),
            (1, 6, 2, 2),
            (18, 18),
            (8, 8),
        ),
        (
            "/MaxPool",
            "MaxPool",
            (2, 2),
            (2, 2),
            ((0, 0), (0, 0)),
            False,
            (1, 6, 2, 2),
            (1, 6, 1, 1),
            (26, 26),
            (16, 16),
        ),
    ],
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_layers_of_real_architectures(onnx_models, name):
    inv = read_onnx(onnx_models[name])
    assert inv.format == "onnx" and inv.inputs == {
        "x": (1, 3, *{"resnet": (32, 32), "inception": (17, 17), "densenet": (16, 16)}[name])
    }
    got = [
        (
            layer.name,
            layer.source_op,
            layer.window.kernel_size,
            layer.window.stride,
            layer.window.padding,
            layer.window.ceil_mode,
            layer.input_shape,
            layer.output_shape,
            layer.receptive_field,
            layer.cumulative_stride,
        )
        for layer in inv
    ]
    want = [(n, op, k, s, p, c, i, o, rf, j) for n, op, k, s, p, c, i, o, rf, j in EXPECTED[name]]
    assert got == want
    assert [layer.index for layer in inv] == list(range(len(want)))


def test_onnx_semantics_are_kept(onnx_models):
    inv = read_onnx(onnx_models["resnet"])
    down = inv.by_name("down.pool")
    assert down.op == "avg" and down.convention == "onnx"
    assert down.window.count_include_pad is False  # exported from count_include_pad=False
    inception = read_onnx(onnx_models["inception"])
    assert inception.by_name("mixed.branch_pool").window.count_include_pad is True
    assert inception.by_name("/ReduceMean").op == "global_avg"


def _pad_model(mode: str, value: float, op: str = "AveragePool"):
    from onnx import TensorProto, helper, numpy_helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 6, 6])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    pads = numpy_helper.from_array(np.array([0, 0, 0, 0, 0, 0, 1, 1], dtype=np.int64), "pads")
    fill = numpy_helper.from_array(np.array(value, dtype=np.float32), "fill")
    nodes = [
        helper.make_node("Relu", ["x"], ["r"]),
        helper.make_node("Pad", ["r", "pads", "fill"], ["p"], mode=mode, name="pad"),
        helper.make_node(op, ["p"], ["y"], kernel_shape=[2, 2], strides=[2, 2], name="pool"),
    ]
    graph = helper.make_graph(nodes, "g", [x], [y], initializer=[pads, fill])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_zero_pad_before_average_folds_into_counted_padding():
    layer = read_onnx(_pad_model("constant", 0.0)).layers[0]
    assert layer.pad.pads == ((0, 1), (0, 1)) and layer.pad.input_shape == (1, 2, 6, 6)
    assert layer.input_shape == (1, 2, 7, 7) and layer.output_shape == (1, 2, 3, 3)
    window, shape = layer.effective()
    assert window.padding == ((0, 1), (0, 1)) and window.count_include_pad is True
    assert shape == (1, 2, 6, 6)


@pytest.mark.parametrize(
    ("mode", "value", "op"), [("reflect", 0.0, "AveragePool"), ("constant", 0.0, "MaxPool")]
)
def test_unfoldable_pads_are_kept_apart(mode, value, op):
    layer = read_onnx(_pad_model(mode, value, op)).layers[0]
    assert layer.pad.mode == mode
    assert layer.effective() is None


# the exporter computes these pads with a Slice it says it cannot fold: the case under test
@pytest.mark.filterwarnings("ignore:Constant folding - Only steps=1:UserWarning")
def test_pads_computed_by_the_exporter_are_folded(tmp_path):
    from .conftest import export, nn, torch

    class PadPool(nn.Module):
        def forward(self, x):
            return torch.nn.functional.max_pool2d(
                torch.nn.functional.pad(x, (1, 1, 1, 1), value=float("-inf")), 3, 2
            )

    layer = read_onnx(export(PadPool(), (1, 1, 6, 6), tmp_path / "padpool.onnx")).layers[0]
    assert layer.pad.value == -np.inf and layer.pad.pads == ((1, 1), (1, 1))
    assert layer.input_shape == (1, 1, 8, 8) and layer.output_shape == (1, 1, 3, 3)
    assert layer.effective()[0].padding == ((1, 1), (1, 1))


def _dynamic(tmp_path, dims):
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    node = helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[2, 2], strides=[2, 2], name="pool")
    model = helper.make_model(
        helper.make_graph([node], "g", [x], [y]), opset_imports=[helper.make_opsetid("", 17)]
    )
    path = tmp_path / "dynamic.onnx"
    onnx.save(model, str(path))
    return str(path)


def test_dynamic_batch_is_set_to_one_with_a_note(tmp_path):
    inv = read_onnx(_dynamic(tmp_path, ["N", 3, 8, 8]))
    assert inv.inputs == {"x": (1, 3, 8, 8)}
    assert inv.layers[0].output_shape == (1, 3, 4, 4)
    assert "dynamic batch dimension 'N' set to 1" in inv.notes[0]


def test_dynamic_spatial_dims_need_input_shape(tmp_path):
    path = _dynamic(tmp_path, ["N", 3, "H", "W"])
    with pytest.raises(AvgPoolError, match=r"dynamic dimensions \(Nx3xHxW\): pass --input-shape x:1x3x1x1"):
        read_onnx(path)
    inv = read_onnx(path, {"": (2, 3, 10, 6)})
    assert inv.layers[0].output_shape == (2, 3, 5, 3)
    with pytest.raises(AvgPoolError, match="contradicts"):
        read_onnx(path, {"x": (2, 4, 10, 6)})


def test_bad_files(tmp_path, onnx_models):
    text = tmp_path / "notes.onnx"
    text.write_text("not a model at all\n")
    with pytest.raises(ModelError, match="not an ONNX model"):
        read_model(text)
    with open(onnx_models["resnet"], "rb") as f:
        data = f.read()
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(data[: len(data) // 3])
    with pytest.raises(ModelError, match="not an ONNX model or truncated"):
        read_model(cut)
    with pytest.raises(ModelError, match="no such file"):
        read_model(tmp_path / "absent.onnx")


def test_missing_external_data(tmp_path, onnx_models):
    model = onnx.load(onnx_models["resnet"])
    path = tmp_path / "ext.onnx"
    onnx.save(model, str(path), save_as_external_data=True, location="ext.bin", size_threshold=0)
    assert read_onnx(path).layers[0].name == "/maxpool/MaxPool"
    (tmp_path / "ext.bin").unlink()
    with pytest.raises(ModelError, match=r"external data file 'ext\.bin' is missing"):
        read_onnx(path)


def _pool_model(kernel, input_shape, output_shape=None):
    h = onnx.helper
    node = h.make_node("AveragePool", ["x"], ["y"], name="pool", kernel_shape=kernel)
    y = h.make_tensor_value_info("y", onnx.TensorProto.FLOAT, output_shape)
    graph = h.make_graph(
        [node], "g", [h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, input_shape)], [y]
    )
    return h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])


def test_a_kernel_of_another_rank_than_the_input_is_refused():
    with pytest.raises(ModelError, match=r"kernel_shape has 3 entries but the input has 2 spatial axes"):
        read_onnx(_pool_model([2, 2, 2], [1, 3, 8, 8]))


def test_negative_dimensions_are_refused_not_shown():
    with pytest.raises(ModelError, match="negative dimension"):
        read_onnx(_pool_model([2, 2], [1, 3, 8, 8], [1, 3, -3, 4]))


@pytest.mark.filterwarnings("ignore:`isinstance\\(treespec, LeafSpec\\)` is deprecated:FutureWarning")
@pytest.mark.parametrize("name", ["resnet", "inception", "densenet"])
def test_the_default_exporter_s_layers_are_named_as_the_torchscript_exporter_names_them(
    name, torch_models, onnx_models, tmp_path
):
    """torch.onnx.export's default (dynamo) names nodes node_avg_pool2d_3; the reader names them
    by the module path the exporter records, as the TorchScript exporter does, so the two
    files list their layers under the same keys and diff matches them (the exporters lower a
    global pool differently: ReduceMean against GlobalAveragePool)."""
    model = torch_models[name]
    program = torch.onnx.export(model, (torch.randn(*SHAPES[name]),), dynamo=True, verbose=False)
    path = tmp_path / f"{name}-dynamo.onnx"
    program.save(str(path))
    by_dynamo, by_script = read_onnx(str(path)).layers, read_onnx(onnx_models[name]).layers
    assert [(x.key, x.output_shape) for x in by_dynamo] == [(x.key, x.output_shape) for x in by_script]
    assert all(x.name.startswith("/") for x in by_dynamo)
    if name == "resnet":
        # its AdaptiveAvgPool2d(1) became a ReduceMean: a pool the source wrote as one, so lint
        # does not call it a global pool in disguise
        (gap,) = [x for x in by_dynamo if x.key == "avgpool"]
        assert gap.source_op == "ReduceMean" and gap.written_as.endswith("AdaptiveAvgPool2d")
        assert "AP112" not in [f.rule for f in lint(read_onnx(str(path)))]
