"""The server's Prometheus metric families: their names and types (`METRICS`, what alert rules
and dashboards may use), the counters and histograms every request updates, and a collector
that computes the gauges and activation families from the telemetry's state at each scrape.

``avgpool_activation_histogram`` exports the window's exponential histogram of each layer as a
Prometheus histogram with fixed edges: 0 and the signed powers of 4 from 4**-5 to 4**5
(``HISTOGRAM_EDGES``). A bucket of the exponential histogram counts under an edge when its
estimate is at most the edge. Powers of two are bucket bounds at every scale >= 0 (magnitudes
spanning up to 2**80 at the default 320 buckets), so the counts are exact there, except that a
value exactly equal to a negative edge counts in the next bucket up. Its ``_count`` is the
window's finite values; it has no ``_sum`` (values can be negative: prometheus-client leaves it
out then; `avgpool_activation_mean` is the window's mean).

The canary families have one series per model name, 0 while no canary is open:
``avgpool_canary_share`` is the share of unversioned requests the candidate answers (0 in shadow
mode); ``avgpool_canary_mirrored_total`` counts the rows of mirrored requests compared and
``avgpool_canary_top1_agreements_total`` those whose top-1 class agreed (their ratio is the
top-1 agreement of a classifier); ``avgpool_canary_mirror_dropped_total`` the mirrors dropped
because the shadow queue was full.
"""

from __future__ import annotations

import contextlib
import sys
from typing import Any

__all__ = ["ERROR_KINDS", "HISTOGRAM_EDGES", "METRICS", "Collector", "make_metrics", "memory_limit"]

#: Every metric the server exports, by the name queries use, and its type.
METRICS: dict[str, str] = {
    "avgpool_request_duration_seconds": "histogram",
    "avgpool_inference_latency_seconds": "histogram",
    "avgpool_requests_total": "counter",
    "avgpool_inference_samples_total": "counter",
    "avgpool_request_errors_total": "counter",
    "avgpool_process_resident_memory_bytes": "gauge",
    "avgpool_memory_limit_bytes": "gauge",
    "avgpool_gpu_utilization_ratio": "gauge",
    "avgpool_model_size_bytes": "gauge",
    "avgpool_model_ready": "gauge",
    "avgpool_model_startup_seconds": "gauge",
    "avgpool_telemetry_sampled_requests_total": "counter",
    "avgpool_telemetry_dropped_total": "counter",
    "avgpool_activation_mean": "gauge",
    "avgpool_activation_std": "gauge",
    "avgpool_activation_values_total": "counter",
    "avgpool_activation_nonfinite_values_total": "counter",
    "avgpool_activation_psi": "gauge",
    "avgpool_activation_mean_shift": "gauge",
    "avgpool_activation_std_ratio": "gauge",
    "avgpool_activation_drift_status": "gauge",
    "avgpool_activation_histogram": "histogram",
    "avgpool_fault_latency_seconds": "gauge",
    "avgpool_deploy_window": "gauge",
    "avgpool_canary_share": "gauge",
    "avgpool_canary_mirrored_total": "counter",
    "avgpool_canary_top1_agreements_total": "counter",
    "avgpool_canary_mirror_dropped_total": "counter",
}
#: The ``kind`` label values of ``avgpool_request_errors_total``.
ERROR_KINDS = ("bad_request", "too_large", "model_not_found", "not_ready", "model_error", "unsupported")
#: ``le`` edges of ``avgpool_activation_histogram``: 0 and +-4**k for k in -5..5.
HISTOGRAM_EDGES: tuple[float, ...] = (
    *(-(4.0**k) for k in range(5, -6, -1)),
    0.0,
    *(4.0**k for k in range(-5, 6)),
)


