"""``avgpool bench op``: one pooling op on any geometry, beside every peer that computes it.

`bench_op` resolves the geometry under a framework's convention (as ``avgpool shape`` does),
times avgpool's op and then each installed peer on the same rotating inputs (the adapters of
`avgpool.bench.peers`, prepared outside the timed region), and checks each peer's output
against avgpool's at the dtype's tolerance (`AGREE_TOL`). The peer adapters take symmetric
integer padding with no dilation, divisor_override or output-changing ceil_mode; for any other
geometry they are reported as not applicable, with the reason. How each measurement is taken:
`avgpool.bench.measure`.
"""

from __future__ import annotations

import gc
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from avgpool._errors import AvgPoolError
from avgpool.bench.cases import Case
from avgpool.bench.measure import (
    LatencySettings,
    Progress,
    batch_list,
    measure_calls,
    progress_steps,
    throughput,
)
from avgpool.bench.peers import PEERS, Peer

__all__ = ["AGREE_TOL", "OpBench", "bench_op"]

#: A peer agrees with avgpool when ``allclose`` at these tolerances (per dtype).
AGREE_TOL = {"float16": 1e-2, "float32": 1e-5, "float64": 1e-9}
_DTYPES = tuple(AGREE_TOL)
_MAX_COPIES = 256
_MIB = 1 << 20


@dataclass
class OpBench:
    """`bench_op`'s result: what was run, and one record per implementation and batch size."""

    op: str
    convention: str
    input_shape: tuple[int, ...]
    layout: str
    dtype: str
    window: dict[str, Any]
    output_shape: tuple[int, ...]
    threads: int
    settings: LatencySettings
    results: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": "op",
            "op": self.op,
            "convention": self.convention,
            "input_shape": list(self.input_shape),
            "layout": self.layout,
            "dtype": self.dtype,
            "window": self.window,
            "output_shape": list(self.output_shape),
            "threads": self.threads,
            "settings": self.settings.to_dict(),
            "results": self.results,
        }


def _peer_case(window: Any, op: str, shape: tuple[int, ...], dtype: str) -> tuple[Case | None, str]:
    """The geometry as a `Case` the peer adapters take, or why it cannot be one."""
    axes = window.resolve(window.spatial_shape(shape))
    pads = {p for a in axes for p in (a.pad_before, a.pad_after)}
    why = []
    if any(a.dilation != 1 for a in axes):
        why.append("dilation")
    if len(pads) > 1:
        why.append("padding that differs by side or axis")
    if window.divisor_override is not None:
        why.append("divisor_override")
    if why:
        return None, f"the peer adapters take no {', '.join(why)}"
    channels_last = window.channels_last
    logical = (shape[0], shape[-1], *shape[1:-1]) if channels_last else shape
    case = Case(
        "bench",
        f"{op} pool",
        op,
        tuple(logical),
        tuple(a.kernel for a in axes),
        tuple(a.stride for a in axes),
        pads.pop() if pads else 0,
        window.count_include_pad,
        channels_last,
        dtype,
    )
    if case.out_spatial != tuple(a.out for a in axes):
        return None, "the peer adapters take no ceil_mode (it changes the output size here)"
    return case, ""


def _op_inputs(shape: tuple[int, ...], dtype: str, count: int, seed: int) -> list[np.ndarray]:
    first = np.random.default_rng(seed).random(shape).astype(dtype)
    return [first] + [first.copy() for _ in range(count - 1)]


def _copies(nbytes: int, at_least: int) -> int:
    from avgpool.bench.report import detect_llc_bytes

    llc = max(detect_llc_bytes() or 0, 32 * _MIB)
    return min(max(at_least, math.ceil(2 * llc / max(nbytes, 1))), _MAX_COPIES)


