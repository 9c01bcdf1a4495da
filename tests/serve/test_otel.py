"""The server's OpenTelemetry: what reaches a real OTLP/HTTP receiver, decoded from protobuf."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

pytest.importorskip("opentelemetry.sdk")
pytest.importorskip("opentelemetry.exporter.otlp.proto.http")
pytest.importorskip("opentelemetry.proto")

from google.protobuf.json_format import MessageToDict, ParseDict
from opentelemetry.proto.metrics.v1 import metrics_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from avgpool.monitor import Profile
from avgpool.serve import _otel

from .otlp_receiver import OTLPReceiver, attributes

ROUTE = "/v2/models/{model_name}/infer"
SERVER, INTERNAL = trace_pb2.Span.SPAN_KIND_SERVER, trace_pb2.Span.SPAN_KIND_INTERNAL
ERROR, UNSET = trace_pb2.Status.STATUS_CODE_ERROR, trace_pb2.Status.STATUS_CODE_UNSET
CUMULATIVE = metrics_pb2.AGGREGATION_TEMPORALITY_CUMULATIVE


def _clear_otel_env(monkeypatch):
    for key in list(os.environ):
        if key.startswith("OTEL_"):
            monkeypatch.delenv(key)


@pytest.fixture
def receiver(monkeypatch):
    _clear_otel_env(monkeypatch)
    with OTLPReceiver() as rx:
        for key, val in rx.environ().items():
            monkeypatch.setenv(key, val)
        yield rx


@pytest.fixture
def make_otel():
    made = []

    def make(**kwargs):
        otel = _otel.setup(set_global=False, **kwargs)
        made.append(otel)
        return otel

    try:
        yield make
    finally:
        for otel in made:
            otel.shutdown(timeout=2)


def _by_name(spans):
    return {span.name: (res, span) for res, span in spans}


def test_a_request_span_has_its_steps_as_children_with_the_http_and_model_attributes(receiver, make_otel):
    otel = make_otel()
    assert (otel.enabled, otel.tracing, otel.metering) == (True, True, True)
    with otel.request_span("POST", ROUTE, "resnet", "2", **{"url.path": "/v2/models/resnet/infer"}) as req:
        for step in ("decode", "model", "telemetry", "encode"):
            with otel.span(step, rows=4):
                pass
        req.set_status_code(200)
    assert req.is_recording is False  # ended
    assert len(req.trace_id) == 32
    spans = _by_name(receiver.wait_for(lambda rx: len(rx.spans()) >= 5 and rx.spans()))
    assert sorted(spans) == sorted([f"POST {ROUTE}", "decode", "model", "telemetry", "encode"])
    res, root = spans[f"POST {ROUTE}"]
    assert res["service.name"] == "avgpool-serve"
    assert root.kind == SERVER and root.status.code == UNSET and root.parent_span_id == b""
    assert root.trace_id.hex() == req.trace_id
    assert attributes(root.attributes) == {
        "http.request.method": "POST",
        "http.route": ROUTE,
        "url.path": "/v2/models/resnet/infer",
        "avgpool.model": "resnet",
        "avgpool.version": "2",
        "http.response.status_code": 200,
    }
    children = [spans[s][1] for s in ("decode", "model", "telemetry", "encode")]
    for child in children:
        assert (child.kind, child.trace_id, child.parent_span_id) == (INTERNAL, root.trace_id, root.span_id)
        assert attributes(child.attributes) == {"rows": 4}
    # the steps ran one after another, inside the request
    starts = [c.start_time_unix_nano for c in children]
    assert starts == sorted(starts) and root.start_time_unix_nano <= starts[0]
    assert children[-1].end_time_unix_nano <= root.end_time_unix_nano


def test_an_exception_is_recorded_and_marks_the_spans_as_errors(receiver, make_otel):
    otel = make_otel()
    with pytest.raises(RuntimeError, match="kernel exploded"):
        with otel.request_span("POST", ROUTE, "resnet", "1"):
            with otel.span("model"):
                raise RuntimeError("kernel exploded")
    spans = _by_name(receiver.wait_for(lambda rx: len(rx.spans()) >= 2 and rx.spans()))
    for name in ("model", f"POST {ROUTE}"):
        span = spans[name][1]
        assert span.status.code == ERROR and "kernel exploded" in span.status.message
        (event,) = span.events
        assert event.name == "exception"
        assert attributes(event.attributes)["exception.type"] == "RuntimeError"
        assert attributes(event.attributes)["exception.message"] == "kernel exploded"


@pytest.mark.parametrize(("status", "code", "error_type"), [(500, ERROR, "500"), (404, UNSET, None)])
def test_a_server_error_status_marks_the_span_and_a_client_error_does_not(
    receiver, make_otel, status, code, error_type
):
    otel = make_otel()
    with otel.request_span("POST", ROUTE, "resnet", "1") as req:
        req.set_status_code(status)
    ((_, span),) = receiver.wait_for(lambda rx: rx.spans())
    attrs = attributes(span.attributes)
    assert (span.status.code, attrs["http.response.status_code"], attrs.get("error.type")) == (
        code,
        status,
        error_type,
    )


def test_a_traceparent_header_continues_the_callers_trace(receiver, make_otel):
    otel = make_otel()
    trace_id, parent = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
    headers = {"traceparent": f"00-{trace_id}-{parent}-01", "content-type": "application/json"}
    with otel.request_span("POST", ROUTE, "resnet", "1", headers=headers) as req:
        with otel.span("model"):
            pass
    assert req.trace_id == trace_id
    spans = _by_name(receiver.wait_for(lambda rx: len(rx.spans()) >= 2 and rx.spans()))
    root, child = spans[f"POST {ROUTE}"][1], spans["model"][1]
    assert (root.trace_id.hex(), root.parent_span_id.hex()) == (trace_id, parent)
    assert (child.trace_id.hex(), child.parent_span_id) == (trace_id, root.span_id)


def test_concurrent_requests_keep_their_own_children_across_awaits_and_worker_threads(receiver, make_otel):
    # what the server does: async handlers interleaved on one loop, the model run on a worker thread
    import asyncio

    run_in_threadpool = pytest.importorskip("starlette.concurrency").run_in_threadpool
    otel = make_otel()

    def run_model(model):
        with otel.span("model", **{"avgpool.model": model}):
            time.sleep(0.01)

    async def handle(model):
        with otel.request_span("POST", ROUTE, model, "1"):
            with otel.span("decode", **{"avgpool.model": model}):
                await asyncio.sleep(0.01)  # the other request runs here
            await run_in_threadpool(run_model, model)

    async def main():
        await asyncio.gather(*(handle(m) for m in ("a", "b", "c")))

    asyncio.run(main())
    spans = [s for _, s in receiver.wait_for(lambda rx: len(rx.spans()) >= 9 and rx.spans())]
    roots = {attributes(s.attributes)["avgpool.model"]: s for s in spans if s.kind == SERVER}
    assert sorted(roots) == ["a", "b", "c"] and len({r.trace_id for r in roots.values()}) == 3
    for child in (s for s in spans if s.kind != SERVER):
        root = roots[attributes(child.attributes)["avgpool.model"]]
        assert (child.trace_id, child.parent_span_id) == (root.trace_id, root.span_id), child.name


def _live_profile():
    p = Profile(max_buckets=16)
    rng = np.random.default_rng(0)
    p.update("features.pool", rng.normal(1.0, 2.0, size=(8, 3, 4, 4)))
    p.update("head.avgpool", np.array([[0.0, 0.5], [2.0, -4.0]]))
    p.update("never.reached", np.empty((0, 2)))  # no values yet: not exported
    return p


def test_request_durations_and_the_live_activation_histograms_arrive_as_otlp_metrics(receiver, make_otel):
    otel = make_otel(resource_attributes={"service.version": "9.9"})
    for seconds, status in [(0.004, 200), (0.030, 200), (1.5, 500)]:
        otel.record_request(seconds, "resnet", "2", status)
    profile = _live_profile()
    otel.observe_activations(lambda: [("resnet", "2", profile)], window=300.0)
    before = time.time_ns()

    def arrived(rx):
        return rx.metrics("avgpool.request.duration") and rx.metrics("avgpool.activation")

    receiver.wait_for(arrived, timeout=5)  # OTEL_METRIC_EXPORT_INTERVAL=200 ms: no flush needed
    (res, duration) = receiver.metrics("avgpool.request.duration")[-1]
    assert (res["service.name"], res["service.version"]) == ("avgpool-serve", "9.9")
    assert (duration.unit, duration.WhichOneof("data")) == ("s", "histogram")
    assert duration.histogram.aggregation_temporality == CUMULATIVE
    points = {
        attributes(p.attributes)["http.response.status_code"]: p for p in duration.histogram.data_points
    }
    assert sorted(points) == [200, 500]
    ok = points[200]
    assert attributes(ok.attributes) == {
        "avgpool.model": "resnet",
        "avgpool.version": "2",
        "http.response.status_code": 200,
    }
    assert list(ok.explicit_bounds) == list(_otel.REQUEST_DURATION_BUCKETS)
    assert (ok.count, ok.sum, ok.min, ok.max) == (2, pytest.approx(0.034), 0.004, 0.030)
    assert list(ok.bucket_counts)[:5] == [1, 0, 0, 1, 0]  # 4 ms <= 5 ms; 30 ms in (25 ms, 50 ms]
    assert points[500].count == 1

    (_, activation) = receiver.metrics("avgpool.activation")[-1]
    assert (activation.unit, activation.WhichOneof("data")) == ("", "exponential_histogram")
    assert activation.exponential_histogram.aggregation_temporality == CUMULATIVE
    layers = {
        attributes(p.attributes)["avgpool.layer"]: p for p in activation.exponential_histogram.data_points
    }
    assert sorted(layers) == ["features.pool", "head.avgpool"]
    for name, point in layers.items():
        assert attributes(point.attributes) == {
            "avgpool.model": "resnet",
            "avgpool.version": "2",
            "avgpool.layer": name,
        }
        # exactly the profile's own histogram: scale, buckets, count, sum, min and max
        want = ParseDict(profile[name].otlp(), metrics_pb2.ExponentialHistogramDataPoint())
        got = metrics_pb2.ExponentialHistogramDataPoint()
        got.CopyFrom(point)
        for f in ("attributes", "start_time_unix_nano", "time_unix_nano"):
            got.ClearField(f)
        assert MessageToDict(got) == MessageToDict(want)
        # what a backend checks before it takes a point: the buckets hold every value counted
        assert point.count == point.zero_count + sum(point.positive.bucket_counts) + sum(
            point.negative.bucket_counts
        )
        # the point covers the live window: it starts no earlier than setup, ends at the export
        assert point.start_time_unix_nano <= before <= point.time_unix_nano
    assert layers["head.avgpool"].count == 4 and layers["head.avgpool"].zero_count == 1

    # M3 and M4 per layer (all channels together), beside the histograms
    for statistic in ("mean", "std"):
        (_, gauge) = receiver.metrics(f"avgpool.activation.{statistic}")[-1]
        assert (gauge.unit, gauge.WhichOneof("data")) == ("", "gauge")
        got = {attributes(p.attributes)["avgpool.layer"]: p for p in gauge.gauge.data_points}
        assert sorted(got) == sorted(layers)
        for name, point in got.items():
            assert attributes(point.attributes) == attributes(layers[name].attributes)
            assert point.as_double == pytest.approx(profile[name].totals()[statistic], rel=1e-12)


def test_an_activation_point_starts_where_the_live_window_starts(receiver, make_otel):
    otel = make_otel()
    profile = _live_profile()
    otel.observe_activations(lambda: [("resnet", "2", profile)], window=0.05)
    # exports every 200 ms: by the second one the window is younger than the process
    (_, metric) = receiver.wait_for(lambda rx: rx.metrics("avgpool.activation")[1:])[-1]
    for point in metric.exponential_histogram.data_points:
        assert point.time_unix_nano - point.start_time_unix_nano == 50_000_000


def test_the_collector_can_ask_for_exponential_request_histograms(receiver, make_otel, monkeypatch):
    monkeypatch.setenv(
        "OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION", "base2_exponential_bucket_histogram"
    )
    otel = make_otel()
    otel.record_request(0.02, "resnet", "1", 200)
    (_, metric) = receiver.wait_for(lambda rx: rx.metrics("avgpool.request.duration"))[-1]
    assert metric.WhichOneof("data") == "exponential_histogram"
    assert metric.exponential_histogram.data_points[0].count == 1


def test_the_standard_variables_name_the_service_add_headers_compress_and_sample(
    receiver, make_otel, monkeypatch
):
    monkeypatch.setenv("OTEL_SERVICE_NAME", "pool-prod")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment.name=staging")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-tenant=ml-platform")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_off")
    otel = make_otel(service_name="ignored-when-the-environment-names-it")
    with otel.request_span("POST", ROUTE, "resnet", "1") as req:
        assert not req.is_recording  # sampled out: nothing to annotate, nothing sent
    otel.record_request(0.01, "resnet", "1", 200)
    assert otel.force_flush(timeout=5)
    (export, *_) = receiver.wait_for(lambda rx: rx.received("/v1/metrics"))
    assert export.compressed and export.headers["x-tenant"] == "ml-platform"
    res = attributes(export.message.resource_metrics[0].resource.attributes)
    assert (res["service.name"], res["deployment.environment.name"]) == ("pool-prod", "staging")
    assert len(res["service.instance.id"]) == 36  # a UUID: each worker process its own series
    assert receiver.received("/v1/traces") == []  # the flush sent every span there was: none


def test_an_endpoint_for_traces_alone_sends_no_metrics(receiver, make_otel, monkeypatch):
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", receiver.url + "/v1/traces")
    otel = make_otel()
    assert (otel.tracing, otel.metering) == (True, False)
    otel.record_request(0.01, "resnet", "1", 200)  # a no-op: no meter provider
    with otel.request_span("GET", "/v2/health/ready"):
        pass
    otel.force_flush(timeout=5)
    ((_, span),) = receiver.wait_for(lambda rx: rx.spans())
    # no model on this route: the attributes say nothing rather than "None"
    assert (span.name, attributes(span.attributes)) == (
        "GET /v2/health/ready",
        {"http.request.method": "GET", "http.route": "/v2/health/ready"},
    )
    assert receiver.received("/v1/metrics") == []


def test_a_protocol_the_server_cannot_speak_is_said_once_per_signal(receiver, make_otel, monkeypatch, caplog):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "http/protobuf")
    make_otel()
    warned = [r.getMessage() for r in caplog.records if "OTEL_EXPORTER_OTLP_PROTOCOL" in r.getMessage()]
    assert len(warned) == 1 and "'grpc'" in warned[0] and "sends traces as http/protobuf only" in warned[0]


def test_shutdown_sends_what_is_still_queued(receiver, make_otel, monkeypatch):
    # intervals far longer than the test: only shutdown can have sent these
    monkeypatch.setenv("OTEL_METRIC_EXPORT_INTERVAL", "600000")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "600000")
    otel = make_otel()
    with otel.request_span("POST", ROUTE, "resnet", "1"):
        pass
    otel.record_request(0.01, "resnet", "1", 200)
    time.sleep(0.3)
    assert receiver.exports == []
    otel.shutdown(timeout=5)
    assert [s.name for _, s in receiver.spans()] == [f"POST {ROUTE}"]
    assert receiver.metrics("avgpool.request.duration")
    # after shutdown every method is a no-op
    assert (otel.enabled, otel.span("x").__enter__().trace_id) == (False, "")
    otel.record_request(0.01, "resnet", "1", 200)
    otel.shutdown()


def test_a_request_never_waits_on_a_slow_collector(receiver, make_otel):
    receiver.delay = 1.0  # each export takes a second to answer
    otel = make_otel()
    t0 = time.perf_counter()
    for _ in range(200):
        with otel.request_span("POST", ROUTE, "resnet", "1") as req:
            with otel.span("model"):
                pass
            req.set_status_code(200)
        otel.record_request(0.01, "resnet", "1", 200)
    per_request = (time.perf_counter() - t0) / 200
    assert per_request < 0.005, per_request  # queueing only: a blocking export would take 1 s
    receiver.delay = 0.0


def test_a_failing_activation_callback_leaves_the_request_metrics_flowing(receiver, make_otel, caplog):
    otel = make_otel()

    def broken():
        raise RuntimeError("telemetry went away")

    otel.observe_activations(broken)
    otel.record_request(0.01, "resnet", "1", 200)
    receiver.wait_for(lambda rx: rx.metrics("avgpool.request.duration"))
    assert receiver.metrics("avgpool.activation") == []
    assert "activation callback failed" in caplog.text


_NOOP_SCRIPT = textwrap.dedent(
    """
    import json, sys, threading
    before = threading.active_count()
    from avgpool.serve._otel import setup
    otel = setup()
    parent = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
    with otel.request_span("POST", "/v2/models/{model_name}/infer", "m", "1", headers=parent) as s:
        with otel.span("model", rows=1):
            s.set_status_code(500)
    otel.record_request(0.1, "m", "1", 200)
    otel.observe_activations(lambda: [])
    otel.force_flush()
    otel.shutdown()
    print(json.dumps({
        "enabled": otel.enabled,
        "trace_id": s.trace_id,
        "threads": threading.active_count() - before,
        "otel_modules": sorted(m for m in sys.modules if m.startswith("opentelemetry")),
    }))
    """
)


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"},
        {"OTEL_SDK_DISABLED": "TRUE", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"},
        {
            "OTEL_TRACES_EXPORTER": "none",
            "OTEL_METRICS_EXPORTER": "none",
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:1",
        },
    ],
    ids=["no-endpoint", "sdk-disabled", "sdk-disabled-upper-case", "exporters-none"],
)
def test_without_an_endpoint_nothing_is_imported_and_no_thread_starts(env):
    # a fresh interpreter: this one has imported the SDK for the other tests
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    src = os.path.join(os.path.dirname(_otel.__file__), "..", "..")
    clean["PYTHONPATH"] = os.pathsep.join([os.path.abspath(src), clean.get("PYTHONPATH", "")])
    out = subprocess.run(
        [sys.executable, "-c", _NOOP_SCRIPT], env={**clean, **env}, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"enabled": False, "trace_id": "", "threads": 0, "otel_modules": []}


def test_the_global_providers_are_installed_once_and_an_applications_own_are_kept(receiver):
    script = textwrap.dedent(
        """
        import json
        from opentelemetry import metrics, trace
        from opentelemetry.sdk.trace import TracerProvider
        from avgpool.serve._otel import setup
        app = TracerProvider()
        trace.set_tracer_provider(app)  # the embedding application's own tracing
        first = setup()
        second = setup()
        ok = [trace.get_tracer_provider() is app, metrics.get_meter_provider() is first._meter_provider,
              second._meter_provider is not first._meter_provider]
        second.shutdown(timeout=2); first.shutdown(timeout=2)
        print(json.dumps(ok))
        """
    )
    src = os.path.abspath(os.path.join(os.path.dirname(_otel.__file__), "..", ".."))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == [True, True, True]
    assert "Overriding of current" not in out.stderr  # the second setup left the global alone
