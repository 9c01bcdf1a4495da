"""Prometheus export of activation profiles and inference latency (prometheus-client).

Metric names follow Prometheus's rules: the ``avgpool_`` prefix, base units in the name
(``_seconds``), ``_total`` on counters, unitless ratios plainly named. Labels are ``model``,
``version`` and ``layer``; a ``channel`` label only on the ``*_channel_*`` metrics, and only
when asked for (``per_channel=True``): one series per channel multiplies cardinality.

=============================================  =========  =======================================
metric                                         type       meaning
=============================================  =========  =======================================
``avgpool_activation_mean``                    gauge      mean of the layer's output values
``avgpool_activation_std``                     gauge      population std of the output values
``avgpool_activation_values_total``            counter    finite values profiled
``avgpool_activation_nonfinite_values_total``  counter    NaN and +-inf values seen
``avgpool_activation_psi``                     gauge      PSI against the baseline (with one)
``avgpool_activation_mean_shift``              gauge      mean shift in baseline std units
``avgpool_activation_std_ratio``               gauge      candidate std / baseline std
``avgpool_activation_drift_status``            gauge      0 ok, 1 warn, 2 fail (`compare`'s verdict)
``avgpool_activation_channel_mean`` / ``_std``  gauge      per channel (``per_channel=True`` only)
``avgpool_inference_latency_seconds``          histogram  wall time of one forward call
``avgpool_inference_samples_total``            counter    samples (batch rows) through the model
=============================================  =========  =======================================

The profile gauges are computed at scrape time from the live profile (a custom collector), so
they are never stale and cost nothing between scrapes. HTTP exposition binds 127.0.0.1 unless
another address is given.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from avgpool.monitor.profile import DEFAULT_MAX_BUCKETS, Profile, ProfileError

__all__ = [
    "LATENCY_BUCKETS",
    "PREFIX",
    "Instrumented",
    "ProfileCollector",
    "exposition",
    "instrument",
    "serve",
    "write_textfile",
]

PREFIX = "avgpool"
#: Latency histogram buckets, seconds: 0.5 ms to 10 s.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def _client():
    try:
        import prometheus_client
    except ImportError:  # pragma: no cover
        raise ProfileError(
            "Prometheus export needs prometheus-client: pip install 'avgpool[monitor]'"
        ) from None
    return prometheus_client


class ProfileCollector:
    """A prometheus-client collector that reads a profile at every scrape.

    Parameters
    ----------
    profile : Profile, or a callable returning one
        The live profile (a callable lets a service hand out a consistent snapshot).
    model, version : str
        Label values.
    baseline : Profile, optional
        With a baseline, drift gauges (PSI, mean shift, std ratio, status) are exported too.
    per_channel : bool
        Also export per-channel mean and std (one series per channel).
    """

    def __init__(
        self,
        profile: Profile | Callable[[], Profile],
        *,
        model: str,
        version: str = "",
        baseline: Profile | None = None,
        per_channel: bool = False,
    ) -> None:
        self._profile = profile
        self.model = model
        self.version = version
        self.baseline = baseline
        self.per_channel = per_channel

    def _families(self) -> dict[str, Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        labels = ["model", "version", "layer"]
        p = f"{PREFIX}_activation"
        fams = {
            "mean": GaugeMetricFamily(f"{p}_mean", "Mean of the layer's output values.", labels=labels),
            "std": GaugeMetricFamily(
                f"{p}_std", "Population standard deviation of the output values.", labels=labels
            ),
            "values": CounterMetricFamily(f"{p}_values", "Finite output values profiled.", labels=labels),
            "nonfinite": CounterMetricFamily(
                f"{p}_nonfinite_values", "NaN and infinite output values seen.", labels=labels
            ),
        }
        if self.baseline is not None:
            fams["psi"] = GaugeMetricFamily(
                f"{p}_psi", "Population stability index against the baseline.", labels=labels
            )
            fams["mean_shift"] = GaugeMetricFamily(
                f"{p}_mean_shift",
                "Mean shift from the baseline, in baseline standard deviations.",
                labels=labels,
            )
            fams["std_ratio"] = GaugeMetricFamily(
                f"{p}_std_ratio", "Standard deviation / the baseline's.", labels=labels
            )
            fams["status"] = GaugeMetricFamily(
                f"{p}_drift_status",
                "Drift verdict against the baseline: 0 ok, 1 warn, 2 fail.",
                labels=labels,
            )
        if self.per_channel:
            ch = [*labels, "channel"]
            fams["ch_mean"] = GaugeMetricFamily(
                f"{p}_channel_mean", "Mean of one channel's output values.", labels=ch
            )
            fams["ch_std"] = GaugeMetricFamily(
                f"{p}_channel_std", "Standard deviation of one channel.", labels=ch
            )
        return fams

    def describe(self) -> list[Any]:
        return list(self._families().values())

    def collect(self) -> list[Any]:
        profile = self._profile() if callable(self._profile) else self._profile
        fams = self._families()
        for layer in profile:
            lv = [self.model, self.version, layer.name]
            t = layer.totals()
            if t["count"]:
                fams["mean"].add_metric(lv, t["mean"])
                fams["std"].add_metric(lv, t["std"])
            fams["values"].add_metric(lv, t["count"])
            fams["nonfinite"].add_metric(lv, t["nan"] + t["posinf"] + t["neginf"])
            if self.per_channel:
                for c, (m, s) in enumerate(zip(layer.mean, layer.std)):
                    if layer.count[c]:
                        fams["ch_mean"].add_metric([*lv, str(c)], float(m))
                        fams["ch_std"].add_metric([*lv, str(c)], float(s))
        if self.baseline is not None and len(profile):
            from avgpool.monitor.drift import VERDICTS, compare

            report = compare(self.baseline, profile)
            for d in report.layers:
                lv = [self.model, self.version, d.candidate_name]
                fams["psi"].add_metric(lv, d.metrics["psi"])
                fams["mean_shift"].add_metric(lv, d.metrics["mean_shift"])
                fams["std_ratio"].add_metric(lv, d.metrics["std_ratio"])
                fams["status"].add_metric(lv, VERDICTS.index(d.verdict))
        return list(fams.values())


def exposition(
    profile: Profile,
    *,
    model: str,
    version: str = "",
    baseline: Profile | None = None,
    per_channel: bool = False,
) -> str:
    """The profile's metrics in Prometheus's text exposition format."""
    client = _client()
    registry = client.CollectorRegistry()
    registry.register(
        ProfileCollector(profile, model=model, version=version, baseline=baseline, per_channel=per_channel)
    )
    return client.generate_latest(registry).decode("utf-8")


def write_textfile(
    path: Any,
    profile: Profile,
    *,
    model: str,
    version: str = "",
    baseline: Profile | None = None,
    per_channel: bool = False,
) -> None:
    """Write the metrics for node_exporter's textfile collector (atomically, `write_atomically`)."""
    from avgpool._files import write_atomically

    client = _client()
    registry = client.CollectorRegistry()
    registry.register(
        ProfileCollector(profile, model=model, version=version, baseline=baseline, per_channel=per_channel)
    )
    write_atomically(path, client.generate_latest(registry))


