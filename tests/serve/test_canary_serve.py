"""Canaries in ``avgpool serve`` with tritonclient on 127.0.0.1: the split's exact share,
versioned requests untouched, shadow answers equal to the baseline's and the mirrored outputs
compared exactly, per-version records and their reset, the canary metrics, every admin error,
the Flagger webhook through a registered judge, bounded buffers and queue."""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading

import httpx
import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
httpclient = pytest.importorskip("tritonclient.http")
from tritonclient.utils import InferenceServerException  # noqa: E402

from avgpool.serve._canary import (  # noqa: E402
    MISMATCH_ERROR,
    Canaries,
    Canary,
    MirrorRecords,
    VersionRecords,
    compare_outputs,
    register_judge,
)
from avgpool.serve._server import ServeConfig  # noqa: E402
from tests.serve.conftest import failing_runner, images, metric, triton  # noqa: E402


@pytest.fixture(scope="module")
def server(demo_models):
    """tiny 1 (base), 2 (candidate: stem max pool -> average pool), 3 (base again); boom 1 and 2
    (raise above 100); --admin."""
    from avgpool.serve._runners import load_runner
    from avgpool.serve._server import start_in_thread

    runners = [
        load_runner(demo_models["base"], name="tiny", version="1"),
        load_runner(demo_models["candidate"], name="tiny", version="2"),
        load_runner(demo_models["base"], name="tiny", version="3"),
        failing_runner("boom", "1"),
        failing_runner("boom", "2"),
    ]
    config = ServeConfig(models=[], port=0, sample_every=0, log_level="warning", admin=True)
    handle = start_in_thread(config, runners=runners)
    try:
        assert handle.wait_ready(60), handle.state.warmup_errors
        yield handle
    finally:
        handle.stop()
        for runner in runners:
            runner.close()


@pytest.fixture
def admin(server):
    """An httpx client for the server; every canary it opened is closed afterwards."""
    with httpx.Client(base_url=server.url, timeout=30) as client:
        try:
            yield client
        finally:
            for model in ("tiny", "boom"):
                client.delete(f"/admin/canary/{model}")
            register_judge(None)


