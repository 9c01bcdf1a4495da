"""Lint rules on real architectures, hand-broken variants and hand-worked single layers."""

from __future__ import annotations

import pytest

from avgpool import AvgPoolError, Window
from avgpool.inspect import RULES, PoolLayer, lint, read_model
from avgpool.inspect.lint import exceeds

from .conftest import SHAPES


def rules(findings):
    return [(f.layer, f.rule, f.severity) for f in findings]


def test_real_models(onnx_models, torch_models):
    assert rules(lint(read_model(onnx_models["resnet"]))) == [("/maxpool/MaxPool", "AP107", "info")]
    assert rules(lint(read_model(onnx_models["inception"]))) == [
        ("/reduce/MaxPool", "AP101", "warning"),  # 3x3/2 valid on 8: cell 7 is never read
        ("/reduce/MaxPool", "AP107", "info"),
        ("/ReduceMean", "AP112", "info"),
    ]
    # adaptive max to 1 exported as a fixed 2x2 MaxPool: a global pool valid for one size
    assert rules(lint(read_model(onnx_models["densenet"]))) == [
        ("/MaxPool", "AP107", "info"),
        ("/MaxPool", "AP109", "warning"),
    ]
    torch_dense = read_model(torch_models["densenet"], {"": SHAPES["densenet"]})
    assert rules(lint(torch_dense)) == [("adaptive_avg_pool2d", "AP108", "warning")]


def test_edge_truncation_message(onnx_models):
    (f,) = [f for f in lint(read_model(onnx_models["inception"])) if f.rule == "AP101"]
    assert f.message == "never read: axis 0: 1 of 8 (7); axis 1: 1 of 8 (7)"
    assert f.fix == RULES["AP101"].fix


def test_asymmetric_pads_by_target(broken):
    inv = read_model(broken["asymmetric"])  # MaxPool pads 0,0 before / 1,1 after on 32x32, k3 s2
    by_target = {
        t: {f.rule for f in lint(inv, t) if f.layer == "/maxpool/MaxPool"}
        for t in ("torch", "onnx", "tflite", "coreml")
    }
    assert by_target == {
        "torch": {"AP103", "AP107"},  # torch pads symmetrically only
        "onnx": {"AP107"},
        "tflite": {"AP107"},  # 0:1 on 32 with k3 s2 is exactly TFLite's SAME
        "coreml": {"AP107"},
    }
    (f,) = [f for f in lint(inv, "torch") if f.rule == "AP103"]
    assert f.message == "torch cannot express padding 0:1x0:1 (no symmetric padding reads the same cells)"
    assert f.severity == "error"


def test_torch_symmetric_pad_is_not_tensorflow_same(onnx_models):
    f = [f for f in lint(read_model(onnx_models["resnet"]), "tensorflow") if f.rule == "AP103"]
    assert f == []  # TF max_pool takes explicit pairs
    f = [f for f in lint(read_model(onnx_models["resnet"]), "tflite") if f.rule == "AP103"]
    assert [x.message for x in f] == [
        "tflite cannot express padding 1:0x1:0: neither VALID nor SAME (0:1x0:1) for this input"
    ]


def test_count_include_pad_against_targets(onnx_models):
    inv = read_model(onnx_models["inception"])  # branch_pool: avg 3x3/1 pad 1, counts pads

    def ap104(target):
        return [(f.severity, f.message) for f in lint(inv, target) if f.rule == "AP104"]

    assert ap104("torch") == []
    assert ap104("onnx") == [
        (
            "warning",
            "count_include_pad=True here, onnx's default is False: "
            "border outputs differ unless set explicitly",
        )
    ]
    assert ap104("tensorflow") == [
        ("error", "this average counts padded cells; tensorflow always excludes them: border outputs differ")
    ]


def layer(window: Window, shape, op="avg", **kw) -> PoolLayer:
    return PoolLayer(
        "pool", op, "AveragePool" if op == "avg" else "MaxPool", window.convention, window, shape, None, **kw
    )


def test_ceil_window_in_padding():
    # avg_pool1d(k=2, s=2, pad=1, ceil) on 5 cells: ceil asks for 4 windows, the 4th would
    # start at cell 5, the right padding; PyTorch and ORT drop it (3 outputs)
    w = Window.from_torch(2, 2, 1, ceil_mode=True, ndim=1)
    (f,) = [f for f in lint([layer(w, (1, 1, 5))]) if f.rule == "AP102"]
    assert f.message.startswith("axis 0: window 3 would start at 5 (in the padding")
    assert [f.rule for f in lint([layer(w, (1, 1, 6))])] == []  # on 6 cells the 4th starts at 5, real


