"""The ``avgpool study`` subcommand (being written; wired into the parser by `avgpool.cli`)."""

from __future__ import annotations

from typing import Any


def add_commands(sub: Any) -> None:
    """Add the ``study`` subparser to the ``avgpool`` command's subparsers."""
