"""Prometheus recording and alert rules and the Alertmanager configuration for `avgpool serve`,
from one definition.

Every alert carries ``severity`` (``page`` wakes someone, ``ticket`` files work for office
hours), ``team`` (``ml`` for what the model's activations say, ``sre`` for latency, errors,
memory and the serving machinery), ``signal`` (what it watches: a page silences the ticket of
the same signal) and the ``model`` and ``version`` labels (rules aggregate ``by (model,
version)``, so one model version raises one alert, not one per worker or layer), and the
annotations ``summary``, ``description`` and ``runbook_url`` (a page in ``docs/runbooks/``).

Time scales: `rules` and `alertmanager` take ``scale``, which multiplies every ``for:``, rate
window, ``offset`` and Alertmanager timing, so a test can run the same rules with intervals of
seconds (``scale=1/120`` turns 10 minutes into 5 seconds). Rate windows never go below
``min_window`` (give it four scrape intervals, so ``rate`` always has samples to work on).
Recording rules keep their nominal window in their names (``..._rate5m``) at any scale.

The error budget alerts follow the multi-window, multi-burn-rate recipe of Google's SRE
workbook (chapter "Alerting on SLOs"): page when 2% of a 30-day budget burns in an hour
(14.4 times the sustainable rate, over 1 h and 5 m) or 5% in 6 hours (6 times, over 6 h and
30 m); ticket when 10% burns in 3 days (1 time, over 3 d and 6 h).

Examples
--------
>>> doc = rules()
>>> sorted(g["name"] for g in doc["groups"])
['avgpool-serve-alerts', 'avgpool-serve-recording']
>>> fast = [r for g in rules(1 / 120, min_window=4)["groups"] for r in g["rules"]]
>>> next(r["for"] for r in fast if r.get("alert") == "AvgpoolLatencyP99High")
'5s'
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from avgpool._errors import AvgPoolError

__all__ = [
    "ALERT_NAMES",
    "RECEIVERS",
    "RUNBOOKS",
    "alertmanager",
    "duration",
    "parse_duration",
    "rules",
    "to_yaml",
]

#: Runbooks under ``docs/runbooks/`` (one ``NAME.md`` each).
RUNBOOKS = ("rollback", "redeploy", "scale-out", "drift-triage", "high-latency", "errors", "memory")
#: Alertmanager receivers: tickets and pages for each team, and ``null`` for inhibition-only alerts.
RECEIVERS = ("ml-engineers", "ml-engineers-page", "sre", "sre-page", "null")

_UNITS = (("d", 86400.0), ("h", 3600.0), ("m", 60.0), ("s", 1.0), ("ms", 0.001))
_DURATION = re.compile(r"(\d+)(ms|d|h|m|s)")


def parse_duration(text: str) -> float:
    """Seconds in a Prometheus duration such as ``"5m"``, ``"1h30m"`` or ``"250ms"``."""
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise AvgPoolError(f"duration must be like 5m, 1h30m or 250ms, got {text!r}")
    return sum(int(n) * dict(_UNITS)[u] for n, u in parts)


def duration(seconds: float) -> str:
    """A Prometheus duration for ``seconds``, to the millisecond (``90.0`` -> ``"1m30s"``)."""
    ms = round(seconds * 1000)
    if ms < 0:
        raise AvgPoolError(f"seconds must be >= 0, got {seconds!r}")
    if ms == 0:
        return "0s"
    out = []
    for unit, size in _UNITS:
        n, ms = divmod(ms, round(size * 1000))
        if n:
            out.append(f"{n}{unit}")
    return "".join(out)


class _Scaler:
    """Rewrites ``[W]`` and ``offset W`` in PromQL written at the nominal time scale."""

    def __init__(self, scale: float, min_window: float) -> None:
        self.scale, self.min_window = scale, min_window

    def window(self, text: str) -> str:
        return duration(max(parse_duration(text) * self.scale, self.min_window))

    def time(self, text: str) -> str:
        return duration(parse_duration(text) * self.scale)

    def expr(self, promql: str) -> str:
        promql = re.sub(r"\[(\w+)\]", lambda m: f"[{self.window(m.group(1))}]", promql)
        return re.sub(r"\boffset (\w+)", lambda m: f"offset {self.time(m.group(1))}", promql)


@dataclass(frozen=True)
class _Alert:
    name: str
    expr: str  # PromQL at the nominal time scale
    for_: str
    severity: str  # page, ticket or none
    team: str  # ml or sre
    signal: str
    runbook: str
    summary: str
    description: str


def _check(name: str, value: Any, low: float, high: float | None = None) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value > low
    if ok and high is not None:
        ok = value < high
    if not ok:
        allowed = f"> {low}" + (f" and < {high}" if high is not None else "")
        raise AvgPoolError(f"{name} must be a number {allowed}, got {value!r}")
    return float(value)


_MV = "by (model, version)"
_ERR = 'avgpool_request_errors_total{kind="model_error"}'
_BURN = (("5m", "30m", "1h", "6h", "3d"), "model_version:avgpool_request_errors:ratio_rate")
_P99 = "model_version:avgpool_request_duration_seconds:p99_"
_BUSY = "model_version:avgpool_inference_samples_per_busy_second:rate1h"
_MEMORY = "instance:avgpool_memory_used:ratio"


def _recording() -> list[tuple[str, str]]:
    """(record name, PromQL at the nominal scale): the series the alerts and dashboards share."""
    out = [
        (
            f"{_P99}{w}",
            f"histogram_quantile(0.99, sum by (model, version, le) "
            f"(rate(avgpool_request_duration_seconds_bucket[{w}])))",
        )
        for w in ("5m", "1h")
    ]
    windows, prefix = _BURN
    for w in windows:
        # errors over all answered requests: avgpool_requests_total counts only the 200s
        out.append(
            (
                f"{prefix}{w}",
                f"sum {_MV} (rate({_ERR}[{w}]))\n/\n(sum {_MV} (rate(avgpool_requests_total[{w}]))"
                f" + sum {_MV} (rate({_ERR}[{w}])))",
            )
        )
    out.append(
        (
            _BUSY,
            f"sum {_MV} (rate(avgpool_inference_samples_total[1h]))\n/\n"
            f"sum {_MV} (rate(avgpool_inference_latency_seconds_sum[1h]))",
        )
    )
    out.append((_MEMORY, "avgpool_process_resident_memory_bytes / avgpool_memory_limit_bytes"))
    return out


def _alerts(slo: float, budget: float, memory_ratio: float, error_ratio: float) -> list[_Alert]:
    """Every alert, at the nominal time scale."""
    ms = f"{slo * 1000:g} ms"
    mv = "{{ $labels.model }} {{ $labels.version }}"
    _, burn = _BURN
    fast, medium, slow = 14.4 * budget, 6 * budget, 1 * budget
    return [
        _Alert(
            "AvgpoolLatencyP99High",
            f"max {_MV} ({_P99}5m) > {slo:g}",
            "10m",
            "page",
            "sre",
            "latency",
            "high-latency",
            f"{mv}: P99 request latency {{{{ $value | humanizeDuration }}}} over {ms}",
            f"P99 of avgpool_request_duration_seconds over 5m windows has stayed above the {ms} "
            "objective for 10 minutes.",
        ),
        _Alert(
            "AvgpoolLatencyP99Regression",
            f"max {_MV} ({_P99}1h) > 1.5 * max {_MV} ({_P99}1h offset 1d)",
            "1h",
            "ticket",
            "sre",
            "latency",
            "high-latency",
            f"{mv}: P99 request latency 50% above the same hour yesterday",
            "Hourly P99 of avgpool_request_duration_seconds has been over 1.5 times yesterday's "
            "for an hour: a slow regression (a new version, a kernel path, the node).",
        ),
        _Alert(
            "AvgpoolThroughputDegraded",
            f"max {_MV} ({_BUSY}) < 0.8 * max {_MV} ({_BUSY} offset 1d)",
            "2h",
            "ticket",
            "sre",
            "throughput",
            "high-latency",
            f"{mv}: samples per second of model time 20% below yesterday",
            "Batch rows per second of model time (independent of traffic) have been under 80% of "
            "the same hour yesterday for 2 hours.",
        ),
        _Alert(
            "AvgpoolErrorRateHigh",
            f"max {_MV} ({burn}5m) > {error_ratio:g}",
            "5m",
            "page",
            "sre",
            "errors",
            "errors",
            f"{mv}: {{{{ $value | humanizePercentage }}}} of requests fail in the model",
            f"More than {error_ratio:.1%} of requests have ended in a model error (HTTP 500, "
            'avgpool_request_errors_total{kind="model_error"}) for 5 minutes.',
        ),
        _Alert(
            "AvgpoolErrorBudgetBurnFast",
            f"max {_MV} ({burn}1h) > {fast:g}\nand\nmax {_MV} ({burn}5m) > {fast:g}",
            "2m",
            "page",
            "sre",
            "errors",
            "errors",
            f"{mv}: error budget burning 14.4x too fast (2% of 30 days in 1h)",
            f"Model errors over 1h and over 5m exceed 14.4 times the {budget:g} budget.",
        ),
        _Alert(
            "AvgpoolErrorBudgetBurnMedium",
            f"max {_MV} ({burn}6h) > {medium:g}\nand\nmax {_MV} ({burn}30m) > {medium:g}",
            "15m",
            "page",
            "sre",
            "errors",
            "errors",
            f"{mv}: error budget burning 6x too fast (5% of 30 days in 6h)",
            f"Model errors over 6h and over 30m exceed 6 times the {budget:g} budget.",
        ),
        _Alert(
            "AvgpoolErrorBudgetBurnSlow",
            f"max {_MV} ({burn}3d) > {slow:g}\nand\nmax {_MV} ({burn}6h) > {slow:g}",
            "1h",
            "ticket",
            "sre",
            "errors",
            "errors",
            f"{mv}: error budget burning faster than it refills (10% of 30 days in 3d)",
            f"Model errors over 3d and over 6h exceed the {budget:g} budget.",
        ),
        _Alert(
            "AvgpoolMemoryNearLimit",
            f"max by (job, instance) ({_MEMORY}) > {memory_ratio:g}",
            "5m",
            "page",
            "sre",
            "memory",
            "memory",
            "{{ $labels.instance }}: server memory at {{ $value | humanizePercentage }} of its limit",
            f"Resident memory of the server's workers has stayed above {memory_ratio:.0%} of the "
            "cgroup limit (else physical memory) for 5 minutes: the OOM killer is next.",
        ),
        _Alert(
            "AvgpoolModelNotReady",
            f"min {_MV} (avgpool_model_ready) < 1",
            "10m",
            "page",
            "sre",
            "readiness",
            "redeploy",
            f"{mv}: not ready",
            "The model version has not finished loading and warming up for 10 minutes: the "
            "readiness probe fails and it takes no traffic.",
        ),
        _Alert(
            "AvgpoolTelemetryDropping",
            f"sum {_MV} (rate(avgpool_telemetry_dropped_total[10m])) > 0",
            "30m",
            "ticket",
            "sre",
            "telemetry",
            "scale-out",
            f"{mv}: telemetry drops sampled requests",
            "The telemetry queue has been full for 30 minutes: activation profiles miss samples "
            "and drift is judged on fewer values. Sample less often or scale out.",
        ),
        _Alert(
            "AvgpoolActivationDrift",
            f"max {_MV} (avgpool_activation_drift_status) >= 1",
            "15m",
            "ticket",
            "ml",
            "drift",
            "drift-triage",
            f"{mv}: pooling activations drift from the baseline (status {{{{ $value }}}}: 1 warn, 2 fail)",
            "At least one pooling layer's activations have drifted from the baseline profile "
            "(PSI, mean shift or std ratio past the warn threshold) for 15 minutes.",
        ),
        _Alert(
            "AvgpoolActivationNonFinite",
            f"sum {_MV} (increase(avgpool_activation_nonfinite_values_total[10m])) > 0",
            "5m",
            "ticket",
            "ml",
            "nonfinite",
            "drift-triage",
            f"{mv}: NaN or infinite values at a pooling layer",
            "Sampled requests put NaN or infinite values through a pooling layer in the last 10 minutes.",
        ),
        _Alert(
            "AvgpoolDeployWindow",
            f"max {_MV} (avgpool_deploy_window) == 1",
            "0s",
            "none",
            "sre",
            "deploy",
            "redeploy",
            f"{mv}: deploy window open",
            "A deploy window is declared for this model version; Alertmanager holds back its other "
            "alerts until it closes.",
        ),
    ]


#: Every alert's name, in rule order.
ALERT_NAMES = tuple(a.name for a in _alerts(0.25, 0.001, 0.9, 0.05))


def rules(
    scale: float = 1.0,
    *,
    latency_slo_seconds: float = 0.25,
    error_budget: float = 0.001,
    memory_ratio: float = 0.9,
    error_ratio: float = 0.05,
    min_window: float = 60.0,
    runbook_base: str = "docs/runbooks/",
) -> dict[str, Any]:
    """The recording and alert rules as a Prometheus rule file (a dict; `to_yaml` writes it).

    Parameters
    ----------
    scale : float
        Multiplies every ``for:``, rate window and ``offset`` (``1/120``: 10 m becomes 5 s).
    latency_slo_seconds : float
        The P99 objective of ``avgpool_request_duration_seconds``.
    error_budget : float
        The allowed fraction of requests ending in a model error (0.001: 99.9% succeed).
    memory_ratio : float
        Resident memory over the memory limit that pages (OOM risk).
    error_ratio : float
        Fraction of requests in model errors over 5 minutes that pages outright.
    min_window : float
        The shortest rate window, seconds (four scrape intervals).
    runbook_base : str
        Prefix of ``runbook_url``: ``runbook_base + NAME + ".md"``.

    Returns
    -------
    dict
        ``{"groups": [...]}``: group ``avgpool-serve-recording``, then ``avgpool-serve-alerts``.

    Raises
    ------
    AvgPoolError
        A number out of its range.
    """
    _check("scale", scale, 0)
    _check("latency_slo_seconds", latency_slo_seconds, 0)
    _check("error_budget", error_budget, 0, 1 / 14.4)
    _check("memory_ratio", memory_ratio, 0, 1)
    _check("error_ratio", error_ratio, 0, 1)
    _check("min_window", min_window, 0)
    s = _Scaler(scale, min_window)
    note = "" if scale == 1 else f" (Windows and durations here are scaled by {scale:g}.)"
    recording = [{"record": name, "expr": s.expr(expr)} for name, expr in _recording()]
    alerts = []
    for a in _alerts(latency_slo_seconds, error_budget, memory_ratio, error_ratio):
        alerts.append(
            {
                "alert": a.name,
                "expr": s.expr(a.expr),
                "for": s.time(a.for_),
                "labels": {"severity": a.severity, "team": a.team, "signal": a.signal},
                "annotations": {
                    "summary": a.summary,
                    "description": a.description + note,
                    "runbook_url": f"{runbook_base}{a.runbook}.md",
                },
            }
        )
    return {
        "groups": [
            {"name": "avgpool-serve-recording", "rules": recording},
            {"name": "avgpool-serve-alerts", "rules": alerts},
        ]
    }


def alertmanager(
    scale: float = 1.0,
    *,
    webhook_base: str = "http://127.0.0.1:5001",
    urls: Mapping[str, str] | None = None,
    resolve_timeout: float = 300.0,
) -> dict[str, Any]:
    """The Alertmanager configuration: routes by team and severity, inhibition, receivers.

    Alerts group by ``alertname``, ``model`` and ``version``. ``team="ml"`` goes to
    ``ml-engineers`` (tickets) or ``ml-engineers-page``; ``team="sre"`` to ``sre`` or
    ``sre-page``; ``severity="none"`` (the deploy window) to ``null``. Pages repeat every 1 h,
    tickets every 24 h. Inhibition: an open ``AvgpoolDeployWindow`` holds back every other alert
    of the same model and version; a page holds back the ticket of the same ``signal``, model and
    version.

    Parameters
    ----------
    scale : float
        Multiplies group_wait (30 s), group_interval (5 m), the repeat intervals and
        ``resolve_timeout``.
    webhook_base : str
        Each receiver posts to ``webhook_base + "/" + receiver`` unless ``urls`` names it.
        The default is a placeholder: point it at your paging and ticketing relays.
    urls : mapping, optional
        Receiver name -> webhook URL, overriding ``webhook_base``.
    resolve_timeout : float
        Seconds before an alert without updates counts as resolved.

    Returns
    -------
    dict
        The configuration; `to_yaml` writes it.
    """
    _check("scale", scale, 0)
    _check("resolve_timeout", resolve_timeout, 0)
    urls = dict(urls or {})
    unknown = set(urls) - set(RECEIVERS[:-1])
    if unknown:
        raise AvgPoolError(f"urls must name receivers among {RECEIVERS[:-1]}, got {sorted(unknown)}")
    s = _Scaler(scale, 0.0)
    page, ticket = s.time("1h"), s.time("1d")

    def team(name: str, receiver: str) -> dict[str, Any]:
        return {
            "matchers": [f'team="{name}"'],
            "receiver": receiver,
            "routes": [
                {
                    "matchers": ['severity="page"'],
                    "receiver": f"{receiver}-page",
                    "repeat_interval": page,
                },
                {"matchers": ['severity="ticket"'], "receiver": receiver, "repeat_interval": ticket},
            ],
        }

    receivers: list[dict[str, Any]] = [
        {
            "name": name,
            "webhook_configs": [
                {"url": urls.get(name, f"{webhook_base.rstrip('/')}/{name}"), "send_resolved": True}
            ],
        }
        for name in RECEIVERS[:-1]
    ]
    receivers.append({"name": "null"})
    return {
        "global": {"resolve_timeout": s.time(duration(resolve_timeout))},
        "route": {
            "receiver": "sre",
            "group_by": ["alertname", "model", "version"],
            "group_wait": s.time("30s"),
            "group_interval": s.time("5m"),
            "repeat_interval": ticket,
            "routes": [
                {"matchers": ['severity="none"'], "receiver": "null"},
                team("ml", "ml-engineers"),
                team("sre", "sre"),
            ],
        },
        "inhibit_rules": [
            {
                "source_matchers": ['alertname="AvgpoolDeployWindow"'],
                "target_matchers": ['model=~".+"', 'alertname!="AvgpoolDeployWindow"'],
                "equal": ["model", "version"],
            },
            {
                "source_matchers": ['severity="page"'],
                "target_matchers": ['severity="ticket"'],
                "equal": ["signal", "model", "version"],
            },
        ],
        "receivers": receivers,
    }


def to_yaml(doc: Mapping[str, Any], header: str = "") -> str:
    """YAML text of a rules or Alertmanager dict, ``header`` as ``#`` comment lines.

    Without PyYAML the body is indented JSON, which is YAML too: Prometheus and Alertmanager read
    it the same.
    """
    lines = [f"# {line}".rstrip() for line in header.strip().splitlines()] if header else []
    try:
        import yaml
    except ImportError:
        import json

        body = json.dumps(doc, indent=2) + "\n"
    else:

        class _Dumper(yaml.SafeDumper):
            pass

        def text(dumper: Any, value: str) -> Any:
            style = "|" if "\n" in value else None
            return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

        _Dumper.add_representer(str, text)
        body = yaml.dump(dict(doc), Dumper=_Dumper, sort_keys=False, width=100, allow_unicode=True)
    return "\n".join([*lines, body]) if lines else body
