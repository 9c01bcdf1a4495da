"""The ``avgpool study`` subcommand: parse, call `avgpool.study.run_study`, print the table."""

from __future__ import annotations

import argparse
import os
from typing import Any

from avgpool.cli._common import emit_table, output_args, progress, progress_arg


def _cmd_study(args: argparse.Namespace) -> int:
    from avgpool._files import check_directory
    from avgpool.study import SETTINGS, VARIANTS, run_study, study_table

    if os.path.isdir(args.out) or not os.path.lexists(args.out):  # run_study names a file itself
        check_directory(args.out)  # before minutes of training, not after
    setting = "full" if args.full else "fast"
    seeds = SETTINGS[setting].seeds if args.seeds is None else args.seeds
    variants = args.variants
    runs = seeds * len(variants or VARIANTS)
    result = run_study(
        args.out,
        setting,
        seeds=args.seeds,
        epochs=args.epochs,
        variants=variants,
        threads=args.threads,
        subset=args.subset,
        progress=progress(args.progress, f"training {runs} models"),
    )
    data = result.to_dict()
    title, headers, rows, footer = study_table(data)
    report = os.path.join(result.out_dir or "", "report.md")
    others = ", ".join(os.path.basename(f) for f in result.files if not f.endswith("report.md"))
    footer = [*footer, "", f"report: {report} (with {others})"]
    emit_table({**data, "files": result.files}, (title, headers, rows, footer), args)
    return 0


def add_commands(sub: Any) -> None:
    """Add the ``study`` subparser to the ``avgpool`` command's subparsers."""
    from avgpool.study.variants import VARIANTS

    study = sub.add_parser(
        "study",
        help="the pooling trade-off study: a small CNN on scikit-learn's digits, one per downsampling",
        description="Train a small CNN on scikit-learn's digits (shipped with scikit-learn, nothing is "
        "downloaded) with each downsampling choice (average 2x2, max 2x2, blur pool, strided conv) and "
        "a global-average head against a flatten head; report accuracy over seeds, latency, parameters "
        "and activation statistics in a folder (report.md, results.json, PNG plots). "
        "Needs pip install 'avgpool[study]'.",
    )
    size = study.add_mutually_exclusive_group()
    size.add_argument(
        "--fast", action="store_true", help="3 seeds x 15 epochs, about a minute on two cores (the default)"
    )
    size.add_argument(
        "--full", action="store_true", help="5 seeds x 40 epochs, more latency samples: minutes"
    )
    study.add_argument(
        "--out", "-o", default="avgpool-study", metavar="DIR", help="report folder (default ./avgpool-study)"
    )
    study.add_argument("--seeds", type=int, metavar="N", help="seeds 0..N-1 (default: the setting's)")
    study.add_argument("--epochs", type=int, metavar="N", help="epochs per run (default: the setting's)")
    study.add_argument(
        "--variants",
        nargs="+",
        metavar="NAME",
        help=f"which variants, of {', '.join(VARIANTS)} (default: all)",
    )
    study.add_argument(
        "--threads", type=int, default=1, metavar="N", help="torch and avgpool threads (default 1)"
    )
    study.add_argument(
        "--subset", type=int, metavar="N", help="train on the first N training images only (a quick look)"
    )
    output_args(study, "print results.json instead of the table")
    progress_arg(study)
    study.set_defaults(func=_cmd_study)
