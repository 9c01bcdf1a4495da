"""The ``avgpool`` command: thin argument parsing and rendering over the library's tools.

Exit codes: 0 done (clean), 1 findings at or above ``--fail-on`` / disallowed diff changes / verify
failures, 2 bad arguments or input (one clear message on stderr, no traceback), 3 an unexpected
error (one line naming its class; ``AVGPOOL_DEBUG=1`` shows the traceback), 130 interrupted.
Only avgpool's own refusals (`AvgPoolError`, and TypeError for a wrong type), OSError from files
and MemoryError count as bad input: anything else is a bug in avgpool or in a model's own code,
and a CI job must not read it as a refused input or as a failed gate.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Sequence
from typing import Any

from avgpool._errors import AvgPoolError
from avgpool.cli import _bench, _study
from avgpool.conventions import CONVENTIONS

__all__ = ["main"]


def _ints(text: str, what: str) -> tuple[int, ...]:
    parts = re.split(r"[x,]", text.strip().lower())
    try:
        return tuple(int(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{what} must look like 3 or 3x3 or 1x3x224x224, got {text!r}"
        ) from None


def _padding(text: str) -> Any:
    """'1', '1x2' (symmetric per axis), '0:1x0:1' (before:after per axis) or a mode name."""
    lowered = text.strip().lower()
    if re.fullmatch(r"[a-z_]+", lowered):
        return lowered
    if ":" in lowered:
        try:
            return tuple(tuple(int(v) for v in axis.split(":")) for axis in re.split(r"[x,]", lowered))
        except ValueError:
            raise argparse.ArgumentTypeError(f"padding pairs must look like 0:1x0:1, got {text!r}") from None
    values = _ints(lowered, "padding")
    return values[0] if len(values) == 1 else values


def _size(value: tuple[int, ...]) -> Any:
    return value[0] if len(value) == 1 else value


def _fmt(shape: Sequence[int]) -> str:
    return "x".join(str(s) for s in shape)


def _ranges(cells: Sequence[int]) -> str:
    """[0, 1, 2, 7] -> '0-2, 7'."""
    out: list[str] = []
    start = prev = None
    for c in [*cells, None]:
        if start is not None and (c is None or c != prev + 1):
            out.append(str(start) if start == prev else f"{start}-{prev}")
            start = None
        if c is not None and start is None:
            start = c
        prev = c
    return ", ".join(out)


def _render_shape(report: Any) -> str:
    from avgpool.inspect.shape import COMPARED_CELLS

    names = {1: "L", 2: "HW", 3: "DHW"}[len(report.axes)]
    w = report.window
    dims = ("N", *names, "C") if w.channels_last else ("N", "C", *names)
    lines = [
        f"input      {_fmt(report.input_shape)}  ({', '.join(dims)})",
        f"operator   {report.op}_pool, {report.convention} convention",
        "window     kernel {}  stride {}  dilation {}  ceil_mode {}  count_include_pad {}{}".format(
            _fmt([a.kernel for a in report.axes]),
            _fmt([a.stride for a in report.axes]),
            _fmt([a.dilation for a in report.axes]),
            w.ceil_mode,
            w.count_include_pad,
            f"  divisor_override {w.divisor_override}" if w.divisor_override else "",
        ),
        f"output     {_fmt(report.output_shape)}",
        "padding    "
        + "   ".join(f"{n}: {a.pad_before} before, {a.pad_after} after" for n, a in zip(names, report.axes)),
    ]
    skipped = [
        f"{n}: not listed (longer than {COMPARED_CELLS} cells)"
        if u is None
        else f"{n}: {len(u)} of {a.size} never read ({_ranges(u)})"
        for n, a, u in zip(names, report.axes, report.uncovered)
        if u is None or u
    ]
    lines.append("uncovered  " + ("   ".join(skipped) if skipped else "none: every input cell is read"))
    lines.append("")
    lines.append("the same arguments in other conventions:")
    width = max(len(c.convention) for c in report.others)
    for c in report.others:
        shape = f"-> {_fmt(c.output_shape)}  " if c.output_shape else ""
        tail = f": {c.detail}" if c.detail else ""
        lines.append(f"  {c.convention:<{width}}  {shape}{c.verdict}{tail}")
    return "\n".join(lines)


def _geometry_args(cmd: argparse.ArgumentParser, shape_help: str) -> None:
    """The input shape and the pooling geometry (shared by `shape` and `bench op`)."""
    cmd.add_argument("input_shape", metavar="SHAPE", type=lambda t: _ints(t, "input shape"), help=shape_help)
    cmd.add_argument("--kernel", "-k", required=True, type=lambda t: _ints(t, "kernel"), help="3 or 3x3")
    cmd.add_argument("--stride", "-s", type=lambda t: _ints(t, "stride"), help="default: the convention's")
    cmd.add_argument(
        "--padding",
        "-p",
        default=0,
        type=_padding,
        help="1, 1x2, 0:1x0:1 (before:after), valid, same, same_lower",
    )
    cmd.add_argument("--dilation", "-d", default=(1,), type=lambda t: _ints(t, "dilation"))
    cmd.add_argument("--ceil-mode", action="store_true")
    cmd.add_argument(
        "--count-include-pad",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="default: the convention's (torch and flax count padded cells, others do not)",
    )
    cmd.add_argument("--divisor-override", type=int)
    cmd.add_argument("--convention", "-c", default="torch", choices=CONVENTIONS)
    cmd.add_argument("--op", default="avg", choices=("avg", "max"))
    cmd.add_argument("--channels-last", action="store_true", help="SHAPE is (N, ..., C)")


def _geometry(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments `shape_report` and `bench_op` take from `_geometry_args`."""
    return {
        "kernel_size": _size(args.kernel),
        "stride": None if args.stride is None else _size(args.stride),
        "padding": args.padding,
        "dilation": _size(args.dilation),
        "ceil_mode": args.ceil_mode,
        "count_include_pad": args.count_include_pad,
        "divisor_override": args.divisor_override,
        "convention": args.convention,
        "op": args.op,
        "channels_last": args.channels_last,
    }


