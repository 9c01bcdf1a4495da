"""The benchmark harness: floor arithmetic, fair peers, the case table, the writers, a smoke run.

Deterministic only: no assertion here depends on how fast anything ran.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from avgpool.bench import (
    PEERS,
    Bandwidth,
    Peer,
    Prepared,
    Settings,
    avgpool_call,
    floor_seconds,
    make_inputs,
    measure_bandwidth,
    nearest_rank,
    render_markdown,
    rotation_count,
    run_case,
    standard_cases,
    summarize,
    time_calls,
    write_results,
)
from tests.conformance._tolerances import conformance_tol

ROOT = Path(__file__).resolve().parents[2]
MIB = 1 << 20
TINY = standard_cases("tiny")


def reference_output(case, x):
    """avgpool's float64 reference on the case (the backend switch, where the tree has one)."""
    try:
        from avgpool._dispatch import use_backend
    except ImportError:
        return avgpool_call(case)(x)
    with use_backend("reference"):
        return avgpool_call(case)(x)


# -- the floor ---------------------------------------------------------------------------------


def test_floor_is_bytes_over_rates():
    bw = Bandwidth(20e9, 10e9, 19e9, 9e9, 12e9, 1 << 30, 2, 5)
    assert floor_seconds(64 * MIB, 16 * MIB, bw) == pytest.approx(64 * MIB / 20e9 + 16 * MIB / 10e9)
    assert floor_seconds(0, 10**9, bw) == pytest.approx(0.1)
    # a copy at 12 GB/s against reading (20) plus writing (10) the same bytes
    assert bw.copy_vs_floor == pytest.approx((1 / 12) / (1 / 20 + 1 / 10))
    d = bw.to_dict()
    assert d["read_gb_per_s"] == 20 and d["write_gb_per_s"] == 10 and d["copy_gb_per_s"] == 12


def test_floor_of_a_case_uses_its_bytes():
    bw = Bandwidth(1e9, 1e9, 1e9, 1e9, 1e9, 1, 1, 1)
    backward = next(c for c in standard_cases("full") if c.key == "bwd2x2s2")
    # backward reads grad_output (16 MiB) and writes grad_input (64 MiB)
    assert floor_seconds(backward.bytes_in, backward.bytes_out, bw) == pytest.approx(80 * MIB / 1e9)


def test_measure_bandwidth_reports_what_it_measured():
    bw = measure_bandwidth(threads=2, repeats=1, array_bytes=4 * MIB)
    assert bw.array_bytes == 4 * MIB and bw.threads == 2 and bw.repeats == 1
    assert bw.read_bytes_per_s >= bw.read_median_bytes_per_s > 0
    assert bw.write_bytes_per_s >= bw.write_median_bytes_per_s > 0 and bw.copy_bytes_per_s > 0
    with pytest.raises(ValueError, match="threads and repeats must be >= 1"):
        measure_bandwidth(threads=0, array_bytes=MIB)


# -- timing ------------------------------------------------------------------------------------


def test_nearest_rank_percentiles():
    samples = [5.0, 1.0, 4.0, 2.0, 3.0]
    assert [nearest_rank(samples, p) for p in (10, 50, 90, 100)] == [1.0, 3.0, 5.0, 5.0]
    assert nearest_rank([2.0, 1.0], 50) == 1.0  # a measured sample, never an interpolation
    with pytest.raises(ValueError, match="percentile"):
        nearest_rank(samples, 0)


def fake_clock(step):
    ticks = itertools.count()
    return lambda: next(ticks) * step


def test_time_calls_rotates_and_excludes_warmup():
    seen = []
    timing = time_calls(seen.append, ["a", "b", "c"], repeats=4, warmup=2, clock=fake_clock(0.5))
    assert seen == ["a", "b", "c", "a", "b", "c"]
    assert timing.samples == (0.5,) * 4 and not timing.budget_limited
    assert timing.summary()["median_ms"] == 500 and timing.summary()["n"] == 4


def test_time_calls_stops_at_the_budget_and_says_so():
    timing = time_calls(lambda _: None, [0], repeats=10, warmup=0, budget_s=3.0, clock=fake_clock(2.0))
    assert timing.n == 2 and timing.budget_limited  # 2 s, then 4 s >= 3 s
    one = time_calls(lambda _: None, [0], repeats=10, warmup=0, budget_s=0.0, clock=fake_clock(9.0))
    assert one.n == 1 and one.budget_limited  # never fewer than one timed call


