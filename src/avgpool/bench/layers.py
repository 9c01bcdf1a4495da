"""The "real layers" suite: every pooling layer of real CNNs, as ``layers.toml`` records them.

``layers.toml`` (beside this module, written by ``benchmarks/real_layers.py`` from the models
themselves) holds one row per distinct pooling layer: op, geometry, per-sample input shape and
the models that use it. `layer_cases` turns each row into benchmark cases: the forward at
every batch of ``cases.toml``'s ``[layers] batches``, forward+backward at its
``train_batches``, each channels-first and channels-last. `run_layers` measures them with the
synthetic suite's runner (`avgpool.bench.runner.run_case`), avgpool in this process, and
records for each case the path avgpool took (its debug log during its first call).
`summarize_layers` checks the ``layers_*`` entries of ``cases.toml``'s ``[targets]``.

The ratio reported for a case is the best peer's time on the same layout / avgpool's (above 1:
avgpool is faster). A case whose avgpool path names a peer's library (its kernel did the work)
counts as no win, whatever its ratio.
"""

from __future__ import annotations

import functools
import math
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from avgpool.bench.cases import Case, suite_table, targets

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = [
    "LAYERS_FILE",
    "PEER_PATH",
    "layer_cases",
    "layer_models",
    "layer_rows",
    "layer_targets",
    "run_layers",
    "suite_settings",
    "summarize_layers",
]

#: The table of layers, as data.
LAYERS_FILE = Path(__file__).with_name("layers.toml")
_OPS = ("avg", "max", "global_avg", "adaptive_avg", "blur")
#: A path naming one of these ran a peer's kernel: no win for avgpool.
PEER_PATH = re.compile(r"\b(torch|aten|onnxruntime|ort|cv2|opencv)\b", re.IGNORECASE)


@functools.cache
def _read(path: Path = LAYERS_FILE) -> dict[str, Any]:
    with path.open("rb") as f:
        data = tomllib.load(f)
    for row in data["layer"]:
        if row.get("op") not in _OPS:
            raise ValueError(
                f"{path}: layer {row.get('key')!r}: op must be one of {_OPS}, got {row.get('op')!r}"
            )
        if len(row.get("shape", ())) != 3:
            raise ValueError(
                f"{path}: layer {row.get('key')!r}: shape must be (C, H, W), got {row.get('shape')}"
            )
    return data


def layer_rows(path: Path = LAYERS_FILE) -> list[dict[str, Any]]:
    """The table's rows (dicts as written: key, title, op, shape, geometry, out, used_by)."""
    return [dict(row) for row in _read(path)["layer"]]


def layer_models(path: Path = LAYERS_FILE) -> dict[str, dict[str, Any]]:
    """The models the rows come from: name -> {"about": what it is, "input": (C, H, W)}."""
    return {name: dict(entry) for name, entry in _read(path)["models"].items()}


def layer_targets() -> dict[str, Any]:
    """``min_ratio`` for every case and ``geomean_ratio`` for their geometric mean (from
    ``cases.toml``'s ``[targets]``)."""
    goals = targets()
    return {"min_ratio": goals["layers_min_ratio"], "geomean_ratio": goals["layers_geomean"]}


def suite_settings() -> dict[str, Any]:
    """``cases.toml``'s ``[layers]``: batches, train_batches, quick_batches, quick_layers."""
    return dict(suite_table("layers"))


def _case(row: dict[str, Any], batch: int, fwd_bwd: bool) -> Case:
    def pair(name: str) -> tuple[int, ...] | None:
        value = row.get(name)
        return None if value is None else tuple(value)

    stride = (row["stride"],) * 2 if row["op"] == "blur" else pair("stride")
    return Case(
        key=f"{row['key']}/b{batch}" + ("/train" if fwd_bwd else ""),
        title=row["title"],
        op=row["op"],
        shape=(batch, *row["shape"]),
        kernel=pair("kernel"),
        stride=stride,
        padding=row.get("padding", 0),
        count_include_pad=row.get("count_include_pad", True),
        ceil_mode=row.get("ceil_mode", False),
        output_size=pair("output_size"),
        filt_size=row.get("filt_size", 0),
        pad_type=row.get("pad_type", "reflect"),
        pad_off=row.get("pad_off", 0),
        fwd_bwd=fwd_bwd,
    )


