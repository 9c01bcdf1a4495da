"""``avgpool serve``: models over the Open Inference Protocol with pooling telemetry; and
``avgpool warmup``: load models and run their warm-up so Numba's on-disk cache is filled."""

from __future__ import annotations

import argparse
import re
import sys
from typing import Any

from avgpool.cli._common import MODEL_HELP, trust_file_arg

_MODEL_FORM = "[NAME[:VERSION]=]PATH_OR_SPEC"


def _shapes(values: list[str] | None) -> dict[str, tuple[int, ...]]:
    """--input-shape as {name: shape}; NAME=SHAPE and NAME:SHAPE both name an input."""
    from avgpool.inspect import parse_input_shapes

    specs = [re.sub(r"^([^=:]+)=", r"\1:", v) for v in values or []]
    return parse_input_shapes(specs)


def _baselines(values: list[str] | None) -> dict[str, str]:
    """--baseline FILE (the one model) or NAME[:VERSION]=FILE, as {name or "": file}."""
    from avgpool._errors import AvgPoolError

    out: dict[str, str] = {}
    for value in values or []:
        match = re.fullmatch(r"([A-Za-z0-9_][A-Za-z0-9_.\-]*(?::[A-Za-z0-9_.\-]+)?)=(.+)", value)
        key, path = match.groups() if match else ("", value)
        if key in out:
            raise AvgPoolError(
                f"--baseline given twice for {key or 'the model'!r}: {out[key]!r} and {path!r}"
            )
        out[key] = path
    return out


def config_from_args(args: argparse.Namespace) -> Any:
    """The `ServeConfig` that ``avgpool serve``'s arguments describe."""
    from avgpool.serve._server import ServeConfig

    return ServeConfig(
        models=list(args.models),
        host=args.host,
        port=args.port,
        name=args.name,
        workers=args.workers,
        baselines=_baselines(args.baseline),
        sample_every=args.sample_every,
        interval=args.interval,
        window=args.window,
        input_shapes=_shapes(args.input_shape),
        trust=args.trust_file,
        compile=args.compile,
        max_body_mb=args.max_body_mb,
        admin=args.admin,
        warmup=not args.no_warmup,
        log_level=args.log_level,
        canary=args.canary,
    )


def install_canary_judge() -> bool:
    """Import ``avgpool.canary``, which installs the judge of the Flagger webhook; False (and a
    note on stderr) where it cannot be imported: the server runs, the webhook answers 501."""
    import importlib

    try:
        importlib.import_module("avgpool.canary")
    except ImportError as exc:
        print(
            f"avgpool serve: no canary judge ({exc}); POST /admin/flagger/MODEL answers 501",
            file=sys.stderr,
            flush=True,
        )
        return False
    return True


def _cmd_serve(args: argparse.Namespace) -> int:
    from avgpool.serve._server import serve_models

    config = config_from_args(args)
    config.check()
    if config.admin:
        install_canary_judge()
    where = f"http://{config.host}:{config.port}"
    print(
        f"avgpool serve: {len(config.models)} model(s) on {where} (metrics at {where}/metrics; "
        f"ready at {where}/v2/health/ready after warm-up)",
        file=sys.stderr,
        flush=True,
    )
    return serve_models(config)


def _cmd_warmup(args: argparse.Namespace) -> int:
    from avgpool.serve._server import ServeConfig, load_runners

    config = ServeConfig(
        models=list(args.models),
        name=args.name,
        input_shapes=_shapes(args.input_shape),
        trust=args.trust_file,
        compile=args.compile,
    )
    config.check()
    runners, load_seconds = load_runners(config)
    try:
        for runner in runners:
            warm = runner.warmup()
            load = load_seconds[(runner.name, runner.version)]
            print(f"{runner.name}:{runner.version}  load {load:.2f} s  warm-up {warm:.2f} s", flush=True)
    finally:
        for runner in runners:
            runner.close()
    return 0


