"""The real-layers and per-call suites: the layer table, the new ops' peers, the summary, a smoke run.

Deterministic only: no assertion here depends on how fast anything ran.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import avgpool
from avgpool.bench import PEERS, avgpool_call, make_inputs
from avgpool.bench.cases import Case, make_grad_output, suite_table
from avgpool.bench.layers import LAYERS_FILE, layer_cases, layer_rows, suite_settings, summarize_layers
from avgpool.bench.overhead import module_pair, summarize_overhead
from avgpool.bench.report_suites import layers_targets

ROOT = Path(__file__).resolve().parents[2]
ROWS = layer_rows()
MODELS = ("resnet50", "vgg16", "inception_v3", "inception_v4", "densenet121", "mobilenet_v2", "resnet50_aa")


# -- the table -----------------------------------------------------------------------------------


def test_the_layer_table_names_every_model_and_no_row_twice():
    keys = [row["key"] for row in ROWS]
    assert len(keys) == len(set(keys)) >= 30
    used = {where.split(":")[0] for row in ROWS for where in row["used_by"]}
    assert used == set(MODELS)
    ops = {row["op"] for row in ROWS}
    assert ops == {"avg", "max", "global_avg", "adaptive_avg", "blur"}
    by_key = {row["key"]: row for row in ROWS}
    # exact geometry as the models have it
    assert by_key["max3x3s2p1_64x112x112"]["used_by"] == ["resnet50: maxpool", "densenet121: features.pool0"]
    assert by_key["avg3x3s1p1_768x17x17"]["count_include_pad"] is True  # torchvision's Inception-v3
    assert by_key["avg3x3s1p1ex_1024x17x17"]["count_include_pad"] is False  # timm's Inception-v4
    blur = by_key["blur4s2refl_64x111x111"]
    assert (blur["filt_size"], blur["stride"], blur["pad_type"], blur["pad_off"]) == (4, 2, "reflect", 0)
    assert "mobilenet_v2: forward (F.)" in by_key["global_1280x7x7"]["used_by"]


def _forward(row, x):
    if row["op"] == "avg":
        return avgpool.avg_pool(
            x, row["kernel"], row["stride"], row["padding"],
            ceil_mode=row.get("ceil_mode", False), count_include_pad=row["count_include_pad"],
        )  # fmt: skip
    if row["op"] == "max":
        return avgpool.max_pool(
            x, row["kernel"], row["stride"], row["padding"], ceil_mode=row.get("ceil_mode", False)
        )
    if row["op"] == "global_avg":
        return avgpool.global_avg_pool(x)
    if row["op"] == "adaptive_avg":
        return avgpool.adaptive_avg_pool(x, row["output_size"])
    return avgpool.blur_pool(
        x, row["filt_size"], row["stride"], pad_type=row["pad_type"], pad_off=row["pad_off"]
    )


@pytest.mark.parametrize("row", ROWS, ids=lambda r: r["key"])
def test_every_row_is_a_valid_geometry_with_its_recorded_output(row):
    c, h, w = row["shape"]
    x = np.zeros((1, 2, h, w), np.float32)  # the geometry does not depend on the channels
    assert _forward(row, x).shape == (1, 2, *row["out"][1:])
    assert row["out"][0] == c
    for case in layer_cases([1], [1], keys=[row["key"]]):
        assert case.out_array_shape == (
            (1, *row["out"][1:], c) if case.channels_last else (1, *row["out"])
        ), case.id


def test_layer_cases_run_every_row_at_the_suites_batches_and_layouts():
    suite = suite_settings()
    cases = layer_cases()
    passes = len(suite["batches"]) + len(suite["train_batches"])
    assert len(cases) == len(ROWS) * passes * 2
    first = [c for c in cases if c.key.startswith(ROWS[0]["key"] + "/")]
    assert [c.id for c in first][:2] == [f"{ROWS[0]['key']}/b1/cf", f"{ROWS[0]['key']}/b1/cl"]
    train = [c for c in cases if c.fwd_bwd]
    assert {c.shape[0] for c in train} == set(suite["train_batches"])
    assert train[0].timed_output_shape == train[0].array_shape  # a training step returns grad_input
    with pytest.raises(ValueError, match="unknown"):
        layer_cases(keys=["no-such-layer"])


def _import_torchvision_models():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import real_layers
    finally:
        sys.path.pop(0)
    if (
        importlib.util.find_spec("torchvision") is None
        or importlib.util.find_spec("antialiased_cnns") is None
    ):
        pytest.skip("torchvision or antialiased_cnns is not installed")
    try:
        real_layers._import_torchvision()
    except Exception as error:  # a broken torchvision install
        pytest.skip(f"torchvision does not import: {error}")
    return real_layers


def test_the_generator_reproduces_the_committed_rows():
    """Three models (module pools, Inception's functional pools, blur pools) rebuilt and
    recorded again give the committed rows and the committed places they are used."""
    real_layers = _import_torchvision_models()
    names = ["resnet50", "inception_v3", "resnet50_aa"]
    fresh = real_layers.collect(names)
    committed = {row["key"]: row for row in ROWS}
    for row in fresh:
        kept = committed[row["key"]]
        assert {k: v for k, v in row.items() if k != "used_by"} == {
            k: v for k, v in kept.items() if k != "used_by"
        }
        assert row["used_by"] == [u for u in kept["used_by"] if u.split(":")[0] in names]
    expected = {row["key"] for row in ROWS if any(u.split(":")[0] in names for u in row["used_by"])}
    assert {row["key"] for row in fresh} == expected
    assert real_layers.TABLE == LAYERS_FILE


# -- the new ops and their peers ---------------------------------------------------------------

TINY_NEW = [
    Case("blur", "blur 4/2", "blur", (2, 3, 9, 9), None, (2, 2), filt_size=4),
    Case(
        "blur3", "blur 3/2 replicate", "blur", (2, 3, 8, 8), None, (2, 2), filt_size=3, pad_type="replicate"
    ),
    Case("ad", "adaptive 7 on 7", "adaptive_avg", (2, 3, 7, 7), None, output_size=(7, 7)),
    Case("ad2", "adaptive 2 on 6", "adaptive_avg", (2, 3, 6, 6), None, output_size=(2, 2)),
    Case("maxceil", "max 3x3/2 ceil", "max", (2, 3, 8, 8), (3, 3), (2, 2), ceil_mode=True),
    Case("avgceil", "avg 3x3/2 p1 ceil", "avg", (2, 3, 8, 8), (3, 3), (2, 2), 1, False, ceil_mode=True),
]
TINY_NEW += [
    Case(f"{c.key}-step", c.title, c.op, c.shape, c.kernel, c.stride, c.padding, c.count_include_pad,
         ceil_mode=c.ceil_mode, output_size=c.output_size, filt_size=c.filt_size, pad_type=c.pad_type,
         fwd_bwd=True)
    for c in TINY_NEW
] + [
    Case("g-step", "global", "global_avg", (2, 3, 5, 5), None, fwd_bwd=True),
    Case("a-step", "avg 3x3/1 p1 ex", "avg", (2, 3, 6, 6), (3, 3), (1, 1), 1, False, fwd_bwd=True),
]  # fmt: skip
TINY_NEW = [c.__class__(**{**c.__dict__, "channels_last": cl}) for c in TINY_NEW for cl in (False, True)]


@pytest.mark.parametrize("case", TINY_NEW, ids=lambda c: c.id)
def test_every_peer_computes_what_avgpool_computes_for_the_new_ops(case):
    x = make_inputs(case, 1, seed=5)[0]
    expected = avgpool_call(case)(x)
    assert expected.shape == case.timed_output_shape
    ran = []
    for peer in PEERS:
        if peer.applies(case) is not None:
            continue
        prepared = peer.prepare(case, [x], threads=1)
        got = prepared.to_numpy(prepared.call(prepared.inputs[0]))
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6, err_msg=prepared.label)
        ran.append(peer.name)
    assert "torch" in ran  # torch computes every op, forward and forward+backward
    assert ("onnxruntime" in ran) == (not case.fwd_bwd)  # no gradients in ONNX Runtime


def test_a_training_step_returns_the_gradient_of_its_forward():
    import torch

    case = Case("s", "max 2x2/2", "max", (1, 2, 4, 4), (2, 2), fwd_bwd=True)
    x = make_inputs(case, 1)[0]
    g = avgpool_call(case)(x)
    xt = torch.from_numpy(x).requires_grad_(True)
    (expected,) = torch.autograd.grad(
        torch.nn.functional.max_pool2d(xt, 2), xt, torch.from_numpy(make_grad_output(case))
    )
    np.testing.assert_allclose(g, expected.numpy(), rtol=1e-6)


# -- the summaries -------------------------------------------------------------------------------


def _row(case_id, ratio, path, best="torch"):
    return {
        "case": {"id": case_id},
        "avgpool": {"status": "ok", "median_ms": 1.0, "path": path},
        "best_peer": best,
        "best_peer_ms": ratio,
    }


def test_a_case_won_through_a_peers_kernel_is_no_win():
    rows = [
        _row("a/b1/cf", 2.0, ["avg_pool: box_planes.avg_planes_direct"]),
        _row("b/b1/cf", 4.0, ["global_avg_pool: torch.ops.aten.mean"]),  # a peer's kernel did the work
        _row("c/b1/cf", 0.5, ["max_pool: cpu_max.max_values"]),
    ]
    summary = summarize_layers(rows, {"min_ratio": 1.0, "geomean_ratio": 1.3})
    assert summary["cases_compared"] == 3 and summary["at_least_min"] == 1
    assert summary["peer_path_cases"] == ["b/b1/cf"]
    assert summary["geomean"]["value"] == pytest.approx((2.0 * 1.0 * 0.5) ** (1 / 3))  # b enters at 1.0
    assert not summary["every_case"]["pass"] and not summary["geomean"]["pass"]
    lines = layers_targets(summary)
    assert lines[0].startswith(
        "- ❌ real layers: every case at >= 1.0x the best peer on the same layout: 1 of 3"
    )
    assert lines[1] == "- ❌ real layers: geometric mean >= 1.30x: 1.00x"
    assert lines[2].endswith("(counted as no win): b/b1/cf")
    good = summarize_layers(rows[:1], {"min_ratio": 1.0, "geomean_ratio": 1.3})
    assert good["every_case"]["pass"] and good["geomean"]["pass"]


def test_overhead_targets_take_the_worst_row():
    result = {
        "modules": [
            {"pass": "fwd", "ratio": 1.4},
            {"pass": "fwd", "ratio": 1.6},
            {"pass": "fwd+bwd", "ratio": 9.0},
        ],
        "numpy": [{"us": 3.0}],
        "models": [{"model": "strided", "swapped": 0}, {"ratio": 1.1}],
    }
    s = summarize_overhead(result)
    assert (s["modules"]["worst"], s["modules"]["pass"], s["modules"]["target"]) == (1.6, False, 1.5)
    assert s["modules_fwd_bwd"]["worst"] == 9.0
    assert s["numpy"]["pass"] and s["models"]["pass"] and s["models"]["target"] == 1.2


def test_every_overhead_module_has_a_twin_that_computes_the_same():
    import torch

    x = torch.randn(tuple(suite_table("overhead")["shape"]))
    for spec in suite_table("overhead")["module"]:
        ours, theirs = module_pair(spec)
        a, b = ours(x), theirs(x)
        a, b = (a[0], b[0]) if isinstance(a, tuple) else (a, b)
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=spec["name"])


# -- a smoke run ---------------------------------------------------------------------------------


def test_quick_run_of_the_layers_and_overhead_suites(tmp_path):
    """``avgpool bench suite`` (what benchmarks/run.py runs too) on a few cases of every suite."""
    cmd = [sys.executable, "-m", "avgpool", "bench", "suite", "--quick", "--scale", "tiny", "--no-progress"]
    cmd += ["--cases", "global_2048x7x7/b1/*,avg2x2s2/cf", "--repeats", "3", "--bandwidth-mib", "8"]
    cmd += ["--out", str(tmp_path)]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=240)
    assert done.returncode == 0, done.stderr
    results = json.loads((tmp_path / "latest.json").read_text())
    assert results["suites"] == ["synthetic", "layers", "overhead", "dask"]
    assert [r["case"]["id"] for r in results["cases"]] == ["avg2x2s2/cf"]
    layers = results["layers"]["cases"]
    assert [r["case"]["id"] for r in layers] == ["global_2048x7x7/b1/cf", "global_2048x7x7/b1/cl"]
    for row in layers:
        assert row["avgpool"]["status"] == "ok" and row["avgpool"]["path"], row["case"]["id"]
        assert row["ratio"] > 0 and row["peer_path"] is False
        assert row["used_by"] == ["resnet50: avgpool", "resnet50_aa: avgpool"]
        assert row["peers"]["torch"]["agrees"] is True and row["peers"]["onnxruntime"]["agrees"] is True
    overhead = results["overhead"]
    assert len(overhead["modules"]) == 2 * len(suite_table("overhead")["module"])  # fwd and fwd+bwd each
    assert all(r["ratio"] > 0 for r in overhead["modules"]) and all(r["us"] > 0 for r in overhead["numpy"])
    assert {r["model"] for r in overhead["models"] if "ratio" in r} == {"avg", "max", "blur", "avg-gap"}
    md = (tmp_path / "latest.md").read_text()
    assert md == done.stdout.strip() + "\n"
    for heading in ("## Synthetic cases", "## Real layers", "## Per-call overhead", "## Performance targets"):
        assert heading in md
    assert "| global avg | 2048x7x7 | resnet50, resnet50_aa | fwd | 1 | NCHW |" in md
    assert "global_avg_pool" in md  # the path column
    targets = md.split("## Performance targets")[1]
    assert targets.count("- ✅") + targets.count("- ❌") == 3 + 2 + 3
