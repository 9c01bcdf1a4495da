"""Where the judge's evidence comes from: files, a server's canary JSON (in process and over
HTTP), a Prometheus query API (a fake one on loopback); and ``avgpool canary judge``'s exit codes."""

from __future__ import annotations

import contextlib
import json
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from avgpool._errors import AvgPoolError
from avgpool.canary import from_files, from_prometheus, from_server, from_server_state, judge, read_latencies
from avgpool.canary.sources import bucket_latencies
from avgpool.cli import main
from avgpool.monitor import Profile, profile_arrays


def _profile(shift: float) -> Profile:
    rng = np.random.default_rng(0)
    return profile_arrays([{"pool": rng.standard_normal((64, 4, 3, 3)) + shift} for _ in range(4)])


def _latencies(n: int, seed: int, shift: float = 0.0) -> list[float]:
    rng = np.random.default_rng(seed)
    return (np.round(rng.normal(0.010, 0.001, n) + shift, 6)).tolist()


def _state(shift: float = 0.0, errors: int = 0, mirror: dict | None = None) -> dict:
    def version(seed, s, e):
        return {
            "requests": 400 + e + 3,
            "errors": e,  # the server counts its own (5xx) failures
            "errors_by_kind": {"model_error": e, "bad_request": 3},
            "latencies": _latencies(400, seed, s),
        }

    return {
        "model": "tinynet",
        "baseline": "1",
        "candidate": "2",
        "share": 0.05,
        "mode": "shadow" if mirror else "split",
        "since": 1.0,
        "versions": {"1": version(1, 0.0, 0), "2": version(2, shift, errors)},
        "mirror": mirror or {"compared": 0, "top1_agree": 0, "max_abs_error": None, "max_rel_error": None},
    }


