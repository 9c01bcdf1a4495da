"""What the Dask backend's tests share: drawn arrays, windows and chunkings, and the tolerance
of summed results."""

from __future__ import annotations

import math

import dask.array as da
import numpy as np
from hypothesis import assume
from hypothesis import strategies as st

import avgpool
from avgpool.window import Window

__all__ = ["SUM_ULPS", "arrays_and_windows", "assert_sums_close", "chunks_of", "da", "taps"]

#: How many float64 roundings, per tap, two sums of the same cells in another order may
#: differ by, in units of the largest window's magnitude: the NumPy kernels' running sums
#: slide along a row of windows, carrying rounding from the windows before (restarted every
#: 32 rows), so a small window next to large ones carries their rounding too.
SUM_ULPS = 8


def assert_sums_close(actual, expected, magnitude, taps):
    """``actual`` equals ``expected`` up to reordering float64 sums of ``taps`` terms:
    ``SUM_ULPS * taps`` roundings of the largest ``magnitude`` (each output's sum of absolute
    values over its divisor), NaN where ``expected`` has NaN."""
    assert actual.shape == expected.shape and actual.dtype == expected.dtype
    assert (np.isnan(actual) == np.isnan(expected)).all()
    largest = np.max(np.abs(magnitude), initial=0.0)
    bound = SUM_ULPS * taps * np.finfo(np.float64).eps * largest
    diff = np.abs(np.where(np.isnan(expected), 0.0, actual - expected))
    assert (diff <= bound).all(), f"largest difference {np.max(diff)}, allowed {bound}"


@st.composite
def chunks_of(draw, n: int) -> tuple[int, ...]:
    """A chunking of an axis of ``n`` cells: often cells of 1, often smaller than a window."""
    style = draw(st.sampled_from(["ones", "even", "random", "whole"]))
    if style == "ones" or n == 1:
        return (1,) * n
    if style == "whole":
        return (n,)
    if style == "even":
        size = draw(st.integers(1, n))
        return (size,) * (n // size) + ((n % size,) if n % size else ())
    cuts = sorted(draw(st.sets(st.integers(1, n - 1), max_size=min(n - 1, 6))))
    return tuple(b - a for a, b in zip([0, *cuts], [*cuts, n]))


@st.composite
def arrays_and_windows(draw, avg: bool = True, int_ok: bool = False):
    """(x as NumPy, the same as Dask with drawn chunks, a Window): 1-3 spatial axes, either
    layout, batched or not, any padding (pairs, 'same', 'same_lower'), ceil mode, dilation."""
    ndim = draw(st.integers(1, 3))
    longest = {1: 30, 2: 14, 3: 7}[ndim]
    spatial = tuple(draw(st.integers(1, longest)) for _ in range(ndim))
    channels_last = draw(st.booleans())
    batched = draw(st.booleans())
    n, c = draw(st.integers(1, 2)), draw(st.integers(1, 3))
    kernel = tuple(draw(st.integers(1, 5)) for _ in range(ndim))
    stride = tuple(draw(st.integers(1, 4)) for _ in range(ndim))
    dilation = tuple(draw(st.sampled_from([1, 1, 2])) for _ in range(ndim))
    mode = draw(st.sampled_from(["pairs", "pairs", "same", "same_lower"]))
    padding = (
        mode
        if mode != "pairs"
        else tuple((draw(st.integers(0, 3)), draw(st.integers(0, 3))) for _ in range(ndim))
    )
    options = dict(dilation=dilation, ceil_mode=draw(st.booleans()), channels_last=channels_last, ndim=ndim)
    if avg:
        options["count_include_pad"] = draw(st.booleans())
        options["divisor_override"] = draw(st.sampled_from([None, None, None, 3, -2]))
    window = Window(kernel, stride, padding, **options)
    full = (n, *spatial, c) if channels_last else (n, c, *spatial)
    shape = full if batched else full[1:]
    try:
        window.output_shape(shape)
    except avgpool.AvgPoolError:
        assume(False)
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    dtype = draw(st.sampled_from([np.int32, np.float64])) if int_ok else np.float64
    x = (rng.standard_normal(shape) * 10).astype(dtype) if dtype != np.float64 else rng.standard_normal(shape)
    chunks = tuple(draw(chunks_of(s)) for s in shape)
    return x, da.from_array(x, chunks=chunks), window


def taps(window: Window) -> int:
    return math.prod(window.kernel_size)
