"""What a thread pool costs a small call after the process was idle: why avgpool runs small
work on one thread.

    python benchmarks/thread_wake.py            # a Markdown table on stdout

A batch-1 pooling layer of a few hundred KiB is timed after gaps of idle time (none, 0.1 ms,
0.3 ms, 1 ms, 3 ms, 10 ms, 50 ms), on one thread and on two: avgpool's global average of a (1, 2048, 8, 8)
float32 array (its serial kernel, and its parallel kernel on 2 Numba threads), and PyTorch's
``adaptive_avg_pool2d`` and an elementwise add on its own 2-thread pool. Back to back (no gap)
the pools' threads spin and two threads win; after a gap they sleep, and the first call
waits for them. Each cell is the median of 40 calls after the gap (10 more discarded first).
"""

from __future__ import annotations

import statistics
import time

import numpy as np

GAPS = (0.0, 0.0001, 0.0003, 0.001, 0.003, 0.01, 0.05)
CALLS, DISCARD = 40, 10


def _after_gaps(call, gap: float) -> float:
    """Median µs of ``call()`` timed right after ``gap`` seconds of sleep."""
    times = []
    for _ in range(CALLS + DISCARD):
        if gap:
            time.sleep(gap)
        start = time.perf_counter_ns()
        call()
        times.append(time.perf_counter_ns() - start)
    return statistics.median(times[DISCARD:]) / 1000


def main() -> None:
    import torch
    import torch.nn.functional as F

    import avgpool
    from avgpool import _backends, _cpu_calls

    torch.set_num_threads(2)
    x = np.random.default_rng(0).standard_normal((1, 2048, 8, 8)).astype(np.float32)
    avgpool.global_avg_pool(x)  # compiles and plans
    plan = next(p for p in _backends._plans.values() if isinstance(p, _cpu_calls.Planned))
    view, out = x.reshape(plan.view), np.empty(plan.out_view, np.float32)
    one = _cpu_calls.serial(plan.kernel)
    two = _cpu_calls._on_threads(plan.kernel, 2)
    t = torch.from_numpy(x)
    big = torch.randn(1, 64, 56, 56)
    rows = [
        ("avgpool global avg 2048x8x8, 1 thread", lambda: one(view, out, *plan.args)),
        ("avgpool global avg 2048x8x8, 2 threads", lambda: two(view, out, *plan.args)),
        ("torch adaptive_avg_pool2d 2048x8x8, 2 threads", lambda: F.adaptive_avg_pool2d(t, 1)),
        ("torch add 64x56x56, 2 threads", lambda: torch.add(big, 1.0)),
    ]
    print("| call | " + " | ".join(f"after {g * 1000:g} ms idle" for g in GAPS) + " |")
    print("|---|" + "---|" * len(GAPS))
    for name, call in rows:
        cells = [f"{_after_gaps(call, gap):.1f} µs" for gap in GAPS]
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
