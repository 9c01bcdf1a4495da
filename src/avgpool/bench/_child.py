"""Measure avgpool on one case, in a process of its own (``python -m avgpool.bench._child``).

The runner starts one child per case and round so that (1) the first call compiles from
nothing: a case's first child gets an empty ``NUMBA_CACHE_DIR``, so its first-call time is the
JIT compile of exactly the kernels this case needs, whatever ran before (the case's later
rounds load what it compiled); (2) a call that needs more memory than the
limit fails with MemoryError instead of swapping a shared machine, and a call that hangs is
killed at the timeout; (3) a crashing kernel costs one row of the table, not the run.
The spec arrives as JSON on stdin; the result is one JSON line on stdout. The same
`measure_avgpool` also runs in-process for ``--quick`` and the tests.
"""

from __future__ import annotations

import json
import logging
import sys
import time
import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np

from avgpool.bench.cases import Case, make_inputs
from avgpool.bench.timing import time_calls

__all__ = ["capture_path", "measure_avgpool"]


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        line = record.getMessage()
        if line not in self.lines:
            self.lines.append(line)


@contextmanager
def capture_path() -> Iterator[list[str]]:
    """The distinct messages of the "avgpool" logger, at DEBUG, while the block runs: the path
    avgpool's dispatch took (e.g. "avg_pool: box_planes.avg_planes_direct").

    Examples
    --------
    >>> with capture_path() as lines:
    ...     logging.getLogger("avgpool").debug("avg_pool: %s", "a kernel")
    >>> lines
    ['avg_pool: a kernel']
    """
    logger = logging.getLogger("avgpool")
    handler, level = _Lines(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler.lines
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def measure_avgpool(
    case: Case, spec: dict[str, Any], inputs: Sequence[np.ndarray] | None = None
) -> tuple[dict[str, Any], np.ndarray | None]:
    """First call on input 0 (timed alone), then the steady state on the rotation from input 1.

    ``inputs``: the rotation to time on (default: made here from the spec's rotation and seed).

    Returns the result record and the output for input 0 (None when the call failed).
    """
    from avgpool.bench.peers import avgpool_call

    try:
        if inputs is None:
            inputs = make_inputs(case, spec["rotation"], spec["seed"])
        fn = avgpool_call(case)
        with capture_path() as path:  # the first call: a plan cache may log only when it plans
            start = time.perf_counter()
            first = fn(inputs[0])
            first_s = time.perf_counter() - start
        timing = time_calls(
            fn,
            [*inputs[1:], *inputs[:1]],
            repeats=spec["repeats"],
            warmup=max(0, spec["warmup"] - 1),  # the first call was a warm-up too
            budget_s=spec["budget_s"],
            warmup_budget_s=spec["budget_s"],
        )
    except Exception as error:  # any failure (MemoryError included) is one row of the table
        message = f"{type(error).__name__}: {error}".strip()
        tail = traceback.format_exc(limit=-1).strip().splitlines()[-1]
        return {"status": "failed", "error": message[:300], "where": tail[:300]}, None
    summary = timing.summary()
    record = {
        "status": "ok",
        "backend": _backend(),
        "path": path,
        "first_call_ms": first_s * 1e3,
        "compile_ms": max(0.0, first_s * 1e3 - summary["median_ms"]),
        **summary,
        "samples_ms": [s * 1e3 for s in timing.samples],
    }
    return record, first


def _backend() -> str:
    """The implementation avgpool dispatched to, where it says (e.g. numba or reference)."""
    try:
        from avgpool._dispatch import get_backend
    except ImportError:
        return "reference"
    return get_backend()


def main() -> int:
    spec = json.loads(sys.stdin.read())
    if spec.get("memory_bytes"):
        import resource

        limit = int(spec["memory_bytes"])
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    record, output = measure_avgpool(Case.from_dict(spec["case"]), spec)
    if output is not None and spec.get("out"):
        np.save(spec["out"], output)
    print(json.dumps(record))
    return 0


if __name__ == "__main__":
    sys.exit(main())
