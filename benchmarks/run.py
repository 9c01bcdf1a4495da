"""`make bench`: avgpool against PyTorch, ONNX Runtime, OpenCV and SciPy, and the bandwidth floor.

    python benchmarks/run.py                    # every suite (minutes), results/latest.{json,md}
    python benchmarks/run.py --quick            # every suite, tiny: small inputs, a few cases, in-process
    python benchmarks/run.py --suite layers     # one suite: synthetic, layers, overhead, dask (default all)
    python benchmarks/run.py --cases 'avg3x3*,global7x7/cl' --threads 1

Suites: *synthetic* (cases.toml: large inputs, the bandwidth floor), *layers* (layers.toml: every
pooling layer of real CNNs at batch 1 and 32, forward and forward+backward), *overhead* (per-call
cost: avgpool.nn vs torch.nn, NumPy ops, the study's models at batch 1), *dask* (the NumPy op
against the same op on a chunked Dask array, threaded scheduler: the ratio). ``--cases`` patterns
select synthetic and real-layer cases alike (``max3x3*``, ``*/b1/cl``).

The harness lives in `avgpool.bench` (`avgpool.bench.suites` runs the suites); this script only
parses arguments and writes files.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from avgpool._errors import AvgPoolError
from avgpool.bench import render_markdown, write_results
from avgpool.bench.report import check_results_dir
from avgpool.bench.suites import add_suite_args, check_suite_args, run_suites
from avgpool.cli._bench import study_models


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_suite_args(p)
    p.add_argument("--out", default=str(Path(__file__).parent / "results"), help="output directory")
    args = p.parse_args(argv)
    problem = check_suite_args(args)
    if problem:
        p.error(problem)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    check_results_dir(args.out)

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    try:
        results = run_suites(args, log, models=study_models)
    except AvgPoolError as error:
        print(error, file=sys.stderr)
        return 2
    json_path, md_path = write_results(results, args.out)
    print(render_markdown(results))
    log(f"wrote {json_path} and {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
