"""``avgpool verify``: every pooling node of an ONNX model, run in ONNX Runtime, against the reference."""

from __future__ import annotations

import argparse
from typing import Any

from avgpool.cli._common import emit, input_shapes, model_args


def _cmd_verify(args: argparse.Namespace) -> int:
    from avgpool.inspect import verify

    report = verify(
        args.model, inputs=args.inputs, random=args.random, input_shapes=input_shapes(args), seed=args.seed
    )
    emit(report, args)
    return 0 if report.passed else 1


def add_commands(sub: Any) -> None:
    """Add the ``verify`` subparser to the ``avgpool`` command's subparsers."""
    verify = sub.add_parser(
        "verify",
        help="run an ONNX model in ONNX Runtime and check every pooling node against the reference",
        description="Expose every pooling node's input and output, run ONNX Runtime, recompute each node "
        "with avgpool's reference under ONNX semantics; exit 1 if any node differs.",
    )
    verify.add_argument("model")
    feed = verify.add_mutually_exclusive_group()
    feed.add_argument("--inputs", metavar="FILE.npz", help="the model's inputs, by name")
    feed.add_argument(
        "--random", type=int, default=1, metavar="N", help="N seeded random input sets (default 1)"
    )
    verify.add_argument("--seed", type=int, default=0)
    model_args(verify, torch_files=False)
    verify.set_defaults(func=_cmd_verify)
