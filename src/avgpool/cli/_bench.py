"""The ``avgpool bench`` subcommand: latency of one op beside its peers, or of a model (and A/B),
and the benchmark's suites (``avgpool bench suite``, what `make bench` runs).

Thin: parse, call `avgpool.bench.latency` or `avgpool.bench.suites`, render with
`avgpool.bench.latency_tables` or `avgpool.bench.report`.
"""

from __future__ import annotations

import argparse
from typing import Any

from avgpool._errors import AvgPoolError
from avgpool.cli._common import (
    MODEL_HELP,
    emit_table,
    geometry,
    geometry_args,
    ints,
    output_args,
    progress,
    progress_arg,
    trust_file_arg,
)

_PEER_NAMES = ("torch", "onnxruntime", "cv2", "scipy")


def _peers(text: str) -> list[str] | None:
    """'all' (None), 'none' ([]) or a comma-separated list of peer names."""
    lowered = text.strip().lower()
    if lowered == "all":
        return None
    if lowered in ("none", ""):
        return []
    names = [n.strip() for n in lowered.split(",") if n.strip()]
    unknown = [n for n in names if n not in _PEER_NAMES]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"--peers takes all, none or names among {', '.join(_PEER_NAMES)}; got {', '.join(unknown)}"
        )
    return names


def _settings(args: argparse.Namespace) -> Any:
    from avgpool.bench.latency import LatencySettings

    return LatencySettings(
        warmup=args.warmup,
        repeats=args.repeats,
        budget_s=args.budget,
        rotate=getattr(args, "rotate", 4),
        seed=args.seed,
    )


def _cmd_op(args: argparse.Namespace) -> int:
    from avgpool.bench.latency import bench_op
    from avgpool.bench.latency_tables import op_table

    result = bench_op(
        args.input_shape,
        **geometry(args),
        dtype=args.dtype,
        peers=args.peers,
        batch_sizes=args.batch_sizes,
        threads=args.threads,
        settings=_settings(args),
        progress=progress(args.progress, "timing"),
    )
    emit_table(result.to_dict(), op_table(result), args)
    return 0


def _cmd_model(args: argparse.Namespace) -> int:
    from avgpool.bench.latency import bench_model, compare_models
    from avgpool.bench.latency_tables import comparison_table, model_table
    from avgpool.inspect import parse_input_shapes

    if args.input_shape and args.inputs:
        raise AvgPoolError("give --input-shape or --inputs, not both")
    shapes = parse_input_shapes([s.replace("=", ":", 1) for s in args.input_shape or []]) or None
    arrays = None
    if args.inputs:
        from avgpool.monitor import load_inputs

        arrays = load_inputs(args.inputs)
    common: dict[str, Any] = {
        "batch_sizes": args.batch_sizes,
        "input_shapes": shapes,
        "inputs": arrays,
        "threads": args.threads,
        "device": args.device,
        "trust": args.trust_file,
        "settings": _settings(args),
        "progress": progress(args.progress, "timing batch sizes"),
    }
    if args.against:
        result = compare_models(
            args.model, args.against, confidence=args.confidence, resamples=args.resamples, **common
        )
        emit_table(result.to_dict(), comparison_table(result), args)
    else:
        result = bench_model(args.model, **common)
        emit_table(result.to_dict(), model_table(result), args)
    return 0


def study_models() -> list[tuple[str, Any, Any, int, tuple[int, ...]]]:
    """The study's models and their torch.nn twins, for the overhead suite (batch-1 inputs)."""
    import torch

    from avgpool.study.twins import torch_twin
    from avgpool.study.variants import VARIANTS

    pairs = []
    for name, variant in VARIANTS.items():
        torch.manual_seed(0)
        model = variant.build().eval()
        twin, swapped = torch_twin(model)
        pairs.append((name, model, twin.eval(), swapped, (1, 1, 8, 8)))
    return pairs


def _cmd_suite(args: argparse.Namespace) -> int:
    import json
    import sys

    from avgpool.bench.report import check_results_dir, render_markdown, write_results
    from avgpool.bench.suites import check_suite_args, run_suites

    problem = check_suite_args(args)
    if problem:
        raise AvgPoolError(problem)
    if args.out:
        check_results_dir(args.out)

    def log(line: str) -> None:
        if args.progress is not False:
            print(line, file=sys.stderr, flush=True)

    results = run_suites(args, log, models=study_models)
    if args.out:
        write_results(results, args.out)
    if args.json:
        print(json.dumps(results, indent=1, default=lambda v: v.tolist()))
    else:
        print(render_markdown(results))
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from avgpool.bench.serve_load import load_table, run_load

    inputs = None
    if args.inputs:
        from avgpool.monitor import load_inputs

        inputs = load_inputs(args.inputs)
    result = run_load(
        args.url,
        args.model,
        inputs,
        rate=args.rate,
        duration=args.duration,
        version=args.version,
        binary=args.binary,
        concurrency_limit=args.concurrency,
        timeout=args.timeout,
        allow_remote=args.allow_remote,
        seed=args.seed,
    )
    emit_table(result.to_dict(), load_table(result), args)
    return 0


