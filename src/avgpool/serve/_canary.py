"""Canaries of ``avgpool serve``: two versions of one model name behind one endpoint.

A canary on model name ``m`` routes the requests to ``/v2/models/m/infer`` that name no version
(a request naming a version goes to that version, untouched, and is not recorded):

- ``split``: the candidate answers a share of them by weighted round robin: after ``n`` routed
  requests it has answered exactly ``floor(n * share + 1/2)`` (never random, so a small share
  is reached without waiting for luck); a new share restarts the count. Share 0 sends all of
  them to the baseline (a rollback: the canary stays open with its records), share 1 all to the
  candidate. Once the canary is closed, a name alone means its highest version again.
- ``shadow``: the baseline answers every request; then the candidate runs it too, on one
  background thread fed by a bounded queue, and its outputs are compared with the baseline's
  and recorded, never returned. A full queue drops the mirror and counts it, so the candidate
  never slows the answers down.

Each version's records cover the routed requests since the canary opened (re-opening with the
same two versions keeps them) or was reset: requests, failures by error kind (``errors``
counts the server's own, status 5xx, not a client's 4xx), and the model-run seconds of the
answered ones (what `avgpool_inference_latency_seconds` measures, injected fault latency
included: the same measure for answered and mirrored runs) in a ring buffer of the newest
``max_records``.

A mirrored request is compared output by output: the max abs error, the max relative error (the
max abs error over the largest magnitude of the baseline's output, so values near zero do not
blow it up) and, for 2-D outputs ``(batch, classes)``, each row's top-1 class (``compared``
counts rows). Outputs that differ in names, shapes or non-finite positions are a mismatch, with
error ``sys.float_info.max`` (JSON has no infinity).

The Flagger webhook calls the judge that `register_judge` installs (``avgpool.canary`` installs
its own when imported), so this layer never imports the layer above it.
"""

from __future__ import annotations

import logging
import math
import queue
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["MODES", "Canaries", "Canary", "Comparison", "VersionRecords", "compare_outputs", "register_judge"]

log = logging.getLogger("avgpool.serve")

#: The canary modes.
MODES = ("split", "shadow")
#: Answered latencies and per-request mirror errors kept per canary (the newest).
MAX_RECORDS = 20000
#: Mirrored requests waiting for the candidate before new ones are dropped.
SHADOW_QUEUE = 64
#: A mismatch's error: finite, so the JSON carries it, and above any tolerance.
MISMATCH_ERROR = sys.float_info.max

_judge: list[Callable[..., Any]] = []


def register_judge(fn: Callable[..., Any] | None) -> None:
    """Install the judge that ``POST /admin/flagger/{model}`` asks (None uninstalls it).

    ``fn(state, profiles, payload)`` gets the canary's state (the JSON of ``GET
    /admin/canary/{model}`` plus ``"look"``: the webhook calls since the canary opened or was
    reset, this one included), ``profiles`` ({version: live `Profile`} of the baseline and the
    candidate) and Flagger's webhook payload (a dict; ``fn`` may take only the first two). It
    returns a verdict: an object with ``verdict`` and ``to_dict()``, or a dict with
    ``"verdict"``; ``"pass"`` answers 200, anything else 503.
    """
    _judge.clear()
    if fn is not None:
        if not callable(fn):
            raise TypeError(f"register_judge needs a callable or None, got {type(fn).__name__}")
        _judge.append(fn)


def registered_judge() -> Callable[..., Any] | None:
    return _judge[0] if _judge else None


class VersionRecords:
    """What one version did with the routed requests of the window."""

    def __init__(self, max_records: int = MAX_RECORDS) -> None:
        self.requests = 0
        self.errors = 0
        self.errors_by_kind: dict[str, int] = {}
        self.latencies: deque[float] = deque(maxlen=max_records)

    def answered(self, seconds: float) -> None:
        self.requests += 1
        self.latencies.append(float(seconds))

    def failed(self, kind: str, status: int) -> None:
        self.requests += 1
        self.errors_by_kind[kind] = self.errors_by_kind.get(kind, 0) + 1
        if status >= 500:  # the server's fault; a client's bad request says nothing of the version
            self.errors += 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "errors": self.errors,
            "errors_by_kind": dict(self.errors_by_kind),
            "latencies": list(self.latencies),
        }


@dataclass
class Comparison:
    """One mirrored request's outputs, candidate against baseline."""

    rows: int
    top1_rows: int = 0
    top1_agree: int = 0
    max_abs_error: float = 0.0
    max_rel_error: float = 0.0
    mismatch: bool = False


def _rows(outputs: Mapping[str, np.ndarray]) -> int:
    for array in outputs.values():
        return int(array.shape[0]) if np.ndim(array) else 1
    return 1


