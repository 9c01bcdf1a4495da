"""Profiling over a dask.distributed cluster: two workers give the one-process profile, each
worker loads the model once, the CLI's --scheduler, and the errors."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest

pytest.importorskip("distributed")
pytest.importorskip("onnxruntime")

from distributed import Client, LocalCluster

import avgpool.monitor
from avgpool._loading import sha256_file
from avgpool.cli import main
from avgpool.monitor import Profile, ProfileError, iter_batches, profile_model
from avgpool.monitor import distributed as dist
from avgpool.monitor.distributed import profile_distributed
from avgpool.monitor.exphist import ExpHistogram

#: Float statistics that a merge combines with arithmetic (Chan's update), equal to one pass
#: up to float64 rounding; every other field must match exactly.
ROUNDED = {"mean", "m2"}


def local_cluster(**kwargs):
    # threads in this process, but over loopback TCP so that everything sent is serialized
    options = {"n_workers": 2, "threads_per_worker": 1, "processes": False, "protocol": "tcp"}
    return LocalCluster(host="127.0.0.1", dashboard_address="127.0.0.1:0", **{**options, **kwargs})


@pytest.fixture(scope="module")
def client():
    with local_cluster() as cluster, Client(cluster, set_as_default=False) as c:
        yield c


@pytest.fixture(scope="module")
def batches(images):
    return iter_batches({"image": images}, 4)  # 12 batches


def assert_same_histogram(a: ExpHistogram | None, b: ExpHistogram | None, where: str) -> None:
    assert (a is None) == (b is None), where
    if a is not None:
        a, b = a.trimmed(), b.trimmed()
        assert (a.max_buckets, a.rows, a.scale) == (b.max_buckets, b.rows, b.scale), where
        assert np.array_equal(a.zero, b.zero), where
        for part in ("positive", "negative"):
            x, y = getattr(a, part), getattr(b, part)
            assert np.array_equal(x.counts, y.counts), (where, part)
            assert x.offset == y.offset or not x.width, (where, part)


def assert_same(one: Profile, many: Profile) -> None:
    assert many.model == one.model
    assert (many.max_buckets, many.channel_hist) == (one.max_buckets, one.channel_hist)
    assert (many.batches, many.notes, list(many.layers)) == (one.batches, one.notes, list(one.layers))
    for name, expected in one.layers.items():
        got = many.layers[name]
        for f in dataclasses.fields(expected):
            a, b = getattr(expected, f.name), getattr(got, f.name)
            where = f"{name}.{f.name}"
            if f.name in ROUNDED:
                np.testing.assert_allclose(b, a, rtol=1e-12, atol=0, err_msg=where)
            elif isinstance(a, ExpHistogram) or isinstance(b, ExpHistogram):
                assert_same_histogram(a, b, where)
            elif isinstance(a, np.ndarray):
                assert b.dtype == a.dtype and np.array_equal(a, b, equal_nan=a.dtype.kind == "f"), where
            else:
                assert b == a, where


@pytest.mark.parametrize("channel_hist", [False, True])
def test_onnx_two_workers_equal_one_process(client, onnx_files, batches, channel_hist):
    model = onnx_files["base"]
    options = {"channel_hist": channel_hist}
    one = profile_model(model, batches, **options)
    many = profile_distributed(model, batches, scheduler=client, **options)
    assert_same(one, many)
    assert many.batches == 12 and many["/pool1/MaxPool"].count.sum() == 48 * 4 * 36


def test_torch_two_workers_equal_one_process(client, models, batches):
    model = models["base"]
    one = profile_model(model, batches)
    many = profile_distributed(model, batches, scheduler=client)
    assert_same(one, many)
    assert not model.training and not model._forward_hooks  # the caller's module is untouched


def test_torchscript_file_two_workers_equal_one_process(client, models, batches, tmp_path):
    """A TorchScript file is profiled through its ONNX export, made once per worker."""
    torch = pytest.importorskip("torch")
    path = str(tmp_path / "base.pt")
    with warnings.catch_warnings():
        # torch deprecates TorchScript; its files are still common, and this makes one to profile
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.trace(models["base"], torch.zeros(4, 3, 12, 12)).save(path)
    one = profile_model(path, batches)
    before = client.run(dist._loads)
    assert_same(one, profile_distributed(path, batches, scheduler=client))
    assert sorted(n - before[w] for w, n in client.run(dist._loads).items()) == [1, 1]


def test_profile_model_cache_loads_once(onnx_files, batches, monkeypatch):
    from avgpool.inspect import onnx_reader

    model = onnx_files["base"]
    plain = profile_model(model, batches)
    loads = []
    real = onnx_reader.load_onnx
    monkeypatch.setattr(onnx_reader, "load_onnx", lambda *a: loads.append(a) or real(*a))
    cache: dict = {}
    first = profile_model(model, batches[:6], cache=cache)
    second = profile_model(model, batches[6:], cache=cache)
    assert len(loads) == 1 and {"onnx", "sha256"} <= set(cache)
    assert_same(plain, first.merge(second))


def test_torch_in_worker_processes(models, batches):
    """local:2: the module travels pickled to two processes and keeps its identity there."""
    model = models["base"]
    assert_same(profile_model(model, batches), profile_distributed(model, batches, scheduler="local:2"))


def test_each_worker_loads_the_model_once(client, onnx_files, batches, monkeypatch):
    import onnxruntime

    from avgpool.inspect import onnx_reader

    model = onnx_files["base"]
    calls = {"load_onnx": 0, "InferenceSession": 0}

    def counted(name, real):
        def wrapper(*args, **kwargs):
            calls[name] += 1
            return real(*args, **kwargs)

        return wrapper

    # the workers are threads of this process: they call the patched functions
    monkeypatch.setattr(onnx_reader, "load_onnx", counted("load_onnx", onnx_reader.load_onnx))
    monkeypatch.setattr(
        onnxruntime, "InferenceSession", counted("InferenceSession", onnxruntime.InferenceSession)
    )
    before = client.run(dist._loads)
    profile = profile_distributed(model, batches, scheduler=client, batches_per_task=1)
    loads = {w: n - before[w] for w, n in client.run(dist._loads).items()}
    assert profile.batches == 12  # 12 tasks of one batch each on 2 workers
    assert sorted(loads.values()) == [1, 1]
    assert calls == {"load_onnx": 2, "InferenceSession": 2}
    assert dist._CACHES == {}  # and dropped when the call ends


def test_progress_advances_batch_by_batch(client, onnx_files, batches):
    seen = []

    def progress(items):
        for item in items:
            yield item
            seen.append(item)

    model = onnx_files["base"]
    address = client.scheduler.address  # a scheduler given by its address
    profile_distributed(model, batches, scheduler=address, progress=progress)
    assert seen == list(range(12))


def test_cli_scheduler_local_2(onnx_files, npz, tmp_path, capsys):
    """Two worker processes (LocalCluster), the same profile as one process."""
    model = onnx_files["base"]
    one, many = tmp_path / "one.avgprof", tmp_path / "many.avgprof"
    argv = ["profile", model, "--inputs", npz, "--batch-size", "4"]
    assert main([*argv, "-o", str(one), "--no-progress"]) == 0
    capsys.readouterr()
    start = time.perf_counter()
    assert main([*argv, "-o", str(many), "--scheduler", "local:2", "--progress"]) == 0
    elapsed = time.perf_counter() - start
    out, err = capsys.readouterr()
    assert out.splitlines()[0].startswith(f"profile of {model}: 3 layers, 12 batches")
    if "rich" in sys.modules:
        assert "profiling 12 batches" in err
    assert_same(Profile.load(one), Profile.load(many))
    assert elapsed < 60


def test_unreachable_scheduler_is_named_without_a_hang(onnx_files, batches):
    start = time.perf_counter()
    with pytest.raises(ProfileError, match=r"cannot reach the dask scheduler at 'tcp://127\.0\.0\.1:1' "):
        profile_distributed(onnx_files["base"], batches, scheduler="tcp://127.0.0.1:1", timeout=1)
    assert time.perf_counter() - start < 10


def test_cli_unreachable_scheduler_exit_2(onnx_files, npz, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(
        dist, "profile_distributed", lambda *a, **k: profile_distributed(*a, **{**k, "timeout": 1})
    )
    out = tmp_path / "p.avgprof"
    argv = ["profile", onnx_files["base"], "--inputs", npz, "-o", str(out), "--no-progress"]
    assert main([*argv, "--scheduler", "tcp://127.0.0.1:1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("avgpool profile: error: cannot reach the dask scheduler at 'tcp://127.0.0.1:1'")
    assert not out.exists()


def test_a_scheduler_without_workers(onnx_files, batches):
    with local_cluster(n_workers=0) as cluster:
        with pytest.raises(ProfileError, match=r"has no workers \(waited 1 s"):
            profile_distributed(onnx_files["base"], batches, scheduler=cluster.scheduler_address, timeout=1)


def test_a_workers_error_reaches_the_caller(client, onnx_files, batches):
    with pytest.raises(ProfileError) as one:
        profile_model(onnx_files["base"], batches, layers=["nope"])
    with pytest.raises(ProfileError) as many:
        profile_distributed(onnx_files["base"], batches, scheduler=client, layers=["nope"])
    assert str(many.value) == str(one.value) == "no node or tensor named 'nope' in the ONNX model"
    assert dist._CACHES == {}


def test_a_workers_model_file_must_match_the_drivers(onnx_files, tmp_path):
    model = onnx_files["base"]
    sha = sha256_file(model)
    dist._check_file(model, sha, "tcp://w:1")  # the same file: accepted
    with pytest.raises(ProfileError, match=r"the file on worker tcp://w:1 differs from the driver's"):
        dist._check_file(model, "0" * 64, "tcp://w:1")
    with pytest.raises(ProfileError, match=r"no such model file on worker tcp://w:1"):
        dist._check_file(str(tmp_path / "gone.onnx"), sha, "tcp://w:1")


@pytest.mark.parametrize(
    ("scheduler", "error", "message"),
    [
        ("local:0", ProfileError, r"scheduler 'local:N' needs N >= 1 workers, got 'local:0'"),
        ("local:two", ProfileError, r"needs N >= 1 workers, got 'local:two'"),
        (3, TypeError, r"scheduler must be an address, 'local', 'local:N' or a distributed.Client, got int"),
    ],
)
def test_bad_scheduler_values(onnx_files, batches, scheduler, error, message):
    with pytest.raises(error, match=message):
        profile_distributed(onnx_files["base"], batches, scheduler=scheduler)


def test_without_distributed_installed(onnx_files, batches, monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)  # import fails as if not installed
    with pytest.raises(ProfileError, match=r"needs dask\.distributed: pip install 'avgpool\[dask\]'"):
        profile_distributed(onnx_files["base"], batches, scheduler="local:1")


def test_import_monitor_loads_no_dask():
    code = (
        "import sys, avgpool.monitor; print(sorted(m for m in ('dask', 'distributed') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"
    assert avgpool.monitor.profile_distributed is profile_distributed


def test_a_worker_that_dies_is_reported(batches):
    torch = pytest.importorskip("torch")
    import dask

    class Dies(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.pool = torch.nn.AvgPool2d(2)

        def forward(self, x):
            os._exit(1)  # the worker process ends, as one killed for memory would

    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        with pytest.raises(ProfileError, match=r"share \d+: the workers running it died"):
            profile_distributed(Dies(), batches, scheduler="local:1")


def test_a_share_that_starts_after_its_call_ended_loads_nothing(client, onnx_files, batches):
    """A failed call cancels its shares, but one already sent may still start on a worker."""
    key = ("ended-call", "path", onnx_files["base"], False)
    client.run(dist._forget, key)
    before = client.run(dist._loads)
    late = client.submit(dist._profile_share, onnx_files["base"], key, None, batches[:1], False, {})
    with pytest.raises(ProfileError, match="the profiling call this share belongs to has ended"):
        late.result()
    assert dist._CACHES == {} and client.run(dist._loads) == before
