"""What a block needs to compute as part of the whole array: its window and its indices.

A block's window is the array's with the padding the block's `avgpool.dask._blocks.Span` s
give (the array's own at its edges, none inside); arg-max indices move between a block's
spatial plane and the whole array's.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np

from avgpool._arrays import Layout
from avgpool.window import Window

INDEX = np.dtype(np.int64)


def spatial_axes(layout: Layout) -> list[int]:
    """The array axes of a layout's spatial dimensions."""
    first = len(layout.shape) - layout.ndim - (1 if layout.channels_last else 0)
    return list(range(first, first + layout.ndim))


def ceil_of(window: Window) -> bool:
    """The ceil mode the resolved pads are used with: a 'same' padding already rounds up."""
    return window.ceil_mode and not isinstance(window.padding, str)


def block_window(window: Window, ceil: bool, spans: Sequence) -> Window:
    """The window of one block: the padding of its spans (`avgpool.dask._blocks.Span`)."""
    return _replaced(window, tuple((s.pad_before, s.pad_after) for s in spans), ceil)


@functools.lru_cache(maxsize=1024)
def _replaced(window: Window, pads: tuple, ceil: bool) -> Window:
    return window.replace(padding=pads, ceil_mode=ceil)


def globalize(
    index: np.ndarray, local: Sequence[int], starts: Sequence[int], spatial: Sequence[int]
) -> np.ndarray:
    """Arg-max indices flat in a block's spatial plane (sizes ``local``, at ``starts`` in the
    array) as flat indices into the whole array's plane (sizes ``spatial``); -1 stays."""
    found = index >= 0
    cells = np.unravel_index(np.where(found, index, 0), tuple(local))
    flat = np.ravel_multi_index(tuple(c + s for c, s in zip(cells, starts)), tuple(spatial))
    return np.where(found, flat, -1).astype(INDEX, copy=False)


def localize(
    index: np.ndarray, spatial: Sequence[int], starts: Sequence[int], local: Sequence[int]
) -> np.ndarray:
    """The inverse of `globalize`: flat indices into the array's plane as flat indices into a
    block's (cells outside the block, and -1, become -1)."""
    from avgpool._errors import AvgPoolError

    index = np.asarray(index)
    cells_total = int(np.prod(spatial))
    if index.size and (index.min() < -1 or index.max() >= cells_total):
        raise AvgPoolError(
            f"indices must lie in [-1, {cells_total}) (flat positions in a spatial plane of "
            f"{cells_total} cells), got values from {index.min()} to {index.max()}"
        )
    found = index >= 0
    cells = np.unravel_index(np.where(found, index, 0), tuple(spatial))
    shifted = [c - s for c, s in zip(cells, starts)]
    inside = found.copy()
    for c, n in zip(shifted, local):
        inside &= (c >= 0) & (c < n)
    flat = np.ravel_multi_index(tuple(np.where(inside, c, 0) for c in shifted), tuple(local))
    return np.where(inside, flat, -1).astype(INDEX, copy=False)
