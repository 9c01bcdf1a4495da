"""`make bench`: avgpool against PyTorch, ONNX Runtime, OpenCV and SciPy, and the bandwidth floor.

    python benchmarks/run.py                    # every suite (minutes), results/latest.{json,md}
    python benchmarks/run.py --quick            # every suite, tiny: small inputs, a few cases, in-process
    python benchmarks/run.py --suite layers     # one suite: synthetic, layers, overhead (default all)
    python benchmarks/run.py --cases 'avg3x3*,global7x7/cl' --threads 1

Suites: *synthetic* (cases.toml: large inputs, the bandwidth floor), *layers* (layers.toml: every
pooling layer of real CNNs at batch 1 and 32, forward and forward+backward), *overhead* (per-call
cost: avgpool.nn vs torch.nn, NumPy ops, the study's models at batch 1). ``--cases`` patterns
select synthetic and real-layer cases alike (``max3x3*``, ``*/b1/cl``).

The harness lives in `avgpool.bench`; this script only parses arguments and writes files.
"""

from __future__ import annotations

import argparse
import fnmatch
import os
import sys
from dataclasses import replace
from pathlib import Path

from avgpool.bench import (
    Settings,
    detect_llc_bytes,
    machine_facts,
    render_markdown,
    run_benchmark,
    standard_cases,
    write_results,
)
from avgpool.bench.layers import layer_cases, run_layers, suite_settings
from avgpool.bench.overhead import OverheadSettings, run_overhead
from avgpool.bench.report import check_results_dir
from avgpool.bench.runner import measure_floor

SUITES = ("synthetic", "layers", "overhead")

MIB = 1 << 20


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small inputs, few repeats, avgpool in-process")
    p.add_argument(
        "--suite", choices=(*SUITES, "all"), default="all", help="which suite(s) to run (default all)"
    )
    p.add_argument(
        "--cases", help="comma-separated patterns matched against case keys or ids (avg3x3*, max*/cl)"
    )
    p.add_argument("--out", default=str(Path(__file__).parent / "results"), help="output directory")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="threads for every library")
    p.add_argument("--repeats", type=int, help="timed calls per measurement (default 10, quick 3)")
    p.add_argument(
        "--warmup", type=int, help="untimed calls before timing (default: one pass over the inputs)"
    )
    p.add_argument("--rounds", type=int, help="measurements per library, in turns (default 3, quick 1)")
    p.add_argument("--budget", type=float, help="seconds of timed calls per measurement (default 3, quick 1)")
    p.add_argument(
        "--scale", choices=("full", "quick", "tiny"), help="input sizes (default full, quick: quick)"
    )
    p.add_argument("--llc-mib", type=float, help="last-level cache size (default: sysfs, at least 32)")
    p.add_argument("--bandwidth-mib", type=float, help="streaming-rate array size (default 4x the cache)")
    p.add_argument("--in-process", action="store_true", help="measure avgpool in this process")
    args = p.parse_args(argv)
    if args.rounds is not None and args.rounds < 1:
        p.error(f"--rounds must be >= 1, got {args.rounds}")
    if args.warmup is not None and args.warmup < 1:
        p.error(f"--warmup must be >= 1 (the first call is always untimed), got {args.warmup}")
    return args


def _select(cases: list, patterns: list[str] | None) -> list:
    if not patterns:
        return cases
    return [c for c in cases if any(fnmatch.fnmatch(c.key, p) or fnmatch.fnmatch(c.id, p) for p in patterns)]


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    suites = SUITES if args.suite == "all" else (args.suite,)
    scale = args.scale or ("quick" if args.quick else "full")
    patterns = [p.strip() for p in args.cases.split(",") if p.strip()] if args.cases else None
    cases = _select(standard_cases(scale), patterns) if "synthetic" in suites else []
    layers: list = []
    if "layers" in suites:
        table = suite_settings()
        if args.quick:
            layers = layer_cases(
                table["quick_batches"], table["quick_batches"][-1:], keys=table["quick_layers"]
            )
        else:
            layers = layer_cases()
        layers = _select(layers, patterns)
    if patterns and not cases and not layers:
        print(f"no case matches {args.cases!r}", file=sys.stderr)
        return 2
    check_results_dir(args.out)
    llc = int(args.llc_mib * MIB) if args.llc_mib else max(detect_llc_bytes() or 0, 32 * MIB)
    settings = Settings(
        threads=args.threads,
        llc_bytes=llc,
        rotate_bytes=4 * MIB if args.quick else 2 * llc,
        repeats=args.repeats or (3 if args.quick else 10),
        warmup=args.warmup,
        rounds=args.rounds or (1 if args.quick else 3),
        budget_s=args.budget if args.budget is not None else (1.0 if args.quick else 3.0),
        isolate=not (args.quick or args.in_process),
        bandwidth_repeats=2 if args.quick else 5,
        bandwidth_bytes=int(args.bandwidth_mib * MIB)
        if args.bandwidth_mib
        else (64 * MIB if args.quick else None),
    )

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    results: dict = {"machine": machine_facts(args.threads)}
    bandwidth = measure_floor(settings, log) if cases or layers else None
    if cases:
        results.update(run_benchmark(cases, settings, log=log, bandwidth=bandwidth))
        results["settings"]["scale"] = scale
    if layers:
        # small inputs: many calls per measurement, bounded by a time budget; at most 4 input
        # copies, so a small layer's input is in cache as it is in a model
        layer_settings = replace(
            settings,
            repeats=args.repeats or (200 if args.quick else 2000),
            budget_s=args.budget if args.budget is not None else (0.05 if args.quick else 0.15),
            max_rotation=4,
            isolate=False,
        )
        log(f"real layers: {len(layers)} cases")
        results["layers"] = run_layers(layers, layer_settings, bandwidth, log=log)
    if "overhead" in suites:
        quick = args.quick
        results["overhead"] = run_overhead(
            OverheadSettings(
                threads=args.threads,
                repeats=300 if quick else 20000,
                budget_s=0.1 if quick else 1.0,
                warmup=5 if quick else 50,
            ),
            log=log,
        )
    if bandwidth is not None:
        results["bandwidth"] = bandwidth.to_dict()
    results["suites"] = [name for name in SUITES if name in suites]
    json_path, md_path = write_results(results, args.out)
    print(render_markdown(results))
    log(f"wrote {json_path} and {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