def _cmd_shape(args: argparse.Namespace) -> int:
    from avgpool.inspect.shape import shape_report

    report = shape_report(args.input_shape, **_geometry(args))
    print(json.dumps(report.to_dict(), indent=2) if args.json else _render_shape(report))
    return 0


def _emit(report: Any, args: argparse.Namespace) -> None:
    """JSON, markdown, rich (on a terminal, when installed) or plain text."""
    from avgpool.inspect import render

    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    elif args.markdown:
        print(render.render(report, "markdown"))
    elif sys.stdout.isatty() and _has_rich():
        render.rich_print(render.tables(report))
    else:
        print(render.render(report, "text"))


def _has_rich() -> bool:
    import importlib.util

    return importlib.util.find_spec("rich") is not None


def _shapes(args: argparse.Namespace) -> dict[str, tuple[int, ...]]:
    from avgpool.inspect import parse_input_shapes

    return parse_input_shapes(args.input_shape)


def _cmd_inspect(args: argparse.Namespace) -> int:
    from avgpool.inspect import inspect_model

    report = inspect_model(
        args.model, _shapes(args), target=args.target, disable=args.disable, trust=args.trust_file
    )
    _emit(report, args)
    return 1 if report.fails(args.fail_on) else 0


def _cmd_diff(args: argparse.Namespace) -> int:
    from avgpool.inspect import ModelError, diff, read_model

    shapes = _shapes(args)
    old = read_model(args.old, shapes, trust=args.trust_file)
    new = read_model(args.new, shapes, trust=args.trust_file)
    if not old.layers and not new.layers:
        raise ModelError(f"neither {old.source} nor {new.source} has pooling layers")
    allowed = args.allow if args.strict is False else []
    report = diff(old, new, allowed=allowed)
    _emit(report, args)
    return 1 if report.disallowed() else 0


def _cmd_verify(args: argparse.Namespace) -> int:
    from avgpool.inspect import verify

    report = verify(
        args.model, inputs=args.inputs, random=args.random, input_shapes=_shapes(args), seed=args.seed
    )
    _emit(report, args)
    return 0 if report.passed else 1


def _output_args(cmd: argparse.ArgumentParser, json_help: str = "machine-readable output") -> None:
    """--json / --markdown, the output formats `_emit_table` renders."""
    out = cmd.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help=json_help)
    out.add_argument("--markdown", action="store_true", help="a markdown table (for CI comments)")


