"""The timing harness: warm-up excluded, rotating inputs, a time budget, nearest-rank statistics.

A measurement calls ``fn(inputs[i % len(inputs)])`` for i = 0, 1, ...: rotating among several
prepared inputs (whose total exceeds the last-level cache, see `avgpool.bench.cases`) means no
call finds its input still in cache from the previous one. Warm-up calls are not timed. The
timed calls stop after ``repeats`` calls or once ``budget_s`` seconds of timed calls have
passed, whichever comes first, but never before one timed call; a measurement cut short by the
budget says so (``budget_limited``), beside its sample count.

Percentiles are nearest-rank (the k-th smallest sample with ``k = ceil(p/100 * n)``), the
definition MLPerf LoadGen and ONNX Runtime's perf_test report, so every reported time is a
time that was actually measured; the median is the 50th percentile.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["Timing", "nearest_rank", "time_calls"]


def nearest_rank(samples: Sequence[float], percentile: float) -> float:
    """The nearest-rank percentile of ``samples``: the ``ceil(p/100 * n)``-th smallest.

    Examples
    --------
    >>> nearest_rank([4.0, 1.0, 3.0, 2.0], 50)
    2.0
    >>> nearest_rank([4.0, 1.0, 3.0, 2.0], 90), nearest_rank([5.0], 10)
    (4.0, 5.0)
    """
    if not samples:
        raise ValueError("samples must not be empty")
    if not 0 < percentile <= 100:
        raise ValueError(f"percentile must be in (0, 100], got {percentile}")
    ordered = sorted(samples)
    return ordered[max(1, math.ceil(percentile / 100 * len(ordered))) - 1]


@dataclass(frozen=True)
class Timing:
    """Seconds per call of one measurement, and how it was taken."""

    samples: tuple[float, ...]
    warmup: int
    repeats: int
    budget_limited: bool

    @property
    def n(self) -> int:
        return len(self.samples)

    def summary(self) -> dict[str, Any]:
        """Milliseconds: median, p10, p90, min, max, with the sample count and budget flag."""
        ms = [s * 1e3 for s in self.samples]
        return {
            "median_ms": nearest_rank(ms, 50),
            "p10_ms": nearest_rank(ms, 10),
            "p90_ms": nearest_rank(ms, 90),
            "min_ms": min(ms),
            "max_ms": max(ms),
            "n": self.n,
            "warmup": self.warmup,
            "budget_limited": self.budget_limited,
        }

    def percentile(self, percentile: float) -> float:
        """The nearest-rank percentile of the samples, in seconds."""
        return nearest_rank(self.samples, percentile)

    def latency(self) -> dict[str, Any]:
        """Milliseconds for a latency report: p50, p90, p95, p99, min, max, mean, beside ``n``.

        With fewer than 100 samples the nearest-rank p99 is the slowest sample (and p95 below
        20), so the sample count always travels with the percentiles.

        Examples
        --------
        >>> t = Timing(tuple(i / 1000 for i in range(1, 201)), 1, 200, False)
        >>> [t.latency()[k] for k in ("n", "p50_ms", "p95_ms", "p99_ms", "max_ms")]
        [200, 100.0, 190.0, 198.0, 200.0]
        """
        ms = [s * 1e3 for s in self.samples]
        out: dict[str, Any] = {"n": self.n}
        for p in (50, 90, 95, 99):
            out[f"p{p}_ms"] = nearest_rank(ms, p)
        out.update(
            min_ms=min(ms),
            max_ms=max(ms),
            mean_ms=math.fsum(ms) / len(ms),
            warmup=self.warmup,
            budget_limited=self.budget_limited,
        )
        return out

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), **self.summary()}


def time_calls(
    fn: Callable[[Any], Any],
    inputs: Sequence[Any],
    *,
    repeats: int = 10,
    warmup: int = 1,
    budget_s: float = 3.0,
    warmup_budget_s: float | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> Timing:
    """Time ``fn`` over rotating ``inputs``: up to ``warmup`` untimed calls, then up to ``repeats``.

    Parameters
    ----------
    fn : callable
        Called with one element of ``inputs``; its result is dropped after the clock stops.
    inputs : sequence
        Prepared arguments, used in turn (call i gets ``inputs[i % len(inputs)]``).
    repeats, warmup : int
        Timed calls wanted (at least 1), untimed calls first.
    budget_s : float
        Stop timing once this many seconds of timed calls have passed (after >= 1 call).
    warmup_budget_s : float, optional
        Stop warming up once this many seconds of warm-up calls have passed (after >= 1 call);
        ``Timing.warmup`` is the number of warm-up calls made.

    Examples
    --------
    >>> seen = []
    >>> t = time_calls(seen.append, ["a", "b"], repeats=3, warmup=1)
    >>> seen, t.n, t.budget_limited
    (['a', 'b', 'a', 'b'], 3, False)
    >>> ticks = iter(range(100))
    >>> time_calls(len, ["ab"], warmup=5, warmup_budget_s=2, clock=lambda: next(ticks)).warmup
    2
    """
    if not inputs:
        raise ValueError("inputs must not be empty")
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats must be >= 1 and warmup >= 0, got {repeats} and {warmup}")
    k = len(inputs)
    warmed, start = 0, (clock() if warmup_budget_s is not None else 0.0)
    while warmed < warmup:
        fn(inputs[warmed % k])
        warmed += 1
        if warmup_budget_s is not None and clock() - start >= warmup_budget_s:
            break
    samples: list[float] = []
    spent = 0.0
    for i in range(warmed, warmed + repeats):
        arg = inputs[i % k]
        start = clock()
        result = fn(arg)
        elapsed = clock() - start
        del result  # freeing the output is not the op's time
        samples.append(elapsed)
        spent += elapsed
        if spent >= budget_s:
            break
    return Timing(tuple(samples), warmed, repeats, len(samples) < repeats)
