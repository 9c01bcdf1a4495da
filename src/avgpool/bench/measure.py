"""How ``avgpool bench`` takes one measurement: the settings, the warm-up, the timed calls.

Every measurement is taken the same way:

- **warm-up**: ``warmup`` untimed calls (the first of them timed alone, as ``first_call_ms``:
  JIT compilation, lazy session set-up, arena growth);
- **timed runs** over rotating inputs (`avgpool.bench.timing.time_calls`): ``rotate`` different
  seeded random input sets per batch size for a model; for an op, copies of one random input
  totalling twice the last-level cache (at least ``rotate``, at most 256), so no call finds its
  input in cache from the previous call. Up to ``repeats`` calls, stopping early once
  ``budget_s`` seconds of timed calls have passed (``budget_limited``);
- **latency**: nearest-rank percentiles p50/p90/p95/p99 of the timed calls, each reported with
  the sample count ``n`` (below 100 samples the p99 is the slowest call);
- **throughput**: ``batch / p50`` samples per second, for each batch size of the sweep;
- **memory**: the RSS high-water mark over the timed runs (`avgpool.bench.memory`, which says
  why a kernel counter and not a child process), and ``torch.cuda.max_memory_allocated`` over
  them for a model on CUDA. ``rss_peak_delta_bytes`` is the peak minus a baseline. For an op,
  the baseline is the RSS as the timed runs begin (after the warm-up, so no import, JIT
  compile or session set-up is counted): the delta is what the calls themselves add, their
  outputs and workspace. For a model, it is the RSS just before the model was loaded (the
  runtime already imported), and the bench's own rotating inputs are subtracted: the delta is
  what the model costs the process at that batch size, weights, arenas and activations;
- **size on disk**: see `avgpool.bench.models`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from avgpool._errors import AvgPoolError
from avgpool.bench.memory import PeakRSS, cuda_peak
from avgpool.bench.timing import time_calls

__all__ = ["LatencySettings", "Progress", "batch_list", "measure_calls", "progress_steps", "throughput"]

Progress = Callable[[Iterable[Any]], Iterable[Any]]


@dataclass(frozen=True)
class LatencySettings:
    """How each measurement is taken (see the module docstring).

    Examples
    --------
    >>> LatencySettings(repeats=0)
    Traceback (most recent call last):
    ...
    avgpool._errors.AvgPoolError: repeats must be >= 1, got 0
    """

    warmup: int = 3
    repeats: int = 100
    budget_s: float = 5.0
    rotate: int = 4
    seed: int = 0

    def __post_init__(self) -> None:
        if self.warmup < 0:
            raise AvgPoolError(f"warmup must be >= 0, got {self.warmup}")
        if self.repeats < 1:
            raise AvgPoolError(f"repeats must be >= 1, got {self.repeats}")
        if not self.budget_s > 0:
            raise AvgPoolError(f"budget must be > 0 seconds, got {self.budget_s}")
        if self.rotate < 1:
            raise AvgPoolError(f"rotate must be >= 1 input set, got {self.rotate}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def measure_calls(
    call: Callable[[Any], Any],
    inputs: Sequence[Any],
    settings: LatencySettings,
    clock: Callable[[], float],
    device: Any = None,
) -> dict[str, Any]:
    """Warm-up (the first call timed alone), then the timed runs under a memory peak."""
    k = len(inputs)
    record: dict[str, Any] = {"first_call_ms": None}
    if settings.warmup:
        start = clock()
        result = call(inputs[0])
        record["first_call_ms"] = (clock() - start) * 1e3
        del result
        for i in range(1, settings.warmup):
            call(inputs[i % k])
    shift = settings.warmup % k
    rotated = list(inputs[shift:]) + list(inputs[:shift])
    reset, read = cuda_peak(device)
    if reset is not None:
        reset()
    with PeakRSS() as memory:
        timing = time_calls(
            call, rotated, repeats=settings.repeats, warmup=0, budget_s=settings.budget_s, clock=clock
        )
    record.update(timing.latency(), warmup=settings.warmup)  # time_calls itself ran none
    record["samples_ms"] = [s * 1e3 for s in timing.samples]
    record["rss_peak_bytes"] = memory.peak_bytes
    record["rss_start_bytes"] = memory.start_bytes
    record["memory_method"] = memory.method
    record["cuda_peak_bytes"] = read() if read is not None else None
    return record


def throughput(batch: int, record: dict[str, Any]) -> float:
    return batch / (record["p50_ms"] / 1e3) if record["p50_ms"] > 0 else math.inf


def progress_steps(items: list[Any], progress: Progress | None) -> Iterable[Any]:
    return progress(items) if progress is not None else items


def batch_list(batch_sizes: Sequence[int] | None, default: int) -> list[int]:
    if batch_sizes is None:
        return [default]
    sizes = sorted({int(b) for b in batch_sizes})
    if not sizes or sizes[0] < 1:
        raise AvgPoolError(f"batch sizes must be >= 1, got {list(batch_sizes)}")
    return sizes
