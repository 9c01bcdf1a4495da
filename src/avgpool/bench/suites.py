"""The benchmark's suites run from command-line options: `make bench` and ``avgpool bench suite``.

- *synthetic* (``cases.toml``): large inputs (49-64 MiB) against every peer and the bandwidth
  floor, avgpool in a child process per case and round;
- *layers* (``layers.toml``, `avgpool.bench.layers`): every pooling layer of real CNNs at
  batch 1 and 32, forward and forward+backward, avgpool in this process;
- *overhead* (`avgpool.bench.overhead`): per-call cost on tiny inputs;
- *dask* (`avgpool.bench.dask_suite`): a chunked Dask array's time over the NumPy op's on
  arrays that fit in memory (skipped, saying so, without dask).

`add_suite_args` declares the options both front ends take and `run_suites` runs what they
select, into one results dict (`avgpool.bench.report.write_results` writes it).
"""

from __future__ import annotations

import argparse
import fnmatch
import os
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from avgpool._errors import AvgPoolError

__all__ = ["SUITES", "add_suite_args", "check_suite_args", "run_suites"]

SUITES = ("synthetic", "layers", "overhead", "dask")
_MIB = 1 << 20


def add_suite_args(p: argparse.ArgumentParser) -> None:
    """The options that choose and tune the suites (not the output: each front end has its own)."""
    p.add_argument("--quick", action="store_true", help="a smoke run: small inputs, few cases and calls")
    p.add_argument(
        "--suite", choices=(*SUITES, "all"), default="all", help="which suite(s) to run (default all)"
    )
    p.add_argument(
        "--cases",
        help="comma-separated patterns matched against the synthetic and real-layer cases' keys or ids "
        "(avg3x3*, max*/cl, */b1/*)",
    )
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="threads for every library")
    p.add_argument(
        "--repeats", type=int, help="timed calls per measurement (default 10, layers 1000; quick 3, 200)"
    )
    p.add_argument(
        "--warmup", type=int, help="untimed calls before timing (default: one pass over the inputs)"
    )
    p.add_argument("--rounds", type=int, help="measurements per library, in turns (default 3, quick 1)")
    p.add_argument(
        "--budget",
        type=float,
        help="seconds of timed calls per measurement (default 3, layers 0.1; quick 1, 0.05)",
    )
    p.add_argument(
        "--scale",
        choices=("full", "quick", "tiny"),
        help="synthetic and Dask input sizes (default full, quick: quick)",
    )
    p.add_argument("--llc-mib", type=float, help="last-level cache size (default: sysfs, at least 32)")
    p.add_argument("--bandwidth-mib", type=float, help="streaming-rate array size (default 4x the cache)")
    p.add_argument("--in-process", action="store_true", help="measure avgpool in this process (synthetic)")


def check_suite_args(args: argparse.Namespace) -> str | None:
    """Why the options cannot run (for ``parser.error``), or None."""
    if args.rounds is not None and args.rounds < 1:
        return f"--rounds must be >= 1, got {args.rounds}"
    if args.warmup is not None and args.warmup < 1:
        return f"--warmup must be >= 1 (the first call is always untimed), got {args.warmup}"
    if args.threads < 1:
        return f"--threads must be >= 1, got {args.threads}"
    return None


def _select(cases: Sequence[Any], patterns: Sequence[str] | None) -> list[Any]:
    if not patterns:
        return list(cases)
    return [c for c in cases if any(fnmatch.fnmatch(c.key, p) or fnmatch.fnmatch(c.id, p) for p in patterns)]


