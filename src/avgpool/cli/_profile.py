"""``avgpool profile``: activation statistics at a model's pooling layers, saved as a profile file."""

from __future__ import annotations

import argparse
import functools
from typing import Any

from avgpool.cli._common import emit_table, output_args, progress, progress_arg, trust_file_arg


def _cmd_profile(args: argparse.Namespace) -> int:
    from avgpool._files import check_outputs
    from avgpool.monitor import Profile, iter_batches, load_inputs, profile_model
    from avgpool.monitor.render import profile_table

    check_outputs(args.output)  # before the model runs, not after
    like = Profile.load(args.baseline) if args.baseline else None
    batches = iter_batches(load_inputs(args.inputs), args.batch_size)
    run = profile_model
    if args.scheduler:
        from avgpool.monitor.distributed import profile_distributed

        run = functools.partial(profile_distributed, scheduler=args.scheduler)
    profile = run(
        args.model,
        batches,
        layers=args.layers,
        like=like,
        max_buckets=args.max_buckets,
        channel_hist=args.channel_hist,
        progress=progress(args.progress, f"profiling {len(batches)} batches"),
        trust=args.trust_file,
    )
    profile.save(args.output)
    emit_table(profile.to_dict(), profile_table(profile, args.output), args)
    return 0


def add_commands(sub: Any) -> None:
    """Add the ``profile`` subparser to the ``avgpool`` command's subparsers."""
    from avgpool.monitor.profile import DEFAULT_MAX_BUCKETS

    profile = sub.add_parser(
        "profile",
        help="activation statistics at a model's pooling layers, saved as a profile file",
        description="Run a model (ONNX, .pt2, TorchScript, .pt or package.module:factory) on sample inputs "
        "and save per-layer, per-channel activation statistics at its pooling layers (or --layers) "
        "to a .avgprof file.",
    )
    profile.add_argument("model")
    profile.add_argument(
        "--inputs", required=True, metavar="FILE.npz", help="model inputs by name, samples on axis 0"
    )
    profile.add_argument("--output", "-o", required=True, metavar="OUT.avgprof")
    profile.add_argument(
        "--layers",
        nargs="+",
        action="extend",
        metavar="NAME",
        help="module / node / tensor names (default: pooling)",
    )
    profile.add_argument(
        "--baseline",
        metavar="BASE.avgprof",
        help="take the histogram resolution and --channel-hist from a baseline profile (profiles "
        "compare without it)",
    )
    profile.add_argument("--batch-size", type=int, default=32)
    profile.add_argument(
        "--max-buckets",
        type=int,
        default=DEFAULT_MAX_BUCKETS,
        help=f"histogram buckets per sign: more keep a finer scale over a wider range (default "
        f"{DEFAULT_MAX_BUCKETS})",
    )
    profile.add_argument("--channel-hist", action="store_true", help="also keep one histogram per channel")
    profile.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="profile over a dask.distributed cluster: the scheduler's address (tcp://host:8786), or "
        "local[:N] for N worker processes on this machine; the workers need the model at the same path",
    )
    trust_file_arg(profile)
    progress_arg(profile)
    output_args(profile)
    profile.set_defaults(func=_cmd_profile)
