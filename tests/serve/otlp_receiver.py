"""An OTLP/HTTP receiver on 127.0.0.1 for tests: it decodes the real protobufs the exporters send.

    with OTLPReceiver() as rx:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", rx.url)   # or env=rx.environ()
        ...
        spans = rx.wait_for(lambda rx: rx.spans() if len(rx.spans()) >= 3 else None)

POSTs to ``/v1/traces``, ``/v1/metrics`` and ``/v1/logs`` (``application/x-protobuf``, gzip or
not) are parsed into the ``opentelemetry-proto`` collector requests and kept, with their headers,
in arrival order. Leaving the ``with`` block stops the server and joins its thread.
"""

from __future__ import annotations

import gzip
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

# skipped, not an error, where the serve extra's test dependencies are absent (--doctest-modules
# imports this module too)
logs_service_pb2 = pytest.importorskip("opentelemetry.proto.collector.logs.v1.logs_service_pb2")
metrics_service_pb2 = pytest.importorskip("opentelemetry.proto.collector.metrics.v1.metrics_service_pb2")
trace_service_pb2 = pytest.importorskip("opentelemetry.proto.collector.trace.v1.trace_service_pb2")
AnyValue = pytest.importorskip("opentelemetry.proto.common.v1.common_pb2").AnyValue

#: path -> (request message, response message)
_SERVICES = {
    "/v1/traces": (trace_service_pb2.ExportTraceServiceRequest, trace_service_pb2.ExportTraceServiceResponse),
    "/v1/metrics": (
        metrics_service_pb2.ExportMetricsServiceRequest,
        metrics_service_pb2.ExportMetricsServiceResponse,
    ),
    "/v1/logs": (logs_service_pb2.ExportLogsServiceRequest, logs_service_pb2.ExportLogsServiceResponse),
}


@dataclass
class Export:
    """One request the receiver accepted."""

    path: str
    message: Any  # the decoded Export*ServiceRequest
    headers: dict[str, str]  # lower-case names
    compressed: bool
    received: float = field(default_factory=time.monotonic)


def value(any_value: AnyValue) -> Any:
    """The Python value of an OTLP ``AnyValue`` (str, bool, int, float, list or bytes)."""
    kind = any_value.WhichOneof("value")
    if kind == "array_value":
        return [value(v) for v in any_value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: value(kv.value) for kv in any_value.kvlist_value.values}
    return getattr(any_value, kind) if kind else None


def attributes(key_values: Any) -> dict[str, Any]:
    """A repeated ``KeyValue`` field as a dict."""
    return {kv.key: value(kv.value) for kv in key_values}


class OTLPReceiver:
    """A threaded HTTP server on 127.0.0.1 (a free port) that keeps the OTLP exports it receives.

    Parameters
    ----------
    delay : float
        Seconds to wait before answering each export (to show that callers never wait on it).
    status : int
        The HTTP status to answer with (a collector that refuses: 400, 503).
    """

    def __init__(self, *, delay: float = 0.0, status: int = 200) -> None:
        self.delay, self.status = delay, status
        self.exports: list[Export] = []
        self._cond = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                service = _SERVICES.get(self.path)
                if service is None:
                    return self._answer(404, b"")
                encoding = (self.headers.get("Content-Encoding") or "").lower()
                try:
                    if encoding == "gzip":
                        body = gzip.decompress(body)
                    elif encoding == "deflate":
                        body = zlib.decompress(body)
                    message = service[0].FromString(body)
                except Exception as exc:  # a malformed export: say why, as a collector does
                    return self._answer(400, str(exc).encode())
                if receiver.delay:
                    time.sleep(receiver.delay)
                headers = {k.lower(): v for k, v in self.headers.items()}
                receiver._add(Export(self.path, message, headers, bool(encoding)))
                if receiver.status != 200:
                    return self._answer(receiver.status, b"")
                self._answer(200, service[1]().SerializeToString())

            def _answer(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:  # quiet: pytest shows what fails
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        # a short poll so that close() returns at once (the default is half a second per receiver)
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.02,), name="otlp-receiver", daemon=True
        )
        self._thread.start()

    # -- where and how to reach it -----------------------------------------------------------------

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``: the value for ``OTEL_EXPORTER_OTLP_ENDPOINT``."""
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def environ(self, *, metric_interval_ms: int = 200, span_delay_ms: int = 50) -> dict[str, str]:
        """Environment variables that send a process's traces and metrics here, promptly."""
        return {
            "OTEL_EXPORTER_OTLP_ENDPOINT": self.url,
            "OTEL_METRIC_EXPORT_INTERVAL": str(metric_interval_ms),
            "OTEL_BSP_SCHEDULE_DELAY": str(span_delay_ms),
            "OTEL_EXPORTER_OTLP_TIMEOUT": "5",
        }

    # -- what arrived ------------------------------------------------------------------------------

    def _add(self, export: Export) -> None:
        with self._cond:
            self.exports.append(export)
            self._cond.notify_all()

    def received(self, path: str | None = None) -> list[Export]:
        """The exports so far (those to `path` only, e.g. ``"/v1/traces"``)."""
        with self._cond:
            return [e for e in self.exports if path is None or e.path == path]

    def spans(self) -> list[tuple[dict[str, Any], Any]]:
        """Every span received: ``(resource attributes, Span message)``."""
        out = []
        for export in self.received("/v1/traces"):
            for rs in export.message.resource_spans:
                res = attributes(rs.resource.attributes)
                out.extend((res, span) for ss in rs.scope_spans for span in ss.spans)
        return out

    def metrics(self, name: str | None = None) -> list[tuple[dict[str, Any], Any]]:
        """Every metric received (named `name` only): ``(resource attributes, Metric message)``,
        oldest first (a periodic reader sends each metric again at every export)."""
        out = []
        for export in self.received("/v1/metrics"):
            for rm in export.message.resource_metrics:
                res = attributes(rm.resource.attributes)
                out.extend(
                    (res, m) for sm in rm.scope_metrics for m in sm.metrics if name is None or m.name == name
                )
        return out

    def wait_for(self, predicate: Callable[[OTLPReceiver], Any], timeout: float = 5.0) -> Any:
        """Wait until ``predicate(self)`` is truthy (it is tried again at each export) and return
        its value; AssertionError after `timeout` seconds, saying what did arrive."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                result = predicate(self)
                if result:
                    return result
                left = deadline - time.monotonic()
                if left <= 0:
                    got = [(e.path, e.message.ByteSize()) for e in self.exports]
                    raise AssertionError(
                        f"OTLP receiver: condition not met within {timeout} s; received {got}"
                    )
                self._cond.wait(left)

    # -- lifetime ----------------------------------------------------------------------------------

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def __enter__(self) -> OTLPReceiver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
