"""Fixtures of the server tests: the demo's model (examples/monitor_pooling.py's TinyNet) exported
to ONNX in two versions, servers started in a thread on a free port of 127.0.0.1 (stopped
whatever happens), a tritonclient for them and a reader of their /metrics."""

from __future__ import annotations

import importlib.util
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


def demo_module():
    """examples/monitor_pooling.py, imported from its file (examples/ is no package)."""
    name = "avgpool_example_monitor_pooling"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / "monitor_pooling.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.fixture(scope="session")
def demo_models(tmp_path_factory):
    """{"base": base.onnx, "candidate": candidate.onnx}: the demo's TinyNet and its twin whose stem
    max pool is an average pool (same weights), exported as the demo exports them."""
    pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")

    base, candidate = export_demo_pair(tmp_path_factory.mktemp("serve-models"), "candidate")
    return {"base": base, "candidate": candidate}


def export_demo_pair(root, twin: str):
    """(base.onnx, {twin}.onnx) in ``root``: the demo's TinyNet (seed 0) and its twin whose stem
    max pool is an average pool, with the same weights, exported as the demo exports them."""
    import torch

    demo = demo_module()
    torch.manual_seed(0)
    base = demo.TinyNet()
    other = demo.TinyNet(torch.nn.AvgPool2d(3, 2, 1))
    other.load_state_dict(base.state_dict())
    return demo.export(base, root / "base.onnx"), demo.export(other, root / f"{twin}.onnx")


def images(n: int = 2, seed: int = 0) -> np.ndarray:
    return demo_module().sample_images(n, seed)


def failing_runner(name: str = "boom", version: str = "1", gate: threading.Event | None = None):
    """A Runner (the real class) whose model raises on inputs above 100; with ``gate``, its
    warm-up waits for the gate to open."""
    from avgpool.serve._runners import Runner, TensorSpec

    def plain(feeds):
        x = feeds["x"]
        if (x > 100).any():
            raise RuntimeError("input above 100")
        return {"y": x * 2}

    class Gated(Runner):
        def warmup(self) -> float:
            if gate is not None:
                gate.wait(30)
            return super().warmup()

    return Gated(
        name=name,
        version=version,
        platform="onnxruntime_onnx",
        inputs=[TensorSpec("x", "FP32", (-1, 4))],
        outputs=[TensorSpec("y", "FP32", (-1, 4))],
        layers=(),
        size_bytes=16,
        sha256="0" * 64,
        plain=plain,
        sampled=lambda feeds: (plain(feeds), {}),
    )


@pytest.fixture
def start_server():
    """start_server(config, runners=None) -> a running ServerHandle; all stopped at teardown."""
    from avgpool.serve._server import start_in_thread

    handles = []

    def start(config, **kwargs):
        handle = start_in_thread(config, **kwargs)
        handles.append(handle)
        return handle

    try:
        yield start
    finally:
        for handle in handles:
            handle.stop()
        for handle in handles:
            for runner in handle.state.repository.runners():
                runner.close()


def triton(url: str):
    """A tritonclient for a server at ``url`` (http://host:port)."""
    import tritonclient.http as httpclient

    return httpclient.InferenceServerClient(url.removeprefix("http://"), network_timeout=30.0)


def infer(url: str, x: np.ndarray, *, model="tiny", version="", binary=True, outputs=None, request_id=""):
    """tritonclient's infer of ``x`` as the demo models' FP32 input "image"."""
    import tritonclient.http as httpclient

    inp = httpclient.InferInput("image", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=binary)
    return triton(url).infer(model, [inp], model_version=version, outputs=outputs, request_id=request_id)


def run_directly(path: str, x: np.ndarray) -> np.ndarray:
    """The ONNX model at ``path`` on ``x`` in ONNX Runtime, without the server: what it should answer."""
    import onnxruntime as ort

    return ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"image": x})[0]


def metric(url: str, name: str, **labels: str) -> float:
    """The value of the sample ``name{labels}`` in the server's /metrics (0.0 when absent)."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{url}/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


def wait_for(predicate, timeout: float = 30.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")
