"""Tables for ``avgpool bench``: (title, headers, rows, footer), which `avgpool._tables`
lays out as text, markdown or a rich table. Every percentile column sits beside its ``n``."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from avgpool._tables import Table, dims
from avgpool.bench.latency import AGREE_TOL, ModelBench, ModelComparison, OpBench

__all__ = ["comparison_table", "model_table", "op_table"]

_MIB = 1 << 20


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.0f}" if value >= 1000 else f"{value:.4g}"


def _rate(value: float) -> str:
    return f"{value:,.1f}" if value < 100 else f"{value:,.0f}"


def _mib(value: int | None) -> str:
    return "-" if value is None else f"{value / _MIB:.1f}"


def _bytes(value: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if value >= scale:
            return f"{value / scale:.1f} {unit}"
    return f"{value} B"


def _n(record: dict[str, Any]) -> str:
    return f"{record['n']}{'†' if record.get('budget_limited') else ''}"


def _timing_notes(records: Sequence[dict[str, Any]], warmup: int, budget: float, per: str) -> list[str]:
    lines = [
        f"latency: nearest-rank percentiles of the n timed calls ({per}), after {warmup} untimed "
        "warm-up call(s); p99 is the slowest call when n < 100, p95 when n < 20"
    ]
    if any(r.get("budget_limited") for r in records):
        lines.append(f"†: cut short by the {budget:g} s time budget before --repeats calls")
    return lines


def op_table(result: OpBench) -> Table:
    w = result.window
    pads = "x".join(f"{b}:{a}" for b, a in w["padding"])
    flags = []
    if w["ceil_mode"]:
        flags.append("ceil_mode")
    if result.op == "avg":
        flags.append("count_include_pad" if w["count_include_pad"] else "pad not counted")
    if w["divisor_override"]:
        flags.append(f"divisor {w['divisor_override']}")
    dilation = "" if set(w["dilation"]) == {1} else f" dilation {dims(w['dilation'])}"
    title = (
        f"{result.op} pool ({result.convention} convention) on {dims(result.input_shape)} {result.layout} "
        f"{result.dtype} -> {dims(result.output_shape)}: kernel {dims(w['kernel_size'])} stride "
        f"{dims(w['stride'])}{dilation} pads {pads}{''.join(', ' + f for f in flags)}; {result.threads} "
        f"thread{'s' if result.threads != 1 else ''}"
    )
    headers = [
        "implementation",
        "batch",
        "n",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "samples/s",
        "GB/s",
        "first call ms",
        "RSS growth MiB",
        "agrees",
    ]
    rows, skipped, failed = [], {}, []
    for r in result.results:
        if r["status"] == "n/a":
            skipped.setdefault(r["implementation"], r["reason"])
            continue
        if r["status"] == "failed":
            failed.append(f"{r['implementation']} (batch {r['batch']}) failed: {r['error']}")
            rows.append([r["implementation"], str(r["batch"]), *["-"] * 8, "FAIL"])
            continue
        agrees = "reference" if r["implementation"] == "avgpool" else ("yes" if r["agrees"] else "no")
        rows.append(
            [
                r["label"],
                str(r["batch"]),
                _n(r),
                _ms(r["p50_ms"]),
                _ms(r["p95_ms"]),
                _ms(r["p99_ms"]),
                _rate(r["throughput_per_s"]),
                "-" if r["gb_per_s"] is None else f"{r['gb_per_s']:.3g}",
                _ms(r["first_call_ms"]),
                _mib(r["rss_peak_delta_bytes"]),
                agrees,
            ]
        )
    ok = [r for r in result.results if r["status"] == "ok"]
    s = result.settings
    footer = _timing_notes(ok, s.warmup, s.budget_s, "rotating copies of one seeded random input")
    footer += [
        "samples/s: batch / p50; GB/s: input and output bytes / p50",
        "RSS growth: peak RSS over the timed calls minus the RSS as they began "
        f"({ok[0]['memory_method'] if ok else 'VmHWM reset'}); 0 when the allocator recycles "
        "what the warm-up left resident",
        f"agrees: the peer's output equals avgpool's within rtol = atol = {AGREE_TOL[result.dtype]:g}",
    ]
    other = {r["label"]: r["threads"] for r in ok if r["threads"] != result.threads}
    footer += [f"{label} ran on {n} thread{'s' if n != 1 else ''}" for label, n in other.items()]
    footer += [f"n/a: {name}: {reason}" for name, reason in skipped.items()]
    footer += failed
    return title, headers, rows, footer


def _model_title(model: dict[str, Any]) -> str:
    inputs = ", ".join(
        " ".join(filter(None, [i["name"], dims(["B", *i["sample_shape"]]), i["dtype"]]))
        for i in model["inputs"]
    )
    n = model["threads"]
    threads = f", {n} thread{'s' if n > 1 else ''}" if n else ""
    return (
        f"{os.path.basename(model['source']) or model['source']} ({model['runtime']}{threads}), "
        f"{_bytes(model['size_bytes'])} on disk, input{'s' if len(model['inputs']) > 1 else ''} {inputs}"
    )


def model_table(result: ModelBench) -> Table:
    model = result.model
    cuda = any(b["cuda_peak_bytes"] is not None for b in result.batches)
    headers = [
        "batch",
        "n",
        "p50 ms",
        "p90 ms",
        "p95 ms",
        "p99 ms",
        "max ms",
        "samples/s",
        "first call ms",
        "peak RSS MiB",
        "RSS Δ MiB",
    ]
    if cuda:
        headers.append("CUDA peak MiB")
    rows = []
    for b in result.batches:
        row = [
            str(b["batch"]),
            _n(b),
            _ms(b["p50_ms"]),
            _ms(b["p90_ms"]),
            _ms(b["p95_ms"]),
            _ms(b["p99_ms"]),
            _ms(b["max_ms"]),
            _rate(b["throughput_per_s"]),
            _ms(b["first_call_ms"]),
            _mib(b["rss_peak_bytes"]),
            _mib(b["rss_peak_delta_bytes"]),
        ]
        if cuda:
            row.append(_mib(b["cuda_peak_bytes"]))
        rows.append(row)
    s = result.settings
    method = result.batches[0]["memory_method"] if result.batches else "VmHWM reset"
    footer = _timing_notes(result.batches, s.warmup, s.budget_s, f"inputs: {result.input_source}")
    footer += [
        "samples/s: batch / p50",
        f"peak RSS: the process's high-water mark over the timed calls ({method}); RSS Δ: that peak "
        f"minus the RSS {result.baseline} ({_bytes(result.rss_baseline_bytes)}), less the "
        "bench's rotating inputs",
    ]
    if model["load_rss_bytes"] is not None:
        footer.append(f"loading the model added {_bytes(max(model['load_rss_bytes'], 0))} of RSS")
    if cuda:
        footer.append("CUDA peak: torch.cuda.max_memory_allocated over the timed calls")
    if model["size_files"]:
        footer.append("size on disk: " + ", ".join(model["size_files"]))
    footer += [f"note: {n}" for n in model["notes"]]
    return _model_title(model), headers, rows, footer


def comparison_table(result: ModelComparison) -> Table:
    a, b = result.a, result.b
    title = (
        f"A/B: A = {os.path.basename(a['source']) or a['source']}, B = "
        f"{os.path.basename(b['source']) or b['source']} (B/A below 1: B is faster)"
    )
    level = f"{result.confidence * 100:g}%"
    headers = [
        "batch",
        "pairs",
        "A p50 ms",
        "B p50 ms",
        "A p99 ms",
        "B p99 ms",
        "B/A",
        f"{level} CI",
        "pairs p10-p90",
        "verdict",
        "peak RSS MiB",
    ]
    cuda = any(r.get("cuda_peak_bytes") is not None for r in result.batches)
    if cuda:
        headers.append("CUDA peak MiB")
    rows = []
    for r in result.batches:
        q = r["ratio"]
        rows.append(
            [
                str(r["batch"]),
                f"{r['pairs']}{'†' if r['budget_limited'] else ''}",
                _ms(r["a"]["p50_ms"]),
                _ms(r["b"]["p50_ms"]),
                _ms(r["a"]["p99_ms"]),
                _ms(r["b"]["p99_ms"]),
                f"{q['ratio']:.3f}",
                f"{q['low']:.3f}-{q['high']:.3f}",
                f"{q['pair_p10']:.3f}-{q['pair_p90']:.3f}",
                q["verdict"],
                _mib(r["rss_peak_bytes"]),
                *([_mib(r["cuda_peak_bytes"])] if cuda else []),
            ]
        )
    s = result.settings
    footer = [
        f"A: {_model_title(a)}; loading added {_bytes(max(a['load_rss_bytes'] or 0, 0))} of RSS",
        f"B: {_model_title(b)}; loading added {_bytes(max(b['load_rss_bytes'] or 0, 0))} of RSS",
        f"timed in interleaved pairs (AB BA AB ...) on {'the same' if result.shared_inputs else 'separate'} "
        f"seeded inputs, after {s.warmup} warm-up pair(s); p50/p99: nearest rank of the pairs' samples",
        f"B/A: median(B) / median(A); CI: paired percentile bootstrap ({result.resamples} resamples, "
        f"seed {s.seed}); pairs p10-p90: spread of the per-pair ratios b_i / a_i",
        "peak RSS: the process's high-water mark over the interleaved calls, both models loaded",
    ]
    if cuda:
        footer.append("CUDA peak: torch.cuda.max_memory_allocated over the interleaved calls (torch only)")
    if any(r["budget_limited"] for r in result.batches):
        footer.append(
            f"†: cut short by the {2 * s.budget_s:g} s time budget (both models) before --repeats pairs"
        )
    return title, headers, rows, footer
