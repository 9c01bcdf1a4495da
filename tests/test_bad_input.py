"""Careless input to the NumPy ops: a clear AvgPoolError or TypeError, or the right answer."""

import numpy as np
import pytest

import avgpool as ap


@pytest.mark.parametrize(
    "call",
    [
        lambda x: ap.adaptive_avg_pool(x, 2),
        lambda x: ap.adaptive_max_pool(x, 2),
        lambda x: ap.blur_pool(x, 3),
        lambda x: ap.adaptive_avg_pool_backward(np.ones((2, 2)), x.shape),
        lambda x: ap.adaptive_max_pool_backward(np.ones((2, 2)), x),
        lambda x: ap.blur_pool_backward(np.ones((2, 3)), x.shape, 3),
        lambda x: ap.global_avg_pool(x),
    ],
)
@pytest.mark.parametrize("shape", [(2, 5), (5,)])
def test_an_input_without_batch_and_channel_axes_needs_ndim(call, shape):
    with pytest.raises(ap.AvgPoolError, match=r"spatial rank must be 1, 2 or 3|ndim"):
        call(np.arange(float(np.prod(shape))).reshape(shape))


def test_with_ndim_a_2d_input_is_one_unbatched_signal_per_row():
    x = np.arange(10.0).reshape(2, 5)
    np.testing.assert_array_equal(ap.adaptive_avg_pool(x, 2, ndim=1), [[1.0, 3.0], [6.0, 8.0]])
    np.testing.assert_array_equal(ap.adaptive_avg_pool1d(x, 2), [[1.0, 3.0], [6.0, 8.0]])


@pytest.mark.parametrize("pool", [ap.avg_pool, ap.max_pool])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_out_may_be_the_input_itself(pool, dtype):
    y = np.arange(16.0, dtype=dtype).reshape(1, 1, 4, 4)
    expected = pool(y, 3, 1, 1)
    assert pool(y, 3, 1, 1, out=y) is y
    np.testing.assert_array_equal(y, expected)


def test_out_may_overlap_the_input():
    x = np.arange(32.0).reshape(1, 2, 4, 4)
    expected = ap.avg_pool(x[:, :1], 2, 1)
    out = x[:, 1:, 1:, 1:]  # a view into the same buffer, of the output's shape
    ap.avg_pool(x[:, :1], 2, 1, out=np.ascontiguousarray(out))  # separate memory: no copy needed
    target = x.reshape(-1)[:9].reshape(1, 1, 3, 3)
    assert ap.avg_pool(x[:, :1], 2, 1, out=target) is target
    np.testing.assert_array_equal(target, expected)


def test_a_read_only_out_is_refused():
    out = np.zeros((1, 1, 2, 2))
    out.flags.writeable = False
    with pytest.raises(ap.AvgPoolError, match="out must be a writeable array"):
        ap.avg_pool(np.zeros((1, 1, 4, 4)), 2, out=out)


def test_masked_arrays_are_refused():
    x = np.ma.masked_array(np.ones((1, 1, 2, 2)), mask=[[[[True, False], [False, False]]]])
    for call in (lambda: ap.avg_pool(x, 2), lambda: ap.max_pool(x, 2), lambda: ap.adaptive_avg_pool(x, 1)):
        with pytest.raises(TypeError, match=r"masked array.*filled"):
            call()


def test_numpy_bools_are_bools():
    x = np.arange(25.0).reshape(1, 1, 5, 5)
    np.testing.assert_array_equal(
        ap.avg_pool(x, 2, ceil_mode=np.True_, count_include_pad=np.False_),
        ap.avg_pool(x, 2, ceil_mode=True, count_include_pad=False),
    )
    with pytest.raises(TypeError, match="ceil_mode must be a bool"):
        ap.avg_pool(x, 2, ceil_mode="yes")
    with pytest.raises(TypeError, match="kernel_size must be an int"):
        ap.avg_pool(x, np.True_)


@pytest.mark.parametrize("op", ["avg", "max", "lp", "adaptive_avg", "adaptive_max", "blur"])
@pytest.mark.parametrize("shape", [(1, 4, 4, 0), (0, 4, 4, 3), (1, 0, 4, 4)])
def test_empty_batches_and_channels_give_empty_results(op, shape):
    cl = shape[-1] != 4
    x = np.zeros(shape, np.float32)
    calls = {
        "avg": lambda: ap.avg_pool(x, 2, channels_last=cl),
        "max": lambda: ap.max_pool(x, 2, channels_last=cl),
        "lp": lambda: ap.lp_pool(x, 2, 2, channels_last=cl),
        "adaptive_avg": lambda: ap.adaptive_avg_pool(x, 2, channels_last=cl),
        "adaptive_max": lambda: ap.adaptive_max_pool(x, 2, channels_last=cl),
        "blur": lambda: ap.blur_pool(x, 2, channels_last=cl),
    }
    y = calls[op]()
    n, c = (shape[0], shape[-1]) if cl else shape[:2]
    expected = (n, 2, 2, c) if cl else (n, c, 2, 2)
    assert y.shape == expected and y.dtype == np.float32


def test_lp_pool_convention_errors_are_avgpool_errors():
    with pytest.raises(ap.AvgPoolError, match="convention must be 'torch' or 'onnx'"):
        ap.lp_pool(np.zeros((1, 1, 4, 4)), 2, 2, convention="tensorflow")


def test_adaptive_average_near_float64_overflow_is_the_kernels_and_the_references():
    x = np.full((1, 2, 6, 6), 1.5e308)
    y = ap.adaptive_avg_pool(x, 4)
    with ap.use_backend("reference"):
        expected = ap.adaptive_avg_pool(x, 4)
    np.testing.assert_array_equal(y, expected)
    np.testing.assert_allclose(y, 1.5e308, rtol=1e-15)


@pytest.mark.parametrize("layout", ["channels_first", "channels_last"])
def test_float64_averages_overflow_as_pytorch_and_the_reference_do(layout):
    cl = layout == "channels_last"
    x = np.full((1, 8, 8, 2) if cl else (1, 2, 8, 8), 1.5e308)
    for kernel in (2, 3, 7):
        y = ap.avg_pool(x, kernel, 1, channels_last=cl)
        with ap.use_backend("reference"):
            expected = ap.avg_pool(x, kernel, 1, channels_last=cl)
        assert np.isinf(y).all() and np.isinf(expected).all()


@pytest.mark.parametrize("cl", [False, True])
def test_a_blur_gradient_of_the_wrong_spatial_shape_is_refused(cl):
    shape = (1, 8, 8, 2) if cl else (1, 2, 8, 8)
    good = ap.blur_pool(np.ones(shape), 3, 2, channels_last=cl).shape
    assert ap.blur_pool_backward(np.ones(good), shape, 3, 2, channels_last=cl).shape == shape
    bad = (1, 5, 4, 2) if cl else (1, 2, 5, 4)
    with pytest.raises(ap.AvgPoolError, match=r"grad_output must have the forward output's shape"):
        ap.blur_pool_backward(np.ones(bad), shape, 3, 2, channels_last=cl)
