"""Alert rules, Alertmanager routing, dashboards and runbooks of `avgpool serve`: promtool and
amtool on what the code writes, every queried metric one the server exports, every runbook link
a file, and the committed deploy/ files equal to what scripts/make_deploy.py writes."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from avgpool._errors import AvgPoolError
from avgpool.serve import alerting, dashboards
from avgpool.serve._telemetry import METRICS

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
RULES = DEPLOY / "prometheus" / "avgpool-serve-rules.yml"
ALERTMANAGER = DEPLOY / "alertmanager" / "alertmanager.yml"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
AMTOOL = shutil.which("amtool") or "/usr/bin/amtool"
needs_promtool = pytest.mark.skipif(
    not Path(PROMTOOL).exists(),
    reason="PROMTOOL NOT INSTALLED: the rules are not checked by Prometheus (Debian: apt install prometheus)",
)
needs_amtool = pytest.mark.skipif(
    not Path(AMTOOL).exists(),
    reason="AMTOOL NOT INSTALLED: the Alertmanager config is not checked "
    "(Debian: apt install prometheus-alertmanager)",
)
ACTIVATION_ALERTS = {"AvgpoolActivationDrift", "AvgpoolActivationNonFinite"}
FAST = {"scale": 1 / 120, "min_window": 4.0}  # what a game day uses: 10m -> 5s, windows >= 4s


def all_rules(doc: dict) -> list[dict]:
    return [r for g in doc["groups"] for r in g["rules"]]


def alerts(doc: dict) -> dict[str, dict]:
    return {r["alert"]: r for r in all_rules(doc) if "alert" in r}


def run(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=60, **kwargs)


# -- metric names in PromQL -------------------------------------------------------------------

_PROMQL_WORDS = {
    *("by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool"),
    *("and", "or", "unless", "sum", "min", "max", "avg", "count", "group", "stddev", "stdvar"),
    *("topk", "bottomk", "quantile", "count_values", "inf", "nan"),
}


def metric_names(expr: str) -> set[str]:
    """The series names a PromQL expression (Grafana variables allowed) selects."""
    e = re.sub(r'"(?:\\.|[^"\\])*"', '""', expr)
    e = re.sub(r"\{[^}]*\}", " ", e)
    e = re.sub(r"\[[^\]]*\]", " ", e)
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    e = re.sub(r"\$\w+", " ", e)
    names = set()
    for m in re.finditer(r"(?<![\w:.])[A-Za-z_:][\w:]*", e):
        if e[m.end() :].lstrip().startswith("(") or m.group() in _PROMQL_WORDS:
            continue  # a function or an aggregation
        names.add(m.group())
    return names


def exported() -> set[str]:
    names = set(METRICS)
    for name, kind in METRICS.items():
        if kind == "histogram":
            names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    return names


def unknown_metrics(expr: str, recorded: set[str]) -> set[str]:
    """Names in ``expr`` that are neither exported, nor recorded by our rules, nor ``ALERTS``."""
    return {n for n in metric_names(expr) if n not in exported() | recorded | {"ALERTS"}}


def test_metric_names_finds_series_and_skips_functions_labels_and_variables():
    expr = (
        'histogram_quantile(0.99, sum by (model, le) (rate(avgpool_x_bucket{model=~"$model"}[5m]))) '
        "> 1.5 * max by (model) (rec:avgpool_y:p99_1h offset 1d) or vector(0) and on (model) bogus"
    )
    assert metric_names(expr) == {"avgpool_x_bucket", "rec:avgpool_y:p99_1h", "bogus"}
    assert unknown_metrics("rate(avgpool_bogus_total[5m])", set()) == {"avgpool_bogus_total"}
    assert unknown_metrics("rate(avgpool_requests_total[5m])", set()) == set()


def test_every_rule_and_panel_queries_only_exported_metrics():
    doc = alerting.rules()
    recorded = {r["record"] for r in all_rules(doc) if "record" in r}
    used = set()
    for r in all_rules(doc):
        assert unknown_metrics(r["expr"], recorded) == set(), r
        used |= metric_names(r["expr"])
    boards = dashboards.dashboards()
    for key, board in boards.items():
        for panel in board["panels"]:
            for target in panel.get("targets", []):
                assert unknown_metrics(target["expr"], recorded) == set(), (key, target["expr"])
                used |= metric_names(target["expr"])
        for var in board["templating"]["list"]:
            if var["type"] == "query":
                series = re.search(r"label_values\(([a-z_]+)", var["definition"]).group(1)
                assert series in exported(), var
    # the rules and panels watch what the server is for, not a token subset of it
    assert {
        "avgpool_request_duration_seconds_bucket",
        "avgpool_request_errors_total",
        "avgpool_requests_total",
        "avgpool_process_resident_memory_bytes",
        "avgpool_memory_limit_bytes",
        "avgpool_activation_drift_status",
        "avgpool_activation_psi",
        "avgpool_activation_histogram_bucket",
        "avgpool_telemetry_dropped_total",
        "avgpool_deploy_window",
        "avgpool_model_startup_seconds",
    } <= used


# -- alert rules ------------------------------------------------------------------------------


def test_every_alert_has_severity_team_signal_and_a_runbook_that_exists():
    rules = alerts(alerting.rules())
    assert tuple(rules) == alerting.ALERT_NAMES
    for name, r in rules.items():
        labels, notes = r["labels"], r["annotations"]
        assert labels["severity"] == ("none" if name == "AvgpoolDeployWindow" else labels["severity"])
        assert labels["severity"] in {"page", "ticket"} | (
            {"none"} if name == "AvgpoolDeployWindow" else set()
        )
        assert labels["team"] == ("ml" if name in ACTIVATION_ALERTS else "sre"), name
        assert labels["signal"], name
        assert notes["summary"] and notes["description"], name
        assert re.fullmatch(r"docs/runbooks/[a-z-]+\.md", notes["runbook_url"]), name
        assert (ROOT / notes["runbook_url"]).is_file(), notes["runbook_url"]
        # one alert per model version (memory is per process: no model label exists there)
        expected = "by (job, instance)" if name == "AvgpoolMemoryNearLimit" else "by (model, version)"
        assert expected in r["expr"], name
    severities = {name: r["labels"]["severity"] for name, r in rules.items()}
    assert severities["AvgpoolLatencyP99High"] == "page"
    assert severities["AvgpoolErrorRateHigh"] == "page"
    assert severities["AvgpoolMemoryNearLimit"] == "page"
    assert severities["AvgpoolActivationDrift"] == "ticket"
    assert severities["AvgpoolLatencyP99Regression"] == "ticket"
    assert severities["AvgpoolTelemetryDropping"] == "ticket"
    # every runbook is linked from some alert or from the index
    linked = {Path(r["annotations"]["runbook_url"]).stem for r in rules.values()}
    index = (ROOT / "docs" / "runbooks" / "README.md").read_text()
    for name in alerting.RUNBOOKS:
        assert (ROOT / "docs" / "runbooks" / f"{name}.md").is_file()
        assert name in linked or f"({name}.md)" in index, name


def test_runbook_base_prefixes_every_link():
    base = "https://github.com/example/avgpool/blob/main/docs/runbooks/"
    rules = alerts(alerting.rules(runbook_base=base))
    assert rules["AvgpoolActivationDrift"]["annotations"]["runbook_url"] == base + "drift-triage.md"
    assert all(r["annotations"]["runbook_url"].startswith(base) for r in rules.values())


def test_burn_rate_alerts_follow_the_multiwindow_recipe():
    rules = alerts(alerting.rules(error_budget=0.001))
    prefix = "model_version:avgpool_request_errors:ratio_rate"
    for name, factor, windows, severity in (
        ("AvgpoolErrorBudgetBurnFast", 14.4, ("1h", "5m"), "page"),
        ("AvgpoolErrorBudgetBurnMedium", 6, ("6h", "30m"), "page"),
        ("AvgpoolErrorBudgetBurnSlow", 1, ("3d", "6h"), "ticket"),
    ):
        r = rules[name]
        assert r["labels"]["severity"] == severity
        for w in windows:
            assert f"({prefix}{w}) > {factor * 0.001:g}" in r["expr"], (name, r["expr"])
        assert "\nand\n" in r["expr"]


def test_scaled_rules_shrink_every_window_and_keep_the_minimum():
    nominal, fast = alerting.rules(), alerting.rules(**FAST)
    windows = re.compile(r"\[([^\]]+)\]")
    for before, after in zip(all_rules(nominal), all_rules(fast)):
        seen = windows.findall(after["expr"])
        assert len(seen) == len(windows.findall(before["expr"]))
        for nominal_w, w in zip(windows.findall(before["expr"]), seen):
            seconds = alerting.parse_duration(w)
            assert seconds >= FAST["min_window"], after
            assert seconds == max(alerting.parse_duration(nominal_w) / 120, FAST["min_window"])
        if "for" in before:
            assert alerting.parse_duration(after["for"]) == pytest.approx(
                alerting.parse_duration(before["for"]) / 120, abs=1e-3
            )
    fast_alerts = alerts(fast)
    assert fast_alerts["AvgpoolLatencyP99High"]["for"] == "5s"  # 10m / 120
    assert "offset 12m" in fast_alerts["AvgpoolLatencyP99Regression"]["expr"]  # 1d / 120
    assert "[36m]" in "".join(r["expr"] for r in all_rules(fast))  # 3d / 120
    assert "scaled by" in fast_alerts["AvgpoolActivationDrift"]["annotations"]["description"]
    big = alerting.rules(1 / 120, min_window=60)
    assert min(alerting.parse_duration(w) for r in all_rules(big) for w in windows.findall(r["expr"])) == 60


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"scale": 0}, "scale must be a number > 0, got 0"),
        ({"error_budget": 0.5}, "error_budget must be a number > 0 and < 0.0694"),
        ({"memory_ratio": 1.5}, "memory_ratio must be a number > 0 and < 1, got 1.5"),
        ({"min_window": True}, "min_window must be a number > 0, got True"),
    ],
)
def test_rules_reject_out_of_range_arguments(kwargs, message):
    with pytest.raises(AvgPoolError, match=re.escape(message)):
        alerting.rules(**kwargs)


def test_durations_render_and_parse():
    assert alerting.duration(90) == "1m30s"
    assert alerting.duration(2.5) == "2s500ms"
    assert alerting.duration(3 * 86400 / 120) == "36m"
    assert alerting.duration(0) == "0s"
    assert alerting.parse_duration("1h30m") == 5400
    assert alerting.parse_duration("250ms") == 0.25
    with pytest.raises(AvgPoolError, match=r"duration must be like 5m, 1h30m or 250ms, got '5 minutes'"):
        alerting.parse_duration("5 minutes")


@needs_promtool
def test_promtool_checks_the_rules_and_passes_their_unit_tests(tmp_path):
    fast = tmp_path / "fast.yml"
    fast.write_text(alerting.to_yaml(alerting.rules(**FAST)))
    check = run([PROMTOOL, "check", "rules", str(RULES), str(fast)])
    assert check.returncode == 0, check.stdout + check.stderr
    assert check.stdout.count(f"SUCCESS: {len(all_rules(alerting.rules()))} rules found") == 2
    unit = run([PROMTOOL, "test", "rules", "avgpool-serve-rules.test.yml"], cwd=RULES.parent)
    assert unit.returncode == 0, unit.stdout + unit.stderr
    assert "SUCCESS" in unit.stdout


@needs_promtool
def test_scaled_rules_fire_within_seconds(tmp_path):
    """At the game day's scale a P99 breach pages and drift tickets within seconds."""
    (tmp_path / "fast.yml").write_text(alerting.to_yaml(alerting.rules(**FAST)))
    series = 'avgpool_request_duration_seconds_bucket{model="m",version="1",le="%s"}'
    drift = 'avgpool_activation_drift_status{model="m",version="1",layer="/gap"}'
    test = {
        "rule_files": ["fast.yml"],
        "evaluation_interval": "1s",
        "tests": [
            {
                "interval": "1s",
                "input_series": [
                    {"series": series % "0.25", "values": "0x30"},
                    {"series": series % "0.5", "values": "0+10x30"},
                    {"series": series % "+Inf", "values": "0+10x30"},
                    {"series": drift, "values": "2x30"},
                ],
                "alert_rule_test": [
                    {"eval_time": "3s", "alertname": "AvgpoolLatencyP99High", "exp_alerts": []},
                    {"eval_time": "3s", "alertname": "AvgpoolActivationDrift", "exp_alerts": []},
                    *(
                        {
                            "eval_time": "12s",
                            "alertname": name,
                            "exp_alerts": [
                                {
                                    "exp_labels": {
                                        "severity": severity,
                                        "team": team,
                                        "signal": signal,
                                        "model": "m",
                                        "version": "1",
                                    },
                                    "exp_annotations": alerts(alerting.rules(**FAST))[name]["annotations"]
                                    | {"summary": summary},
                                }
                            ],
                        }
                        for name, severity, team, signal, summary in (
                            (
                                "AvgpoolLatencyP99High",
                                "page",
                                "sre",
                                "latency",
                                "m 1: P99 request latency 497.5ms over 250 ms",
                            ),
                            (
                                "AvgpoolActivationDrift",
                                "ticket",
                                "ml",
                                "drift",
                                "m 1: pooling activations drift from the baseline (status 2: 1 warn, 2 fail)",
                            ),
                        )
                    ),
                ],
            }
        ],
    }
    (tmp_path / "fast.test.yml").write_text(json.dumps(test))
    unit = run([PROMTOOL, "test", "rules", "fast.test.yml"], cwd=tmp_path)
    assert unit.returncode == 0, unit.stdout + unit.stderr


