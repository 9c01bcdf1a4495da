"""OpenTelemetry for the model server: a span per request, OTLP metrics, trace-context propagation.

`setup` reads the standard ``OTEL_*`` environment variables. Without an OTLP endpoint
(``OTEL_EXPORTER_OTLP_ENDPOINT``, ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` or
``OTEL_EXPORTER_OTLP_METRICS_ENDPOINT``), or with ``OTEL_SDK_DISABLED=true``, it returns a no-op
`Otel` that imports nothing from OpenTelemetry and starts no thread; its methods cost a call.
With an endpoint it builds the SDK's providers and the OTLP/HTTP (protobuf) exporters, and lets
them read what they already honour: endpoints, ``OTEL_EXPORTER_OTLP_*_HEADERS``, ``_TIMEOUT``,
``_COMPRESSION`` and ``_CERTIFICATE``; ``OTEL_SERVICE_NAME`` and ``OTEL_RESOURCE_ATTRIBUTES``
(which win over the ``service_name`` argument; a random ``service.instance.id`` is added unless
they give one); ``OTEL_TRACES_SAMPLER`` and its argument; ``OTEL_PROPAGATORS``; ``OTEL_BSP_*``
and ``OTEL_METRIC_EXPORT_INTERVAL``/``_TIMEOUT``;
``OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE`` and
``OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION``. ``OTEL_TRACES_EXPORTER=none`` or
``OTEL_METRICS_EXPORTER=none`` turns that signal off. The transport is OTLP/HTTP with protobuf
(``http/protobuf``); another ``OTEL_EXPORTER_OTLP_PROTOCOL`` is logged as a warning. A signal is on
when its own endpoint or the shared one is set, so an endpoint for traces alone sends no metrics.

Spans go through a ``BatchSpanProcessor`` and metrics through a ``PeriodicExportingMetricReader``:
a request only queues a finished span or adds to a histogram, and never waits on a collector.

What is exported
----------------
Spans
    `Otel.request_span` opens a SERVER span named ``"{method} {route}"`` (OpenTelemetry's HTTP
    server convention) with ``http.request.method``, ``http.route``, ``avgpool.model`` and
    ``avgpool.version``; ``set_status_code`` adds ``http.response.status_code`` and, for a 5xx,
    the error status and ``error.type`` (a 4xx is the client's error and leaves the server span
    unset, as the convention says). A ``traceparent`` header (W3C trace context) makes the span a
    child of the client's. `Otel.span` opens a child span (``decode``, ``model``, ``telemetry``,
    ``encode``) of whatever span is current. An exception leaving either span is recorded as an
    event and sets the error status.
``avgpool.request.duration`` (histogram, seconds)
    Whole requests, with ``avgpool.model``, ``avgpool.version`` and ``http.response.status_code``.
    The buckets are OpenTelemetry's advice for ``http.server.request.duration``
    (`REQUEST_DURATION_BUCKETS`, 5 ms to 10 s); a collector that prefers base-2 exponential
    buckets gets them with
    ``OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION=base2_exponential_bucket_histogram``.
``avgpool.activation`` (exponential histogram, no unit: the model's own values)
    Each pooling layer's live histogram, with ``avgpool.model``, ``avgpool.version`` and
    ``avgpool.layer``, sent exactly as the profile keeps it (`LayerStats.otlp`: its scale, buckets,
    count, sum, min and max), so no resolution is lost. The SDK's instruments cannot take
    pre-aggregated data, so these points are added to each export the metric reader makes (the
    same resource, the same schedule). A live window forgets old values, so the points are
    CUMULATIVE with a start time that moves with the window (``now - window``): each is the
    distribution over its own ``[start, time]``, and a backend sees a new series start each time,
    never a counter that went down. NaN and infinities are not in a histogram; the Prometheus
    metrics count them (``avgpool_activation_nonfinite_values_total``), and ``/metrics`` shows the
    same histograms as cumulative ``le`` buckets (``avgpool_activation_histogram``).
``avgpool.activation.mean``, ``avgpool.activation.std`` (gauges, no unit)
    Each layer's mean and standard deviation over the window (M3, M4; all channels together, as
    the drift gate judges a layer), with the same attributes. Drift against a baseline
    (PSI, status) is in ``/metrics`` only: alerts are Prometheus rules.

Global providers: the server is an application, so with ``set_global=True`` (the default)
`setup` installs its providers as OpenTelemetry's global ones, so that instrumentation libraries
loaded beside it (an HTTP client's, say) join the same traces. It does so only while no SDK
provider is installed: an application that embeds the server and set its own keeps it. Every
method of `Otel` uses its own provider instances, never the globals, so several can be made and
shut down in one process (tests pass ``set_global=False``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from avgpool.monitor.profile import Profile

__all__ = ["REQUEST_DURATION_BUCKETS", "Otel", "SpanHandle", "enabled_signals", "setup"]

_log = logging.getLogger(__name__)

#: Bucket edges (seconds) of ``avgpool.request.duration``: OpenTelemetry's advice for
#: ``http.server.request.duration``.
REQUEST_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)

#: ``observe_activations``' callback: ``(model, version, live profile)`` for each model served.
ActivationSource = Callable[[], Iterable[tuple[str, str, "Profile"]]]

_SCOPE = "avgpool.serve"


def _env(name: str) -> str:
    return os.environ.get(name, "").strip()


def enabled_signals() -> tuple[bool, bool]:
    """Which signals the environment asks to export: ``(traces, metrics)``.

    A signal is on when ``OTEL_EXPORTER_OTLP_ENDPOINT`` or its own
    ``OTEL_EXPORTER_OTLP_{TRACES,METRICS}_ENDPOINT`` is set, ``OTEL_SDK_DISABLED`` is not
    ``true`` and ``OTEL_{TRACES,METRICS}_EXPORTER`` is not ``none``.
    """
    if _env("OTEL_SDK_DISABLED").lower() == "true":
        return False, False
    shared = bool(_env("OTEL_EXPORTER_OTLP_ENDPOINT"))

    def on(signal: str) -> bool:
        wanted = _env(f"OTEL_{signal}_EXPORTER").lower() != "none"
        return wanted and (shared or bool(_env(f"OTEL_EXPORTER_OTLP_{signal}_ENDPOINT")))

    return on("TRACES"), on("METRICS")


class SpanHandle:
    """What ``with otel.span(...)`` and ``with otel.request_span(...)`` give: the span to annotate.
    This base class is the no-op one; a live span's handle forwards to the SDK's span."""

    __slots__ = ()

    def __enter__(self) -> SpanHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    @property
    def trace_id(self) -> str:
        """The trace's id as 32 hex digits (for logs and response headers); empty when no-op."""
        return ""

    @property
    def is_recording(self) -> bool:
        """Whether the span is sampled and recorded (attributes are worth computing)."""
        return False

    def set_attribute(self, key: str, value: Any) -> None:
        """Set one attribute (``str``, ``bool``, ``int``, ``float`` or a sequence of one of them)."""

    def set_status_code(self, status: int) -> None:
        """Record the HTTP response's status: ``http.response.status_code``; a 5xx marks the span
        as an error with ``error.type`` set to the code."""


