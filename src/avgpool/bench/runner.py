"""Run cases: the bandwidth floor, then for each case avgpool and every peer, with ratios.

For each case the runner builds ``rotation`` copies of the input (enough to exceed
``rotate_bytes``, by default twice the last-level cache) that all peers share, measures
avgpool (in a child process per case by default, see `avgpool.bench._child`), then each peer
that applies, and checks every output against avgpool's for the same input (or against the
first peer's when avgpool failed) at float32 tolerance, so a peer that computes something else
is flagged instead of silently compared.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from avgpool.bench.cases import Case, make_inputs, rotation_count
from avgpool.bench.floor import Bandwidth, floor_seconds, measure_bandwidth
from avgpool.bench.peers import PEERS, Peer
from avgpool.bench.timing import time_calls

__all__ = ["AGREE_TOL", "Settings", "measure_floor", "run_benchmark", "run_case"]

#: Outputs must agree with avgpool's to this (float32) tolerance to count as the same op.
AGREE_TOL = {"rtol": 1e-5, "atol": 1e-5}
_MIB = 1 << 20


@dataclass(frozen=True)
class Settings:
    """How a run measures; recorded in the results."""

    threads: int
    llc_bytes: int
    rotate_bytes: int
    repeats: int = 10
    #: untimed calls before timing, the first included; None: one pass over the rotation (each
    #: input once), stopped after ``budget_s`` seconds. Pages left idle for a while come back
    #: slowly on a virtual machine (the 2x2x2/2 case measured 7.8 ms on inputs that sat through
    #: a 25 s JIT compile, 4.3 ms once each had been used), so every library's inputs get one use
    #: before its clock starts.
    warmup: int | None = None
    budget_s: float = 3.0
    #: every library is measured this many times, in turns (avgpool, the peers, avgpool, ...);
    #: a cell keeps the lowest round median. This host slows down in bursts of seconds (one
    #: case measured 4.4 ms alone and 20 ms in a full run, all ten calls alike), longer than a
    #: measurement, and noise only ever adds time. Three rounds: with two, four full runs of
    #: the same kernels still put 15x15/1 NCHW at 12.5, 20.6, 13.1 and 18.1 ms.
    rounds: int = 3
    isolate: bool = True  # avgpool in a child process per case and round (own JIT cache, memory limit)
    child_timeout_s: float = 300.0
    child_memory_bytes: int = 8 << 30
    #: at most this many input copies (None: as many as ``rotate_bytes`` needs); a real layer's
    #: input was just written by the layer before it, so small ones stay in cache as in a model
    max_rotation: int | None = None
    bandwidth_repeats: int = 5
    bandwidth_bytes: int | None = None
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def warmup_calls(settings: Settings, rotation: int) -> int:
    """Untimed calls before timing (the first call included): ``settings.warmup``, or ``rotation``."""
    return rotation if settings.warmup is None else settings.warmup


def _spec(case: Case, settings: Settings, rotation: int) -> dict[str, Any]:
    return {
        "case": case.to_dict(),
        "rotation": rotation,
        "seed": settings.seed,
        "repeats": settings.repeats,
        "warmup": warmup_calls(settings, rotation),
        "budget_s": settings.budget_s,
        "memory_bytes": settings.child_memory_bytes,
    }


def _avgpool_in_child(
    case: Case, settings: Settings, rotation: int, want_output: bool = True, jit_cache: str | None = None
) -> tuple[dict, np.ndarray | None]:
    """avgpool's timing in a child process whose Numba cache is ``jit_cache`` (a fresh,
    empty one if None): the case's first round compiles into it, later rounds load from it."""
    import avgpool

    with tempfile.TemporaryDirectory(prefix="avgpool-bench-") as tmp:
        out_path = str(Path(tmp, "out.npy")) if want_output else ""  # "": the child saves nothing
        spec = {**_spec(case, settings, rotation), "out": out_path}
        env = {
            **os.environ,
            "NUMBA_CACHE_DIR": jit_cache or str(Path(tmp, "numba-cache")),
            "NUMBA_NUM_THREADS": str(settings.threads),
            "PYTHONPATH": os.pathsep.join(
                [str(Path(avgpool.__file__).parents[1]), *filter(None, [os.environ.get("PYTHONPATH")])]
            ),
        }
        try:
            done = subprocess.run(
                [sys.executable, "-m", "avgpool.bench._child"],
                input=json.dumps(spec),
                capture_output=True,
                text=True,
                env=env,
                timeout=settings.child_timeout_s,
            )
        except subprocess.TimeoutExpired:
            return {"status": "failed", "error": f"timeout after {settings.child_timeout_s:.0f} s"}, None
        lines = done.stdout.strip().splitlines()
        if done.returncode != 0 or not lines:
            err = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
            return {"status": "failed", "error": f"child process: {err}"[:300]}, None
        record = json.loads(lines[-1])
        out = np.load(out_path) if out_path and record["status"] == "ok" else None
        return record, out


