"""``avgpool inspect``: list a model's pooling layers and lint them."""

from __future__ import annotations

import argparse
from typing import Any

from avgpool.cli._common import MODEL_HELP, emit, input_shapes, model_args


def _cmd_inspect(args: argparse.Namespace) -> int:
    from avgpool.inspect import inspect_model

    report = inspect_model(
        args.model, input_shapes(args), target=args.target, disable=args.disable, trust=args.trust_file
    )
    emit(report, args)
    return 1 if report.fails(args.fail_on) else 0


def add_commands(sub: Any) -> None:
    """Add the ``inspect`` subparser to the ``avgpool`` command's subparsers."""
    from avgpool.inspect.lint import RULES, SEVERITIES, TARGETS

    inspect = sub.add_parser(
        "inspect",
        help="the pooling layers of an ONNX or PyTorch model, and lint findings",
        description="List every pooling layer of a model (geometry, shapes, receptive field) and lint it. "
        f"MODEL: {MODEL_HELP}.",
    )
    inspect.add_argument("model")
    inspect.add_argument("--target", "-t", choices=tuple(TARGETS), help="where the model is going")
    inspect.add_argument(
        "--fail-on",
        default="error",
        choices=(*SEVERITIES, "never"),
        help="exit 1 when a finding is at least this severe (default: error)",
    )
    inspect.add_argument("--disable", action="append", default=[], choices=tuple(RULES), metavar="RULE")
    model_args(inspect)
    inspect.set_defaults(func=_cmd_inspect)