_NOOP_SPAN = SpanHandle()


class _LiveSpan(SpanHandle):
    __slots__ = ("_span",)

    def __init__(self, span: Any) -> None:
        self._span = span

    @property
    def trace_id(self) -> str:
        ctx = self._span.get_span_context()
        return f"{ctx.trace_id:032x}" if ctx.is_valid else ""

    @property
    def is_recording(self) -> bool:
        return self._span.is_recording()

    def set_attribute(self, key: str, value: Any) -> None:
        self._span.set_attribute(key, value)

    def set_status_code(self, status: int) -> None:
        status = int(status)
        self._span.set_attribute("http.response.status_code", status)
        if status >= 500:
            from opentelemetry.trace import Status, StatusCode

            self._span.set_attribute("error.type", str(status))
            self._span.set_status(Status(StatusCode.ERROR))


def _attributes(attributes: Mapping[str, Any]) -> dict[str, Any]:
    # None is not an OpenTelemetry attribute value; a caller passing one means "not known".
    return {k: v for k, v in attributes.items() if v is not None}


class Otel:
    """The server's OpenTelemetry: spans, request metrics, activation histograms.

    This class is the no-op one that `setup` returns when no OTLP endpoint is configured: every
    method returns at once (spans are one shared `SpanHandle`). The live one has the same methods.
    """

    #: whether spans are exported
    tracing: bool = False
    #: whether metrics are exported
    metering: bool = False

    @property
    def enabled(self) -> bool:
        """Whether anything is exported."""
        return self.tracing or self.metering

    def span(self, name: str, **attributes: Any) -> contextlib.AbstractContextManager[SpanHandle]:
        """A child of the current span, e.g. ``with otel.span("model", rows=4):``.

        Keyword arguments become attributes (dotted keys through ``**{"avgpool.rows": 4}``; None
        values are left out). An exception leaving the block is recorded and sets the error status.
        """
        return _NOOP_SPAN

    def request_span(
        self,
        method: str,
        route: str,
        model: str | None = None,
        version: str | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        **attributes: Any,
    ) -> contextlib.AbstractContextManager[SpanHandle]:
        """The span of one HTTP request, continuing the caller's trace.

        Parameters
        ----------
        method : str
            The HTTP method, ``"POST"``.
        route : str
            The route template, not the path: ``"/v2/models/{model_name}/infer"`` (a path with the
            model's name in it would make one span name per model).
        model, version : str, optional
            The model and version the request reached (``avgpool.model``, ``avgpool.version``).
        headers : mapping, optional
            The request's headers; a ``traceparent`` (and ``tracestate``, ``baggage``) there makes
            this span a child of the caller's span. Any mapping with ``get`` works (Starlette's
            case-insensitive ``Headers`` or a dict of lower-case names).
        **attributes
            More attributes (``url.path``, ``client.address``, ...).
        """
        return _NOOP_SPAN

    def record_request(self, seconds: float, model: str, version: str, status: int) -> None:
        """Add one request's whole duration to ``avgpool.request.duration``."""

    def observe_activations(self, callback: ActivationSource, *, window: float | None = None) -> None:
        """Export each pooling layer's live histogram at every metric export.

        Parameters
        ----------
        callback : callable
            Called three times at each export (the mean and std gauges, the histograms), on the
            metric reader's thread, never a request's, and returning ``(model, version, profile)``
            for each model: the live window's `Profile`. Layers with no values yet are left out.
            An exception in it is logged, and that export goes on without activation metrics.
        window : float, optional
            The window's length in seconds: a point covers ``[now - window, now]`` (never before
            `setup`). None: the profile holds everything since `setup`.

        Notes
        -----
        Each process exports under its own ``service.instance.id``, and a backend adds instances
        up. With several worker processes, register the source in one of them if the callback
        returns all workers' merged profile, or let each return its own share: never both.
        """

    def force_flush(self, timeout: float = 10.0) -> bool:
        """Export what is queued now; True when everything was sent within `timeout` seconds."""
        return True

    def shutdown(self, timeout: float = 10.0) -> None:
        """Flush and stop the exporters' threads; the object is a no-op afterwards."""


