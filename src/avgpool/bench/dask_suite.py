"""The Dask suite: what pooling a chunked Dask array costs over the NumPy op on the same data.

Each case is an array that fits in memory, pooled two ways in interleaved pairs
(`avgpool.bench.ab.time_pairs`): the NumPy op on the whole array, and the same op on the array
wrapped by ``dask.array.from_array`` with the case's chunks, built and computed by Dask's
threaded scheduler (``.compute(scheduler="threads")``, as many workers as ``--threads``).
The Dask side's time is everything a user waits for: building the graph, the tasks (each
pools its chunk and the halo its windows need with the NumPy op) and stitching the result.
The ratio is Dask's median / NumPy's, with its paired bootstrap interval; the first call of
each is untimed (it compiles the kernels). Both results are checked equal before timing.

The suite needs ``dask[array]`` (``pip install avgpool[dask]``); without it, it says so and
records why instead of rows.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from avgpool.bench.ab import ratio_of_medians, time_pairs

__all__ = ["DaskCase", "DaskSettings", "dask_cases", "dask_targets", "render_dask", "run_dask"]

SKIPPED = "dask is not installed (pip install avgpool[dask]): the Dask suite did not run"


@dataclass(frozen=True)
class DaskCase:
    """One array and one op: ``op(x, *args)``, ``x`` of ``shape`` float32 in ``chunks``."""

    id: str
    title: str
    op: str
    args: tuple[int, ...]
    shape: tuple[int, ...]
    chunks: tuple[int, ...]

    @property
    def call(self) -> str:
        return f"{self.op}(x, {', '.join(map(str, self.args))})"


#: (id, title, shape, chunks) at each scale: a single-channel image in square chunks, and an
#: NCHW batch of a ResNet stem's activations, one sample per chunk
_ARRAYS = {
    "full": (
        ("image", "image 4096x4096", (1, 1, 4096, 4096), (1, 1, 1024, 1024)),
        ("batch", "NCHW batch", (8, 64, 112, 112), (1, 64, 112, 112)),
    ),
    "quick": (
        ("image", "image 2048x2048", (1, 1, 2048, 2048), (1, 1, 512, 512)),
        ("batch", "NCHW batch", (4, 64, 56, 56), (1, 64, 56, 56)),
    ),
    "tiny": (
        ("image", "image 128x128", (1, 1, 128, 128), (1, 1, 48, 48)),
        ("batch", "NCHW batch", (2, 4, 16, 16), (1, 4, 16, 16)),
    ),
}
_OPS = (("avg_pool", (3, 2), "avg 3x3/2"), ("max_pool", (2, 2), "max 2x2/2"))


def dask_cases(scale: str = "full") -> list[DaskCase]:
    """The suite's cases at ``scale`` (full, quick or tiny).

    Examples
    --------
    >>> [(c.id, c.call, c.chunks) for c in dask_cases("tiny")][::3]  # doctest: +NORMALIZE_WHITESPACE
    [('image/avg3x3s2', 'avg_pool(x, 3, 2)', (1, 1, 48, 48)),
     ('batch/max2x2s2', 'max_pool(x, 2, 2)', (1, 4, 16, 16))]
    """
    cases = []
    for key, title, shape, chunks in _ARRAYS[scale]:
        for op, args, name in _OPS:
            short = f"{op.split('_')[0]}{args[0]}x{args[0]}s{args[1]}"
            cases.append(DaskCase(f"{key}/{short}", f"{title}, {name}", op, args, shape, chunks))
    return cases


@dataclass(frozen=True)
class DaskSettings:
    """How the suite measures: up to ``repeats`` pairs in ``budget_s`` seconds per case."""

    threads: int = 1
    repeats: int = 20
    budget_s: float = 3.0
    warmup: int = 1
    scale: str = "full"
    seed: int = 0


def _chunk_count(chunks: tuple[tuple[int, ...], ...]) -> int:
    return math.prod(len(c) for c in chunks)


def _measure(case: DaskCase, settings: DaskSettings) -> dict[str, Any]:
    import dask.array as da
    import numpy as np

    import avgpool

    op = getattr(avgpool, case.op)
    x = np.random.default_rng(settings.seed).random(case.shape, dtype=np.float32)
    d = da.from_array(x, chunks=case.chunks)
    lazy = op(d, *case.args)
    if not isinstance(lazy, da.Array):
        raise TypeError(f"avgpool.{case.op} returned {type(lazy).__name__} for a Dask array, not one")

    def on_numpy(a: Any) -> Any:
        return op(a, *case.args)

    def on_dask(a: Any) -> Any:
        return op(a, *case.args).compute(scheduler="threads", num_workers=settings.threads)

    # a wrong result is not timed: the chunked op must give the NumPy op's values
    np.testing.assert_allclose(on_dask(d), on_numpy(x), rtol=1e-6, atol=0, err_msg=case.id)
    t_np, t_dask = time_pairs(
        on_numpy,
        on_dask,
        [x],
        [d],
        repeats=settings.repeats,
        warmup=settings.warmup,
        budget_s=settings.budget_s,
    )
    r = ratio_of_medians(t_np.samples, t_dask.samples, seed=settings.seed)
    return {
        "case": {
            "id": case.id,
            "title": case.title,
            "call": case.call,
            "shape": list(case.shape),
            "chunks": list(case.chunks),
        },
        "input_chunks": _chunk_count(d.chunks),
        "output_chunks": _chunk_count(lazy.chunks),
        "tasks": len(lazy.__dask_graph__()),
        "numpy_ms": t_np.percentile(50) * 1e3,
        "dask_ms": t_dask.percentile(50) * 1e3,
        "ratio": r.ratio,
        "low": r.low,
        "high": r.high,
        "n": r.n,
        "budget_limited": t_np.budget_limited,
    }


def run_dask(settings: DaskSettings, log: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Every case's row, or ``{"skipped": why}`` when Dask is not installed."""
    try:
        import dask
        import dask.array
    except ImportError:
        log(SKIPPED)
        return {"settings": settings.__dict__, "skipped": SKIPPED}
    import avgpool

    avgpool.set_num_threads(settings.threads)
    threads = settings.threads
    log(f"dask {dask.__version__}: NumPy op vs the same op on a chunked Dask array, {threads} thread(s)")
    rows = []
    for case in dask_cases(settings.scale):
        rows.append(_measure(case, settings))
        row = rows[-1]
        log(
            f"  {case.id:<18} numpy {row['numpy_ms']:.2f} ms, dask {row['dask_ms']:.2f} ms: "
            f"{row['ratio']:.2f}x [{row['low']:.2f}, {row['high']:.2f}] of {row['n']} pairs, "
            f"{row['tasks']} tasks"
        )
    return {"settings": {**settings.__dict__, "dask": dask.__version__}, "cases": rows}


