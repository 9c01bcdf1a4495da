"""Latency benchmarks: one pooling op beside its peers, a whole model, or an A/B of two models.

`bench_op` times avgpool's op on any geometry (resolved under any convention, as
``avgpool shape`` does), shape, dtype and layout, and every installed peer that computes the
same thing (the adapters of `avgpool.bench.peers`); each peer's output is checked against
avgpool's. `bench_model` times an ONNX model in ONNX Runtime or a PyTorch module
(`avgpool.bench.models`) over a sweep of batch sizes. `compare_models` times two models in
interleaved pairs and reports the ratio of their medians with a bootstrap interval
(`avgpool.bench.ab`).

How each measurement is taken (warm-up, rotating inputs, nearest-rank percentiles with their
sample counts, throughput, memory) is in `avgpool.bench.measure`; sizes on disk in
`avgpool.bench.models`. This module is the entry point: it re-exports `bench_op` and the
settings.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from avgpool._errors import AvgPoolError
from avgpool.bench.ab import ratio_of_medians, time_pairs
from avgpool.bench.measure import (
    LatencySettings,
    Progress,
    batch_list,
    measure_calls,
    progress_steps,
    throughput,
)
from avgpool.bench.memory import PeakRSS, cuda_peak, rss_bytes
from avgpool.bench.models import (
    InputSpec,
    TimedModel,
    file_batches,
    load_model,
    match_inputs,
    random_batches,
    shapes_of,
)
from avgpool.bench.op_latency import AGREE_TOL, OpBench, bench_op

__all__ = [
    "AGREE_TOL",
    "DEFAULT_BATCH_SIZES",
    "LatencySettings",
    "ModelBench",
    "ModelComparison",
    "OpBench",
    "bench_model",
    "bench_op",
    "compare_models",
]

#: The batch sweep of a model whose batch axis is free.
DEFAULT_BATCH_SIZES = (1, 8, 32)


@dataclass
class ModelBench:
    """`bench_model`'s result: the model, how it was measured, one record per batch size."""

    model: dict[str, Any]
    settings: LatencySettings
    input_source: str
    rss_baseline_bytes: int
    baseline: str
    batches: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": "model",
            "model": self.model,
            "settings": self.settings.to_dict(),
            "inputs": self.input_source,
            "rss_baseline_bytes": self.rss_baseline_bytes,
            "baseline": self.baseline,
            "batches": self.batches,
        }


def _model_sizes(batch_sizes: Sequence[int] | None, models: Sequence[TimedModel]) -> list[int]:
    fixed = {m.fixed_batch for m in models if m.fixed_batch is not None}
    if len(fixed) > 1:
        raise AvgPoolError(
            f"the models fix different batch sizes {sorted(fixed)}: they cannot run the same batch"
        )
    if batch_sizes is None:
        return sorted(fixed) if fixed else list(DEFAULT_BATCH_SIZES)
    sizes = batch_list(batch_sizes, 1)
    if fixed and sizes != sorted(fixed):
        m = next(m for m in models if m.fixed_batch is not None)
        raise AvgPoolError(
            f"batch sizes: {m.source} fixes its batch size at {m.fixed_batch}, got {sizes} "
            "(export it with a dynamic batch axis to sweep)"
        )
    return sizes


def _own_errors(model: TimedModel) -> TimedModel:
    """``model`` whose call turns the model's own exceptions into an `AvgPoolError` naming it.

    A forward that raises is a fault of the input (the model), not of avgpool, so the CLI says it
    in one line and exits 2. MemoryError and avgpool's own errors pass as they are. The wrapper
    costs one Python call per timed call, far below a model's latency.
    """
    inner = model.call

    def call(args: Any) -> Any:
        try:
            return inner(args)
        except (AvgPoolError, MemoryError):
            raise
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise AvgPoolError(
                f"{model.source}: the model raised {type(exc).__name__}" + (f": {first}" if first else "")
            ) from exc

    return replace(model, call=call)