def _agreement(y: np.ndarray, reference: np.ndarray, dtype: str) -> dict[str, Any]:
    if y.shape != reference.shape:
        return {"agrees": False, "max_abs_diff": None, "note": f"shape {y.shape} != {reference.shape}"}
    diff = np.abs(y.astype(np.float64) - reference.astype(np.float64))
    finite = diff[np.isfinite(diff)]
    tol = AGREE_TOL[dtype]
    return {
        "agrees": bool(np.allclose(y, reference, rtol=tol, atol=tol, equal_nan=True)),
        "max_abs_diff": float(finite.max()) if finite.size else 0.0,
    }


def _resolve_peers(peers: Sequence[str | Peer] | None) -> list[Peer]:
    if peers is None:
        return list(PEERS)
    by_name = {p.name: p for p in PEERS}
    out = []
    for p in peers:
        if isinstance(p, Peer):
            out.append(p)
        elif p in by_name:
            out.append(by_name[p])
        else:
            raise AvgPoolError(f"peers must be among {tuple(by_name)} (or none), got {p!r}")
    return out


def _window_dict(window: Any, shape: tuple[int, ...]) -> dict[str, Any]:
    axes = window.resolve(window.spatial_shape(shape))
    return {
        "kernel_size": [a.kernel for a in axes],
        "stride": [a.stride for a in axes],
        "dilation": [a.dilation for a in axes],
        "padding": [[a.pad_before, a.pad_after] for a in axes],
        "ceil_mode": window.ceil_mode,
        "count_include_pad": window.count_include_pad,
        "divisor_override": window.divisor_override,
    }


def _set_numba_threads(threads: int) -> None:
    import numba

    from avgpool._settings import set_num_threads

    set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))