def setup(
    service_name: str = "avgpool-serve",
    *,
    resource_attributes: Mapping[str, Any] | None = None,
    set_global: bool = True,
) -> Otel:
    """The server's OpenTelemetry, from the ``OTEL_*`` environment (see the module's docstring).

    Parameters
    ----------
    service_name : str
        ``service.name`` unless ``OTEL_SERVICE_NAME`` or ``OTEL_RESOURCE_ATTRIBUTES`` names one.
    resource_attributes : mapping, optional
        More resource attributes (``service.version``, ``service.instance.id``, ...); they win over
        ``OTEL_RESOURCE_ATTRIBUTES``, as the SDK's ``Resource.create`` decides.
    set_global : bool
        Install the providers as OpenTelemetry's global ones when none is installed yet.

    Returns
    -------
    Otel
        The no-op `Otel` when no signal is enabled (`enabled_signals`), else a live one. Call its
        `Otel.shutdown` when the server stops.

    Examples
    --------
    What a request handler does (without an endpoint in the environment, nothing at all):

    >>> otel = setup(set_global=False)
    >>> with otel.request_span("POST", "/v2/models/{model_name}/infer", "resnet", "1") as span:
    ...     with otel.span("model", rows=1):
    ...         pass
    ...     span.set_status_code(200)
    >>> otel.record_request(0.012, "resnet", "1", 200)
    >>> otel.shutdown()
    """
    tracing, metering = enabled_signals()
    if not (tracing or metering):
        return Otel()
    return _SdkOtel(service_name, dict(resource_attributes or {}), tracing, metering, set_global)


