"""``avgpool serve`` against the real client, tritonclient, on 127.0.0.1: health, metadata, infer
with binary and JSON tensors (the same numbers as the model run directly), two versions at once,
every error with its status and message, counted in /metrics, the server still serving after it;
readiness only after warm-up, the live profile, the admin endpoints, the CLI."""

from __future__ import annotations

import json
import os
import threading
import time

import httpx
import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
httpclient = pytest.importorskip("tritonclient.http")
from tritonclient.utils import InferenceServerException  # noqa: E402

from avgpool.serve._server import ServeConfig  # noqa: E402
from tests.serve.conftest import failing_runner, images, infer, metric, run_directly, triton, wait_for  # noqa: E402

MAX_BODY_MB = 0.5


@pytest.fixture(scope="module")
def server(demo_models):
    """tiny versions 1 (base) and 2 (candidate), and boom (raises above 100), every request sampled."""
    from avgpool.serve._runners import load_runner
    from avgpool.serve._server import start_in_thread

    runners = [
        load_runner(demo_models["base"], name="tiny", version="1"),
        load_runner(demo_models["candidate"], name="tiny", version="2"),
        failing_runner(),
    ]
    config = ServeConfig(models=[], port=0, sample_every=1, interval=0.2, window=5, max_body_mb=MAX_BODY_MB)
    config.log_level = "warning"
    config.admin = True
    handle = start_in_thread(config, runners=runners)
    try:
        assert handle.wait_ready(60), handle.state.warmup_errors
        yield handle
    finally:
        handle.stop()
        for runner in runners:
            runner.close()


def test_health_and_metadata(server):
    client = triton(server.url)
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("tiny") and client.is_model_ready("tiny", "1")
    assert not client.is_model_ready("nope")
    meta = client.get_model_metadata("tiny")
    assert meta["name"] == "tiny" and meta["versions"] == ["1", "2"]
    assert meta["platform"] == "onnxruntime_onnx"
    assert meta["inputs"] == [{"name": "image", "datatype": "FP32", "shape": [-1, 3, 32, 32]}]
    assert meta["outputs"] == [{"name": "linear", "datatype": "FP32", "shape": [-1, 10]}]
    assert client.get_model_metadata("tiny", "1") == meta
    assert client.get_server_metadata()["extensions"] == ["binary_tensor_data"]


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_infer_matches_the_model_run_directly(server, demo_models, binary):
    x = images(3, seed=1)
    result = infer(server.url, x, version="1", binary=binary)
    np.testing.assert_allclose(
        result.as_numpy("linear"), run_directly(demo_models["base"], x), rtol=1e-6, atol=1e-6
    )
    assert result.get_response()["model_version"] == "1"


def test_json_outputs_by_name_and_request_id(server, demo_models):
    x = images(2, seed=2)
    outputs = [httpclient.InferRequestedOutput("linear", binary_data=False)]
    result = infer(server.url, x, version="1", binary=False, outputs=outputs, request_id="req-42")
    response = result.get_response()
    assert response["id"] == "req-42"
    assert len(response["outputs"][0]["data"]) == 20  # JSON data, not binary
    np.testing.assert_allclose(
        result.as_numpy("linear"), run_directly(demo_models["base"], x), rtol=1e-6, atol=1e-6
    )


def test_two_versions_served_at_once(server, demo_models):
    x = images(2, seed=3)
    v1 = infer(server.url, x, version="1").as_numpy("linear")
    v2 = infer(server.url, x, version="2").as_numpy("linear")
    latest = infer(server.url, x).as_numpy("linear")
    np.testing.assert_allclose(v1, run_directly(demo_models["base"], x), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(v2, run_directly(demo_models["candidate"], x), rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(latest, v2)  # no version: the highest
    assert not np.allclose(v1, v2)


def test_torch_models_answer_what_they_compute(start_server, tmp_path):
    import torch

    from avgpool.serve._runners import load_runner
    from tests.serve import models

    runners = [
        load_runner("tests.serve.models:tiny_net", name="net", version="1"),
        load_runner(models.to_pt2(tmp_path / "tiny.pt2"), name="net", version="2", trust=True),
    ]
    handle = start_server(ServeConfig(models=[], port=0, log_level="warning"), runners=runners)
    assert handle.wait_ready(60), handle.state.warmup_errors
    x = models.images(3)
    with torch.no_grad():
        want = models.tiny_net()(torch.from_numpy(x)).numpy()
    client = triton(handle.url)
    for version in ("1", "2"):
        (output,) = client.get_model_metadata("net", version)["outputs"]
        inp = httpclient.InferInput(runners[0].inputs[0].name, list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        got = client.infer("net", [inp], model_version=version).as_numpy(output["name"])
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def _raw(url, path, body, headers=None):
    return httpx.post(f"{url}{path}", content=body, headers=headers or {}, timeout=30)


def _tensor_request(x, datatype="FP32", name="image", size=None):
    raw = x.tobytes()
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": name,
                    "shape": list(x.shape),
                    "datatype": datatype,
                    "parameters": {"binary_data_size": len(raw) if size is None else size},
                }
            ]
        }
    ).encode()
    return header + raw, {"Inference-Header-Content-Length": str(len(header))}


