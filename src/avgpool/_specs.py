"""``package.module:factory`` model specs, shared by the model tools (inspect, profile, bench)."""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any


def import_spec(spec: str) -> Any:
    """The object ``package.module:attr.sub`` names; the current directory is importable, as
    for ``python -m`` (a command-line tool's own directory is on ``sys.path`` instead).

    Raises ImportError or AttributeError when it does not exist.
    """
    module_name, _, attr = spec.partition(":")
    cwd = os.getcwd()
    added = cwd not in sys.path and "" not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        target: Any = importlib.import_module(module_name)
    finally:
        if added:
            sys.path.remove(cwd)
    for part in attr.split(".") if attr else ():
        target = getattr(target, part)
    return target


def is_factory(target: Any) -> bool:
    """A class or a function that builds the model (not a module instance)."""
    return isinstance(target, type) or (callable(target) and not hasattr(target, "named_modules"))
