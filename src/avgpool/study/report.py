"""The report folder: ``results.json``, ``report.md`` (tables and a reading of the numbers) and
the plots. Everything here reads the results dictionary (the content of ``results.json``), so a
report can be redrawn from a saved run: ``write_report(json.load(f), folder)``."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["reading", "study_table", "to_markdown", "write_report"]

Table = tuple[str, list[str], list[list[str]], list[str]]

#: Two means whose difference is under this many standard errors are called indistinguishable.
NOISE_SE = 2.0


def _acc(v: dict[str, Any]) -> str:
    a = v["accuracy"]
    return f"{a['mean']:.4f}" if a["std"] is None else f"{a['mean']:.4f} ± {a['std']:.4f}"


def _per_seed(v: dict[str, Any]) -> str:
    return " ".join(f"{a:.4f}" for a in v["accuracy"]["per_seed"].values())


def _latency(t: dict[str, Any]) -> str:
    return f"{t['p50_ms']:.3f} / {t['p95_ms']:.3f} ({t['n']})"


def _act(a: dict[str, Any]) -> str:
    return f"{a['mean']:.3f} / {a['std']:.3f} / {a['sparsity']:.1%}"


def _probes(r: dict[str, Any]) -> int:
    return max(len(v["activations"]) for v in r["variants"])


def _batch(r: dict[str, Any]) -> int:
    return r["variants"][0]["latency"]["batch"]["batch"]


def study_table(r: dict[str, Any]) -> Table:
    """The results table (title, headers, rows, footer) that the markdown report and the
    ``avgpool study`` command lay out; the footer is the `reading`.

    Cells: accuracy ``mean ± std`` and the per-seed values; latency ``P50 / P95 (samples)`` in
    ms; parameters; activations after each downsampling ``mean / std / exact zeros``.
    """
    headers = [
        "variant",
        "accuracy",
        f"per seed ({', '.join(map(str, r['seeds']))})",
        "batch 1 ms P50 / P95 (n)",
        f"batch {_batch(r)} ms P50 / P95 (n)",
        "params",
        *(f"down{k + 1} mean / std / zeros" for k in range(_probes(r))),
    ]
    rows = []
    for v in r["variants"]:
        acts = [_act(a) for a in v["activations"]]
        rows.append(
            [
                v["name"],
                _acc(v),
                _per_seed(v),
                _latency(v["latency"]["batch1"]),
                _latency(v["latency"]["batch"]),
                f"{v['params']:,}",
                *acts,
                *(["-"] * (_probes(r) - len(acts))),
            ]
        )
    s = r["setting"]
    title = (
        f"pooling study on {r['data']['name']}: {s['name']} setting, {len(r['seeds'])} seed(s) x "
        f"{s['epochs']} epochs, {r['threads']} thread(s)"
    )
    return title, headers, rows, reading(r)


# -- the reading ---------------------------------------------------------------------------------


def _se(v: dict[str, Any]) -> float | None:
    std = v["accuracy"]["std"]
    return None if std is None else std / math.sqrt(len(v["accuracy"]["per_seed"]))


def _pts(x: float) -> str:
    return f"{100 * x:.1f} points"


def _indistinguishable(a: dict[str, Any], b: dict[str, Any]) -> bool:
    sa, sb = _se(a), _se(b)
    diff = abs(a["accuracy"]["mean"] - b["accuracy"]["mean"])
    if sa is None or sb is None:
        return diff == 0
    return diff <= NOISE_SE * math.hypot(sa, sb)


def _pareto(vs: Sequence[dict[str, Any]], kind: str) -> list[str]:
    """Variants no other variant beats on both accuracy and P50 latency (at ``kind``)."""

    def point(v: dict[str, Any]) -> tuple[float, float]:
        return v["accuracy"]["mean"], v["latency"][kind]["p50_ms"]

    front = []
    for v in vs:
        acc, ms = point(v)
        beaten = any(
            (o_acc >= acc and o_ms <= ms) and (o_acc > acc or o_ms < ms)
            for o in vs
            if o is not v
            for o_acc, o_ms in [point(o)]
        )
        if not beaten:
            front.append(v["name"])
    return front


def _still_learning(vs: Sequence[dict[str, Any]], window: int = 3, points: float = 0.005) -> list[str]:
    """Variants whose mean test accuracy over the last ``window`` epochs beats the ``window``
    before by at least ``points``: training stopped while they were still improving."""
    rising = []
    for v in vs:
        curves = list(v["curves"]["test_accuracy"].values())
        epochs = min(len(c) for c in curves)
        if epochs < 2 * window:
            return []
        mean = [sum(c[e] for c in curves) / len(curves) for e in range(epochs)]
        gain = sum(mean[-window:]) / window - sum(mean[-2 * window : -window]) / window
        if gain >= points:
            rising.append(f"{v['name']} (+{_pts(gain)})")
    if not rising:
        return []
    return [
        f"Still improving when training stopped (mean test accuracy of the last {window} epochs over the "
        f"{window} before): {', '.join(rising)}; more epochs may change their standing."
    ]


def _heads(vs: Sequence[dict[str, Any]]) -> list[str]:
    """One sentence per pair of variants with the same downsampling and different heads."""
    out = []
    for i, a in enumerate(vs):
        for b in vs[i + 1 :]:
            if a["downsampling"] != b["downsampling"] or a["head"] == b["head"]:
                continue
            diff = b["accuracy"]["mean"] - a["accuracy"]["mean"]
            verdict = (
                "within the seed-to-seed noise"
                if _indistinguishable(a, b)
                else f"{b['name']} {'better' if diff > 0 else 'worse'} by {_pts(abs(diff))}"
            )
            out.append(
                f"Head, same downsampling: {a['name']} ({a['head'].split(' (')[0]}) {_acc(a)} with "
                f"{a['params']:,} parameters vs {b['name']} ({b['head'].split(' (')[0]}) {_acc(b)} with "
                f"{b['params']:,}: {verdict}."
            )
    return out


def _implementation(r: dict[str, Any]) -> list[str]:
    """How much of each variant's batch-N latency is avgpool.nn's implementation, not the choice."""
    vs = r["variants"]
    twins = [v for v in vs if v.get("latency_torch_nn")]
    if not twins:
        return []
    pairs = ", ".join(
        f"{v['name']} {v['latency_torch_nn']['batch']['p50_ms']:.3f} ms "
        f"({v['latency']['batch']['p50_ms']:.3f})"
        for v in twins
    )

    def p50(v: dict[str, Any]) -> float:
        t = v.get("latency_torch_nn") or v["latency"]
        return t["batch"]["p50_ms"]

    fastest = min(vs, key=p50)
    ratios = [v["latency"]["batch"]["p50_ms"] / v["latency_torch_nn"]["batch"]["p50_ms"] for v in twins]
    return [
        f"Choice or implementation: with torch.nn's pooling in place of avgpool.nn's (same outputs), "
        f"batch-{_batch(r)} P50 is {pairs} [avgpool.nn in brackets], {min(ratios):.1f}x to "
        f"{max(ratios):.1f}x apart; the fastest variant with torch.nn pooling is {fastest['name']}."
    ]


def reading(r: dict[str, Any]) -> list[str]:
    """A plain reading of the numbers, one sentence per finding, computed from ``r``.

    Examples
    --------
    >>> def v(name, accs, p50, params):
    ...     lat = {"p50_ms": p50, "p95_ms": p50, "n": 9, "budget_limited": False, "batch": 1}
    ...     m = sum(accs) / len(accs)
    ...     sd = (sum((a - m) ** 2 for a in accs) / (len(accs) - 1)) ** 0.5
    ...     return {"name": name, "downsampling": name, "head": "flatten", "params": params,
    ...             "accuracy": {"mean": m, "std": sd, "per_seed": dict(enumerate(accs))},
    ...             "latency": {"batch1": lat, "batch": {**lat, "batch": 8}}, "activations": [],
    ...             "curves": {"test_accuracy": {s: [a] for s, a in enumerate(accs)}}}
    >>> r = {"seeds": [0, 1], "threads": 1, "environment": {"cores": 2},
    ...      "variants": [v("a", [0.90, 0.92], 1.0, 10), v("b", [0.97, 0.98], 2.0, 30)]}
    >>> print(reading(r)[0])
    Most accurate: b, 0.9750 ± 0.0071 over 2 seeds; least accurate: a, 6.5 points lower.
    """
    vs = r["variants"]
    n = len(r["seeds"])
    lines: list[str] = []
    ranked = sorted(vs, key=lambda v: -v["accuracy"]["mean"])
    best = ranked[0]
    if len(vs) > 1:
        worst = ranked[-1]
        lines.append(
            f"Most accurate: {best['name']}, {_acc(best)} over {n} seed{'s' * (n > 1)}; least accurate: "
            f"{worst['name']}, {_pts(best['accuracy']['mean'] - worst['accuracy']['mean'])} lower."
        )
        if n > 1:
            ties = [v["name"] for v in ranked[1:] if _indistinguishable(best, v)]
            apart = [v["name"] for v in ranked[1:] if v["name"] not in ties]
            if ties:
                lines.append(
                    f"{', '.join(ties)} {'is' if len(ties) == 1 else 'are'} within {NOISE_SE:g} standard "
                    f"errors of {best['name']}: with {n} seeds these accuracies cannot be told apart"
                    + (f"; {', '.join(apart)} fall{'s' * (len(apart) == 1)} clearly below." if apart else ".")
                )
            else:
                lines.append(
                    f"Every other variant is more than {NOISE_SE:g} standard errors below {best['name']}."
                )
            spread = max(vs, key=lambda v: v["accuracy"]["std"] or 0.0)
            lines.append(
                f"Largest seed-to-seed spread: {spread['name']} (std {spread['accuracy']['std']:.4f}, "
                f"per seed {_per_seed(spread)})."
            )
        else:
            lines.append("One seed: there is no spread to judge these differences by; run more seeds.")
        lines += _still_learning(vs)
    else:
        lines.append(f"{best['name']}: accuracy {_acc(best)} over {n} seed{'s' * (n > 1)}.")
    for kind, label in (("batch1", "batch 1"), ("batch", f"batch {_batch(r)}")):
        by_speed = sorted(vs, key=lambda v: v["latency"][kind]["p50_ms"])
        fast, slow = by_speed[0], by_speed[-1]
        if len(vs) > 1:
            f_ms, s_ms = fast["latency"][kind]["p50_ms"], slow["latency"][kind]["p50_ms"]
            lines.append(
                f"Latency at {label}: fastest {fast['name']} (P50 {f_ms:.3f} ms), slowest "
                f"{slow['name']} ({s_ms:.3f} ms, {s_ms / f_ms:.1f}x)."
            )
    if len(vs) > 1:
        front = _pareto(vs, "batch")
        lines.append(
            f"Accuracy vs batch-{_batch(r)} latency: {', '.join(front)} "
            f"{'is' if len(front) == 1 else 'are'} not beaten on both by any other variant."
        )
        few, many = min(vs, key=lambda v: v["params"]), max(vs, key=lambda v: v["params"])
        if many["params"] != few["params"]:
            lines.append(
                f"Parameters: {many['name']} has the most, {many['params']:,} "
                f"({many['params'] / few['params']:.1f}x {few['name']}'s {few['params']:,})."
            )
    lines += _heads(vs)
    lines += _implementation(r)
    last = [(v, v["activations"][-1]) for v in vs if v["activations"]]
    if len(last) > 1:
        hi = max(last, key=lambda p: p[1]["mean"])
        lo = min(last, key=lambda p: p[1]["mean"])
        dense = min(last, key=lambda p: p[1]["sparsity"])
        sparse = max(last, key=lambda p: p[1]["sparsity"])
        lines.append(
            f"After the last downsampling: largest mean activation {hi[0]['name']} ({hi[1]['mean']:.3f}), "
            f"smallest {lo[0]['name']} ({lo[1]['mean']:.3f}); exact zeros from {dense[1]['sparsity']:.1%} "
            f"({dense[0]['name']}) to {sparse[1]['sparsity']:.1%} ({sparse[0]['name']})."
        )
    limited = [v["name"] for v in vs if any(t["budget_limited"] for t in v["latency"].values())]
    cores = r["environment"].get("cores")
    lines.append(
        f"Latencies are nearest-rank percentiles of interleaved rounds on {r['threads']} thread(s)"
        + (f" of a {cores}-core machine" if cores else "")
        + "; P95 is the number a busy machine disturbs most"
        + (f"; the time budget cut the samples of {', '.join(limited)}." if limited else ".")
    )
    return lines


# -- markdown ------------------------------------------------------------------------------------


def _md_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    def cell(c: str) -> str:
        return str(c).replace("|", "\\|")

    return [
        "| " + " | ".join(cell(h) for h in headers) + " |",
        "|" + " --- |" * len(headers),
        *("| " + " | ".join(cell(c) for c in row) + " |" for row in rows),
    ]


def _twin_section(r: dict[str, Any]) -> list[str]:
    twins = [v for v in r["variants"] if v.get("latency_torch_nn")]
    if not twins:
        return []
    rows = []
    for v in twins:
        t, ours = v["latency_torch_nn"], v["latency"]
        rows.append(
            [
                v["name"],
                _latency(t["batch1"]),
                _latency(t["batch"]),
                f"{ours['batch1']['p50_ms'] / t['batch1']['p50_ms']:.2f}x",
                f"{ours['batch']['p50_ms'] / t['batch']['p50_ms']:.2f}x",
            ]
        )
    return [
        "## Latency with torch.nn pooling (the same models)",
        "",
        "Each model timed again, in the same interleaved rounds, with its avgpool.nn pooling modules "
        "replaced by torch.nn layers computing the same outputs (`avgpool.study.twins`): the difference "
        "is avgpool.nn's implementation (custom ops), not the pooling choice. Variants without "
        "avgpool.nn modules are not repeated.",
        "",
        *_md_table(
            [
                "variant",
                "batch 1 ms P50 / P95 (n)",
                f"batch {_batch(r)} ms P50 / P95 (n)",
                "avgpool.nn / torch.nn, batch 1 P50",
                f"avgpool.nn / torch.nn, batch {_batch(r)} P50",
            ],
            rows,
        ),
        "",
    ]


def to_markdown(r: dict[str, Any], plots: Sequence[str] = ()) -> str:
    """``report.md``: the results table, the reading, the variants, the activations, the plots."""
    title, headers, rows, lines = study_table(r)
    s, d, env = r["setting"], r["data"], r["environment"]
    versions = ", ".join(f"{k} {v}" for k, v in env.get("versions", {}).items() if v)
    out = [
        "# avgpool study: the pooling trade-off",
        "",
        f"{title}.",
        "",
        f"- data: {d['name']}, {d['train']} training and {d['test']} test images of "
        f"{'x'.join(map(str, d['image_shape']))}, {d['classes']} classes ({d['notes']})",
        f"- training: Adam, lr {s['lr']:g}, batch {s['batch_size']}, {s['epochs']} epochs, seeds "
        f"{', '.join(map(str, r['seeds']))}; accuracy is the test accuracy after the last epoch",
        f"- latency: forward pass of the eval model without gradients, {s['latency_rounds']} interleaved "
        f"rounds; batch 1 over rotating test images, batch {_batch(r)} over two test batches",
        f"- machine: {env.get('cpu') or 'unknown CPU'}, {env.get('cores')} cores, {r['threads']} thread(s) "
        f"used; {env.get('platform', '')}",
        f"- versions: {versions}",
        f"- date: {env.get('date', '?')}; training and measuring took {r['wall_s']:.1f} s",
        "",
        "## Results",
        "",
        *_md_table(headers, rows),
        "",
        "Accuracy: mean ± sample standard deviation over seeds, then each seed's value. Latency: "
        "P50 / P95 in milliseconds, nearest-rank, with the number of timed calls. Activations: the "
        "output of each downsampling layer on the test set, all seeds' models pooled: mean / standard "
        "deviation / fraction of exact zeros.",
        "",
        "## Reading",
        "",
        *(f"- {line}" for line in lines),
        "",
        "## Variants",
        "",
        *_md_table(
            ["variant", "downsampling", "head", "params", "training s per seed"],
            [
                [
                    v["name"],
                    v["downsampling"],
                    v["head"],
                    f"{v['params']:,}",
                    " ".join(f"{t:.1f}" for t in v["train_seconds"].values()),
                ]
                for v in r["variants"]
            ],
        ),
        "",
        *_twin_section(r),
        "## Activations after each downsampling",
        "",
        *_md_table(
            ["variant", "layer", "per sample", "mean", "std", "min", "max", "exact zeros"],
            [
                [
                    v["name"],
                    a["probe"],
                    "x".join(map(str, a["shape"])),
                    f"{a['mean']:.4f}",
                    f"{a['std']:.4f}",
                    f"{a['min']:.4f}",
                    f"{a['max']:.4f}",
                    f"{a['sparsity']:.2%}",
                ]
                for v in r["variants"]
                for a in v["activations"]
            ],
        ),
    ]
    if plots:
        out += ["", "## Plots", ""]
        for name in plots:
            out += [f"![{Path(name).stem.replace('_', ' ')}]({Path(name).name})", ""]
    return "\n".join(out).rstrip() + "\n"


def write_report(r: dict[str, Any], out_dir: str | os.PathLike[str]) -> list[str]:
    """Write ``results.json``, the plots and ``report.md`` into ``out_dir``; returns the paths."""
    from avgpool.study import plots

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    drawn = [
        plots.accuracy_vs_latency(r, out / "accuracy_vs_latency.png"),
        plots.activations(r, out / "activations.png"),
        plots.training_curves(r, out / "training_curves.png"),
    ]
    written = []
    for name, text in (
        ("results.json", json.dumps(r, indent=2) + "\n"),
        ("report.md", to_markdown(r, [os.fspath(p) for p in drawn])),
    ):
        path = out / name
        tmp = out / f".{name}.tmp"
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
        written.append(os.fspath(path))
    return [*written, *(os.fspath(p) for p in drawn)]
