"""The Dask suite of `make bench`: its rows, its markdown and its line when dask is missing."""

from __future__ import annotations

import builtins

import pytest

from avgpool.bench.dask_suite import (
    SKIPPED,
    DaskSettings,
    dask_cases,
    dask_targets,
    render_dask,
    run_dask,
)
from avgpool.bench.report import render_markdown
from avgpool.bench.suites import SUITES


def test_the_dask_suite_is_one_of_all():
    assert "dask" in SUITES


def test_cases_pair_each_array_with_each_op():
    cases = dask_cases("full")
    assert [c.id for c in cases] == ["image/avg3x3s2", "image/max2x2s2", "batch/avg3x3s2", "batch/max2x2s2"]
    assert cases[0].shape == (1, 1, 4096, 4096) and cases[0].chunks == (1, 1, 1024, 1024)
    assert cases[2].shape == (8, 64, 112, 112) and cases[2].chunks == (1, 64, 112, 112)
    assert [c.call for c in cases[:2]] == ["avg_pool(x, 3, 2)", "max_pool(x, 2, 2)"]


def test_a_tiny_run_gives_one_row_per_case_and_its_table():
    pytest.importorskip("dask.array")
    lines: list[str] = []
    # a budget no run reaches, so that 3 pairs are timed however slow the machine is (on a
    # loaded host one stalled call would otherwise use up a short budget)
    settings = DaskSettings(threads=1, repeats=3, budget_s=600.0, scale="tiny")
    result = run_dask(settings, log=lines.append)
    rows = result["cases"]
    assert [r["case"]["id"] for r in rows] == [c.id for c in dask_cases("tiny")]
    image_avg, image_max, batch_avg, _ = rows
    # 128x128 in 48x48 chunks: 3x3 chunks in; avg 3x3/2 gives 63x63, max 2x2/2 64x64
    assert image_avg["input_chunks"] == 9 and image_max["input_chunks"] == 9
    assert batch_avg["input_chunks"] == 2 and batch_avg["case"]["chunks"] == [1, 4, 16, 16]
    for r in rows:
        assert r["output_chunks"] >= 1 and r["tasks"] > r["output_chunks"]
        assert r["numpy_ms"] > 0 and r["dask_ms"] > 0 and r["n"] == 3
        assert r["ratio"] == pytest.approx(r["dask_ms"] / r["numpy_ms"])
        assert r["low"] <= r["ratio"] <= r["high"]
    assert len(lines) == 1 + len(rows) and lines[1].lstrip().startswith("image/avg3x3s2")

    md = render_dask(result)
    assert md[1] == "## Dask overhead"
    table = [line for line in md if line.startswith("| image 128x128, avg 3x3/2 |")]
    assert len(table) == 1 and "| `avg_pool(x, 3, 2)` | 1x1x128x128 | 1x1x48x48 | 9 → " in table[0]
    assert len([line for line in md if line.startswith("| ")]) == 1 + len(rows)
    (target,) = dask_targets(result)
    assert target.startswith("- Dask overhead (reported without a target): Dask / NumPy from ")
    assert "✅" not in target and "❌" not in target


def test_without_dask_the_suite_says_so(monkeypatch):
    real_import = builtins.__import__

    def no_dask(name, *args, **kwargs):
        if name == "dask" or name.startswith("dask."):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_dask)
    lines: list[str] = []
    result = run_dask(DaskSettings(scale="tiny"), log=lines.append)
    assert result["skipped"] == SKIPPED and lines == [SKIPPED]
    assert render_dask(result)[-1] == SKIPPED + "."
    assert dask_targets(result) == ["- Dask overhead: not measured (dask is not installed)"]


def test_the_report_renders_the_dask_section():
    result = {
        "settings": {"threads": 2, "repeats": 20, "budget_s": 3.0, "dask": "2026.8.0"},
        "cases": [
            {
                "case": {
                    "id": "image/avg3x3s2",
                    "title": "image 4096x4096, avg 3x3/2",
                    "call": "avg_pool(x, 3, 2)",
                    "shape": [1, 1, 4096, 4096],
                    "chunks": [1, 1, 1024, 1024],
                },
                "input_chunks": 16,
                "output_chunks": 16,
                "tasks": 32,
                "numpy_ms": 7.0,
                "dask_ms": 28.0,
                "ratio": 4.0,
                "low": 3.5,
                "high": 4.5,
                "n": 20,
            }
        ],
    }
    machine = {
        "date": "2026-12-04T10:00:00+00:00",
        "cpu": "cpu",
        "cores": 2,
        "threads": 2,
        "llc_bytes": 1 << 25,
        "memory_bytes": 1 << 30,
        "python": "3.11",
        "versions": {"avgpool": "0.1.0", "dask": "2026.8.0"},
    }
    md = render_markdown({"machine": machine, "dask": result})
    assert (
        "| image 4096x4096, avg 3x3/2 | `avg_pool(x, 3, 2)` | 1x1x4096x4096 | 1x1x1024x1024 | 16 → 16 | 32 "
        "| 7.00 | 28.00 | 4.00 [3.50, 4.50] |" in md
    )
    assert (
        "- Dask overhead (reported without a target): Dask / NumPy from 4.00x (image/avg3x3s2) to 4.00x" in md
    )
    assert "dask 2026.8.0" in md