# -- Alertmanager -----------------------------------------------------------------------------


@needs_amtool
def test_amtool_accepts_the_committed_and_the_scaled_config(tmp_path):
    fast = tmp_path / "fast.yml"
    fast.write_text(alerting.to_yaml(alerting.alertmanager(1 / 120, webhook_base="http://127.0.0.1:9")))
    check = run([AMTOOL, "check-config", str(ALERTMANAGER), str(fast)])
    assert check.returncode == 0, check.stdout + check.stderr
    assert check.stdout.count("SUCCESS") == 2
    assert check.stdout.count(" - 2 inhibit rules") == 2


@needs_amtool
@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        (
            "alertname=AvgpoolActivationDrift team=ml severity=ticket signal=drift model=m version=1",
            "ml-engineers",
        ),
        ("alertname=AvgpoolLatencyP99Regression team=sre severity=ticket model=m version=1", "sre"),
        ("alertname=AvgpoolLatencyP99High team=sre severity=page model=m version=1", "sre-page"),
        ("alertname=Something team=ml severity=page", "ml-engineers-page"),
        ("alertname=AvgpoolDeployWindow team=sre severity=none model=m version=1", "null"),
    ],
)
def test_amtool_routes_alerts_by_team_and_severity(labels, receiver):
    out = run([AMTOOL, "config", "routes", "test", f"--config.file={ALERTMANAGER}", *labels.split()])
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.strip() == receiver


