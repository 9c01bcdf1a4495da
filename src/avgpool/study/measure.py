"""What the study measures besides accuracy: parameters, latency and activation statistics.

Latency uses `avgpool.bench.timing.time_calls` (warm-up excluded, rotating inputs) on the eval
model without gradients, at batch 1 and at one larger batch. The variants are timed in
interleaved rounds (every variant once per round, then the next round), so a slow minute on a
shared machine lands on all of them rather than on whichever ran then; each percentile is
nearest-rank over the pooled samples of all rounds and is reported with its sample count.

Activation statistics reuse `avgpool.monitor`: a `TorchCollector` adds each probed module's
output (the downsampling layers) to a `Profile` whose histogram edges are shared by every
variant at the same probe, so the histograms compare bin for bin. The models of every seed
feed the same profile. Exact zeros (the ReLU's dead units, passed through or pooled) are
counted beside it, since a histogram bin cannot tell 0 from a small positive value.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["activation_stats", "count_parameters", "measure_latency"]


def count_parameters(model: Any) -> int:
    """Trainable parameters of a torch module.

    Examples
    --------
    >>> import torch
    >>> count_parameters(torch.nn.Conv2d(1, 16, 3))
    160
    """
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _percentiles(samples: Sequence[float], budget_limited: bool, **extra: Any) -> dict[str, Any]:
    from avgpool.bench.timing import nearest_rank

    ms = [s * 1e3 for s in samples]
    return {
        "p50_ms": nearest_rank(ms, 50),
        "p95_ms": nearest_rank(ms, 95),
        "n": len(ms),
        "budget_limited": budget_limited,
        **extra,
    }


def measure_latency(
    models: Mapping[str, Any],
    x: np.ndarray,
    *,
    batch: int = 256,
    rounds: int = 3,
    repeats: int = 60,
    repeats_batch: int = 10,
    warmup: int = 3,
    budget_s: float = 1.0,
) -> dict[str, dict[str, Any]]:
    """Forward-pass latency of each eval model at batch 1 and at ``batch`` (capped to ``len(x)``).

    Each round times every model for up to ``repeats`` single images and ``repeats_batch``
    batches (after ``warmup`` untimed calls, within ``budget_s`` seconds of timed calls each).

    Returns
    -------
    dict
        ``{name: {"batch1": {...}, "batch": {...}}}``, each with ``p50_ms``, ``p95_ms``, the
        sample count ``n``, ``budget_limited`` and the batch size.
    """
    import torch

    from avgpool.bench.timing import time_calls

    batch = max(1, min(batch, len(x)))
    singles = [torch.from_numpy(np.ascontiguousarray(x[i : i + 1])) for i in range(min(16, len(x)))]
    batches = [
        torch.from_numpy(np.ascontiguousarray(x[:batch])),
        torch.from_numpy(np.ascontiguousarray(x[len(x) - batch :])),
    ]
    kinds = (("batch1", singles, repeats, 1), ("batch", batches, repeats_batch, batch))
    samples: dict[tuple[str, str], list[float]] = {(n, k[0]): [] for n in models for k in kinds}
    limited: dict[tuple[str, str], bool] = dict.fromkeys(samples, False)
    for model in models.values():
        model.eval()
    with torch.no_grad():
        for _ in range(rounds):
            for name, model in models.items():
                for kind, inputs, count, _ in kinds:
                    timing = time_calls(model, inputs, repeats=count, warmup=warmup, budget_s=budget_s)
                    samples[name, kind].extend(timing.samples)
                    limited[name, kind] |= timing.budget_limited
    return {
        name: {
            kind: _percentiles(samples[name, kind], limited[name, kind], batch=size)
            for kind, _, _, size in kinds
        }
        for name in models
    }


def _zero_counter(counts: dict[str, list[int]], name: str) -> Any:
    def hook(module: Any, args: Any, output: Any) -> None:
        out = output[0] if isinstance(output, (tuple, list)) else output
        counts[name][0] += int((out == 0).sum())
        counts[name][1] += out.numel()

    return hook


def _run(models: Sequence[Any], probes: Sequence[str], profile: Any, x: np.ndarray) -> dict[str, list[int]]:
    """Feed ``x`` through every model with the collector attached; returns zeros and counts."""
    import torch

    from avgpool.monitor import TorchCollector

    counts = {p: [0, 0] for p in probes}
    for model in models:
        model.eval()
        modules = dict(model.named_modules())
        handles = [modules[p].register_forward_hook(_zero_counter(counts, p)) for p in probes if p in modules]
        try:
            with TorchCollector(model, probes, profile), torch.no_grad():
                for start in range(0, len(x), 512):
                    model(torch.from_numpy(x[start : start + 512]))
                    profile.batches += 1
        finally:
            for h in handles:
                h.remove()
    return counts


def activation_stats(
    variants: Mapping[str, tuple[Sequence[str], Sequence[Any]]],
    x: np.ndarray,
    *,
    bins: int = 64,
) -> dict[str, list[dict[str, Any]]]:
    """Statistics of each variant's probed outputs over ``x``, on histogram edges shared by all
    variants at the same probe position.

    Parameters
    ----------
    variants : mapping
        ``{name: (probe module names, models)}``; every model of a variant (one per seed) adds
        to the same statistics.
    x : array
        Inputs (the test set).
    bins : int
        Histogram bins between the smallest and the largest value any variant produces at that
        probe position (0 included).

    Returns
    -------
    dict
        ``{name: [one dict per probe]}`` with the probe's module name, per-sample ``shape``,
        ``count``, ``mean``, ``std``, ``min``, ``max``, ``zeros`` and ``sparsity`` (the fraction
        of exact zeros), and the histogram: ``edges`` (``bins + 1``) and ``hist`` (``bins``
        counts; values outside the edges: ``below`` / ``above``, none by construction).
    """
    from avgpool.monitor import Profile

    class Binned(Profile):
        """A profile that also counts each probe's finite values on fixed linear edges shared
        by every variant (for plots that overlay them): below, one per bin, at or above."""

        def __init__(self, edges: Mapping[str, np.ndarray]) -> None:
            super().__init__()
            self.fixed = dict(edges)
            self.linear = {p: np.zeros(len(e) + 1, np.int64) for p, e in self.fixed.items()}

        def update(self, name: str, x: Any, *, op: str = "") -> None:
            super().update(name, x, op=op)
            v = np.asarray(x, dtype=np.float64).ravel()
            idx = np.searchsorted(self.fixed[name], v[np.isfinite(v)], side="right")
            self.linear[name] += np.bincount(idx, minlength=len(self.linear[name]))

    # pass 1: each probe position's range over every variant and seed
    ranges: dict[int, tuple[float, float]] = {}
    for probes, models in variants.values():
        scratch = Profile()
        _run(models, probes, scratch, x)
        for k, probe in enumerate(probes):
            t = scratch[probe].totals()
            lo, hi = ranges.get(k, (0.0, 0.0))
            ranges[k] = (min(lo, t["min"]), max(hi, t["max"]))
    edges = {}
    for k, (lo, hi) in ranges.items():
        # an edge just past the maximum: the histogram's top bin is half-open
        hi = hi + 1e-6 * max(hi - lo, 1.0) if hi > lo else lo + 1.0
        edges[k] = np.linspace(lo, hi, bins + 1)
    # pass 2: the statistics, on the shared edges
    out: dict[str, list[dict[str, Any]]] = {}
    for name, (probes, models) in variants.items():
        profile = Binned({p: edges[k] for k, p in enumerate(probes)})
        zeros = _run(models, probes, profile, x)
        rows = []
        for probe in probes:
            layer = profile[probe]
            t = layer.totals()
            z, n = zeros[probe]
            rows.append(
                {
                    "probe": probe,
                    "op": layer.op,
                    "shape": list(layer.sample_shape),
                    "count": t["count"],
                    "mean": t["mean"],
                    "std": t["std"],
                    "min": t["min"],
                    "max": t["max"],
                    "zeros": z,
                    "sparsity": z / n if n else float("nan"),
                    "edges": profile.fixed[probe].tolist(),
                    "hist": profile.linear[probe][1:-1].tolist(),
                    "below": int(profile.linear[probe][0]),
                    "above": int(profile.linear[probe][-1]),
                }
            )
        out[name] = rows
    return out
