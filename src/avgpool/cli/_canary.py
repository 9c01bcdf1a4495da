"""``avgpool canary``: judge a candidate version of a served model against its baseline
(``judge``, here), and step its share of traffic up or roll it back (``run``, in `_canary_run`).
"""

from __future__ import annotations

import argparse
from typing import Any

from avgpool.cli._canary_run import add_run
from avgpool.cli._common import emit_table, output_args


def _cmd_judge(args: argparse.Namespace) -> int:
    from avgpool._errors import AvgPoolError
    from avgpool.canary import Policy, judge, sources, verdict_table
    from avgpool.monitor import parse_threshold

    policy = Policy(
        alpha=args.alpha,
        max_looks=args.max_looks,
        max_slowdown=args.max_slowdown,
        min_slowdown_s=args.min_slowdown_s,
        min_requests=args.min_requests,
        min_mirrored=args.min_mirrored,
        min_profiled=args.min_profiled,
        min_top1_agreement=args.min_top1_agreement,
        max_abs_error=args.max_abs_error,
        drift=dict(parse_threshold(t) for t in args.threshold) or None,
    )
    policy.alpha_at(args.look)  # refuse a look past max_looks before reading anything

    def need(*names: str) -> None:
        missing = [f"--{n.replace('_', '-')}" for n in names if getattr(args, n) is None]
        if missing:
            raise AvgPoolError(f"canary judge {args.source_option} needs {' and '.join(missing)}")

    if args.server:
        args.source_option = "--server"
        need("model")
        baseline, candidate, mirror = sources.from_server(args.server, args.model, timeout=args.timeout)
        where = f"{args.server} {args.model}"
    elif args.prometheus:
        args.source_option = "--prometheus"
        need("model", "baseline", "candidate")
        profiles = {}
        if args.profiles:
            from avgpool.monitor import load_profile

            profiles = {v: load_profile(p) for v, p in zip((args.baseline, args.candidate), args.profiles)}
        baseline, candidate, mirror = sources.from_prometheus(
            args.prometheus,
            args.model,
            args.baseline,
            args.candidate,
            args.window,
            profiles=profiles,
            histogram=args.histogram,
            timeout=args.timeout,
        )
        where = f"{args.prometheus} {args.model} over {args.window}"
    else:
        base_prof, cand_prof, base_lat, cand_lat = (None if f == "-" else f for f in args.files)
        mirror = None
        if args.mirror:
            import json

            with open(args.mirror, encoding="utf-8") as f:
                mirror = sources.mirror_from_dict(json.load(f))
        baseline, candidate, mirror = sources.from_files(
            base_prof,
            cand_prof,
            base_lat,
            cand_lat,
            versions=(args.baseline or "baseline", args.candidate or "candidate"),
            mirror=mirror,
        )
        where = "files"
    verdict = judge(baseline, candidate, mirror=mirror, policy=policy, look=args.look)
    title = f"canary judge: {candidate.version} against {baseline.version} ({where})"
    emit_table(verdict.to_dict(), verdict_table(verdict, title), args)
    return verdict.exit_code()


def _add_judge(modes: Any) -> None:
    cmd = modes.add_parser(
        "judge",
        help="pass / marginal / fail of a candidate version against the baseline (exit 0 / 1 / 2)",
        description="Judge a candidate against the baseline on the same window: latency (Mann-Whitney U, "
        "the Hodges-Lehmann shift and its confidence interval against a tolerated slowdown), server errors "
        "(Fisher's exact test), activation drift of the live profiles, outputs of mirrored requests, and "
        "enough data. Tests at look K of N use alpha/N (Bonferroni), so judging every interval does not "
        "inflate false fails. Exit 0 pass, 1 marginal or not enough data, 2 fail (or bad input).",
    )
    source = cmd.add_mutually_exclusive_group(required=True)
    source.add_argument("--server", metavar="URL", help="an avgpool serve --admin with a canary open")
    source.add_argument("--prometheus", metavar="URL", help="a Prometheus scraping the server")
    source.add_argument(
        "--files",
        nargs=4,
        metavar=("BASE.avgprof", "CAND.avgprof", "BASE_LAT", "CAND_LAT"),
        help="two profiles ('-' for none) and two latency logs (seconds, one per line or a JSON list)",
    )
    cmd.add_argument("--model", help="the model name (--server, --prometheus)")
    cmd.add_argument(
        "--baseline", metavar="V", help="the baseline version (--prometheus; a label with --files)"
    )
    cmd.add_argument(
        "--candidate", metavar="V", help="the candidate version (--prometheus; a label with --files)"
    )
    cmd.add_argument("--window", default="10m", help="Prometheus range to judge (default 10m)")
    cmd.add_argument(
        "--histogram",
        default="avgpool_inference_latency_seconds",
        help="the latency histogram Prometheus keeps (default: the model run, as the server's canary "
        "records; avgpool_request_duration_seconds for whole requests)",
    )
    cmd.add_argument(
        "--profiles",
        nargs=2,
        metavar=("BASE.avgprof", "CAND.avgprof"),
        help="activation profiles to judge with --prometheus (Prometheus has none)",
    )
    cmd.add_argument("--mirror", metavar="MIRROR.json", help="with --files: mirrored-request statistics")
    cmd.add_argument("--timeout", type=float, default=10.0, help="seconds per HTTP request (default 10)")
    cmd.add_argument("--look", type=int, default=1, help="which look this is, 1..--max-looks (default 1)")
    policy = cmd.add_argument_group("policy (defaults: avgpool.canary.Policy)")
    policy.add_argument("--max-looks", type=int, default=20, help="looks alpha is spread over (default 20)")
    policy.add_argument("--alpha", type=float, default=0.05, help="false-fail rate over all looks (0.05)")
    policy.add_argument(
        "--max-slowdown", type=float, default=0.10, help="tolerated shift / baseline median (0.10)"
    )
    policy.add_argument(
        "--min-slowdown-s", type=float, default=0.0005, help="tolerated shift, seconds (0.0005)"
    )
    policy.add_argument("--min-requests", type=int, default=200, help="requests per version to judge (200)")
    policy.add_argument(
        "--min-mirrored", type=int, default=100, help="mirrored requests to judge outputs (100)"
    )
    policy.add_argument(
        "--min-profiled", type=int, default=20, help="values per channel to judge activations (20)"
    )
    policy.add_argument("--min-top1-agreement", type=float, default=0.99, help="of mirrored requests (0.99)")
    policy.add_argument("--max-abs-error", type=float, default=1e-4, help="of mirrored outputs (1e-4)")
    policy.add_argument(
        "--threshold", action="append", default=[], metavar="METRIC=WARN:FAIL", help="drift override, or =off"
    )
    output_args(cmd)
    cmd.set_defaults(func=_cmd_judge)


def add_commands(sub: Any) -> None:
    """Add the ``canary`` group to the ``avgpool`` command's subparsers."""
    canary = sub.add_parser(
        "canary",
        help="judge a candidate version of a served model against its baseline; promote or roll it back",
        description="Canaries of models served by avgpool serve.",
    )
    modes = canary.add_subparsers(dest="canary_mode", required=True)
    _add_judge(modes)
    add_run(modes)
