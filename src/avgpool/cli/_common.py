"""What several subcommands share: argument types and groups, and the output formats."""

from __future__ import annotations

import argparse
import json
import re
import sys
from typing import Any

from avgpool.conventions import CONVENTIONS

#: What MODEL can be, for the help of the commands that read models.
MODEL_HELP = (
    "an .onnx file, a TorchScript file, an ExportedProgram (.pt2) or a pickled nn.Module (.pt/.pth), "
    "these two with --trust-file, or package.module:factory"
)


def ints(text: str, what: str) -> tuple[int, ...]:
    """'3', '3x3' or '1,3,224,224' as a tuple of ints; an argparse error names ``what``."""
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
    values = ints(lowered, "padding")
    return values[0] if len(values) == 1 else values


def _size(value: tuple[int, ...]) -> Any:
    return value[0] if len(value) == 1 else value


def geometry_args(cmd: argparse.ArgumentParser, shape_help: str) -> None:
    """The input shape and the pooling geometry (shared by `shape` and `bench op`)."""
    cmd.add_argument("input_shape", metavar="SHAPE", type=lambda t: ints(t, "input shape"), help=shape_help)
    cmd.add_argument("--kernel", "-k", required=True, type=lambda t: ints(t, "kernel"), help="3 or 3x3")
    cmd.add_argument("--stride", "-s", type=lambda t: ints(t, "stride"), help="default: the convention's")
    cmd.add_argument(
        "--padding",
        "-p",
        default=0,
        type=_padding,
        help="1, 1x2, 0:1x0:1 (before:after), valid, same, same_lower",
    )
    cmd.add_argument("--dilation", "-d", default=(1,), type=lambda t: ints(t, "dilation"))
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


def geometry(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments `shape_report` and `bench_op` take from `geometry_args`."""
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


def output_args(cmd: argparse.ArgumentParser, json_help: str = "machine-readable output") -> None:
    """--json / --markdown, the output formats `emit` and `emit_table` write."""
    out = cmd.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help=json_help)
    out.add_argument("--markdown", action="store_true", help="a markdown table (for CI comments)")


def progress_arg(cmd: argparse.ArgumentParser) -> None:
    """--progress / --no-progress, for `progress`."""
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


def model_args(cmd: argparse.ArgumentParser, *, torch_files: bool = True) -> None:
    """--input-shape, --trust-file and the output formats (inspect, diff, verify)."""
    cmd.add_argument(
        "--input-shape",
        "-i",
        action="append",
        metavar="[NAME:]SHAPE",
        help="e.g. 1x3x224x224, or image:1x3x224x224 per input; fixes dynamic dimensions",
    )
    if torch_files:
        trust_file_arg(cmd)
    output_args(cmd)


def input_shapes(args: argparse.Namespace) -> dict[str, tuple[int, ...]]:
    from avgpool.inspect import parse_input_shapes

    return parse_input_shapes(args.input_shape)


def has_rich() -> bool:
    import importlib.util

    return importlib.util.find_spec("rich") is not None


def emit(report: Any, args: argparse.Namespace) -> None:
    """An inspect, diff or verify report as JSON, markdown, rich (on a terminal) or plain text."""
    from avgpool.inspect import render

    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    elif args.markdown:
        print(render.render(report, "markdown"))
    elif sys.stdout.isatty() and has_rich():
        render.rich_print(render.tables(report))
    else:
        print(render.render(report, "text"))


def emit_table(data: dict[str, Any], table: Any, args: argparse.Namespace) -> None:
    """``data`` as JSON, or ``table`` as markdown, rich (on a terminal) or plain text."""
    from avgpool.inspect import render

    if args.json:
        print(json.dumps(data, indent=2))
    elif args.markdown:
        print(render.markdown(table))
    elif sys.stdout.isatty() and has_rich():
        render.rich_print(table)
    else:
        print(render.text(table))


def progress(enabled: bool | None, what: str) -> Any:
    """A wrapper that shows a progress bar over batches on stderr (rich), or None."""
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled or not has_rich():
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
