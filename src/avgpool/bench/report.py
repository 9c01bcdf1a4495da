"""The run's record: machine facts, the performance targets, and the JSON and markdown writers."""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

from avgpool._files import check_writable, write_atomically
from avgpool.bench._format import mark, peer_cells
from avgpool.bench._format import ms as _ms
from avgpool.bench.cases import targets
from avgpool.bench.timing import nearest_rank

__all__ = [
    "check_results_dir",
    "detect_llc_bytes",
    "machine_facts",
    "render_markdown",
    "summarize",
    "write_results",
]

_DISTRIBUTIONS = {
    "avgpool": "avgpool",
    "numpy": "numpy",
    "numba": "numba",
    "torch": "torch",
    "onnxruntime": "onnxruntime",
    "onnx": "onnx",
    "cv2": "opencv-python-headless",
    "scipy": "scipy",
    "dask": "dask",
}


def _sysfs_size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    text = text.strip()
    return int(text[:-1]) * units[text[-1]] if text[-1] in units else int(text)


def detect_llc_bytes(root: str = "/sys/devices/system/cpu/cpu0/cache") -> int | None:
    """The largest cache level's size from sysfs (Linux), or None when it can't be read."""
    best: tuple[int, int] | None = None
    for index in sorted(Path(root).glob("index*")):
        try:
            level = int((index / "level").read_text())
            size = _sysfs_size((index / "size").read_text())
        except (OSError, ValueError, IndexError, KeyError):
            continue
        if best is None or (level, size) > best:
            best = (level, size)
    return best[1] if best else None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_bytes() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def machine_facts(threads: int) -> dict[str, Any]:
    """CPU model, cores, threads used, cache and memory sizes, library versions and the date."""
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "threads": threads,
        "llc_bytes": detect_llc_bytes(),
        "memory_bytes": _memory_bytes(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": {name: _version(dist) for name, dist in _DISTRIBUTIONS.items()},
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def summarize(results: dict[str, Any]) -> dict[str, Any]:
    """The performance targets checked on the rows (None where a case is missing)."""
    rows = results["cases"]
    slower = []
    for row in rows:
        if row["best_peer"] is None:
            continue
        ratio = row["avgpool_vs_best"]
        if ratio is None or ratio > 1.0:
            slower.append(
                {"case": row["case"]["id"], "avgpool_vs_best": ratio, "best_peer": row["best_peer"]}
            )
    fractions = [
        row["floor_ms"] / row["avgpool"]["median_ms"] if row["avgpool"]["status"] == "ok" else 0.0
        for row in rows
    ]
    median_fraction = nearest_rank(fractions, 50) if fractions else None
    goals = targets()
    per_output = {
        (row["case"]["key"], row["case"]["channels_last"]): row["avgpool"].get("per_output_ns")
        for row in rows
    }
    titles = {row["case"]["key"]: row["case"]["title"] for row in rows}
    big_vs_small: dict[str, Any] = {}
    for cl, name in ((False, "channels_first"), (True, "channels_last")):
        big = per_output.get((goals["large_window"], cl))
        small = per_output.get((goals["small_window"], cl))
        big_vs_small[name] = big / small if big and small else None
    ratios = [r for r in big_vs_small.values() if r is not None]
    return {
        "faster_than_best_peer": {
            "pass": not slower and any(r["best_peer"] for r in rows),
            "cases_compared": sum(1 for r in rows if r["best_peer"]),
            "slower_cases": slower,
        },
        "floor_fraction": {
            "median_case": median_fraction,
            "target": goals["floor_fraction"],
            "pass": median_fraction is not None and median_fraction >= goals["floor_fraction"],
        },
        "window_growth": {
            **big_vs_small,
            "large": titles.get(goals["large_window"], goals["large_window"]),
            "small": titles.get(goals["small_window"], goals["small_window"]),
            "target": goals["window_growth"],
            "pass": len(ratios) == 2 and all(r < goals["window_growth"] for r in ratios),
        },
    }


def check_results_dir(out_dir: str | Path, stem: str = "latest") -> None:
    """Raise OSError if `write_results` could not write both files (call it before a run too,
    so a bad ``--out`` is refused before the measurements, not after)."""
    out = Path(out_dir)
    for path in (out / f"{stem}.json", out / f"{stem}.md"):
        check_writable(path, parents=True)


def write_results(results: dict[str, Any], out_dir: str | Path, stem: str = "latest") -> tuple[Path, Path]:
    """Write ``<stem>.json`` and ``<stem>.md`` into ``out_dir`` (each atomically); returns both."""
    out = Path(out_dir)
    json_path, md_path = out / f"{stem}.json", out / f"{stem}.md"
    check_results_dir(out, stem)
    json_text = json.dumps(results, indent=1, default=_jsonable) + "\n"
    md_text = render_markdown(results)  # both rendered before either file is replaced
    out.mkdir(parents=True, exist_ok=True)
    write_atomically(json_path, json_text)
    write_atomically(md_path, md_text)
    return json_path, md_path


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _cell(record: dict[str, Any]) -> str:
    status = record.get("status")
    if status == "n/a":
        return "n/a"
    if status != "ok":
        return "failed"
    text = f"{_ms(record['median_ms'])} ({record['ratio_floor']:.1f}x)"
    if record.get("budget_limited"):
        text += "†"
    if record.get("agrees") is False:
        text += " ≠"
    return text


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f}".rstrip("0").rstrip(".")