def _progress_arg(cmd: argparse.ArgumentParser) -> None:
    """--progress / --no-progress, for `_progress`."""
    cmd.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar on stderr (default: on a terminal)",
    )


def trust_file_arg(cmd: argparse.ArgumentParser) -> None:
    """--trust-file: unpickle a .pt/.pth that holds a whole module (that can run its code)."""
    cmd.add_argument(
        "--trust-file",
        action="store_true",
        help="load a .pt/.pth that holds a pickled nn.Module: unpickling it runs any code the file "
        "contains, so only for files you trust (torch.export's .pt2 files need it too; TorchScript and "
        "ONNX files do not)",
    )


def _model_args(cmd: argparse.ArgumentParser, *, torch_files: bool = True) -> None:
    cmd.add_argument(
        "--input-shape",
        "-i",
        action="append",
        metavar="[NAME:]SHAPE",
        help="e.g. 1x3x224x224, or image:1x3x224x224 per input; fixes dynamic dimensions",
    )
    if torch_files:
        trust_file_arg(cmd)
    _output_args(cmd)


def _model_commands(sub: Any) -> None:
    from avgpool.inspect.diff import CATEGORIES, DEFAULT_ALLOWED
    from avgpool.inspect.lint import RULES, SEVERITIES, TARGETS

    inspect = sub.add_parser(
        "inspect",
        help="the pooling layers of an ONNX or PyTorch model, and lint findings",
        description="List every pooling layer of a model (geometry, shapes, receptive field) and lint it. "
        "MODEL: an .onnx file, a TorchScript file, an ExportedProgram (.pt2) or a pickled nn.Module "
        "(.pt/.pth), these two with --trust-file, or package.module:factory.",
    )
    inspect.add_argument("model")
    inspect.add_argument("--target", "-t", choices=tuple(TARGETS), help="where the model is going")
    inspect.add_argument(
        "--fail-on",
        default="error",
        choices=(*SEVERITIES, "never"),
        help="exit 1 when a finding is at least this severe (default: error)",
    )
    inspect.add_argument("--disable", action="append", default=[], choices=tuple(RULES), metavar="RULE")
    _model_args(inspect)
    inspect.set_defaults(func=_cmd_inspect)

    diff = sub.add_parser(
        "diff",
        help="pooling layers added, removed or changed between two models",
        description="Match the pooling layers of OLD and NEW by name, then by position, and list what "
        "changed; "
        "exit 1 on changes not allowed.",
    )
    diff.add_argument("old")
    diff.add_argument("new")
    diff.add_argument(
        "--allow",
        action="append",
        default=list(DEFAULT_ALLOWED),
        choices=CATEGORIES,
        help=f"a change category that does not fail (default: {', '.join(DEFAULT_ALLOWED)})",
    )
    diff.add_argument(
        "--strict", action="store_true", help="fail on every difference, even convention and name"
    )
    _model_args(diff)
    diff.set_defaults(func=_cmd_diff)

    verify = sub.add_parser(
        "verify",
        help="run an ONNX model in ONNX Runtime and check every pooling node against the reference",
        description="Expose every pooling node's input and output, run ONNX Runtime, recompute each node "
        "with avgpool's reference under ONNX semantics; exit 1 if any node differs.",
    )
    verify.add_argument("model")
    feed = verify.add_mutually_exclusive_group()
    feed.add_argument("--inputs", metavar="FILE.npz", help="the model's inputs, by name")
    feed.add_argument(
        "--random", type=int, default=1, metavar="N", help="N seeded random input sets (default 1)"
    )
    verify.add_argument("--seed", type=int, default=0)
    _model_args(verify, torch_files=False)
    verify.set_defaults(func=_cmd_verify)


def _progress(enabled: bool | None, what: str) -> Any:
    """A wrapper that shows a progress bar over batches on stderr (rich), or None."""
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled or not _has_rich():
        return None

    def wrap(items: Any) -> Any:
        from rich.console import Console
        from rich.progress import Progress

        items = list(items)
        with Progress(console=Console(stderr=True), transient=False) as bar:
            task = bar.add_task(what, total=len(items))
            for item in items:
                yield item
                bar.advance(task)

    return wrap


