"""The markdown of the real-layers and per-call overhead suites, and their target lines."""

from __future__ import annotations

import math
from typing import Any

from avgpool.bench._format import mark, peer_cells
from avgpool.bench._format import ms as _ms

__all__ = ["layers_targets", "overhead_targets", "render_layers", "render_overhead"]

#: Notes listing more cases than this give a count instead.
_MAX_IDS = 8


def _path_text(lines: list[str]) -> str:
    """avgpool's path, short: "op: numba kernel" lines go when the same op names its kernel.

    Examples
    --------
    >>> _path_text(["avg_pool: numba kernel", "avg_pool: box_planes.avg_planes_direct",
    ...             "avg_pool_backward: numba kernel"])
    'avg_pool: box_planes.avg_planes_direct; avg_pool_backward: numba kernel'
    """
    named = {line.split(":")[0] for line in lines if not line.endswith(": numba kernel")}
    kept = [line for line in lines if not (line.endswith(": numba kernel") and line.split(":")[0] in named)]
    return "; ".join(kept).replace("|", "/") or "—"


def _time(record: dict[str, Any]) -> str:
    """A cell: the median ms, n/a or failed; ≠ when the output disagreed with avgpool's."""
    status = record.get("status")
    if status != "ok":
        return "n/a" if status == "n/a" else "failed"
    return _ms(record["median_ms"]) + (" ≠" if record.get("agrees") is False else "")


def _models(used_by: list[str]) -> str:
    names: list[str] = []
    for where in used_by:
        name = where.split(":")[0]
        if name not in names:
            names.append(name)
    return ", ".join(names)


def _geomean(values: list[float]) -> float | None:
    return math.exp(math.fsum(math.log(v) for v in values) / len(values)) if values else None


