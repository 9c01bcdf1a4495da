"""The ``avgpool`` command: thin argument parsing and rendering over the library's tools.

Each subcommand lives in its own module (``_shape``, ``_inspect``, ``_diff``, ``_verify``,
``_profile``, ``_merge``, ``_drift``, ``_bench``, ``_study``, ``_serve``, ``_canary``) with an
``add_commands(subparsers)``; what they share is in ``_common``. This module only assembles the
parser and maps exceptions to exit codes.

Exit codes: 0 done (clean), 1 findings at or above ``--fail-on`` / disallowed diff changes / verify
failures, 2 bad arguments or input (one clear message on stderr, no traceback), 3 an unexpected
error (its traceback on stderr), 130 interrupted. Only avgpool's own refusals (`AvgPoolError`, and
TypeError for a wrong type), OSError from files and MemoryError count as bad input: anything else
is a bug, which a CI job must not read as a refused input or as a failed gate, and whose
traceback is what a bug report needs. An exception raised by a model's own code is reported by
the tool that ran it as an `AvgPoolError` naming the model.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Sequence

from avgpool._errors import AvgPoolError
from avgpool.cli import (
    _bench,
    _canary,
    _diff,
    _drift,
    _inspect,
    _merge,
    _profile,
    _serve,
    _shape,
    _study,
    _verify,
)

__all__ = ["main"]

_SUBCOMMANDS = (_shape, _inspect, _diff, _verify, _profile, _merge, _drift, _bench, _study, _serve, _canary)

_EXIT_CODES = """exit codes:
  0    done
  1    findings at or above --fail-on, changes diff does not allow, nodes verify finds wrong
  2    bad arguments or input: one line on stderr
  3    a bug in avgpool: its traceback on stderr
  130  interrupted"""


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("avgpool")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="avgpool",
        description="Average pooling under every framework's convention: shapes, model inspection, "
        "activation telemetry, latency benchmarks and the pooling study.",
        epilog=_EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in _SUBCOMMANDS:
        module.add_commands(sub)
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
    except Exception:
        traceback.print_exc(file=sys.stderr)
        print(
            f"avgpool {args.command}: unexpected error (a bug in avgpool): please report it", file=sys.stderr
        )
        return 3


if __name__ == "__main__":
    sys.exit(main())
