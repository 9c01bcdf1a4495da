"""Edge cases: empty batches, empty chunks, integer and low-precision maxima, the float64
reference backend."""

import pytest

pytest.importorskip("dask")

import numpy as np
from numpy.testing import assert_array_equal

import avgpool
import avgpool.dask as apd
from avgpool.window import Window
from tests.dask._cases import assert_sums_close, da

OPS = {
    "avg": lambda a: avgpool.avg_pool(a, 3, 2, 1),
    "max": lambda a: avgpool.max_pool(a, 3, 2, 1, return_indices=True)[1],
    "max_backward": lambda a: avgpool.max_pool_backward(avgpool.max_pool(a, 3, 2, 1), a, 3, 2, 1),
    "blur": lambda a: avgpool.blur_pool(a, 4, 2),
    "blur_backward": lambda a: avgpool.blur_pool_backward(avgpool.blur_pool(a, 3), a.shape, 3),
    "adaptive_avg": lambda a: avgpool.adaptive_avg_pool(a, 4),
    "adaptive_max": lambda a: avgpool.adaptive_max_pool(a, 4, True)[1],
    "global_max": lambda a: avgpool.global_max_pool(a),
    "global_max_index": lambda a: avgpool.max_pool(a, window=Window(None, ndim=2), return_indices=True)[1],
}


@pytest.mark.parametrize("op", list(OPS.values()), ids=list(OPS))
def test_empty_batches_and_empty_chunks(op):
    empty = np.zeros((0, 3, 10, 9))
    assert op(da.from_array(empty, chunks=2)).compute().shape == op(empty).shape
    x = np.random.default_rng(0).standard_normal((2, 3, 10, 9))
    dx = da.from_array(x, chunks=((1, 1), (3,), (3, 0, 7), (4, 0, 5)))  # chunks of no cell
    expected = op(x)
    assert_sums_close(op(dx).compute(), expected, np.abs(expected) + 1, 16)


@pytest.mark.parametrize("dtype", [np.int8, np.uint8, np.int32, np.int64, np.float16, np.float32])
def test_maxima_of_every_dtype_are_exact(dtype):
    x = np.random.default_rng(0).integers(-100, 100, (2, 3, 13, 11)).astype(dtype)
    dx = da.from_array(x, chunks=(1, 2, 4, 3))
    assert_array_equal(apd.max_pool(dx, 3, 2, 1).compute(), avgpool.max_pool(x, 3, 2, 1))
    assert_array_equal(apd.adaptive_max_pool(dx, 5).compute(), avgpool.adaptive_max_pool(x, 5))
    assert_array_equal(apd.global_max_pool(dx).compute(), avgpool.global_max_pool(x))


def test_under_the_reference_backend():
    """The float64 reference sums with NumPy's reductions, whose order follows the array's
    shape: maxima stay exact, sums agree within the usual roundings."""
    x = np.round(np.random.default_rng(0).standard_normal((2, 3, 13, 11)), 1)
    dx = da.from_array(x, chunks=(1, 2, 4, 3))
    with avgpool.use_backend("reference"):
        for name, op in OPS.items():
            expected = op(x)
            if "max" in name:
                assert_array_equal(op(dx).compute(), expected)
            else:
                assert_sums_close(op(dx).compute(), expected, np.abs(expected) + 1, 16)
