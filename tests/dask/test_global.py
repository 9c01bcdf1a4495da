"""Global pooling of Dask arrays: reductions chunk by chunk."""

import pytest

pytest.importorskip("dask")


import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.testing import assert_array_equal

import avgpool
import avgpool.dask as apd
from avgpool.window import Window
from tests.dask._cases import assert_sums_close, da
from tests.dask.test_taps import _grad_like, arrays

SETTINGS = settings(max_examples=40, deadline=None)


@SETTINGS
@given(arrays(), st.booleans(), st.data())
def test_global_pooling_and_gradients(case, keepdims, data):
    x, dx, ndim, cl = case
    options = dict(ndim=ndim, channels_last=cl)
    expected = avgpool.global_avg_pool(x, keepdims=keepdims, **options)
    # whole planes fit a task: the NumPy op's own sums
    assert_array_equal(apd.global_avg_pool(dx, keepdims=keepdims, **options).compute(), expected)
    expected = avgpool.global_max_pool(x, keepdims=keepdims, **options)
    assert_array_equal(apd.global_max_pool(dx, keepdims=keepdims, **options).compute(), expected)

    g, dg = _grad_like(expected, data.draw)
    grad = apd.global_avg_pool_backward(dg, x.shape, **options)
    assert grad.shape == x.shape
    assert_array_equal(grad.compute(), avgpool.global_avg_pool_backward(g, x.shape, **options))
    grad = apd.global_max_pool_backward(dg, dx, **options).compute()
    assert_array_equal(grad, avgpool.global_max_pool_backward(g, x, **options))

    window = Window(None, ndim=ndim, channels_last=cl)
    y, index = apd.max_pool(dx, window=window, return_indices=True)
    expected, expected_index = avgpool.max_pool(x, window=window, return_indices=True)
    assert_array_equal(y.compute(), expected)
    assert_array_equal(index.compute(), expected_index)


@pytest.mark.parametrize("policy", ["propagate", "omit"])
def test_global_max_ties_nan_and_infinities_pick_the_numpy_cell(policy):
    """Ties go to the first cell in row-major order, NaN (propagated) to the last NaN, a plane
    of -inf to its first cell, whichever chunks hold them."""
    x = np.array(
        [
            [[1.0, 3.0, 3.0, 0.0], [3.0, 2.0, 1.0, 3.0]],
            [[np.nan, 1.0, 2.0, np.nan], [0.0, np.nan, 5.0, 1.0]],
            [[-np.inf] * 4, [-np.inf] * 4],
            [[np.nan] * 4, [-np.inf] * 4],
        ]
    )[None]
    window = Window(None, ndim=2)
    for chunks in [(1, 1, 1, 1), (1, 1, 2, 3), (1, 4, 2, 4)]:
        y, index = apd.max_pool(
            da.from_array(x, chunks=chunks), window=window, return_indices=True, nan_policy=policy
        )
        expected, expected_index = avgpool.max_pool(x, window=window, return_indices=True, nan_policy=policy)
        assert_array_equal(y.compute(), expected)
        assert_array_equal(index.compute(), expected_index)


def test_planes_too_large_for_a_task_are_summed_chunk_by_chunk(monkeypatch):
    from avgpool.dask import _global

    x = np.random.default_rng(2).standard_normal((2, 3, 40, 50))
    dx = da.from_array(x, chunks=(1, 3, 16, 16))
    expected = avgpool.global_avg_pool(x)
    exact = apd.global_avg_pool(dx)
    assert any("rechunk" in str(k) for k in dict(exact.dask))  # gathered into whole planes
    assert_array_equal(exact.compute(), expected)
    monkeypatch.setattr(_global, "PLANE_TASK_BYTES", 3 * 40 * 50 * 8 - 1)  # one plane set too many
    chunked = apd.global_avg_pool(dx)
    assert not any("rechunk" in str(k) for k in dict(chunked.dask))  # no task gathers a plane
    assert_sums_close(chunked.compute(), expected, avgpool.global_avg_pool(np.abs(x)), 40 * 50)
