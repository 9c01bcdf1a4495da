"""What the CPU kernels share: the array layout they take and how they split their work.

Arrays are 4-D views ``(outer, D, H, W*C)``: a row of W cells with C channels interleaved
(channels-first data has C == 1 and outer = batch x channels; channels-last data has outer =
batch). 1-D and 2-D pooling use D == 1 (and H == 1). ``geo[axis, field]`` is an int64 array
over the axes (D, H, W) with the fields (kernel, stride, dilation, pad_before).

Running sums restart at every chunk of ``CHUNK`` rows: that bounds float drift and fixes the
order of every addition, so results are bitwise identical for any thread count.
"""

from __future__ import annotations

import numpy as np
from numba import njit

#: Rows per work item; the running sums restart at each chunk.
CHUNK = 32


@njit(cache=True)
def split_runs(items, blocks):
    """(runs, items per run): ``items`` split into at most ``blocks`` runs of equal length."""
    runs = max(1, min(blocks, items))
    per = -(-items // runs)
    return (-(-items // per) if per else 0), per


@njit(cache=True)
def width_taps(W, OW, kw, sw, dw, pw):
    """(first, end): for each output column, the range of its width taps that read the input
    (not padding), once per call rather than two divisions per output cell."""
    jw_lo, jw_hi = np.empty(OW, np.int64), np.empty(OW, np.int64)
    for ow in range(OW):
        start = ow * sw - pw
        jw_lo[ow] = max(0, (dw - 1 - start) // dw)
        jw_hi[ow] = min(kw, (W - 1 - start) // dw + 1)
    return jw_lo, jw_hi
