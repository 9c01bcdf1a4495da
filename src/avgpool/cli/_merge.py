"""``avgpool merge``: profiles made apart (replicas, workers, runs) combined into one."""

from __future__ import annotations

import argparse
from typing import Any

from avgpool.cli._common import emit_table, output_args


def _cmd_merge(args: argparse.Namespace) -> int:
    from avgpool._files import check_outputs
    from avgpool.monitor import Profile, merge
    from avgpool.monitor.render import profile_table

    check_outputs(args.output)
    profile = merge([Profile.load(path) for path in args.profiles])
    profile.save(args.output)
    emit_table(profile.to_dict(), profile_table(profile, args.output), args)
    return 0


def add_commands(sub: Any) -> None:
    """Add the ``merge`` subparser to the ``avgpool`` command's subparsers."""
    merge = sub.add_parser(
        "merge",
        help="combine profiles of one model made apart (replicas, workers, runs) into one",
        description="Merge .avgprof files of the same model into one profile: counts, histograms, "
        "min and max equal one pass over all their batches, mean and std to float64 rounding. "
        "Profiles of different models (their sha256 differ) are refused.",
    )
    merge.add_argument("profiles", nargs="+", metavar="PROFILE.avgprof")
    merge.add_argument("--output", "-o", required=True, metavar="OUT.avgprof")
    output_args(merge)
    merge.set_defaults(func=_cmd_merge)