def _prepare(
    model: Any,
    input_shapes: Mapping[str, Sequence[int]] | None,
    inputs: Mapping[str, np.ndarray] | None,
    threads: int | None,
    device: str,
    trust: bool = False,
) -> tuple[TimedModel, int, str]:
    """(the loaded model, the RSS baseline, what the baseline is)."""
    dtypes = None
    if inputs is not None:
        if input_shapes:
            raise AvgPoolError("give input shapes or sample inputs, not both")
        input_shapes, dtypes = shapes_of(inputs)
    start = rss_bytes()
    loaded = _own_errors(
        load_model(
            model, input_shapes=input_shapes, input_dtypes=dtypes, threads=threads, device=device, trust=trust
        )
    )
    if loaded.rss_before_load_bytes is None:
        return loaded, start, "at the start: the model was passed in already loaded, its weights not counted"
    return (
        loaded,
        loaded.rss_before_load_bytes,
        "just before the model was loaded (its runtime already imported)",
    )


def _batches(
    specs: Sequence[InputSpec],
    inputs: Mapping[str, np.ndarray] | None,
    batch: int,
    settings: LatencySettings,
) -> list[dict[str, np.ndarray]]:
    if inputs is not None:
        return file_batches(specs, inputs, batch, settings.rotate)
    return random_batches(specs, batch, settings.rotate, settings.seed)


def _nbytes(batches: Sequence[Mapping[str, np.ndarray]]) -> int:
    return sum(a.nbytes for b in batches for a in b.values())


def bench_model(
    model: Any,
    *,
    batch_sizes: Sequence[int] | None = None,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    inputs: Mapping[str, np.ndarray] | None = None,
    threads: int | None = None,
    device: str = "cpu",
    trust: bool = False,
    settings: LatencySettings | None = None,
    progress: Progress | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> ModelBench:
    """Time a model over a sweep of batch sizes (smallest first).

    Parameters
    ----------
    model : str, path, onnx.ModelProto or torch.nn.Module
        See `avgpool.bench.models` for the forms.
    batch_sizes : sequence of int, optional
        Default: the model's fixed batch size, else ``DEFAULT_BATCH_SIZES``.
    input_shapes : mapping, optional
        Input name (or "") to a full shape whose axis 0 the sweep replaces; needed for a
        PyTorch model and for an ONNX model with symbolic axes other than the batch.
    inputs : mapping of str to ndarray, optional
        Sample inputs by name (samples on axis 0, e.g. from `avgpool.monitor.load_inputs`),
        instead of random ones: each batch takes consecutive samples, wrapping around.
    threads : int, optional
        Runtime threads (None: the runtime's default). ``device``: "cpu" or "cuda".

    Returns
    -------
    ModelBench
        Per batch size: latency percentiles with ``n``, ``throughput_per_s``, ``first_call_ms``,
        ``rss_peak_bytes``, ``rss_peak_delta_bytes`` (see the module docstring),
        ``input_bytes`` and ``cuda_peak_bytes`` (None off CUDA).
    """
    settings = settings or LatencySettings()
    loaded, baseline, what = _prepare(model, input_shapes, inputs, threads, device, trust)
    sizes = _model_sizes(batch_sizes, [loaded])
    if inputs is not None:
        inputs = match_inputs(loaded.inputs, inputs)
    result = ModelBench(
        loaded.to_dict(),
        settings,
        "sample file" if inputs is not None else f"random, {settings.rotate} sets per batch size",
        baseline,
        what,
    )
    for batch in progress_steps(sizes, progress):
        batches = _batches(loaded.inputs, inputs, batch, settings)
        native = [loaded.native(b) for b in batches]
        input_bytes = _nbytes(batches)
        cuda_device = loaded.device if loaded.format == "torch" else None  # torch's allocator only
        record = {"batch": batch, **measure_calls(loaded.call, native, settings, clock, cuda_device)}
        del record["rss_start_bytes"]
        record.update(
            throughput_per_s=throughput(batch, record),
            input_bytes=input_bytes,
            rss_peak_delta_bytes=record["rss_peak_bytes"] - baseline - input_bytes,
        )
        result.batches.append(record)
        del batches, native
        gc.collect()
    return result


# --------------------------------------------------------------------------- A/B


@dataclass
class ModelComparison:
    """`compare_models`'s result: both models, and per batch size A's and B's latency and B/A."""

    a: dict[str, Any]
    b: dict[str, Any]
    settings: LatencySettings
    confidence: float
    resamples: int
    shared_inputs: bool
    batches: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": "compare",
            "a": self.a,
            "b": self.b,
            "settings": self.settings.to_dict(),
            "statistic": (
                "ratio = median(B) / median(A) over interleaved pairs (AB BA ...); interval: paired "
                f"percentile bootstrap, {self.resamples} resamples, seed {self.settings.seed}"
            ),
            "confidence": self.confidence,
            "shared_inputs": self.shared_inputs,
            "batches": self.batches,
        }


