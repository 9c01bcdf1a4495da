"""``avgpool shape``: parse the geometry, call `avgpool.inspect.shape_report`, print it."""

from __future__ import annotations

import argparse
import json
from typing import Any

from avgpool.cli._common import geometry, geometry_args


def _cmd_shape(args: argparse.Namespace) -> int:
    from avgpool.inspect.render import shape_text
    from avgpool.inspect.shape import shape_report

    report = shape_report(args.input_shape, **geometry(args))
    print(json.dumps(report.to_dict(), indent=2) if args.json else shape_text(report))
    return 0


def add_commands(sub: Any) -> None:
    """Add the ``shape`` subparser to the ``avgpool`` command's subparsers."""
    shape = sub.add_parser(
        "shape",
        help="output shape, padding, uncovered cells, and which conventions disagree",
        description="Resolve pooling arguments under one convention and compare them with the others.",
    )
    geometry_args(shape, "e.g. 1x3x224x224 (N, C, ...), or (N, ..., C) with --channels-last")
    shape.add_argument("--json", action="store_true", help="machine-readable output")
    shape.set_defaults(func=_cmd_shape)