def make_metrics(client: Any, registry: Any) -> dict[str, Any]:
    from avgpool.monitor.prometheus import LATENCY_BUCKETS

    mv = ("model", "version")
    return {
        "request": client.Histogram(
            "avgpool_request_duration_seconds",
            "Whole request in the server: decode, model run, encode.",
            mv,
            registry=registry,
            buckets=LATENCY_BUCKETS,
        ),
        "latency": client.Histogram(
            "avgpool_inference_latency_seconds",
            "Wall time of one model run.",
            mv,
            registry=registry,
            buckets=LATENCY_BUCKETS,
        ),
        "requests": client.Counter("avgpool_requests", "Requests answered 200.", mv, registry=registry),
        "samples": client.Counter(
            "avgpool_inference_samples", "Samples (batch rows) through the model.", mv, registry=registry
        ),
        "errors": client.Counter(
            "avgpool_request_errors", "Failed requests, by kind.", (*mv, "kind"), registry=registry
        ),
        "sampled": client.Counter(
            "avgpool_telemetry_sampled_requests",
            "Requests whose pooling outputs were profiled.",
            mv,
            registry=registry,
        ),
        "dropped": client.Counter(
            "avgpool_telemetry_dropped",
            "Sampled requests dropped because the telemetry queue was full.",
            mv,
            registry=registry,
        ),
    }


def memory_limit() -> int:
    """cgroup v2 ``memory.max`` (or v1's limit), else the physical memory."""
    import psutil

    physical = int(psutil.virtual_memory().total)
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path) as f:
                text = f.read().strip()
        except OSError:
            continue
        if text.isdigit():
            return min(int(text), physical)  # v1 writes a huge number for "no limit"
    return physical


def _gpu_utilization() -> list[tuple[str, float]]:
    """(gpu index, utilisation 0..1) where torch sees CUDA devices; empty elsewhere."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return []
    out = []
    for i in range(torch.cuda.device_count()):
        with contextlib.suppress(Exception):  # utilization needs NVML (pynvml)
            out.append((str(i), torch.cuda.utilization(i) / 100.0))
    return out


def _histogram_buckets(layer: Any) -> list[tuple[str, float]]:
    """A layer's exponential histogram as cumulative ``le`` buckets at `HISTOGRAM_EDGES`."""
    from avgpool.monitor.exphist import estimates

    lower, upper, counts = layer.hist.layout()
    counts = counts.sum(axis=0)
    est = estimates(lower, upper)
    buckets = [(repr(edge), float(counts[est <= edge].sum())) for edge in HISTOGRAM_EDGES]
    return [*buckets, ("+Inf", float(counts.sum()))]