def test_alertmanager_inhibits_by_deploy_window_and_by_page_over_ticket():
    config = alerting.alertmanager()
    assert config["route"]["group_by"] == ["alertname", "model", "version"]
    deploy, page = config["inhibit_rules"]
    assert deploy["source_matchers"] == ['alertname="AvgpoolDeployWindow"']
    assert 'model=~".+"' in deploy["target_matchers"]
    assert deploy["equal"] == ["model", "version"]
    assert (page["source_matchers"], page["target_matchers"]) == (['severity="page"'], ['severity="ticket"'])
    assert page["equal"] == ["signal", "model", "version"]
    # pages and tickets of one signal share the label that links them
    by_signal: dict[str, set[str]] = {}
    for r in alerts(alerting.rules()).values():
        by_signal.setdefault(r["labels"]["signal"], set()).add(r["labels"]["severity"])
    assert by_signal["errors"] == {"page", "ticket"} and by_signal["latency"] == {"page", "ticket"}


def test_alertmanager_timings_scale_and_urls_are_arguments():
    nominal = alerting.alertmanager()
    assert (nominal["route"]["group_wait"], nominal["route"]["group_interval"]) == ("30s", "5m")
    fast = alerting.alertmanager(
        1 / 120, webhook_base="http://127.0.0.1:9999/", urls={"sre-page": "http://x/p"}
    )
    route = fast["route"]
    assert (route["group_wait"], route["group_interval"], route["repeat_interval"]) == (
        "250ms",
        "2s500ms",
        "12m",
    )
    repeats = {r["receiver"]: r["repeat_interval"] for t in route["routes"][1:] for r in t["routes"]}
    assert repeats == {"ml-engineers-page": "30s", "ml-engineers": "12m", "sre-page": "30s", "sre": "12m"}
    urls = {r["name"]: r["webhook_configs"][0]["url"] for r in fast["receivers"] if "webhook_configs" in r}
    assert urls == {
        "ml-engineers": "http://127.0.0.1:9999/ml-engineers",
        "ml-engineers-page": "http://127.0.0.1:9999/ml-engineers-page",
        "sre": "http://127.0.0.1:9999/sre",
        "sre-page": "http://x/p",
    }
    assert all(r["webhook_configs"][0]["send_resolved"] for r in fast["receivers"] if "webhook_configs" in r)
    with pytest.raises(AvgPoolError, match=r"urls must name receivers among .*, got \['pager'\]"):
        alerting.alertmanager(urls={"pager": "http://x"})


