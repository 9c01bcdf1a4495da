"""`avgpool canary run` against a real `avgpool serve --admin` on 127.0.0.1: two versions of the
demo's model, traffic from a background thread, the identical candidate promoted and a swapped
stem pool rolled back by itself, in split mode and with a shadow stage first."""

from __future__ import annotations

import json

import pytest

httpx = pytest.importorskip("httpx")

from avgpool.canary.run import run_canary  # noqa: E402


@pytest.fixture(scope="module")
def demo_onnx(tmp_path_factory):
    """The demo's TinyNet as base.onnx and its twin with an average-pool stem as swapped.onnx."""
    pytest.importorskip("fastapi")
    pytest.importorskip("avgpool.canary.judge")
    pytest.importorskip("avgpool.serve._canary", reason="this tree's server has no canaries")
    pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    from tests.serve.conftest import export_demo_pair

    base, swapped = export_demo_pair(tmp_path_factory.mktemp("canary-run-models"), "swapped")
    return {"base": base, "swapped": swapped}


def traffic(url, stop, sent):
    """Unversioned requests, one image each, back to back until ``stop``: the users of the canary."""
    from tests.serve.conftest import demo_module

    images = demo_module().sample_images(64, 1)
    with httpx.Client(timeout=10.0) as client:
        i = 0
        while not stop.is_set():
            x = images[i % 64 : i % 64 + 1]
            body = {
                "inputs": [
                    {"name": "image", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}
                ]
            }
            response = client.post(f"{url}/v2/models/tinynet/infer", json=body)
            sent.append(response.status_code)
            i += 1


@pytest.fixture
def served(demo_onnx, request):
    """``avgpool serve --admin`` of tinynet 1 (base) and 2 (the candidate file named by the test's
    param) with traffic flowing; stopped, with its traffic, whatever happens."""
    import threading

    from avgpool.serve import ServeConfig, start_in_thread

    config = ServeConfig(
        models=[f"tinynet:1={demo_onnx['base']}", f"tinynet:2={demo_onnx[request.param]}"],
        port=0,
        admin=True,
        sample_every=1,
        interval=0.5,
        window=60,
        log_level="warning",
    )
    server = start_in_thread(config)
    stop, sent, thread = threading.Event(), [], None
    try:
        assert server.wait_ready()
        thread = threading.Thread(target=traffic, args=(server.url, stop, sent), daemon=True)
        thread.start()
        yield server.url, sent
    finally:
        stop.set()
        if thread is not None:
            thread.join(15)
        server.stop()


def small_policy():
    from avgpool.canary.judge import Policy

    # the defaults want 200 requests per version and window; a test's traffic on 2 shared cores
    # reaches fewer per second, so each step is judged on 60
    return Policy(min_requests=60)


@pytest.mark.parametrize("served", ["base"], indirect=True)
def test_an_identical_candidate_is_promoted_on_a_real_server(served):
    url, sent = served
    looks = []
    result = run_canary(
        url,
        "tinynet",
        "1",
        "2",
        steps=(0.25, 0.5, 1.0),
        interval=1.0,
        max_looks=30,
        policy=small_policy(),
        log=lambda event, record: looks.append(record) if event == "look" else None,
    )
    assert result.outcome == "promoted", json.dumps(result.to_dict(), indent=1, default=str)[:4000]
    assert [a["action"] for a in result.actions if a["action"] != "reset"] == ["open", "step", "promote"]
    state = httpx.get(f"{url}/admin/canary/tinynet").json()
    assert (state["share"], state["mode"], state["baseline"], state["candidate"]) == (1.0, "split", "1", "2")
    # the loop sent no inference itself: the server routed no more than the traffic thread sent
    # (plus the one request it may have in flight)
    routed = sum(v["requests"] for v in state["versions"].values())
    assert 0 < routed <= len(sent) + 1
    assert {look["verdict"] for look in looks} <= {"pass", "marginal", "not enough data"}


@pytest.mark.parametrize("served", ["swapped"], indirect=True)
@pytest.mark.parametrize("shadow_first", [False, True], ids=["split", "shadow-first"])
def test_a_swapped_stem_pool_is_rolled_back_on_a_real_server(served, shadow_first):
    url, _ = served
    result = run_canary(
        url,
        "tinynet",
        "1",
        "2",
        steps=(0.25, 0.5, 1.0),
        interval=1.0,
        max_looks=30,
        policy=small_policy(),
        shadow_first=shadow_first,
    )
    assert result.outcome == "rolled back", json.dumps(result.to_dict(), indent=1, default=str)[:4000]
    assert "activations (fail): drift at" in result.reason
    if shadow_first:
        # caught in the shadow: no user got an answer from the candidate
        assert [a["body"]["mode"] for a in result.actions if "body" in a] == ["shadow", "split"]
        assert result.looks[-1].mode == "shadow"
    state = httpx.get(f"{url}/admin/canary/tinynet").json()
    assert state["share"] == 0.0
    # after the rollback, unversioned requests reach the baseline only
    before = state["versions"].get("2", {}).get("requests", 0)
    import time

    time.sleep(0.5)
    after = httpx.get(f"{url}/admin/canary/tinynet").json()["versions"].get("2", {}).get("requests", 0)
    assert after == before