def test_time_calls_stops_warming_at_its_budget():
    seen = []
    timing = time_calls(
        seen.append, list("abcde"), repeats=1, warmup=5, warmup_budget_s=2.0, clock=fake_clock(1.0)
    )
    assert seen == ["a", "b", "c"] and timing.warmup == 2  # warm-up stopped once 2 s had passed
    full = time_calls(lambda _: None, list("abc"), repeats=1, warmup=3, warmup_budget_s=99.0)
    assert full.warmup == 3


# -- the case table ----------------------------------------------------------------------------


def test_case_table_shapes_and_bytes():
    full = {c.id: c for c in standard_cases("full")}
    assert len(full) == 20
    assert {c.key for c in full.values()} == {
        "avg2x2s2",
        "avg3x3s1p1",
        "avg3x3s2p1ex",
        "avg7x7s1",
        "avg15x15s1",
        "global7x7",
        "avg3d2s2",
        "avg1d64s1",
        "max3x3s2p1",
        "bwd2x2s2",
    }
    expect = {  # id: (layout, stored input, stored output, MiB in, MiB out)
        "avg2x2s2/cf": ("NCHW", (16, 64, 128, 128), (16, 64, 64, 64), 64, 16),
        "avg2x2s2/cl": ("NHWC", (16, 128, 128, 64), (16, 64, 64, 64), 64, 16),
        "avg3x3s1p1/cf": ("NCHW", (16, 64, 128, 128), (16, 64, 128, 128), 64, 64),
        "avg3x3s2p1ex/cl": ("NHWC", (16, 128, 128, 64), (16, 64, 64, 64), 64, 16),
        "avg7x7s1/cf": ("NCHW", (16, 64, 128, 128), (16, 64, 122, 122), 64, 16 * 64 * 122 * 122 * 4 / MIB),
        "avg15x15s1/cl": ("NHWC", (16, 128, 128, 64), (16, 114, 114, 64), 64, 16 * 64 * 114 * 114 * 4 / MIB),
        "global7x7/cf": ("NCHW", (128, 2048, 7, 7), (128, 2048, 1, 1), 49, 1),
        "global7x7/cl": ("NHWC", (128, 7, 7, 2048), (128, 1, 1, 2048), 49, 1),
        "avg3d2s2/cl": ("NDHWC", (4, 32, 64, 64, 32), (4, 16, 32, 32, 32), 64, 8),
        "avg1d64s1/cf": ("NCL", (16, 64, 16384), (16, 64, 16321), 64, 16 * 64 * 16321 * 4 / MIB),
        "avg1d64s1/cl": ("NLC", (16, 16384, 64), (16, 16321, 64), 64, 16 * 64 * 16321 * 4 / MIB),
        "max3x3s2p1/cf": ("NCHW", (16, 64, 128, 128), (16, 64, 64, 64), 64, 16),
        "bwd2x2s2/cf": (
            "NCHW",
            (16, 64, 128, 128),
            (16, 64, 64, 64),
            16,
            64,
        ),  # reads grads, writes grad_input
    }
    for case_id, (layout, stored, out, mib_in, mib_out) in expect.items():
        c = full[case_id]
        assert (c.layout, c.array_shape, c.out_array_shape) == (layout, stored, out), case_id
        assert (c.bytes_in / MIB, c.bytes_out / MIB) == (mib_in, mib_out), case_id
    assert full["avg3x3s2p1ex/cf"].count_include_pad is False
    assert all(c.dtype == "float32" for c in full.values())
    assert all(c.bytes_in > 32 * MIB for c in full.values() if c.op != "avg_backward")


def test_rotation_exceeds_the_requested_working_set():
    case = standard_cases("full")[0]  # 64 MiB in
    assert rotation_count(case, 520 * MIB) == 9 and rotation_count(case, 128 * MIB) == 3
    assert rotation_count(case, MIB) == 2  # never fewer than two buffers
    inputs = make_inputs(case := TINY[0], 3, seed=1)
    assert len({a.ctypes.data for a in inputs}) == 3  # separate memory, same values
    assert all(np.array_equal(a, inputs[0]) for a in inputs)
    assert inputs[0].dtype == np.float32 and inputs[0].shape == case.timed_input_shape


