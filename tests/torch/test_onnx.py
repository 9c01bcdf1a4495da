"""The plain ``torch.onnx.export`` of avgpool.nn models, both exporters, run by ONNX Runtime.

Every module of avgpool.nn, in every convention it takes, is exported with PyTorch's own call
(no avgpool helper) and ONNX Runtime's output is held to the float64 reference.
"""

import io

import numpy as np
import pytest
import torch
from torch import nn

import avgpool
import avgpool.nn as apnn
import avgpool.torch.functional as apf
from avgpool import AvgPoolError

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxscript")
ort = pytest.importorskip("onnxruntime")
apo = pytest.importorskip("avgpool.torch.onnx")

pytestmark = [
    # PyTorch's own: its TorchScript exporter (deliberately under test here) deprecates itself
    # in pieces, and torch.export's pytree code calls a deprecated check of its own
    pytest.mark.filterwarnings(
        "ignore:You are using the legacy TorchScript-based ONNX export:DeprecationWarning"
    ),
    pytest.mark.filterwarnings("ignore:The feature will be removed:DeprecationWarning:torch"),
    pytest.mark.filterwarnings("ignore:`isinstance\\(treespec, LeafSpec\\)` is deprecated:FutureWarning"),
]

CONVENTIONS = ("torch", "onnx", "tensorflow", "keras", "flax")


def _modules() -> list[nn.Module]:
    """Each avgpool.nn module in 1-D, 2-D and 3-D, once per convention it accepts."""
    out: list[nn.Module] = []
    for d in (1, 2, 3):
        avg, mx, lp = (getattr(apnn, f"{k}{d}d") for k in ("AvgPool", "MaxPool", "LPPool"))
        for convention in CONVENTIONS:
            out.append(avg(3, 2, padding=1 if convention == "torch" else "same", convention=convention))
            out.append(mx(3, 2, padding=1 if convention == "torch" else "same", convention=convention))
        out += [
            avg(3, 2, 1, ceil_mode=True, count_include_pad=False),
            avg(2, 1, 1, divisor_override=3),
            avg(3, 2, padding=((2, 2),) * d, count_include_pad=False, convention="flax"),  # NaN corners
            mx(3, 2, 1, dilation=2, ceil_mode=True),
            lp(2, 3, 2),
            lp(3, 2, convention="onnx"),
            lp(1.5, 2, 1, ceil_mode=True),
            getattr(apnn, f"AdaptiveAvgPool{d}d")((4,) * d),
            getattr(apnn, f"AdaptiveAvgPool{d}d")((3,) * d),
            getattr(apnn, f"AdaptiveMaxPool{d}d")((4,) * d),
            getattr(apnn, f"BlurPool{d}d")(filt_size=3),
            getattr(apnn, f"BlurPool{d}d")(pad_type="zero", filt_size=4, stride=1),
        ]
    for convention in CONVENTIONS:
        out += [
            apnn.GlobalAvgPool(keepdims=False, convention=convention),
            apnn.GlobalMaxPool(convention=convention),
        ]
    out.append(apnn.AvgMaxPool(apnn.GlobalAvgPool(), apnn.GlobalMaxPool(), concat=True))
    return out


MODULES = _modules()
IDS = [repr(m) for m in MODULES]
SPATIAL = {1: (9,), 2: (8, 6), 3: (5, 4, 6)}


def _input(module: nn.Module) -> torch.Tensor:
    name = type(module).__name__
    ndim = 1 if "1d" in name else 3 if "3d" in name else 2
    spatial = SPATIAL[ndim] if "Adaptive" not in name else (8,) * ndim
    return torch.rand(2, 3, *spatial) + 0.1


def _oracle(module: nn.Module, x: torch.Tensor) -> np.ndarray:
    with avgpool.use_backend("reference"):
        y = module.double()(x.double())
    module.float()
    return (y[0] if isinstance(y, tuple) else y).detach().numpy()


def _run(model, x: torch.Tensor) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x.numpy()})


def _standard(model) -> None:
    assert "avgpool" not in {opset.domain for opset in model.opset_import}
    assert not [n.op_type for n in model.graph.node if n.domain not in ("", "ai.onnx")]