class _SdkOtel(Otel):
    def __init__(
        self,
        service_name: str,
        resource_attributes: dict[str, Any],
        tracing: bool,
        metering: bool,
        set_global: bool,
    ) -> None:
        import uuid

        from opentelemetry.sdk.resources import SERVICE_INSTANCE_ID, SERVICE_NAME, Resource

        resource = Resource.create(resource_attributes)
        if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
            # neither the environment nor the caller named the service: the SDK's placeholder
            resource = resource.merge(Resource({SERVICE_NAME: service_name}))
        if SERVICE_INSTANCE_ID not in resource.attributes:
            # each worker process sends its own cumulative histograms: without an instance id, a
            # backend would take two workers' series for one series that jumps back and forth
            resource = resource.merge(Resource({SERVICE_INSTANCE_ID: str(uuid.uuid4())}))
        self.resource = resource
        self.tracing, self.metering = tracing, metering
        for signal, on in (("TRACES", tracing), ("METRICS", metering)):
            protocol = _env(f"OTEL_EXPORTER_OTLP_{signal}_PROTOCOL") or _env("OTEL_EXPORTER_OTLP_PROTOCOL")
            if on and protocol not in ("", "http/protobuf"):
                msg = "OTEL_EXPORTER_OTLP_PROTOCOL is %r, but the server sends %s as http/protobuf only"
                _log.warning(msg + " (to a collector's OTLP/HTTP port, 4318)", protocol, signal.lower())
        self._start_ns = time.time_ns()
        self._sources: list[tuple[ActivationSource, float | None]] = []
        self._lock = threading.Lock()
        self._closed = False
        self._tracer_provider = self._meter_provider = None
        if tracing:
            self._start_tracing(resource)
        if metering:
            self._start_metering(resource)
        if set_global:
            self._install_globals()

    # -- construction ----------------------------------------------------------------------------

    def _start_tracing(self, resource: Any) -> None:
        from opentelemetry import trace
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        from avgpool import __version__

        # TracerProvider() takes its sampler from OTEL_TRACES_SAMPLER(_ARG); the exporter and the
        # batch processor read their own variables.
        self._tracer_provider = TracerProvider(resource=resource)
        self._tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        self._tracer = self._tracer_provider.get_tracer(_SCOPE, __version__)
        self._server_kind = trace.SpanKind.SERVER

    def _start_metering(self, resource: Any) -> None:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

        from avgpool import __version__

        exporter = _with_activations(OTLPMetricExporter(), self)
        reader = PeriodicExportingMetricReader(exporter)  # interval: OTEL_METRIC_EXPORT_INTERVAL
        self._meter_provider = MeterProvider(resource=resource, metric_readers=[reader])
        meter = self._meter_provider.get_meter(_SCOPE, __version__)
        self._duration = meter.create_histogram(
            "avgpool.request.duration",
            unit="s",
            description="Duration of inference requests in the server: decode, model run, encode.",
            explicit_bucket_boundaries_advisory=REQUEST_DURATION_BUCKETS,
        )
        # M3 and M4 as gauges. They also make the reader export at all: it sends nothing when no
        # instrument has a point (before the first request, or idle under delta temporality), and
        # the histograms ride on its exports.
        for statistic, what in (("mean", "Mean"), ("std", "Standard deviation (ddof=0)")):
            meter.create_observable_gauge(
                f"avgpool.activation.{statistic}",
                callbacks=[self._observe(statistic)],
                unit="",
                description=f"{what} of each pooling layer's finite output values over the live window.",
            )

    def _install_globals(self) -> None:
        from opentelemetry import metrics, trace

        if self._tracer_provider is not None and isinstance(
            trace.get_tracer_provider(), trace.ProxyTracerProvider
        ):
            trace.set_tracer_provider(self._tracer_provider)
        # the API names its placeholder privately; should it move, the global is left alone
        placeholder = getattr(getattr(metrics, "_internal", None), "_ProxyMeterProvider", ())
        if self._meter_provider is not None and isinstance(metrics.get_meter_provider(), placeholder):
            metrics.set_meter_provider(self._meter_provider)

    # -- spans -----------------------------------------------------------------------------------

    def span(self, name: str, **attributes: Any) -> contextlib.AbstractContextManager[SpanHandle]:
        if self._tracer_provider is None:
            return _NOOP_SPAN
        return self._open(name, None, None, _attributes(attributes))

    def request_span(
        self,
        method: str,
        route: str,
        model: str | None = None,
        version: str | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        **attributes: Any,
    ) -> contextlib.AbstractContextManager[SpanHandle]:
        if self._tracer_provider is None:
            return _NOOP_SPAN
        from opentelemetry import propagate

        context = propagate.extract(headers) if headers else None
        attrs = _attributes(
            {
                "http.request.method": method,
                "http.route": route,
                "avgpool.model": model,
                "avgpool.version": version,
                **attributes,
            }
        )
        return self._open(f"{method} {route}", self._server_kind, context, attrs)

    @contextlib.contextmanager
    def _open(self, name: str, kind: Any, context: Any, attributes: dict[str, Any]) -> Iterator[SpanHandle]:
        kwargs = {"kind": kind} if kind is not None else {}
        with self._tracer.start_as_current_span(
            name,
            context=context,
            attributes=attributes,
            record_exception=True,
            set_status_on_exception=True,
            **kwargs,
        ) as span:
            yield _LiveSpan(span)

    # -- metrics ---------------------------------------------------------------------------------

    def record_request(self, seconds: float, model: str, version: str, status: int) -> None:
        if self._meter_provider is None:
            return
        self._duration.record(
            seconds,
            {"avgpool.model": model, "avgpool.version": version, "http.response.status_code": int(status)},
        )

    def observe_activations(self, callback: ActivationSource, *, window: float | None = None) -> None:
        if self._meter_provider is None:
            return
        with self._lock:
            self._sources.append((callback, window))

    def _layers(self, now: int, *, log: bool) -> list[tuple[dict[str, str], Any, int]]:
        """``(attributes, LayerStats, start time)`` of every layer with values, from every source."""
        with self._lock:
            sources = list(self._sources)
        out = []
        for callback, window in sources:
            start = self._start_ns if window is None else max(self._start_ns, now - int(window * 1e9))
            try:
                models = list(callback())
            except Exception:
                if log:  # once per export, not once per instrument
                    _log.exception("the activation callback failed; this export has no activation metrics")
                continue
            for model, version, profile in models:
                for layer in profile:
                    if int(layer.count.sum()):
                        attrs = {"avgpool.model": model, "avgpool.version": version}
                        out.append(({**attrs, "avgpool.layer": layer.name}, layer, start))
        return out

    def _observe(self, statistic: str) -> Callable[[Any], Iterable[Any]]:
        from opentelemetry.metrics import Observation

        def observe(options: Any) -> Iterable[Any]:
            layers = self._layers(time.time_ns(), log=False)
            return [Observation(layer.totals()[statistic], attrs) for attrs, layer, _ in layers]

        return observe

    def _activation_metric(self) -> Any:
        """The ``avgpool.activation`` metric of every registered source, or None when empty."""
        from opentelemetry.sdk.metrics.export import (
            AggregationTemporality,
            Buckets,
            ExponentialHistogram,
            ExponentialHistogramDataPoint,
            Metric,
        )

        now = time.time_ns()
        points = []
        for attrs, layer, start in self._layers(now, log=True):
            p = layer.otlp()
            points.append(
                ExponentialHistogramDataPoint(
                    attributes=attrs,
                    start_time_unix_nano=start,
                    time_unix_nano=now,
                    count=p["count"],
                    sum=p["sum"],
                    scale=p["scale"],
                    zero_count=p["zeroCount"],
                    positive=Buckets(p["positive"]["offset"], p["positive"]["bucketCounts"]),
                    negative=Buckets(p["negative"]["offset"], p["negative"]["bucketCounts"]),
                    flags=0,
                    min=p["min"],
                    max=p["max"],
                )
            )
        if not points:
            return None
        return Metric(
            name="avgpool.activation",
            description="Values of each pooling layer's output over the live window (finite values).",
            unit="",
            data=ExponentialHistogram(points, AggregationTemporality.CUMULATIVE),
        )

    # -- lifetime --------------------------------------------------------------------------------

    def force_flush(self, timeout: float = 10.0) -> bool:
        ok = True
        millis = int(timeout * 1000)
        for provider in (self._tracer_provider, self._meter_provider):
            if provider is not None:
                ok = bool(provider.force_flush(millis)) and ok
        return ok

    def shutdown(self, timeout: float = 10.0) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        if self._tracer_provider is not None:
            self._tracer_provider.shutdown()  # the batch processor exports what it holds first
        if self._meter_provider is not None:
            self._meter_provider.shutdown(timeout_millis=timeout * 1000)  # one last collection
        self.tracing = self.metering = False
        self._tracer_provider = self._meter_provider = None