class Collector:
    """Gauges and the activation families, computed from state at each scrape."""

    def __init__(self, owner: Any) -> None:  # a Telemetry (which imports this module)
        self.owner = owner

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> list[Any]:
        import psutil
        from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily
        from prometheus_client.samples import Sample

        from avgpool.monitor.drift import VERDICTS
        from avgpool.monitor.prometheus import ProfileCollector

        owner = self.owner
        mv, mvl = ["model", "version"], ["model", "version", "layer"]
        rss = 0
        for pid in owner.worker_pids():
            with contextlib.suppress(psutil.Error):
                rss += psutil.Process(pid).memory_info().rss
        fams = [
            GaugeMetricFamily(
                "avgpool_process_resident_memory_bytes", "Resident memory of the server's workers.", value=rss
            ),
            GaugeMetricFamily(
                "avgpool_memory_limit_bytes",
                "The cgroup memory limit, else the physical memory.",
                value=owner._memory_limit,
            ),
        ]
        gpus = _gpu_utilization()
        if gpus:
            gpu = GaugeMetricFamily(
                "avgpool_gpu_utilization_ratio", "GPU utilisation, 0 to 1.", labels=["gpu"]
            )
            for index, value in gpus:
                gpu.add_metric([index], value)
            fams.append(gpu)
        gauges = {
            "size": GaugeMetricFamily("avgpool_model_size_bytes", "Model file size.", labels=mv),
            "ready": GaugeMetricFamily("avgpool_model_ready", "1 once the model is warmed up.", labels=mv),
            "startup": GaugeMetricFamily(
                "avgpool_model_startup_seconds", "Load and warm-up time.", labels=mv
            ),
            "fault": GaugeMetricFamily(
                "avgpool_fault_latency_seconds", "Latency injected into each request now.", labels=mv
            ),
            "deploy": GaugeMetricFamily(
                "avgpool_deploy_window", "1 while a declared deploy window is open.", labels=mv
            ),
        }
        drift = {
            key: GaugeMetricFamily(f"avgpool_activation_{key}", help_, labels=mvl)
            for key, help_ in (
                ("psi", "Population stability index against the baseline."),
                ("mean_shift", "Mean shift from the baseline, in baseline standard deviations."),
                ("std_ratio", "Standard deviation / the baseline's."),
                ("drift_status", "Drift verdict against the baseline: 0 ok, 1 warn, 2 fail."),
            )
        }
        hist = HistogramMetricFamily(
            "avgpool_activation_histogram", "The window's values at fixed edges (0, +-4**k).", labels=mvl
        )
        activation: dict[str, Any] = {}
        for m in owner._models.values():
            labels = [m.name, m.version]
            gauges["size"].add_metric(labels, m.size_bytes)
            gauges["ready"].add_metric(labels, 1.0 if m.ready else 0.0)
            if m.startup_seconds is not None:
                gauges["startup"].add_metric(labels, m.startup_seconds)
            gauges["fault"].add_metric(labels, m.fault_latency)
            gauges["deploy"].add_metric(labels, 1.0 if m.deploy_window_open else 0.0)
            snapshot = m.snapshot()
            exporter = ProfileCollector(
                snapshot, model=m.name, version=m.version, per_channel=owner.per_channel
            )
            for fam in exporter.collect():
                if fam.name in activation:
                    activation[fam.name].samples.extend(fam.samples)
                else:
                    activation[fam.name] = fam
            for layer in snapshot:
                buckets = _histogram_buckets(layer)
                # no _sum: prometheus-client leaves it out where buckets are negative
                hist.add_metric([*labels, layer.name], buckets, None)
                count = buckets[-1][1]
                hist.samples.append(
                    Sample(f"{hist.name}_count", dict(zip(mvl, [*labels, layer.name])), count)
                )
            report = m.drift()
            for d in report.layers if report is not None else ():
                lv = [*labels, d.candidate_name]
                drift["psi"].add_metric(lv, d.metrics["psi"])
                drift["mean_shift"].add_metric(lv, d.metrics["mean_shift"])
                drift["std_ratio"].add_metric(lv, d.metrics["std_ratio"])
                drift["drift_status"].add_metric(lv, VERDICTS.index(d.verdict))
        return [
            *fams,
            *gauges.values(),
            *activation.values(),
            *drift.values(),
            hist,
            *_canary_families(owner),
        ]


def _canary_families(owner: Any) -> list[Any]:
    """The canary gauge and counters of every model name (``owner.canaries``: the app's)."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    canaries = getattr(owner, "canaries", None)
    share = GaugeMetricFamily(
        "avgpool_canary_share",
        "Share of unversioned requests the canary's candidate answers.",
        labels=["model"],
    )
    counters = {
        key: CounterMetricFamily(name, help_, labels=["model"])
        for key, name, help_ in (
            ("mirrored", "avgpool_canary_mirrored", "Rows of mirrored requests compared with the baseline."),
            ("agree", "avgpool_canary_top1_agreements", "Mirrored rows whose top-1 class agreed."),
            ("dropped", "avgpool_canary_mirror_dropped", "Mirrors dropped: the shadow queue was full."),
        )
    }
    for name in sorted({m.name for m in owner._models.values()}):
        share.add_metric([name], canaries.share(name) if canaries is not None else 0.0)
        totals = canaries.totals(name) if canaries is not None else {}
        for key, family in counters.items():
            family.add_metric([name], float(totals.get(key, 0)))
    return [share, *counters.values()]