def _same_signature(a: Sequence[InputSpec], b: Sequence[InputSpec]) -> bool:
    return len(a) == len(b) and all(
        x.sample_shape == y.sample_shape and x.dtype == y.dtype for x, y in zip(a, b)
    )


def compare_models(
    a: Any,
    b: Any,
    *,
    batch_sizes: Sequence[int] | None = None,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    inputs: Mapping[str, np.ndarray] | None = None,
    threads: int | None = None,
    device: str = "cpu",
    trust: bool = False,
    settings: LatencySettings | None = None,
    confidence: float = 0.95,
    resamples: int = 2000,
    progress: Progress | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> ModelComparison:
    """A/B: time models ``a`` and ``b`` in interleaved pairs at each batch size.

    Both models are loaded in this process and fed the same input arrays when their inputs
    have the same shapes and dtypes (else each gets its own, from the same seed). Per batch
    size the record holds each model's latency percentiles and throughput, the ratio
    ``median(B) / median(A)`` with its paired bootstrap interval and the p10/p90 of per-pair
    ratios (`avgpool.bench.ab.ratio_of_medians`), and the RSS peak over the interleaved runs,
    which counts both models. Each model's own memory is its ``load_rss_bytes``; run
    `bench_model` on each for its peak at every batch size. The budget covers both models:
    ``2 * budget_s`` per batch size.
    """
    settings = settings or LatencySettings()
    ratio_of_medians([1.0], [1.0], confidence=confidence, resamples=resamples)  # validates both first
    model_a, _, _ = _prepare(a, input_shapes, inputs, threads, device, trust)
    model_b, _, _ = _prepare(b, input_shapes, inputs, threads, device, trust)
    sizes = _model_sizes(batch_sizes, [model_a, model_b])
    shared = _same_signature(model_a.inputs, model_b.inputs)
    files = {}
    if inputs is not None:
        files = {"a": match_inputs(model_a.inputs, inputs), "b": match_inputs(model_b.inputs, inputs)}
    result = ModelComparison(model_a.to_dict(), model_b.to_dict(), settings, confidence, resamples, shared)
    for batch in progress_steps(sizes, progress):
        sets_a = _batches(model_a.inputs, files.get("a"), batch, settings)
        if shared:
            sets_b = [{sb.name: s[sa.name] for sa, sb in zip(model_a.inputs, model_b.inputs)} for s in sets_a]
        else:
            sets_b = _batches(model_b.inputs, files.get("b"), batch, settings)
        native_a = [model_a.native(s) for s in sets_a]
        native_b = [model_b.native(s) for s in sets_b]
        memory = PeakRSS()
        torch_model = next((m for m in (model_a, model_b) if m.format == "torch"), None)
        reset, read = cuda_peak(torch_model.device if torch_model is not None else None)

        def before_timed(memory: PeakRSS = memory, reset: Any = reset) -> None:
            if reset is not None:
                reset()
            memory.__enter__()

        time_a, time_b = time_pairs(
            model_a.call,
            model_b.call,
            native_a,
            native_b,
            repeats=settings.repeats,
            warmup=settings.warmup,
            budget_s=2 * settings.budget_s,
            clock=clock,
            between=before_timed,
        )
        memory.__exit__(None, None, None)
        cuda_bytes = read() if read is not None else None
        ratio = ratio_of_medians(
            time_a.samples, time_b.samples, confidence=confidence, resamples=resamples, seed=settings.seed
        )
        record: dict[str, Any] = {"batch": batch, "pairs": time_a.n}
        for key, timing in (("a", time_a), ("b", time_b)):
            lat = timing.latency()
            lat["throughput_per_s"] = throughput(batch, lat)
            lat["samples_ms"] = [s * 1e3 for s in timing.samples]
            record[key] = lat
        record.update(
            ratio=ratio.to_dict(),
            rss_peak_bytes=memory.peak_bytes,
            memory_method=memory.method,
            cuda_peak_bytes=cuda_bytes,
            budget_limited=time_a.budget_limited,
        )
        result.batches.append(record)
        del sets_a, sets_b, native_a, native_b
        gc.collect()
    return result
