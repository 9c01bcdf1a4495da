"""`avgpool bench`: latency statistics, the A/B ratio, op and model mode, the CLI.

Deterministic only: statistics run on fake clocks and synthetic samples, and no assertion
depends on how fast anything ran. Measurements use a few calls and a short budget.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from avgpool._errors import AvgPoolError
from avgpool.bench.ab import ratio_of_medians, time_pairs
from avgpool.bench.latency import (
    DEFAULT_BATCH_SIZES,
    LatencySettings,
    bench_model,
    bench_op,
    compare_models,
)
from avgpool.bench.memory import PeakRSS, rss_bytes
from avgpool.bench.models import InputSpec, file_batches, random_batches
from avgpool.bench.timing import time_calls
from avgpool.cli import main

QUICK = LatencySettings(warmup=1, repeats=4, budget_s=0.2, rotate=2)
PEER_NAMES = ("torch", "onnxruntime", "cv2", "scipy")


def tiny_net():
    """The factory that the ``tests.bench.test_latency:tiny_net`` spec names."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(4 * 4 * 4, 2)
    )


def onnx_model(batch="N"):
    """Conv 3->4 (3x3, pad 1), AveragePool 2x2/2, GlobalAveragePool on x: (batch, 3, 8, 8)."""
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper, numpy_helper

    weight = np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
            helper.make_node("AveragePool", ["c"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
            helper.make_node("GlobalAveragePool", ["p"], ["y"]),
        ],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 4, 1, 1])],
        [numpy_helper.from_array(weight, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory):
    import onnx

    model = onnx_model()
    path = tmp_path_factory.mktemp("lat_onnx") / "tiny.onnx"
    onnx.save(model, str(path))
    return str(path)


# -- statistics ----------------------------------------------------------------------------------


def durations_clock(durations):
    """A clock under which successive timed calls take ``durations`` seconds (start, stop pairs)."""
    ticks = itertools.accumulate(itertools.chain.from_iterable((0.0, d) for d in durations))
    return lambda: next(ticks)


def test_percentiles_are_nearest_rank_with_their_count():
    durations = [i / 1000 for i in range(200, 0, -1)]  # 200 calls: 200 ms down to 1 ms
    timing = time_calls(
        lambda _: None, [0], repeats=200, warmup=0, budget_s=1e9, clock=durations_clock(durations)
    )
    lat = timing.latency()
    assert lat["n"] == 200 and not lat["budget_limited"]
    # the ceil(p/100 * 200)-th smallest: 100th, 180th, 190th, 198th
    assert [lat[f"p{p}_ms"] for p in (50, 90, 95, 99)] == pytest.approx([100, 180, 190, 198])
    assert lat["min_ms"] == pytest.approx(1) and lat["max_ms"] == pytest.approx(200)
    assert lat["mean_ms"] == pytest.approx(100.5)


def test_few_samples_make_p99_the_slowest_call():
    timing = time_calls(
        lambda _: None, [0], repeats=10, warmup=0, budget_s=1e9, clock=durations_clock([0.001] * 9 + [0.5])
    )
    lat = timing.latency()
    assert lat["n"] == 10 and lat["p50_ms"] == pytest.approx(1)
    assert lat["p95_ms"] == lat["p99_ms"] == lat["max_ms"] == pytest.approx(500)


def test_ratio_of_medians_recovers_a_known_ratio():
    rng = np.random.default_rng(1)
    drift = rng.lognormal(0.0, 0.3, 400)  # shared by both members of a pair
    a = 2e-3 * drift * rng.lognormal(0.0, 0.05, 400)
    b = 1.5 * 2e-3 * drift * rng.lognormal(0.0, 0.05, 400)
    r = ratio_of_medians(a, b, seed=3)
    assert r.ratio == pytest.approx(1.5, rel=0.05)
    assert r.low < 1.5 < r.high and r.high - r.low < 0.2
    assert r.pair_p10 < 1.5 < r.pair_p90
    assert r.verdict == "B slower" and r.n == 400 and r.resamples == 2000
    assert ratio_of_medians(a, b, seed=3) == r  # seeded: the same interval again
    same = ratio_of_medians(a, a * rng.lognormal(0.0, 0.05, 400), seed=0)
    assert same.low < 1 < same.high and same.verdict == "no clear difference"
    faster = ratio_of_medians(b, a)
    assert faster.ratio == pytest.approx(1 / r.ratio) and faster.verdict == "B faster"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"a": [1.0], "b": [1.0, 2.0]}, "paired samples"),
        ({"a": [1.0], "b": [1.0], "confidence": 1.0}, "confidence"),
        ({"a": [1.0], "b": [1.0], "resamples": 10}, "resamples"),
        ({"a": [0.0], "b": [1.0]}, "> 0"),
    ],
)
def test_ratio_of_medians_rejects_bad_arguments(kwargs, message):
    with pytest.raises(AvgPoolError, match=message):
        ratio_of_medians(**kwargs)


