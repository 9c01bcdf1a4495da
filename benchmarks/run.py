"""`make bench`: avgpool against PyTorch, ONNX Runtime, OpenCV and SciPy, and the bandwidth floor.

    python benchmarks/run.py                    # the full run (minutes), results/latest.{json,md}
    python benchmarks/run.py --quick            # small inputs, in-process, well under a minute
    python benchmarks/run.py --cases 'avg3x3*,global7x7/cl' --threads 1

The harness lives in `avgpool.bench`; this script only parses arguments and writes files.
"""

from __future__ import annotations

import argparse
import fnmatch
import os
import sys
from pathlib import Path

from avgpool.bench import (
    Settings,
    detect_llc_bytes,
    render_markdown,
    run_benchmark,
    standard_cases,
    write_results,
)

MIB = 1 << 20


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small inputs, few repeats, avgpool in-process")
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


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    scale = args.scale or ("quick" if args.quick else "full")
    cases = standard_cases(scale)
    if args.cases:
        patterns = [p.strip() for p in args.cases.split(",") if p.strip()]
        cases = [
            c for c in cases if any(fnmatch.fnmatch(c.key, p) or fnmatch.fnmatch(c.id, p) for p in patterns)
        ]
        if not cases:
            print(f"no case matches {args.cases!r}", file=sys.stderr)
            return 2
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

    results = run_benchmark(cases, settings, log=log)
    results["settings"]["scale"] = scale
    json_path, md_path = write_results(results, args.out)
    print(render_markdown(results))
    log(f"wrote {json_path} and {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
