"""Tables for ``avgpool profile`` and ``avgpool drift``, in the (title, headers, rows, footer)
shape that `avgpool._tables` lays out as text, markdown or a rich table."""

from __future__ import annotations

import math

from avgpool._tables import Table, dims
from avgpool.monitor.drift import METRICS, DriftReport
from avgpool.monitor.profile import Profile

__all__ = ["drift_table", "profile_table"]


def _g(value: float, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:.{digits}g}"


def profile_table(profile: Profile, path: str | None = None) -> Table:
    model = profile.model
    source = model.get("source", "?")
    title = (
        f"profile of {source}: {len(profile)} layers, {profile.batches} batches"
        + f", histograms of up to {profile.max_buckets} buckets per sign"
        + (" (per-channel histograms)" if profile.channel_hist else "")
    )
    headers = ["layer", "op", "per sample", "values", "mean", "std", "min", "max", "nan/inf"]
    rows = []
    for layer in profile:
        t = layer.totals()
        rows.append(
            [
                layer.name,
                layer.op or "-",
                dims(layer.sample_shape),
                str(t["count"]),
                _g(t["mean"]),
                _g(t["std"]),
                _g(t["min"]),
                _g(t["max"]),
                str(t["nan"] + t["posinf"] + t["neginf"]),
            ]
        )
    footer = [f"note: {n}" for n in profile.notes]
    if path:
        sha = model.get("sha256") or ""
        footer.append(f"wrote {path}" + (f" (model sha256 {sha[:12]})" if sha else ""))
    return title, headers, rows, footer


_SHORT = {
    "mean_shift": "mean shift",
    "std_ratio": "std ratio",
    "psi": "PSI",
    "ks": "KS",
    "wasserstein": "W1",
    "js": "JS",
    "nonfinite": "nonfinite",
}


def drift_table(report: DriftReport, fail_on: str = "fail") -> Table:
    b, c = report.baseline.get("source", "?"), report.candidate.get("source", "?")
    title = f"activation drift: {b} -> {c}"
    headers = ["#", "layer", "op", "verdict", *(_SHORT[m] for m in METRICS), "flagged by"]
    rows = []
    for i, d in enumerate(report.layers):
        op = d.op[0] if d.op[0] == d.op[1] else f"{d.op[0]} -> {d.op[1]}"
        name = d.name if d.name == d.candidate_name else f"{d.name} -> {d.candidate_name}"
        cells = [_g(d.metrics[m], 3) for m in METRICS]
        if d.channels is not None:
            worst = d.channels.worst(3)
            flagged = [*d.reasons]
            if "channels" in flagged:
                flagged[flagged.index("channels")] = "channels " + ",".join(map(str, worst))
        else:
            flagged = list(d.reasons)
        rows.append(
            [
                str(i),
                name,
                op or "-",
                d.verdict.upper() if d.verdict != "ok" else "ok",
                *cells,
                " ".join(flagged) or "-",
            ]
        )
    counts = {v: sum(d.verdict == v for d in report.layers) for v in ("fail", "warn", "ok")}
    first = report.first_drifted
    footer = [] if first is None else [f"first drifted layer (execution order): {first.name}"]
    footer += [f"missing in the candidate: {n}" for n in report.missing]
    footer += [f"only in the candidate: {n}" for n in report.added]
    footer += [f"note: {n}" for n in report.notes]
    t = report.thresholds
    footer.append(
        "thresholds (warn/fail): "
        + ", ".join(
            f"{_SHORT[m]} {_g(t[m].warn)}/{_g(t[m].fail)}" for m in METRICS if math.isfinite(t[m].fail)
        )
    )
    gate = "fails" if report.fails(fail_on) else "passes"
    footer.append(
        f"verdict: {report.verdict.upper()} ({counts['fail']} fail, {counts['warn']} warn, "
        f"{counts['ok']} ok); gate --fail-on {fail_on} {gate}"
    )
    return title, headers, rows, footer