def test_time_pairs_interleaves_and_pairs_the_inputs():
    order = []
    ta, tb = time_pairs(
        lambda x: order.append(("a", x)),
        lambda x: order.append(("b", x)),
        [0, 1, 2],
        [0, 1, 2],
        repeats=4,
        warmup=2,
        clock=durations_clock([0.001, 0.003] * 6),
    )
    assert order[:4] == [("a", 0), ("b", 0), ("b", 1), ("a", 1)]  # warm-up pairs, untimed
    assert order[4:] == [("a", 2), ("b", 2), ("b", 0), ("a", 0), ("a", 1), ("b", 1), ("b", 2), ("a", 2)]
    assert ta.n == tb.n == 4 and ta.warmup == 2
    # the clock gives the first call of each pair 1 ms and the second 3 ms: AB, BA alternate
    assert ta.samples == pytest.approx((0.001, 0.003, 0.001, 0.003))
    assert tb.samples == pytest.approx((0.003, 0.001, 0.003, 0.001))


def test_time_pairs_budget_covers_both():
    ta, tb = time_pairs(
        lambda _: None,
        lambda _: None,
        [0],
        [0],
        repeats=10,
        warmup=0,
        budget_s=5.0,
        clock=durations_clock([1.0] * 20),
    )
    assert ta.n == tb.n == 3 and ta.budget_limited  # 2 s per pair: 2, 4, 6 >= 5


# -- memory --------------------------------------------------------------------------------------


def test_peak_rss_sees_a_short_lived_allocation():
    with PeakRSS() as memory:
        block = np.ones(32 << 20, dtype=np.uint8)  # 32 MiB, touched
        del block
    assert memory.method
    assert memory.start_bytes > 0 and memory.peak_bytes >= memory.start_bytes + (24 << 20)
    assert rss_bytes() > 0


# -- inputs --------------------------------------------------------------------------------------


def test_inputs_rotate_seeded_and_from_a_file():
    specs = [InputSpec("x", (2,), "float32"), InputSpec("ids", (3,), "int64")]
    sets = random_batches(specs, batch=4, count=3, seed=7)
    again = random_batches(specs, batch=4, count=3, seed=7)
    assert [s["x"].shape for s in sets] == [(4, 2)] * 3 and sets[0]["ids"].dtype == np.int64
    assert all(np.array_equal(s["x"], t["x"]) for s, t in zip(sets, again))
    assert not np.array_equal(sets[0]["x"], sets[1]["x"])  # different inputs in turn
    samples = {"x": np.arange(10, dtype=np.float64).reshape(5, 2), "ids": np.zeros((5, 3), dtype=np.int32)}
    batches = file_batches(specs, samples, batch=4, count=2)
    assert batches[1]["x"][:, 0].tolist() == [8, 0, 2, 4]  # samples 4, 0, 1, 2: wrapped around
    assert batches[0]["x"].dtype == np.float32 and batches[0]["ids"].dtype == np.int64
    with pytest.raises(AvgPoolError, match="--inputs lacks"):
        file_batches(specs, {"x": samples["x"], "other": samples["ids"]}, 2, 1)


# -- op mode -------------------------------------------------------------------------------------


def test_op_mode_times_every_peer_and_they_agree_with_avgpool():
    result = bench_op((2, 3, 10, 10), 3, 1, 1, batch_sizes=(1, 2), threads=1, settings=QUICK)
    rows = {(r["implementation"], r["batch"]): r for r in result.results}
    assert set(rows) == {(name, b) for name in ("avgpool", *PEER_NAMES) for b in (1, 2)}
    for (name, batch), r in rows.items():
        if name != "avgpool" and r["status"] == "n/a":
            assert "not installed" in r["reason"]
            continue
        assert r["status"] == "ok", r
        assert r["n"] == 4 and r["p50_ms"] <= r["p95_ms"] <= r["p99_ms"] <= r["max_ms"]
        assert r["throughput_per_s"] == pytest.approx(batch / (r["p50_ms"] / 1e3))
        assert r["rss_peak_bytes"] > 0 and r["rss_peak_delta_bytes"] >= 0
        if name != "avgpool":
            assert r["agrees"] and r["max_abs_diff"] < 1e-5
    assert rows[("torch", 1)]["status"] == "ok"  # torch is in the test environment
    d = json.loads(json.dumps(result.to_dict()))
    assert d["output_shape"] == [2, 3, 10, 10] and d["window"]["padding"] == [[1, 1], [1, 1]]


