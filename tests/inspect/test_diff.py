"""diff catches the hand-broken variants, matches across formats, and gates by category."""

from __future__ import annotations

import pytest

from avgpool import AvgPoolError
from avgpool.inspect import diff, read_model

from .conftest import SHAPES


def summary(report):
    return [(e.status, e.name, [(c.field, c.old, c.new) for c in e.changes]) for e in report.changed]


def test_identical_models_are_clean(onnx_models):
    report = diff(read_model(onnx_models["resnet"]), read_model(onnx_models["resnet"]))
    assert report.changed == () and report.disallowed() == ()
    assert [e.matched_by for e in report.entries] == ["name"] * 3


def test_a_removed_pool(onnx_models, broken):
    report = diff(read_model(onnx_models["resnet"]), read_model(broken["removed"]))
    assert summary(report) == [
        ("removed", "/down/pool/AveragePool", []),
        (
            "changed",
            "/avgpool/GlobalAveragePool",
            [("input_shape", [1, 4, 8, 8], [1, 4, 16, 16])],
        ),
    ]
    assert [e.status for e in report.disallowed()] == ["removed", "changed"]


def test_a_changed_kernel(onnx_models, broken):
    report = diff(read_model(onnx_models["resnet"]), read_model(broken["kernel"]))
    first = report.changed[0]
    assert first.name == "/maxpool/MaxPool" and first.matched_by == "name"
    assert [(c.category, c.field, c.old, c.new) for c in first.changes] == [
        ("geometry", "kernel", [3, 3], [2, 2]),
        ("shape", "output_shape", [1, 4, 16, 16], [1, 4, 17, 17]),
    ]
    # the shape change ripples down; allowing only shapes still fails on the kernel
    assert len(report.disallowed(["shape"])) == 1


def test_asymmetric_pads(onnx_models, broken):
    report = diff(read_model(onnx_models["resnet"]), read_model(broken["asymmetric"]))
    assert summary(report) == [
        ("changed", "/maxpool/MaxPool", [("padding", [[1, 1], [1, 1]], [[0, 1], [0, 1]])])
    ]
    assert report.disallowed(["geometry"]) == ()


def test_torch_model_against_its_export(torch_models, onnx_models):
    old = read_model(torch_models["resnet"], {"": SHAPES["resnet"]})
    report = diff(old, read_model(onnx_models["resnet"]))
    assert [(e.status, e.matched_by, e.categories) for e in report.entries] == [
        ("changed", "name", ("convention",)),
        ("changed", "name", ("convention",)),
        # AdaptiveAvgPool2d(1) became GlobalAveragePool: same mean, different op
        ("changed", "name", ("op", "geometry", "convention")),
    ]
    assert [e.name for e in report.disallowed()] == ["/avgpool/GlobalAveragePool"]


def test_lp_pool_rewritten_during_export(tmp_path):
    from .conftest import export, nn

    model = nn.Sequential(nn.Conv2d(1, 1, 1), nn.LPPool2d(2, 2))
    path = export(model, (1, 1, 8, 8), tmp_path / "lp.onnx")
    report = diff(read_model(model, {"": (1, 1, 8, 8)}), read_model(path))
    (entry,) = report.changed
    assert entry.name == "/1/AveragePool" and entry.matched_by == "name"
    assert {(c.field, c.old, c.new) for c in entry.changes} >= {("op", "lp", "avg"), ("p", 2.0, None)}


def test_position_matching_and_categories(onnx_models, torch_models):
    old = read_model(torch_models["densenet"], {"": SHAPES["densenet"]})
    new = read_model(onnx_models["densenet"])
    report = diff(old, new)
    pairs = [
        (e.old.name if e.old else None, e.new.name if e.new else None, e.matched_by) for e in report.entries
    ]
    assert pairs == [
        ("transition1.pool", "/transition1/pool/AveragePool", "name"),
        ("adaptive_avg_pool2d", "/AveragePool", "position"),
        ("adaptive_max_pool2d", "/MaxPool", "position"),
    ]
    with pytest.raises(AvgPoolError, match="allowed categories"):
        diff(old, new, allowed=["everything"])