def serve(registry: Any = None, *, port: int = 0, addr: str = "127.0.0.1") -> tuple[Any, int]:
    """Expose ``registry`` (default: prometheus-client's global one) over HTTP on a background
    thread. Returns (server, port); ``port=0`` picks a free one; ``server.shutdown()`` stops it."""
    client = _client()
    server, _thread = client.start_http_server(port, addr=addr, registry=registry or client.REGISTRY)
    return server, int(server.server_port)


def _pool_modules(model: Any) -> list[str]:
    from avgpool.inspect.torch_reader import pooling_module_kind

    return [name for name, m in model.named_modules() if name and pooling_module_kind(m) is not None]


class Instrumented:
    """A model wired to Prometheus: latency and sample counters on every forward call, and
    activation profiles at the chosen layers. Returned by `instrument`; `remove` detaches it."""

    def __init__(
        self,
        model: Any,
        *,
        registry: Any,
        model_name: str,
        version: str,
        baseline: Profile | None,
        layers: Sequence[str],
        per_channel: bool,
        buckets: Sequence[float],
        max_buckets: int,
    ) -> None:
        from avgpool.monitor.collectors import TorchCollector

        client = _client()
        self.model_name, self.version = model_name, version
        self._lock = threading.Lock()
        self.baseline = baseline
        self._max_buckets = max_buckets
        self.profile = Profile(max_buckets=max_buckets)
        self._collector = TorchCollector(model, layers, self.profile, lock=self._lock)
        labels = ("model", "version")
        self.latency = client.Histogram(
            f"{PREFIX}_inference_latency_seconds",
            "Wall time of one forward call of the model.",
            labels,
            registry=registry,
            buckets=tuple(buckets),
        ).labels(model_name, version)
        self.samples = client.Counter(
            f"{PREFIX}_inference_samples",
            "Samples (batch rows) that went through the model.",
            labels,
            registry=registry,
        ).labels(model_name, version)
        self._exporter = ProfileCollector(
            self.snapshot, model=model_name, version=version, baseline=baseline, per_channel=per_channel
        )
        self._registry = registry
        registry.register(self._exporter)
        self._local = threading.local()
        self._handles = [
            model.register_forward_pre_hook(self._start),
            model.register_forward_hook(self._stop),
        ]

    def _start(self, module: Any, args: Any) -> None:
        self._local.t0 = time.perf_counter()

    def _stop(self, module: Any, args: Any, output: Any) -> None:
        t0 = getattr(self._local, "t0", None)
        if t0 is None:
            return
        self.latency.observe(time.perf_counter() - t0)
        self._local.t0 = None
        first = args[0] if args else None
        shape = getattr(first, "shape", None)
        self.samples.inc(int(shape[0]) if shape else 1)

    def snapshot(self) -> Profile:
        """A consistent copy of the live profile."""
        with self._lock:
            return self.profile.copy()

    def reset(self) -> Profile:
        """Start a fresh profile and return the one collected so far."""
        with self._lock:
            old = self.profile
            fresh = Profile(max_buckets=self._max_buckets)
            self.profile = fresh
            self._collector.profile = fresh
        return old

    def remove(self) -> None:
        """Detach every hook and unregister the profile metrics."""
        self._collector.remove()
        for h in self._handles:
            h.remove()
        self._handles = []
        with contextlib.suppress(KeyError):
            self._registry.unregister(self._exporter)

    def __enter__(self) -> Instrumented:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.remove()