def test_op_mode_channels_last_convention_and_what_peers_cannot_take():
    result = bench_op(
        (1, 9, 9, 4),
        3,
        2,
        "same",
        convention="tensorflow",
        channels_last=True,
        peers=["torch"],
        settings=QUICK,
    )
    assert result.layout == "NHWC" and result.output_shape == (1, 5, 5, 4)
    avg, torch_row = result.results
    assert avg["status"] == "ok" and torch_row["status"] == "ok" and torch_row["agrees"]
    dilated = bench_op((1, 2, 9, 9), 3, 1, dilation=2, op="max", peers=["torch", "scipy"], settings=QUICK)
    assert [r["status"] for r in dilated.results] == ["ok", "n/a", "n/a"]
    assert all("dilation" in r["reason"] for r in dilated.results[1:])


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"dtype": "int8"}, TypeError, "dtype"),
        ({"peers": ["tensorflow"]}, AvgPoolError, "peers"),
        ({"batch_sizes": [0]}, AvgPoolError, "batch sizes"),
        ({"threads": 0}, AvgPoolError, "threads"),
        ({"op": "lp"}, AvgPoolError, "op"),
    ],
)
def test_op_mode_rejects_bad_arguments(kwargs, error, message):
    with pytest.raises(error, match=message):
        bench_op((1, 1, 4, 4), 2, settings=QUICK, **kwargs)


# -- model mode ----------------------------------------------------------------------------------


def test_onnx_model_sweep_memory_and_size(onnx_file):
    result = bench_model(onnx_file, batch_sizes=(3, 1), settings=QUICK)
    d = json.loads(json.dumps(result.to_dict()))
    assert [b["batch"] for b in d["batches"]] == [1, 3]  # smallest first
    assert d["model"]["format"] == "onnx" and d["model"]["size_bytes"] == os.path.getsize(onnx_file)
    assert d["model"]["inputs"] == [{"name": "x", "sample_shape": [3, 8, 8], "dtype": "float32"}]
    for b in d["batches"]:
        assert b["n"] == 4 and len(b["samples_ms"]) == 4
        assert b["p50_ms"] <= b["p90_ms"] <= b["p95_ms"] <= b["p99_ms"] <= b["max_ms"]
        assert b["throughput_per_s"] == pytest.approx(b["batch"] / (b["p50_ms"] / 1e3))
        assert b["input_bytes"] == QUICK.rotate * b["batch"] * 3 * 8 * 8 * 4
        assert b["rss_peak_bytes"] > 0 and d["rss_baseline_bytes"] > 0 and b["memory_method"]
        assert b["rss_peak_delta_bytes"] == b["rss_peak_bytes"] - d["rss_baseline_bytes"] - b["input_bytes"]
        assert b["cuda_peak_bytes"] is None and b["first_call_ms"] > 0
    default = bench_model(onnx_file, settings=QUICK)
    assert default.model["fixed_batch"] is None
    assert [b["batch"] for b in default.batches] == list(DEFAULT_BATCH_SIZES) == [1, 8, 32]


def test_onnx_size_counts_external_data_and_a_fixed_batch_is_kept(tmp_path):
    import onnx

    path = tmp_path / "fixed.onnx"
    onnx.save_model(
        onnx_model(batch=2), str(path), save_as_external_data=True, location="fixed.bin", size_threshold=0
    )
    result = bench_model(str(path), settings=QUICK)
    model = result.to_dict()["model"]
    assert model["size_bytes"] == path.stat().st_size + (tmp_path / "fixed.bin").stat().st_size
    assert model["fixed_batch"] == 2 and [b["batch"] for b in result.batches] == [2]
    with pytest.raises(AvgPoolError, match=r"batch sizes: .* fixes its batch size at 2"):
        bench_model(str(path), batch_sizes=[1, 4], settings=QUICK)