# -- dashboards -------------------------------------------------------------------------------


def test_dashboards_share_variables_and_lay_out_inside_the_grid():
    boards = dashboards.dashboards()
    assert sorted(boards) == sorted(dashboards.DASHBOARDS)
    for key, board in boards.items():
        assert board["uid"] == f"avgpool-{key}"
        names = [v["name"] for v in board["templating"]["list"]]
        assert names[:3] == ["datasource", "model", "version"], key
        ids = [p["id"] for p in board["panels"]]
        assert len(ids) == len(set(ids))
        for p in board["panels"]:
            g = p["gridPos"]
            assert g["x"] >= 0 and g["x"] + g["w"] <= 24 and g["w"] > 0 and g["h"] > 0, (key, p["title"])
            for t in p.get("targets", []):
                if "$model" in t["expr"]:
                    assert 'version=~"$version"' in t["expr"] or "$version_b" in t["expr"]
    titles = {key: [p["title"] for p in b["panels"]] for key, b in boards.items()}
    assert {"Availability", "Throughput", "Error budget left (30 days)"} <= set(titles["executive"])
    assert "P99 request latency against the objective" in titles["executive"]
    assert {"Alerts firing", "Errors per second by kind", "Memory against the limit"} <= set(titles["oncall"])
    assert "Activation histogram (M9)" in titles["debug"]
    assert "Start-up seconds (load and warm-up)" in titles["debug"]
    assert [v["name"] for v in boards["debug"]["templating"]["list"]][3:] == ["version_b", "layer"]