def _shape(values: list[int]) -> str:
    return "x".join(map(str, values))


def render_dask(result: dict[str, Any]) -> list[str]:
    """The Dask section of the markdown report: how it was measured and the table."""
    lines = ["", "## Dask overhead", ""]
    if "skipped" in result:
        return [*lines, result["skipped"] + "."]
    s = result["settings"]
    lines += [
        f"Dask {s['dask']}: each array (float32, in memory) pooled by the NumPy op and by the same op "
        "on `dask.array.from_array(x, chunks)`, built and computed with the threaded scheduler "
        f"({s['threads']} worker thread(s); avgpool's kernels {s['threads']} thread(s) in both), timed "
        f"in interleaved pairs (up to {s['repeats']} pairs or {s['budget_s']:g} s per case, the first "
        "untimed). The Dask time includes building the graph. Ratio = Dask's median / NumPy's with "
        "its 95% paired bootstrap interval; *tasks*: the graph's tasks, input chunks included.",
        "",
        "| case | call | shape | chunks | chunks in → out | tasks | NumPy ms | Dask ms "
        "| Dask / NumPy [95% CI] |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["cases"]:
        c = r["case"]
        lines.append(
            f"| {c['title']} | `{c['call']}` | {_shape(c['shape'])} | {_shape(c['chunks'])} | "
            f"{r['input_chunks']} → {r['output_chunks']} | {r['tasks']} | {r['numpy_ms']:.2f} | "
            f"{r['dask_ms']:.2f} | {r['ratio']:.2f} [{r['low']:.2f}, {r['high']:.2f}] |"
        )
    return lines


def dask_targets(result: dict[str, Any]) -> list[str]:
    """The suite's line of the performance targets: reported, with no target to pass."""
    if "skipped" in result or not result["cases"]:
        return ["- Dask overhead: not measured (dask is not installed)"]
    worst = max(result["cases"], key=lambda r: r["ratio"])
    best = min(result["cases"], key=lambda r: r["ratio"])
    return [
        f"- Dask overhead (reported without a target): Dask / NumPy from {best['ratio']:.2f}x "
        f"({best['case']['id']}) to {worst['ratio']:.2f}x ({worst['case']['id']})"
    ]