def test_torch_factory_spec_and_pt_file(tmp_path):
    torch = pytest.importorskip("torch")
    result = bench_model(
        "tests.bench.test_latency:tiny_net", input_shapes={"": (1, 3, 8, 8)}, batch_sizes=(2,), settings=QUICK
    )
    model = result.to_dict()["model"]
    assert model["format"] == "torch" and [b["batch"] for b in result.batches] == [2]
    assert result.batches[0]["n"] == 4 and result.batches[0]["rss_peak_bytes"] > 0
    saved = tmp_path / "archive.pt"  # torch names a file's records after it; a buffer's "archive"
    torch.save(tiny_net().state_dict(), saved)
    assert model["size_bytes"] == saved.stat().st_size  # the state_dict's serialized size
    module = tmp_path / "tiny.pt"
    torch.save(tiny_net(), module)
    with pytest.raises(AvgPoolError, match="--trust-file"):
        bench_model(str(module), input_shapes={"": (1, 3, 8, 8)}, batch_sizes=(1,), settings=QUICK)
    from_file = bench_model(
        str(module), input_shapes={"": (1, 3, 8, 8)}, batch_sizes=(1,), settings=QUICK, trust=True
    )
    assert from_file.model["size_bytes"] == module.stat().st_size
    assert from_file.model["size_files"] == [str(module)]
    with pytest.raises(AvgPoolError, match="--input-shape"):
        bench_model("tests.bench.test_latency:tiny_net", settings=QUICK)


def test_ab_comparison_of_two_models(onnx_file):
    result = compare_models(onnx_file, onnx_file, batch_sizes=(1, 2), settings=QUICK, resamples=200)
    d = json.loads(json.dumps(result.to_dict()))
    assert d["mode"] == "compare" and d["shared_inputs"] and [b["batch"] for b in d["batches"]] == [1, 2]
    for b in d["batches"]:
        assert b["pairs"] == len(b["a"]["samples_ms"]) == len(b["b"]["samples_ms"]) == 4
        r = b["ratio"]
        assert r["ratio"] == pytest.approx(b["b"]["p50_ms"] / b["a"]["p50_ms"])
        assert r["low"] <= r["ratio"] <= r["high"] and r["n"] == 4 and r["resamples"] == 200
        assert b["rss_peak_bytes"] > 0


def test_ab_of_torch_against_onnx_shares_inputs(onnx_file):
    pytest.importorskip("torch")
    result = compare_models(
        "tests.bench.test_latency:tiny_net",
        onnx_file,
        input_shapes={"": (1, 3, 8, 8)},
        batch_sizes=(2,),
        settings=QUICK,
        resamples=200,
    )
    assert result.shared_inputs and result.a["format"] == "torch" and result.b["format"] == "onnx"
    assert result.batches[0]["pairs"] == 4


# -- the command ---------------------------------------------------------------------------------


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


FAST = ("--warmup", "1", "--repeats", "3", "--budget", "0.2", "--no-progress")


def test_cli_op_json_and_table(capsys):
    code, out, _ = run(
        capsys, "bench", "op", "1x2x6x6", "-k", "2", "--peers", "torch", "--threads", "1", *FAST, "--json"
    )
    d = json.loads(out)
    assert (
        code == 0
        and d["mode"] == "op"
        and [r["implementation"] for r in d["results"]] == ["avgpool", "torch"]
    )
    assert d["results"][1]["agrees"] is True and d["output_shape"] == [1, 2, 3, 3]
    code, out, _ = run(capsys, "bench", "op", "1x2x6x6", "-k", "2", "--peers", "none", *FAST)
    assert code == 0 and "p99 ms" in out and "avgpool" in out and "nearest-rank" in out


def test_cli_model_json_markdown_and_against(capsys, onnx_file):
    code, out, _ = run(capsys, "bench", "model", onnx_file, "-b", "1,2", *FAST, "--json")
    d = json.loads(out)
    assert code == 0 and [b["batch"] for b in d["batches"]] == [1, 2]
    assert d["model"]["size_bytes"] == os.path.getsize(onnx_file)
    code, out, _ = run(capsys, "bench", "model", onnx_file, "-b", "1", *FAST, "--markdown")
    assert code == 0 and out.startswith("**tiny.onnx") and "| p99 ms |" in out
    code, out, _ = run(
        capsys, "bench", "model", onnx_file, "--against", onnx_file, "-b", "1", "--resamples", "100", *FAST
    )
    assert code == 0 and "B/A" in out and "95% CI" in out and "bootstrap" in out


