"""ONNX export of avgpool.nn models through both PyTorch exporters, run by ONNX Runtime."""

import io

import numpy as np
import pytest
import torch
from torch import nn

import avgpool.nn as apnn
from avgpool import AvgPoolError

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxscript")
ort = pytest.importorskip("onnxruntime")
apo = pytest.importorskip("avgpool.torch.onnx")

# (module, the ONNX pooling node it must become, its attributes that carry the convention)
CASES = [
    (
        apnn.AvgPool2d(3, 2, padding="same", convention="tensorflow"),
        "AveragePool",
        {"pads": [0, 0, 1, 1], "count_include_pad": 0},  # TF 'SAME' on 8x6: the odd cell at the end
    ),
    (
        apnn.AvgPool2d(3, 2, 1, ceil_mode=True),
        "AveragePool",
        {"pads": [1, 1, 1, 1], "ceil_mode": 1, "count_include_pad": 1},
    ),
    (apnn.AvgPool2d(2, 1, 1, divisor_override=3), "AveragePool", {}),
    (apnn.MaxPool2d(3, padding="same_lower", convention="onnx"), "MaxPool", {"pads": [1, 1, 1, 1]}),
    (apnn.MaxPool2d(3, 2, 1, dilation=2, ceil_mode=True), "MaxPool", {"dilations": [2, 2], "ceil_mode": 1}),
    (apnn.LPPool2d(2, 3, 2), "LpPool", {"p": 2}),
    (apnn.LPPool2d(3, 2, convention="onnx"), "LpPool", {"p": 3, "strides": [1, 1]}),
    (apnn.LPPool2d(3, 2, ceil_mode=True), "AveragePool", {"ceil_mode": 1}),
    (apnn.GlobalAvgPool(keepdims=False), "GlobalAveragePool", {}),
    (apnn.GlobalMaxPool(), "GlobalMaxPool", {}),
    (apnn.AdaptiveAvgPool2d((4, 6)), "AveragePool", {"kernel_shape": [2, 1]}),
    (apnn.AdaptiveAvgPool2d((3, 4)), "MatMul", {}),
    (apnn.AdaptiveMaxPool2d((4, 6)), "MaxPool", {"kernel_shape": [2, 1]}),
    (apnn.BlurPool2d(filt_size=3), "MatMul", {}),
    (apnn.AvgPool1d(4, 3, padding="same", convention="keras"), "AveragePool", {"pads": [0, 1]}),
]
IDS = [repr(m) for m, _, _ in CASES]


def _attrs(node) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _run(model, x: torch.Tensor) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x.numpy()})


def _check(model, module, op_type, attrs, x):
    nodes = [n for n in model.graph.node if n.op_type == op_type]
    assert nodes, f"no {op_type} node in {[n.op_type for n in model.graph.node]}"
    assert "avgpool" not in {opset.domain for opset in model.opset_import}
    for key, value in attrs.items():
        assert list(np.atleast_1d(_attrs(nodes[0])[key])) == list(np.atleast_1d(value)), key
    got = _run(model, x)[0]
    np.testing.assert_allclose(got, module(x).numpy(), rtol=1e-5, atol=1e-6)


def _input(module) -> torch.Tensor:
    shape = (2, 3, 9) if "1d" in type(module).__name__ else (2, 3, 8, 6)
    return torch.rand(*shape) + 0.1


@pytest.mark.parametrize("module,op_type,attrs", CASES, ids=IDS)
def test_dynamo_exporter(module, op_type, attrs):
    x = _input(module)
    program = apo.export(module.eval(), (x,), dynamo=True)
    _check(program.model_proto, module, op_type, attrs, x)


# this test is about the TorchScript exporter, which torch deprecates (its own warnings)
@pytest.mark.filterwarnings(
    "ignore:You are using the legacy TorchScript-based ONNX export:DeprecationWarning"
)
@pytest.mark.filterwarnings("ignore:The feature will be removed:DeprecationWarning:torch.onnx")
@pytest.mark.parametrize("module,op_type,attrs", CASES[::3], ids=IDS[::3])
def test_torchscript_exporter(module, op_type, attrs):
    x = _input(module)
    f = io.BytesIO()
    apo.export(module.eval(), (x,), f, dynamo=False)
    _check(onnx.load_from_string(f.getvalue()), module, op_type, attrs, x)


def test_max_pool_indices_are_torch_s_per_plane_indices():
    module = apnn.MaxPool2d(3, 2, 1, return_indices=True).eval()
    x = torch.randn(2, 3, 9, 7)
    program = apo.export(module, (x,), dynamo=True)
    values, indices = _run(program.model_proto, x)
    want_values, want_indices = module(x)
    np.testing.assert_array_equal(values, want_values.numpy())
    np.testing.assert_array_equal(indices, want_indices.numpy())


def test_a_cnn_exports_and_round_trips():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        apnn.AvgPool2d(3, 2, padding="same", convention="tensorflow"),
        nn.ReLU(),
        apnn.MaxPool2d(2),
        apnn.GlobalAvgPool(keepdims=False),
        nn.Linear(4, 2),
    ).eval()
    x = torch.randn(1, 3, 15, 15)
    model_proto = apo.export(model, (x,), dynamo=True).model_proto
    np.testing.assert_allclose(_run(model_proto, x)[0], model(x).detach().numpy(), rtol=1e-5, atol=1e-6)


def test_adaptive_max_that_onnx_cannot_express_is_refused():
    with pytest.raises(Exception, match="adaptive max pooling exports to ONNX only when"):
        apo.export(apnn.AdaptiveMaxPool2d((4, 3)).eval(), (torch.rand(1, 1, 9, 7),), dynamo=True)


def test_translation_table_covers_every_forward_op():
    table = apo.translation_table()
    for name in ("avg_pool", "max_pool", "lp_pool", "adaptive_avg_pool", "adaptive_max_pool", "blur_pool"):
        assert getattr(torch.ops.avgpool, name).default in table
    assert issubclass(AvgPoolError, ValueError)
