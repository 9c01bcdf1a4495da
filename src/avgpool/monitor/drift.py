"""Drift between two profiles, per layer (and per channel): how far the candidate's activations
moved from the baseline's, and a verdict (ok / warn / fail) per layer and overall.

Statistics, all computed from the profiles (never from raw activations):

``mean_shift``   (candidate mean - baseline mean) / baseline std: a standardized mean difference.
``std_ratio``    candidate std / baseline std; judged on max(r, 1/r), so halving counts as doubling.
``psi``          population stability index, sum (c - b) ln(c / b), over baseline-decile groups of
                 the histogram buckets (the usual 10-bin PSI); proportions floored at `PSI_EPSILON`.
``ks``           Kolmogorov-Smirnov statistic, the largest CDF difference at the bucket bounds.
``wasserstein``  Wasserstein-1 distance between the bucketed distributions, in baseline std units.
``js``           Jensen-Shannon distance (base 2, in [0, 1]) over the same decile groups as PSI.
``nonfinite``    increase in the fraction of NaN/inf values.

Any two profiles compare: their exponential histograms (`avgpool.monitor.exphist`) are brought
to the lower of their two scales, where every bucket of one is a bucket of the other. Bucketed
versus exact: the KS statistic on bucket bounds is a lower bound of the exact two-sample
statistic and falls short of it by at most the largest single-bucket mass; Wasserstein-1 with
each bucket's mass at its estimate moves every value by at most the histogram's relative error
``a`` of it, so it is within ``a * (E|b| + E|c|)`` of the exact distance.

Each threshold is a (warn, fail) pair and a value strictly above it triggers; `THRESHOLDS`
documents where each comes from.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from avgpool.monitor.exphist import aligned
from avgpool.monitor.profile import LayerStats, Profile, ProfileError

__all__ = [
    "METRICS",
    "PSI_EPSILON",
    "PSI_GROUPS",
    "THRESHOLDS",
    "VERDICTS",
    "ChannelDrift",
    "DriftReport",
    "LayerDrift",
    "Threshold",
    "compare",
    "parse_threshold",
]

VERDICTS = ("ok", "warn", "fail")
METRICS = ("mean_shift", "std_ratio", "psi", "ks", "wasserstein", "js", "nonfinite")
#: PSI and JS group the fine bins into (up to) this many baseline quantile groups.
PSI_GROUPS = 10
#: Proportions below this are raised to it before PSI's logarithm.
PSI_EPSILON = 1e-4


@dataclass(frozen=True)
class Threshold:
    """A value above ``warn`` warns, above ``fail`` fails. ``source`` says why these numbers."""

    warn: float
    fail: float
    source: str

    def verdict(self, value: float) -> int:
        """0 ok, 1 warn, 2 fail; a NaN (a statistic that could not be computed) fails unless
        the metric is off: a gate must not pass what it could not measure."""
        if math.isnan(value):
            return 2 if math.isfinite(self.fail) else 0
        return 2 if value > self.fail else 1 if value > self.warn else 0


THRESHOLDS: dict[str, Threshold] = {
    "mean_shift": Threshold(
        0.2, 0.5, "Cohen (1988), Statistical Power Analysis: d = 0.2 small, 0.5 medium effect"
    ),
    "std_ratio": Threshold(
        1.25, 2.0, "avgpool's choice (no standard): a 25% change in spread warns, a doubling or halving fails"
    ),
    "psi": Threshold(
        0.1,
        0.25,
        "Siddiqi (2006), Credit Risk Scorecards; Yurdakul (2018): < 0.1 stable, 0.1-0.25 moderate, "
        "> 0.25 significant shift",
    ),
    "ks": Threshold(
        0.1,
        0.2,
        "avgpool's choice: KS as an effect size (with millions of correlated activations a "
        "KS test's p-value flags any difference)",
    ),
    "wasserstein": Threshold(
        0.1, 0.25, "Evidently's default drift threshold for the normed Wasserstein distance (0.1); fail ours"
    ),
    "js": Threshold(
        0.1, 0.2, "Evidently's default drift threshold for the Jensen-Shannon distance (0.1); fail ours"
    ),
    "nonfinite": Threshold(0.0, 1e-3, "avgpool's choice: any new NaN/inf warns, more than 0.1% fails"),
}


def parse_threshold(text: str) -> tuple[str, Threshold]:
    """``psi=0.2:0.3`` -> ("psi", Threshold(0.2, 0.3)); ``psi=off`` disables the metric."""
    name, sep, values = text.partition("=")
    name = name.strip()
    if not sep or name not in METRICS:
        raise ProfileError(
            f"threshold must look like METRIC=WARN:FAIL with METRIC in {METRICS}, got {text!r}"
        )
    if values.strip() == "off":
        return name, Threshold(math.inf, math.inf, "disabled")
    try:
        warn, fail = (float(v) for v in values.split(":"))
    except ValueError:
        raise ProfileError(f"threshold must look like {name}=0.1:0.25 (warn:fail), got {text!r}") from None
    threshold = Threshold(warn, fail, "command line")
    _check_threshold(name, threshold)
    return name, threshold


def _check_threshold(name: str, t: Threshold) -> None:
    """A NaN limit would never trigger (every comparison with NaN is false): the gate would
    pass whatever it measured; a negative one fails whatever it measured."""
    if not (t.warn >= 0 and t.fail >= 0):
        raise ProfileError(
            f"threshold {name}: warn and fail must be numbers >= 0 (inf or 'off' disables), "
            f"got {t.warn}:{t.fail}"
        )
    if t.fail < t.warn:
        raise ProfileError(f"threshold {name}: fail ({t.fail}) must be >= warn ({t.warn})")


def _judged(metric: str, value: np.ndarray) -> np.ndarray:
    value = np.asarray(value, dtype=np.float64)
    if metric == "mean_shift":
        return np.abs(value)
    if metric == "std_ratio":
        with np.errstate(divide="ignore"):
            return np.maximum(value, 1.0 / value)
    return value


def _verdicts(metrics: Mapping[str, np.ndarray], thresholds: Mapping[str, Threshold]) -> np.ndarray:
    worst = None
    for name, value in metrics.items():
        judged = _judged(name, value)
        t = thresholds[name]
        v = np.where(judged > t.fail, 2, np.where(judged > t.warn, 1, 0))
        if math.isfinite(t.fail):  # not measured is not passed (see Threshold.verdict)
            v = np.where(np.isnan(judged), 2, v)
        worst = v if worst is None else np.maximum(worst, v)
    return worst


@dataclass(frozen=True)
class ChannelDrift:
    """Per-channel statistics: arrays with one entry per channel."""

    metrics: Mapping[str, np.ndarray]
    verdicts: np.ndarray

    def worst(self, k: int = 5) -> list[int]:
        """The ``k`` worst channels: by verdict (a channel that failed because a statistic could
        not be computed comes before one that merely warned), then by how far past its
        threshold its worst statistic is."""
        score = np.zeros(len(self.verdicts))
        with np.errstate(invalid="ignore", divide="ignore"):
            for name, value in self.metrics.items():
                t = THRESHOLDS[name]
                if math.isfinite(t.fail) and t.fail > 0:
                    score = np.maximum(score, np.nan_to_num(_judged(name, value) / t.fail, nan=0.0))
        order = np.lexsort((-score, -np.asarray(self.verdicts)))
        return [int(i) for i in order[:k]]


@dataclass(frozen=True)
class LayerDrift:
    """One layer: baseline vs candidate totals, the drift statistics and the verdict.

    ``bounds`` (lower, upper) and ``hist`` (baseline, candidate counts) are the two layer
    histograms over the same buckets, in ascending value order."""

    name: str
    candidate_name: str
    op: tuple[str, str]
    count: tuple[int, int]
    mean: tuple[float, float]
    std: tuple[float, float]
    metrics: Mapping[str, float]
    verdict: str
    reasons: tuple[str, ...]
    score: float
    bounds: tuple[np.ndarray, np.ndarray] = field(repr=False)
    hist: tuple[np.ndarray, np.ndarray] = field(repr=False)
    range: tuple[float, float] = (math.nan, math.nan)
    channels: ChannelDrift | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "candidate_name": self.candidate_name,
            "op": list(self.op),
            "verdict": self.verdict,
            "reasons": list(self.reasons),
            "score": self.score,
            "count": list(self.count),
            "mean": list(self.mean),
            "std": list(self.std),
            "metrics": dict(self.metrics),
        }
        if self.channels is not None:
            out["channels"] = {
                "verdicts": [VERDICTS[v] for v in self.channels.verdicts],
                "worst": self.channels.worst(),
                "metrics": {k: v.tolist() for k, v in self.channels.metrics.items()},
            }
        return out


@dataclass(frozen=True)
class DriftReport:
    """Every matched layer's drift, layers found on one side only, and the overall verdict."""

    baseline: Mapping[str, Any]
    candidate: Mapping[str, Any]
    layers: tuple[LayerDrift, ...]
    missing: tuple[str, ...]
    added: tuple[str, ...]
    notes: tuple[str, ...]
    thresholds: Mapping[str, Threshold]

    @property
    def verdict(self) -> str:
        worst = max((VERDICTS.index(layer.verdict) for layer in self.layers), default=0)
        if self.missing:
            worst = max(worst, 1)
        return VERDICTS[worst]

    def fails(self, fail_on: str = "fail") -> bool:
        """True when the overall verdict is at least ``fail_on`` (warn or fail; never: False)."""
        if fail_on == "never":
            return False
        return VERDICTS.index(self.verdict) >= VERDICTS.index(fail_on)

    @property
    def first_drifted(self) -> LayerDrift | None:
        """The first layer, in execution order, whose verdict is not ok: where a change starts
        (the layers after it see its effect)."""
        return next((layer for layer in self.layers if layer.verdict != "ok"), None)

    def most_drifted(self, k: int = 4) -> list[LayerDrift]:
        return sorted(self.layers, key=lambda d: -d.score)[:k]

    def by_name(self, name: str) -> LayerDrift:
        for layer in self.layers:
            if name in (layer.name, layer.candidate_name):
                return layer
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        from avgpool.monitor._json import clean

        return clean(
            {
                "verdict": self.verdict,
                "baseline": {k: self.baseline.get(k) for k in ("source", "format", "sha256")},
                "candidate": {k: self.candidate.get(k) for k in ("source", "format", "sha256")},
                "summary": {v: sum(layer.verdict == v for layer in self.layers) for v in VERDICTS},
                "first_drifted": None if self.first_drifted is None else self.first_drifted.name,
                "layers": [layer.to_dict() for layer in self.layers],
                "missing": list(self.missing),
                "added": list(self.added),
                "notes": list(self.notes),
                "thresholds": {
                    k: {"warn": t.warn, "fail": t.fail, "source": t.source}
                    for k, t in self.thresholds.items()
                },
            }
        )