def _with_activations(exporter: Any, otel: _SdkOtel) -> Any:
    """`exporter` wrapped so that each export also carries ``otel``'s activation histograms."""
    from opentelemetry.sdk.metrics.export import MetricExporter, MetricsData, ResourceMetrics, ScopeMetrics
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope

    from avgpool import __version__

    scope = InstrumentationScope(_SCOPE, __version__)

    class _ActivationExporter(MetricExporter):
        def __init__(self) -> None:
            super().__init__(
                preferred_temporality=exporter._preferred_temporality,
                preferred_aggregation=exporter._preferred_aggregation,
            )

        def export(self, metrics_data: Any, timeout_millis: float = 10_000, **kwargs: Any) -> Any:
            metric = otel._activation_metric()
            if metric is not None:
                metrics_data = _appended(metrics_data, metric)
            return exporter.export(metrics_data, timeout_millis=timeout_millis, **kwargs)

        def force_flush(self, timeout_millis: float = 10_000) -> bool:
            return exporter.force_flush(timeout_millis)

        def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
            exporter.shutdown(timeout_millis=timeout_millis, **kwargs)

    def _appended(data: Any, metric: Any) -> Any:
        resources = list(data.resource_metrics) if data is not None else []
        if not resources:
            resources = [ResourceMetrics(otel.resource, [], "")]
        first = resources[0]
        scopes = list(first.scope_metrics)
        for i, sm in enumerate(scopes):
            if sm.scope.name == _SCOPE:  # the request histogram's scope: put the histograms beside it
                scopes[i] = ScopeMetrics(sm.scope, [*sm.metrics, metric], sm.schema_url)
                break
        else:
            scopes.append(ScopeMetrics(scope, [metric], ""))
        resources[0] = ResourceMetrics(first.resource, scopes, first.schema_url)
        return MetricsData(resources)

    return _ActivationExporter()
