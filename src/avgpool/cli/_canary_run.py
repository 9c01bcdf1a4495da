"""``avgpool canary run``: step a candidate version's share of traffic up on a live server while
the judge passes, roll it back at the first fail, promote it at the end.

Exit codes: 0 promoted, 1 undecided (no decision within --max-looks), 2 rolled back.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_run", "parse_steps"]


def parse_steps(text: str) -> tuple[float, ...]:
    """'5,25,50,100' (percent) as shares (0.05, 0.25, 0.5, 1.0); an argparse error otherwise."""
    try:
        percents = [float(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--steps must look like 5,25,50,100 (percent), got {text!r}"
        ) from None
    return tuple(round(p / 100.0, 6) for p in percents)


def _plain(value: Any) -> Any:
    """A NumPy scalar or array in the judge's statistics as plain JSON."""
    return value.tolist() if hasattr(value, "tolist") else str(value)


def _write(path: str, document: dict[str, Any]) -> None:
    text = json.dumps(document, indent=2, default=_plain) + "\n"
    if path == "-":
        sys.stdout.write(text)
        return
    # a reader never sees half a log: write beside it, then rename over it
    target = Path(path)
    partial = target.with_name(target.name + ".partial")
    partial.write_text(text)
    partial.replace(target)


def _stage(mode: str, share: float) -> str:
    return "shadow" if mode == "shadow" else f"share {share * 100:g}%"


def _look_line(record: dict[str, Any]) -> str:
    head = f"look {record['look']:>2}  {_stage(record['mode'], record['share'])}  {record['verdict']}"
    reasons = [r for r in record["reasons"] if not r.split(":", 1)[0].endswith(" (pass)")]
    return head + "".join(f"\n    {r}" for r in reasons)


def _cmd_run(args: argparse.Namespace) -> int:
    from avgpool.canary.run import run_canary

    # with --json -, stdout carries the JSON log alone, so the running commentary goes to stderr
    out = sys.stderr if args.json == "-" else sys.stdout
    looks: list[dict[str, Any]] = []

    def log(event: str, record: dict[str, Any]) -> None:
        if event == "look":
            looks.append(record)
            print(_look_line(record), file=out, flush=True)
            if args.json not in (None, "-"):
                _write(args.json, {"outcome": None, "looks": looks})
        elif record["action"] != "reset":
            body = record["body"]
            print(f"{record['action']}: {_stage(body['mode'], body['share'])}", file=out, flush=True)

    policy = None
    if args.alpha is not None or args.min_requests is not None:
        from avgpool.canary.judge import Policy

        given = {"alpha": args.alpha, "min_requests": args.min_requests}
        policy = Policy(**{k: v for k, v in given.items() if v is not None})
    result = run_canary(
        args.url,
        args.model,
        args.baseline,
        args.candidate,
        steps=args.steps,
        interval=args.interval,
        max_looks=args.max_looks,
        min_looks_per_step=args.min_looks_per_step,
        policy=policy,
        log=log,
        hold_undecided=args.hold_undecided,
        shadow_first=args.shadow_first,
    )
    print(f"{result.outcome}: {result.reason}", file=out, flush=True)
    if args.json is not None:
        _write(args.json, result.to_dict())
    return result.exit_code


def add_run(group: Any) -> None:
    """Add ``run`` to the ``avgpool canary`` group's subparsers."""
    cmd = group.add_parser(
        "run",
        help="step a candidate's share of traffic up while the judge passes; roll back at the first fail",
        description="Open a split canary on a live avgpool serve --admin, judge it every --interval "
        "seconds, step the candidate's share up (a fresh judging window per step) while the judge "
        "passes, set the share to 0 at the first fail and to 100% when the last step below 100% "
        "passes. It sends no traffic: the users (or a load generator) do. Exit codes: 0 promoted, "
        "1 undecided after --max-looks, 2 rolled back.",
    )
    cmd.add_argument("url", help="the server, e.g. http://127.0.0.1:8000 (admin routes answer loopback only)")
    cmd.add_argument("--model", required=True, help="the model name")
    cmd.add_argument("--baseline", required=True, metavar="VERSION", help="the version serving now")
    cmd.add_argument("--candidate", required=True, metavar="VERSION", help="the version to canary")
    cmd.add_argument(
        "--steps",
        type=parse_steps,
        default=(0.05, 0.25, 0.5, 1.0),
        metavar="P,P,...",
        help="the candidate's percent of unversioned traffic per step, rising (default 5,25,50,100); "
        "100 is the promotion, never judged (the baseline would get no traffic)",
    )
    cmd.add_argument(
        "--interval", type=float, default=10.0, metavar="S", help="seconds between looks (default 10)"
    )
    cmd.add_argument(
        "--max-looks",
        type=int,
        default=20,
        metavar="N",
        help="looks in all before giving up undecided; the judge's sequential correction spreads its "
        "false-alarm rate over them (default 20)",
    )
    cmd.add_argument(
        "--min-looks-per-step",
        type=int,
        default=1,
        metavar="N",
        help="passing looks in a row needed to leave a step (default 1)",
    )
    cmd.add_argument(
        "--alpha",
        type=float,
        metavar="A",
        help="the judge's false-fail rate over all --max-looks looks (default: avgpool.canary.Policy's)",
    )
    cmd.add_argument(
        "--min-requests",
        type=int,
        metavar="N",
        help="requests per version in a step's window before it is judged (default: "
        "avgpool.canary.Policy's); at a 5%% step the candidate gets 1 request in 20",
    )
    cmd.add_argument(
        "--shadow-first",
        action="store_true",
        help="judge a shadow stage first: the candidate runs every request beside the baseline, which "
        "answers them all, so outputs are compared before any user sees the candidate",
    )
    cmd.add_argument(
        "--hold-undecided",
        action="store_true",
        help="when undecided, leave the share as it is (default: send traffic back to the baseline)",
    )
    cmd.add_argument(
        "--json",
        metavar="LOG",
        help="write the JSON log (every look's verdict and reasons, every admin call) to LOG, "
        "rewritten after each look; - for stdout",
    )
    cmd.set_defaults(func=_cmd_run)