def _serve_args(modes: Any) -> None:
    serve = modes.add_parser(
        "serve",
        help="drive an Open Inference Protocol server at a fixed request rate: P50/P95/P99, throughput",
        description="Send infer requests to a v2 (KServe / Triton REST) server at a fixed rate for a fixed "
        "time, open loop: each request goes out when the schedule says, answered or not, and its latency "
        "runs from that scheduled time, so queueing in a slow server shows. Prints P50/P95/P99/max, "
        "throughput and errors by status. Inputs: random, of the shapes the server's metadata lists "
        "(free axes 1), unless --inputs. Only loopback URLs unless --allow-remote.",
    )
    serve.add_argument("url", metavar="URL", help="the server, e.g. http://127.0.0.1:8000")
    serve.add_argument("--model", "-m", required=True, help="the model's name")
    serve.add_argument("--version", help="the model's version (default: the server's default)")
    serve.add_argument("--rate", type=float, default=10.0, help="requests per second (default 10)")
    serve.add_argument(
        "--duration", type=float, default=10.0, metavar="SECONDS", help="seconds of load (default 10)"
    )
    body = serve.add_mutually_exclusive_group()
    body.add_argument(
        "--binary",
        dest="binary",
        action="store_true",
        default=True,
        help="the binary tensor extension, as tritonclient sends (default)",
    )
    body.add_argument("--json-body", dest="binary", action="store_false", help="JSON tensors instead")
    serve.add_argument(
        "--inputs", metavar="FILE.npz", help="the input arrays by name, sent as they are (default: random)"
    )
    serve.add_argument("--concurrency", type=int, default=64, help="requests in flight at most (default 64)")
    serve.add_argument(
        "--timeout", type=float, default=10.0, metavar="SECONDS", help="per request (default 10)"
    )
    serve.add_argument(
        "--allow-remote",
        action="store_true",
        help="allow a URL whose host is not loopback (a load test reaches that machine)",
    )
    serve.add_argument("--seed", type=int, default=0, help="seeds the random inputs")
    output_args(serve, "machine-readable output, every latency included")
    serve.set_defaults(func=_cmd_serve)


def _cmd_telemetry(args: argparse.Namespace) -> int:
    from avgpool.inspect import parse_input_shapes
    from avgpool.serve._cost import cost_table, telemetry_cost

    shapes = parse_input_shapes([s.replace("=", ":", 1) for s in args.input_shape or []]) or None
    report = telemetry_cost(
        args.model,
        batch_sizes=args.batch_sizes,
        repeats=args.repeats,
        input_shapes=shapes,
        trust=args.trust_file,
        progress=progress(args.progress, "batch sizes"),
    )
    emit_table(report.to_dict(), cost_table(report), args)
    return 0


def _telemetry_args(modes: Any) -> None:
    cmd = modes.add_parser(
        "telemetry",
        help="what avgpool serve's telemetry costs per request: sampling off, 1 in 100, every request",
        description="Run a model in process the way avgpool serve answers a request: without telemetry, "
        "with the per-request metrics and sampling off, with 1 request in 100 sampled (its pooling "
        "layers' outputs profiled) and with every request sampled. Prints the request path's time "
        "per request, the telemetry worker's time per sample, and both as microseconds and % of the "
        f"model's own time. MODEL: {MODEL_HELP}.",
    )
    cmd.add_argument("model", metavar="MODEL")
    cmd.add_argument(
        "--input-shape",
        "-i",
        action="append",
        metavar="[NAME=]SHAPE",
        help="1x3x32x32 or image=1x3x32x32: a PyTorch model's input shape (axis 0 set by --batch-sizes)",
    )
    cmd.add_argument(
        "--batch-sizes",
        "-b",
        type=lambda t: ints(t, "batch sizes"),
        default=(1, 32),
        metavar="1,32",
        help="rows per request (default 1,32)",
    )
    cmd.add_argument(
        "--repeats", type=int, default=2000, help="requests per mode and batch size (default 2000)"
    )
    trust_file_arg(cmd)
    progress_arg(cmd)
    output_args(cmd, "machine-readable output")
    cmd.set_defaults(func=_cmd_telemetry)