def _model_arguments(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument(
        "models",
        nargs="+",
        metavar="MODEL",
        help=f"{_MODEL_FORM}: {MODEL_HELP}; path/x.onnx serves as x, version 1",
    )
    cmd.add_argument("--name", help="the model's name (one MODEL only; default: the file's name)")
    cmd.add_argument(
        "--input-shape",
        "-i",
        action="append",
        metavar="[NAME=]SHAPE",
        help="e.g. 1x3x32x32, or image=1x3x32x32 per input: the warm-up request's shapes (torch models "
        "need them unless their factory's module has example_input_shape)",
    )
    trust_file_arg(cmd)
    cmd.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile nn.Module models (sampled requests run the eager module, whose hooks compiled "
        "graphs skip)",
    )


def add_commands(sub: Any) -> None:
    """Add the ``serve`` and ``warmup`` subparsers to the ``avgpool`` command's subparsers."""
    serve = sub.add_parser(
        "serve",
        help="serve models over the Open Inference Protocol (KServe v2 REST) with pooling telemetry",
        description="Serve ONNX and PyTorch models over the Open Inference Protocol v2 (JSON and binary "
        "tensors, as tritonclient sends them), with Prometheus metrics at /metrics, activation "
        "statistics of sampled requests at the pooling layers, drift against --baseline, and "
        "OpenTelemetry traces when OTEL_EXPORTER_OTLP_ENDPOINT is set. SIGTERM or Ctrl-C stops it.",
    )
    _model_arguments(serve)
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="default 8000; 0 picks a free port")
    serve.add_argument("--workers", type=int, default=1, help="uvicorn worker processes (default 1)")
    serve.add_argument(
        "--baseline",
        action="append",
        metavar="[NAME=]FILE",
        help="a .avgprof profile to compute drift against (NAME= or NAME:VERSION= per model)",
    )
    serve.add_argument(
        "--sample-every", type=int, default=10, metavar="N", help="profile 1 request in N (default 10)"
    )
    serve.add_argument(
        "--interval", type=float, default=10.0, metavar="S", help="seconds between drift checks (default 10)"
    )
    serve.add_argument(
        "--window", type=float, default=300.0, metavar="S", help="seconds of the live profile (default 300)"
    )
    serve.add_argument(
        "--max-body-mb", type=float, default=64.0, metavar="MB", help="largest request body (default 64)"
    )
    serve.add_argument(
        "--admin",
        action="store_true",
        help="enable POST /admin/faults, /admin/deploy-window and the canary routes /admin/canary "
        "(loopback clients only), and the Flagger webhook POST /admin/flagger/MODEL",
    )
    serve.add_argument(
        "--canary",
        metavar="NAME=BASE,CAND[,MODE[,SHARE]]",
        help="open a canary at start (with --admin): e.g. tinynet=1,2,shadow mirrors every "
        "unversioned request of tinynet to version 2, or tinynet=1,2,split,0.05 sends it 5%%; "
        "for a server whose admin routes a deployment tool cannot reach, such as Flagger's webhook "
        "in a pod",
    )
    serve.add_argument(
        "--no-warmup",
        action="store_true",
        help="report ready without a warm-up request (kernels compile on the first requests)",
    )
    serve.add_argument(
        "--log-level", default="info", choices=("critical", "error", "warning", "info", "debug")
    )
    serve.set_defaults(func=_cmd_serve)

    warmup = sub.add_parser(
        "warmup",
        help="load models and run a request of their own shapes, filling Numba's cache (image builds)",
        description="Load each MODEL and run its warm-up request, so the pooling kernels it uses are "
        "compiled into Numba's on-disk cache; a server started later (in the same image) is ready in "
        "about a second. Prints each model's load and warm-up seconds.",
    )
    _model_arguments(warmup)
    warmup.set_defaults(func=_cmd_warmup)
