"""Tables, as every report of avgpool's tools becomes one: (title, headers, rows, footer).

A report is turned into that shape once; `text`, `markdown` and `rich_print` only lay it out,
so the terminal, a markdown file and the tests show the same cells. Names read from model files
pass through `printable` on the way out.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["Table", "dims", "markdown", "printable", "rich_print", "text"]

#: (title, headers, rows, footer lines)
Table = tuple[str, list[str], list[list[str]], list[str]]


def dims(values: Sequence[Any] | None) -> str:
    """A shape or per-axis values as ``2x3x4``; ``-`` for none, ``?`` for an unknown size."""
    if not values:
        return "-"
    return "x".join("?" if v is None else str(v) for v in values)


def printable(text: str) -> str:
    """``text`` with control and bidi-override characters written as escapes (``\\n``,
    ``\\x1b``, ``\\u202e``): a name read from a model file can hold them, and printed raw they
    forge lines in a CI log, move the cursor or reorder what a reader sees."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text)


def _printable(table: Table) -> Table:
    title, headers, rows, footer = table
    return (
        printable(title),
        [printable(h) for h in headers],
        [[printable(c) for c in r] for r in rows],
        [printable(line) for line in footer],
    )


def text(table: Table) -> str:
    title, headers, rows, footer = _printable(table)
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    lines = [title, ""]
    lines.append("  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip())
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    return "\n".join([*lines, "", *footer])


def markdown(table: Table) -> str:
    title, headers, rows, footer = _printable(table)

    def cell(c: str) -> str:
        return c.replace("|", "\\|")

    lines = [f"**{cell(title)}**", "", "| " + " | ".join(headers) + " |", "|" + " --- |" * len(headers)]
    lines += ["| " + " | ".join(cell(c) for c in r) + " |" for r in rows]
    if footer:
        lines += ["", "```text", *footer, "```"]
    return "\n".join(lines)


def rich_print(table: Table, file: Any = None) -> None:
    from rich.console import Console
    from rich.table import Table as RichTable
    from rich.text import Text

    title, headers, rows, footer = _printable(table)
    console = Console(file=file)
    # Text, not str: rich reads '[...]' in a str as markup, and a name from a model file could
    # restyle the table, add links or (with an unmatched '[/]') stop the output with an error
    t = RichTable(title=Text(title), title_justify="left")
    for h in headers:
        t.add_column(Text(h), overflow="fold")
    for r in rows:
        style = "red" if ("FAIL" in r or r[-1] == "no") else None
        t.add_row(*(Text(c) for c in r), style=style)
    console.print(t)
    for line in footer:
        style = "red" if " error " in line else "yellow" if " warning " in line else None
        console.print(line, style=style, highlight=False, markup=False)
