"""The settings every op reads: which backend runs it and how many threads the kernels use.

`set_backend` and `set_num_threads` are process-wide: every thread sees them, threads
started later included. `use_backend` overrides the backend for the current thread (and
asyncio task) only, for the length of its ``with`` block, so two threads can each run a block
on a backend of their own and neither leaks into the other or into the process setting.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from collections.abc import Iterator

from avgpool._errors import AvgPoolError

BACKENDS = ("numba", "reference")

_process = {"backend": os.environ.get("AVGPOOL_BACKEND", "numba"), "threads": None}
_backend_here: contextvars.ContextVar[str | None] = contextvars.ContextVar("avgpool_backend", default=None)


def _checked_backend(name: object) -> str:
    if name not in BACKENDS:
        raise AvgPoolError(f"backend must be one of {BACKENDS}, got {name!r}")
    return name  # type: ignore[return-value]


def set_backend(name: str) -> None:
    """Run every op, in every thread, on ``"numba"`` (compiled kernels) or ``"reference"``."""
    _process["backend"] = _checked_backend(name)


def get_backend() -> str:
    """The backend ops run on now, in this thread (`use_backend`'s, else the process's)."""
    here = _backend_here.get()
    if here is not None:
        return here
    if _process["backend"] not in BACKENDS:
        raise AvgPoolError(f"AVGPOOL_BACKEND must be one of {BACKENDS}, got {_process['backend']!r}")
    return _process["backend"]


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[None]:
    """Run this thread's ops on another backend for a block: ``with use_backend("reference"):``.

    Other threads keep theirs; blocks nest, and each restores what was in force before it.
    """
    token = _backend_here.set(_checked_backend(name))
    try:
        yield
    finally:
        _backend_here.reset(token)


def _most_threads() -> int:
    import numba

    return numba.config.NUMBA_NUM_THREADS


def set_num_threads(n: int) -> None:
    """Threads the kernels use, in every thread that calls an op, threads started later
    included (default: each thread's Numba setting, every core). Results do not depend on it.
    """
    most = _most_threads()
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= most:
        raise AvgPoolError(f"threads must be an int between 1 and {most}, got {n!r}")
    _process["threads"] = n


def get_num_threads() -> int:
    """Threads the kernels use now: `set_num_threads`'s number, else the calling thread's
    Numba setting (every core unless ``numba.set_num_threads`` said otherwise)."""
    threads = _process["threads"]
    if threads is not None:
        return threads
    import numba

    return numba.get_num_threads()
