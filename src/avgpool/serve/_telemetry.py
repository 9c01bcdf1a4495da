"""Telemetry of a model server: Prometheus metrics on a registry of its own, 1-in-N sampling of
requests, a rolling profile of the pooling layers' outputs and drift against a baseline.

Every request is timed and counted; on sampled requests (``should_sample``, a deterministic
counter: requests 0, N, 2N, ... of each model version) the runner returns the pooling layers'
outputs, which `ModelTelemetry.observe_pooling` puts on a bounded queue. A worker thread adds
them to the current sub-profile, so a request never waits for the statistics; when the queue is
full the sample is dropped and counted (``avgpool_telemetry_dropped_total``).

The live window is a list of sub-profiles, one per ``interval`` seconds, kept while younger
than ``window`` seconds; profiles merge exactly, so the window is their merge. Every interval a
thread (`Telemetry.start`, or `Telemetry.tick` called by hand) closes the current sub-profile,
drops the old ones and computes the window's statistics and its drift against the baseline
(per layer; per channel only with ``per_channel=True``), so a scrape only formats numbers.

Several server workers (uvicorn ``--workers``) share one ``multiproc_dir``: counters and
histograms use prometheus-client's multiprocess mode (process-wide: metrics created in this
process afterwards write to that directory too, which is how prometheus-client decides), and each
worker writes its window to the directory every interval (``window-<pid>-<id>-<model>.avgprof``,
atomically). Every worker merges the files of all live workers (files of dead processes are
ignored and removed), so whichever worker answers a scrape or ``live_profile`` answers for all.

The metric families, their names and the histogram edges are in `avgpool.serve._metrics`.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import queue
import threading
import time
import urllib.parse
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from avgpool._errors import AvgPoolError
from avgpool.serve._metrics import (
    ERROR_KINDS,
    HISTOGRAM_EDGES,
    METRICS,
    Collector,
    make_metrics,
    memory_limit,
)

__all__ = ["ERROR_KINDS", "HISTOGRAM_EDGES", "METRICS", "ModelTelemetry", "Telemetry"]

log = logging.getLogger("avgpool.serve")


def _client() -> Any:
    try:
        import prometheus_client
    except ImportError:  # pragma: no cover
        raise AvgPoolError(
            "serving telemetry needs prometheus-client: pip install 'avgpool[serve]'"
        ) from None
    return prometheus_client


def _check_positive(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise AvgPoolError(f"{name} must be a number > 0, got {value!r}")
    return float(value)


class ModelTelemetry:
    """The telemetry of one model version (made by `Telemetry.add_model`)."""

    def __init__(self, owner: Telemetry, runner: Any, baseline: Any) -> None:
        from avgpool.monitor.profile import Profile

        self.name, self.version = str(runner.name), str(runner.version)
        self.layers = tuple(runner.layers)
        self.size_bytes = int(runner.size_bytes)
        self.baseline = baseline
        self._owner = owner
        self._labels = (self.name, self.version)
        self._identity = {
            "source": self.name,
            "format": str(getattr(runner, "platform", "")),
            "sha256": getattr(runner, "sha256", None),
            "pooling": [],
        }
        self._new = (lambda: Profile.like(baseline, model=self._identity)) if baseline else self._fresh
        self._lock = threading.Lock()
        self._current = self._new()
        self._slots: deque[tuple[float, Any]] = deque()  # (closed at, sub-profile), oldest first
        self._snapshot = self._new()  # the window at the last tick, every worker's
        self._drift: Any = None
        self._counter = itertools.count()
        self._count_lock = threading.Lock()
        self.ready = False
        self.startup_seconds: float | None = None
        self.fault_latency = 0.0
        self._deploy_until = -float("inf")

    def _fresh(self) -> Any:
        from avgpool.monitor.profile import Profile

        return Profile(model=dict(self._identity))

    # ------------------------------------------------------------------ per request

    def should_sample(self) -> bool:
        """True for requests 0, N, 2N, ... (N = ``sample_every``); never for a model without
        pooling layers to profile or with sampling off (``sample_every=0``)."""
        every = self._owner.sample_every
        if not every or not self.layers:
            return False
        with self._count_lock:
            return next(self._counter) % every == 0

    def observe(self, *, request_seconds: float, model_seconds: float, rows: int) -> None:
        """One request answered 200: its whole time in the server, the model's time, batch rows."""
        metrics = self._owner._metrics
        metrics["request"].labels(*self._labels).observe(request_seconds)
        metrics["latency"].labels(*self._labels).observe(model_seconds)
        metrics["requests"].labels(*self._labels).inc()
        metrics["samples"].labels(*self._labels).inc(rows)

    def observe_pooling(self, outputs: Mapping[str, np.ndarray]) -> None:
        """Queue a sampled request's pooling outputs for the profile; when the queue is full
        (``queue_size`` samples, or ``queue_bytes`` of arrays) the sample is dropped and
        counted, never waited for."""
        if self._owner._enqueue(self, dict(outputs)):
            return
        self._owner._metrics["dropped"].labels(*self._labels).inc()

    def _add(self, outputs: Mapping[str, np.ndarray]) -> None:
        with self._lock:
            self._current.update_many(outputs)
        self._owner._metrics["sampled"].labels(*self._labels).inc()

    # ------------------------------------------------------------------ state the server sets

    def set_ready(self, ready: bool) -> None:
        self.ready = bool(ready)

    def startup(self, seconds: float) -> None:
        """Seconds this model took to load and warm up."""
        self.startup_seconds = float(seconds)

    def set_fault_latency(self, seconds: float) -> None:
        """The latency injected into each request now (0: none)."""
        self.fault_latency = float(seconds)

    def set_deploy_window(self, minutes: float) -> None:
        """Declare a deploy window open for ``minutes`` from now (0 closes it)."""
        self._deploy_until = self._owner.clock() + 60.0 * float(minutes) if minutes > 0 else -float("inf")

    @property
    def deploy_window_open(self) -> bool:
        return self._owner.clock() < self._deploy_until

    # ------------------------------------------------------------------ the window

    def _own_window(self) -> Any:
        """This process's window: the kept sub-profiles and the current one."""
        with self._lock:
            parts = [p for _, p in self._slots] + [self._current]
            return parts[0].merge(*parts[1:])

    def _rotate(self, now: float) -> None:
        with self._lock:
            self._slots.append((now, self._current))
            self._current = self._new()
            while self._slots and self._slots[0][0] <= now - self._owner.window:
                self._slots.popleft()

    def live_profile(self) -> Any:
        """The rolling window as a `Profile`: this worker's, merged with every live worker's
        last written window when workers share a directory."""
        profile = self._own_window()
        others = []
        for other in self._owner._read_others(self):
            if other.model.get("sha256") == self._identity["sha256"]:
                others.append(other)
            else:  # another build under the same name and version: not this model's data
                log.warning(
                    "%s version %s: a worker serves other weights; its window is left out", *self._labels
                )
        return profile.merge(*others) if others else profile

    def snapshot(self) -> Any:
        """The window as of the last interval (what the activation metrics show)."""
        return self._snapshot

    def drift(self) -> Any:
        """The last interval's `DriftReport` against the baseline; None without a baseline or
        before the window holds data."""
        return self._drift

    def _judge(self) -> None:
        from avgpool.monitor.drift import compare
        from avgpool.monitor.profile import ProfileError

        profile = self.live_profile()
        self._snapshot = profile
        if self.baseline is None or not len(profile):
            self._drift = None
            return
        try:
            self._drift = compare(self.baseline, profile, channels=self._owner.per_channel)
        except ProfileError as exc:
            log.warning("drift of %s version %s not computed: %s", self.name, self.version, exc)
            self._drift = None


