"""deploy/: alert rules (promtool when installed, structure always) and the Grafana dashboard;
every metric they query is one the exporter produces."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from avgpool.monitor import Profile, exposition

client = pytest.importorskip("prometheus_client")

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
RULES = DEPLOY / "prometheus" / "avgpool-alerts.yml"
DASHBOARD = DEPLOY / "grafana" / "avgpool-dashboard.json"
METRIC = re.compile(r"\bavgpool_[a-z_]+")


def exported_names() -> set[str]:
    """Every sample name the exporters write, with per-channel and latency metrics."""
    base = Profile()
    base.update("l", np.random.default_rng(0).standard_normal((50, 2)))
    text = exposition(base, model="m", baseline=base, per_channel=True)
    registry = client.CollectorRegistry()
    labels = ["model", "version"]
    client.Histogram("avgpool_inference_latency_seconds", "", labels, registry=registry).labels(
        "m", ""
    ).observe(1)
    client.Counter("avgpool_inference_samples", "", labels, registry=registry).labels("m", "").inc()
    text += client.generate_latest(registry).decode()
    from prometheus_client.parser import text_string_to_metric_families

    names = set()
    for family in text_string_to_metric_families(text):
        names |= {s.name for s in family.samples}
        names |= {
            f"{family.name}_{suffix}" for suffix in ("bucket", "sum", "count") if family.type == "histogram"
        }
    return names


def rules() -> list[dict]:
    yaml = pytest.importorskip("yaml", reason="PyYAML not installed: the rules' structure is not parsed")
    doc = yaml.safe_load(RULES.read_text())
    return [r for g in doc["groups"] for r in g["rules"]]


def test_alert_rules_query_only_exported_metrics():
    lines = RULES.read_text().splitlines()
    text = "\n".join(x for x in lines if not x.strip().startswith(("#", "summary:", "description:")))
    recorded = set(re.findall(r"record: (\S+)", text))
    assert len(recorded) == 2
    for name in recorded:
        text = text.replace(name, "")
    used = set(METRIC.findall(text))
    assert used == exported_names() & used
    assert {"avgpool_activation_psi", "avgpool_inference_latency_seconds_bucket"} <= used


def test_alert_rules_structure():
    all_rules = rules()
    alerts = {r["alert"]: r for r in all_rules if "alert" in r}
    recorded = {r["record"] for r in all_rules if "record" in r}
    severities = {name: r["labels"]["severity"] for name, r in alerts.items()}
    assert severities == {
        "AvgpoolInferenceLatencyP99High": "page",
        "AvgpoolActivationDriftSevere": "page",
        "AvgpoolActivationNonFinite": "page",
        "AvgpoolThroughputDegraded": "ticket",
        "AvgpoolActivationDriftMild": "ticket",
    }
    for name, r in alerts.items():
        assert re.fullmatch(r"\d+[smh]", r["for"]), name
        assert {"summary", "description", "runbook_url"} <= set(r["annotations"]), name
    for r in alerts.values():
        assert any(name in r["expr"] for name in recorded) or METRIC.search(r["expr"])
    assert "0.25" in alerts["AvgpoolActivationDriftSevere"]["expr"]  # PSI fail threshold
    assert "0.1" in alerts["AvgpoolActivationDriftMild"]["expr"]  # PSI warn threshold


@pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool not installed (Debian: apt install prometheus)"
)
def test_promtool_checks_and_unit_tests_the_rules():
    check = subprocess.run(
        ["promtool", "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60
    )
    assert check.returncode == 0, check.stdout + check.stderr
    unit = subprocess.run(
        ["promtool", "test", "rules", "avgpool-alerts.test.yml"],
        cwd=RULES.parent,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert unit.returncode == 0, unit.stdout + unit.stderr


def test_grafana_dashboard_rows_and_queries():
    dash = json.loads(DASHBOARD.read_text())
    panels = dash["panels"]
    rows = [p["title"] for p in panels if p["type"] == "row"]
    assert rows == ["Executive", "On-call", "Debug"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    produced = exported_names()
    queries = [t["expr"] for p in panels if p["type"] != "row" for t in p["targets"]]
    assert len(queries) >= 12
    for q in queries:
        assert METRIC.findall(q) and set(METRIC.findall(q)) <= produced, q
    # every panel lies inside the 24-column grid, below its row
    for p in panels:
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24 and g["w"] > 0 and g["h"] > 0
    names = {v["name"] for v in dash["templating"]["list"]}
    assert names == {"datasource", "model", "version", "layer"}
