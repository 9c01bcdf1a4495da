"""Run the canary trials of docs/canary.md and print their table.

Each trial serves a pair of the demo's models (tests/canary/variants.py) as two versions of one
model on 127.0.0.1, opens a canary between them, sends the demo's images one per request at a
bounded rate and asks ``avgpool.canary.judge`` for a verdict every ``--look-every`` requests.
The identical candidate runs ``--repeats`` times in each mode and every look counts (its false-fail
rate is the share of its trials with a fail at any look); each other candidate runs
``--bad-repeats`` times. Run from the repository root::

    PYTHONPATH=src python scripts/canary_trials.py                # about 3 minutes on 2 cores
    PYTHONPATH=src python scripts/canary_trials.py --repeats 3 --bad-repeats 1 --json trials.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.canary: the model family and the trial runner


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=10, help="trials of the identical candidate per mode")
    parser.add_argument("--bad-repeats", type=int, default=3, help="trials of each other candidate")
    parser.add_argument("--rate", type=float, default=100.0, help="requests per second at most")
    parser.add_argument("--share", type=float, default=0.5, help="the candidate's share in split mode")
    parser.add_argument("--look-every", type=int, default=25, help="requests between two looks")
    parser.add_argument("--max-looks", type=int, default=20, help="looks per trial (the judge's max_looks)")
    parser.add_argument("--only", action="append", help="run only these variants (name or name/mode)")
    parser.add_argument("--json", type=Path, help="also write every trial's looks here")
    args = parser.parse_args(argv)

    from tests.canary import variants
    from tests.canary.trials import activation_notes, run_trial, table

    started = time.monotonic()
    trials = []
    with tempfile.TemporaryDirectory(prefix="avgpool-canary-trials-") as tmp:
        family = variants.build(Path(tmp))
        for key, variant in family.items():
            if args.only and not ({key, variant.name} & set(args.only)):
                continue
            repeats = args.repeats if variant.expected == "pass" else args.bad_repeats
            for seed in range(repeats):
                trial = run_trial(
                    variant,
                    seed=seed,
                    rate=args.rate,
                    share=args.share,
                    look_every=args.look_every,
                    max_looks=args.max_looks,
                    timeout=max(60.0, 3 * args.max_looks * args.look_every / args.rate),
                )
                print(
                    trial.summary() + (f"; errors: {trial.errors}" if trial.errors else ""), file=sys.stderr
                )
                trials.append(trial)
    print(table(trials))
    print()
    for note in activation_notes(trials):
        print(f"- {note}")
    print(
        f"{len(trials)} trials in {time.monotonic() - started:.0f} s: {args.rate:g} requests/s, batch 1, "
        f"a look every {args.look_every} requests, at most {args.max_looks} looks, "
        f"split share {args.share:g}; "
        f"{os.cpu_count()} cores, Python {platform.python_version()}"
    )
    if args.json:
        doc = [
            {**asdict(t), "variant": {**asdict(t.variant), "base": None, "candidate": None}, "ok": t.ok}
            for t in trials
        ]
        args.json.write_text(json.dumps(doc, indent=1))
    # a false fail of the identical candidate is a measurement; a bad candidate let through is not
    return 0 if all(t.ok for t in trials if t.variant.expected == "fail") else 1


if __name__ == "__main__":
    sys.exit(main())
