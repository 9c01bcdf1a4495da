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
    cells ``[in_start, in_stop)`` padded by ``pad_before`` and ``pad_after`` cells, under the
    array's ceil mode: a block that ends inside the array has its last window end exactly at
    its padded stretch, where ceil and floor agree."""

    out_start: int
    out_stop: int
    in_start: int
    in_stop: int
    pad_before: int
    pad_after: int


def offsets(chunks: Sequence[int]) -> list[int]:
    """Where each chunk starts, and the axis' end: ``(3, 2) -> [0, 3, 5]``."""
    return [0, *itertools.accumulate(chunks)]


def window_span(axis: Axis, start: int, stop: int) -> Span:
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
    if stop == axis.out:  # the array's own right edge: its padding
        after = axis.size + axis.pad_after - hi
    else:  # padding up to the last window's end (cells past the input's end are padding)
        after = max(end - hi, 0)
    return Span(start, stop, lo, hi, lo - first, after)


def _reaching(axis: Axis) -> tuple[int, int]:
    """[first, stop) of the outputs whose windows reach some input cell (not only padding)."""
    first = max(0, (axis.pad_before - axis.span) // axis.stride + 1)
    stop = min(axis.out, (axis.size + axis.pad_before - 1) // axis.stride + 1)
    return first, stop


def window_boundaries(axis: Axis, chunks: Sequence[int]) -> list[int]:
    """Output boundaries ``[0, ..., axis.out]`` that follow the input's chunks.

    Each block takes the outputs whose windows start in one input chunk, so it reads that
    chunk and a halo of the next ones. Windows lying wholly in padding join the first or
    last block: every block reads at least one input cell.
    """
    first, stop = _reaching(axis)
    cuts = {0, axis.out}
    if first < stop:
        for c in offsets(chunks)[1:-1]:
            o = -(-(c + axis.pad_before) // axis.stride)
            if first < o < stop:
                cuts.add(o)
    return sorted(cuts)


def window_spans(axis: Axis, chunks: Sequence[int]) -> list[Span]:
    """The blocks of `window_boundaries`, each with its stretch and pads (`window_span`)."""
    return [window_span(axis, a, b) for a, b in itertools.pairwise(window_boundaries(axis, chunks))]


def chunk_range(starts: Sequence[int], lo: int, hi: int) -> range:
    """The chunks (of these `offsets`) that hold some of the cells ``[lo, hi)``; for no cells,
    the one chunk around ``lo`` (an empty cut of it keeps every block's arrays the same rank)."""
    chunks = len(starts) - 1
    first = min(max(bisect.bisect_right(starts, lo) - 1, 0), chunks - 1)
    return range(first, min(max(bisect.bisect_left(starts, hi), first + 1), chunks))


# -- strips: blocks whose sums the NumPy kernels add in the whole array's order ---------------


def restart_rows() -> int:
    """Output rows per restart of the NumPy kernels' running sums (read from the kernels, so
    the strips follow them; loading the module loads Numba, as the blocks' kernels will)."""
    from avgpool.kernels._common import CHUNK

    return CHUNK


def small_plane_cells() -> int:
    """The most cells a plane may have for the NumPy kernels to take it as a small plane (a
    kernel of its own, adding in its own order): a larger plane never qualifies."""
    from avgpool import _small_plans as plans

    return max(
        plans.SMALL_PLANE_CELLS,
        plans.SMALL_PLANE_CELLS_F64,
        plans.SAME_PLANE_CELLS,
        plans.SAME_WIDE_CELLS,
        plans.INDEX_PLANE_CELLS,
        plans.TILES_PLANE_CELLS,
        plans.SAME_MAX_CELLS,
        plans.SMALL_MAX_CELLS,
    )


def strip_boundaries(axis: Axis, rows: int) -> list[int]:
    """Output boundaries down an axis (H) that keep the NumPy kernels' order of additions: at
    multiples of `restart_rows` outputs (where their running sums restart), each block's
    windows starting over at least ``rows`` input rows (so its plane is as large as asked),
    windows wholly in padding kept with a block that reads the input."""
    first, stop = _reaching(axis)
    restart = restart_rows()
    step = restart * max(1, -(-rows // (restart * axis.stride)))
    cuts = [o for o in range(step, axis.out, step) if first < o < stop]
    if cuts and (stop - cuts[-1]) * axis.stride < rows:  # a short last strip joins the one before
        cuts.pop()
    return [0, *cuts, axis.out]


def depth_boundaries(axis: Axis, chunks: Sequence[int]) -> list[int]:
    """`window_boundaries` with at least two outputs per block (a block of one output would
    take another kernel: an axis with one output is read with stride 1)."""
    cuts = window_boundaries(axis, chunks)
    kept = [0]
    for c in cuts[1:-1]:
        if c - kept[-1] >= 2 and axis.out - c >= 2:
            kept.append(c)
    return [*kept, axis.out] if axis.out else kept