def _avgpool_in_process(
    case: Case,
    settings: Settings,
    rotation: int,
    want_output: bool = True,
    jit_cache: str | None = None,
    inputs: Sequence[np.ndarray] | None = None,
) -> tuple[dict, np.ndarray | None]:
    """avgpool's timing in this process (and its Numba cache: ``jit_cache`` is unused, there
    to match `_avgpool_in_child`), on ``inputs`` when given (the ones the peers use)."""
    import numba

    from avgpool._settings import set_num_threads
    from avgpool.bench._child import measure_avgpool

    set_num_threads(min(settings.threads, numba.config.NUMBA_NUM_THREADS))
    return measure_avgpool(case, _spec(case, settings, rotation), inputs)


def _agreement(y: np.ndarray, reference: np.ndarray | None) -> dict[str, Any]:
    if reference is None:
        return {"agrees": None}
    if y.shape != reference.shape:
        return {"agrees": False, "max_abs_diff": None, "note": f"shape {y.shape} != {reference.shape}"}
    diff = np.abs(y.astype(np.float64) - reference)
    finite = diff[np.isfinite(diff)]
    return {
        "agrees": bool(np.allclose(y, reference, equal_nan=True, **AGREE_TOL)),
        "max_abs_diff": float(finite.max()) if finite.size else 0.0,
    }


def _measure_peer(
    peer: Peer, case: Case, arrays: Sequence[np.ndarray], settings: Settings
) -> tuple[dict[str, Any], np.ndarray | None]:
    reason = peer.applies(case)
    if reason is not None:
        return {"status": "n/a", "reason": reason}, None
    try:
        prepared = peer.prepare(case, arrays, settings.threads)
        try:
            first = prepared.to_numpy(prepared.call(prepared.inputs[0]))  # also the first warm-up
            inputs = list(prepared.inputs)
            timing = time_calls(
                prepared.call,
                inputs[1:] + inputs[:1],
                repeats=settings.repeats,
                warmup=max(0, warmup_calls(settings, len(inputs)) - 1),
                budget_s=settings.budget_s,
                warmup_budget_s=settings.budget_s,
            )
        finally:
            prepared.close()
    except Exception as error:  # a peer that breaks is one cell of the table
        return {"status": "failed", "error": f"{type(error).__name__}: {error}"[:300]}, None
    return {"status": "ok", "label": prepared.label, "threads": prepared.threads, **timing.summary()}, first


#: The fields of a record that describe its timing (a later, faster round replaces them).
_TIMING = ("median_ms", "p10_ms", "p90_ms", "min_ms", "max_ms", "n", "warmup", "budget_limited", "samples_ms")


