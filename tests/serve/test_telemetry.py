"""Server telemetry: 1-in-N sampling, the Prometheus exposition (every metric the alert rules and
dashboards may use), the rolling window, drift, the bounded queue and workers' aggregation."""

from __future__ import annotations

import multiprocessing
import time
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("prometheus_client")
pytest.importorskip("psutil")

from prometheus_client.parser import text_string_to_metric_families

from avgpool._errors import AvgPoolError
from avgpool.monitor.profile import Profile
from avgpool.serve._telemetry import HISTOGRAM_EDGES, METRICS, Telemetry

LAYERS = ("pool1", "pool2")


def fake_runner(name="tiny", version="1", layers=LAYERS):
    return SimpleNamespace(
        name=name,
        version=version,
        layers=layers,
        size_bytes=4746,
        sha256="ab" * 32,
        platform="onnxruntime_onnx",
    )


def batch(seed=0, shift=0.0, n=4):
    rng = np.random.default_rng(seed)
    return {layer: (rng.standard_normal((n, 3, 4, 4)) + shift).astype(np.float32) for layer in LAYERS}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def families(telemetry):
    body, content_type = telemetry.exposition()
    assert content_type.startswith("text/plain")
    return {f.name: f for f in text_string_to_metric_families(body.decode())}


def value(fams, name, **labels):
    found = [
        s.value
        for family in fams.values()
        for s in family.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    ]
    assert len(found) == 1, (name, labels, found)
    return found[0]


def test_sampling_is_one_in_n_exactly():
    telemetry = Telemetry(sample_every=4)
    model = telemetry.add_model(fake_runner())
    assert [model.should_sample() for _ in range(12)] == [True, False, False, False] * 3
    assert not any(Telemetry(sample_every=0).add_model(fake_runner()).should_sample() for _ in range(5))
    no_layers = Telemetry(sample_every=1).add_model(fake_runner(layers=()))
    assert not no_layers.should_sample()


def test_exposition_parses_and_holds_every_metric():
    baseline = Profile()
    for seed in range(3):
        baseline.update_many(batch(seed))
    clock = Clock()
    telemetry = Telemetry(sample_every=1, interval=10, window=60, clock=clock)
    model = telemetry.add_model(fake_runner(), baseline=baseline)
    model.observe(request_seconds=0.02, model_seconds=0.01, rows=4)
    model.observe(request_seconds=0.03, model_seconds=0.02, rows=2)
    model.observe_pooling(batch(7))
    telemetry.observe_error("bad_request", "tiny", "1")
    telemetry.observe_error("model_not_found")
    model.startup(1.5)
    model.set_ready(True)
    model.set_fault_latency(0.3)
    model.set_deploy_window(15)
    clock.now += 10
    telemetry.tick()
    fams = families(telemetry)
    for name, kind in METRICS.items():
        if name == "avgpool_gpu_utilization_ratio" and name not in fams:
            continue  # only where torch sees a GPU
        family = fams.get(name) or fams[name.removesuffix("_total")]
        assert family.type == kind, name
        assert family.samples, name
    assert "process_resident_memory_bytes" in fams and "python_info" in fams
    labels = {"model": "tiny", "version": "1"}
    assert value(fams, "avgpool_requests_total", **labels) == 2
    assert value(fams, "avgpool_inference_samples_total", **labels) == 6
    assert value(fams, "avgpool_request_duration_seconds_count", **labels) == 2
    assert value(fams, "avgpool_inference_latency_seconds_bucket", le="0.01", **labels) == 1
    assert value(fams, "avgpool_request_errors_total", kind="bad_request", **labels) == 1
    assert value(fams, "avgpool_request_errors_total", model="", kind="model_not_found") == 1
    assert value(fams, "avgpool_telemetry_sampled_requests_total", **labels) == 1
    assert value(fams, "avgpool_telemetry_dropped_total", **labels) == 0
    assert value(fams, "avgpool_model_size_bytes", **labels) == 4746
    assert value(fams, "avgpool_model_ready", **labels) == 1
    assert value(fams, "avgpool_model_startup_seconds", **labels) == 1.5
    assert value(fams, "avgpool_fault_latency_seconds", **labels) == 0.3
    assert value(fams, "avgpool_deploy_window", **labels) == 1
    assert value(fams, "avgpool_activation_values_total", layer="pool1", **labels) == 4 * 3 * 16
    assert value(fams, "avgpool_activation_drift_status", layer="pool2", **labels) in (0, 1, 2)
    assert value(fams, "avgpool_memory_limit_bytes") > 0
    assert value(fams, "avgpool_process_resident_memory_bytes") > 10e6
    clock.now += 15 * 60
    assert value(families(telemetry), "avgpool_deploy_window", **labels) == 0


