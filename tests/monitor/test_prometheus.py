"""Prometheus: exposition parsed by prometheus_client's own parser, a live instrumented model
scraped over HTTP on 127.0.0.1, and the textfile written for node_exporter."""

from __future__ import annotations

import math
import urllib.request

import numpy as np
import pytest

from avgpool.monitor import Profile, compare, exposition, instrument, profile_torch, serve, write_textfile

client = pytest.importorskip("prometheus_client")
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402


def samples(text):
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


@pytest.fixture
def pair():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((500, 3, 2))
    base = Profile()
    base.update_many({"/pool/MaxPool": x, "gap": x[:, :, 0]})
    cand = Profile.like(base)
    y = x.copy()
    y[0, 0, 0] = np.nan
    cand.update_many({"/pool/MaxPool": y + 0.4, "gap": x[:, :, 0]})
    return base, cand


def test_exposition_values_match_the_profile_and_drift(pair):
    base, cand = pair
    got = samples(exposition(cand, model="tiny", version="2", baseline=base))
    lab = lambda layer: (("layer", layer), ("model", "tiny"), ("version", "2"))  # noqa: E731
    t = cand["/pool/MaxPool"].totals()
    assert got[("avgpool_activation_mean", lab("/pool/MaxPool"))] == pytest.approx(t["mean"], rel=1e-12)
    assert got[("avgpool_activation_std", lab("/pool/MaxPool"))] == pytest.approx(t["std"], rel=1e-12)
    assert got[("avgpool_activation_values_total", lab("/pool/MaxPool"))] == 2999
    assert got[("avgpool_activation_nonfinite_values_total", lab("/pool/MaxPool"))] == 1
    d = compare(base, cand).by_name("/pool/MaxPool")
    assert got[("avgpool_activation_psi", lab("/pool/MaxPool"))] == pytest.approx(d.metrics["psi"], rel=1e-12)
    assert got[("avgpool_activation_drift_status", lab("/pool/MaxPool"))] == 2
    assert got[("avgpool_activation_drift_status", lab("gap"))] == 0
    assert not any(name.startswith("avgpool_activation_channel") for name, _ in got)


def test_per_channel_only_on_request(pair):
    _, cand = pair
    got = samples(exposition(cand, model="m", per_channel=True))
    channel = {k: v for k, v in got.items() if k[0] == "avgpool_activation_channel_mean"}
    assert len(channel) == 6  # 3 channels x 2 layers
    key = (
        "avgpool_activation_channel_mean",
        (("channel", "1"), ("layer", "gap"), ("model", "m"), ("version", "")),
    )
    assert channel[key] == pytest.approx(cand["gap"].mean[1], rel=1e-12)


def test_textfile_is_parseable(tmp_path, pair):
    base, cand = pair
    path = tmp_path / "avgpool.prom"
    write_textfile(path, cand, model="m", baseline=base)
    got = samples(path.read_text())
    assert any(k[0] == "avgpool_activation_psi" for k in got)
    assert [p.name for p in tmp_path.iterdir()] == ["avgpool.prom"]


def test_instrumented_model_served_on_loopback(models, images):
    torch = pytest.importorskip("torch")
    registry = client.CollectorRegistry()
    model = models["base"]
    base = profile_torch(model, [images])
    handle = instrument(model, registry=registry, model_name="tiny", version="1", baseline=base)
    server, port = serve(registry)
    try:
        assert server.server_address[0] == "127.0.0.1" and port > 0
        with torch.no_grad():
            for chunk in np.array_split(images, 3):
                model(torch.from_numpy(chunk))
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
    finally:
        server.shutdown()
        server.server_close()
        handle.remove()
    got = samples(text)
    lab = (("model", "tiny"), ("version", "1"))
    assert got[("avgpool_inference_latency_seconds_count", lab)] == 3
    assert got[("avgpool_inference_samples_total", lab)] == 48
    assert 0 < got[("avgpool_inference_latency_seconds_sum", lab)] < 60
    pool1 = (("layer", "pool1"), *lab)
    assert got[("avgpool_activation_mean", pool1)] == pytest.approx(base["pool1"].totals()["mean"], rel=1e-6)
    # the same inputs as the baseline: no drift
    assert got[("avgpool_activation_psi", pool1)] == pytest.approx(0.0, abs=1e-9)
    assert got[("avgpool_activation_drift_status", pool1)] == 0
    # detached: further calls change nothing, and the profile metrics are unregistered
    with torch.no_grad():
        model(torch.from_numpy(images[:2]))
    assert handle.latency._sum.get() == pytest.approx(got[("avgpool_inference_latency_seconds_sum", lab)])
    assert not any(
        n.startswith("avgpool_activation") for n, _ in samples(client.generate_latest(registry).decode())
    )
    assert math.isfinite(handle.profile["gap"].totals()["std"])
