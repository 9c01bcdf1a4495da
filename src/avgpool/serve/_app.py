"""The FastAPI app of ``avgpool serve``: Open Inference Protocol v2 routes, ``/metrics``, live
profiles, readiness and the admin endpoints.

Model runs, request decoding and encoding happen on a thread pool, never on the event loop, so a
slow model or a large body does not stall health checks and scrapes. Every refused request is a
v2 error ``{"error": message}`` with its status, counted by kind in
``avgpool_request_errors_total``; a model that raises answers 500 and the server keeps serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import ipaddress
import logging
import os
import tempfile
import threading
import time
import zlib
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException

from avgpool._errors import AvgPoolError
from avgpool.serve._canary import Canaries, register_judge
from avgpool.serve._protocol import HEADER_LENGTH, V2Error, decode_request, encode_response
from avgpool.serve._runners import ModelRunError

__all__ = ["AppState", "ModelRepository", "create_app", "register_judge"]

log = logging.getLogger("avgpool.serve")


class _NoTracing:
    """Stands in for `avgpool.serve._otel.Otel` where that module is not installed."""

    def span(self, name: str, **attributes: Any) -> Any:
        return contextlib.nullcontext(self)

    def request_span(self, *args: Any, **kwargs: Any) -> Any:
        return contextlib.nullcontext(self)

    def set_status_code(self, status: int) -> None:
        pass

    def record_request(self, seconds: float, model: str, version: str, status: int) -> None:
        pass

    def observe_activations(self, callback: Any, *, window: float | None = None) -> None:
        pass

    def shutdown(self, timeout: float = 10.0) -> None:
        pass


def setup_tracing() -> Any:
    """The server's OpenTelemetry from the ``OTEL_*`` environment (a no-op without an endpoint,
    or without the tracing module)."""
    import importlib

    try:
        _otel = importlib.import_module("avgpool.serve._otel")
    except ModuleNotFoundError as exc:  # pragma: no cover - depends on the install
        if exc.name != "avgpool.serve._otel":
            raise
        return _NoTracing()
    return _otel.setup(service_name="avgpool-serve")


def version_key(versions: Sequence[str]) -> Any:
    """Sort key for versions: numeric order when every version is a number, else lexical."""
    if all(v.isdigit() for v in versions):
        return int
    return str


class ModelRepository:
    """The runners served, by name and version; a name without a version means its highest."""

    def __init__(self, runners: Sequence[Any]) -> None:
        self.models: dict[str, dict[str, Any]] = {}
        for runner in runners:
            versions = self.models.setdefault(runner.name, {})
            if runner.version in versions:
                raise AvgPoolError(
                    f"model {runner.name!r} version {runner.version!r} is given twice; give each "
                    f"version once (MODEL as NAME:VERSION=PATH)"
                )
            versions[runner.version] = runner

    def runners(self) -> Iterator[Any]:
        for versions in self.models.values():
            yield from versions.values()

    def versions(self, name: str) -> list[str]:
        versions = list(self.models[name])
        return sorted(versions, key=version_key(versions))

    def resolve(self, name: str, version: str | None = None) -> Any:
        """The runner for ``name`` (and ``version``; its highest when None), or V2Error 404."""
        if name not in self.models:
            raise V2Error(404, f"unknown model {name!r}; this server serves {sorted(self.models)}")
        if version is None:
            version = self.versions(name)[-1]
        runner = self.models[name].get(version)
        if runner is None:
            raise V2Error(
                404, f"model {name!r} has no version {version!r}; it has versions {self.versions(name)}"
            )
        return runner


@dataclass
class AppState:
    """What the app serves and how: the runners, the telemetry, the limits, readiness."""

    repository: ModelRepository
    telemetry: Any
    max_body_bytes: int = 64 * 2**20
    admin: bool = False
    warmup: bool = True
    load_seconds: dict[tuple[str, str], float] = field(default_factory=dict)
    threads: int | None = None
    ready: set[tuple[str, str]] = field(default_factory=set)
    faults: dict[tuple[str, str], float] = field(default_factory=dict)
    warmup_errors: dict[tuple[str, str], str] = field(default_factory=dict)
    warmed_up: threading.Event = field(default_factory=threading.Event)
    otel: Any = None
    workers: int = 1
    canaries: Canaries = field(default_factory=Canaries)

    def all_ready(self) -> bool:
        return all((r.name, r.version) in self.ready for r in self.repository.runners())

    def mark_ready(self, runner: Any, seconds: float) -> None:
        """Export ``seconds`` of start-up (load and warm-up) and mark the model ready."""
        model = self.telemetry.model(runner.name, runner.version)
        model.startup(seconds)
        model.set_ready(True)
        self.ready.add((runner.name, runner.version))

    def warm_up(self) -> None:
        """Warm every model up in turn (its kernels compile), then mark it ready."""
        try:
            for runner in self.repository.runners():
                key = (runner.name, runner.version)
                try:
                    seconds = runner.warmup() if self.warmup else 0.0
                except Exception as exc:  # the model stays unready; readiness says so
                    self.warmup_errors[key] = f"{type(exc).__name__}: {exc}"
                    log.error("warm-up of %s version %s failed: %s", *key, self.warmup_errors[key])
                    continue
                self.mark_ready(runner, self.load_seconds.get(key, 0.0) + seconds)
                log.info("model %s version %s ready (warm-up %.2f s)", *key, seconds)
        finally:
            self.warmed_up.set()


def _is_loopback(host: str | None) -> bool:
    try:
        return host is not None and ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def _read_body(request: Any, limit: int) -> bytearray:
    """The request body, refused with 413 as soon as it is known to exceed ``limit`` bytes."""
    too_large = V2Error(413, f"the request body exceeds --max-body-mb ({limit / 2**20:.3g} MiB)")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise too_large
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding not in ("gzip", "deflate"):
        raise V2Error(400, f"Content-Encoding {encoding!r} is not supported (gzip, deflate)", "unsupported")
    inflate = zlib.decompressobj(wbits=47)  # zlib or gzip framing, detected from the header
    try:
        plain = inflate.decompress(bytes(body), limit + 1)
    except zlib.error as exc:
        raise V2Error(400, f"the {encoding} request body does not decompress: {exc}") from None
    if len(plain) > limit:
        raise too_large
    if not inflate.eof:
        raise V2Error(400, f"the {encoding} request body is truncated")
    return bytearray(plain)


def _metadata(repository: ModelRepository, runner: Any) -> dict[str, Any]:
    def tensors(specs: Sequence[Any]) -> list[dict[str, Any]]:
        return [{"name": s.name, "datatype": s.datatype, "shape": list(s.shape)} for s in specs]

    return {
        "name": runner.name,
        "versions": repository.versions(runner.name),
        "platform": runner.platform,
        "inputs": tensors(runner.inputs),
        "outputs": tensors(runner.outputs),
    }


def _model_run(state: AppState, runner: Any, inputs: Any, sample: bool) -> tuple[Any, Any, float]:
    """Run the model once, with any injected fault latency: outputs, pooling outputs, seconds;
    its failures as V2Error."""
    start = time.perf_counter()
    delay = state.faults.get((runner.name, runner.version), 0.0)
    if delay > 0:
        time.sleep(delay)
    try:
        outputs, pooling = runner.run(inputs, sample=sample)
    except V2Error:
        raise
    except AvgPoolError as exc:
        if isinstance(exc, ModelRunError):
            raise V2Error(500, str(exc), "model_error") from exc
        raise V2Error(400, str(exc)) from exc
    except Exception as exc:
        log.exception("model %s version %s raised", runner.name, runner.version)
        raise V2Error(500, f"model {runner.name} failed: {type(exc).__name__}: {exc}") from exc
    return outputs, pooling, time.perf_counter() - start


def _shadow_run(state: AppState, runner: Any, inputs: Any) -> tuple[Any, float]:
    """A mirrored request on a shadow canary's candidate (the shadow thread): outputs, seconds."""
    if (runner.name, runner.version) not in state.ready:
        raise V2Error(503, f"model {runner.name} version {runner.version} is not ready (warming up)")
    model = state.telemetry.model(runner.name, runner.version)
    sample = model.should_sample()
    outputs, pooling, seconds = _model_run(state, runner, inputs, sample)
    if sample and pooling:
        model.observe_pooling(pooling)
    return outputs, seconds