def _dynamo(module: nn.Module, x: torch.Tensor):
    return torch.onnx.export(module.eval(), (x,), dynamo=True, verbose=False).model_proto


def _torchscript(module: nn.Module, x: torch.Tensor):
    f = io.BytesIO()
    torch.onnx.export(module.eval(), (x,), f, dynamo=False)
    return onnx.load_from_string(f.getvalue())


@pytest.mark.parametrize("module", MODULES, ids=IDS)
def test_dynamo_exporter_matches_the_reference(module):
    x = _input(module)
    model = _dynamo(module, x)
    _standard(model)
    np.testing.assert_allclose(_run(model, x)[0], _oracle(module, x), rtol=2e-6, atol=1e-6)


@pytest.mark.parametrize("module", MODULES, ids=IDS)
def test_torchscript_exporter_matches_the_reference(module):
    x = _input(module)
    model = _torchscript(module, x)
    _standard(model)
    np.testing.assert_allclose(_run(model, x)[0], _oracle(module, x), rtol=2e-6, atol=1e-6)


# (module, the ONNX pooling node it must become, its attributes that carry the convention)
NODES = [
    (
        apnn.AvgPool2d(3, 2, padding="same", convention="tensorflow"),
        "AveragePool",
        {"pads": [0, 0, 1, 1], "count_include_pad": 0},  # TF 'SAME' on 8x6: the odd cell at the end
    ),
    (apnn.AvgPool2d(3, 2, 1, ceil_mode=True), "AveragePool", {"pads": [1, 1, 1, 1], "ceil_mode": 1}),
    (apnn.AvgPool2d(2, 1, 1, divisor_override=3), "AveragePool", {}),
    (apnn.MaxPool2d(3, padding="same_lower", convention="onnx"), "MaxPool", {"pads": [1, 1, 1, 1]}),
    (apnn.MaxPool2d(3, 2, 1, dilation=2, ceil_mode=True), "MaxPool", {"dilations": [2, 2], "ceil_mode": 1}),
    (apnn.LPPool2d(2, 3, 2), "LpPool", {"p": 2}),
    (apnn.LPPool2d(3, 2, convention="onnx"), "LpPool", {"p": 3, "strides": [1, 1]}),
    (apnn.GlobalAvgPool(keepdims=False), "GlobalAveragePool", {}),
    (apnn.GlobalMaxPool(), "GlobalMaxPool", {}),
    (apnn.AdaptiveAvgPool2d((4, 6)), "AveragePool", {"kernel_shape": [2, 1]}),
    (apnn.AdaptiveAvgPool2d((3, 4)), "MatMul", {}),
    (apnn.AvgPool1d(4, 3, padding="same", convention="keras"), "AveragePool", {"pads": [0, 1]}),
]


def _attrs(node) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


@pytest.mark.parametrize("export", [_dynamo, _torchscript], ids=["dynamo", "torchscript"])
@pytest.mark.parametrize("module,op_type,attrs", NODES, ids=[repr(m) for m, _, _ in NODES])
def test_conventions_become_standard_pooling_nodes(export, module, op_type, attrs):
    x = torch.rand(2, 3, 9) if "1d" in type(module).__name__ else torch.rand(2, 3, 8, 6)
    model = export(module, x)
    nodes = [n for n in model.graph.node if n.op_type == op_type]
    assert nodes, f"no {op_type} node in {[n.op_type for n in model.graph.node]}"
    for key, value in attrs.items():
        assert list(np.atleast_1d(_attrs(nodes[0])[key])) == list(np.atleast_1d(value)), key


class _Functional(nn.Module):
    """avgpool.torch.functional inside a model: dilation and channels-last, which nn lacks."""

    def __init__(self, channels_last: bool) -> None:
        super().__init__()
        self.channels_last = channels_last

    def forward(self, x):
        y = apf.avg_pool(x, 3, 1, 2, dilation=2, count_include_pad=False, channels_last=self.channels_last)
        return apf.max_pool(y, 2, channels_last=self.channels_last)


