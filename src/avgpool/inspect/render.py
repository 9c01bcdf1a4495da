"""Tables for inspect, diff and verify, laid out by `avgpool._tables` (text, markdown, rich)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from avgpool._tables import Table, dims, markdown, printable, rich_print, text
from avgpool.inspect.diff import DiffReport
from avgpool.inspect.layers import PoolLayer
from avgpool.inspect.model import InspectReport
from avgpool.inspect.verify import VerifyReport

__all__ = ["markdown", "printable", "render", "rich_print", "shape_text", "tables", "text"]


def _geometry(layer: PoolLayer) -> tuple[str, str, str, str]:
    """kernel, stride, padding (before:after per axis), flags."""
    if layer.op.startswith("adaptive"):
        return f"out {dims(layer.output_size)}", "-", "-", ""
    axes = layer.axes()
    w = layer.window
    if w is not None and w.kernel_size is None:
        return "global", "-", "-", ""
    if w is None:
        return "-", "-", "-", ""
    kernel = dims(w.kernel_size)
    if any(d > 1 for d in w.dilation):
        kernel += f" d{dims(w.dilation)}"
    if axes is not None:
        pads = "x".join(f"{a.pad_before}:{a.pad_after}" for a in axes)
    else:
        pads = w.padding if isinstance(w.padding, str) else "x".join(f"{b}:{a}" for b, a in w.padding)
    if isinstance(w.padding, str):
        pads = f"{w.padding} {pads}"
    if layer.pad is not None:
        pads += f" +{layer.pad.mode} pad " + "x".join(f"{b}:{a}" for b, a in layer.pad.pads)
    flags = []
    if w.ceil_mode:
        flags.append("ceil")
    if layer.op == "avg":
        flags.append("incl-pad" if w.count_include_pad else "excl-pad")
    if w.divisor_override:
        flags.append(f"div={w.divisor_override}")
    if layer.p is not None:
        flags.append(f"p={layer.p:g}")
    if layer.op == "blur" and layer.attributes.get("pad_type"):
        flags.append(f"{layer.attributes['pad_type']}-pad")
    return kernel, dims(w.stride), pads, " ".join(flags)


def inspect_table(report: InspectReport) -> Table:
    by_layer: dict[int, list[str]] = {}
    for f in report.findings:
        by_layer.setdefault(f.index, []).append(f.rule)
    rows = []
    for layer in report.inventory.layers:
        kernel, stride, pads, flags = _geometry(layer)
        rows.append(
            [
                str(layer.index),
                layer.name,
                layer.source_op,
                kernel,
                stride,
                pads,
                flags,
                f"{dims(layer.input_shape)} -> {dims(layer.output_shape)}",
                dims(layer.receptive_field),
                dims(layer.cumulative_stride),
                " ".join(dict.fromkeys(by_layer.get(layer.index, []))) or "-",
            ]
        )
    inv = report.inventory
    title = f"{inv.source}: {len(inv.layers)} pooling layers ({inv.format}"
    title += ", input " + ", ".join(f"{k} {dims(v)}" for k, v in inv.inputs.items()) + ")"
    if report.target:
        title += f", target {report.target}"
    footer = [f"note: {n}" for n in inv.notes]
    counts = {s: sum(f.severity == s for f in report.findings) for s in ("error", "warning", "info")}
    footer.append("findings: " + ", ".join(f"{n} {s}" for s, n in counts.items()))
    for f in report.findings:
        footer.append(f"  {f.rule} {f.severity:<7} [{f.index}] {f.layer}: {f.message}")
        footer.append(f"        fix: {f.fix}")
    headers = ["#", "layer", "op", "kernel", "stride", "pads", "mode", "in -> out", "RF", "jump", "lint"]
    return title, headers, rows, footer


def diff_table(report: DiffReport) -> Table:
    rows = []
    bad = {id(e) for e in report.disallowed()}
    for e in report.entries:
        if e.status == "same":
            continue
        what = "; ".join(f"{c.field} {_v(c.old)} -> {_v(c.new)}" for c in e.changes)
        rows.append(
            [
                e.status,
                "-" if e.old is None else e.old.name,
                "-" if e.new is None else e.new.name,
                e.matched_by or "-",
                what
                or ("layer only in the new model" if e.status == "added" else "layer only in the old model"),
                "no" if id(e) in bad else "yes",
            ]
        )
    same = sum(e.status == "same" for e in report.entries)
    title = f"pooling diff: {report.old_source} -> {report.new_source}"
    footer = [
        f"{same} unchanged, {len(report.changed)} changed/added/removed, "
        f"{len(report.disallowed())} not allowed (allowed: {', '.join(report.allowed) or 'nothing'})"
    ]
    return title, ["status", "old", "new", "matched by", "changes", "allowed"], rows, footer


def _v(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        if value and isinstance(value[0], (list, tuple)):
            return "x".join(f"{a}:{b}" for a, b in value)
        return dims(value)
    return str(value)


def verify_table(report: VerifyReport) -> Table:
    rows = [
        [
            c.name,
            c.source_op,
            "pass" if c.passed else "FAIL",
            f"{c.max_abs_diff:.3g}",
            f"{c.max_rel_diff:.3g}",
            f"{c.tolerance:.3g}",
            dims(c.runtime_shape),
            c.detail or "-",
        ]
        for c in report.checks
    ]
    title = f"verify {report.source} in {report.runtime}: {report.runs} run(s), input " + ", ".join(
        f"{k} {dims(v)}" for k, v in report.inputs.items()
    )
    footer = [
        f"{len(report.checks) - len(report.failures)} of {len(report.checks)} pooling nodes "
        "match the reference"
    ]
    return title, ["node", "op", "result", "max abs", "max rel", "tolerance", "shape", "detail"], rows, footer


def tables(report: Any) -> Table:
    if isinstance(report, InspectReport):
        return inspect_table(report)
    if isinstance(report, DiffReport):
        return diff_table(report)
    if isinstance(report, VerifyReport):
        return verify_table(report)
    raise TypeError(f"nothing renders a {type(report).__name__}")


def render(report: Any, fmt: str = "text") -> str:
    """``fmt``: text or markdown (rich is printed directly by the CLI, see `rich_print`).

    A `ShapeReport` is not a table: it renders as `shape_text` in either format.
    """
    from avgpool.inspect.shape import ShapeReport

    if isinstance(report, ShapeReport):
        return shape_text(report)
    table = tables(report)
    return markdown(table) if fmt == "markdown" else text(table)


def _ranges(cells: Sequence[int]) -> str:
    """[0, 1, 2, 7] -> '0-2, 7'."""
    out: list[str] = []
    start = prev = None
    for c in [*cells, None]:
        if start is not None and (c is None or c != prev + 1):
            out.append(str(start) if start == prev else f"{start}-{prev}")
            start = None
        if c is not None and start is None:
            start = c
        prev = c
    return ", ".join(out)


def shape_text(report: Any) -> str:
    """What ``avgpool shape`` prints for a `ShapeReport`: the geometry, the padding, the input
    cells no window reads, and how the other conventions treat the same arguments."""
    from avgpool.inspect.shape import COMPARED_CELLS

    names = {1: "L", 2: "HW", 3: "DHW"}[len(report.axes)]
    w = report.window
    order = ("N", *names, "C") if w.channels_last else ("N", "C", *names)
    lines = [
        f"input      {dims(report.input_shape)}  ({', '.join(order)})",
        f"operator   {report.op}_pool, {report.convention} convention",
        "window     kernel {}  stride {}  dilation {}  ceil_mode {}  count_include_pad {}{}".format(
            dims([a.kernel for a in report.axes]),
            dims([a.stride for a in report.axes]),
            dims([a.dilation for a in report.axes]),
            w.ceil_mode,
            w.count_include_pad,
            f"  divisor_override {w.divisor_override}" if w.divisor_override else "",
        ),
        f"output     {dims(report.output_shape)}",
        "padding    "
        + "   ".join(f"{n}: {a.pad_before} before, {a.pad_after} after" for n, a in zip(names, report.axes)),
    ]
    skipped = [
        f"{n}: not listed (longer than {COMPARED_CELLS} cells)"
        if u is None
        else f"{n}: {len(u)} of {a.size} never read ({_ranges(u)})"
        for n, a, u in zip(names, report.axes, report.uncovered)
        if u is None or u
    ]
    lines.append("uncovered  " + ("   ".join(skipped) if skipped else "none: every input cell is read"))
    lines.append("")
    lines.append("the same arguments in other conventions:")
    width = max(len(c.convention) for c in report.others)
    for c in report.others:
        shape = f"-> {dims(c.output_shape)}  " if c.output_shape else ""
        tail = f": {c.detail}" if c.detail else ""
        lines.append(f"  {c.convention:<{width}}  {shape}{c.verdict}{tail}")
    return "\n".join(lines)