def render_layers(layers: dict[str, Any]) -> list[str]:
    """The real-layers section: how it was measured, the table, geomeans by pass, notes."""
    s, peers, rows = layers["settings"], layers["peers"], layers["cases"]
    lines = [
        "",
        "## Real layers",
        "",
        "Every pooling layer, with its exact geometry and input shape, of "
        + "; ".join(
            f"{m['about']} (`{name}`, {'x'.join(map(str, m['input']))})"
            for name, m in layers.get("models", {}).items()
        )
        + " (`src/avgpool/bench/layers.toml`, written by `benchmarks/real_layers.py` from the "
        "models themselves). fwd: the forward; fwd+bwd: the "
        "training step's two pooling calls (the forward, then grad_input for a fixed grad_output; "
        "torch runs the aten kernels autograd would, without building a graph). "
        f"Timing: median of up to {s['repeats']} calls, at most {s['budget_s']:g} s of calls per "
        f"measurement, the lowest of {s['rounds']} measurement(s) taken in turns; inputs rotated "
        f"among copies enough for {s['rotate_bytes'] >> 20} MiB, but at least 2 and at most "
        f"{s.get('max_rotation') or 'several'} (a small layer's input is in cache, as the layer "
        "before it left it in a model). "
        "avgpool runs in this process (a child process per case would take longer than most "
        "cases). Cells: median ms. "
        "**best / avgpool**: the best peer's time on the same layout over avgpool's (above 1: "
        "avgpool is faster); *path*: what avgpool's debug log said during its first call.",
        "",
    ]
    head = ["layer", "input (C, H, W)", "models", "pass", "N", "layout", "floor ms", "avgpool", "path"]
    head += [*peers, "best peer", "best / avgpool"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    notes: dict[str, list[str]] = {}
    labels: dict[str, set[str]] = {}
    groups: dict[str, list[float]] = {}
    for row in rows:
        c, a = row["case"], row["avgpool"]
        passes = "fwd+bwd" if c.get("fwd_bwd") else "fwd"
        ratio = row.get("ratio")
        verdict = "—" if ratio is None else f"{ratio:.2f}"
        if row.get("peer_path"):
            verdict += " (peer's kernel: no win)"
            notes.setdefault("avgpool's path ran a peer's kernel: no win", []).append(c["id"])
        cells = [
            c["title"],
            "x".join(map(str, c["shape"][1:])),
            _models(row.get("used_by", [])),
            passes,
            str(c["shape"][0]),
            c["layout"],
            _ms(row["floor_ms"]),
            _time(a),
            _path_text(a.get("path", [])),
        ]
        cells += peer_cells(row, c["id"], peers, _time, notes, labels)
        if a.get("status") != "ok":
            notes.setdefault(f"avgpool failed: {a.get('error')}", []).append(c["id"])
        cells += [row["best_peer"] or "—", verdict]
        lines.append("| " + " | ".join(cells) + " |")
        if ratio is not None:
            groups.setdefault(f"{passes}, batch {c['shape'][0]}, {c['layout']}", []).append(ratio)
    if "elapsed_s" in layers:
        lines += ["", f"{len(rows)} cases in {layers['elapsed_s'] / 60:.1f} min."]
    lines += ["", "Geometric mean of best / avgpool by pass, batch and layout:", ""]
    lines += ["| pass, batch, layout | cases | geomean | at >= 1.0 |", "|---|---|---|---|"]
    for name, values in groups.items():
        gm = _geomean(values)
        lines.append(f"| {name} | {len(values)} | {gm:.2f} | {sum(v >= 1.0 for v in values)} |")
    lines += ["", "### Notes", ""]
    for name, found in labels.items():
        lines.append(f"- {name} ran as: " + "; ".join(sorted(found)))
    for note, ids in notes.items():
        which = ", ".join(ids) if len(ids) <= _MAX_IDS else f"{len(ids)} cases"
        lines.append(f"- {' '.join(note.split())} ({which})")
    return lines


def layers_targets(summary: dict[str, Any]) -> list[str]:
    """The real-layers suite's lines of the performance targets."""
    every, gm = summary["every_case"], summary["geomean"]
    worst = sorted((x for x in summary["below_min"] if x["ratio"] is not None), key=lambda x: x["ratio"])
    shown = ", ".join(f"{x['case']} {x['ratio']:.2f}x {x['best_peer']}" for x in worst[:10])
    more = len(summary["below_min"]) - min(10, len(worst))
    lines = [
        f"- {mark(every['pass'])} real layers: every case at >= {summary['min_ratio']:.1f}x the best "
        f"peer on the same layout: {summary['at_least_min']} of {summary['cases_compared']}"
        + (f"; lowest {shown}" if shown else "")
        + (f" (and {more} more below)" if more > 0 else ""),
        f"- {mark(gm['pass'])} real layers: geometric mean >= {gm['target']:.2f}x: "
        + (f"{gm['value']:.2f}x" if gm["value"] is not None else "not measured"),
    ]
    peer_cases = summary.get("peer_path_cases", [])
    lines.append(
        "- real layers: cases where avgpool's path ran a peer's kernel (counted as no win): "
        + (", ".join(peer_cases) if peer_cases else "none")
    )
    return lines


def render_overhead(overhead: dict[str, Any]) -> list[str]:
    """The per-call section: modules vs torch.nn, NumPy ops, the study's models."""
    s = overhead["settings"]
    shape = "x".join(map(str, s["shape"]))
    lines = [
        "",
        "## Per-call overhead",
        "",
        f"Tiny inputs ({shape} float32), {s['threads']} thread(s) for both libraries. Modules and "
        "models: torch.nn and avgpool.nn timed in interleaved pairs (each call on its own clock, "
        f"up to {s['repeats']} pairs or {s['budget_s']:g} s), ratio = avgpool's median / torch's with "
        "its 95% paired bootstrap interval. fwd runs under `torch.no_grad()`; fwd+bwd is the module "
        "on an input that requires grad, then `torch.autograd.grad` against a fixed gradient.",
        "",
        "| avgpool.nn module | pass | avgpool.nn µs | torch.nn µs | avgpool / torch [95% CI] |",
        "|---|---|---|---|---|",
    ]
    for r in overhead["modules"]:
        lines.append(
            f"| {r['module']} | {r['pass']} | {r['avgpool_us']:.1f} | {r['torch_us']:.1f} | "
            f"{r['ratio']:.2f} [{r['low']:.2f}, {r['high']:.2f}] |"
        )
    lines += ["", "| NumPy call | µs per call (median) | p90 µs | calls |", "|---|---|---|---|"]
    for r in overhead["numpy"]:
        lines.append(f"| `avgpool.{r['call']}` | {r['us']:.1f} | {r['p90_us']:.1f} | {r['n']} |")
    lines += [
        "",
        "The study's models (`avgpool.study.variants`) at batch 1 (1x1x8x8), beside their torch.nn twins "
        "(`avgpool.study.twins.torch_twin`):",
        "",
        "| model | pooling modules | avgpool.nn µs | torch.nn twin µs | avgpool / torch [95% CI] |",
        "|---|---|---|---|---|",
    ]
    for r in overhead["models"]:
        if "ratio" not in r:
            lines.append(f"| {r['model']} | 0 | — | — | no pooling module: nothing to compare |")
            continue
        lines.append(
            f"| {r['model']} | {r['swapped']} | {r['avgpool_us']:.1f} | {r['torch_us']:.1f} | "
            f"{r['ratio']:.2f} [{r['low']:.2f}, {r['high']:.2f}] |"
        )
    return lines


def overhead_targets(summary: dict[str, Any]) -> list[str]:
    """The per-call suite's lines of the performance targets."""

    def worst(entry: dict[str, Any], unit: str) -> str:
        return "not measured" if entry["worst"] is None else f"worst {entry['worst']:.2f}{unit}"

    m, n, md = summary["modules"], summary["numpy"], summary["models"]
    bwd = summary.get("modules_fwd_bwd", {}).get("worst")
    return [
        f"- {mark(m['pass'])} every avgpool.nn module's forward within {m['target']:g}x of its torch.nn "
        f"twin's call time: {worst(m, 'x')}"
        + (f" (fwd+bwd, reported without a target: worst {bwd:.2f}x)" if bwd is not None else ""),
        f"- {mark(n['pass'])} every NumPy op under {n['target']:g} µs per call on a tiny array: "
        + ("not measured" if n["worst"] is None else f"worst {n['worst']:.1f} µs"),
        f"- {mark(md['pass'])} every study model at batch 1 within {md['target']:g}x of its torch.nn twin: "
        + worst(md, "x"),
    ]