def _run_infer(
    state: AppState, runner: Any, body: bytearray, header_length: str | None, mirror: Any = None
) -> tuple[Any, ...]:
    """Decode, run and encode one request (on a pool thread): body, header length, model seconds,
    rows. ``mirror(inputs, outputs)`` (a shadow canary) gets the decoded inputs and the outputs
    (None when the model failed) once the model has run."""
    span = state.otel.span
    attrs = {"avgpool.model": runner.name, "avgpool.version": runner.version}
    model = state.telemetry.model(runner.name, runner.version)
    with span("decode", **attrs):
        request = decode_request(body, header_length)
    sample = model.should_sample()
    with span("model", **attrs, **{"avgpool.sampled": sample}):
        try:
            outputs, pooling, model_seconds = _model_run(state, runner, request.inputs, sample)
        except V2Error:
            if mirror is not None:
                mirror(request.inputs, None)
            raise
    if mirror is not None:
        mirror(request.inputs, outputs)
    if sample and pooling:
        with span("telemetry", **attrs):
            model.observe_pooling(pooling)
    with span("encode", **attrs):
        content, json_length = encode_response(runner.name, runner.version, outputs, request)
    return content, json_length, model_seconds, request.rows


def create_app(state: AppState) -> Any:
    """The FastAPI app serving ``state``; its lifespan starts the telemetry and the warm-up."""
    executor = ThreadPoolExecutor(max_workers=state.threads or max(4, os.cpu_count() or 1))
    state.canaries.run = lambda runner, inputs: _shadow_run(state, runner, inputs)
    state.canaries.on_error = lambda exc: (
        (exc.kind, exc.status) if isinstance(exc, V2Error) else ("model_error", 500)
    )
    state.telemetry.canaries = state.canaries  # the canary families of /metrics

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> Any:
        if state.otel is None:
            state.otel = setup_tracing()
        state.otel.observe_activations(lambda: _activation_sources(state), window=state.telemetry.window)
        state.telemetry.start()
        warmer = threading.Thread(target=state.warm_up, name="avgpool-warmup", daemon=True)
        warmer.start()
        try:
            yield
        finally:
            state.canaries.stop()
            state.telemetry.stop()
            state.otel.shutdown()
            executor.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(
        title="avgpool serve",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        **_without_native_telemetry(),
    )
    app.state.avgpool = state

    async def in_thread(fn: Any, *args: Any) -> Any:
        # copy the context so spans opened in the thread are children of the request's span
        context = contextvars.copy_context()
        return await asyncio.get_running_loop().run_in_executor(executor, context.run, fn, *args)

    def error(exc: V2Error, model: str = "", version: str = "", count: bool = True) -> Any:
        if count:
            state.telemetry.observe_error(exc.kind, model, version)
        return JSONResponse({"error": exc.message}, status_code=exc.status)

    def resolve(name: str, version: str | None) -> Any:
        return state.repository.resolve(name, version)

    def refused(exc: V2Error, name: str) -> Any:
        # an unknown name is counted under model="" so clients cannot grow the label set
        return error(exc, name if name in state.repository.models else "", "")

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Any:
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code)

    @app.get("/v2")
    async def server_metadata() -> Any:
        return {"name": "avgpool", "version": _package_version(), "extensions": ["binary_tensor_data"]}

    @app.get("/v2/health/live")
    async def live() -> Any:
        return {"live": True}

    @app.get("/v2/health/ready")
    async def ready() -> Any:
        if state.all_ready():
            return {"ready": True}
        waiting = sorted(
            f"{r.name}:{r.version}"
            for r in state.repository.runners()
            if (r.name, r.version) not in state.ready
        )
        return JSONResponse({"ready": False, "error": f"not ready: warming up {waiting}"}, status_code=503)

    async def model_metadata(request: Request, name: str, version: str | None) -> Any:
        try:
            runner = resolve(name, version)
        except V2Error as exc:
            return refused(exc, name)
        return _metadata(state.repository, runner)

    async def model_ready(request: Request, name: str, version: str | None) -> Any:
        try:
            runner = resolve(name, version)
        except V2Error as exc:
            return error(exc, count=False)
        if (runner.name, runner.version) in state.ready:
            return {"name": runner.name, "version": runner.version, "ready": True}
        detail = state.warmup_errors.get((runner.name, runner.version), "warming up")
        message = f"model {runner.name} version {runner.version} is not ready: {detail}"
        return JSONResponse({"error": message, "ready": False}, status_code=503)

    async def infer(request: Request, name: str, version: str | None) -> Any:
        start = time.perf_counter()
        canary = state.canaries.get(name) if version is None else None
        mirror = None
        try:
            runner, failure = resolve(name, canary.route() if canary else version), None
        except V2Error as exc:
            runner, failure = None, exc
        if canary is not None and canary.mode == "shadow" and runner is not None:
            candidate = resolve(name, canary.candidate)

            def mirror(inputs: Any, outputs: Any) -> None:
                state.canaries.mirror(canary, candidate, inputs, outputs)

        model, ver = (runner.name, runner.version) if runner is not None else (None, None)
        route = getattr(request.scope.get("route"), "path", request.url.path)
        extra = {"url.path": request.url.path}
        with state.otel.request_span("POST", route, model, ver, headers=request.headers, **extra) as span:
            if runner is not None:
                try:
                    if (runner.name, runner.version) not in state.ready:
                        raise V2Error(503, f"model {model} version {ver} is not ready (warming up)")
                    body = await _read_body(request, state.max_body_bytes)
                    content, json_length, model_seconds, rows = await in_thread(
                        _run_infer, state, runner, body, request.headers.get(HEADER_LENGTH), mirror
                    )
                except V2Error as exc:
                    failure = exc
            status = 200 if failure is None else failure.status
            span.set_status_code(status)
        seconds = time.perf_counter() - start
        state.otel.record_request(seconds, model or "", ver or "", status)
        if canary is not None and runner is not None:
            if failure is None:
                canary.answered(ver, model_seconds)
            else:
                canary.failed(ver, failure.kind, failure.status)
        if failure is not None:
            return refused(failure, name) if runner is None else error(failure, model, ver)
        state.telemetry.model(model, ver).observe(
            request_seconds=seconds, model_seconds=model_seconds, rows=rows
        )
        headers = {} if json_length is None else {HEADER_LENGTH: str(json_length)}
        media = "application/json" if json_length is None else "application/octet-stream"
        return Response(content, media_type=media, headers=headers)

    async def profile(request: Request, name: str, version: str | None) -> Any:
        try:
            runner = resolve(name, version)
        except V2Error as exc:
            return refused(exc, name)
        content = await in_thread(_profile_bytes, state.telemetry.model(runner.name, runner.version))
        filename = f"{runner.name}-{runner.version}.avgprof"
        return Response(
            content,
            media_type="application/octet-stream",
            headers={"Content-Disposition": f'attachment; filename="{filename}"'},
        )

    def endpoint(handler: Any) -> Any:
        async def route(request: Request) -> Any:
            params = request.path_params
            return await handler(request, params["model_name"], params.get("model_version"))

        return route

    for base in ("/v2/models/{model_name}", "/v2/models/{model_name}/versions/{model_version}"):
        app.get(base)(endpoint(model_metadata))
        app.get(base + "/ready")(endpoint(model_ready))
        app.post(base + "/infer")(endpoint(infer))
        app.get(base + "/profile")(endpoint(profile))

    @app.get("/metrics")
    async def metrics() -> Any:
        body, content_type = await in_thread(state.telemetry.exposition)
        return Response(body, headers={"Content-Type": content_type})

    if state.admin:
        from avgpool.serve._canary_routes import add_routes

        _admin_routes(app, state, resolve)
        add_routes(app, state, in_thread, _is_loopback)
    return app