# -- the peers compute what avgpool computes -----------------------------------------------------

APPLIES = {  # which peer computes which geometry (both layouts)
    "torch": {c.key for c in TINY},
    "onnxruntime": {c.key for c in TINY} - {"bwd2x2s2"},
    "cv2": {"avg2x2s2", "avg3x3s1p1", "avg7x7s1", "avg15x15s1", "avg1d64s1"},
    "scipy": {"avg3x3s1p1", "avg7x7s1", "avg15x15s1", "avg1d64s1"},
}


@pytest.mark.parametrize("peer", PEERS, ids=lambda p: p.name)
def test_which_cases_each_peer_applies_to(peer):
    for case in TINY:
        reason = peer.applies(case)
        assert (reason is None) == (case.key in APPLIES[peer.name]), (peer.name, case.id, reason)
        assert reason is None or len(reason) > 10


@pytest.mark.parametrize("case", TINY, ids=lambda c: c.id)
def test_every_peer_computes_avgpools_reference(case):
    inputs = make_inputs(case, 2, seed=3)
    expected = reference_output(case, inputs[0])
    assert expected.shape == case.timed_output_shape
    for peer in PEERS:
        if peer.applies(case) is not None:
            continue
        prepared = peer.prepare(case, inputs, threads=2)
        got = prepared.to_numpy(prepared.call(prepared.inputs[0]))
        assert got.shape == expected.shape, prepared.label
        np.testing.assert_allclose(got, expected, **conformance_tol("float32"), err_msg=prepared.label)


def test_torch_shares_the_numpy_buffers():
    case = next(c for c in TINY if c.id == "avg2x2s2/cl")
    inputs = make_inputs(case, 2)
    prepared = PEERS[0].prepare(case, inputs, threads=1)
    assert [t.data_ptr() for t in prepared.inputs] == [a.ctypes.data for a in inputs]
    assert prepared.label == "torch channels_last" and prepared.threads == 1


# -- the runner and the writers ------------------------------------------------------------------


def settings(**kw):
    kw = {"rounds": 1, **kw}
    return Settings(threads=2, llc_bytes=MIB, rotate_bytes=MIB, repeats=1, budget_s=0.5, isolate=False, **kw)


BW = Bandwidth(20e9, 10e9, 20e9, 10e9, 12e9, 1 << 30, 2, 1)


def test_run_case_records_ratios_and_agreement():
    case = next(c for c in TINY if c.id == "avg3x3s1p1/cf")
    row = run_case(case, settings(), BW)
    assert row["avgpool"]["status"] == "ok" and row["avgpool"]["n"] == 1
    assert row["floor_ms"] == pytest.approx(floor_seconds(case.bytes_in, case.bytes_out, BW) * 1e3)
    assert row["checked_against"] == "avgpool"
    for name in ("torch", "onnxruntime", "cv2", "scipy"):
        record = row["peers"][name]
        assert record["status"] == "ok" and record["agrees"] is True, name
        assert record["ratio_floor"] == pytest.approx(record["median_ms"] / row["floor_ms"])
    best = min(("torch", "onnxruntime", "cv2", "scipy"), key=lambda n: row["peers"][n]["median_ms"])
    assert row["best_peer"] == best
    assert row["avgpool_vs_best"] == pytest.approx(row["avgpool"]["median_ms"] / row["best_peer_ms"])


class _Recorder(Peer):
    """A peer that computes avgpool's own result and records which input each call got."""

    name = "recorder"

    def __init__(self):
        self.calls = []

    def applies(self, case):
        return None

    def prepare(self, case, arrays, threads):
        fn = avgpool_call(case)

        def call(x):
            self.calls.append(next(i for i, a in enumerate(arrays) if a is x))
            return fn(x)

        return Prepared("recorder", list(arrays), call, np.asarray, threads)


def test_every_library_uses_each_input_once_before_its_clock_starts():
    """Pages left idle come back slowly on a virtual machine, so the default warm-up is one pass
    over the rotation (first call included), then the timed calls go on where it stopped."""
    case = next(c for c in TINY if c.id == "avg2x2s2/cf")
    recorder = _Recorder()
    row = run_case(case, settings(), BW, peers=[recorder])
    k = row["rotation"]
    assert k >= 2 and recorder.calls == [*range(k), 0]  # k untimed calls, then repeats=1 timed
    assert row["peers"]["recorder"]["warmup"] == k - 1  # the first call is counted apart
    assert row["avgpool"]["warmup"] == k - 1
    recorder.calls.clear()
    run_case(case, settings(warmup=1), BW, peers=[recorder])
    assert recorder.calls == [0, 1]


