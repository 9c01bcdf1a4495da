"""A/B timing: two callables timed in interleaved pairs, and the ratio of their medians with a CI.

Interleaving. Pair ``i`` runs A and B back to back on the same input (``inputs[i % k]``), A first
in even pairs and B first in odd ones (AB BA AB ...). Machine drift (frequency scaling, another
process, a warming cache) then lands on both in equal measure, and neither always runs in the
wake of the other. Warm-up calls alternate the same way and are not timed. The timed pairs
stop after ``repeats`` pairs, or once the two together have used ``budget_s`` seconds of timed
calls (after at least one pair).

The statistic. ``ratio = median(B) / median(A)`` over the timed samples (nearest-rank medians,
as everywhere in `avgpool.bench`): below 1, B is faster. Its spread is a **paired percentile
bootstrap**: resample the n pairs with replacement (so each resample keeps the drift that A and
B shared), recompute the ratio of medians, repeat ``resamples`` times with a seeded generator,
and take the nearest-rank ``(1 - confidence) / 2`` and ``(1 + confidence) / 2`` percentiles of
those ratios. The interval covers how much the ratio could move under re-measurement of the
same machine state; it does not make a noisy machine quiet. The p10 and p90 of the per-pair
ratios ``b_i / a_i`` are reported too, as the spread of single comparisons. The verdict says
"no clear difference" when the interval contains 1.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from avgpool._errors import AvgPoolError
from avgpool.bench.timing import Timing, nearest_rank

__all__ = ["Ratio", "ratio_of_medians", "time_pairs"]


@dataclass(frozen=True)
class Ratio:
    """``median(B) / median(A)``, its bootstrap interval, and the spread of per-pair ratios."""

    ratio: float
    low: float
    high: float
    confidence: float
    resamples: int
    n: int
    seed: int
    pair_p10: float
    pair_p90: float

    @property
    def verdict(self) -> str:
        if self.high < 1:
            return "B faster"
        if self.low > 1:
            return "B slower"
        return "no clear difference"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "verdict": self.verdict}


def _medians(samples: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """The nearest-rank median of each row of ``samples[rows]``."""
    k = max(1, math.ceil(0.5 * rows.shape[1])) - 1
    return np.partition(samples[rows], k, axis=1)[:, k]


def ratio_of_medians(
    a: Sequence[float],
    b: Sequence[float],
    *,
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> Ratio:
    """The ratio of B's median to A's over paired samples, with a paired bootstrap interval.

    Parameters
    ----------
    a, b : sequence of float
        Paired samples (``a[i]`` and ``b[i]`` timed in the same pair), the same length.
    confidence : float
        The interval's coverage, in (0, 1).
    resamples : int
        Bootstrap resamples (at least 100).
    seed : int
        Seeds the resampling: the same samples and seed give the same interval.

    Examples
    --------
    >>> r = ratio_of_medians([1.0, 1.1, 0.9, 1.0, 1.2], [2.0, 2.2, 1.8, 2.0, 2.4])
    >>> r.ratio, r.low, r.high, r.verdict
    (2.0, 2.0, 2.0, 'B slower')
    """
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    if x.ndim != 1 or x.shape != y.shape or x.size == 0:
        raise AvgPoolError(
            f"a and b must be paired samples of one equal length >= 1, got {x.size} and {y.size}"
        )
    if not 0 < confidence < 1:
        raise AvgPoolError(f"confidence must be in (0, 1), got {confidence}")
    if resamples < 100:
        raise AvgPoolError(f"resamples must be >= 100, got {resamples}")
    if np.any(x <= 0) or np.any(y <= 0):
        raise AvgPoolError("timings must be > 0 to form ratios")
    n = x.size
    ratio = nearest_rank(y.tolist(), 50) / nearest_rank(x.tolist(), 50)
    rng = np.random.default_rng(seed)
    chunk = max(1, min(resamples, 4_000_000 // n))  # bounds the index array's memory
    ratios = []
    for start in range(0, resamples, chunk):
        rows = rng.integers(0, n, size=(min(chunk, resamples - start), n))
        ratios.append(_medians(y, rows) / _medians(x, rows))
    boot = np.concatenate(ratios).tolist()
    tail = (1 - confidence) / 2 * 100
    pairs = (y / x).tolist()
    return Ratio(
        ratio=ratio,
        low=nearest_rank(boot, max(tail, 1e-9)),
        high=nearest_rank(boot, 100 - tail),
        confidence=confidence,
        resamples=resamples,
        n=n,
        seed=seed,
        pair_p10=nearest_rank(pairs, 10),
        pair_p90=nearest_rank(pairs, 90),
    )


def time_pairs(
    fa: Callable[[Any], Any],
    fb: Callable[[Any], Any],
    inputs_a: Sequence[Any],
    inputs_b: Sequence[Any],
    *,
    repeats: int = 100,
    warmup: int = 1,
    budget_s: float = 10.0,
    clock: Callable[[], float] = time.perf_counter,
    between: Callable[[], None] | None = None,
) -> tuple[Timing, Timing]:
    """Time ``fa`` and ``fb`` in interleaved pairs (AB BA AB ...): one `Timing` each, paired.

    ``inputs_a[i % k]`` and ``inputs_b[i % k]`` hold the same data for each runtime; ``between``
    runs once after the warm-up pairs, before the first timed one (to reset memory peaks).

    Examples
    --------
    >>> order = []
    >>> ta, tb = time_pairs(lambda x: order.append("a" + x), lambda x: order.append("b" + x),
    ...                     ["0", "1"], ["0", "1"], repeats=3, warmup=1)
    >>> order, ta.n, tb.n
    (['a0', 'b0', 'b1', 'a1', 'a0', 'b0', 'b1', 'a1'], 3, 3)
    """
    if not inputs_a or len(inputs_a) != len(inputs_b):
        raise AvgPoolError(
            "inputs_a and inputs_b must be non-empty and equally long, "
            f"got {len(inputs_a)} and {len(inputs_b)}"
        )
    if repeats < 1 or warmup < 0:
        raise AvgPoolError(f"repeats must be >= 1 and warmup >= 0, got {repeats} and {warmup}")
    k = len(inputs_a)
    calls = ((fa, inputs_a), (fb, inputs_b))
    for i in range(warmup):
        for f, inputs in calls if i % 2 == 0 else calls[::-1]:
            f(inputs[i % k])
    if between is not None:
        between()
    samples: tuple[list[float], list[float]] = ([], [])
    spent = 0.0
    for i in range(warmup, warmup + repeats):
        order = (0, 1) if i % 2 == 0 else (1, 0)
        for j in order:
            f, inputs = calls[j]
            arg = inputs[i % k]
            start = clock()
            result = f(arg)
            elapsed = clock() - start
            del result
            samples[j].append(elapsed)
            spent += elapsed
        if spent >= budget_s:
            break
    limited = len(samples[0]) < repeats
    return (
        Timing(tuple(samples[0]), warmup, repeats, limited),
        Timing(tuple(samples[1]), warmup, repeats, limited),
    )