def compare_outputs(baseline: Mapping[str, Any], candidate: Mapping[str, Any]) -> Comparison:
    """The candidate's outputs against the baseline's on the same inputs (see the module)."""
    result = Comparison(rows=_rows(baseline))
    agree = None
    for name, b in baseline.items():
        b = np.asarray(b)
        c = candidate.get(name)
        c = None if c is None else np.asarray(c)
        classifier = b.ndim == 2 and b.shape[1] >= 2
        if c is None or c.shape != b.shape:
            result.mismatch = True
            if classifier:
                agree = np.zeros(b.shape[0], dtype=bool)
            continue
        if b.dtype.kind not in "biuf" or c.dtype.kind not in "biuf":
            result.mismatch |= not np.array_equal(b, c)
            continue
        b64, c64 = b.astype(np.float64), c.astype(np.float64)
        finite = np.isfinite(b64) & np.isfinite(c64)
        same_nonfinite = (b64 == c64) | (np.isnan(b64) & np.isnan(c64))
        if not (finite | same_nonfinite).all():
            result.mismatch = True
        if finite.any():
            err = float(np.abs(b64[finite] - c64[finite]).max())
            scale = float(np.abs(b64[finite]).max())
            result.max_abs_error = max(result.max_abs_error, err)
            rel = err / scale if scale > 0 else (0.0 if err == 0 else MISMATCH_ERROR)
            result.max_rel_error = max(result.max_rel_error, rel)
        if classifier:
            rows_agree = np.argmax(b64, axis=1) == np.argmax(c64, axis=1)
            agree = rows_agree if agree is None else agree & rows_agree
    if agree is not None:
        result.top1_rows, result.top1_agree = int(agree.size), int(agree.sum())
    if result.mismatch:
        result.max_abs_error = result.max_rel_error = MISMATCH_ERROR
    return result


class MirrorRecords:
    """The comparisons of the window's mirrored requests."""

    def __init__(self, max_records: int = MAX_RECORDS) -> None:
        self.requests = 0
        self.compared = 0
        self.top1_compared = 0
        self.top1_agree = 0
        self.max_abs_error = 0.0
        self.max_rel_error = 0.0
        self.mismatched = 0
        self.dropped = 0
        self.abs_errors: deque[float] = deque(maxlen=max_records)

    def add(self, c: Comparison) -> None:
        self.requests += 1
        self.compared += c.rows
        self.top1_compared += c.top1_rows
        self.top1_agree += c.top1_agree
        self.mismatched += int(c.mismatch)
        self.max_abs_error = max(self.max_abs_error, c.max_abs_error)
        self.max_rel_error = max(self.max_rel_error, c.max_rel_error)
        self.abs_errors.append(c.max_abs_error)

    def to_dict(self) -> dict[str, Any]:
        return {
            "compared": self.compared,
            "top1_agree": self.top1_agree,
            "max_abs_error": self.max_abs_error,
            "max_rel_error": self.max_rel_error,
            "abs_errors": list(self.abs_errors),
            "requests": self.requests,
            "top1_compared": self.top1_compared,
            "mismatched": self.mismatched,
            "dropped": self.dropped,
        }


@dataclass
class Canary:
    """One model name's canary: its versions, share, mode, routing counts and records."""

    model: str
    baseline: str
    candidate: str
    share: float
    mode: str
    max_records: int = MAX_RECORDS
    since: float = field(default_factory=time.time)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        self.routed = self.to_candidate = self.looks = self.generation = 0
        self.records = {v: VersionRecords(self.max_records) for v in (self.baseline, self.candidate)}
        self.mirror = MirrorRecords(self.max_records)

    def route(self) -> str:
        """The version that answers the next unversioned request."""
        if self.mode == "shadow":
            return self.baseline
        with self.lock:
            self.routed += 1
            due = math.floor(self.routed * self.share + 0.5)
            if due > self.to_candidate:
                self.to_candidate += 1
                return self.candidate
            return self.baseline

    def update(self, share: float, mode: str) -> None:
        with self.lock:
            self.share, self.mode = share, mode
            self.routed = self.to_candidate = 0

    def reset(self) -> None:
        """A new judging window: empty records, ``since`` now."""
        with self.lock:
            generation = self.generation + 1
            self.__post_init__()
            self.generation, self.since = generation, time.time()

    def answered(self, version: str, seconds: float, generation: int | None = None) -> None:
        with self.lock:
            if version in self.records and generation in (None, self.generation):
                self.records[version].answered(seconds)

    def failed(self, version: str, kind: str, status: int, generation: int | None = None) -> None:
        with self.lock:
            if version in self.records and generation in (None, self.generation):
                self.records[version].failed(kind, status)

    def summary(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "baseline": self.baseline,
            "candidate": self.candidate,
            "share": self.share,
            "mode": self.mode,
            "since": self.since,
        }

    def to_dict(self) -> dict[str, Any]:
        with self.lock:
            return {
                **self.summary(),
                "versions": {v: r.to_dict() for v, r in self.records.items()},
                "mirror": self.mirror.to_dict(),
            }