class Telemetry:
    """All of a server process's telemetry, on its own prometheus-client registry.

    Parameters
    ----------
    sample_every : int
        Profile the pooling outputs of 1 request in this many per model version (0: never).
    interval : float
        Seconds between window rotations and drift computations.
    window : float
        Seconds of sampled data the live profile keeps.
    registry : prometheus_client.CollectorRegistry, optional
        Where to register (default: a new registry).
    multiproc_dir : str, optional
        A directory shared by the server's worker processes (see the module docstring).
    per_channel : bool
        Also export per-channel activation statistics and judge drift per channel.
    queue_size, queue_bytes : int
        Sampled requests, and bytes of their arrays, waiting to be profiled before new ones are
        dropped (one sample is always taken when none waits, however large).
    clock : callable
        Monotonic seconds (tests pass a fake clock).
    """

    def __init__(
        self,
        *,
        sample_every: int = 10,
        interval: float = 10.0,
        window: float = 300.0,
        registry: Any = None,
        multiproc_dir: str | None = None,
        per_channel: bool = False,
        queue_size: int = 64,
        queue_bytes: int = 256 << 20,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if isinstance(sample_every, bool) or not isinstance(sample_every, int) or sample_every < 0:
            raise AvgPoolError(f"sample_every must be an int >= 0 (0: never), got {sample_every!r}")
        self.sample_every = sample_every
        self.interval = _check_positive("interval", interval)
        self.window = _check_positive("window", window)
        if self.window < self.interval:
            raise AvgPoolError(f"window must be >= interval ({interval}), got {window}")
        self.per_channel = bool(per_channel)
        self.clock = clock
        self.multiproc_dir = None if multiproc_dir is None else os.path.abspath(multiproc_dir)
        self._id = uuid.uuid4().hex[:8]
        self._models: dict[tuple[str, str], ModelTelemetry] = {}
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max(1, int(queue_size)))
        self.queue_bytes = int(queue_bytes)
        self._queued_bytes = 0
        self._bytes_lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._memory_limit = memory_limit()
        client = _client()
        if self.multiproc_dir is not None:
            _multiprocess_mode(self.multiproc_dir)
        self.registry = client.CollectorRegistry() if registry is None else registry
        self._metrics = make_metrics(client, None if self.multiproc_dir else self.registry)
        if self.multiproc_dir is not None:
            from prometheus_client import multiprocess

            multiprocess.MultiProcessCollector(self.registry, path=self.multiproc_dir)
        if registry is None:  # a caller's registry may have them already (the global one does)
            for default in (client.ProcessCollector, client.PlatformCollector, client.GCCollector):
                default(registry=self.registry)
        self.registry.register(Collector(self))

    # ------------------------------------------------------------------ models

    def add_model(self, runner: Any, *, baseline: Any = None) -> ModelTelemetry:
        """Start the telemetry of ``runner``'s model version (its ``name``, ``version``,
        ``layers``, ``size_bytes``, ``sha256``); ``baseline``: a `Profile` to judge drift by."""
        key = (str(runner.name), str(runner.version))
        if key in self._models:
            raise AvgPoolError(f"model {key[0]} version {key[1]} is added twice")
        model = ModelTelemetry(self, runner, baseline)
        self._models[key] = model
        for name in ("requests", "samples", "sampled", "dropped"):  # 0 from the start, not absent
            self._metrics[name].labels(*key)
        return model

    def model(self, name: str, version: str) -> ModelTelemetry:
        try:
            return self._models[(str(name), str(version))]
        except KeyError:
            known = [f"{n}:{v}" for n, v in self._models]
            raise AvgPoolError(f"no telemetry for model {name} version {version} (have {known})") from None

    @property
    def models(self) -> tuple[ModelTelemetry, ...]:
        return tuple(self._models.values())

    def observe_error(self, kind: str, model: str = "", version: str = "") -> None:
        """Count a failed request (``kind`` one of `ERROR_KINDS`; ``model=""`` when unknown)."""
        if kind not in ERROR_KINDS:
            raise AvgPoolError(f"kind must be one of {ERROR_KINDS}, got {kind!r}")
        self._metrics["errors"].labels(model, version, kind).inc()

    def set_ready(self, ready: bool) -> None:
        """Every model's readiness."""
        for m in self._models.values():
            m.set_ready(ready)

    def startup(self, seconds: float) -> None:
        """Start-up time of every model that has none of its own."""
        for m in self._models.values():
            if m.startup_seconds is None:
                m.startup(seconds)

    # ------------------------------------------------------------------ exposition, threads

    def exposition(self) -> tuple[bytes, str]:
        """(body, content type) for ``GET /metrics``."""
        client = _client()
        return client.generate_latest(self.registry), client.CONTENT_TYPE_LATEST

    def _enqueue(self, model: ModelTelemetry, outputs: dict[str, np.ndarray]) -> bool:
        size = sum(int(getattr(v, "nbytes", 0)) for v in outputs.values())
        with self._bytes_lock:
            if self._queued_bytes and self._queued_bytes + size > self.queue_bytes:
                return False
            self._queued_bytes += size
        try:
            self._queue.put_nowait((model, outputs, size))
            return True
        except queue.Full:
            with self._bytes_lock:
                self._queued_bytes -= size
            return False

    def flush(self) -> int:
        """Profile every queued sample now (the worker thread does this on its own) and wait for
        the one the worker may be profiling, so every sample queued before the call is in the
        window when it returns; how many this call profiled."""
        done = 0
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                self._queue.join()
                return done
            self._profile(*item)
            done += 1

    def _profile(self, model: ModelTelemetry, outputs: Mapping[str, np.ndarray], size: int) -> None:
        try:
            model._add(outputs)
        except Exception:  # a bad sample must not stop the worker
            log.exception("profiling a sample of %s version %s failed", model.name, model.version)
        finally:
            with self._bytes_lock:
                self._queued_bytes -= size
            self._queue.task_done()

    def tick(self) -> None:
        """One interval: profile what is queued, rotate every window, write this worker's window
        (with a shared directory), then recompute the windows' statistics and drift."""
        self.flush()
        now = self.clock()
        for model in self._models.values():
            model._rotate(now)
        self._write_windows()
        for model in self._models.values():
            model._judge()

    def start(self) -> None:
        """Start the worker thread (profiles samples) and the interval thread (`tick`)."""
        if self._threads:
            return
        self._stop.clear()
        self._threads = [
            threading.Thread(target=self._work, name="avgpool-telemetry-worker", daemon=True),
            threading.Thread(target=self._tick_loop, name="avgpool-telemetry-interval", daemon=True),
        ]
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        """Stop both threads and withdraw this worker's window files."""
        self._stop.set()
        for t in self._threads:
            t.join(timeout=10)
        self._threads = []
        self.flush()
        for path in self._own_files():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)

    def _work(self) -> None:
        while not self._stop.is_set():
            try:
                item = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            self._profile(*item)

    def _tick_loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.tick()
            except Exception:
                log.exception("telemetry interval failed")

    # ------------------------------------------------------------------ workers' files

    def _file(self, model: ModelTelemetry) -> str:
        name = f"window-{os.getpid()}-{self._id}-{_key(model)}"
        return os.path.join(self.multiproc_dir or "", name)

    def _own_files(self) -> list[str]:
        if self.multiproc_dir is None:
            return []
        return [self._file(m) for m in self._models.values()]

    def _write_windows(self) -> None:
        if self.multiproc_dir is None:
            return
        for model in self._models.values():
            model._own_window().save(self._file(model))

    def _windows(self) -> list[tuple[int, str, str]]:
        """(pid, key, path) of every live worker's window file; dead processes' are removed."""
        out = []
        for entry in os.scandir(self.multiproc_dir or "."):
            parts = entry.name.split("-", 3)
            if len(parts) != 4 or parts[0] != "window" or not parts[1].isdigit():
                continue
            pid = int(parts[1])
            if _alive(pid):
                out.append((pid, parts[3], entry.path))
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
        return out

    def _read_others(self, model: ModelTelemetry) -> list[Any]:
        """Other live workers' windows of ``model``."""
        if self.multiproc_dir is None:
            return []
        from avgpool.monitor.profile import Profile, ProfileError

        mine, key = self._file(model), _key(model)
        out = []
        for _, other, path in self._windows():
            if other != key or os.path.basename(path) == os.path.basename(mine):
                continue
            try:
                out.append(Profile.load(path))
            except (ProfileError, FileNotFoundError) as exc:  # a worker that just stopped
                log.warning("skipping %s: %s", path, exc)
        return out

    def worker_pids(self) -> list[int]:
        """The live processes that write windows to the shared directory (this one included)."""
        pids = {os.getpid()}
        if self.multiproc_dir is not None:
            pids.update(pid for pid, _, _ in self._windows())
        return sorted(pids)


def _key(model: ModelTelemetry) -> str:
    return urllib.parse.quote(f"{model.name}:{model.version}", safe="") + ".avgprof"


def _alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _multiprocess_mode(directory: str) -> None:
    """prometheus-client's multiprocess mode from now on in this process (it is chosen by an
    environment variable, read when a metric is created)."""
    from prometheus_client import values

    os.makedirs(directory, exist_ok=True)
    current = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if current and os.path.abspath(current) != directory:
        raise AvgPoolError(
            f"multiproc_dir {directory} differs from PROMETHEUS_MULTIPROC_DIR={current}: "
            "give the same directory"
        )
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    if values.ValueClass is values.MutexValue:
        values.ValueClass = values.MultiProcessValue()