def _cmd_profile(args: argparse.Namespace) -> int:
    from avgpool.monitor import Profile, iter_batches, load_inputs, profile_model
    from avgpool.monitor.render import profile_table

    _check_outputs(args.output)  # before the model runs, not after
    like = Profile.load(args.baseline) if args.baseline else None
    batches = iter_batches(load_inputs(args.inputs), args.batch_size)
    profile = profile_model(
        args.model,
        batches,
        layers=args.layers,
        like=like,
        bins=args.bins,
        channel_hist=args.channel_hist,
        progress=_progress(args.progress, f"profiling {len(batches)} batches"),
        trust=args.trust_file,
    )
    profile.save(args.output)
    _emit_table(profile.to_dict(), profile_table(profile, args.output), args)
    return 0


def _cmd_drift(args: argparse.Namespace) -> int:
    from avgpool.monitor import Profile, compare, parse_threshold
    from avgpool.monitor.render import drift_table

    thresholds = dict(parse_threshold(t) for t in args.threshold)
    baseline, candidate = Profile.load(args.baseline), Profile.load(args.candidate)
    _check_outputs(args.plot, args.prometheus_textfile, directories=[args.tensorboard])
    report = compare(baseline, candidate, thresholds=thresholds, metrics=args.metric, channels=args.channels)
    table = drift_table(report, args.fail_on)
    extra = {}
    if args.plot:
        from avgpool.monitor import plot_drift

        drawn = plot_drift(report, args.plot, top=args.top)
        table[3].append(f"plot: {args.plot} ({', '.join(drawn)})")
        extra["plot"] = {"path": args.plot, "layers": drawn}
    model = args.model_name or os.path.basename(str(candidate.model.get("source", "model")))
    if args.prometheus_textfile:
        from avgpool.monitor import write_textfile

        write_textfile(
            args.prometheus_textfile, candidate, model=model, version=args.model_version, baseline=baseline
        )
        table[3].append(f"prometheus textfile: {args.prometheus_textfile}")
    if args.tensorboard:
        from avgpool.monitor import write_tensorboard

        event = write_tensorboard(args.tensorboard, candidate, baseline=baseline, step=args.step)
        table[3].append(f"tensorboard: {event}")
    _emit_table({**report.to_dict(), **extra}, table, args)
    return 1 if report.fails(args.fail_on) else 0


def _check_outputs(*paths: str | None, directories: Sequence[str | None] = ()) -> None:
    """Refuse (OSError: one line, exit 2) before anything is written if any output cannot be."""
    from avgpool._files import check_directory, check_writable

    given = [p for p in paths if p]
    given_dirs = [d for d in directories if d]
    everything = [os.path.abspath(p) for p in (*given, *given_dirs)]
    twice = sorted({p for p in everything if everything.count(p) > 1})
    if twice:
        raise AvgPoolError(f"{twice[0]} is given for two outputs: give each its own path")
    for path in given:
        check_writable(path)
    for directory in given_dirs:
        check_directory(directory)


def _emit_table(data: dict[str, Any], table: Any, args: argparse.Namespace) -> None:
    from avgpool.inspect import render

    if args.json:
        print(json.dumps(data, indent=2))
    elif args.markdown:
        print(render.markdown(table))
    elif sys.stdout.isatty() and _has_rich():
        render.rich_print(table)
    else:
        print(render.text(table))


