"""What the server's telemetry costs per request, measured in process (``avgpool bench telemetry``).

One model, one set of inputs per batch size, four ways of answering a request, the way the
server's infer route does it:

- ``model only``: ``Runner.run(inputs)``, no telemetry at all;
- ``sampling off``: plus the per-request metrics (``ModelTelemetry.observe``: request and model
  histograms, request and row counters) and ``should_sample``, with ``sample_every=0``;
- ``N=100`` and ``N=1``: also every 100th or every request sampled: ``Runner.run(...,
  sample=True)`` returns the pooling layers' outputs (extra graph outputs in ONNX Runtime, hooks
  in torch) and ``observe_pooling`` queues them.

The **request path** is the time a request spends in those calls. The **background** is the
work the telemetry worker thread does per queued sample (adding the pooling outputs to the live
profile's statistics): it is measured by profiling the queued samples on the calling thread
(``Telemetry.flush``) every few samples, off the request path's clock, so it is counted once,
on its own, and shared by a sampled request's 1/N. Requests run in blocks of 100; the modes take
turns block by block (so a busy machine slows them alike) and each time per request is the median
over blocks of a block's mean. An overhead is the median over rounds of a block's difference to the same
round's ``model only`` block, in microseconds and in % of the model's time.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from avgpool._errors import AvgPoolError
from avgpool._tables import Table

__all__ = ["MODES", "CostReport", "cost_table", "telemetry_cost"]

#: (mode, sample_every): None for no telemetry at all, 0 for sampling off.
MODES: tuple[tuple[str, int | None], ...] = (
    ("model only", None),
    ("sampling off", 0),
    ("N=100", 100),
    ("N=1", 1),
)
_BLOCK = 100
#: Samples queued before they are profiled (the telemetry's queue holds more by default).
_FLUSH_EVERY = 8


@dataclass
class CostReport:
    """`telemetry_cost`'s figures: one row per (batch size, mode), times in microseconds."""

    model: str
    platform: str
    layers: tuple[str, ...]
    repeats: int
    rows: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "platform": self.platform,
            "layers": list(self.layers),
            "repeats": self.repeats,
            "rows": [dict(r) for r in self.rows],
        }

    def row(self, batch: int, mode: str) -> dict[str, Any]:
        for r in self.rows:
            if r["batch"] == batch and r["mode"] == mode:
                return r
        raise KeyError((batch, mode))