def open_canary(client, **body):
    response = client.post("/admin/canary", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def infer(url, x, *, model="tiny", version=""):
    """(served version, outputs) of one request."""
    name = "linear" if model == "tiny" else "y"
    inp = httpclient.InferInput("image" if model == "tiny" else "x", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=True)
    result = triton(url).infer(model, [inp], model_version=version)
    return result.get_response()["model_version"], result.as_numpy(name)


def test_split_share_is_exact_and_versioned_requests_are_untouched(server, admin):
    summary = open_canary(admin, model="tiny", baseline="1", candidate="2", share=0.25)
    assert summary.keys() == {"model", "baseline", "candidate", "share", "mode", "since"}
    assert summary | {"since": 0} == {
        "model": "tiny",
        "baseline": "1",
        "candidate": "2",
        "share": 0.25,
        "mode": "split",
        "since": 0,
    }
    x = images(1)
    served, to_candidate = [], 0
    for n in range(1, 201):
        version, _ = infer(server.url, x)
        served.append(version)
        to_candidate += version == "2"
        assert abs(to_candidate - round(n * 0.25)) <= 1, n
        if n % 50 == 0:  # a request naming a version goes there, and is not the canary's
            assert infer(server.url, x, version="3")[0] == "3"
            assert infer(server.url, x, version="2")[0] == "2"
    assert served.count("2") == 50 and served.count("1") == 150
    assert metric(server.url, "avgpool_canary_share", model="tiny") == 0.25
    state = admin.get("/admin/canary/tiny").json()
    assert state["versions"].keys() == {"1", "2"}
    for version, n in (("1", 150), ("2", 50)):
        records = state["versions"][version]
        assert records["requests"] == n and records["errors"] == 0 and records["errors_by_kind"] == {}
        assert len(records["latencies"]) == n and all(0 < s < 5 for s in records["latencies"])
    assert state["mirror"]["compared"] == 0 and state["mirror"]["abs_errors"] == []

    # a new share restarts the round robin; 1.0 sends everything to the candidate, 0 back
    open_canary(admin, model="tiny", baseline="1", candidate="2", share=1.0)
    assert {infer(server.url, x)[0] for _ in range(5)} == {"2"}
    open_canary(admin, model="tiny", baseline="1", candidate="2", share=0)
    assert {infer(server.url, x)[0] for _ in range(5)} == {"1"}
    assert metric(server.url, "avgpool_canary_share", model="tiny") == 0
    state = admin.get("/admin/canary/tiny").json()
    assert state["versions"]["1"]["requests"] == 155 and state["versions"]["2"]["requests"] == 55

    reset = admin.post("/admin/canary/tiny/reset")
    assert reset.status_code == 200 and reset.json()["since"] >= summary["since"]
    state = admin.get("/admin/canary/tiny").json()
    assert state["versions"]["1"] == {"requests": 0, "errors": 0, "errors_by_kind": {}, "latencies": []}

    closed = admin.delete("/admin/canary/tiny")
    assert closed.status_code == 200 and closed.json()["closed"] is True
    assert admin.get("/admin/canary/tiny").status_code == 404
    assert infer(server.url, x)[0] == "3"  # no canary: a name alone means its highest version


def test_shadow_of_an_identical_version_answers_as_the_baseline_and_agrees_exactly(server, admin):
    open_canary(admin, model="tiny", baseline="1", candidate="3", mode="shadow", share=0.5)
    before = metric(server.url, "avgpool_canary_mirrored_total", model="tiny")
    for seed in range(20):
        x = images(4, seed)
        version, out = infer(server.url, x)
        assert version == "1"
        np.testing.assert_array_equal(out, infer(server.url, x, version="1")[1])
    assert metric(server.url, "avgpool_canary_share", model="tiny") == 0  # shadow: never answers
    server.state.canaries.drain()
    state = admin.get("/admin/canary/tiny").json()
    assert state["mode"] == "shadow"
    mirror = state["mirror"]
    assert mirror["requests"] == 20 and mirror["compared"] == 80 and mirror["top1_compared"] == 80
    assert mirror["top1_agree"] == 80
    assert mirror["max_abs_error"] == 0 and mirror["max_rel_error"] == 0 and mirror["abs_errors"] == [0] * 20
    assert mirror["dropped"] == 0 and mirror["mismatched"] == 0
    assert state["versions"]["1"]["requests"] == 20 and state["versions"]["3"]["requests"] == 20
    assert len(state["versions"]["3"]["latencies"]) == 20
    assert metric(server.url, "avgpool_canary_mirrored_total", model="tiny") == before + 80
    assert metric(server.url, "avgpool_canary_top1_agreements_total", model="tiny") >= 80


def test_shadow_of_the_swapped_pool_disagrees_and_still_answers_as_the_baseline(server, admin):
    open_canary(admin, model="tiny", baseline="1", candidate="2", mode="shadow")
    expected, got = [], []
    for seed in range(10):
        x = images(16, 100 + seed)
        version, out = infer(server.url, x)
        assert version == "1"
        got.append(out)
        expected.append(infer(server.url, x, version="2")[1])
        np.testing.assert_array_equal(out, infer(server.url, x, version="1")[1])
    server.state.canaries.drain()
    mirror = admin.get("/admin/canary/tiny").json()["mirror"]
    base, cand = np.concatenate(got), np.concatenate(expected)
    agree = int((base.argmax(1) == cand.argmax(1)).sum())
    assert mirror["compared"] == 160 and mirror["top1_agree"] == agree < 160
    assert mirror["max_abs_error"] == pytest.approx(float(np.abs(base - cand).max()), rel=1e-6)
    assert mirror["max_abs_error"] > 1e-3 and mirror["max_rel_error"] > 0
    assert len(mirror["abs_errors"]) == 10


def test_a_slow_shadow_candidate_never_delays_the_answers(server, admin):
    import time

    open_canary(admin, model="tiny", baseline="1", candidate="3", mode="shadow")
    fault = {"model": "tiny", "version": "3", "latency_ms": 200}
    assert admin.post("/admin/faults", json=fault).status_code == 200
    try:
        start = time.perf_counter()
        for seed in range(5):
            assert infer(server.url, images(1, seed))[0] == "1"
        answered = time.perf_counter() - start
        server.state.canaries.drain()
    finally:
        admin.post("/admin/faults", json=fault | {"latency_ms": 0})
    assert answered < 0.5  # the candidate alone needs 1 s for these five
    state = admin.get("/admin/canary/tiny").json()
    assert len(state["versions"]["3"]["latencies"]) == 5
    assert min(state["versions"]["3"]["latencies"]) >= 0.2  # model-run seconds, fault included
    assert max(state["versions"]["1"]["latencies"]) < 0.2


def test_errors_are_recorded_by_kind_and_only_server_errors_count(server, admin):
    open_canary(admin, model="boom", baseline="1", candidate="2", share=0.5)
    good, bad = np.ones((1, 4), np.float32), np.full((1, 4), 1000, np.float32)
    for x in (good, good, bad, bad, good, bad, np.ones((1, 5), np.float32), np.ones((1, 5), np.float32)):
        with pytest.raises(InferenceServerException) if x is not good else contextlib.nullcontext():
            infer(server.url, x, model="boom")
    state = admin.get("/admin/canary/boom").json()["versions"]
    total = {
        k: state["1"]["errors_by_kind"].get(k, 0) + state["2"]["errors_by_kind"].get(k, 0)
        for k in ("model_error", "bad_request")
    }
    assert total == {"model_error": 3, "bad_request": 2}
    assert state["1"]["requests"] == state["2"]["requests"] == 4
    assert state["1"]["errors"] + state["2"]["errors"] == 3  # 5xx only: bad requests are the client's
    assert len(state["1"]["latencies"]) + len(state["2"]["latencies"]) == 3  # answered only


def test_admin_errors(server, admin):
    post = lambda body: admin.post("/admin/canary", json=body)  # noqa: E731
    ok = {"model": "tiny", "baseline": "1", "candidate": "2", "share": 0.05, "mode": "split"}
    cases = [
        (ok | {"model": "nope"}, 404, "unknown model 'nope'; this server serves ['boom', 'tiny']"),
        (ok | {"candidate": "9"}, 404, "model 'tiny' has no version '9'; it has versions ['1', '2', '3']"),
        (ok | {"share": 1.5}, 400, "share must be a number from 0 to 1, got 1.5"),
        (ok | {"share": -0.1}, 400, "share must be a number from 0 to 1, got -0.1"),
        (ok | {"share": True}, 400, "share must be a number from 0 to 1, got True"),
        (ok | {"share": "5%"}, 400, "share must be a number from 0 to 1, got '5%'"),
        (ok | {"candidate": "1"}, 400, "candidate must differ from baseline, both are '1'"),
        (ok | {"mode": "mirror"}, 400, "mode must be 'split' or 'shadow', got 'mirror'"),
        (ok | {"weight": 5}, 400, "unknown field(s) ['weight'] in the body"),
        (
            {k: v for k, v in ok.items() if k != "baseline"},
            400,
            "baseline must be a version (a string), got None",
        ),
        ([1], 400, "the body must be a JSON object"),
    ]
    for body, status, message in cases:
        response = post(body)
        assert response.status_code == status, (body, response.text)
        assert response.json()["error"].startswith(message), (body, response.text)
    bad = admin.post("/admin/canary", content=b"{", headers={"content-type": "application/json"})
    assert bad.status_code == 400 and bad.json()["error"].startswith("malformed JSON")
    for method, path in (("GET", ""), ("POST", "/reset"), ("DELETE", "")):
        none = admin.request(method, f"/admin/canary/tiny{path}")
        assert none.status_code == 404
        assert none.json()["error"] == "no canary is open on model 'tiny'; POST /admin/canary opens one"
        unknown = admin.request(method, f"/admin/canary/nope{path}")
        assert unknown.status_code == 404 and unknown.json()["error"].startswith("unknown model 'nope'")
    assert admin.post("/admin/flagger/tiny").status_code == 501  # no judge registered
    assert admin.get("/admin/canary/tiny").status_code == 404  # nothing was opened

    async def from_elsewhere():
        transport = httpx.ASGITransport(app=server.app, client=("10.1.2.3", 4321))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return [
                await client.post("/admin/canary", json=ok),
                await client.get("/admin/canary/tiny"),
                await client.post("/admin/canary/tiny/reset"),
                await client.delete("/admin/canary/tiny"),
            ]

    for response in asyncio.run(from_elsewhere()):
        assert response.status_code == 403
        assert response.json() == {"error": "admin endpoints answer loopback clients only"}


def test_canary_routes_need_admin(start_server):
    config = ServeConfig(models=[], port=0, log_level="warning", warmup=False)
    handle = start_server(config, runners=[failing_runner("boom", "1"), failing_runner("boom", "2")])
    body = {"model": "boom", "baseline": "1", "candidate": "2", "share": 0.5}
    assert httpx.post(f"{handle.url}/admin/canary", json=body).status_code == 404
    assert httpx.post(f"{handle.url}/admin/flagger/boom").status_code == 404
    assert metric(handle.url, "avgpool_canary_share", model="boom") == 0
    assert metric(handle.url, "avgpool_canary_mirrored_total", model="boom") == 0


def test_flagger_webhook_answers_with_the_registered_judge(server, admin):
    assert admin.post("/admin/flagger/tiny").status_code == 501
    calls = []

    def judge(state, profiles, payload):
        calls.append((state, sorted(profiles), payload))
        if state["versions"]["2"]["requests"] < 2:
            return {
                "verdict": "not enough data",
                "checks": [
                    {"name": "enough data", "verdict": "not enough data", "reason": "1 request < 2"},
                    {"name": "errors", "verdict": "pass", "reason": "no errors"},
                ],
            }
        return {"verdict": "pass", "checks": [], "look": state["look"]}

    register_judge(judge)
    assert admin.post("/admin/flagger/tiny").json()["error"].startswith("no canary is open")
    open_canary(admin, model="tiny", baseline="1", candidate="2", share=0.5)
    infer(server.url, images(1))
    infer(server.url, images(1))
    payload = {"name": "tiny", "namespace": "prod", "phase": "Progressing", "metadata": {}}
    first = admin.post("/admin/flagger/tiny", json=payload)
    assert first.status_code == 503
    assert first.json()["reasons"] == ["enough data: not enough data: 1 request < 2"]
    # a rollout check counts only a fail: not enough data is not one
    held = admin.post("/admin/flagger/tiny?fail_on=fail", json=payload)
    assert held.status_code == 200 and held.json()["verdict"] == "not enough data"
    bad = admin.post("/admin/flagger/tiny?fail_on=maybe")
    assert bad.status_code == 400 and "fail_on must be one of ['fail', 'not-pass']" in bad.json()["error"]
    infer(server.url, images(1))
    infer(server.url, images(1))
    second = admin.post("/admin/flagger/tiny")  # Flagger may post no body
    assert second.status_code == 200 and second.json() == {
        "verdict": "pass",
        "checks": [],
        "look": 3,
        "reasons": [],
    }
    (state, versions, got), (_, _, held_payload), (_, _, empty) = calls
    assert versions == ["1", "2"] and got == payload == held_payload and empty == {}
    assert state["look"] == 1 and state["versions"]["2"]["requests"] == 1

    class Verdict:  # the judge's own type: to_dict and verdict, called with two arguments
        verdict = "fail"

        def to_dict(self):
            return {"verdict": "fail", "checks": [{"name": "latency", "verdict": "fail", "reason": "slower"}]}

    register_judge(lambda state, profiles: Verdict())
    third = admin.post("/admin/flagger/tiny")
    assert third.status_code == 503 and third.json()["reasons"] == ["latency: fail: slower"]
    assert admin.post("/admin/flagger/tiny?fail_on=fail").status_code == 503
    register_judge(lambda state, profiles: 1 / 0)
    broken = admin.post("/admin/flagger/tiny")
    assert broken.status_code == 500 and "ZeroDivisionError" in broken.json()["error"]


def test_cli_carries_on_without_the_canary_layer(monkeypatch, capsys):
    import sys
    import types

    from avgpool.cli._serve import install_canary_judge

    monkeypatch.setitem(sys.modules, "avgpool.canary", None)  # as if not installed
    assert install_canary_judge() is False
    assert "POST /admin/flagger/MODEL answers 501" in capsys.readouterr().err
    installed = types.ModuleType("avgpool.canary")
    monkeypatch.setitem(sys.modules, "avgpool.canary", installed)
    assert install_canary_judge() is True and capsys.readouterr().err == ""


@pytest.mark.parametrize("share", [0.0, 0.05, 0.1, 1 / 3, 0.5, 0.95, 1.0])
def test_round_robin_keeps_the_share_within_one_request(share):
    canary = Canary("m", "1", "2", share, "split")
    to_candidate = 0
    for n in range(1, 1001):
        to_candidate += canary.route() == "2"
        assert abs(to_candidate - n * share) <= 1 and to_candidate == math.floor(n * share + 0.5)


def test_records_are_bounded_and_oldest_first():
    records = VersionRecords(max_records=5)
    for i in range(12):
        records.answered(i / 100)
    records.failed("bad_request", 400)
    records.failed("model_error", 500)
    assert records.to_dict() == {
        "requests": 14,
        "errors": 1,
        "errors_by_kind": {"bad_request": 1, "model_error": 1},
        "latencies": [0.07, 0.08, 0.09, 0.1, 0.11],
    }
    mirror = MirrorRecords(max_records=3)
    for i in range(5):
        mirror.add(compare_outputs({"y": np.zeros((2, 3))}, {"y": np.full((2, 3), float(i))}))
    doc = mirror.to_dict()
    assert doc["abs_errors"] == [2.0, 3.0, 4.0] and doc["requests"] == 5 and doc["compared"] == 10


def test_a_full_shadow_queue_drops_and_counts():
    gate = threading.Event()
    canaries = Canaries(queue_size=1)

    def run(runner, inputs):
        gate.wait(10)
        return {"y": inputs["x"]}, 0.001

    canaries.run = run
    canary = canaries.open("m", "1", "2", 0.0, "shadow")

    class Runner:
        version = "2"

    x = {"x": np.ones((1, 3), np.float32)}
    try:
        results = [canaries.mirror(canary, Runner(), x, {"y": np.ones((1, 3))}) for _ in range(5)]
    finally:
        gate.set()
    canaries.drain()
    canaries.stop()
    # one running on the worker (maybe), one queued: the rest were dropped at once
    assert results[:1] == [True] and results.count(False) >= 3
    doc = canary.to_dict()
    assert doc["mirror"]["dropped"] == results.count(False) == canaries.totals("m")["dropped"]
    assert doc["mirror"]["requests"] == results.count(True) and doc["mirror"]["top1_agree"] == results.count(
        True
    )


def test_compare_outputs():
    base = np.array([[0.0, 1.0, 2.0], [3.0, 1.0, 0.0]], np.float32)
    same = compare_outputs({"y": base}, {"y": base.copy()})
    assert (same.rows, same.top1_rows, same.top1_agree, same.max_abs_error, same.mismatch) == (
        2,
        2,
        2,
        0,
        False,
    )
    flipped = base.copy()
    flipped[1] = [0.0, 1.0, 3.5]
    c = compare_outputs({"y": base}, {"y": flipped})
    assert (c.top1_agree, c.max_abs_error, c.max_rel_error) == (1, 3.5, 3.5 / 3)
    assert compare_outputs({"y": base}, {"y": base[:1]}).max_abs_error == MISMATCH_ERROR
    assert compare_outputs({"y": base}, {"z": base}).mismatch
    nan = np.array([[np.nan, 1.0]])
    assert not compare_outputs({"y": nan}, {"y": nan.copy()}).mismatch
    assert compare_outputs({"y": nan}, {"y": np.array([[0.0, 1.0]])}).mismatch
    flat = compare_outputs({"y": np.zeros(4)}, {"y": np.full(4, 1e-6)})
    assert flat.top1_rows == 0 and flat.max_abs_error == pytest.approx(1e-6) and not flat.mismatch


def test_a_canary_opened_at_start_mirrors_from_the_first_request(demo_models):
    """``--canary`` opens the canary before the server answers, for servers whose admin routes a
    deployment tool cannot reach (Flagger's webhook judges a pod's own records)."""
    from avgpool.serve._runners import load_runner
    from avgpool.serve._server import start_in_thread

    runners = [
        load_runner(demo_models["base"], name="tiny", version="1"),
        load_runner(demo_models["base"], name="tiny", version="2"),
    ]
    config = ServeConfig(
        models=[], port=0, sample_every=0, log_level="warning", admin=True, canary="tiny=1,2"
    )
    handle = start_in_thread(config, runners=runners)
    try:
        assert handle.wait_ready(60)
        for _ in range(3):
            assert infer(handle.url, images(2))[0] == "1"  # shadow: the baseline answers
        handle.state.canaries.drain()
        doc = httpx.get(f"{handle.url}/admin/canary/tiny").json()
        assert (doc["baseline"], doc["candidate"], doc["mode"], doc["share"]) == ("1", "2", "shadow", 0.0)
        assert doc["mirror"]["compared"] == 6 and doc["mirror"]["top1_agree"] == 6
    finally:
        handle.stop()
        for runner in runners:
            runner.close()


@pytest.mark.parametrize(
    ("canary", "admin", "message"),
    [
        ("tiny=1,2", False, "--canary needs --admin"),
        ("tiny=1", True, "--canary must be NAME=BASELINE,CANDIDATE[,MODE[,SHARE]]"),
        ("tiny=1,2,split,half", True, "--canary's share must be a number from 0 to 1, got 'half'"),
        ("tiny=1,2,split,1.5", True, "--canary tiny=1,2,split,1.5: share must be a number from 0 to 1"),
        ("tiny=1,2,both", True, "mode must be 'split' or 'shadow', got 'both'"),
        ("tiny=1,9", True, "--canary tiny=1,9:"),
        ("tiny=1,1", True, "candidate must differ from baseline"),
    ],
)
def test_a_bad_canary_at_start_is_refused_naming_the_option(demo_models, canary, admin, message):
    from avgpool._errors import AvgPoolError
    from avgpool.serve._runners import load_runner
    from avgpool.serve._server import build_state

    runner = load_runner(demo_models["base"], name="tiny", version="1")
    config = ServeConfig(models=[], port=0, admin=admin, canary=canary)
    with pytest.raises(AvgPoolError) as info:
        build_state(config, runners=[runner])
    assert message in str(info.value)
    runner.close()