def test_debug_dashboard_compares_two_versions_side_by_side():
    panels = dashboards.dashboards()["debug"]["panels"]
    row = next(i for i, p in enumerate(panels) if p["title"] == "Version $version against $version_b")
    pairs = panels[row + 1 :]
    assert len(pairs) == 8
    for left, right in zip(pairs[::2], pairs[1::2]):
        assert left["title"].endswith(": $version") and right["title"].endswith(": $version_b")
        assert left["gridPos"]["y"] == right["gridPos"]["y"] and left["gridPos"]["x"] < right["gridPos"]["x"]
        for a, b in zip(left["targets"], right["targets"]):
            assert b["expr"] == a["expr"].replace('version=~"$version"', 'version="$version_b"')
    heat = next(p for p in panels if p["type"] == "heatmap")
    assert heat["targets"][0]["format"] == "heatmap"


def test_dashboards_follow_the_objective_and_budget():
    boards = dashboards.dashboards(latency_slo_seconds=0.1, error_budget=0.01)
    exprs = [t["expr"] for p in boards["executive"]["panels"] for t in p.get("targets", [])]
    assert "vector(0.1)" in exprs
    assert any(e.endswith("/ 0.01") for e in exprs)
    with pytest.raises(AvgPoolError, match=r"error_budget must be a number > 0 and < 1, got 2"):
        dashboards.dashboards(error_budget=2)


# -- the committed files ----------------------------------------------------------------------


def test_committed_deploy_files_are_what_make_deploy_writes(tmp_path):
    spec = importlib.util.spec_from_file_location("make_deploy", ROOT / "scripts" / "make_deploy.py")
    make_deploy = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_deploy)
    files = make_deploy.outputs()
    assert set(files) == {
        "deploy/prometheus/avgpool-serve-rules.yml",
        "deploy/alertmanager/alertmanager.yml",
        "deploy/grafana/avgpool-executive.json",
        "deploy/grafana/avgpool-oncall.json",
        "deploy/grafana/avgpool-debug.json",
    }
    stale = [rel for rel, text in files.items() if (ROOT / rel).read_text() != text]
    assert not stale, f"run: PYTHONPATH=src python scripts/make_deploy.py (stale: {stale})"
    assert make_deploy.main(["--root", str(ROOT), "--check"]) == 0
    assert make_deploy.main(["--root", str(tmp_path), "--check"]) == 1
    assert make_deploy.main(["--root", str(tmp_path)]) == 0
    assert (tmp_path / "deploy/grafana/avgpool-debug.json").read_text() == files[
        "deploy/grafana/avgpool-debug.json"
    ]


ALERTMANAGER_BIN = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _api(url: str, body: list | None = None) -> list:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as response:
        text = response.read()
    return json.loads(text) if text.strip() else []


