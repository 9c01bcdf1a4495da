"""How the reports write a time and a pass/fail mark (shared by every suite's markdown)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["mark", "ms", "peer_cells"]


def ms(value: float) -> str:
    """Milliseconds, three or so significant digits.

    Examples
    --------
    >>> ms(123.4), ms(4.567), ms(0.01234)
    ('123', '4.57', '0.012')
    """
    if value >= 100:
        return f"{value:.0f}"
    if value >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def mark(ok: bool) -> str:
    """✅ or ❌."""
    return "✅" if ok else "❌"


def peer_cells(
    row: dict[str, Any],
    case_id: str,
    peers: list[str],
    cell: Callable[[dict[str, Any]], str],
    notes: dict[str, list[str]],
    labels: dict[str, set[str]],
) -> list[str]:
    """Each peer's cell of one result row; why a peer did not run (n/a, failed) goes into
    ``notes`` under ``case_id``, how it ran (its label) into ``labels``."""
    cells = []
    for name in peers:
        record = row["peers"][name]
        cells.append(cell(record))
        if record.get("status") == "n/a":
            notes.setdefault(f"{name}: {record['reason']}", []).append(case_id)
        elif record.get("status") == "failed":
            notes.setdefault(f"{name} failed: {record['error']}", []).append(case_id)
        elif record.get("label"):
            labels.setdefault(name, set()).add(record["label"])
    return cells