def test_kernel_larger_than_input_and_stride_beyond_kernel():
    big = Window.from_onnx({"kernel_shape": [5, 5]})
    assert {f.rule for f in lint([layer(big, (1, 1, 4, 4))])} == {"AP105"}
    skip = Window.from_onnx({"kernel_shape": [2], "strides": [3]})
    found = {f.rule: f.message for f in lint([layer(skip, (1, 1, 10))])}
    assert found["AP106"] == "axis 0: stride 3 > span 2, 2 cells never read"  # 2 and 5
    assert found["AP101"] == "never read: axis 0: 2 of 10 (8-9)"


def test_features_a_target_lacks():
    w = Window.from_onnx({"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1})
    msgs = {f.message for f in lint([layer(w, (1, 1, 8, 8))], "tflite") if f.rule == "AP111"}
    assert msgs == {"ceil_mode changes the output here and tflite has no ceil mode"}
    w3 = Window.from_onnx({"kernel_shape": [2, 2, 2], "strides": [2, 2, 2]})
    assert [f.message for f in lint([layer(w3, (1, 1, 4, 4, 4))], "tflite")] == [
        "tflite pools 2-d only; this is 3-d"
    ]
    dil = Window.from_onnx({"kernel_shape": [2], "dilations": [2]})
    assert [f.rule for f in lint([layer(dil, (1, 1, 8), op="max")], "torch")] == []
    assert [f.rule for f in lint([layer(dil, (1, 1, 8))], "torch")] == ["AP111"]


def test_fail_on_and_bad_arguments(onnx_models):
    findings = lint(read_model(onnx_models["inception"]))
    assert exceeds(findings, "warning") and exceeds(findings, "info")
    assert not exceeds(findings, "error") and not exceeds(findings, "never")
    assert [f.rule for f in lint(read_model(onnx_models["inception"]), disable=["AP107", "AP112"])] == [
        "AP101"
    ]
    with pytest.raises(AvgPoolError, match="target must be one of"):
        lint([], "tpu")
    with pytest.raises(AvgPoolError, match="unknown rule IDs"):
        lint([], disable=["AP999"])


def test_zero_pad_before_max_pool():
    from .conftest import nn, torch

    class ZeroPadMax(nn.Module):
        def forward(self, x):
            return torch.nn.functional.max_pool2d(torch.nn.functional.pad(x, (1, 1, 1, 1)), 3, 2)

    inv = read_model(ZeroPadMax(), {"": (1, 1, 8, 8)})
    (f,) = [f for f in lint(inv) if f.rule == "AP110"]
    assert (f.severity, f.message) == (
        "warning",
        "pad with 0 (pad) before a max pool: padded cells can win the max",
    )


def test_pads_as_long_as_the_kernel_are_an_error():
    # ONNX Runtime refuses this node when it loads the model; inspect reported nothing
    from avgpool.inspect.onnx_reader import read_onnx

    from .conftest import onnx
    from .test_onnx_reader import _pool_model

    model = _pool_model([2, 3], [1, 3, 8, 8])
    model.graph.node[0].attribute.append(onnx.helper.make_attribute("pads", [1, 3, 0, 1]))
    (f,) = [f for f in lint(read_onnx(model)) if f.rule == "AP113"]
    assert (f.severity, f.message) == (
        "error",
        "axis 1: pads 3:1 for kernel 3 (ONNX Runtime refuses pads >= kernel_shape)",
    )
    fine = _pool_model([2, 3], [1, 3, 8, 8])
    fine.graph.node[0].attribute.append(onnx.helper.make_attribute("pads", [1, 2, 1, 2]))
    assert not [f for f in lint(read_onnx(fine)) if f.rule == "AP113"]


def test_convention_targets_are_read_from_the_convention_rules():
    """Lint's picture of what a framework can express is the rules its convention applies."""
    from avgpool.conventions import RULES
    from avgpool.inspect.lint import TARGETS, target_of

    assert set(RULES) <= set(TARGETS)
    for name in RULES:
        assert TARGETS[name] == target_of(name)
    # Keras' layers take 'same'/'valid' only, so explicit padding that is neither is flagged;
    # Flax takes any pairs, but has no ceil mode
    w = Window.from_torch(3, 2, 1, ndim=2)
    assert "AP103" in [f.rule for f in lint([layer(w, (1, 1, 8, 8))], target="keras")]
    assert "AP103" not in [f.rule for f in lint([layer(w, (1, 1, 8, 8))], target="flax")]
    ceil = Window.from_torch(2, 2, ceil_mode=True, ndim=1)
    assert "AP111" in [f.rule for f in lint([layer(ceil, (1, 1, 5))], target="flax")]