def test_each_library_keeps_its_fastest_round():
    """Rounds run in turns (avgpool, the peers, avgpool, ...); a cell keeps the lowest median."""
    case = next(c for c in TINY if c.id == "avg2x2s2/cf")
    recorder = _Recorder()
    row = run_case(case, settings(rounds=3, warmup=1), BW, peers=[recorder])
    assert recorder.calls == [0, 1] * 3  # one untimed and one timed call per round
    for record in (row["avgpool"], row["peers"]["recorder"]):
        assert len(record["round_medians_ms"]) == 3
        assert record["median_ms"] == min(record["round_medians_ms"])
    assert row["peers"]["recorder"]["agrees"] is True


def test_avgpool_in_a_child_process():
    case = next(c for c in TINY if c.id == "avg2x2s2/cf")
    row = run_case(case, Settings(**{**settings().to_dict(), "isolate": True}), BW, peers=PEERS[:1])
    assert row["avgpool"]["status"] == "ok", row["avgpool"]
    assert row["avgpool"]["first_call_ms"] > 0 and row["peers"]["torch"]["agrees"] is True
    starved = Settings(**{**settings().to_dict(), "isolate": True, "child_memory_bytes": 32 * MIB})
    failed = run_case(case, starved, BW, peers=PEERS[:1])["avgpool"]
    assert failed["status"] == "failed" and failed["error"]


def test_a_cases_rounds_share_one_jit_cache_that_the_first_fills(monkeypatch):
    """The first child compiles into the case's cache (its first call is the compile the table
    reports); the next loads from it and compiles nothing; the cache goes with the case."""
    from avgpool.bench import runner

    child, seen = runner._avgpool_in_child, []

    def spy(case, settings, rotation, want_output=True, jit_cache=None):
        record = child(case, settings, rotation, want_output, jit_cache)
        files = sorted((p.name, p.stat().st_size) for p in Path(jit_cache).rglob("*") if p.is_file())
        seen.append((jit_cache, files))
        return record

    monkeypatch.setattr(runner, "_avgpool_in_child", spy)
    case = next(c for c in TINY if c.id == "avg2x2s2/cf")
    row = run_case(case, Settings(**{**settings(rounds=2).to_dict(), "isolate": True}), BW, peers=[])
    assert row["avgpool"]["status"] == "ok" and len(row["avgpool"]["round_medians_ms"]) == 2
    (first, compiled), (second, after) = seen
    assert first == second and any(name.endswith(".nbi") for name, _ in compiled)
    assert after == compiled  # the second round compiled nothing new
    assert not Path(first).exists()


def fake_results():
    cases = standard_cases("full")
    rows = []
    for case in cases:
        ok = case.key != "avg7x7s1"
        avg = {"status": "ok", "median_ms": 2.0, "first_call_ms": 900.0, "n": 10, "budget_limited": False}
        if not ok:
            avg = {"status": "failed", "error": "MemoryError: 6 GiB"}
        else:
            avg.update(ratio_floor=2.0, per_output_ns=1.0 if case.key != "avg15x15s1" else 1.5)
        peers = {
            "torch": {
                "status": "ok",
                "label": "torch",
                "median_ms": 4.0,
                "ratio_floor": 4.0,
                "n": 3,
                "budget_limited": True,
                "agrees": case.key != "max3x3s2p1",
            },
            "scipy": {"status": "n/a", "reason": "uniform_filter is stride-1 only"},
        }
        rows.append({
            "case": case.to_dict(), "rotation": 2, "working_set_bytes": 2 * case.bytes_in, "floor_ms": 1.0,
            "avgpool": avg, "peers": peers, "checked_against": "avgpool", "best_peer": "torch",
            "best_peer_ms": 4.0, "avgpool_vs_best": 0.5 if ok else None,
        })  # fmt: skip
    results = {
        "machine": {"cpu": "Test CPU", "cores": 2, "threads": 2, "llc_bytes": 32 * MIB,
                    "memory_bytes": 1 << 34, "platform": "test", "python": "3.x",
                    "versions": {"numpy": "2"}, "date": "2026-01-01"},
        "settings": settings().to_dict(),
        "bandwidth": {**BW.to_dict()},
        "peers": ["torch", "scipy"],
        "cases": rows,
    }  # fmt: skip
    results["summary"] = summarize(results)
    return results


