"""Write the deployment files of `avgpool serve` from their definitions in Python.

Run from the repository root after changing `avgpool.serve.alerting` or
`avgpool.serve.dashboards`::

    PYTHONPATH=src python scripts/make_deploy.py [--root .] [--check]

Files written (a test fails when the committed ones differ from what this writes):

* ``deploy/prometheus/avgpool-serve-rules.yml``: recording and alert rules (``rules()``)
* ``deploy/alertmanager/alertmanager.yml``: routes, inhibition, receivers (``alertmanager()``)
* ``deploy/grafana/avgpool-{executive,oncall,debug}.json``: dashboards (``dashboards()``)

``--check`` writes nothing and exits 1 when a file is missing or differs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from avgpool.serve.alerting import alertmanager, rules, to_yaml
from avgpool.serve.dashboards import dashboards

RULES_HEADER = """\
Prometheus rules for `avgpool serve`. Written by scripts/make_deploy.py from
avgpool.serve.alerting.rules(): edit that, not this file.
severity=page wakes someone; severity=ticket files work for office hours; team routes it
(ml: model activations, sre: latency, errors, memory, the server). Objective: P99 under 250 ms,
model-error budget 0.1%. Check: promtool check rules; promtool test rules avgpool-serve-rules.test.yml
Runbooks: docs/runbooks/
avgpool-alerts.yml beside this file is for avgpool.monitor's exporters without a server; do not
load both against one server: their drift alerts would fire twice."""

ALERTMANAGER_HEADER = """\
Alertmanager configuration for `avgpool serve`. Written by scripts/make_deploy.py from
avgpool.serve.alerting.alertmanager(): edit that, not this file.
The webhook URLs below (http://127.0.0.1:5001/<receiver>) are PLACEHOLDERS: point each receiver
at your paging relay (ml-engineers-page, sre-page: PagerDuty, Opsgenie) and your ticket relay
(ml-engineers, sre), with alertmanager(webhook_base=...) or alertmanager(urls={...}), or replace
webhook_configs with pagerduty_configs / opsgenie_configs here.
Check: amtool check-config alertmanager.yml
       amtool config routes test --config.file=alertmanager.yml team=ml severity=ticket"""


def outputs() -> dict[str, str]:
    """Path relative to the repository root -> file text."""
    files = {
        "deploy/prometheus/avgpool-serve-rules.yml": to_yaml(rules(), RULES_HEADER),
        "deploy/alertmanager/alertmanager.yml": to_yaml(alertmanager(), ALERTMANAGER_HEADER),
    }
    for key, board in dashboards().items():
        files[f"deploy/grafana/avgpool-{key}.json"] = json.dumps(board, indent=2) + "\n"
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path.cwd(), help="repository root (default: .)")
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 on a difference")
    args = parser.parse_args(argv)
    stale = []
    for rel, text in outputs().items():
        path = args.root / rel
        if path.exists() and path.read_text() == text:
            continue
        stale.append(rel)
        if not args.check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    for rel in stale:
        print(("differs: " if args.check else "wrote: ") + rel)
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
