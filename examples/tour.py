"""The flagship tour (`make demo`): every avgpool tool once, on embedded defaults, in a few
minutes on a laptop. Each step prints the `avgpool` command it runs, so you can rerun it on
your own model.

    python examples/tour.py [OUTDIR]      # default ./avgpool-demo; needs avgpool[all]

1. shape   a TensorFlow 'SAME' average pool that the other frameworks compute differently
2. bench   avgpool beside PyTorch on one pooling layer (latency percentiles, throughput)
3. models  a ResNet-style model exported to ONNX here: inspect it (lint), verify it
           (ONNX Runtime against avgpool's float64 oracle), diff it against an edited copy
4. drift   activation profiles of a max-pool model and its average-pool twin, the drift gate
5. serve   the two as versions of one served model: traffic to each, drift in /metrics
6. study   the downsampling trade-off on scikit-learn's digits (fast setting): the report
"""

from __future__ import annotations

import argparse
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import inspect_resnet  # noqa: E402  (this folder's examples, reused)
import monitor_pooling  # noqa: E402

from avgpool.cli import main  # noqa: E402
from avgpool.serve import ServeConfig, start_in_thread  # noqa: E402

EXPECTED = {"inspect": 1, "diff": 1, "drift": 1}  # these find something on purpose: exit 1 is the point


def step(title: str) -> None:
    print(f"\n{'=' * 100}\n{title}\n{'=' * 100}", flush=True)


def run(*argv: str) -> None:
    """Run one `avgpool` command as a user would, and stop the tour on an unexpected exit."""
    print(f"\n$ avgpool {' '.join(argv)}", flush=True)
    code = main(list(argv))
    print(f"(exit {code})", flush=True)
    if code not in (0, EXPECTED.get(argv[0], 0)):
        raise SystemExit(f"tour: `avgpool {argv[0]}` exited {code}")


def tour(out: Path, *, threads: int) -> None:
    started = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    o = str(out)

    step("1. shape: one 'SAME' layer, five frameworks (a model moved between them changes its numbers)")
    run("shape", "1x3x5x5", "-k", "3", "-s", "2", "--padding", "same", "--convention", "tensorflow")

    step("2. bench: a ResNet stem max pool and a 3x3 average pool, avgpool beside PyTorch")
    for op in ("max", "avg"):
        run(
            "bench", "op", "32x64x56x56", "-k", "3", "-s", "2", "-p", "1", "--op", op,
            "--peers", "torch", "--batch-sizes", "1,32", "--threads", str(threads),
            "--repeats", "30", "--budget", "0.5", "--no-progress",
        )  # fmt: skip

    step("3. models: export a ResNet-style model, lint its pooling, verify ONNX Runtime, diff an edit")
    model, edited = inspect_resnet.build(out)
    run("inspect", str(model), "--target", "tflite")
    run("verify", str(model), "--random", "3")
    run("diff", str(model), str(edited))

    step("4. drift: profile a max-pool model and its average-pool twin (same weights), gate on drift")
    base, cand, data = monitor_pooling.build(out)
    run("profile", base, "--inputs", data, "-o", f"{o}/base.avgprof", "--no-progress")
    run("profile", cand, "--inputs", data, "-o", f"{o}/cand.avgprof", "--no-progress")
    run("drift", f"{o}/base.avgprof", f"{o}/cand.avgprof", "--plot", f"{o}/drift.png", "--top", "3")

    step("5. serve: both models as versions of one, over the Open Inference Protocol; traffic to each")
    serve_step(out, base, cand, data)

    step("6. study: which downsampling should a small CNN use? (scikit-learn digits, fast setting)")
    run("study", "--fast", "--out", f"{o}/study", "--threads", str(threads), "--no-progress")

    report = out / "study" / "report.md"
    print(f"\n{'=' * 100}")
    print(f"tour done in {time.perf_counter() - started:.0f} s. The report: {report.resolve()}")
    for path in [*sorted(out.glob("study/*.png")), out / "drift.png"]:
        print(f"  plot: {path.resolve()}")
    print("Each step above is one `avgpool` command; docs/ explains how to point it at your own model.")


def serve_step(out: Path, base: str, cand: str, data: str) -> None:
    """`avgpool serve` in a thread of this process (port 0: a free one), the base profile as
    the baseline, a few seconds of the demo images sent to each version, then the drift status
    of every pooling layer as Prometheus scrapes it."""
    inputs = out / "serve-inputs.npz"
    np.savez(inputs, image=np.load(data)["image"][:16])
    config = ServeConfig(
        models=[f"tinynet:1={base}", f"tinynet:2={cand}"],
        baselines={"tinynet": str(out / "base.avgprof")},
        port=0,
        sample_every=1,
        interval=0.5,
        log_level="warning",
    )
    print(f"$ avgpool serve {' '.join(config.models)} --baseline tinynet={config.baselines['tinynet']}")
    server = start_in_thread(config)
    try:
        server.wait_ready()
        for version in ("1", "2"):
            run("bench", "serve", server.url, "--model", "tinynet", "--version", version,
                "--rate", "40", "--duration", "2", "--inputs", str(inputs))  # fmt: skip
        time.sleep(1.0)  # one drift interval after the last request
        print(f"$ curl -s {server.url}/metrics | grep drift_status")
        metrics = urllib.request.urlopen(f"{server.url}/metrics", timeout=10).read().decode()
        print(
            "\n".join(
                line for line in metrics.splitlines() if line.startswith("avgpool_activation_drift_status")
            )
        )
        print("(0 ok, 2 fail: version 2's swapped stem pool moves every layer after it)")
    finally:
        server.stop()
    keep = f"avgpool serve {' '.join(config.models)} --baseline tinynet={config.baselines['tinynet']}"
    print(
        f"To keep it up: {keep}\n"
        "then http://127.0.0.1:8000/metrics, /v2/models/tinynet, /v2/models/tinynet/versions/2/profile;\n"
        "docs/serve.md has Prometheus, the alerts and their routes, the dashboards, traces and the runbooks."
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", default="avgpool-demo", help="output folder (./avgpool-demo)")
    parser.add_argument("--threads", type=int, default=1, help="threads for the timed steps (default 1)")
    args = parser.parse_args()
    tour(Path(args.out), threads=args.threads)
