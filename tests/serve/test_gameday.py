"""The game day: ``avgpool serve`` with a baseline, a real Prometheus and a real Alertmanager
routing to a webhook, all on 127.0.0.1. Normal traffic fires nothing; shifted activations send
the drift ticket to the ML route; injected latency pages SRE; recovery resolves both.

The harness itself (tests/serve/gameday.py) is checked first on a static exporter and a trivial
rule, so a broken Prometheus/Alertmanager set-up fails there and not as a missing page.
"""

from __future__ import annotations

import time

import pytest

from tests.serve import gameday

pytestmark = pytest.mark.gameday

MISSING = gameday.missing_binaries()
needs_binaries = pytest.mark.skipif(
    bool(MISSING),
    reason=(
        f"GAME DAY SKIPPED: {', '.join(MISSING)} not installed "
        "(make test installs Debian's prometheus and prometheus-alertmanager with apt-get)"
    ),
)


def routed_config(webhook: str, routes: dict[str, str], *, interval: str = "1s") -> dict:
    """An Alertmanager configuration sending alerts labelled team=<key> to ``webhook``/<path>,
    grouped and repeated at ``interval`` so a test sees notifications within seconds."""
    return {
        "route": {
            "receiver": "default",
            "group_by": ["alertname"],
            "group_wait": interval,
            "group_interval": interval,
            "repeat_interval": "1h",
            "routes": [{"receiver": team, "matchers": [f'team="{team}"']} for team in routes],
        },
        "receivers": [{"name": "default", "webhook_configs": [{"url": f"{webhook}/default"}]}]
        + [
            {"name": team, "webhook_configs": [{"url": f"{webhook}{path}", "send_resolved": True}]}
            for team, path in routes.items()
        ],
    }


@needs_binaries
def test_harness_fires_routes_and_resolves_a_trivial_alert():
    from prometheus_client import CollectorRegistry, Gauge, start_http_server

    registry = CollectorRegistry()
    probe = Gauge("gameday_probe_value", "set by the test", registry=registry)
    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    exporter = f"127.0.0.1:{server.server_address[1]}"
    rules = {
        "groups": [
            {
                "name": "harness",
                "rules": [
                    {
                        "alert": "ProbeHigh",
                        "expr": "gameday_probe_value > 0",
                        "labels": {"team": "ml", "severity": "ticket"},
                        "annotations": {"runbook_url": "https://example.invalid/probe"},
                    }
                ],
            }
        ]
    }
    start = time.monotonic()
    try:
        with (
            gameday.WebhookReceiver() as hook,
            gameday.Alertmanager(routed_config(hook.url, {"ml": "/ml", "sre": "/sre"})) as am,
            gameday.Prometheus(
                gameday.prometheus_config({"probe": [exporter]}, alertmanager=am.url), [rules]
            ) as prom,
        ):
            gameday.wait_until(lambda: prom.targets_up("probe"), 15, "the exporter scraped")
            assert prom.value("gameday_probe_value") == 0.0
            assert prom.alerts() == []

            probe.set(1)
            note = hook.wait_for(
                lambda n: n.path == "/ml" and n.alert("ProbeHigh", "firing"), 20, "firing at /ml"
            )
            alert = note.alert("ProbeHigh")
            assert alert["labels"]["severity"] == "ticket"
            assert alert["annotations"]["runbook_url"] == "https://example.invalid/probe"
            assert [n.path for n in hook.notifications] == ["/ml"] * len(hook.notifications)
            fired = time.monotonic()

            probe.set(0)
            hook.wait_for(lambda n: n.path == "/ml" and n.status == "resolved", 20, "resolved at /ml")
            assert not any(n.path != "/ml" for n in hook.notifications)
            resolved = time.monotonic()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
    print(f"harness: fired after {fired - start:.1f} s, resolved {resolved - fired:.1f} s later")