def run_suites(
    args: argparse.Namespace, log: Callable[[str], None] = lambda _: None, models: Any = None
) -> dict[str, Any]:
    """Run the suites ``args`` selects (see `add_suite_args`); the results of all of them.
    ``models`` gives the overhead suite its whole models (`avgpool.bench.overhead.ModelPairs`).

    Raises
    ------
    AvgPoolError
        ``--cases`` matches no case of the selected suites.
    """
    from avgpool.bench.cases import standard_cases
    from avgpool.bench.layers import layer_cases, run_layers, suite_settings
    from avgpool.bench.overhead import OverheadSettings, run_overhead
    from avgpool.bench.report import detect_llc_bytes, machine_facts
    from avgpool.bench.runner import Settings, measure_floor, run_benchmark

    suites = SUITES if args.suite == "all" else (args.suite,)
    quick = args.quick
    scale = args.scale or ("quick" if quick else "full")
    patterns = [p.strip() for p in args.cases.split(",") if p.strip()] if args.cases else None
    cases = _select(standard_cases(scale), patterns) if "synthetic" in suites else []
    layers: list[Any] = []
    if "layers" in suites:
        table = suite_settings()
        if quick:
            batches = table["quick_batches"]
            layers = layer_cases(batches, batches[-1:], keys=table["quick_layers"])
        else:
            layers = layer_cases()
        layers = _select(layers, patterns)
    if patterns and not cases and not layers and not {"overhead", "dask"} & set(suites):
        raise AvgPoolError(f"--cases matches no case of the {'/'.join(suites)} suite(s), got {args.cases!r}")
    llc = int(args.llc_mib * _MIB) if args.llc_mib else max(detect_llc_bytes() or 0, 32 * _MIB)
    settings = Settings(
        threads=args.threads,
        llc_bytes=llc,
        rotate_bytes=4 * _MIB if quick else 2 * llc,
        repeats=args.repeats or (3 if quick else 10),
        warmup=args.warmup,
        rounds=args.rounds or (1 if quick else 3),
        budget_s=args.budget if args.budget is not None else (1.0 if quick else 3.0),
        isolate=not (quick or args.in_process),
        bandwidth_repeats=2 if quick else 5,
        bandwidth_bytes=int(args.bandwidth_mib * _MIB)
        if args.bandwidth_mib
        else (64 * _MIB if quick else None),
    )
    results: dict[str, Any] = {"machine": machine_facts(args.threads)}
    bandwidth = measure_floor(settings, log) if cases or layers else None
    if cases:
        results.update(run_benchmark(cases, settings, log=log, bandwidth=bandwidth))
        results["settings"]["scale"] = scale
    if layers:
        # small inputs: many calls per measurement, bounded by a time budget; 2 to 4 input copies
        # of 64 MiB in all: a small layer's input stays in cache, as the layer before it left it
        # in a model, and a batch-32 one of hundreds of MiB is not made a third time
        layer_settings = replace(
            settings,
            rotate_bytes=4 * _MIB if quick else 64 * _MIB,
            repeats=args.repeats or (200 if quick else 1000),
            budget_s=args.budget if args.budget is not None else (0.05 if quick else 0.1),
            max_rotation=4,
            isolate=False,
        )
        log(f"real layers: {len(layers)} cases")
        results["layers"] = run_layers(layers, layer_settings, bandwidth, log=log)
    if "overhead" in suites:
        overhead = OverheadSettings(
            threads=args.threads,
            repeats=300 if quick else 20000,
            budget_s=0.1 if quick else 1.0,
            warmup=5 if quick else 50,
        )
        results["overhead"] = run_overhead(overhead, log=log, models=models)
    if "dask" in suites:
        from avgpool.bench.dask_suite import DaskSettings, run_dask

        dask_settings = DaskSettings(
            threads=args.threads,
            repeats=args.repeats or (5 if quick else 20),
            budget_s=args.budget if args.budget is not None else (0.5 if quick else 3.0),
            scale=scale,
        )
        results["dask"] = run_dask(dask_settings, log=log)
    if bandwidth is not None:
        results["bandwidth"] = bandwidth.to_dict()
    results["suites"] = [name for name in SUITES if name in suites]
    return results
