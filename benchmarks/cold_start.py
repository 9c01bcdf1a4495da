"""Cold start: time to a first result in a fresh process, with an empty Numba cache and a warm one.

    python benchmarks/cold_start.py                   # every step, once each (a few minutes)
    python benchmarks/cold_start.py --repeats 3 --json cold_start.json
    python benchmarks/cold_start.py --quick           # the first average pool only

Not part of the tests. avgpool's kernels are Numba functions compiled on their first call and
cached on disk (``cache=True``); a fresh process with an empty cache (a new replica, a
serverless function) pays the compilation, one with a filled cache only loads it. Each step runs
in new subprocesses with ``NUMBA_CACHE_DIR`` set to a new temporary directory: once there
("cold"), then again in a second process on the same directory ("warm"). Times run from the
moment the subprocess is started (interpreter start-up included) to the result:

- ``avg_pool2d``: ``import avgpool`` and a first 3x3 average pool (stride 1, padding 1) of a
  float32 array, 8x64x56x56 unless ``--shape`` (the dispatcher picks kernels by size, so the
  shape decides which kernels compile);
- ``max_pool2d``: a 3x3 max pool after it, in the same process (its own extra time);
- ``avgpool.nn``: ``import torch`` and a first forward of a small CNN whose pooling is
  avgpool.nn's (max pool, 3x3 average pool, global average head; `serve_model`);
- ``avgpool serve``: ``python -m avgpool serve cold_start:serve_model`` until
  ``/v2/health/ready`` answers 200 (the server compiles the model's kernels before it is ready);
  "warm" is a new cache directory filled by ``avgpool warmup cold_start:serve_model`` first,
  as an image build would (that command's own time is a row too).

Each figure is the median over ``--repeats`` runs.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from avgpool._tables import Table, text

HERE = Path(__file__).resolve().parent
#: The factory spec `avgpool serve` and `avgpool warmup` load (this file, on PYTHONPATH).
SPEC = "cold_start:serve_model"
#: The ops steps' array (N x C x H x W).
SHAPE = "8x64x56x56"

_OPS = """
import json, sys, time
import numpy as np
import avgpool
marks = {"import": time.time()}
shape = tuple(int(n) for n in sys.argv[1].split("x"))
x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
avgpool.avg_pool2d(x, 3, 1, 1)
marks["avg_pool2d"] = time.time()
if "--max" in sys.argv:
    avgpool.max_pool2d(x, 3, 1, 1)
    marks["max_pool2d"] = time.time()
print(json.dumps(marks))
"""

_NN = """
import json, time
import torch
marks = {"import torch": time.time()}
from cold_start import serve_model
model = serve_model()
with torch.no_grad():
    model(torch.randn(model.example_input_shape))
marks["forward"] = time.time()
print(json.dumps(marks))
"""


def serve_model():
    """A small CNN (32x32 RGB in) whose pooling is avgpool.nn's: conv, 3x3/2 max pool, conv,
    3x3/2 average pool, global average head, fc. Seeded, in eval mode."""
    import torch
    from torch import nn

    from avgpool import nn as apnn

    class ColdNet(nn.Module):
        example_input_shape = (1, 3, 32, 32)

        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Conv2d(3, 8, 3, padding=1)
            self.pool1 = apnn.MaxPool2d(3, 2, 1)
            self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
            self.pool2 = apnn.AvgPool2d(3, 2, 1)
            self.gap = apnn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(16, 10)

        def forward(self, x):
            x = self.pool1(torch.relu(self.stem(x)))
            x = self.pool2(torch.relu(self.conv2(x)))
            return self.fc(torch.flatten(self.gap(x), 1))

    torch.manual_seed(0)
    return ColdNet().eval()


def _env(cache: str) -> dict[str, str]:
    env = dict(os.environ, NUMBA_CACHE_DIR=cache)
    paths = [str(HERE), str(HERE.parent / "src"), env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    return env


def _child(code: str, cache: str, *args: str) -> dict[str, float]:
    """Seconds from the subprocess's start to each mark it prints."""
    start = time.time()
    done = subprocess.run(
        [sys.executable, "-c", code, *args], env=_env(cache), capture_output=True, text=True, timeout=600
    )
    if done.returncode:
        raise RuntimeError(f"the child failed:\n{done.stderr[-3000:]}")
    marks = json.loads(done.stdout.strip().splitlines()[-1])
    return {k: v - start for k, v in marks.items()}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve_until_ready(cache: str, timeout: float = 600.0) -> float:
    """Seconds from starting ``avgpool serve`` to its first 200 on /v2/health/ready."""
    port = _free_port()
    cmd = [sys.executable, "-m", "avgpool", "serve", SPEC, "--port", str(port)]
    log = tempfile.TemporaryFile()
    start = time.time()
    server = subprocess.Popen(cmd, env=_env(cache), stdout=log, stderr=subprocess.STDOUT)
    try:
        while time.time() - start < timeout:
            if server.poll() is not None:
                log.seek(0)
                raise RuntimeError(
                    f"avgpool serve exited ({server.returncode}):\n{log.read()[-3000:].decode()}"
                )
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=1) as r:
                    if r.status == 200:
                        return time.time() - start
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"avgpool serve was not ready within {timeout:g} s")
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()