def _timing_args(cmd: argparse.ArgumentParser, *, repeats: int, budget: float, threads: str) -> None:
    cmd.add_argument(
        "--batch-sizes",
        "-b",
        type=lambda t: ints(t, "batch sizes"),
        metavar="1,8,32",
        help="the sweep of batch sizes (axis 0)",
    )
    cmd.add_argument("--threads", type=int, help=f"threads (default: {threads})")
    cmd.add_argument("--warmup", type=int, default=3, help="untimed calls first (default 3)")
    cmd.add_argument("--repeats", type=int, default=repeats, help=f"timed calls wanted (default {repeats})")
    cmd.add_argument(
        "--budget",
        type=float,
        default=budget,
        metavar="SECONDS",
        help=f"stop timing a measurement after this many seconds of timed calls (default {budget:g})",
    )
    cmd.add_argument("--seed", type=int, default=0, help="seeds the random inputs and the bootstrap")
    progress_arg(cmd)
    output_args(cmd, "machine-readable output, every sample included")


def add_commands(sub: Any) -> None:
    """Add the ``bench`` subparser to the ``avgpool`` command's subparsers."""
    bench = sub.add_parser(
        "bench",
        help="latency: an op beside its peers, or a model (percentiles, throughput, memory, A/B)",
        description="Latency benchmarks: warm-up, timed calls on rotating inputs, nearest-rank "
        "P50/P95/P99 with their sample counts, throughput per batch size, peak memory.",
    )
    modes = bench.add_subparsers(dest="bench_mode", required=True, metavar="{op,model,suite,serve,telemetry}")

    op = modes.add_parser(
        "op",
        help="one pooling op on any geometry, beside torch, onnxruntime, cv2 and scipy",
        description="Time avgpool's pooling on one geometry, shape, dtype and layout, and every installed "
        "peer that computes the same thing; each peer's output is checked against avgpool's. "
        "Every library gets --threads threads (default: all cores).",
    )
    geometry_args(op, "the array as stored: 8x64x56x56 (N, C, ...), or (N, ..., C) with --channels-last")
    op.add_argument("--dtype", default="float32", choices=("float16", "float32", "float64"))
    op.add_argument(
        "--peers",
        type=_peers,
        default=None,
        metavar="all|none|torch,onnxruntime,...",
        help=f"peers timed beside avgpool (default all: {', '.join(_PEER_NAMES)})",
    )
    _timing_args(op, repeats=100, budget=2.0, threads="all cores, for every library")
    op.set_defaults(func=_cmd_op)

    model = modes.add_parser(
        "model",
        help="an ONNX model in ONNX Runtime or a PyTorch model, over batch sizes; --against for A/B",
        description="Time a model over a sweep of batch sizes: latency percentiles, throughput, peak RSS "
        "(and CUDA) memory, size on disk. "
        f"MODEL: {MODEL_HELP}. With --against, time both in interleaved pairs and report B/A with a "
        "bootstrap interval. "
        "Threads: the runtime's default unless --threads.",
    )
    model.add_argument("model", metavar="MODEL")
    model.add_argument("--against", metavar="MODEL_B", help="A/B: the model to compare MODEL with")
    model.add_argument(
        "--input-shape",
        "-i",
        action="append",
        metavar="[NAME:]SHAPE",
        help="1x3x224x224 or image:1x3x224x224 (NAME=SHAPE works too); axis 0 is set by the sweep. "
        "Needed for a PyTorch model and for symbolic axes",
    )
    model.add_argument(
        "--inputs", metavar="FILE.npz", help="sample inputs by name, samples on axis 0 (instead of random)"
    )
    model.add_argument(
        "--rotate", type=int, default=4, help="different input sets per batch size, used in turn (default 4)"
    )
    model.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    trust_file_arg(model)
    model.add_argument(
        "--confidence", type=float, default=0.95, help="A/B: the interval's coverage (default 0.95)"
    )
    model.add_argument("--resamples", type=int, default=2000, help="A/B: bootstrap resamples (default 2000)")
    _timing_args(model, repeats=100, budget=5.0, threads="the runtime's own")
    model.set_defaults(func=_cmd_model)

    from avgpool.bench.suites import add_suite_args

    suite = modes.add_parser(
        "suite",
        help="the benchmark's suites (make bench): synthetic cases, real CNN layers, per-call overhead",
        description="Run the benchmark's suites and print their markdown report: synthetic cases against "
        "the bandwidth floor, every pooling layer of real CNNs (ResNet-50, VGG-16, Inception, DenseNet-121, "
        "MobileNetV2, an anti-aliased ResNet-50) at batch 1 and 32 beside torch, onnxruntime, cv2 and scipy, "
        "and the per-call overhead (avgpool.nn vs torch.nn, NumPy ops, the study's models). Every library "
        "gets --threads threads. The full run takes minutes; --quick is a smoke run.",
    )
    add_suite_args(suite)
    suite.add_argument("--out", metavar="DIR", help="also write latest.json and latest.md into DIR")
    suite.add_argument("--json", action="store_true", help="print the results as JSON instead of markdown")
    suite.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="each case's timings on stderr as they come (default: on)",
    )
    suite.set_defaults(func=_cmd_suite)

    _serve_args(modes)
    _telemetry_args(modes)
