"""The open-loop load generator (`avgpool.bench.serve_load`, ``avgpool bench serve``) against a
small v2 stub server on 127.0.0.1: request counts, latencies from the schedule, error counts,
the loopback guard, and request bodies byte for byte against tritonclient's."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from avgpool._errors import AvgPoolError
from avgpool.bench.serve_load import (
    MAX_REQUESTS,
    check_loopback,
    inputs_from_metadata,
    latency_summary,
    load_table,
    request_body,
    run_load,
)
from avgpool.cli import main

pytest.importorskip("httpx")

#: Stub models: the delay each infer sleeps, and every how many requests one answers 500
MODELS = {"tiny": (0.0, 0), "slow": (0.05, 0), "flaky": (0.0, 5), "stuck": (1.0, 0)}
METADATA_INPUTS = [{"name": "image", "datatype": "FP32", "shape": [-1, 3, 4, 4]}]
_NUMPY = {
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
    "INT64": np.int64,
    "UINT8": np.uint8,
    "BOOL": np.bool_,
}


def decode(body: bytes, header_length: int | None) -> dict[str, np.ndarray]:
    """The inputs of a v2 request body, decoded independently of the code under test."""
    header = json.loads(body[:header_length] if header_length else body)
    offset = header_length or 0
    arrays = {}
    for tensor in header["inputs"]:
        dtype = np.dtype(_NUMPY[tensor["datatype"]])
        if "data" in tensor:
            arrays[tensor["name"]] = np.array(tensor["data"], dtype=dtype).reshape(tensor["shape"])
        else:
            size = tensor["parameters"]["binary_data_size"]
            raw = body[offset : offset + size]
            offset += size
            arrays[tensor["name"]] = np.frombuffer(raw, dtype=dtype.newbyteorder("<")).reshape(
                tensor["shape"]
            )
    assert offset == (len(body) if header_length else 0)
    return arrays


class StubServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.lock = threading.Lock()
        self.received: list[dict[str, np.ndarray]] = []
        self.counts: dict[str, int] = {}

    def handle_error(self, request, client_address) -> None:
        # a client that timed out closed its connection on purpose; the test checks what it saw
        pass

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # the test output stays quiet
        pass

    def _send(self, status: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        name = self.path.split("/")[3] if self.path.startswith("/v2/models/") else ""
        if name not in MODELS:
            self._send(404, {"error": f"no model named {name!r}"})
            return
        self._send(200, {"name": name, "versions": ["1"], "platform": "stub", "inputs": METADATA_INPUTS})

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        name = self.path.split("/")[3]
        length = self.headers.get("Inference-Header-Content-Length")
        server: StubServer = self.server  # type: ignore[assignment]
        with server.lock:
            server.received.append(decode(body, int(length) if length else None))
            server.counts[name] = count = server.counts.get(name, 0) + 1
        delay, fail_every = MODELS[name]
        time.sleep(delay)
        if fail_every and count % fail_every == 0:
            self._send(500, {"error": "the model raised"})
            return
        self._send(200, {"model_name": name, "outputs": []})


@pytest.fixture
def stub():
    server = StubServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_latency_summary_uses_numpy_percentiles():
    values = np.arange(1, 101) / 1000.0
    s = latency_summary(values)
    assert s["p50"] == pytest.approx(0.0505)
    assert s["p95"] == pytest.approx(0.09505)
    assert s["p99"] == pytest.approx(0.09901)
    assert s["max"] == 0.1
    assert np.isnan(latency_summary(np.array([]))["p99"])


def test_sends_rate_times_duration_requests_on_schedule(stub):
    image = np.arange(48, dtype=np.float32).reshape(1, 3, 4, 4)
    result = run_load(stub.url, "tiny", {"image": image}, rate=50, duration=1.0)
    assert result.sent == 50 and result.ok == 50 and result.errors == 0
    assert result.statuses == {"200": 50}
    # the schedule spans 49 / 50 s; the last answer comes shortly after
    assert 0.95 <= result.elapsed < 3.0
    assert len(stub.received) == 50
    assert all(np.array_equal(r["image"], image) for r in stub.received)
    assert result.throughput == pytest.approx(50 / result.elapsed)
    s = result.summary()
    assert 0 < s["p50"] <= s["p95"] <= s["p99"] <= s["max"] < 3.0


def test_latency_includes_the_servers_delay(stub):
    result = run_load(stub.url, "slow", rate=20, duration=0.5, binary=False)
    assert result.ok == 10
    assert result.latencies.min() >= 0.05
    assert 0.05 <= result.summary()["p50"] < 1.0
    # random inputs of the metadata's shape, free axis 1, sent as JSON tensors
    assert stub.received[0]["image"].shape == (1, 3, 4, 4)


def test_latency_counts_from_the_schedule_not_the_send(stub):
    # one request in flight and 50 ms each: the server does 20/s, 40/s are scheduled; request i
    # ends at >= (i + 1) * 50 ms, was due at i * 25 ms, so its latency is >= 50 + 25 i ms. A
    # closed loop would report ~50 ms for all of them.
    result = run_load(stub.url, "slow", rate=40, duration=0.5, concurrency_limit=1)
    assert result.ok == 20
    assert result.latencies.max() >= 0.05 + 19 * 0.025
    assert result.summary()["p50"] >= 0.05 + 9 * 0.025


def test_errors_are_counted_by_status(stub):
    result = run_load(stub.url, "flaky", rate=50, duration=0.5)
    assert result.sent == 25
    assert result.statuses == {"200": 20, "500": 5}
    assert result.errors == 5 and result.latencies.size == 20
    assert result.first_errors == {"500": "the model raised"}
    _, headers, rows, footer = load_table(result)
    assert rows[0][headers.index("errors")] == "5"
    assert any("500 x5" in line for line in footer)


def test_timeouts_and_requests_left_open_are_counted(stub):
    # one in flight, 0.2 s each before the client gives up: 10 requests need 2 s, and the run
    # waits only timeout + 1 s after its schedule, so the last ones are cancelled
    result = run_load(stub.url, "stuck", rate=100, duration=0.1, concurrency_limit=1, timeout=0.2)
    assert result.sent == 10 and result.ok == 0 and result.latencies.size == 0
    assert set(result.statuses) == {"timeout", "cancelled"}
    assert result.statuses["timeout"] >= 1 and result.statuses["cancelled"] >= 1
    assert sum(result.statuses.values()) == 10
    assert result.elapsed < 2.0
    assert np.isnan(result.summary()["p50"])
    assert load_table(result)[2][0][5] == "-"


def test_a_dead_server_is_one_clear_error():
    # metadata is read first, so a dead server is one clear error, not 50 failed requests
    with pytest.raises(AvgPoolError, match="cannot reach"):
        run_load("http://127.0.0.1:9", "tiny", rate=10, duration=0.1, timeout=1.0)


def test_unknown_model_is_refused_with_the_servers_message(stub):
    with pytest.raises(AvgPoolError, match=r"answered 404: no model named 'nope'"):
        run_load(stub.url, "nope", rate=10, duration=0.1)


@pytest.mark.parametrize(
    "url", ["http://10.0.0.1:8000", "http://example.com", "http://0.0.0.0:8000", "https://[2001:db8::1]/"]
)
def test_non_loopback_hosts_are_refused(url):
    with pytest.raises(AvgPoolError, match=r"not a loopback host.*allow_remote=True"):
        run_load(url, "tiny", rate=10, duration=0.1)
    assert check_loopback(url, allow_remote=True) == url.rstrip("/")


@pytest.mark.parametrize("url", ["http://localhost:8000/", "http://127.0.0.2:1", "http://[::1]:8000"])
def test_loopback_hosts_pass(url):
    assert check_loopback(url) == url.rstrip("/")


def test_bad_settings_are_refused(stub):
    with pytest.raises(AvgPoolError, match="rate must be > 0"):
        run_load(stub.url, "tiny", rate=0, duration=1)
    with pytest.raises(AvgPoolError, match=f"between 1 and {MAX_REQUESTS} requests"):
        run_load(stub.url, "tiny", rate=1000, duration=1000)
    with pytest.raises(AvgPoolError, match="url must be http"):
        run_load("ftp://127.0.0.1/", "tiny", rate=1, duration=1)


def _triton_body(arrays, binary):
    http = pytest.importorskip("tritonclient.http")
    from tritonclient.utils import np_to_triton_dtype

    inputs = []
    for name, array in arrays.items():
        tensor = http.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
        tensor.set_data_from_numpy(array, binary_data=binary)
        inputs.append(tensor)
    return http.InferenceServerClient.generate_request_body(inputs)


@pytest.mark.parametrize("binary", [True, False])
def test_request_body_matches_tritonclient(binary):
    rng = np.random.default_rng(0)
    arrays = {
        "image": rng.standard_normal((2, 3, 4, 4)).astype(np.float32),
        "scale": rng.standard_normal(3),
        "ids": rng.integers(-5, 5, (2, 5)),
        "pixels": rng.integers(0, 255, (4,)).astype(np.uint8),
        "mask": rng.random((2, 2)) < 0.5,
        "half": rng.standard_normal(3).astype(np.float16),
    }
    ours, our_length = request_body(arrays, binary=binary)
    theirs, their_length = _triton_body(arrays, binary)
    assert our_length == their_length
    if binary:
        assert ours == theirs
    else:
        # both JSON; the float text may differ (rapidjson vs json), the values may not
        assert json.loads(ours) == json.loads(theirs)
    decoded = decode(ours, our_length)
    for name, array in arrays.items():
        np.testing.assert_array_equal(decoded[name], array)


def test_inputs_from_metadata_fill_free_axes():
    meta = {"inputs": [{"name": "x", "datatype": "INT64", "shape": [-1, 2]}, METADATA_INPUTS[0]]}
    arrays = inputs_from_metadata(meta)
    assert arrays["x"].shape == (1, 2) and arrays["x"].dtype == np.int64
    assert arrays["image"].shape == (1, 3, 4, 4) and arrays["image"].dtype == np.float32
    with pytest.raises(TypeError, match="datatype BYTES"):
        inputs_from_metadata({"inputs": [{"name": "s", "datatype": "BYTES", "shape": [1]}]})


def test_cli_bench_serve(stub, capsys):
    code = main(
        ["bench", "serve", stub.url, "--model", "tiny", "--rate", "40", "--duration", "0.5", "--json"]
    )
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    assert out["sent"] == 20 and out["ok"] == 20 and out["statuses"] == {"200": 20}
    assert len(out["latencies_s"]) == 20
    code = main(
        ["bench", "serve", stub.url, "--model", "flaky", "--rate", "20", "--duration", "0.5", "--json-body"]
    )
    text = capsys.readouterr().out
    assert code == 0
    assert "P99 ms" in text and "JSON bodies" in text and "500 x2" in text


def test_cli_refuses_a_remote_url_without_the_flag(capsys):
    code = main(["bench", "serve", "http://192.0.2.1:8000", "--model", "m", "--rate", "1", "--duration", "1"])
    assert code == 2
    assert "--allow-remote" in capsys.readouterr().err


# --------------------------------------------------------------------------- telemetry's cost


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("torch")
    pytest.importorskip("avgpool.serve._runners")
    pytest.importorskip("avgpool.serve._telemetry")
    from tests.serve.models import to_onnx

    return to_onnx(tmp_path_factory.mktemp("cost") / "tiny.onnx")


def test_telemetry_cost_measures_every_mode(tiny_onnx):
    from avgpool.serve._cost import MODES, cost_table, telemetry_cost

    report = telemetry_cost(tiny_onnx, batch_sizes=(1, 2), repeats=100)
    assert [(r["batch"], r["mode"]) for r in report.rows] == [(b, m) for b in (1, 2) for m, _ in MODES]
    assert report.platform == "onnxruntime_onnx" and len(report.layers) == 3
    for r in report.rows:
        assert np.isfinite(r["request_us"]) and r["request_us"] > 0
    # one block of 100 counted: the deterministic 1-in-N counter samples 0, 1 and 100 requests
    for batch in (1, 2):
        assert report.row(batch, "sampling off")["samples"] == 0
        assert report.row(batch, "N=100")["samples"] == 1
        assert report.row(batch, "N=1")["samples"] == 100
        assert all(r["dropped"] == 0 for r in report.rows)
        for mode in ("N=100", "N=1"):
            row = report.row(batch, mode)
            assert np.isfinite(row["background_us_per_sample"]) and row["background_us_per_sample"] > 0
            assert row["total_us"] == pytest.approx(row["overhead_us"] + row["background_us"])
        assert np.isnan(report.row(batch, "sampling off")["background_us_per_sample"])
    _, _, rows, footer = cost_table(report)
    assert len(rows) == 8 and rows[0][1] == "model only" and rows[3][1] == "N=1"
    assert "3 pooling layers profiled" in footer[0]


def test_telemetry_cost_refuses_bad_settings(tiny_onnx):
    from avgpool.serve._cost import telemetry_cost

    with pytest.raises(AvgPoolError, match="repeats must be an int >= 1, got 0"):
        telemetry_cost(tiny_onnx, repeats=0)
    with pytest.raises(AvgPoolError, match=r"batch_sizes must be ints >= 1, got \[0\]"):
        telemetry_cost(tiny_onnx, batch_sizes=(0,))


def test_cli_bench_telemetry(tiny_onnx, capsys):
    code = main(["bench", "telemetry", tiny_onnx, "-b", "1", "--repeats", "100", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    assert [r["mode"] for r in out["rows"]] == ["model only", "sampling off", "N=100", "N=1"]
    assert out["rows"][3]["samples"] == 100


# --------------------------------------------------------------------------- the real server


def test_load_against_avgpool_serve(tiny_onnx):
    server = pytest.importorskip("avgpool.serve._server")
    import httpx

    config = server.ServeConfig(models=[tiny_onnx], port=0, sample_every=10, log_level="warning")
    with server.start_in_thread(config) as handle:
        assert handle.wait_ready(120)
        binary = run_load(handle.url, "tiny", rate=50, duration=1.0)
        json_body = run_load(handle.url, "tiny", rate=20, duration=0.5, binary=False, version="1")
        metrics = httpx.get(handle.url + "/metrics").text
    assert binary.statuses == {"200": 50}, binary.first_errors
    assert json_body.statuses == {"200": 10}, json_body.first_errors
    assert 'avgpool_requests_total{model="tiny",version="1"} 60.0' in metrics
