"""``avgpool drift``: compare two activation profiles layer by layer; exit 1 on drift."""

from __future__ import annotations

import argparse
import os
from typing import Any

from avgpool.cli._common import emit_table, output_args


def _cmd_drift(args: argparse.Namespace) -> int:
    from avgpool._files import check_outputs
    from avgpool.monitor import Profile, compare, parse_threshold
    from avgpool.monitor.render import drift_table

    thresholds = dict(parse_threshold(t) for t in args.threshold)
    baseline, candidate = Profile.load(args.baseline), Profile.load(args.candidate)
    check_outputs(args.plot, args.prometheus_textfile, directories=[args.tensorboard])
    report = compare(baseline, candidate, thresholds=thresholds, metrics=args.metric, channels=args.channels)
    table = drift_table(report, args.fail_on)
    extra = {}
    if args.plot:
        from avgpool.monitor import plot_drift

        drawn = plot_drift(report, args.plot, top=args.top)
        table[3].append(f"plot: {args.plot} ({', '.join(drawn)})")
        extra["plot"] = {"path": args.plot, "layers": drawn}
    model = args.model_name or os.path.basename(str(candidate.model.get("source", "model")))
    if args.prometheus_textfile:
        from avgpool.monitor import write_textfile

        write_textfile(
            args.prometheus_textfile, candidate, model=model, version=args.model_version, baseline=baseline
        )
        table[3].append(f"prometheus textfile: {args.prometheus_textfile}")
    if args.tensorboard:
        from avgpool.monitor import write_tensorboard

        event = write_tensorboard(args.tensorboard, candidate, baseline=baseline, step=args.step)
        table[3].append(f"tensorboard: {event}")
    emit_table({**report.to_dict(), **extra}, table, args)
    return 1 if report.fails(args.fail_on) else 0


def add_commands(sub: Any) -> None:
    """Add the ``drift`` subparser to the ``avgpool`` command's subparsers."""
    from avgpool.monitor.drift import METRICS, VERDICTS

    drift = sub.add_parser(
        "drift",
        help="compare two activation profiles layer by layer; exit 1 on drift (a CI gate)",
        description="Mean shift, std ratio, PSI, KS, Wasserstein-1 and Jensen-Shannon per layer between a "
        "baseline and a candidate profile, a verdict per layer, and exit 1 when the overall verdict is at "
        "least --fail-on.",
    )
    drift.add_argument("baseline", metavar="BASE")
    drift.add_argument("candidate", metavar="CAND")
    drift.add_argument(
        "--fail-on",
        default="fail",
        choices=(*VERDICTS[1:], "never"),
        help="exit 1 at this verdict (default: fail)",
    )
    drift.add_argument(
        "--threshold", action="append", default=[], metavar="METRIC=WARN:FAIL", help="override, or METRIC=off"
    )
    drift.add_argument(
        "--metric", action="append", choices=METRICS, help="only these metrics decide verdicts (default: all)"
    )
    drift.add_argument("--channels", action="store_true", help="judge every channel too")
    drift.add_argument("--plot", metavar="OUT.png", help="histograms of the most drifted layers")
    drift.add_argument("--top", type=int, default=4, help="layers in the plot (default 4)")
    drift.add_argument(
        "--prometheus-textfile", metavar="OUT.prom", help="write the metrics for node_exporter"
    )
    drift.add_argument("--tensorboard", metavar="LOGDIR", help="write histograms and scalars to TensorBoard")
    drift.add_argument("--step", type=int, default=0, help="TensorBoard step (default 0)")
    drift.add_argument(
        "--model-name", help="the model label in exported metrics (default: candidate file name)"
    )
    drift.add_argument("--model-version", default="", help="the version label in exported metrics")
    output_args(drift)
    drift.set_defaults(func=_cmd_drift)