def _via_triton(x, datatype="FP32", model="tiny", version=""):
    def send(url):
        client = triton(url)
        inp = httpclient.InferInput("image" if model == "tiny" else "x", list(x.shape), datatype)
        inp.set_data_from_numpy(x)
        try:
            client.infer(model, [inp], model_version=version)
        except InferenceServerException as exc:
            return int(exc.status()), exc.message()
        raise AssertionError("the request succeeded")

    return send


def _via_http(path, body, headers=None):
    def send(url):
        response = _raw(url, path, body, headers)
        return response.status_code, response.json()["error"]

    return send


X = images(1)
ERRORS = {
    "malformed JSON": (
        _via_http("/v2/models/tiny/infer", b'{"inputs": [', {}),
        (400, "malformed JSON", "bad_request", "tiny", "2"),
    ),
    "wrong shape": (
        _via_triton(np.zeros((1, 3, 16, 16), np.float32)),
        (
            400,
            "input 'image': shape [1, 3, 16, 16] given, the model takes [-1, 3, 32, 32]",
            "bad_request",
            "tiny",
            "2",
        ),
    ),
    "wrong dtype": (
        _via_triton(X.astype(np.float64), "FP64"),
        (400, "input 'image': datatype FP64 given, the model takes FP32", "bad_request", "tiny", "2"),
    ),
    "unknown datatype": (
        _via_http("/v2/models/tiny/infer", *_tensor_request(X, datatype="FP8")),
        (400, "datatype 'FP8' is not one of", "bad_request", "tiny", "2"),
    ),
    "lying binary size": (
        _via_http("/v2/models/tiny/infer", *_tensor_request(X, size=10**9)),
        (400, "binary_data_size 1000000000 runs past", "bad_request", "tiny", "2"),
    ),
    "wrong input name": (
        _via_http("/v2/models/tiny/infer", *_tensor_request(X, name="img")),
        (400, "missing ['image']", "bad_request", "tiny", "2"),
    ),
    "unknown model": (
        _via_triton(X, model="nope"),
        (404, "unknown model 'nope'", "model_not_found", "", ""),
    ),
    "unknown version": (
        _via_triton(X, version="7"),
        (404, "model 'tiny' has no version '7'; it has versions ['1', '2']", "model_not_found", "tiny", ""),
    ),
    "too large": (
        _via_triton(images(64)),
        (413, f"exceeds --max-body-mb ({MAX_BODY_MB:g} MiB)", "too_large", "tiny", "2"),
    ),
    "model raises": (
        _via_triton(np.full((1, 4), 1000, np.float32), model="boom"),
        (500, "model boom failed: RuntimeError: input above 100", "model_error", "boom", "1"),
    ),
}


@pytest.mark.parametrize("case", list(ERRORS))
def test_errors_answer_their_status_are_counted_and_the_server_keeps_serving(server, demo_models, case):
    send, (status, message, kind, model, version) = ERRORS[case]
    labels = {"kind": kind, "model": model, "version": version}
    before = metric(server.url, "avgpool_request_errors_total", **labels)
    got_status, got_message = send(server.url)
    assert got_status == status
    assert message in got_message
    assert metric(server.url, "avgpool_request_errors_total", **labels) == before + 1
    x = images(1, seed=5)
    np.testing.assert_allclose(
        infer(server.url, x, version="1").as_numpy("linear"),
        run_directly(demo_models["base"], x),
        rtol=1e-6,
        atol=1e-6,
    )
    ok = triton(server.url).infer("boom", [_boom_input(np.ones((2, 4), np.float32))])
    np.testing.assert_array_equal(ok.as_numpy("y"), np.full((2, 4), 2, np.float32))


