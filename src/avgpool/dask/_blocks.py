"""Where each block of a chunked pooling reads and what padding it applies: shape arithmetic.

Along one spatial axis a pooling's outputs are split into contiguous ranges, one per block.
A block reads the input cells its windows cover (its own stretch of the input plus a halo
where windows cross into the next stretch) and pools them with the NumPy op under a
`Window` whose padding is the array's own at an edge of the array and none inside it, so
every output it computes is one of the whole array's, with the same cells and divisor.
No arrays here: plain ints in, plain ints out.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Sequence
from dataclasses import dataclass

from avgpool.window import Axis


@dataclass(frozen=True)
class Span:
    """One block along one axis: outputs ``[out_start, out_stop)`` computed from the input
    cells ``[in_start, in_stop)`` padded by ``pad_before`` and ``pad_after`` cells;
    ``ceil_mode`` is the array's own at its last output, else off (the block's windows then
    fit its padded stretch exactly)."""

    out_start: int
    out_stop: int
    in_start: int
    in_stop: int
    pad_before: int
    pad_after: int
    ceil_mode: bool


def offsets(chunks: Sequence[int]) -> list[int]:
    """Where each chunk starts, and the axis' end: ``(3, 2) -> [0, 3, 5]``."""
    return [0, *itertools.accumulate(chunks)]


def window_span(axis: Axis, start: int, stop: int, ceil_mode: bool) -> Span:
    """The block of outputs ``[start, stop)`` along ``axis``: the input it reads and its pads.

    ``stop - start`` outputs come out of the block's stretch and pads for any ``start <
    stop``, provided some output of the range has a window that reaches the input (not only
    padding), which `window_boundaries` ensures.
    """
    first = start * axis.stride - axis.pad_before
    end = (stop - 1) * axis.stride - axis.pad_before + axis.span
    lo, hi = max(first, 0), min(end, axis.size)
    if hi <= lo:  # no window of the axis reaches the input: one block, the whole axis
        lo, hi = 0, axis.size
    if stop == axis.out:  # the array's own right edge: its padding and rounding
        after, ceil = axis.size + axis.pad_after - hi, ceil_mode
    else:  # the last window ends exactly at the padded stretch: floor and ceil agree
        after, ceil = max(end - hi, 0), False
    return Span(start, stop, lo, hi, lo - first, after, ceil)


def _reaching(axis: Axis) -> tuple[int, int]:
    """[first, stop) of the outputs whose windows reach some input cell (not only padding)."""
    first = max(0, (axis.pad_before - axis.span) // axis.stride + 1)
    stop = min(axis.out, (axis.size + axis.pad_before - 1) // axis.stride + 1)
    return first, stop


def window_boundaries(axis: Axis, chunks: Sequence[int], align: int = 1) -> list[int]:
    """Output boundaries ``[0, ..., axis.out]`` that follow the input's chunks.

    Each block takes the outputs whose windows start in one input chunk, so it reads that
    chunk and a halo of the next ones. ``align``: boundaries fall on multiples of it (the
    kernels restart their running sums every ``align`` outputs, so a block then sums each
    window in the whole array's order). Windows lying wholly in padding join the first or
    last block: every block reads at least one input cell.
    """
    first, stop = _reaching(axis)
    cuts = {0, axis.out}
    if first < stop:
        for c in offsets(chunks)[1:-1]:
            o = -(-(c + axis.pad_before) // axis.stride)
            o -= o % align
            if first < o < stop:
                cuts.add(o)
    return sorted(cuts)


def window_spans(axis: Axis, chunks: Sequence[int], ceil_mode: bool, align: int = 1) -> list[Span]:
    cuts = window_boundaries(axis, chunks, align)
    return [window_span(axis, a, b, ceil_mode) for a, b in itertools.pairwise(cuts)]


def chunk_range(starts: Sequence[int], lo: int, hi: int) -> range:
    """The chunks (of these `offsets`) that hold some of the cells ``[lo, hi)``; for no cells,
    the one chunk around ``lo`` (an empty cut of it keeps every block's arrays the same rank)."""
    chunks = len(starts) - 1
    first = min(max(bisect.bisect_right(starts, lo) - 1, 0), chunks - 1)
    return range(first, min(max(bisect.bisect_left(starts, hi), first + 1), chunks))
