"""Three Grafana dashboards for `avgpool serve`, built from one set of panel definitions.

- ``executive``: availability, throughput, P99 against the objective, error budget left.
- ``oncall``: alerts firing, P99 by model and version, errors by kind, memory against the limit,
  drift status, readiness, injected latency and deploy windows.
- ``debug``: per-layer activation mean, std and PSI, the M9 activation histogram as a heatmap,
  telemetry sampling and drops, model time against request time, start-up time, and a row that
  puts two versions side by side (variables ``version`` and ``version_b``).

Every dashboard has the variables ``datasource``, ``model`` and ``version``; the debug dashboard
adds ``version_b`` and ``layer``. Panels query only metrics in
``avgpool.serve._metrics.METRICS`` (and Prometheus's own ``ALERTS``).

Examples
--------
>>> boards = dashboards()
>>> sorted(boards)
['debug', 'executive', 'oncall']
>>> boards["executive"]["uid"]
'avgpool-executive'
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from avgpool._errors import AvgPoolError

__all__ = ["DASHBOARDS", "dashboards"]

#: The dashboards' keys; each is written as ``avgpool-KEY.json``.
DASHBOARDS = ("executive", "oncall", "debug")

_DS = {"type": "prometheus", "uid": "${datasource}"}
_SEL = 'model=~"$model", version=~"$version"'
_ERR = 'avgpool_request_errors_total{kind="model_error", ' + _SEL + "}"
_OK = "avgpool_requests_total{" + _SEL + "}"


@dataclass(frozen=True)
class _Panel:
    title: str
    kind: str  # a Grafana panel type: timeseries, stat, table, heatmap
    targets: tuple[tuple[str, str], ...]  # (PromQL, legend)
    unit: str = "short"
    w: int = 12
    h: int = 8
    description: str = ""
    steps: tuple[tuple[float, str], ...] = ()  # threshold colours from each value up
    heatmap: bool = False  # targets are cumulative le buckets

    def versus(self) -> _Panel:
        """The same panel for ``$version_b`` (the comparison row's right-hand side)."""
        targets = tuple(
            (e.replace('version=~"$version"', 'version="$version_b"'), legend) for e, legend in self.targets
        )
        return replace(self, title=f"{self.title}: $version_b", targets=targets)


def _quantile(metric: str, q: float = 0.99, by: str = "model, version") -> str:
    return f"histogram_quantile({q}, sum by ({by}, le) (rate({metric}_bucket{{{_SEL}}}[$__rate_interval])))"


def _panels(slo: float, budget: float) -> dict[str, _Panel]:
    """Every panel, by key; the dashboards pick from these."""
    errors_range = f"(sum(increase({_ERR}[$__range])) or vector(0))"
    errors_30d = f"(sum(increase({_ERR}[30d])) or vector(0))"
    mvl = "{{model}} {{version}}"
    layer_sel = f'{{{_SEL}, layer=~"$layer"}}'
    drift_steps = ((0, "green"), (1, "orange"), (2, "red"))
    return {
        "availability": _Panel(
            "Availability",
            "stat",
            ((f"sum(increase({_OK}[$__range])) / (sum(increase({_OK}[$__range])) + {errors_range})", ""),),
            "percentunit",
            w=6,
            h=5,
            description="Requests answered 200 among those answered 200 or failed in the model, "
            "over the dashboard's time range.",
            steps=((0, "red"), (1 - 10 * budget, "orange"), (1 - budget, "green")),
        ),
        "throughput": _Panel(
            "Throughput",
            "stat",
            ((f"sum(rate({_OK}[$__rate_interval]))", ""),),
            "reqps",
            w=6,
            h=5,
        ),
        "budget": _Panel(
            "Error budget left (30 days)",
            "stat",
            (
                (
                    f"1 - ({errors_30d} / (sum(increase({_OK}[30d])) + {errors_30d})) / {budget:g}",
                    "",
                ),
            ),
            "percentunit",
            w=6,
            h=5,
            description=f"Share of the {budget:g} model-error budget not yet spent in 30 days.",
            steps=((-1e9, "red"), (0.25, "orange"), (0.5, "green")),
        ),
        "ready": _Panel(
            "Model versions ready",
            "stat",
            (("sum(avgpool_model_ready{" + _SEL + "})", ""),),
            w=6,
            h=5,
        ),
        "p99_slo": _Panel(
            "P99 request latency against the objective",
            "timeseries",
            ((_quantile("avgpool_request_duration_seconds"), mvl), (f"vector({slo:g})", "objective")),
            "s",
            w=24,
            description=f"The objective is {slo * 1000:g} ms at P99.",
        ),
        "rate_by_version": _Panel(
            "Requests per second by model version",
            "timeseries",
            ((f"sum by (model, version) (rate({_OK}[$__rate_interval]))", mvl),),
            "reqps",
        ),
        "alerts": _Panel(
            "Alerts firing",
            "table",
            (
                (
                    'sum by (alertname, severity, team, model, version) (ALERTS{alertstate="firing", '
                    'alertname=~"Avgpool.*"})',
                    "",
                ),
            ),
            w=24,
            h=6,
        ),
        "p99": _Panel(
            "P99 request latency",
            "timeseries",
            ((_quantile("avgpool_request_duration_seconds"), mvl),),
            "s",
            steps=((0, "green"), (slo, "red")),
        ),
        "errors_by_kind": _Panel(
            "Errors per second by kind",
            "timeseries",
            (
                (
                    "sum by (kind) (rate(avgpool_request_errors_total{" + _SEL + "}[$__rate_interval]))",
                    "{{kind}}",
                ),
            ),
            "reqps",
        ),
        "memory": _Panel(
            "Memory against the limit",
            "timeseries",
            (
                ("sum(avgpool_process_resident_memory_bytes)", "resident"),
                ("max(avgpool_memory_limit_bytes)", "limit"),
            ),
            "bytes",
        ),
        "drift_status": _Panel(
            "Drift status by layer (0 ok, 1 warn, 2 fail)",
            "stat",
            (
                (
                    "max by (model, version, layer) (avgpool_activation_drift_status{" + _SEL + "})",
                    "{{layer}}",
                ),
            ),
            steps=drift_steps,
        ),
        "faults": _Panel(
            "Injected latency and deploy windows",
            "timeseries",
            (
                ("avgpool_fault_latency_seconds{" + _SEL + "}", "fault {{model}} {{version}}"),
                ("avgpool_deploy_window{" + _SEL + "}", "deploy window {{model}} {{version}}"),
            ),
        ),
        "mean": _Panel(
            "Activation mean by layer",
            "timeseries",
            (("avgpool_activation_mean" + layer_sel, "{{version}} {{layer}}"),),
        ),
        "std": _Panel(
            "Activation std by layer",
            "timeseries",
            (("avgpool_activation_std" + layer_sel, "{{version}} {{layer}}"),),
        ),
        "psi": _Panel(
            "PSI against the baseline by layer",
            "timeseries",
            (("avgpool_activation_psi" + layer_sel, "{{version}} {{layer}}"),),
            steps=((0, "green"), (0.1, "orange"), (0.25, "red")),
        ),
        "histogram": _Panel(
            "Activation histogram (M9)",
            "heatmap",
            (("sum by (le) (avgpool_activation_histogram_bucket" + layer_sel + ")", "{{le}}"),),
            w=24,
            description="The live window's values at the pooling layers, at edges 0 and +-4**k.",
            heatmap=True,
        ),
        "telemetry": _Panel(
            "Telemetry: sampled and dropped requests per second",
            "timeseries",
            (
                (
                    "sum by (model, version) (rate(avgpool_telemetry_sampled_requests_total{"
                    + _SEL
                    + "}[$__rate_interval]))",
                    "sampled {{model}} {{version}}",
                ),
                (
                    "sum by (model, version) (rate(avgpool_telemetry_dropped_total{"
                    + _SEL
                    + "}[$__rate_interval]))",
                    "dropped {{model}} {{version}}",
                ),
            ),
            "reqps",
        ),
        "model_vs_request": _Panel(
            "Model time against request time (P50, P99)",
            "timeseries",
            tuple(
                (_quantile(metric, q, "model"), f"{name} P{round(q * 100)} {{{{model}}}}")
                for metric, name in (
                    ("avgpool_inference_latency_seconds", "model"),
                    ("avgpool_request_duration_seconds", "request"),
                )
                for q in (0.5, 0.99)
            ),
            "s",
            description="The gap is decoding, encoding, telemetry and queueing in the server.",
        ),
        "startup": _Panel(
            "Start-up seconds (load and warm-up)",
            "stat",
            (("avgpool_model_startup_seconds{" + _SEL + "}", mvl),),
            "s",
            w=8,
            h=5,
        ),
        "size": _Panel(
            "Model size",
            "stat",
            (("avgpool_model_size_bytes{" + _SEL + "}", mvl),),
            "bytes",
            w=8,
            h=5,
        ),
        "gpu": _Panel(
            "GPU utilisation",
            "timeseries",
            (("avgpool_gpu_utilization_ratio", "gpu {{gpu}}"),),
            "percentunit",
            w=8,
            h=5,
        ),
        "error_ratio": _Panel(
            "Model error ratio",
            "timeseries",
            (
                (
                    f"sum by (version) (rate({_ERR}[$__rate_interval])) / (sum by (version) "
                    f"(rate({_OK}[$__rate_interval])) + sum by (version) "
                    f"(rate({_ERR}[$__rate_interval])))",
                    "{{version}}",
                ),
            ),
            "percentunit",
        ),
    }


def _layout(rows: list[tuple[str, list[_Panel]]]) -> list[dict[str, Any]]:
    """Grafana panels: a row header, then its panels packed left to right in 24 columns."""
    out: list[dict[str, Any]] = []
    y = 0
    for row, panels in rows:
        out.append(
            {
                "id": len(out) + 1,
                "type": "row",
                "title": row,
                "collapsed": False,
                "gridPos": {"x": 0, "y": y, "w": 24, "h": 1},
                "panels": [],
            }
        )
        y += 1
        x = height = 0
        for p in panels:
            if x + p.w > 24:
                x, y, height = 0, y + height, 0
            out.append(_panel(p, len(out) + 1, x, y))
            x, height = x + p.w, max(height, p.h)
        y += height
    return out


def _panel(p: _Panel, pid: int, x: int, y: int) -> dict[str, Any]:
    targets = []
    for i, (expr, legend) in enumerate(p.targets):
        t = {"refId": chr(ord("A") + i), "datasource": _DS, "expr": expr, "legendFormat": legend}
        if p.heatmap:
            t["format"] = "heatmap"
        targets.append(t)
    defaults: dict[str, Any] = {"unit": p.unit}
    if p.steps:
        steps = [{"color": c, "value": None if i == 0 else v} for i, (v, c) in enumerate(p.steps)]
        defaults["thresholds"] = {"mode": "absolute", "steps": steps}
        if p.kind == "timeseries":
            defaults["custom"] = {"thresholdsStyle": {"mode": "line"}}
    options: dict[str, Any] = {}
    if p.kind == "stat":
        options = {"colorMode": "background", "reduceOptions": {"calcs": ["lastNotNull"]}}
    elif p.kind == "heatmap":
        options = {"calculate": False, "yAxis": {"unit": "short"}, "cellGap": 1}
    elif p.kind == "table":
        targets[0]["instant"] = True
        targets[0]["format"] = "table"
    return {
        "id": pid,
        "title": p.title,
        "type": p.kind,
        "datasource": _DS,
        "description": p.description,
        "gridPos": {"x": x, "y": y, "w": p.w, "h": p.h},
        "targets": targets,
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": options,
    }


def _variable(name: str, query: str, *, multi: bool = True) -> dict[str, Any]:
    return {
        "name": name,
        "type": "query",
        "datasource": _DS,
        "query": {"query": query, "refId": name},
        "definition": query,
        "refresh": 2,
        "includeAll": multi,
        "multi": multi,
        **({"allValue": ".*"} if multi else {}),
        "current": {},
    }


def _templating(comparison: bool) -> dict[str, Any]:
    variables = [
        {"name": "datasource", "type": "datasource", "query": "prometheus", "current": {}},
        _variable("model", "label_values(avgpool_model_ready, model)"),
        _variable("version", 'label_values(avgpool_model_ready{model=~"$model"}, version)'),
    ]
    if comparison:
        variables.append(
            _variable("version_b", 'label_values(avgpool_model_ready{model=~"$model"}, version)', multi=False)
        )
        variables.append(_variable("layer", 'label_values(avgpool_activation_mean{model=~"$model"}, layer)'))
    return {"list": variables}


def _board(key: str, title: str, rows: list[tuple[str, list[_Panel]]], description: str) -> dict[str, Any]:
    return {
        "title": title,
        "uid": f"avgpool-{key}",
        "description": description,
        "tags": ["avgpool", "avgpool-serve", key],
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "time": {"from": "now-24h" if key == "executive" else "now-3h", "to": "now"},
        "refresh": "1m" if key == "executive" else "30s",
        "links": [
            {"type": "dashboards", "title": "avgpool serve", "tags": ["avgpool-serve"], "asDropdown": True}
        ],
        "templating": _templating(key == "debug"),
        "annotations": {"list": []},
        "panels": _layout(rows),
    }


def dashboards(
    *, latency_slo_seconds: float = 0.25, error_budget: float = 0.001
) -> dict[str, dict[str, Any]]:
    """The executive, on-call and debug dashboards as Grafana JSON models, by key.

    Parameters
    ----------
    latency_slo_seconds : float
        The P99 objective drawn on the latency panels (as in `alerting.rules`).
    error_budget : float
        The allowed fraction of model errors (as in `alerting.rules`).

    Returns
    -------
    dict
        ``{"executive": ..., "oncall": ..., "debug": ...}``, each a dashboard JSON model.
    """
    for name, value, high in (
        ("latency_slo_seconds", latency_slo_seconds, None),
        ("error_budget", error_budget, 1),
    ):
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not value > 0
            or (high and value >= high)
        ):
            allowed = "> 0" + (f" and < {high}" if high else "")
            raise AvgPoolError(f"{name} must be a number {allowed}, got {value!r}")
    p = _panels(float(latency_slo_seconds), float(error_budget))
    pick = lambda *keys: [p[k] for k in keys]  # noqa: E731
    compare = ["p99", "error_ratio", "mean", "psi"]
    side_by_side = [
        q for k in compare for q in (replace(p[k], title=f"{p[k].title}: $version"), p[k].versus())
    ]
    return {
        "executive": _board(
            "executive",
            "avgpool serve: executive",
            [
                ("Service", pick("availability", "throughput", "budget", "ready")),
                ("Latency", pick("p99_slo")),
            ],
            "Availability, throughput, latency against the objective and the error budget.",
        ),
        "oncall": _board(
            "oncall",
            "avgpool serve: on-call",
            [
                ("Alerts", pick("alerts")),
                ("Traffic", pick("p99", "errors_by_kind", "rate_by_version", "memory")),
                ("Model", pick("drift_status", "faults")),
            ],
            "What is firing and why: latency, errors, memory, drift. Runbooks: docs/runbooks/.",
        ),
        "debug": _board(
            "debug",
            "avgpool serve: debug",
            [
                ("Pooling layers", pick("mean", "std", "psi", "drift_status", "histogram")),
                ("Server", pick("telemetry", "model_vs_request", "startup", "size", "gpu")),
                ("Version $version against $version_b", side_by_side),
            ],
            "Per-layer activations, telemetry health, time inside and outside the model, and two "
            "versions side by side.",
        ),
    }