def _warmup_text(settings: dict[str, Any]) -> str:
    if settings.get("warmup") is None:
        return f"one untimed pass over the inputs (each used once, at most {settings['budget_s']:g} s)"
    return f"{settings['warmup']} warm-up call(s)"


def render_markdown(results: dict[str, Any]) -> str:
    """The results as a markdown page: machine facts, then each suite that ran (the synthetic
    cases, the real layers, the per-call overhead) with its notes, then every performance target.
    """
    from avgpool.bench.report_suites import (
        layers_targets,
        overhead_targets,
        render_layers,
        render_overhead,
    )

    lines = _header(results)
    targets_lines: list[str] = []
    if "cases" in results:
        lines += _synthetic(results)
        targets_lines += _synthetic_targets(results["summary"])
    if "layers" in results:
        lines += render_layers(results["layers"])
        targets_lines += layers_targets(results["layers"]["summary"])
    if "overhead" in results:
        lines += render_overhead(results["overhead"])
        targets_lines += overhead_targets(results["overhead"]["summary"])
    if "dask" in results:
        from avgpool.bench.dask_suite import dask_targets, render_dask

        lines += render_dask(results["dask"])
        targets_lines += dask_targets(results["dask"])
    lines += ["", "## Performance targets", "", *targets_lines]
    return "\n".join(lines) + "\n"


def _header(results: dict[str, Any]) -> list[str]:
    m = results["machine"]
    v = m["versions"]
    lines = [
        "# avgpool benchmark",
        "",
        f"{m['date']} · {m['cpu']} · {m['cores']} cores · **{m['threads']} threads** "
        f"(avgpool, torch, ONNX Runtime intra-op, OpenCV; scipy runs 1) · "
        f"last-level cache {_mib(m['llc_bytes'] or 0)} MiB · memory {_mib(m['memory_bytes'] or 0)} MiB · "
        f"Python {m['python']}",
        "",
        "Versions: " + ", ".join(f"{k} {v[k]}" for k in v if v[k]),
        "",
    ]
    bw = results.get("bandwidth")
    if bw:
        lines += [
            f"Streaming rates ({_mib(bw['array_bytes'])} MiB float32 arrays, {bw['threads']} threads, "
            f"best of {bw['repeats']}): read {bw['read_gb_per_s']:.1f} GB/s (np.maximum.reduce), write "
            f"{bw['write_gb_per_s']:.1f} GB/s (memset). Floor = input bytes / read + output bytes / write. "
            f"A plain copy ran at {bw['copy_gb_per_s']:.1f} GB/s, {bw['copy_vs_floor']:.2f}x its floor: "
            "reads and writes overlap here, so the floor is a yardstick, not a hard bound.",
            "",
        ]
    return lines