def test_cli_model_inputs_file(capsys, onnx_file, tmp_path):
    npz = tmp_path / "samples.npz"
    np.savez(npz, x=np.random.default_rng(0).standard_normal((5, 3, 8, 8)).astype(np.float32))
    code, out, _ = run(capsys, "bench", "model", onnx_file, "--inputs", str(npz), "-b", "4", *FAST, "--json")
    d = json.loads(out)
    assert code == 0 and d["inputs"] == "sample file" and d["batches"][0]["batch"] == 4


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["op", "1x1x4x4", "-k", "2", "--repeats", "0"], "repeats must be >= 1"),
        (["op", "1x1x4x4", "-k", "2", "--budget", "0"], "budget must be > 0"),
        (["op", "1x1x4x4", "-k", "2", "--warmup", "-1"], "warmup must be >= 0"),
        (["op", "1x1x4x4", "-k", "2", "--threads", "0"], "threads must be >= 1"),
        (["op", "1x1x4x4", "-k", "2", "-b", "0"], "batch sizes must be >= 1"),
        (["op", "1x1x4x4", "-k", "5"], "larger than the padded input"),
        (["op", "1x1x4x4", "-k", "2", "-p", "same"], "padding='same'"),
        (["model", "MISSING.onnx"], "MISSING.onnx: no such model file"),
        (["model", "tests.bench.test_latency:tiny_net"], "--input-shape"),
        (["model", "ONNX", "-i", "y:1x3x8x8"], "--input-shape names ['y']"),
        (["model", "ONNX", "--rotate", "0"], "rotate must be >= 1"),
        (["model", "ONNX", "--device", "tpu"], "device must be 'cpu' or 'cuda'"),
        (["model", "ONNX", "--against", "ONNX", "--resamples", "5"], "resamples must be >= 100"),
        (["model", "ONNX", "--against", "ONNX", "--confidence", "2"], "confidence must be in (0, 1)"),
        (["model", "ONNX", "-i", "1x3x8x8", "--inputs", "x.npz"], "--input-shape or --inputs"),
    ],
)
def test_cli_bad_arguments_exit_2_naming_the_argument(capsys, onnx_file, argv, message):
    argv = [onnx_file if a == "ONNX" else a for a in argv]
    code, out, err = run(capsys, "bench", *argv, "--no-progress")
    assert code == 2 and out == ""
    assert err.startswith("avgpool bench: error:") and message in err and len(err.strip().splitlines()) == 1


def broken_net():
    """The factory that ``tests.bench.test_latency:broken_net`` names: its forward raises."""
    from torch import nn

    class Broken(nn.Module):
        def forward(self, x):
            raise RuntimeError("shapes do not match\nsecond line")

    return Broken()


def test_cli_a_model_that_raises_is_bad_input_exit_2(capsys):
    # the model's own error was read as a bug in avgpool: exit 3 with 'unexpected error'
    pytest.importorskip("torch")
    argv = ["bench", "model", "tests.bench.test_latency:broken_net", "-i", "1x3x8x8", "-b", "1"]
    code, out, err = run(capsys, *argv, "--repeats", "1", "--warmup", "1", "--no-progress")
    assert code == 2 and out == ""
    assert err == (
        "avgpool bench: error: tests.bench.test_latency:broken_net: the model raised RuntimeError: "
        "shapes do not match\n"
    )
    with pytest.raises(
        AvgPoolError, match=r": the model raised RuntimeError: shapes do not match$"
    ) as caught:
        bench_model(broken_net(), input_shapes={"": (1, 3, 8, 8)}, batch_sizes=[1], settings=QUICK)
    assert isinstance(caught.value.__cause__, RuntimeError)


def test_cli_argparse_errors_name_the_argument(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["bench", "op", "1x1x4x4", "-k", "2", "--peers", "tensorflow"])
    assert exit_.value.code == 2 and "--peers" in capsys.readouterr().err


def test_import_stays_light():
    code = (
        "import sys, avgpool.bench.latency, avgpool.bench.latency_tables, avgpool.cli._bench\n"
        "print(sorted(m for m in ('torch', 'onnx', 'onnxruntime', 'psutil', 'rich', 'cv2', 'scipy') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"
