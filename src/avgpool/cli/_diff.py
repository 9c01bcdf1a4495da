"""``avgpool diff``: the pooling layers added, removed or changed between two models."""

from __future__ import annotations

import argparse
from typing import Any

from avgpool.cli._common import emit, input_shapes, model_args


def _cmd_diff(args: argparse.Namespace) -> int:
    from avgpool.inspect import ModelError, diff, read_model

    shapes = input_shapes(args)
    old = read_model(args.old, shapes, trust=args.trust_file)
    new = read_model(args.new, shapes, trust=args.trust_file)
    if not old.layers and not new.layers:
        raise ModelError(f"neither {old.source} nor {new.source} has pooling layers")
    allowed = args.allow if args.strict is False else []
    report = diff(old, new, allowed=allowed)
    emit(report, args)
    return 1 if report.disallowed() else 0


def add_commands(sub: Any) -> None:
    """Add the ``diff`` subparser to the ``avgpool`` command's subparsers."""
    from avgpool.inspect.diff import CATEGORIES, DEFAULT_ALLOWED

    diff = sub.add_parser(
        "diff",
        help="pooling layers added, removed or changed between two models",
        description="Match the pooling layers of OLD and NEW by name, then by position, and list what "
        "changed; exit 1 on changes not allowed.",
    )
    diff.add_argument("old")
    diff.add_argument("new")
    diff.add_argument(
        "--allow",
        action="append",
        default=list(DEFAULT_ALLOWED),
        choices=CATEGORIES,
        help=f"a change category that does not fail (default: {', '.join(DEFAULT_ALLOWED)})",
    )
    diff.add_argument(
        "--strict", action="store_true", help="fail on every difference, even convention and name"
    )
    model_args(diff)
    diff.set_defaults(func=_cmd_diff)