def _boom_input(x):
    inp = httpclient.InferInput("x", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    return inp


def test_metrics_count_requests_and_rows(server):
    labels = {"model": "tiny", "version": "1"}
    before = metric(server.url, "avgpool_requests_total", **labels)
    rows = metric(server.url, "avgpool_inference_samples_total", **labels)
    infer(server.url, images(3), version="1")
    assert metric(server.url, "avgpool_requests_total", **labels) == before + 1
    assert metric(server.url, "avgpool_inference_samples_total", **labels) == rows + 3
    assert metric(server.url, "avgpool_request_duration_seconds_count", **labels) >= 1
    assert metric(server.url, "avgpool_model_ready", **labels) == 1
    assert metric(server.url, "avgpool_model_startup_seconds", **labels) > 0


def test_profile_route_returns_the_live_window(server, tmp_path):
    from avgpool.monitor import Profile

    for seed in range(3):
        infer(server.url, images(2, seed=seed), version="2")

    def fetched():
        response = httpx.get(f"{server.url}/v2/models/tiny/versions/2/profile", timeout=10)
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/octet-stream"
        path = tmp_path / "live.avgprof"
        path.write_bytes(response.content)
        profile = Profile.load(path)
        return profile if profile.batches >= 3 else None

    profile = wait_for(fetched, 20, "3 sampled batches in the live profile")
    assert set(profile.layers) == {"/pool1/AveragePool", "/pool2/AveragePool", "/gap/ReduceMean"}


def test_admin_faults_and_deploy_window(server):
    labels = {"model": "tiny", "version": "1"}
    response = httpx.post(
        f"{server.url}/admin/faults", json={"model": "tiny", "version": "1", "latency_ms": 300}
    )
    assert response.status_code == 200, response.text
    try:
        start = time.perf_counter()
        infer(server.url, images(1), version="1")
        assert time.perf_counter() - start >= 0.3
        assert metric(server.url, "avgpool_fault_latency_seconds", **labels) == pytest.approx(0.3)
    finally:
        httpx.post(f"{server.url}/admin/faults", json={"model": "tiny", "version": "1", "latency_ms": 0})
    assert metric(server.url, "avgpool_fault_latency_seconds", **labels) == 0
    response = httpx.post(f"{server.url}/admin/deploy-window", json={"model": "tiny", "minutes": 15})
    assert response.json() == {"model": "tiny", "version": "2", "minutes": 15}
    assert metric(server.url, "avgpool_deploy_window", model="tiny", version="2") == 1
    httpx.post(f"{server.url}/admin/deploy-window", json={"model": "tiny", "minutes": 0})
    assert metric(server.url, "avgpool_deploy_window", model="tiny", version="2") == 0
    bad = httpx.post(f"{server.url}/admin/faults", json={"model": "tiny", "latency_ms": -1})
    assert bad.status_code == 400 and "latency_ms must be a number >= 0" in bad.json()["error"]


def test_admin_refuses_clients_that_are_not_loopback(server):
    import asyncio

    async def post():
        transport = httpx.ASGITransport(app=server.app, client=("10.1.2.3", 4321))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.post("/admin/faults", json={"model": "tiny", "latency_ms": 5})

    response = asyncio.run(post())
    assert response.status_code == 403
    assert response.json() == {"error": "admin endpoints answer loopback clients only"}


def test_readiness_waits_for_the_warm_up(start_server):
    gate = threading.Event()
    config = ServeConfig(models=[], port=0, log_level="warning")
    handle = start_server(config, runners=[failing_runner("slow", gate=gate)])
    client = triton(handle.url)
    try:
        assert client.is_server_live()
        assert not client.is_server_ready() and not client.is_model_ready("slow")
        status, message = _via_triton(np.ones((1, 4), np.float32), model="slow")(handle.url)
        assert (status, message) == (503, "model slow version 1 is not ready (warming up)")
        assert metric(handle.url, "avgpool_request_errors_total", kind="not_ready", model="slow") == 1
        assert metric(handle.url, "avgpool_model_ready", model="slow", version="1") == 0
    finally:
        gate.set()
    assert handle.wait_ready(30)
    assert client.is_server_ready() and client.is_model_ready("slow")
    assert metric(handle.url, "avgpool_model_ready", model="slow", version="1") == 1
    out = client.infer("slow", [_boom_input(np.ones((1, 4), np.float32))]).as_numpy("y")
    np.testing.assert_array_equal(out, np.full((1, 4), 2, np.float32))


def test_admin_routes_exist_only_with_admin(start_server):
    handle = start_server(ServeConfig(models=[], port=0, log_level="warning"), runners=[failing_runner()])
    response = httpx.post(f"{handle.url}/admin/faults", json={"model": "boom", "latency_ms": 5})
    assert response.status_code == 404 and "error" in response.json()


def test_compressed_requests(server, demo_models):
    x = images(2, seed=8)
    client = triton(server.url)
    for algorithm in ("gzip", "deflate"):
        inp = httpclient.InferInput("image", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        out = client.infer("tiny", [inp], model_version="1", request_compression_algorithm=algorithm)
        np.testing.assert_allclose(
            out.as_numpy("linear"), run_directly(demo_models["base"], x), rtol=1e-6, atol=1e-6
        )


def test_bodies_over_the_limit_are_refused_while_streaming_and_after_inflating(server):
    import zlib

    limit = int(MAX_BODY_MB * 2**20)
    labels = {"kind": "too_large", "model": "tiny", "version": "2"}
    before = metric(server.url, "avgpool_request_errors_total", **labels)

    def chunks():  # no Content-Length: the server counts as it reads
        for _ in range(limit // 2**15 + 2):
            yield b"\0" * 2**15

    streamed = httpx.post(f"{server.url}/v2/models/tiny/infer", content=chunks(), timeout=30)
    assert streamed.status_code == 413 and "exceeds --max-body-mb" in streamed.json()["error"]
    bomb = zlib.compress(b"\0" * (limit + 1))  # a few hundred bytes on the wire
    inflated = _raw(server.url, "/v2/models/tiny/infer", bomb, {"Content-Encoding": "deflate"})
    assert inflated.status_code == 413
    cut = _raw(
        server.url, "/v2/models/tiny/infer", zlib.compress(b"{}" * 100)[:-6], {"Content-Encoding": "deflate"}
    )
    assert cut.status_code == 400 and cut.json()["error"] == "the deflate request body is truncated"
    odd = _raw(server.url, "/v2/models/tiny/infer", b"{}", {"Content-Encoding": "br"})
    assert (
        odd.status_code == 400
        and odd.json()["error"] == "Content-Encoding 'br' is not supported (gzip, deflate)"
    )
    assert metric(server.url, "avgpool_request_errors_total", **labels) == before + 2
    assert (
        metric(server.url, "avgpool_request_errors_total", kind="unsupported", model="tiny", version="2") >= 1
    )


class _Spans:
    """Records what the app asks of OpenTelemetry (the `avgpool.serve._otel.Otel` methods)."""

    def __init__(self):
        self.spans, self.requests, self.sources = [], [], []
        self.status = None

    def request_span(self, method, route, model=None, version=None, *, headers=None, **attributes):
        import contextlib

        self.spans.append(("request", method, route, model, version))
        return contextlib.nullcontext(self)

    def span(self, name, **attributes):
        import contextlib

        self.spans.append((name, attributes["avgpool.model"], attributes["avgpool.version"]))
        return contextlib.nullcontext(self)

    def set_status_code(self, status):
        self.status = status

    def record_request(self, seconds, model, version, status):
        self.requests.append((model, version, status))

    def observe_activations(self, callback, *, window=None):
        self.sources.append((callback, window))

    def shutdown(self, timeout=10.0):
        pass


def test_a_request_span_with_decode_model_telemetry_encode_children(start_server, demo_models):
    from avgpool.serve._runners import load_runner

    spans = _Spans()
    config = ServeConfig(models=[], port=0, sample_every=1, window=60, log_level="warning")
    runner = load_runner(demo_models["base"], name="tiny", version="1")
    handle = start_server(config, runners=[runner], otel=spans)
    assert handle.wait_ready(30)
    infer(handle.url, images(1), version="1")
    route = "/v2/models/{model_name}/versions/{model_version}/infer"
    assert spans.spans == [
        ("request", "POST", route, "tiny", "1"),
        ("decode", "tiny", "1"),
        ("model", "tiny", "1"),
        ("telemetry", "tiny", "1"),
        ("encode", "tiny", "1"),
    ]
    assert spans.status == 200 and spans.requests == [("tiny", "1", 200)]
    with pytest.raises(InferenceServerException):
        infer(handle.url, images(1), model="nope")
    assert spans.spans[-1] == ("request", "POST", "/v2/models/{model_name}/infer", None, None)
    assert spans.status == 404 and spans.requests[-1] == ("", "", 404)
    ((callback, window),) = spans.sources
    assert window == 60
    handle.state.telemetry.flush()  # the worker thread profiles the sample after the answer
    [(name, version, profile)] = callback()
    assert (name, version) == ("tiny", "1") and set(profile.layers) == set(runner.layers)


def test_spans_reach_an_otlp_receiver_as_one_tree(start_server, demo_models, monkeypatch):
    pytest.importorskip("opentelemetry.sdk")
    pytest.importorskip("opentelemetry.proto")
    from avgpool.serve import _otel
    from avgpool.serve._runners import load_runner
    from tests.serve.otlp_receiver import OTLPReceiver, attributes

    with OTLPReceiver() as receiver:
        for key in [k for k in os.environ if k.startswith("OTEL_")]:
            monkeypatch.delenv(key)
        for key, value in receiver.environ().items():
            monkeypatch.setenv(key, value)
        config = ServeConfig(models=[], port=0, sample_every=1, log_level="warning")
        runner = load_runner(demo_models["base"], name="tiny", version="1")
        handle = start_server(config, runners=[runner], otel=_otel.setup(set_global=False))
        assert handle.wait_ready(30)
        traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        inp = httpclient.InferInput("image", [1, 3, 32, 32], "FP32")
        inp.set_data_from_numpy(images(1))
        triton(handle.url).infer("tiny", [inp], headers={"traceparent": traceparent})
        handle.stop()  # the app's shutdown flushes the spans
        spans = receiver.wait_for(lambda rx: len(rx.spans()) >= 5 and rx.spans(), 10)
    by_name = {span.name: span for _, span in spans}
    request = by_name["POST /v2/models/{model_name}/infer"]
    assert request.trace_id.hex() == "0af7651916cd43dd8448eb211c80319c"  # the caller's trace
    assert attributes(request.attributes)["avgpool.model"] == "tiny"
    assert attributes(request.attributes)["http.response.status_code"] == 200
    for step in ("decode", "model", "telemetry", "encode"):
        assert by_name[step].parent_span_id == request.span_id, step
        assert attributes(by_name[step].attributes)["avgpool.version"] == "1"


@pytest.mark.parametrize(
    ("versions", "latest"), [(["2", "10", "9"], "10"), (["a", "b2", "b10"], "b2"), (["1", "x"], "x")]
)
def test_a_request_without_a_version_reaches_the_highest(versions, latest):
    from avgpool.serve._app import ModelRepository

    repository = ModelRepository([failing_runner("m", v) for v in versions])
    assert repository.resolve("m").version == latest
    assert repository.resolve("m", versions[0]).version == versions[0]
    with pytest.raises(ValueError, match="model 'm' version '2' is given twice"):
        ModelRepository([failing_runner("m", "2"), failing_runner("m", "2")])


def test_baselines_go_to_the_models_they_name(tmp_path):
    from avgpool.monitor.profile import Profile
    from avgpool.serve._server import build_state

    paths = {}
    for label in ("all", "a", "a2"):
        paths[label] = str(tmp_path / f"{label}.avgprof")
        Profile(model={"label": label}).save(paths[label])

    class Recorder:
        def __init__(self):
            self.baselines = {}

        def add_model(self, runner, *, baseline=None):
            self.baselines[(runner.name, runner.version)] = (
                None if baseline is None else baseline.model["label"]
            )

    runners = [failing_runner("a", "1"), failing_runner("a", "2"), failing_runner("b", "1")]
    config = ServeConfig(models=[], baselines={"a": paths["a"], "a:2": paths["a2"]})
    telemetry = Recorder()
    build_state(config, runners=runners, telemetry=telemetry)
    assert telemetry.baselines == {("a", "1"): "a", ("a", "2"): "a2", ("b", "1"): None}
    one = Recorder()
    build_state(ServeConfig(models=[], baselines={"": paths["all"]}), runners=runners[:2], telemetry=one)
    assert one.baselines == {("a", "1"): "all", ("a", "2"): "all"}
    with pytest.raises(ValueError, match="--baseline FILE without a name is for one model; 2 are served"):
        build_state(
            ServeConfig(models=[], baselines={"": paths["all"]}), runners=runners, telemetry=Recorder()
        )