def layer_cases(
    batches: Sequence[int] | None = None,
    train_batches: Sequence[int] | None = None,
    path: Path = LAYERS_FILE,
    keys: Sequence[str] | None = None,
) -> list[Case]:
    """Every row (or the rows of ``keys``) as cases: forward at each of ``batches``,
    forward+backward at each of ``train_batches`` (default: ``cases.toml``'s ``[layers]``),
    each channels-first then channels-last.

    Examples
    --------
    >>> cases = layer_cases()
    >>> [c.id for c in cases[:3]]
    ['max3x3s2p1_64x112x112/b1/cf', 'max3x3s2p1_64x112x112/b1/cl', 'max3x3s2p1_64x112x112/b32/cf']
    >>> c = cases[0]
    >>> c.op, c.shape, c.kernel, c.stride, c.padding, c.out_spatial
    ('max', (1, 64, 112, 112), (3, 3), (2, 2), 1, (56, 56))
    """
    suite = suite_settings()
    batches = suite["batches"] if batches is None else batches
    train_batches = suite["train_batches"] if train_batches is None else train_batches
    passes = [(b, False) for b in batches] + [(b, True) for b in train_batches]
    rows = layer_rows(path)
    if keys is not None:
        unknown = set(keys) - {row["key"] for row in rows}
        if unknown:
            raise ValueError(f"keys must name rows of {path.name}, got unknown {sorted(unknown)}")
        rows = [row for row in rows if row["key"] in keys]
    cases = [_case(row, b, train) for row in rows for b, train in passes]
    return [replace(c, channels_last=cl) for c in cases for cl in (False, True)]


def layer_key(case: Case) -> str:
    """The table row a case comes from."""
    return case.key.split("/")[0]


def ratio_of(row: dict[str, Any]) -> float | None:
    """best peer's time / avgpool's (None when either is missing)."""
    best, avg = row.get("best_peer_ms"), row["avgpool"]
    if best is None or avg.get("status") != "ok":
        return None
    return best / avg["median_ms"]


def peer_path(row: dict[str, Any]) -> bool:
    """Whether avgpool's recorded path ran a peer's kernel."""
    return any(PEER_PATH.search(line) for line in row["avgpool"].get("path", ()))


def summarize_layers(rows: Sequence[dict[str, Any]], goals: dict[str, Any] | None = None) -> dict[str, Any]:
    """The targets on the measured rows: how many cases reach ``min_ratio``, the geometric mean.

    A case avgpool won by calling a peer's kernel counts as below ``min_ratio``, and enters the
    geometric mean at most at 1.0; a case avgpool failed counts as below too (and is left out of
    the mean).
    """
    goals = goals or layer_targets()
    compared, wins, logs, slower = 0, 0, [], []
    for row in rows:
        if row.get("best_peer") is None:
            continue
        compared += 1
        ratio = ratio_of(row)
        by_peer = peer_path(row)
        if ratio is not None:
            logs.append(math.log(min(ratio, 1.0) if by_peer else ratio))
        if ratio is not None and ratio >= goals["min_ratio"] and not by_peer:
            wins += 1
        else:
            slower.append(
                {
                    "case": row["case"]["id"],
                    "ratio": ratio,
                    "best_peer": row["best_peer"],
                    "peer_path": by_peer,
                }
            )
    geomean = math.exp(math.fsum(logs) / len(logs)) if logs else None
    return {
        "cases_compared": compared,
        "at_least_min": wins,
        "min_ratio": goals["min_ratio"],
        "every_case": {"pass": compared > 0 and wins == compared},
        "geomean": {
            "value": geomean,
            "target": goals["geomean_ratio"],
            "pass": geomean is not None and geomean >= goals["geomean_ratio"],
        },
        "below_min": slower,
        "peer_path_cases": [s["case"] for s in slower if s["peer_path"]],
    }


def run_layers(
    cases: Sequence[Case],
    settings: Any,
    bandwidth: Any,
    peers: Sequence[Any] | None = None,
    log: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    """Measure every case (see `avgpool.bench.runner.run_case`; ``settings.isolate`` is ignored:
    avgpool runs in this process), and summarize. The rows keep medians, not every sample."""
    from avgpool.bench.peers import PEERS
    from avgpool.bench.runner import run_case

    peers = PEERS if peers is None else peers
    settings = replace(settings, isolate=False)
    used_by = {row["key"]: row["used_by"] for row in layer_rows()}
    rows = []
    start = time.perf_counter()
    for case in cases:
        log(f"{case.id}  {case.title}  {case.layout} {'x'.join(map(str, case.array_shape))}")
        began = time.perf_counter()
        row = run_case(case, settings, bandwidth, peers, log)
        row["elapsed_s"] = time.perf_counter() - began
        for record in (row["avgpool"], *row["peers"].values()):
            record.pop("samples_ms", None)
        row["used_by"] = used_by.get(layer_key(case), [])
        row["ratio"] = ratio_of(row)
        row["peer_path"] = peer_path(row)
        rows.append(row)
    return {
        "settings": settings.to_dict(),
        "peers": [p.name for p in peers],
        "models": layer_models(),
        "cases": rows,
        "elapsed_s": time.perf_counter() - start,
        "summary": summarize_layers(rows),
    }
