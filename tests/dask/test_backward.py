"""Gradients of the windowed ops on Dask arrays against the NumPy op's, on every chunking drawn."""

import pytest

pytest.importorskip("dask")


import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.testing import assert_array_equal

import avgpool
from tests.dask._cases import arrays_and_windows, assert_sums_close, chunks_of, da, taps

SETTINGS = settings(max_examples=40, deadline=None)


def _grad(draw, shape):
    g = np.random.default_rng(draw(st.integers(0, 2**16))).standard_normal(shape)
    return g, da.from_array(g, chunks=tuple(draw(chunks_of(s)) for s in shape))


def _covering(window) -> int:
    """The most windows that cover one cell."""
    spans = [d * (k - 1) + 1 for k, d in zip(window.kernel_size, window.dilation)]
    return math.prod(-(-s // st_) for s, st_ in zip(spans, window.stride))


@SETTINGS
@given(arrays_and_windows(), st.data())
def test_avg_pool_backward_within_reordered_sums(case, data):
    x, _, window = case
    g, dg = _grad(data.draw, avgpool.avg_pool(x, window=window).shape)
    y = avgpool.avg_pool_backward(dg, x.shape, window=window)
    assert isinstance(y, da.Array) and y.shape == x.shape
    expected = avgpool.avg_pool_backward(g, x.shape, window=window)
    magnitude = avgpool.avg_pool_backward(np.abs(g), x.shape, window=window)
    assert_sums_close(y.compute(), expected, magnitude, _covering(window))


@SETTINGS
@given(arrays_and_windows(avg=False), st.data())
def test_max_pool_backward_is_exact(case, data):
    x, dx, window = case
    _, index = avgpool.max_pool(x, window=window, return_indices=True)
    g, dg = _grad(data.draw, index.shape)
    expected = avgpool.max_pool_backward(g, x, window=window)
    assert_array_equal(avgpool.max_pool_backward(dg, dx, window=window).compute(), expected)
    _, dindex = avgpool.max_pool(dx, window=window, return_indices=True)
    given_index = avgpool.max_pool_backward(dg, dx, window=window, indices=dindex)
    assert_array_equal(given_index.compute(), expected)
    assert_array_equal(avgpool.max_pool_backward(dg, dx, window=window, indices=index).compute(), expected)


@SETTINGS
@given(arrays_and_windows(avg=False), st.sampled_from([1.0, 2.0, 3.0]), st.sampled_from(["torch", "onnx"]))
def test_lp_pool_and_its_gradient_within_reordered_sums(case, p, convention):
    x, dx, window = case
    x, dx = np.abs(x) + 0.5, abs(dx) + 0.5  # positive: a 1/p power of a rounding residue is NaN
    expected = avgpool.lp_pool(x, p, window=window, convention=convention)
    actual = avgpool.lp_pool(dx, p, window=window, convention=convention).compute()
    assert_sums_close(actual, expected, expected, taps(window))
    g = np.ones_like(expected)
    dg = da.from_array(g, chunks=3)
    actual = avgpool.lp_pool_backward(dg, dx, p, window=window, convention=convention).compute()
    reference = avgpool.lp_pool_backward(g, x, p, window=window, convention=convention)
    magnitude = np.abs(reference) + np.abs(avgpool.max_pool_backward(g, x, window=window))
    assert_sums_close(actual, reference, magnitude, 4 * _covering(window))