@contextlib.contextmanager
def http_server(routes: dict[str, tuple[int, bytes]], seen: list[str] | None = None):
    """A loopback HTTP server answering GETs from ``routes`` (path with query -> status, body),
    or a callable of the parsed query for a path; stopped on exit, even on failure."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            if seen is not None:
                seen.append(self.path)
            path, _, query = self.path.partition("?")
            answer = routes.get(path, (404, b'{"error": "not found"}'))
            if callable(answer):
                answer = answer(urllib.parse.parse_qs(query))
            status, body = answer
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


# -- server state -------------------------------------------------------------------------------


def test_from_server_state_counts_only_server_errors():
    base, cand, mirror = from_server_state(_state(errors=5), {"1": _profile(0), "2": None})
    assert (base.version, cand.version) == ("1", "2")
    assert (base.requests, base.errors, cand.requests, cand.errors) == (403, 0, 408, 5)
    assert len(cand.latencies) == 400 and cand.latencies[0] == _latencies(400, 2)[0]
    assert base.profile is not None and cand.profile is None
    assert mirror is None  # nothing mirrored in split mode


def test_without_an_error_count_the_5xx_kinds_count():
    state = _state()
    del state["versions"]["2"]["errors"]
    state["versions"]["2"]["errors_by_kind"] = {"model_error": 2, "not_ready": 1, "too_large": 4}
    _, cand, _ = from_server_state(state)
    assert cand.errors == 3


def test_from_server_state_reads_the_mirror():
    record = {"compared": 300, "top1_agree": 297, "max_abs_error": 0.5, "max_rel_error": 0.01}
    _, _, mirror = from_server_state(_state(mirror=record))
    assert (mirror.compared, mirror.top1_agree, mirror.max_abs_error, mirror.max_rel_error) == (
        300,
        297,
        0.5,
        0.01,
    )


def test_from_server_state_refuses_what_is_not_a_canary():
    with pytest.raises(
        AvgPoolError, match=r"must have 'baseline', 'candidate' and 'versions', got keys \['error'\]"
    ):
        from_server_state({"error": "no canary"})


def test_judge_server_state_is_the_webhook_verdict():
    from avgpool.canary import judge_server_state

    assert judge_server_state(_state()).verdict == "pass"
    assert judge_server_state({**_state(), "look": 7}).look == 7
    assert judge_server_state({**_state(), "look": 25}).look == 20  # past max_looks: the last look
    slow = judge_server_state(_state(shift=0.003))
    assert slow.verdict == "fail" and slow.reasons[0].startswith("latency: slower")


def test_registers_with_the_server_where_it_has_the_hook(monkeypatch):
    import importlib

    from avgpool.serve import _app

    got = []
    monkeypatch.setattr(_app, "register_judge", got.append, raising=False)
    canary = importlib.import_module("avgpool.canary")
    canary._register_with_server()
    assert got == [canary.judge_server_state]


def test_from_server_over_http(tmp_path):
    base_profile, cand_profile = tmp_path / "1.avgprof", tmp_path / "2.avgprof"
    _profile(0).save(base_profile)
    _profile(2.0).save(cand_profile)
    routes = {
        "/admin/canary/tiny%20net": (200, json.dumps(_state()).encode()),
        "/v2/models/tiny%20net/versions/1/profile": (200, base_profile.read_bytes()),
        "/v2/models/tiny%20net/versions/2/profile": (200, cand_profile.read_bytes()),
    }
    with http_server(routes) as url:
        base, cand, _ = from_server(url, "tiny net")
        assert base.requests == 403 and len(cand.latencies) == 400
        assert base.profile["pool"].totals()["mean"] == pytest.approx(_profile(0)["pool"].totals()["mean"])
        assert main(["canary", "judge", "--server", url, "--model", "tiny net"]) == 2  # activations drift
        with pytest.raises(AvgPoolError, match=r"GET http://127.0.0.1:\d+/admin/canary/other: HTTP 404: "):
            from_server(url, "other")


# -- Prometheus ---------------------------------------------------------------------------------


def test_bucket_latencies_at_midpoints():
    buckets = [(0.001, 2), (0.005, 5.4), (0.01, 5.0), (float("inf"), 6)]  # increase() is fractional
    assert bucket_latencies(buckets).tolist() == [0.0005] * 2 + [0.003] * 3 + [0.01]
    assert bucket_latencies([]).tolist() == []


def _fake_prometheus(histograms: dict[str, dict[float, float]], answered: dict, errors: dict, seen: list):
    """Answers the three queries the source makes, from per-version cumulative buckets."""

    def query(params):
        promql = params["query"][0]
        seen.append(promql)
        version = promql.split('version="')[1].split('"')[0]
        if "_bucket" in promql:
            result = [
                {"metric": {"le": "+Inf" if le == float("inf") else repr(le)}, "value": [1.0, str(c)]}
                for le, c in histograms[version].items()
            ]
        elif "avgpool_requests_total" in promql:
            result = [{"metric": {}, "value": [1.0, str(answered[version])]}]
        else:
            result = [{"metric": {"kind": k}, "value": [1.0, str(v)]} for k, v in errors[version].items()]
        body = {"status": "success", "data": {"resultType": "vector", "result": result}}
        return 200, json.dumps(body).encode()

    return {"/api/v1/query": query}


def _cumulative(latencies, edges=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, float("inf"))):
    return {le: float(np.sum(np.asarray(latencies) <= le)) for le in edges}


def test_from_prometheus_approximates_latencies_from_the_histogram():
    hist = {"1": _cumulative(_latencies(400, 1, -0.006)), "2": _cumulative(_latencies(400, 2, 0.0))}
    errors = {"1": {"bad_request": 2.0}, "2": {"model_error": 7.2, "not_ready": 1.0, "too_large": 1.0}}
    seen: list[str] = []
    with http_server(_fake_prometheus(hist, {"1": 400.0, "2": 400.0}, errors, seen)) as url:
        base, cand, mirror = from_prometheus(url, "tiny", "1", "2", "5m")
        v = main(
            ["canary", "judge", "--prometheus", url, "--model", "tiny", "--baseline", "1", "--candidate", "2"]
        )
    assert seen[:3] == [
        'sum by (le) (increase(avgpool_inference_latency_seconds_bucket{model="tiny",version="1"}[5m]))',
        'sum(increase(avgpool_requests_total{model="tiny",version="1"}[5m]))',
        'sum by (kind) (increase(avgpool_request_errors_total{model="tiny",version="1"}[5m]))',
    ]
    assert mirror is None and base.profile is None
    # each bucket's count at its midpoint: (2.5, 5] ms at 3.75 ms, (5, 10] ms at 7.5 ms, ...
    for version, got in (("1", base), ("2", cand)):
        counts = np.diff([0.0, *hist[version].values()])
        points = [0.00025, 0.00075, 0.00175, 0.00375, 0.0075, 0.0175, 0.0375, 0.05]
        assert got.latencies.tolist() == np.repeat(points, counts.astype(int)).tolist()
    assert len(base.latencies) == len(cand.latencies) == 400
    assert (base.requests, base.errors) == (402, 0)
    assert (cand.requests, cand.errors) == (409, 8)  # model_error 7 + not_ready 1; too_large is the client's
    assert v == 2  # 6 ms slower


def test_from_prometheus_against_a_real_prometheus():
    """The queries as Prometheus itself runs them: a registry with the server's three families
    scraped every 0.5 s. ``increase`` extrapolates to the window's end, so counts may exceed what
    was observed by up to one scrape interval's share; the buckets' proportions stay."""
    from tests.serve import gameday

    if gameday.binary(gameday.PROMETHEUS) is None:
        pytest.skip("prometheus is not installed")
    from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

    from avgpool.monitor.prometheus import LATENCY_BUCKETS

    registry = CollectorRegistry()
    mv = ("model", "version")
    latency = Histogram(
        "avgpool_inference_latency_seconds", "run", mv, buckets=LATENCY_BUCKETS, registry=registry
    )
    answered = Counter("avgpool_requests", "answered", mv, registry=registry)
    failed = Counter("avgpool_request_errors", "failed", (*mv, "kind"), registry=registry)
    for version in ("1", "2"):  # every series at 0 from the first scrape, as a fresh server's are
        latency.labels("tiny", version)
        answered.labels("tiny", version)
        failed.labels("tiny", version, "model_error")
    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    try:
        config = gameday.prometheus_config({"serve": [f"127.0.0.1:{server.server_port}"]}, interval="500ms")
        with gameday.Prometheus(config) as prom:
            gameday.wait_until(lambda: prom.value("sum(avgpool_requests_total)") == 0.0, 20, "first scrape")
            for version, shift in (("1", 0.0), ("2", 0.003)):
                for seconds in _latencies(400, int(version), shift - 0.008):  # ~2 ms and ~5 ms
                    latency.labels("tiny", version).observe(seconds)
                answered.labels("tiny", version).inc(400)
            failed.labels("tiny", "2", "model_error").inc(6)
            gameday.wait_until(lambda: prom.value("sum(avgpool_requests_total)") == 800.0, 20, "the requests")
            time.sleep(2.0)  # a few more scrapes: increase() extrapolates by at most one interval's share
            base, cand, mirror = from_prometheus(prom.url, "tiny", "1", "2", "1m")
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
    assert mirror is None and 6 <= cand.errors <= 8 and base.errors == 0
    for version, got in (("1", base), ("2", cand)):
        observed = _latencies(400, int(version), (0.0 if version == "1" else 0.003) - 0.008)
        exact = bucket_latencies(_cumulative(observed, (*LATENCY_BUCKETS, float("inf"))).items())
        points, counts = np.unique(got.latencies, return_counts=True)
        want_points, want_counts = np.unique(exact, return_counts=True)
        assert points.tolist() == want_points.tolist()  # every bucket's midpoint, nothing else
        assert np.all((counts >= want_counts) & (counts <= want_counts * 1.3 + 1)), (counts, want_counts)
        assert 400 <= got.requests <= 490
    assert judge(base, cand).check("latency").verdict == "fail"


def test_cli_prometheus_with_profiles_and_another_histogram(tmp_path, capsys):
    hist = {v: _cumulative(_latencies(400, int(v))) for v in ("1", "2")}
    seen: list[str] = []
    _profile(0).save(tmp_path / "b.avgprof")
    _profile(2.0).save(tmp_path / "c.avgprof")
    args = ["--model", "tiny", "--baseline", "1", "--candidate", "2", "--window", "2h", "--json"]
    args += ["--histogram", "avgpool_request_duration_seconds"]
    args += ["--profiles", str(tmp_path / "b.avgprof"), str(tmp_path / "c.avgprof")]
    no_errors = {"1": {}, "2": {}}
    with http_server(_fake_prometheus(hist, {"1": 400.0, "2": 400.0}, no_errors, seen)) as url:
        assert main(["canary", "judge", "--prometheus", url, *args]) == 2
    checks = {c["name"]: c for c in json.loads(capsys.readouterr().out)["checks"]}
    assert checks["latency"]["verdict"] == "pass" and checks["activations"]["verdict"] == "fail"
    assert seen[0].startswith("sum by (le) (increase(avgpool_request_duration_seconds_bucket{")
    assert seen[0].endswith("[2h]))")


def test_from_prometheus_refuses_a_bad_window():
    with pytest.raises(
        AvgPoolError, match="window must be a Prometheus duration such as 10m or 1h30m, got '10 min'"
    ):
        from_prometheus("http://127.0.0.1:9", "m", "1", "2", "10 min")


# -- files --------------------------------------------------------------------------------------


def test_read_latencies_lines_and_json(tmp_path):
    (tmp_path / "a.txt").write_text("0.01\n\n# a comment\n0.02  # trailing\n")
    (tmp_path / "b.json").write_text("[0.01, 0.03]")
    assert read_latencies(tmp_path / "a.txt").tolist() == [0.01, 0.02]
    assert read_latencies(tmp_path / "b.json").tolist() == [0.01, 0.03]
    (tmp_path / "c.txt").write_text("0.01\nfast\n")
    with pytest.raises(AvgPoolError, match=r"c\.txt: latencies must be numbers in seconds"):
        read_latencies(tmp_path / "c.txt")
    (tmp_path / "d.txt").write_text("0.01\n-1\n")
    with pytest.raises(AvgPoolError, match=r"d.txt: latencies must be finite seconds >= 0"):
        read_latencies(tmp_path / "d.txt")


def _files(tmp_path: Path, shift: float = 0.0, drift: float = 0.0, n: int = 400) -> list[str]:
    paths = [
        tmp_path / "base.avgprof",
        tmp_path / "cand.avgprof",
        tmp_path / "base.txt",
        tmp_path / "cand.json",
    ]
    _profile(0).save(paths[0])
    _profile(drift).save(paths[1])
    paths[2].write_text("\n".join(map(str, _latencies(n, 1))))
    paths[3].write_text(json.dumps(_latencies(n, 2, shift)))
    return [str(p) for p in paths]


def test_from_files(tmp_path):
    base, cand, mirror = from_files(*_files(tmp_path), errors=(0, 2))
    assert (base.version, base.requests, cand.requests, cand.errors) == ("baseline", 400, 402, 2)
    assert base.profile is not None and mirror is None
    base, cand, _ = from_files(None, None, *_files(tmp_path)[2:])
    assert base.profile is None and cand.profile is None


@pytest.mark.parametrize(
    ("shift", "drift", "n", "code", "verdict"),
    [
        (0.0, 0.0, 400, 0, "pass"),
        (0.0, 0.0, 100, 1, "not enough data"),
        (0.003, 0.0, 400, 2, "fail"),
        (0.0, 2.0, 400, 2, "fail"),
    ],
)
def test_cli_exit_codes(tmp_path, capsys, shift, drift, n, code, verdict):
    files = _files(tmp_path, shift, drift, n)
    assert main(["canary", "judge", "--files", *files, "--look", "3", "--json"]) == code
    data = json.loads(capsys.readouterr().out)
    assert data["verdict"] == verdict and data["look"] == 3 and data["exit_code"] == code
    assert main(["canary", "judge", "--files", *files, "--candidate", "v2"]) == code
    out = capsys.readouterr().out
    assert out.startswith(f"canary judge: v2 against baseline (files): {verdict}")
    assert "look 3 of 20" not in out and "look 1 of 20" in out


def test_cli_without_profiles_and_with_a_mirror(tmp_path, capsys):
    files = _files(tmp_path)
    (tmp_path / "mirror.json").write_text(
        json.dumps({"compared": 200, "top1_agree": 150, "max_abs_error": 2.0})
    )
    args = [
        "canary",
        "judge",
        "--files",
        "-",
        "-",
        *files[2:],
        "--mirror",
        str(tmp_path / "mirror.json"),
        "--json",
    ]
    assert main(args) == 2
    checks = {c["name"]: c["verdict"] for c in json.loads(capsys.readouterr().out)["checks"]}
    assert checks == {
        "enough data": "pass",
        "latency": "pass",
        "errors": "pass",
        "activations": "not available",
        "outputs": "fail",
    }


def test_cli_policy_options(tmp_path, capsys):
    files = _files(tmp_path, shift=0.0008)  # under the 1 ms default tolerance, over 0.5 ms
    assert main(["canary", "judge", "--files", *files]) == 0
    assert main(["canary", "judge", "--files", *files, "--max-slowdown", "0.02"]) == 2
    assert main(["canary", "judge", "--files", *files, "--min-requests", "1000"]) == 1
    assert main(["canary", "judge", "--files", *files, "--min-profiled", "5000"]) == 1  # 2304 a channel
    capsys.readouterr()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--look", "21"], "look must be an integer from 1 to max_looks (20), got 21"),
        (["--alpha", "2"], "alpha must be above 0 and at most 0.5, got 2.0"),
        (["--server", "http://127.0.0.1:9"], "canary judge --server needs --model"),
        (
            ["--prometheus", "http://127.0.0.1:9", "--model", "m"],
            "canary judge --prometheus needs --baseline and --candidate",
        ),
    ],
)
def test_cli_bad_input(tmp_path, capsys, args, message):
    if "--server" not in args and "--prometheus" not in args:
        args = ["--files", *_files(tmp_path), *args]
    assert main(["canary", "judge", *args]) == 2
    assert message in capsys.readouterr().err
