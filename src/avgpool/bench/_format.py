"""How the reports write a time and a pass/fail mark (shared by every suite's markdown)."""

from __future__ import annotations

__all__ = ["mark", "ms"]


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
