"""The Dask ops against the NumPy ops on the same data, on every chunking drawn."""

import pytest

pytest.importorskip("dask")


import numpy as np
import pytest
from hypothesis import given, settings
from numpy.testing import assert_array_equal

import avgpool
import avgpool.dask as apd
from avgpool.window import Window
from tests.dask._cases import arrays_and_windows, assert_sums_close, da, taps

SETTINGS = settings(max_examples=60, deadline=None)


@SETTINGS
@given(arrays_and_windows())
def test_avg_pool_equals_numpy_within_reordered_sums(case):
    x, dx, window = case
    y = avgpool.avg_pool(dx, window=window)
    assert isinstance(y, da.Array)
    expected = avgpool.avg_pool(x, window=window)
    assert y.shape == expected.shape
    magnitude = avgpool.avg_pool(np.abs(x), window=window)
    assert_sums_close(y.compute(), expected, magnitude, taps(window))


@SETTINGS
@given(arrays_and_windows(avg=False, int_ok=True))
def test_max_pool_is_exact_with_indices_into_the_whole_input(case):
    x, dx, window = case
    y, index = avgpool.max_pool(dx, window=window, return_indices=True)
    expected, expected_index = avgpool.max_pool(x, window=window, return_indices=True)
    assert_array_equal(y.compute(), expected)
    assert_array_equal(index.compute(), expected_index)
    assert_array_equal(avgpool.max_pool(dx, window=window).compute(), expected)


def test_avg_pool_hand_worked():
    x = da.arange(16.0, chunks=3).reshape(1, 1, 4, 4).rechunk((1, 1, 1, 3))
    assert_array_equal(apd.avg_pool2d(x, 2).compute()[0, 0], [[2.5, 4.5], [10.5, 12.5]])


CONVENTIONS = [
    Window.from_tensorflow(3, 2, "SAME"),  # NHWC, count_include_pad False, odd pad at the end
    Window.from_tensorflow([1, 1, 3, 2], [1, 1, 2, 1], "SAME", "NCHW"),
    Window.from_onnx({"kernel_shape": [3, 2], "pads": [1, 0, 2, 1], "ceil_mode": 1}),
    Window.from_onnx({"kernel_shape": [3, 3], "strides": [2, 2], "auto_pad": "SAME_LOWER"}),
    Window.from_flax((3, 3), padding="SAME"),  # its averages count padded cells
    Window.from_torch(3, 2, 1, ceil_mode=True, count_include_pad=False, ndim=2),
]


@pytest.mark.parametrize("window", CONVENTIONS, ids=lambda w: w.convention)
@pytest.mark.parametrize("chunks", [1, 2, 5])
def test_every_convention_pools_like_numpy(window, chunks):
    shape = (2, 11, 9, 3) if window.channels_last else (2, 3, 11, 9)
    x = np.random.default_rng(0).standard_normal(shape)
    dx = da.from_array(x, chunks=chunks)
    expected = avgpool.avg_pool(x, window=window)
    magnitude = avgpool.avg_pool(np.abs(x), window=window)
    assert_sums_close(apd.avg_pool(dx, window=window).compute(), expected, magnitude, taps(window))
    y, index = apd.max_pool(dx, window=window, return_indices=True)
    expected, expected_index = avgpool.max_pool(x, window=window, return_indices=True)
    assert_array_equal(y.compute(), expected)
    assert_array_equal(index.compute(), expected_index)


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("channels_last", [False, True])
def test_low_precision_is_rounded_like_numpy(dtype, channels_last):
    """float16 and float32 results: max pooling exact; averages within one rounding of the
    result (the block may sum in float32 where the whole array sums in float64, or back)."""
    shape = (2, 37, 29, 3) if channels_last else (2, 3, 37, 29)
    x = np.random.default_rng(1).standard_normal(shape).astype(dtype)
    dx = da.from_array(x, chunks=(1, 5, 7, 2) if channels_last else (1, 2, 5, 7))
    options = dict(channels_last=channels_last)
    assert_array_equal(
        apd.max_pool(dx, 3, 2, 1, **options).compute(), avgpool.max_pool(x, 3, 2, 1, **options)
    )
    for args in [(3, 2, 1), (8, 1, 3), (2, 2, 0)]:
        y = apd.avg_pool(dx, *args, **options).compute()
        expected = avgpool.avg_pool(x, *args, **options)
        assert y.dtype == dtype
        magnitude = avgpool.avg_pool(np.abs(x).astype(np.float64), *args, **options)
        np.testing.assert_array_less(
            np.abs(y.astype(np.float64) - expected), 2 * np.finfo(dtype).eps * magnitude.max()
        )