def _monitor_commands(sub: Any) -> None:
    from avgpool.monitor.drift import METRICS, VERDICTS
    from avgpool.monitor.profile import DEFAULT_BINS

    profile = sub.add_parser(
        "profile",
        help="activation statistics at a model's pooling layers, saved as a profile file",
        description="Run a model (ONNX, .pt2, TorchScript, .pt or package.module:factory) on sample inputs "
        "and save per-layer, per-channel activation statistics at its pooling layers (or --layers) "
        "to a .avgprof file.",
    )
    profile.add_argument("model")
    profile.add_argument(
        "--inputs", required=True, metavar="FILE.npz", help="model inputs by name, samples on axis 0"
    )
    profile.add_argument("--output", "-o", required=True, metavar="OUT.avgprof")
    profile.add_argument(
        "--layers",
        nargs="+",
        action="extend",
        metavar="NAME",
        help="module / node / tensor names (default: pooling)",
    )
    profile.add_argument(
        "--baseline", metavar="BASE.avgprof", help="take histogram edges (and bins) from a baseline profile"
    )
    profile.add_argument("--batch-size", type=int, default=32)
    profile.add_argument(
        "--bins", type=int, default=DEFAULT_BINS, help=f"histogram bins (default {DEFAULT_BINS})"
    )
    profile.add_argument("--channel-hist", action="store_true", help="also keep one histogram per channel")
    trust_file_arg(profile)
    _progress_arg(profile)
    _output_args(profile)
    profile.set_defaults(func=_cmd_profile)

    drift = sub.add_parser(
        "drift",
        help="compare two activation profiles layer by layer; exit 1 on drift (a CI gate)",
        description="Mean shift, std ratio, PSI, KS, Wasserstein-1 and Jensen-Shannon per layer between a "
        "baseline and a candidate profile, a verdict per layer, and exit 1 when the overall verdict is at "
        "least --fail-on.",
    )
    drift.add_argument("baseline", metavar="BASE")
    drift.add_argument("candidate", metavar="CAND")
    drift.add_argument(
        "--fail-on",
        default="fail",
        choices=(*VERDICTS[1:], "never"),
        help="exit 1 at this verdict (default: fail)",
    )
    drift.add_argument(
        "--threshold", action="append", default=[], metavar="METRIC=WARN:FAIL", help="override, or METRIC=off"
    )
    drift.add_argument(
        "--metric", action="append", choices=METRICS, help="only these metrics decide verdicts (default: all)"
    )
    drift.add_argument("--channels", action="store_true", help="judge every channel too")
    drift.add_argument("--plot", metavar="OUT.png", help="histograms of the most drifted layers")
    drift.add_argument("--top", type=int, default=4, help="layers in the plot (default 4)")
    drift.add_argument(
        "--prometheus-textfile", metavar="OUT.prom", help="write the metrics for node_exporter"
    )
    drift.add_argument("--tensorboard", metavar="LOGDIR", help="write histograms and scalars to TensorBoard")
    drift.add_argument("--step", type=int, default=0, help="TensorBoard step (default 0)")
    drift.add_argument(
        "--model-name", help="the model label in exported metrics (default: candidate file name)"
    )
    drift.add_argument("--model-version", default="", help="the version label in exported metrics")
    _output_args(drift)
    drift.set_defaults(func=_cmd_drift)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="avgpool", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    shape = sub.add_parser(
        "shape",
        help="output shape, padding, uncovered cells, and which conventions disagree",
        description="Resolve pooling arguments under one convention and compare them with the others.",
    )
    _geometry_args(shape, "e.g. 1x3x224x224 (N, C, ...), or (N, ..., C) with --channels-last")
    shape.add_argument("--json", action="store_true", help="machine-readable output")
    shape.set_defaults(func=_cmd_shape)
    _model_commands(sub)
    _monitor_commands(sub)
    _bench.add_commands(sub)
    _study.add_commands(sub)
    return parser


def _one_line(message: str) -> str:
    from avgpool.inspect.render import printable

    return printable(message)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``avgpool`` command; returns the exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except BrokenPipeError:
        # the reader went away (`avgpool ... | head`): stop quietly, as Unix tools do
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print(f"avgpool {args.command}: interrupted", file=sys.stderr)
        return 130
    except (AvgPoolError, TypeError, OSError) as exc:
        print(f"avgpool {args.command}: error: {_one_line(str(exc))}", file=sys.stderr)
        return 2
    except MemoryError as exc:
        detail = f" ({_one_line(str(exc))})" if str(exc) else ""
        print(f"avgpool {args.command}: error: not enough memory{detail}", file=sys.stderr)
        return 2
    except Exception as exc:
        if os.environ.get("AVGPOOL_DEBUG"):
            raise
        print(
            f"avgpool {args.command}: unexpected error (a bug in avgpool, or in the model's own code; "
            f"AVGPOOL_DEBUG=1 shows where): {type(exc).__name__}: {_one_line(str(exc))}",
            file=sys.stderr,
        )
        return 3


if __name__ == "__main__":
    sys.exit(main())