def test_activation_histogram_buckets_at_fixed_edges():
    telemetry = Telemetry(sample_every=1, interval=1, window=10, clock=Clock())
    model = telemetry.add_model(fake_runner(layers=("pool",)))
    values = np.array([-2.0, -0.5, 0.0, 0.5, 1.0, 3.0, 100.0, 5000.0]).reshape(8, 1)
    model.observe_pooling({"pool": values})
    telemetry.tick()
    fams = families(telemetry)
    got = {
        s.labels["le"]: s.value
        for s in fams["avgpool_activation_histogram"].samples
        if s.name.endswith("_bucket")
    }
    assert len(got) == len(HISTOGRAM_EDGES) + 1
    assert got["-1.0"] == 1 and got["0.0"] == 3 and got["1.0"] == 5 and got["4.0"] == 6
    assert got["256.0"] == 7 and got["1024.0"] == 7 and got["+Inf"] == 8
    assert value(fams, "avgpool_activation_histogram_count", layer="pool") == 8
    counts = [got[k] for k in sorted(got, key=lambda k: float(k))]
    assert counts == sorted(counts)  # cumulative


def test_drift_moves_with_shifted_activations_and_stays_ok_otherwise():
    baseline = Profile()
    for seed in range(20):
        baseline.update_many(batch(seed, n=8))
    clock = Clock()
    telemetry = Telemetry(sample_every=1, interval=10, window=30, clock=clock)
    model = telemetry.add_model(fake_runner(), baseline=baseline)
    assert model.drift() is None
    for seed in range(100, 110):
        model.observe_pooling(batch(seed, n=8))
    clock.now += 10
    telemetry.tick()
    report = model.drift()
    assert report.verdict == "ok"
    fams = families(telemetry)
    for layer in LAYERS:
        assert value(fams, "avgpool_activation_drift_status", layer=layer) == 0
        assert abs(value(fams, "avgpool_activation_mean_shift", layer=layer)) < 0.1
    # shifted traffic: once the window holds only it, every layer fails
    for step in range(4):
        for seed in range(10):
            model.observe_pooling(batch(200 + 10 * step + seed, shift=2.0, n=8))
        clock.now += 10
        telemetry.tick()
    fams = families(telemetry)
    for layer in LAYERS:
        assert value(fams, "avgpool_activation_drift_status", layer=layer) == 2
        assert value(fams, "avgpool_activation_mean_shift", layer=layer) > 1.5
        assert value(fams, "avgpool_activation_psi", layer=layer) > 0.5
    assert model.drift().verdict == "fail"


def test_window_rotation_drops_old_data():
    clock = Clock()
    telemetry = Telemetry(sample_every=1, interval=10, window=30, clock=clock)
    model = telemetry.add_model(fake_runner())
    model.observe_pooling(batch(0, n=1))  # 48 values per layer
    clock.now += 10
    telemetry.tick()  # closes slot A at t=10
    model.observe_pooling(batch(1, n=2))
    telemetry.flush()
    assert model.live_profile()["pool1"].count.sum() == 48 * 3
    clock.now += 10
    telemetry.tick()  # slot B at t=20
    clock.now += 10
    telemetry.tick()
    assert model.live_profile()["pool1"].count.sum() == 48 * 3
    clock.now += 10
    telemetry.tick()  # t=40: A is older than the window
    assert model.live_profile()["pool1"].count.sum() == 48 * 2
    assert value(families(telemetry), "avgpool_activation_values_total", layer="pool1") == 48 * 2
    clock.now += 10
    telemetry.tick()
    assert len(model.live_profile()) == 0