def _without_native_telemetry() -> dict[str, Any]:
    """FastAPI's own OpenTelemetry off (FastAPI versions that have it): the server's tracing
    makes the request spans, and a second server span per request would start its own trace."""
    import inspect

    if "telemetry" not in inspect.signature(FastAPI.__init__).parameters:
        return {}
    off = {"tracing": False, "metrics": False, "logs": False, "operation_spans": False}
    return {"telemetry": {**off, "auto_configure": False}}


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("avgpool")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def _activation_sources(state: AppState) -> list[tuple[str, str, Any]]:
    """(model, version, profile) of each model for the OTLP activation histograms. With several
    workers each exports its own share (a backend adds the workers' instances up), so the merged
    window, which every worker can read, is not sent N times."""
    out = []
    for model in state.telemetry.models:
        own = getattr(model, "_own_window", None)
        profile = own() if state.workers > 1 and own is not None else model.live_profile()
        out.append((model.name, model.version, profile))
    return out


def _profile_bytes(model: Any) -> bytes:
    """The model's live window as the bytes of an ``.avgprof`` file."""
    profile = model.live_profile()
    with tempfile.TemporaryDirectory(prefix="avgpool-profile-") as tmp:
        path = os.path.join(tmp, "live.avgprof")
        profile.save(path)
        with open(path, "rb") as f:
            return f.read()


