"""The exact ops on arrays larger than the kernels' small-plane limits (whole planes take other
kernels than their blocks), with ties and NaN: bit for bit the NumPy op's."""

import pytest

pytest.importorskip("dask")


import numpy as np
import pytest
from numpy.testing import assert_array_equal

import avgpool
import avgpool.dask as apd
from tests.dask._cases import da


@pytest.fixture(params=[(False, 7), (False, 16), (True, 9)], ids=["first-7", "first-16", "last-9"])
def case(request):
    channels_last, chunk = request.param
    rng = np.random.default_rng(chunk)
    shape = (1, 70, 90, 2) if channels_last else (1, 2, 70, 90)
    x = np.round(rng.standard_normal(shape), 1)  # ties
    with_nan = x.copy()
    with_nan[rng.random(shape) < 0.02] = np.nan
    return x, with_nan, chunk, dict(channels_last=channels_last), rng


def test_max_pooling_and_gradient(case):
    _, x, chunk, options, rng = case
    dx = da.from_array(x, chunks=chunk)
    for args in [(3, 2, 1), ((2, 7), (1, 3), (1, 2)), (5, 5, 0)]:
        y, index = avgpool.max_pool(x, *args, return_indices=True, **options)
        dy, dindex = apd.max_pool(dx, *args, return_indices=True, **options)
        assert_array_equal(dy.compute(), y)
        assert_array_equal(dindex.compute(), index)
        g = rng.standard_normal(y.shape)
        dg = da.from_array(g, chunks=chunk)
        expected = avgpool.max_pool_backward(g, x, *args, **options)
        assert_array_equal(apd.max_pool_backward(dg, dx, *args, **options).compute(), expected)


def test_blur_and_uneven_adaptive_pooling_and_gradients(case):
    x, with_nan, chunk, options, rng = case
    dx = da.from_array(x, chunks=chunk)
    for filt_size, stride, pad_type in [(4, 2, "reflect"), (3, 1, "zero"), (7, 3, "replicate")]:
        y = avgpool.blur_pool(x, filt_size, stride, pad_type=pad_type, **options)
        assert_array_equal(apd.blur_pool(dx, filt_size, stride, pad_type=pad_type, **options).compute(), y)
        g = rng.standard_normal(y.shape)
        dg = da.from_array(g, chunks=chunk)
        expected = avgpool.blur_pool_backward(g, x.shape, filt_size, stride, pad_type=pad_type, **options)
        actual = apd.blur_pool_backward(dg, x.shape, filt_size, stride, pad_type=pad_type, **options)
        assert_array_equal(actual.compute(), expected)
    out = (13, 17)
    y = avgpool.adaptive_avg_pool(x, out, **options)
    assert_array_equal(apd.adaptive_avg_pool(dx, out, **options).compute(), y)
    g = rng.standard_normal(y.shape)
    dg = da.from_array(g, chunks=chunk)
    expected = avgpool.adaptive_avg_pool_backward(g, x.shape, **options)
    assert_array_equal(apd.adaptive_avg_pool_backward(dg, x.shape, **options).compute(), expected)
    dn = da.from_array(with_nan, chunks=chunk)
    y, index = avgpool.adaptive_max_pool(with_nan, out, True, **options)
    dy, dindex = apd.adaptive_max_pool(dn, out, True, **options)
    assert_array_equal(dy.compute(), y)
    assert_array_equal(dindex.compute(), index)
    expected = avgpool.adaptive_max_pool_backward(g, with_nan, **options)
    assert_array_equal(apd.adaptive_max_pool_backward(dg, dn, **options).compute(), expected)