@dataclass
class _Mirror:
    canary: Canary
    generation: int
    runner: Any
    inputs: dict[str, np.ndarray]
    outputs: dict[str, np.ndarray] | None  # the baseline's; None when it failed


class Canaries:
    """The open canaries of a server, by model name, and the shadow worker.

    ``run(runner, inputs)`` runs the candidate for a mirror (on the worker thread) and returns
    ``(outputs, seconds)`` or raises what the server's own run raises; it is given by the app,
    which knows the faults and the telemetry.
    """

    def __init__(self, *, max_records: int = MAX_RECORDS, queue_size: int = SHADOW_QUEUE) -> None:
        self.max_records = max_records
        self._open: dict[str, Canary] = {}
        self._lock = threading.Lock()
        self._queue: queue.Queue[_Mirror | None] = queue.Queue(maxsize=queue_size)
        self._worker: threading.Thread | None = None
        # cumulative per model name, never reset: the Prometheus counters
        self._totals: dict[str, dict[str, float]] = {}
        self.run: Callable[[Any, dict[str, np.ndarray]], tuple[dict[str, np.ndarray], float]] | None = None
        self.on_error: Callable[[BaseException], tuple[str, int]] = lambda exc: ("model_error", 500)

    def get(self, model: str) -> Canary | None:
        return self._open.get(model)

    def open(self, model: str, baseline: str, candidate: str, share: float, mode: str) -> Canary:
        """Open a canary, or update the open one: same versions keep their records."""
        with self._lock:
            current = self._open.get(model)
            if current is not None and (current.baseline, current.candidate) == (baseline, candidate):
                current.update(share, mode)
                return current
            canary = Canary(model, baseline, candidate, share, mode, max_records=self.max_records)
            self._open[model] = canary
            return canary

    def close(self, model: str) -> Canary | None:
        with self._lock:
            return self._open.pop(model, None)

    def share(self, model: str) -> float:
        """The share of the model's unversioned requests the candidate answers now."""
        canary = self._open.get(model)
        return canary.share if canary is not None and canary.mode == "split" else 0.0

    def totals(self, model: str) -> dict[str, float]:
        return dict(self._totals.get(model, {"mirrored": 0, "agree": 0, "dropped": 0}))

    def mirror(self, canary: Canary, runner: Any, inputs: dict[str, np.ndarray], outputs: Any) -> bool:
        """Queue a mirror of a request the baseline ran (never blocks); False when dropped."""
        item = _Mirror(canary, canary.generation, runner, dict(inputs), outputs)
        self._start()
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            with canary.lock:
                if item.generation == canary.generation:
                    canary.mirror.dropped += 1
            self._count(canary.model, dropped=1)
            return False
        return True

    def drain(self, timeout: float = 30.0) -> None:
        """Wait until every queued mirror has run."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.005)

    def _start(self) -> None:
        with self._lock:
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(target=self._work, name="avgpool-shadow", daemon=True)
                self._worker.start()

    def stop(self, timeout: float = 5.0) -> None:
        worker = self._worker
        if worker is not None and worker.is_alive():
            self._queue.put(None)
            worker.join(timeout)
        self._worker = None

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                self._run_mirror(item)
            except Exception:  # a mirror must never take the worker down
                log.exception("shadow run on the candidate failed")
            finally:
                self._queue.task_done()

    def _run_mirror(self, item: _Mirror) -> None:
        canary, version = item.canary, item.runner.version
        try:
            outputs, seconds = self.run(item.runner, item.inputs)  # type: ignore[misc]
        except Exception as exc:
            canary.failed(version, *self.on_error(exc), generation=item.generation)
            return
        canary.answered(version, seconds, generation=item.generation)
        if item.outputs is None:
            return
        comparison = compare_outputs(item.outputs, outputs)
        with canary.lock:
            if item.generation != canary.generation:
                return
            canary.mirror.add(comparison)
        self._count(canary.model, mirrored=comparison.rows, agree=comparison.top1_agree)

    def _count(self, model: str, **amounts: int) -> None:
        with self._lock:
            totals = self._totals.setdefault(model, dict.fromkeys(("mirrored", "agree", "dropped"), 0))
            for key, amount in amounts.items():
                totals[key] += amount
