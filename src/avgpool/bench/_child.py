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
import sys
import time
import traceback
from typing import Any

import numpy as np

from avgpool.bench.cases import Case, make_inputs
from avgpool.bench.timing import time_calls

__all__ = ["measure_avgpool"]


def measure_avgpool(case: Case, spec: dict[str, Any]) -> tuple[dict[str, Any], np.ndarray | None]:
    """First call on input 0 (timed alone), then the steady state on the rotation from input 1.

    Returns the result record and the output for input 0 (None when the call failed).
    """
    from avgpool.bench.peers import avgpool_call

    try:
        inputs = make_inputs(case, spec["rotation"], spec["seed"])
        fn = avgpool_call(case)
        start = time.perf_counter()
        first = fn(inputs[0])
        first_s = time.perf_counter() - start
        timing = time_calls(
            fn,
            inputs[1:] + inputs[:1],
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