@pytest.mark.skipif(
    ALERTMANAGER_BIN is None,
    reason="ALERTMANAGER NOT INSTALLED: inhibition is checked only by structure "
    "(Debian: apt install prometheus-alertmanager)",
)
def test_a_real_alertmanager_inhibits_by_deploy_window_and_page(tmp_path):
    """Posted alerts: the deploy window mutes its model version's drift ticket, not another
    version's nor the process-wide memory page; a latency page mutes the latency ticket."""
    config = tmp_path / "alertmanager.yml"
    config.write_text(alerting.to_yaml(alerting.alertmanager(1 / 120, webhook_base="http://127.0.0.1:9")))
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    args = [
        ALERTMANAGER_BIN,
        f"--config.file={config}",
        f"--storage.path={tmp_path / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--cluster.listen-address=",
        "--log.level=warn",
    ]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                urllib.request.urlopen(f"{url}/-/ready", timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read().decode()
                time.sleep(0.1)

        def alert(name, severity, team, signal, **labels):
            labels = {"alertname": name, "severity": severity, "team": team, "signal": signal, **labels}
            return {"labels": labels, "annotations": {"runbook_url": "docs/runbooks/x.md"}}

        posted = [
            alert("AvgpoolDeployWindow", "none", "sre", "deploy", model="m", version="2"),
            alert("AvgpoolActivationDrift", "ticket", "ml", "drift", model="m", version="2"),
            alert("AvgpoolActivationDrift", "ticket", "ml", "drift", model="m", version="1"),
            alert("AvgpoolLatencyP99High", "page", "sre", "latency", model="m", version="1"),
            alert("AvgpoolLatencyP99Regression", "ticket", "sre", "latency", model="m", version="1"),
            alert("AvgpoolMemoryNearLimit", "page", "sre", "memory", instance="a:8000"),
        ]
        _api(f"{url}/api/v2/alerts", posted)
        expected = {
            ("AvgpoolDeployWindow", "2"): False,
            ("AvgpoolActivationDrift", "2"): True,
            ("AvgpoolActivationDrift", "1"): False,
            ("AvgpoolLatencyP99High", "1"): False,
            ("AvgpoolLatencyP99Regression", "1"): True,
            ("AvgpoolMemoryNearLimit", ""): False,
        }
        deadline = time.monotonic() + 10
        while True:  # the inhibitor learns of source alerts asynchronously
            got = {
                (a["labels"]["alertname"], a["labels"].get("version", "")): bool(a["status"]["inhibitedBy"])
                for a in _api(f"{url}/api/v2/alerts")
            }
            if got == expected or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert got == expected
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@needs_promtool
@needs_amtool
def test_without_pyyaml_the_files_are_json_that_the_tools_read(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "yaml", None)  # import yaml raises ImportError
    rules_text = alerting.to_yaml(alerting.rules(**FAST), "fast rules")
    am_text = alerting.to_yaml(alerting.alertmanager(1 / 120), "fast routes")
    assert rules_text.startswith("# fast rules\n{") and am_text.startswith("# fast routes\n{")
    assert json.loads(rules_text.split("\n", 1)[1]) == alerting.rules(**FAST)
    (tmp_path / "r.yml").write_text(rules_text)
    (tmp_path / "am.yml").write_text(am_text)
    check = run([PROMTOOL, "check", "rules", str(tmp_path / "r.yml")])
    assert check.returncode == 0, check.stdout + check.stderr
    check = run([AMTOOL, "check-config", str(tmp_path / "am.yml")])
    assert check.returncode == 0, check.stdout + check.stderr


@needs_promtool
def test_promtool_parses_every_panel_query(tmp_path):
    """Each panel query, with Grafana's variables filled in, as a recording rule promtool parses."""
    values = {"$__rate_interval": "1m", "$__range": "1h", "$version_b": "2", "$version": ".*"}
    values |= {"$model": ".*", "$layer": ".*"}
    exprs = []
    for board in dashboards.dashboards().values():
        for panel in board["panels"]:
            for target in panel.get("targets", []):
                expr = target["expr"]
                for name, value in values.items():
                    expr = expr.replace(name, value)
                assert "$" not in expr, target["expr"]
                exprs.append(expr)
    doc = {
        "groups": [
            {"name": "panels", "rules": [{"record": f"panel:q{i}", "expr": e} for i, e in enumerate(exprs)]}
        ]
    }
    (tmp_path / "panels.yml").write_text(json.dumps(doc))
    check = run([PROMTOOL, "check", "rules", str(tmp_path / "panels.yml")])
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"SUCCESS: {len(exprs)} rules found" in check.stdout