@pytest.mark.parametrize("channels_last", [False, True])
def test_dilated_channels_last_functional_calls_export(channels_last):
    module = _Functional(channels_last).eval()
    x = torch.rand(2, 9, 8, 3) if channels_last else torch.rand(2, 3, 9, 8)
    want = _oracle(module, x)
    for model in (_dynamo(module, x), _torchscript(module, x)):
        _standard(model)
        np.testing.assert_allclose(_run(model, x)[0], want, rtol=2e-6, atol=1e-6)


def test_torch_export_then_onnx_export():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        apnn.AvgPool2d(3, 2, padding="same", convention="tensorflow"),
        nn.ReLU(),
        apnn.MaxPool2d(2),
        apnn.BlurPool2d(4),
        apnn.GlobalAvgPool(keepdims=False),
        nn.Linear(4, 2),
    ).eval()
    x = torch.randn(1, 3, 15, 15)
    program = torch.export.export(model, (x,))
    assert any("avgpool" in str(n.target) for n in program.graph.nodes)  # avgpool's kernels, kept
    np.testing.assert_allclose(program.module()(x).detach().numpy(), model(x).detach().numpy())
    onnx_model = torch.onnx.export(program, verbose=False).model_proto
    _standard(onnx_model)
    np.testing.assert_allclose(_run(onnx_model, x)[0], model(x).detach().numpy(), rtol=1e-5, atol=1e-6)


def test_max_pool_indices_are_torch_s_per_plane_indices():
    module = apnn.MaxPool2d(3, 2, 1, return_indices=True).eval()
    x = torch.randn(2, 3, 9, 7)
    values, indices = _run(_dynamo(module, x), x)
    want_values, want_indices = module(x)
    np.testing.assert_array_equal(values, want_values.numpy())
    np.testing.assert_array_equal(indices, want_indices.numpy())


@pytest.mark.filterwarnings(
    "ignore:`torch.jit.script_method` is deprecated:DeprecationWarning"
)  # torch.compile's own
def test_the_decomposition_stands_aside_outside_an_export():
    """PyTorch's decomposition table holds avgpool's entries; only an ONNX export uses them."""
    from torch._decomp import decomposition_table

    x = torch.rand(1, 1, 6, 6)
    gm = torch.fx.experimental.proxy_tensor.make_fx(
        lambda t: apf.avg_pool(t, 2), decomposition_table=decomposition_table, tracing_mode="symbolic"
    )(x)
    assert any("avgpool" in str(n.target) for n in gm.graph.nodes)
    np.testing.assert_allclose(gm(x).numpy(), apf.avg_pool(x, 2).numpy())
    assert torch.ops.avgpool.avg_pool.default in decomposition_table
    compiled = torch.compile(lambda t: apf.avg_pool(t, 2), dynamic=True, fullgraph=True)
    np.testing.assert_allclose(compiled(x).numpy(), apf.avg_pool(x, 2).numpy())


def test_adaptive_max_that_onnx_cannot_express_is_refused():
    with pytest.raises(Exception, match="adaptive max pooling exports to ONNX only when"):
        _dynamo(apnn.AdaptiveMaxPool2d((4, 3)), torch.rand(1, 1, 9, 7))


def test_translation_table_covers_every_forward_op():
    """For PyTorch before 2.8: the dynamo exporter's custom_translation_table."""
    table = apo.translation_table()
    for name in ("avg_pool", "max_pool", "lp_pool", "adaptive_avg_pool", "adaptive_max_pool", "blur_pool"):
        assert getattr(torch.ops.avgpool, name).default in table
    x = torch.rand(2, 3, 8, 6)
    module = apnn.AvgPool2d(3, 2, padding="same", convention="tensorflow").eval()
    program = torch.onnx.export(module, (x,), dynamo=True, custom_translation_table=table, verbose=False)
    np.testing.assert_allclose(_run(program.model_proto, x)[0], _oracle(module, x), rtol=2e-6, atol=1e-6)
    assert issubclass(AvgPoolError, ValueError)


def test_a_pytorch_without_the_torchscript_exporter_still_imports(monkeypatch):
    """PyTorch deprecates the TorchScript exporter; when it is gone, install keeps the rest."""
    monkeypatch.delattr(torch.onnx, "register_custom_op_symbolic")
    assert apo.install() is True  # the dynamo exporter's decompositions, as before
