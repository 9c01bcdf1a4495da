"""Refusals: the NumPy op's errors, word for word, raised when the op is called (before any
compute), and the Dask backend's own (unknown chunk sizes, ``out=``, other arrays)."""

import pytest

pytest.importorskip("dask")


import re

import numpy as np
import pytest

import avgpool
import avgpool.dask as apd
from avgpool import AvgPoolError
from tests.dask._cases import da


def _boom(block):
    raise AssertionError("computed")


def _lazy(x: np.ndarray, chunks=2):
    """``x`` as a Dask array whose compute fails: an error must come from shapes alone."""
    return da.from_array(x, chunks=chunks).map_blocks(_boom, dtype=x.dtype)


X = np.zeros((1, 2, 5, 5))
G = np.zeros((1, 2, 2, 2))

CASES = [
    ("kernel 0", lambda m, x: m.avg_pool(x, 0)),
    ("no window fits", lambda m, x: m.avg_pool(x, 7)),
    ("negative padding", lambda m, x: m.max_pool(x, 2, padding=-1)),
    ("both window and kernel", lambda m, x: m.avg_pool(x, 2, window=avgpool.Window(2, ndim=2))),
    ("torch refusal", lambda m, x: m.avg_pool2d(x, 2, padding=2)),
    ("nan_policy", lambda m, x: m.max_pool(x, 2, nan_policy="skip")),
    ("norm_type", lambda m, x: m.lp_pool(x, -1.0, 2)),
    ("blur reflect longer than input", lambda m, x: m.blur_pool(x, 7, 2, pad_off=2)),
    ("blur filt_size", lambda m, x: m.blur_pool(x, 9)),
    ("adaptive output 0", lambda m, x: m.adaptive_avg_pool(x, 0)),
    ("rank", lambda m, x: m.avg_pool(x, (2, 2, 2, 2))),
]


@pytest.mark.parametrize("call", [c for _, c in CASES], ids=[n for n, _ in CASES])
def test_argument_errors_are_the_numpy_ops(call):
    with pytest.raises((AvgPoolError, TypeError)) as numpy_error:
        call(avgpool, X)
    with pytest.raises(type(numpy_error.value), match=re.escape(str(numpy_error.value))):
        call(avgpool, _lazy(X))


GRAD_CASES = [
    ("avg grad shape", lambda m, g, x: m.avg_pool_backward(g, x.shape, 3)),
    ("max grad shape", lambda m, g, x: m.max_pool_backward(g, x, 3)),
    ("lp grad shape", lambda m, g, x: m.lp_pool_backward(g, x, 2.0, 3)),
    ("adaptive grad shape", lambda m, g, x: m.adaptive_avg_pool_backward(g, (1, 2, 5))),
]


@pytest.mark.parametrize("call", [c for _, c in GRAD_CASES], ids=[n for n, _ in GRAD_CASES])
def test_gradient_shape_errors_are_the_numpy_ops(call):
    with pytest.raises(AvgPoolError) as numpy_error:
        call(avgpool, G, X)
    with pytest.raises(AvgPoolError, match=re.escape(str(numpy_error.value))):
        call(avgpool, _lazy(G), _lazy(X))


def test_blur_gradient_of_another_shape_is_refused():
    with pytest.raises(
        AvgPoolError, match=r"grad_output must have the forward output's shape \(1, 2, 5, 5\)"
    ):
        apd.blur_pool_backward(_lazy(G), X.shape, 3, 1)


def test_dtype_errors_are_the_numpy_ops():
    x = np.zeros((1, 1, 4, 4), np.int32)
    with pytest.raises(TypeError) as numpy_error:
        avgpool.avg_pool(x, 2)
    with pytest.raises(TypeError, match=re.escape(str(numpy_error.value))):
        avgpool.avg_pool(_lazy(x), 2)
    c = np.zeros((1, 1, 4, 4), np.complex128)
    with pytest.raises(TypeError) as numpy_error:
        avgpool.max_pool(c, 2)
    with pytest.raises(TypeError, match=re.escape(str(numpy_error.value))):
        avgpool.max_pool(_lazy(c), 2)


def test_unknown_chunk_sizes_are_refused_naming_the_argument():
    x = da.from_array(np.arange(8.0), chunks=4)
    unknown = x[x > 2][None, None]
    assert np.isnan(unknown.chunks[-1][0])
    with pytest.raises(AvgPoolError, match=r"input has unknown chunk sizes \(NaN\).*compute_chunk_sizes"):
        apd.avg_pool(unknown, 2)
    known = da.from_array(np.zeros((1, 1, 2)), chunks=1)
    with pytest.raises(AvgPoolError, match=r"grad_output has unknown chunk sizes"):
        apd.avg_pool_backward(unknown, (1, 1, 10), 2)
    with pytest.raises(AvgPoolError, match=r"input has unknown chunk sizes"):
        apd.max_pool_backward(known, unknown, 2)


def test_other_arrays_and_out_are_refused():
    with pytest.raises(TypeError, match=r"input must be a dask\.array\.Array, got ndarray"):
        apd.avg_pool(X, 2)
    with pytest.raises(AvgPoolError, match="out must be None for Dask arrays"):
        apd.avg_pool(da.from_array(X), 2, out=np.zeros((1, 2, 2, 2)))
    x = da.from_array(X, chunks=2)
    g = apd.max_pool(x, 2)
    with pytest.raises(TypeError, match="indices must be an integer Dask or NumPy array"):
        apd.max_pool_backward(g, x, 2, indices=np.zeros(g.shape))
    with pytest.raises(AvgPoolError, match=r"indices must have grad_output's shape \(1, 2, 2, 2\)"):
        apd.max_pool_backward(g, x, 2, indices=np.zeros((1, 2, 2), np.int64))


def test_indices_out_of_range_are_refused_when_computed():
    x = da.from_array(X, chunks=2)
    g = apd.max_pool(x, 2)
    wrong = da.full(g.shape, 25, dtype=np.int64, chunks=1)
    with pytest.raises(AvgPoolError, match=r"indices must lie in \[-1, 25\)"):
        apd.max_pool_backward(g, x, 2, indices=wrong).compute()