def bench_op(
    input_shape: Sequence[int],
    kernel_size: Any,
    stride: Any = None,
    padding: Any = 0,
    *,
    dilation: Any = 1,
    ceil_mode: bool = False,
    count_include_pad: bool | None = None,
    divisor_override: int | None = None,
    convention: str = "torch",
    op: str = "avg",
    dtype: str = "float32",
    channels_last: bool = False,
    peers: Sequence[str | Peer] | None = None,
    batch_sizes: Sequence[int] | None = None,
    threads: int | None = None,
    settings: LatencySettings | None = None,
    progress: Progress | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> OpBench:
    """Time avgpool's ``op`` on one geometry beside every peer that computes it.

    Parameters
    ----------
    input_shape : sequence of int
        The array as stored: (N, C, *spatial), or (N, *spatial, C) with ``channels_last``.
    kernel_size, stride, padding, dilation, ceil_mode, count_include_pad, divisor_override
        The pooling arguments as ``convention`` reads them (None: that framework's default),
        resolved by `avgpool.inspect.window_for`.
    convention : str
        torch, onnx, tensorflow, keras or flax.
    op : str
        "avg" or "max".
    dtype : str
        float16, float32 or float64.
    peers : sequence of str, optional
        Peer names (torch, onnxruntime, cv2, scipy); None for every one, ``[]`` for none.
        A peer that is not installed, or cannot compute the geometry, gets a record saying why.
    batch_sizes : sequence of int, optional
        Values for axis 0 (default: the N of ``input_shape``).
    threads : int, optional
        The thread count for every library (default: all cores).

    Returns
    -------
    OpBench
        One record per implementation and batch size: latency percentiles with ``n``,
        ``throughput_per_s`` (samples of the batch per second), ``gb_per_s`` (input and output
        bytes over the p50), memory, and for peers ``agrees`` / ``max_abs_diff`` against avgpool.

    Raises
    ------
    AvgPoolError
        For arguments out of range (named in the message); TypeError for a dtype not listed.
    """
    import avgpool
    from avgpool.inspect.shape import window_for

    settings = settings or LatencySettings()
    if op not in ("avg", "max"):
        raise AvgPoolError(f"op must be 'avg' or 'max', got {op!r}")
    if dtype not in _DTYPES:
        raise TypeError(f"dtype must be one of {_DTYPES}, got {dtype!r}")
    shape = tuple(int(s) for s in input_shape)
    if not 3 <= len(shape) <= 5 or any(s < 1 for s in shape):
        raise AvgPoolError(
            f"input shape must be (N, C, *spatial) with 1 to 3 spatial axes and sizes >= 1, got {shape}"
        )
    threads = (os.cpu_count() or 1) if threads is None else threads
    if threads < 1:
        raise AvgPoolError(f"threads must be >= 1, got {threads}")
    sizes = batch_list(batch_sizes, shape[0])
    chosen = _resolve_peers(peers)
    window = window_for(
        convention,
        len(shape) - 2,
        kernel_size,
        stride,
        padding,
        dilation=dilation,
        ceil_mode=ceil_mode,
        count_include_pad=count_include_pad,
        divisor_override=divisor_override,
        op=op,
        channels_last=channels_last,
    )
    output_shape = window.output_shape(shape)
    pool = avgpool.avg_pool if op == "avg" else avgpool.max_pool

    def ours(x: np.ndarray) -> np.ndarray:
        return pool(x, window=window)

    nd = len(shape) - 2
    layout = ("NCL", "NCHW", "NCDHW")[nd - 1]
    if channels_last:
        layout = layout[0] + layout[2:] + "C"
    result = OpBench(
        op,
        convention,
        shape,
        layout,
        dtype,
        _window_dict(window, shape),
        output_shape,
        threads,
        settings,
    )
    _set_numba_threads(threads)
    steps = [(b, impl) for b in sizes for impl in ["avgpool", *chosen]]
    current: int | None = None
    inputs: list[np.ndarray] = []
    reference: np.ndarray | None = None
    case: Case | None = None
    geometry_reason = ""
    for batch, impl in progress_steps(steps, progress):
        if batch != current:
            current = batch
            inputs = reference = None  # free the previous batch's arrays first
            gc.collect()
            bshape = (batch, *shape[1:])
            nbytes = math.prod(bshape) * np.dtype(dtype).itemsize
            out_bytes = math.prod(window.output_shape(bshape)) * np.dtype(dtype).itemsize
            inputs = _op_inputs(bshape, dtype, _copies(nbytes, settings.rotate), settings.seed)
            case, geometry_reason = _peer_case(window, op, bshape, dtype)
        row: dict[str, Any] = {
            "implementation": "avgpool" if impl == "avgpool" else impl.name,
            "batch": batch,
        }
        try:
            if impl == "avgpool":
                label, call, timed_inputs, to_numpy, close = "avgpool", ours, inputs, np.asarray, None
                used = threads
            else:
                reason = geometry_reason or impl.applies(case)
                if reason is None and impl.name == "onnxruntime" and dtype != "float32":
                    reason = "the one-node model it builds is float32 only"
                if reason:
                    result.results.append({**row, "status": "n/a", "reason": reason})
                    continue
                prepared = impl.prepare(case, inputs, threads)
                label, call, timed_inputs = prepared.label, prepared.call, prepared.inputs
                to_numpy, close = prepared.to_numpy, prepared.close
                used = prepared.threads
            try:
                record = measure_calls(call, timed_inputs, settings, clock)
                output = to_numpy(call(timed_inputs[0]))
            finally:
                if close is not None:
                    close()
        except Exception as error:  # a peer that breaks is one row of the table
            if impl == "avgpool":
                raise
            result.results.append(
                {**row, "status": "failed", "error": f"{type(error).__name__}: {error}"[:300]}
            )
            continue
        start = record.pop("rss_start_bytes")
        row.update(status="ok", label=label, threads=used, **record)
        row["throughput_per_s"] = throughput(batch, record)
        row["gb_per_s"] = (nbytes + out_bytes) / (record["p50_ms"] / 1e3) / 1e9 if record["p50_ms"] else None
        row["rss_peak_delta_bytes"] = record["rss_peak_bytes"] - start
        if impl == "avgpool":
            reference = np.array(output, copy=True)
        else:
            row.update(_agreement(np.asarray(output), reference, dtype))
        del output
        result.results.append(row)
    return result