def test_full_queue_drops_and_counts():
    telemetry = Telemetry(sample_every=1, queue_size=2)
    model = telemetry.add_model(fake_runner())
    for seed in range(5):
        model.observe_pooling(batch(seed))
    assert telemetry.flush() == 2
    fams = families(telemetry)
    assert value(fams, "avgpool_telemetry_dropped_total", model="tiny") == 3
    assert value(fams, "avgpool_telemetry_sampled_requests_total", model="tiny") == 2
    # a byte budget: one sample (1.5 KiB of arrays) always fits, a second would pass 2 KiB
    telemetry = Telemetry(sample_every=1, queue_bytes=2048)
    model = telemetry.add_model(fake_runner())
    assert sum(v.nbytes for v in batch(0, n=4).values()) == 2 * 4 * 3 * 16 * 4
    for seed in range(3):
        model.observe_pooling(batch(seed, n=4))
    assert telemetry.flush() == 1
    model.observe_pooling(batch(9, n=4))  # room again once profiled
    assert telemetry.flush() == 1
    assert value(families(telemetry), "avgpool_telemetry_dropped_total", model="tiny") == 2


def test_a_given_registry_gets_the_avgpool_metrics_only():
    from prometheus_client import CollectorRegistry, ProcessCollector

    registry = CollectorRegistry()
    ProcessCollector(registry=registry)  # as the global registry has it
    telemetry = Telemetry(registry=registry)  # no second process_* collector: no clash
    telemetry.add_model(fake_runner())
    fams = families(telemetry)
    assert "process_resident_memory_bytes" in fams and "python_info" not in fams
    assert value(fams, "avgpool_model_size_bytes", model="tiny") == 4746


def test_threads_profile_and_rotate_on_their_own():
    telemetry = Telemetry(sample_every=1, interval=0.05, window=10)
    model = telemetry.add_model(fake_runner())
    telemetry.start()
    try:
        model.observe_pooling(batch(0))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not len(model.snapshot()):
            time.sleep(0.02)
        assert model.snapshot()["pool2"].count.sum() == 4 * 3 * 16
    finally:
        telemetry.stop()


def test_bad_arguments():
    with pytest.raises(AvgPoolError, match=r"sample_every must be an int >= 0 .*got -1"):
        Telemetry(sample_every=-1)
    with pytest.raises(AvgPoolError, match=r"window must be >= interval \(10\), got 5"):
        Telemetry(interval=10, window=5)
    telemetry = Telemetry()
    telemetry.add_model(fake_runner())
    with pytest.raises(AvgPoolError, match=r"kind must be one of .*got 'oops'"):
        telemetry.observe_error("oops")
    with pytest.raises(AvgPoolError, match="no telemetry for model tiny version 2"):
        telemetry.model("tiny", "2")
    with pytest.raises(AvgPoolError, match="added twice"):
        telemetry.add_model(fake_runner())


# ------------------------------------------------------------------ several worker processes


def _worker(directory, seed, n, ready, go):
    telemetry = Telemetry(sample_every=1, multiproc_dir=directory)
    model = telemetry.add_model(fake_runner())
    for i in range(n):
        model.observe(request_seconds=0.01, model_seconds=0.005, rows=2)
        model.observe_pooling(batch(seed + i, n=1))
    telemetry.tick()
    ready.set()
    go.wait(60)


def _reader(directory, results):
    telemetry = Telemetry(sample_every=1, multiproc_dir=directory)
    model = telemetry.add_model(fake_runner())
    telemetry.tick()
    body = telemetry.exposition()[0].decode()
    results.put((body, int(model.live_profile()["pool1"].count.sum()), len(telemetry.worker_pids())))