def _synthetic(results: dict[str, Any]) -> list[str]:
    s = results["settings"]
    peers = results["peers"]
    lines = [
        "## Synthetic cases",
        "",
        f"Timing: median (nearest rank) of up to {s['repeats']} calls after {_warmup_text(s)}, "
        f"the lowest of {s.get('rounds', 1)} such measurement(s) taken in turns (avgpool, the peers, "
        "avgpool again, ...), "
        f"inputs rotated among copies totalling > {_mib(s['rotate_bytes'])} MiB; a measurement stops adding "
        f"calls after {s['budget_s']:g} s (marked †). Cells: median ms (median / floor). "
        "≠: output differs from avgpool's beyond float32 tolerance. "
        + (
            "avgpool runs in a child process per case and round, the first with an empty Numba "
            "cache, so *first call* includes the JIT compile of that case's kernels."
            if s["isolate"]
            else "avgpool runs in this process: *first call* includes compiling only kernels no earlier "
            "case compiled."
        ),
        "",
    ]
    head = ["case", "layout", "shape", "MiB in → out", "floor ms", "avgpool", "first call ms"]
    head += [*peers, "best peer", "avgpool / best"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    notes: dict[str, list[str]] = {}
    labels: dict[str, set[str]] = {}
    for row in results["cases"]:
        c, a = row["case"], row["avgpool"]
        cells = [
            c["title"],
            c["layout"],
            "x".join(map(str, c["array_shape"])),
            f"{_mib(c['bytes_in'])} → {_mib(c['bytes_out'])}",
            _ms(row["floor_ms"]),
            _cell(a),
            _ms(a["first_call_ms"]) if a.get("status") == "ok" else "",
        ]
        cells += peer_cells(row, c["id"], peers, _cell, notes, labels)
        if a.get("status") != "ok":
            notes.setdefault(f"avgpool failed: {a.get('error')}", []).append(c["id"])
        ratio = row["avgpool_vs_best"]
        cells += [row["best_peer"] or "—", f"{ratio:.2f}" if ratio is not None else "—"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "### Notes", ""]
    for name, found in labels.items():
        lines.append(f"- {name} ran as: " + "; ".join(sorted(found)))
    for note, ids in notes.items():
        lines.append(f"- {note} ({', '.join(ids)})")
    return lines


def _synthetic_targets(summary: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    fast = summary["faster_than_best_peer"]
    slower = ", ".join(
        f"{x['case']} ({x['avgpool_vs_best']:.2f}x {x['best_peer']})"
        if x["avgpool_vs_best"] is not None
        else f"{x['case']} (failed)"
        for x in fast["slower_cases"]
    )
    lines.append(
        f"- {mark(fast['pass'])} avgpool at least as fast as the best peer on every case: "
        f"{fast['cases_compared'] - len(fast['slower_cases'])} of {fast['cases_compared']}"
        + (f"; slower on {slower}" if slower else "")
    )
    ff = summary["floor_fraction"]
    value = f"{ff['median_case']:.0%}" if ff["median_case"] is not None else "not measured"
    lines.append(
        f"- {mark(ff['pass'])} median case at >= {ff['target']:.0%} of the bandwidth floor "
        f"(floor / time; a failed case counts 0): {value}"
    )
    po = summary["window_growth"]
    parts = [
        f"{name.replace('_', '-')} {po[name]:.2f}x" if po[name] is not None else f"{name} not measured"
        for name in ("channels_first", "channels_last")
    ]
    lines.append(
        f"- {mark(po['pass'])} {po['large']} under {po['target']:g}x the {po['small']} time per output: "
        + ", ".join(parts)
    )
    return lines