def _keep_faster(kept: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """The record to keep after another round: the timing of the round with the lower median,
    the other fields (agreement, first call) from the first round that ran; every round's median
    in ``round_medians_ms``.

    Examples
    --------
    >>> a = _keep_faster({}, {"status": "ok", "median_ms": 5.0, "n": 10, "agrees": True})
    >>> b = _keep_faster(a, {"status": "ok", "median_ms": 4.0, "n": 9, "agrees": False})
    >>> b["median_ms"], b["n"], b["agrees"], b["round_medians_ms"]
    (4.0, 9, True, [5.0, 4.0])
    """
    if new.get("status") != "ok":
        return kept or new
    if kept.get("status") != "ok":
        return {**new, "round_medians_ms": [new["median_ms"]]}
    merged = {**kept, "round_medians_ms": [*kept["round_medians_ms"], new["median_ms"]]}
    if new["median_ms"] < kept["median_ms"]:
        merged.update({k: new[k] for k in _TIMING if k in new})
    return merged


def run_case(
    case: Case,
    settings: Settings,
    bandwidth: Bandwidth,
    peers: Sequence[Peer] = PEERS,
    log: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    """One case: avgpool, each peer, the floor, the ratios and the agreement checks."""
    rotation = rotation_count(case, settings.rotate_bytes)
    if settings.max_rotation is not None:
        rotation = max(1, min(rotation, settings.max_rotation))
    floor_ms = floor_seconds(case.bytes_in, case.bytes_out, bandwidth) * 1e3
    measure = _avgpool_in_child if settings.isolate else _avgpool_in_process
    avg: dict[str, Any] = {}
    results: dict[str, dict[str, Any]] = {}
    reference, checked_against = None, None
    # one Numba cache per case: the first round's first call is the compile (reported), and
    # later rounds spend seconds loading the kernels, not tens of seconds compiling them again
    jit = tempfile.TemporaryDirectory(prefix="avgpool-bench-jit-") if settings.isolate else nullcontext()
    # in this process, one set of inputs serves every library and round (making a case's
    # hundreds of MiB again each round costs more than timing it); a child makes its own
    shared = None if settings.isolate else make_inputs(case, rotation, settings.seed)
    with jit as jit_cache:
        for _round in range(max(1, settings.rounds)):
            if shared is None:
                record, output = measure(case, settings, rotation, reference is None, jit_cache)
            else:
                record, output = _avgpool_in_process(case, settings, rotation, inputs=shared)
            avg = _keep_faster(avg, {"label": "avgpool", "threads": settings.threads, **record})
            if reference is None and output is not None:
                reference, checked_against = output, "avgpool"
            log(f"  avgpool      {_brief(record)}")
            arrays = make_inputs(case, rotation, settings.seed) if shared is None else shared
            for peer in peers:
                record, output = _measure_peer(peer, case, arrays, settings)
                if output is not None and results.get(peer.name, {}).get("status") != "ok":
                    # checked once, in the first round that ran (a later round only adds a median)
                    record.update(_agreement(output, reference))
                    if reference is None:  # avgpool failed: the first peer that ran is the yardstick
                        reference, checked_against = output.astype(np.float64), peer.name
                results[peer.name] = _keep_faster(results.get(peer.name, {}), record)
                log(f"  {peer.name:<12} {_brief(record)}")
            del arrays
    del shared
    for record in (avg, *results.values()):
        if record.get("status") == "ok":
            record["ratio_floor"] = record["median_ms"] / floor_ms
            record["per_output_ns"] = record["median_ms"] * 1e6 / case.outputs
    timed = {name: r for name, r in results.items() if r.get("status") == "ok"}
    best = min(timed, key=lambda name: timed[name]["median_ms"]) if timed else None
    row: dict[str, Any] = {
        "case": case.to_dict(),
        "rotation": rotation,
        "working_set_bytes": rotation * case.bytes_in,
        "floor_ms": floor_ms,
        "avgpool": avg,
        "peers": results,
        "checked_against": checked_against,
        "best_peer": best,
        "best_peer_ms": timed[best]["median_ms"] if best else None,
        "avgpool_vs_best": (avg["median_ms"] / timed[best]["median_ms"])
        if best and avg["status"] == "ok"
        else None,
    }
    return row


def _brief(record: dict[str, Any]) -> str:
    if record.get("status") == "ok":
        flag = " (budget)" if record.get("budget_limited") else ""
        first = f", first call {record['first_call_ms']:.1f} ms" if "first_call_ms" in record else ""
        return f"{record['median_ms']:.3f} ms median of {record['n']}{flag}{first}"
    return f"{record.get('status')}: {record.get('reason') or record.get('error')}"


def measure_floor(settings: Settings, log: Callable[[str], None] = lambda _: None) -> Bandwidth:
    """The streaming rates the floor is computed from, measured as ``settings`` says."""
    bandwidth = measure_bandwidth(
        settings.threads, settings.llc_bytes, settings.bandwidth_repeats, settings.bandwidth_bytes
    )
    log(
        f"streaming: read {bandwidth.read_bytes_per_s / 1e9:.1f} GB/s, write "
        f"{bandwidth.write_bytes_per_s / 1e9:.1f} GB/s ({bandwidth.array_bytes / _MIB:.0f} MiB arrays)"
    )
    return bandwidth


def run_benchmark(
    cases: Sequence[Case],
    settings: Settings,
    peers: Sequence[Peer] = PEERS,
    log: Callable[[str], None] = lambda _: None,
    bandwidth: Bandwidth | None = None,
) -> dict[str, Any]:
    """Measure the floor (unless ``bandwidth`` is given), then every case; the result is what
    `avgpool.bench.report` writes."""
    from avgpool.bench.report import machine_facts, summarize

    log(f"threads: {settings.threads} (avgpool/numba, torch, onnxruntime intra-op, cv2; scipy is 1)")
    if bandwidth is None:
        bandwidth = measure_floor(settings, log)
    rows = []
    for case in cases:
        log(f"{case.id}  {case.title}  {case.layout} {'x'.join(map(str, case.array_shape))}")
        rows.append(run_case(case, settings, bandwidth, peers, log))
    results = {
        "machine": machine_facts(settings.threads),
        "settings": settings.to_dict(),
        "bandwidth": bandwidth.to_dict(),
        "peers": [p.name for p in peers],
        "cases": rows,
    }
    results["summary"] = summarize(results)
    return results