def test_workers_sharing_a_directory_answer_for_all(tmp_path):
    """Two workers count and profile; a third process (any worker) reports the sums."""
    ctx = multiprocessing.get_context("spawn")  # fresh interpreters, as uvicorn's workers are
    go = ctx.Event()
    readies = [ctx.Event(), ctx.Event()]
    workers = [
        ctx.Process(target=_worker, args=(str(tmp_path), 10 * k, n, readies[k], go))
        for k, n in enumerate((3, 5))
    ]
    results = ctx.Queue()
    reader = ctx.Process(target=_reader, args=(str(tmp_path), results))
    try:
        for w in workers:
            w.start()
        for r in readies:
            assert r.wait(60)
        reader.start()
        body, count, pids = results.get(timeout=60)
    finally:
        go.set()
        for p in (*workers, reader):
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
    fams = {f.name: f for f in text_string_to_metric_families(body)}
    assert value(fams, "avgpool_requests_total", model="tiny") == 8
    assert value(fams, "avgpool_inference_samples_total", model="tiny") == 16
    assert value(fams, "avgpool_request_duration_seconds_count", model="tiny") == 8
    assert value(fams, "avgpool_telemetry_sampled_requests_total", model="tiny") == 8
    assert count == 8 * 48  # both workers' windows merged
    assert value(fams, "avgpool_activation_values_total", layer="pool1") == 8 * 48
    assert pids == 3


@pytest.mark.parametrize("kind", ["onnx", "module"])
def test_served_layers_match_a_profile_from_avgpool_profile(kind, tmp_path):
    """A baseline written by `avgpool profile` (profile_model) judges the served model's layers:
    same names, verdict ok on the same data, fail on shifted data."""
    pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    from avgpool.monitor.collectors import profile_model
    from avgpool.serve._runners import load_runner
    from tests.serve import models

    source = models.to_onnx(tmp_path / "tiny.onnx") if kind == "onnx" else "tests.serve.models:tiny_net"
    runner = load_runner(source)
    name = runner.inputs[0].name
    baseline = profile_model(source, [{name: models.images(16, seed)} for seed in range(4)])
    clock = Clock()
    telemetry = Telemetry(sample_every=1, interval=10, window=10, clock=clock)
    model = telemetry.add_model(runner, baseline=baseline)
    verdicts = []
    for shift in (0.0, 3.0):
        for seed in range(10, 14):
            assert model.should_sample()
            _, pooling = runner.run({name: models.images(16, seed, shift)}, sample=True)
            model.observe_pooling(pooling)
        clock.now += 10
        telemetry.tick()
        report = model.drift()
        assert not report.missing and not report.added
        assert [d.candidate_name for d in report.layers] == list(runner.layers)
        verdicts.append(report.verdict)
    assert verdicts == ["ok", "fail"]


def test_windows_merge_across_telemetries_sharing_a_directory(tmp_path, monkeypatch):
    """Two telemetries of one process (as two workers): each answers with both windows; a window
    of other weights, and the file of a dead process, are left out."""
    import os
    import subprocess
    import sys

    from prometheus_client import values

    # multiprocess mode is process-wide: put it back as it was after this test
    monkeypatch.setattr(values, "ValueClass", values.ValueClass)
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    a, b = (Telemetry(sample_every=1, multiproc_dir=str(tmp_path)) for _ in range(2))
    ma, mb = a.add_model(fake_runner()), b.add_model(fake_runner())
    for seed in range(2):
        ma.observe_pooling(batch(seed, n=1))
    for seed in range(3):
        mb.observe_pooling(batch(10 + seed, n=1))
    a.tick()
    b.tick()
    assert ma.live_profile()["pool1"].count.sum() == mb.live_profile()["pool1"].count.sum() == 5 * 48
    other = Profile(model={"sha256": "cd" * 32})
    other.update_many(batch(99, n=7))
    other.save(tmp_path / f"window-{os.getpid()}-otherbuild-tiny%3A1.avgprof")
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    stale = tmp_path / f"window-{int(dead.stdout)}-gone-tiny%3A1.avgprof"
    Profile(model={"sha256": "ab" * 32}).save(stale)
    assert ma.live_profile()["pool1"].count.sum() == 5 * 48
    assert not stale.exists()
    a.stop()
    assert mb.live_profile()["pool1"].count.sum() == 3 * 48  # a's window went with it
    b.stop()