def _warmup(cache: str) -> float:
    start = time.time()
    done = subprocess.run(
        [sys.executable, "-m", "avgpool", "warmup", SPEC],
        env=_env(cache),
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode:
        raise RuntimeError(f"avgpool warmup failed:\n{done.stderr[-3000:]}")
    return time.time() - start


def measure(
    shape: str = SHAPE, quick: bool = False, serve: bool = True, log: Callable[[str], None] = print
) -> dict[str, dict[str, float]]:
    """One run of every step: {step: {"cold": s, "warm": s}} (the warmup row: "cold" only)."""
    out: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="avgpool-numba-") as cache:
        extra = (shape,) if quick else (shape, "--max")
        cold, warm = _child(_OPS, cache, *extra), _child(_OPS, cache, *extra)
        out["import avgpool"] = {"cold": cold["import"], "warm": warm["import"]}
        out["import avgpool, first 3x3 avg_pool2d"] = {"cold": cold["avg_pool2d"], "warm": warm["avg_pool2d"]}
        if not quick:
            out["max_pool2d after it (+)"] = {
                "cold": cold["max_pool2d"] - cold["avg_pool2d"],
                "warm": warm["max_pool2d"] - warm["avg_pool2d"],
            }
        log(f"ops: {json.dumps(out)}")
    if quick:
        return out
    with tempfile.TemporaryDirectory(prefix="avgpool-numba-") as cache:
        cold, warm = _child(_NN, cache), _child(_NN, cache)
        out["import torch"] = {"cold": cold["import torch"], "warm": warm["import torch"]}
        out["import torch, avgpool.nn first forward"] = {
            "cold": cold["forward"],
            "warm": warm["forward"],
        }
        log(f"nn: {json.dumps(out)}")
    if serve:
        with tempfile.TemporaryDirectory(prefix="avgpool-numba-") as cache:
            cold_ready = _serve_until_ready(cache)
        with tempfile.TemporaryDirectory(prefix="avgpool-numba-") as cache:
            filled = _warmup(cache)
            warm_ready = _serve_until_ready(cache)
        out["avgpool warmup (fills the cache)"] = {"cold": filled, "warm": float("nan")}
        out["avgpool serve, start to ready"] = {"cold": cold_ready, "warm": warm_ready}
        log(f"serve: {json.dumps(out)}")
    return out


def median_of(runs: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    return {
        step: {kind: statistics.median(r[step][kind] for r in runs) for kind in runs[0][step]}
        for step in runs[0]
    }


def table(result: dict[str, dict[str, float]], repeats: int, shape: str) -> Table:
    def s(v: float) -> str:
        return "-" if v != v else f"{v:.2f}"

    rows = [[step, s(t["cold"]), s(t["warm"])] for step, t in result.items()]
    footer = [
        f"seconds from process start (median of {repeats}); cold: an empty NUMBA_CACHE_DIR, warm: the "
        "same directory after a first run (serve: after avgpool warmup); (+): extra time in the same process",
        f"ops on a {shape} float32 array; python {sys.version.split()[0]}, {os.cpu_count()} CPUs",
    ]
    return "avgpool cold start", ["step", "cold s", "warm s"], rows, footer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=1, help="runs of each step; the median is shown")
    parser.add_argument("--shape", default=SHAPE, help=f"the ops steps' array (default {SHAPE})")
    parser.add_argument("--quick", action="store_true", help="the first average pool only")
    parser.add_argument("--no-serve", dest="serve", action="store_false", help="skip the avgpool serve step")
    parser.add_argument("--json", metavar="FILE", help="also write the figures (every run) as JSON")
    args = parser.parse_args(argv)

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    runs = [measure(args.shape, args.quick, args.serve, log) for _ in range(max(1, args.repeats))]
    result = median_of(runs)
    print(text(table(result, len(runs), args.shape)))
    if args.json:
        Path(args.json).write_text(json.dumps({"median": result, "runs": runs}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
