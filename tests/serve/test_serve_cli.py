"""``avgpool serve`` and ``avgpool warmup`` from the command line: the MODEL forms, the options
into a `ServeConfig`, bad arguments refused in one line, and the command in a subprocess with one
and with two workers (ready, answering, counting across workers, SIGTERM ending it cleanly)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys

import httpx
import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
httpclient = pytest.importorskip("tritonclient.http")

from tests.serve.conftest import ROOT, images, infer, metric, run_directly, wait_for  # noqa: E402


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("models/tiny.onnx", (None, None, "models/tiny.onnx")),
        ("tiny=models/a.onnx", ("tiny", None, "models/a.onnx")),
        ("tiny:2=models/b.onnx", ("tiny", "2", "models/b.onnx")),
        ("pkg.mod:factory", (None, None, "pkg.mod:factory")),
        ("net:v1=pkg.mod:factory", ("net", "v1", "pkg.mod:factory")),
    ],
)
def test_model_argument_forms(text, parsed):
    from avgpool.serve._server import parse_model

    assert parse_model(text) == parsed


def test_serve_arguments_make_the_config():
    from avgpool.cli import _parser
    from avgpool.cli._serve import config_from_args

    argv = ["serve", "a:1=x.onnx", "a:2=y.onnx", "--baseline", "a=base.avgprof", "--port", "0"]
    argv += ["--input-shape", "image=2x3x32x32", "--sample-every", "5", "--max-body-mb", "2"]
    args = _parser().parse_args([*argv, "--admin", "--no-warmup"])
    config = config_from_args(args)
    assert config.models == ["a:1=x.onnx", "a:2=y.onnx"]
    assert config.baselines == {"a": "base.avgprof"}
    assert config.input_shapes == {"image": (2, 3, 32, 32)}
    assert (config.host, config.port, config.sample_every, config.max_body_mb) == ("127.0.0.1", 0, 5, 2.0)
    assert config.admin and not config.warmup


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["serve", "a.onnx", "b.onnx", "--name", "x"], "--name names one model, got 2 MODELs"),
        (["serve", "a.onnx", "--workers", "0"], "--workers must be >= 1, got 0"),
        (["serve", "a.onnx", "--workers", "2", "--admin"], "--admin needs --workers 1, got --workers 2"),
        (["serve", "missing.onnx", "--port", "0"], "missing.onnx: no such model file"),
        (["warmup", "missing.onnx"], "missing.onnx: no such model file"),
    ],
)
def test_serve_refuses_bad_arguments_with_one_line(argv, message, capsys):
    from avgpool.cli import main

    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"avgpool {argv[0]}: error: ") and message in err


def test_baseline_must_name_a_served_model(demo_models, capsys):
    from avgpool.cli import main

    assert main(["serve", demo_models["base"], "--baseline", "other=x.avgprof", "--port", "0"]) == 2
    assert "--baseline names model 'other'; the models served are ['base']" in capsys.readouterr().err


def test_warmup_prints_load_and_warm_up_seconds(demo_models, capsys):
    from avgpool.cli import main

    assert main(["warmup", f"tiny:3={demo_models['base']}"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("tiny:3  load ") and " warm-up " in line and line.endswith(" s")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("workers", [1, 2])
def test_serve_command_in_a_subprocess(demo_models, workers):
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    argv = [sys.executable, "-m", "avgpool", "serve", f"tiny={demo_models['base']}", "--port", str(port)]
    argv += ["--workers", str(workers), "--sample-every", "1", "--interval", "0.5", "--log-level", "warning"]
    # a session of its own: if the test fails, killing the group also stops uvicorn's workers,
    # which a SIGKILL of the supervisor alone would leave running
    proc = subprocess.Popen(
        argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:

        def ready():
            if proc.poll() is not None:
                raise AssertionError(f"avgpool serve exited {proc.returncode}: {proc.stderr.read()}")
            try:
                return httpx.get(f"{url}/v2/health/ready", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(ready, 60, "avgpool serve to be ready")
        x = images(2, seed=7)
        for _ in range(4):
            out = infer(url, x).as_numpy("linear")
            np.testing.assert_allclose(out, run_directly(demo_models["base"], x), rtol=1e-6, atol=1e-6)
        # with several workers every scrape answers for all of them
        assert metric(url, "avgpool_requests_total", model="tiny", version="1") == 4
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # the workers too, whatever the supervisor did
        proc.wait(10)
        proc.stdout.close()
        proc.stderr.close()