def _admin_routes(app: Any, state: AppState, resolve: Any) -> None:
    """POST /admin/faults and /admin/deploy-window, for loopback clients only."""

    async def admin_body(request: Request, amount: str) -> tuple[Any, float] | Any:
        if not _is_loopback(request.client.host if request.client else None):
            return JSONResponse({"error": "admin endpoints answer loopback clients only"}, status_code=403)
        try:
            doc = await request.json()
        except ValueError as exc:
            return JSONResponse({"error": f"malformed JSON in the request body: {exc}"}, status_code=400)
        if not isinstance(doc, dict) or not isinstance(doc.get("model"), str):
            return JSONResponse(
                {"error": f'the body must be {{"model": ..., "{amount}": ...}}'}, status_code=400
            )
        value = doc.get(amount)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1e6:
            return JSONResponse({"error": f"{amount} must be a number >= 0, got {value!r}"}, status_code=400)
        version = doc.get("version")
        try:
            runner = resolve(doc["model"], None if version is None else str(version))
        except V2Error as exc:
            return JSONResponse({"error": exc.message}, status_code=exc.status)
        return runner, float(value)

    @app.post("/admin/faults")
    async def faults(request: Request) -> Any:
        got = await admin_body(request, "latency_ms")
        if not isinstance(got, tuple):
            return got
        runner, ms = got
        key = (runner.name, runner.version)
        if ms > 0:
            state.faults[key] = ms / 1000
        else:
            state.faults.pop(key, None)
        state.telemetry.model(*key).set_fault_latency(ms / 1000)
        return {"model": runner.name, "version": runner.version, "latency_ms": ms}

    @app.post("/admin/deploy-window")
    async def deploy_window(request: Request) -> Any:
        got = await admin_body(request, "minutes")
        if not isinstance(got, tuple):
            return got
        runner, minutes = got
        state.telemetry.model(runner.name, runner.version).set_deploy_window(minutes)
        return {"model": runner.name, "version": runner.version, "minutes": minutes}
