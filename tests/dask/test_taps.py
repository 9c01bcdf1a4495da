"""Blur and adaptive pooling of Dask arrays, and their gradients: bit for bit the NumPy op's."""

import pytest

pytest.importorskip("dask")


import numpy as np
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from numpy.testing import assert_array_equal

import avgpool
import avgpool.dask as apd
from tests.dask._cases import assert_sums_close, chunks_of, da

SETTINGS = settings(max_examples=40, deadline=None)


@st.composite
def arrays(draw, longest=(24, 12, 6)):
    """(x, x as Dask with drawn chunks, spatial rank, channels_last): batched, float64."""
    ndim = draw(st.integers(1, 3))
    spatial = tuple(draw(st.integers(1, longest[ndim - 1])) for _ in range(ndim))
    channels_last = draw(st.booleans())
    n, c = draw(st.integers(1, 2)), draw(st.integers(1, 3))
    shape = (n, *spatial, c) if channels_last else (n, c, *spatial)
    x = np.random.default_rng(draw(st.integers(0, 2**16))).standard_normal(shape)
    chunks = tuple(draw(chunks_of(s)) for s in shape)
    return x, da.from_array(x, chunks=chunks), ndim, channels_last


def _spatial(x, ndim, channels_last):
    return x.shape[1:-1] if channels_last else x.shape[2:]


def _grad_like(y, draw):
    g = np.random.default_rng(draw(st.integers(0, 2**16))).standard_normal(y.shape)
    return g, da.from_array(g, chunks=tuple(draw(chunks_of(s)) for s in y.shape))


@SETTINGS
@given(
    arrays(),
    st.integers(1, 7),
    st.integers(1, 3),
    st.sampled_from(["reflect", "replicate", "zero"]),
    st.data(),
)
def test_blur_pool_and_its_gradient_are_exact(case, filt_size, stride, pad_type, data):
    x, dx, _ndim, cl = case
    pad_off = data.draw(st.integers(0, 1))
    options = dict(pad_type=pad_type, pad_off=pad_off, channels_last=cl)
    try:
        expected = avgpool.blur_pool(x, filt_size, stride, **options)
    except avgpool.AvgPoolError:  # reflect padding longer than the input
        assume(False)
    assert_array_equal(apd.blur_pool(dx, filt_size, stride, **options).compute(), expected)
    g, dg = _grad_like(expected, data.draw)
    actual = apd.blur_pool_backward(dg, x.shape, filt_size, stride, **options).compute()
    assert_array_equal(actual, avgpool.blur_pool_backward(g, x.shape, filt_size, stride, **options))


@SETTINGS
@given(arrays(), st.data())
def test_adaptive_pooling_and_gradients(case, data):
    x, dx, ndim, cl = case
    out = tuple(data.draw(st.integers(1, n)) for n in _spatial(x, ndim, cl))
    even = all(n % o == 0 for n, o in zip(_spatial(x, ndim, cl), out))
    y, index = apd.adaptive_max_pool(dx, out, True, channels_last=cl)
    expected, expected_index = avgpool.adaptive_max_pool(x, out, True, channels_last=cl)
    assert_array_equal(y.compute(), expected)
    assert_array_equal(index.compute(), expected_index)
    g, dg = _grad_like(expected, data.draw)
    actual = apd.adaptive_max_pool_backward(dg, dx, channels_last=cl).compute()
    assert_array_equal(actual, avgpool.adaptive_max_pool_backward(g, x, channels_last=cl))

    expected = avgpool.adaptive_avg_pool(x, out, channels_last=cl)
    actual = apd.adaptive_avg_pool(dx, out, channels_last=cl).compute()
    grad = apd.adaptive_avg_pool_backward(dg, x.shape, channels_last=cl).compute()
    expected_grad = avgpool.adaptive_avg_pool_backward(g, x.shape, channels_last=cl)
    if even:  # a plain window (kernel = stride = size / output): the box kernels' running sums
        taps = int(np.prod([n // o for n, o in zip(_spatial(x, ndim, cl), out)]))
        assert_sums_close(actual, expected, avgpool.adaptive_avg_pool(np.abs(x), out, channels_last=cl), taps)
        magnitude = avgpool.adaptive_avg_pool_backward(np.abs(g), x.shape, channels_last=cl)
        assert_sums_close(grad, expected_grad, magnitude, 1)
    else:
        assert_array_equal(actual, expected)
        assert_array_equal(grad, expected_grad)


def test_blur_reflects_the_real_neighbouring_cells():
    """Cells 0 1 2 3 4 5 in chunks of 2: the block at cell 2 reads its neighbours 1 and 3, and
    only the blocks at the array's ends reflect (cell -1 is cell 1, cell 6 is cell 4)."""
    x = np.array([[[0.0, 8.0, 0.0, 0.0, 4.0, 0.0]]])
    y = apd.blur_pool1d(da.from_array(x, chunks=2), 3, 1).compute()
    assert_array_equal(y, [[[4.0, 4.0, 2.0, 1.0, 2.0, 2.0]]])
    assert_array_equal(y, avgpool.blur_pool1d(x, 3, 1))