def telemetry_cost(
    model: Any,
    *,
    batch_sizes: Sequence[int] = (1, 32),
    repeats: int = 2000,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    trust: bool = False,
    progress: Callable[[Iterable[Any]], Iterable[Any]] | None = None,
) -> CostReport:
    """Measure the per-request cost of telemetry on ``model`` (see the module docstring).

    Parameters
    ----------
    model
        A `Runner`, or a source for `load_runner` (``path/x.onnx``, ``pkg.mod:factory``, ...).
    batch_sizes
        Rows per request (the model's free axis 0).
    repeats
        Requests per mode and batch size (rounded up to whole blocks of 100, at least one block).
    input_shapes, trust
        For `load_runner` when ``model`` is a source.
    progress
        Wraps the batch sizes (a progress bar), or None.

    Returns
    -------
    CostReport
        Rows with ``batch``, ``mode``, ``sample_every``, ``request_us`` (request path per
        request), ``overhead_us`` and ``overhead_pct`` (against ``model only``), ``samples``
        (profiled), ``dropped`` (sampled but not queued: the queue was full),
        ``background_us_per_sample``, ``background_us`` (per request) and ``total_us`` /
        ``total_pct`` (request-path overhead plus background, per request).
    """
    from avgpool.serve._runners import Runner, load_runner

    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise AvgPoolError(f"repeats must be an int >= 1, got {repeats!r}")
    sizes = [int(b) for b in batch_sizes]
    if not sizes or any(b < 1 for b in sizes):
        raise AvgPoolError(f"batch_sizes must be ints >= 1, got {list(batch_sizes)}")
    owned = not isinstance(model, Runner)
    runner = load_runner(model, input_shapes=input_shapes, trust=trust) if owned else model
    try:
        report = CostReport(runner.name, runner.platform, tuple(runner.layers), repeats)
        for batch in progress(sizes) if progress else sizes:
            report.rows += _measure(runner, batch, -(-repeats // _BLOCK))
        return report
    finally:
        if owned:
            runner.close()


def _measure(runner: Any, batch: int, blocks: int) -> list[dict[str, Any]]:
    from avgpool.serve._telemetry import Telemetry

    inputs = runner.example_inputs(batch)
    runner.run(inputs, sample=True)
    runner.run(inputs)
    telemetry = {
        mode: Telemetry(sample_every=every, interval=3600.0, window=3600.0)
        for mode, every in MODES
        if every is not None
    }
    models = {mode: t.add_model(runner) for mode, t in telemetry.items()}
    per_request: dict[str, list[float]] = {mode: [] for mode, _ in MODES}
    background = dict.fromkeys(per_request, 0.0)
    samples = dict.fromkeys(per_request, 0)
    sampled = dict.fromkeys(per_request, 0)
    names = [mode for mode, _ in MODES]
    for block in range(blocks + 1):  # block 0 warms every path up and is not counted
        for mode in names[block % len(names) :] + names[: block % len(names)]:
            gc.collect()
            seconds, spent, asked, done = _block(runner, models.get(mode), telemetry.get(mode), inputs, batch)
            if block:
                per_request[mode].append(seconds / _BLOCK)
                background[mode] += spent
                sampled[mode] += asked
                samples[mode] += done
    base = float(np.median(per_request["model only"]))
    rows = []
    for mode, every in MODES:
        request = float(np.median(per_request[mode]))
        # paired with the same round's model-only block: a slow spell on a busy machine moves
        # both, so their difference is steadier than the difference of the two medians
        overhead = float(np.median(np.subtract(per_request[mode], per_request["model only"])))
        bg_request = background[mode] / (blocks * _BLOCK)
        bg_sample = background[mode] / samples[mode] if samples[mode] else float("nan")
        rows.append(
            {
                "batch": batch,
                "mode": mode,
                "sample_every": every,
                "request_us": request * 1e6,
                "overhead_us": overhead * 1e6,
                "overhead_pct": 100 * overhead / base,
                "samples": samples[mode],
                "dropped": sampled[mode] - samples[mode],
                "background_us_per_sample": bg_sample * 1e6,
                "background_us": bg_request * 1e6,
                "total_us": (overhead + bg_request) * 1e6,
                "total_pct": 100 * (overhead + bg_request) / base,
            }
        )
    return rows


def _block(
    runner: Any, model: Any, telemetry: Any, inputs: dict[str, np.ndarray], batch: int
) -> tuple[float, float, int, int]:
    """`_BLOCK` requests as the server's infer route makes them: (request-path seconds,
    background seconds, sampled requests, samples profiled). The queued samples are profiled
    every `_FLUSH_EVERY` samples, off the request path's clock, so the queue never fills."""
    clock = time.perf_counter
    path = background = 0.0
    sampled = profiled = 0
    for _ in range(_BLOCK):
        if model is None:
            began = clock()
            runner.run(inputs)
            path += clock() - began
            continue
        began = clock()
        sample = model.should_sample()
        before = clock()
        _, pooled = runner.run(inputs, sample=sample)
        after = clock()
        if sample:
            model.observe_pooling(pooled)
        model.observe(request_seconds=clock() - began, model_seconds=after - before, rows=batch)
        path += clock() - began
        if sample:
            sampled += 1
            if sampled % _FLUSH_EVERY == 0:
                began = clock()
                profiled += telemetry.flush()
                background += clock() - began
    if telemetry is not None:
        began = clock()
        profiled += telemetry.flush()
        background += clock() - began
    return path, background, sampled, profiled


def _us(value: float) -> str:
    if not np.isfinite(value):
        return "-"
    return f"{value:.1f}" if abs(value) < 100 else f"{value:.0f}"


def _pct(value: float) -> str:
    return "-" if not np.isfinite(value) else f"{value:+.1f}%"


def cost_table(report: CostReport) -> Table:
    """The ``avgpool bench telemetry`` table."""
    headers = [
        "batch",
        "mode",
        "µs/request",
        "request path +µs",
        "+% model",
        "samples",
        "background µs/sample",
        "total +µs/request",
        "total +%",
    ]
    rows = []
    for r in report.rows:
        base = r["mode"] == "model only"
        rows.append(
            [
                str(r["batch"]),
                r["mode"],
                _us(r["request_us"]),
                "" if base else _us(r["overhead_us"]),
                "" if base else _pct(r["overhead_pct"]),
                "" if base else str(r["samples"]),
                "" if base else _us(r["background_us_per_sample"]),
                "" if base else _us(r["total_us"]),
                "" if base else _pct(r["total_pct"]),
            ]
        )
    footer = [
        f"{report.model} ({report.platform}), {len(report.layers)} pooling layers profiled: "
        + (", ".join(report.layers) or "none"),
        f"{report.repeats} requests per mode and batch size, in blocks of {_BLOCK} taking turns; medians "
        "over blocks (overheads: of the difference to the same round's model-only block). Request "
        "path: should_sample, run, observe_pooling, observe. Background: the telemetry worker's "
        "profiling of a queued sample; total = request path + background / N.",
    ]
    dropped = sum(r["dropped"] for r in report.rows)
    if dropped:
        footer.append(f"{dropped} sampled requests were dropped (the telemetry queue was full)")
    return "avgpool bench telemetry: the cost per request", headers, rows, footer