def instrument(
    model: Any,
    *,
    registry: Any = None,
    model_name: str | None = None,
    version: str = "",
    baseline: Profile | None = None,
    layers: Sequence[str] | None = None,
    per_channel: bool = False,
    buckets: Sequence[float] = LATENCY_BUCKETS,
    max_buckets: int = DEFAULT_MAX_BUCKETS,
) -> Instrumented:
    """Instrument a ``torch.nn.Module`` for a live service.

    Every forward call is timed into ``avgpool_inference_latency_seconds`` and counted into
    ``avgpool_inference_samples_total``; the outputs of ``layers`` (default: every pooling
    module, torch.nn or avgpool.nn) feed a profile that ``registry`` exposes at each scrape,
    with drift gauges when a ``baseline`` is given.

    A service does ``handle = instrument(model, registry=registry, model_name="resnet",
    version="2", baseline=Profile.load("base.avgprof"))`` once, then ``serve(registry)`` (or
    its own ``/metrics`` route); ``handle.reset()`` starts a fresh window, ``handle.remove()``
    detaches everything.
    """
    client = _client()
    registry = client.REGISTRY if registry is None else registry
    names = list(layers) if layers else _pool_modules(model)
    if not names:
        raise ProfileError(f"{type(model).__name__}: no pooling modules to profile; pass layers=")
    return Instrumented(
        model,
        registry=registry,
        model_name=model_name or type(model).__name__,
        version=version,
        baseline=baseline,
        layers=names,
        per_channel=per_channel,
        buckets=buckets,
        max_buckets=max_buckets,
    )