def _groups(pb: np.ndarray, k: int) -> np.ndarray:
    """Group id per fine bin: a group starts where the baseline's cumulative mass crosses j/k."""
    before = np.cumsum(pb, axis=-1) - pb
    return np.minimum(np.floor(before * k + 1e-9).astype(np.int64), k - 1)


def _grouped(p: np.ndarray, gid: np.ndarray, k: int) -> np.ndarray:
    rows = p.reshape(-1, p.shape[-1])
    ids = gid.reshape(-1, gid.shape[-1]) + (np.arange(rows.shape[0]) * k)[:, None]
    return np.bincount(ids.ravel(), weights=rows.ravel(), minlength=rows.shape[0] * k).reshape(
        *p.shape[:-1], k
    )


def hist_stats(
    lower: np.ndarray, upper: np.ndarray, counts_b: np.ndarray, counts_c: np.ndarray
) -> dict[str, np.ndarray]:
    """PSI, KS, Wasserstein-1 (in value units) and JS distance from two histograms over the
    same buckets (`exphist.aligned`: bounds in ascending order, counts with any leading axes,
    e.g. channels)."""
    from scipy.spatial.distance import jensenshannon
    from scipy.special import rel_entr

    from avgpool.monitor.exphist import estimates

    cb = np.asarray(counts_b, dtype=np.float64)
    cc = np.asarray(counts_c, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        pb = cb / cb.sum(axis=-1, keepdims=True)
        pc = cc / cc.sum(axis=-1, keepdims=True)
    gap = np.abs(np.cumsum(pb, axis=-1) - np.cumsum(pc, axis=-1))[..., :-1]
    ks = gap.max(axis=-1, initial=0.0)
    w1 = (gap * np.diff(estimates(lower, upper))).sum(axis=-1)
    gid = _groups(np.nan_to_num(pb), PSI_GROUPS)
    gb, gc = _grouped(np.nan_to_num(pb), gid, PSI_GROUPS), _grouped(np.nan_to_num(pc), gid, PSI_GROUPS)
    fb, fc = np.maximum(gb, PSI_EPSILON), np.maximum(gc, PSI_EPSILON)
    psi = (rel_entr(fc, fb) + rel_entr(fb, fc)).sum(axis=-1)
    js = jensenshannon(gb, gc, axis=-1, base=2)
    empty = (cb.sum(axis=-1) == 0) | (cc.sum(axis=-1) == 0)
    out = {"psi": psi, "ks": ks, "wasserstein": w1, "js": np.asarray(js, dtype=np.float64)}
    return {k: np.where(empty, np.nan, v) for k, v in out.items()}


def _moment_stats(b: LayerStats, c: LayerStats, per_channel: bool) -> dict[str, np.ndarray]:
    if per_channel:
        n_b, mean_b, std_b = b.count, b.mean, b.std
        n_c, mean_c, std_c = c.count, c.mean, c.std
        bad_b = b.nan + b.posinf + b.neginf
        bad_c = c.nan + c.posinf + c.neginf
    else:
        tb, tc = b.totals(), c.totals()
        n_b, mean_b, std_b = (np.asarray(tb[k]) for k in ("count", "mean", "std"))
        n_c, mean_c, std_c = (np.asarray(tc[k]) for k in ("count", "mean", "std"))
        bad_b = np.asarray(tb["nan"] + tb["posinf"] + tb["neginf"])
        bad_c = np.asarray(tc["nan"] + tc["posinf"] + tc["neginf"])
    with np.errstate(invalid="ignore", divide="ignore"):
        diff = mean_c - mean_b
        shift = np.where(std_b > 0, diff / std_b, np.where(diff == 0, 0.0, np.copysign(np.inf, diff)))
        ratio = np.where(std_b > 0, std_c / std_b, np.where(std_c == 0, 1.0, np.inf))
        nonfinite = bad_c / np.maximum(n_c + bad_c, 1) - bad_b / np.maximum(n_b + bad_b, 1)
    # no finite value on one side: the moments are not defined (NaN, which fails a gate), not
    # the infinite shift the arithmetic above would make of them
    empty = (np.asarray(n_b) == 0) | (np.asarray(n_c) == 0)
    shift, ratio = np.where(empty, np.nan, shift), np.where(empty, np.nan, ratio)
    return {"mean_shift": shift, "std_ratio": ratio, "nonfinite": nonfinite}


def _in_std_units(distance: np.ndarray, std: np.ndarray) -> np.ndarray:
    """A distance over the baseline's std; with no spread, 0 stays 0 and more is infinite."""
    with np.errstate(invalid="ignore", divide="ignore"):
        scaled = np.where(std > 0, distance / std, np.where(distance == 0, 0.0, np.inf))
    return np.where(np.isnan(distance) | np.isnan(std), np.nan, scaled)


def _check_sound(profile: Profile, names: Sequence[str], which: str) -> None:
    for name in names:
        problems = profile.layers[name].problems()
        if problems:
            raise ProfileError(
                f"the {which} profile's layer {name!r} has statistics no data can give "
                f"({'; '.join(problems)}): damaged or forged, not judged"
            )


def _match(baseline: Profile, candidate: Profile) -> tuple[list[tuple[str, str]], list[str], list[str]]:
    from avgpool.inspect.layers import layer_key

    pairs, used = [], set()
    cand_by_key: dict[str, str] = {}
    for name in candidate.layers:
        cand_by_key.setdefault(layer_key(name), name)
    missing = []
    for name in baseline.layers:
        if name in candidate.layers and name not in used:
            pairs.append((name, name))
            used.add(name)
            continue
        other = cand_by_key.get(layer_key(name))
        if other is not None and other not in used and other not in baseline.layers:
            pairs.append((name, other))
            used.add(other)
        else:
            missing.append(name)
    added = [name for name in candidate.layers if name not in used]
    return pairs, missing, added


def compare(
    baseline: Profile,
    candidate: Profile,
    *,
    thresholds: Mapping[str, Threshold] | None = None,
    metrics: Sequence[str] | None = None,
    channels: bool = False,
) -> DriftReport:
    """Drift of ``candidate`` from ``baseline``, per layer (and per channel with ``channels``).

    Layers match by name, then by their cleaned key (an ONNX ``/pool/MaxPool`` matches a
    ``/pool/AveragePool`` that replaced it). ``thresholds`` override `THRESHOLDS` per metric;
    ``metrics`` limits which metrics decide the verdict (all are computed and reported).
    With ``channels``, each channel is judged too (moments always; histogram statistics when
    both profiles kept per-channel histograms) and a layer takes its worst channel's verdict.

    A statistic that cannot be computed does not pass: a layer with no finite value in either
    profile fails (reason ``no finite values``), and so does a gated metric that is NaN.

    Raises
    ------
    ProfileError
        A profile holds statistics no data can give (a NaN or inf mean, spread, min or max, negative counts):
        it was damaged or forged and is not judged.
    """
    limits = {**THRESHOLDS, **(thresholds or {})}
    for name, t in (thresholds or {}).items():
        if name not in METRICS:
            raise ProfileError(f"thresholds: unknown metric {name!r}; choose from {METRICS}")
        _check_threshold(name, t)
    gating = tuple(metrics or METRICS)
    unknown = [m for m in gating if m not in METRICS]
    if unknown:
        raise ProfileError(f"unknown metric(s) {unknown}; choose from {METRICS}")
    pairs, missing, added = _match(baseline, candidate)
    _check_sound(baseline, [b for b, _ in pairs], "baseline")
    _check_sound(candidate, [c for _, c in pairs], "candidate")
    with np.errstate(invalid="ignore", divide="ignore"):
        results, notes = _compare_pairs(baseline, candidate, pairs, limits, gating, channels)
    return DriftReport(
        dict(baseline.model),
        dict(candidate.model),
        tuple(results),
        tuple(missing),
        tuple(added),
        tuple(notes),
        {m: limits[m] for m in METRICS},
    )


def _compare_pairs(
    baseline: Profile,
    candidate: Profile,
    pairs: Sequence[tuple[str, str]],
    limits: Mapping[str, Threshold],
    gating: Sequence[str],
    channels: bool,
) -> tuple[list[LayerDrift], list[str]]:
    notes = []
    sha_b, sha_c = baseline.model.get("sha256"), candidate.model.get("sha256")
    if sha_b and sha_b == sha_c:
        notes.append("baseline and candidate profile the same model file (sha256 match)")
    results = []
    for name_b, name_c in pairs:
        b, c = baseline.layers[name_b], candidate.layers[name_c]
        if b.channels != c.channels:
            notes.append(f"{name_b}: {b.channels} channels in the baseline, {c.channels} in the candidate")
        tb, tc = b.totals(), c.totals()
        finite = [t["min"] for t in (tb, tc) if t["count"]], [t["max"] for t in (tb, tc) if t["count"]]
        lo, hi = (min(finite[0]), max(finite[1])) if finite[0] else (math.nan, math.nan)
        lower, upper, hb, hc = aligned(b.hist, c.hist)
        hs = hist_stats(lower, upper, hb[0], hc[0])
        values = {**_moment_stats(b, c, False), **hs}
        values["wasserstein"] = _in_std_units(values["wasserstein"], np.float64(tb["std"]))
        metric_values = {m: float(values[m]) for m in METRICS}
        gated = {m: np.asarray(metric_values[m]) for m in gating}
        verdict = int(_verdicts(gated, limits))
        reasons = [
            m for m in gating if limits[m].verdict(float(_judged(m, metric_values[m]))) == verdict and verdict
        ]
        empty = [side for side, t in (("baseline", tb), ("candidate", tc)) if not t["count"]]
        if empty:  # nothing to compare: the gate cannot say the layer kept its distribution
            verdict = 2
            side = f"the {empty[0]}" if len(empty) == 1 else "either profile"
            reasons = ["no finite values"]
            notes.append(f"{name_b}: no finite values in {side} (NaN/inf only): nothing to compare, fails")
        channel = None
        if channels and b.channels == c.channels:
            per = _moment_stats(b, c, True)
            if b.channel_hist is not None and c.channel_hist is not None:
                ch = hist_stats(*aligned(b.channel_hist, c.channel_hist))
                ch["wasserstein"] = _in_std_units(ch["wasserstein"], b.std)
                per.update(ch)
            v = _verdicts({m: per[m] for m in gating if m in per}, limits)
            channel = ChannelDrift(per, v)
            if int(v.max(initial=0)) > verdict:
                verdict = int(v.max())
                reasons.append("channels")
        score = max(
            (
                float(_judged(m, metric_values[m]) / limits[m].fail)
                for m in gating
                if math.isfinite(limits[m].fail) and limits[m].fail > 0 and not math.isnan(metric_values[m])
            ),
            default=0.0,
        )
        results.append(
            LayerDrift(
                name=name_b,
                candidate_name=name_c,
                op=(b.op, c.op),
                count=(tb["count"], tc["count"]),
                mean=(tb["mean"], tc["mean"]),
                std=(tb["std"], tc["std"]),
                metrics=metric_values,
                verdict=VERDICTS[verdict],
                reasons=tuple(reasons),
                score=score,
                bounds=(lower, upper),
                hist=(hb[0], hc[0]),
                range=(float(lo), float(hi)),
                channels=channel,
            )
        )
        if b.op and c.op and b.op != c.op:
            notes.append(f"{name_b}: op changed from {b.op} to {c.op}")
    return results, notes