def test_summary_checks_the_performance_targets():
    results = fake_results()
    summary = results["summary"]
    fast = summary["faster_than_best_peer"]
    assert not fast["pass"] and fast["cases_compared"] == 20
    assert {x["case"] for x in fast["slower_cases"]} == {
        "avg7x7s1/cf",
        "avg7x7s1/cl",
    }  # failed counts as slower
    assert summary["floor_fraction"]["median_case"] == 0.5  # floor 1 ms / 2 ms; the failed ones count 0
    assert not summary["floor_fraction"]["pass"]
    per_output = summary["window_growth"]
    assert per_output["channels_first"] == per_output["channels_last"] == 1.5 and per_output["pass"]
    assert (per_output["large"], per_output["small"]) == ("avg 15x15/1", "avg 3x3/1 p1")  # cases.toml's
    assert "avg 15x15/1 under 2x the avg 3x3/1 p1 time per output" in render_markdown(results)


def test_writers_round_trip_and_render_the_table(tmp_path):
    results = fake_results()
    json_path, md_path = write_results(results, tmp_path / "out")
    assert json.loads(json_path.read_text()) == json.loads(json.dumps(results))
    md = md_path.read_text()
    assert md == render_markdown(results)
    rows = [line for line in md.splitlines() if line.startswith("| avg") or line.startswith("| max")
            or line.startswith("| global")]  # fmt: skip
    assert len(rows) == 20
    first = rows[0].split(" | ")
    assert first[:6] == ["| avg 2x2/2", "NCHW", "16x64x128x128", "64 → 16", "1.00", "2.00 (2.0x)"]
    assert first[7] == "4.00 (4.0x)†" and first[8] == "n/a" and first[-1] == "0.50 |"
    assert "4.00 (4.0x)† ≠" in next(r for r in rows if r.startswith("| max"))
    assert "| failed |" in next(r for r in rows if r.startswith("| avg 7x7/1"))
    assert "- scipy: uniform_filter is stride-1 only (avg2x2s2/cf," in md
    assert "avgpool failed: MemoryError: 6 GiB (avg7x7s1/cf, avg7x7s1/cl)" in md
    assert "❌ median case at >= 70% of the bandwidth floor (floor / time; a failed case counts 0): 50%" in md
    growth = "avg 15x15/1 under 2x the avg 3x3/1 p1 time per output"
    assert f"✅ {growth}: channels-first 1.50x, channels-last 1.50x" in md
    assert "**2 threads**" in md and "Test CPU" in md


def test_quick_smoke_run_writes_both_files(tmp_path):
    cmd = [
        sys.executable,
        str(ROOT / "benchmarks" / "run.py"),
        "--quick",
        "--suite",
        "synthetic",
        "--scale",
        "tiny",
        "--repeats",
        "1",
    ]
    cmd += ["--bandwidth-mib", "8", "--out", str(tmp_path)]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "threads: " in done.stderr
    results = json.loads((tmp_path / "latest.json").read_text())
    assert set(results) == {"machine", "settings", "bandwidth", "peers", "cases", "summary", "suites"}
    assert results["suites"] == ["synthetic"]
    assert results["peers"] == ["torch", "onnxruntime", "cv2", "scipy"]
    assert results["settings"]["scale"] == "tiny" and results["bandwidth"]["array_bytes"] == 8 * MIB
    assert results["machine"]["threads"] >= 1 and results["machine"]["versions"]["numpy"]
    assert len(results["cases"]) == 20
    for row in results["cases"]:
        assert row["avgpool"]["status"] == "ok" and row["avgpool"]["n"] == 1, row["case"]["id"]
        assert row["floor_ms"] > 0 and row["rotation"] >= 2
        for name, record in row["peers"].items():
            assert record["status"] in ("ok", "n/a"), (row["case"]["id"], name, record)
            assert record["status"] == "n/a" or record["agrees"] is True, (row["case"]["id"], name)
    md = (tmp_path / "latest.md").read_text()
    assert md.startswith("# avgpool benchmark") and md.count("\n| ") == 21  # header + 20 rows
    assert "## Performance targets" in md and md.strip() == done.stdout.strip()
