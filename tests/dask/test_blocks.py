"""The blocks' arithmetic, worked by hand."""

import pytest

pytest.importorskip("dask")

from avgpool.dask._blocks import Span, chunk_range, window_spans
from avgpool.window import Window


def test_blocks_follow_the_chunks_with_padding_only_at_the_edges():
    # 10 cells in chunks of 4 and 6; windows of 3 at stride 2 from cell -1: -1, 1, 3, 5, 7
    (axis,) = Window(3, 2, 1, ndim=1).resolve((10,))
    assert window_spans(axis, (4, 6)) == [
        Span(0, 3, 0, 6, 1, 0),  # windows from -1, 1, 3: cells 0-5, one padded cell before
        Span(3, 5, 5, 10, 0, 1),  # windows from 5 and 7: cells 5-9, one padded cell after
    ]


def test_windows_in_the_padding_join_a_block_that_reads_the_input():
    # pads of 4: the windows from -4, -2, 6 and 8 lie in the padding only
    (axis,) = Window(2, 2, 4, ndim=1).resolve((6,))
    spans = window_spans(axis, (1,) * 6)
    assert all(s.in_start < s.in_stop for s in spans)
    assert spans[0].out_start == 0 and spans[0].out_stop == 3 and spans[0].pad_before == 4
    assert spans[-1].out_stop == axis.out == 7 and spans[-1].pad_after == 4


def test_chunk_range():
    starts = [0, 3, 3, 5]  # chunks of 3, 0 and 2 cells
    assert chunk_range(starts, 0, 3) == range(0, 1)
    assert chunk_range(starts, 2, 4) == range(0, 3)
    assert chunk_range(starts, 5, 5) == range(2, 3)  # no cell: the last chunk, cut empty
