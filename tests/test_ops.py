"""The functional API: hand-worked values, dtypes, layouts, and what bad input gets."""

import numpy as np
import pytest

import avgpool as ap
from avgpool import AvgPoolError, Window

X44 = np.arange(16.0).reshape(1, 1, 4, 4)


def test_readme_example_4x4_to_2x2():
    # [[0 1 2 3] [4 5 6 7] [8 9 10 11] [12 13 14 15]], 2x2 windows, stride 2
    np.testing.assert_array_equal(ap.avg_pool2d(X44, 2)[0, 0], [[2.5, 4.5], [10.5, 12.5]])
    np.testing.assert_array_equal(ap.max_pool2d(X44, 2)[0, 0], [[5.0, 7.0], [13.0, 15.0]])


def test_padding_and_the_divisor_by_hand():
    # 3x3 window, stride 2, padding 1 on the 4x4 ramp. Top-left window holds {0, 1, 4, 5} and 5 pads.
    include = ap.avg_pool2d(X44, 3, 2, 1)
    exclude = ap.avg_pool2d(X44, 3, 2, 1, count_include_pad=False)
    override = ap.avg_pool2d(X44, 3, 2, 1, divisor_override=2)
    assert include[0, 0, 0, 0] == pytest.approx(10 / 9)
    assert exclude[0, 0, 0, 0] == pytest.approx(10 / 4)
    assert override[0, 0, 0, 0] == pytest.approx(10 / 2)
    # bottom-right window: rows 1..3, cols 1..3 (no pads)
    assert include[0, 0, 1, 1] == pytest.approx(np.mean(X44[0, 0, 1:4, 1:4]))


def test_ceil_mode_partial_window_by_hand():
    x = np.array([[[1.0, 2.0, 3.0, 4.0, 5.0]]])
    np.testing.assert_array_equal(ap.avg_pool1d(x, 2, ceil_mode=True), [[[1.5, 3.5, 5.0]]])
    np.testing.assert_array_equal(ap.avg_pool1d(x, 2, ceil_mode=False), [[[1.5, 3.5]]])


def test_asymmetric_same_padding_by_hand():
    x = np.array([[[1.0, 2.0, 3.0, 4.0]]])
    # 'same', k=3, s=2 on n=4: pads (0, 1); windows {1,2,3} and {3,4,pad}
    np.testing.assert_array_equal(ap.avg_pool(x, 3, 2, "same", count_include_pad=False), [[[2.0, 3.5]]])
    np.testing.assert_array_equal(ap.avg_pool(x, 3, 2, "same"), [[[2.0, 7.0 / 3]]])
    # 'same_lower' puts the pad first: {pad,1,2} and {2,3,4}
    np.testing.assert_array_equal(ap.avg_pool(x, 3, 2, "same_lower", count_include_pad=False), [[[1.5, 3.0]]])


def test_max_indices_are_flat_per_plane():
    x = np.array([[[[1.0, 9.0], [3.0, 4.0]], [[7.0, 0.0], [0.0, 8.0]]]])
    y, idx = ap.max_pool2d(x, 2, return_indices=True)
    np.testing.assert_array_equal(y.ravel(), [9.0, 8.0])
    np.testing.assert_array_equal(idx.ravel(), [1, 3])
    assert idx.dtype == np.int64


def test_lp_pool_by_hand():
    x = np.array([[[3.0, 4.0, -1.0, 1.0]]])
    np.testing.assert_allclose(ap.lp_pool1d(x, 2, 2), [[[5.0, np.sqrt(2)]]])
    # torch convention: p=1 is a plain window sum (signs kept); onnx takes |x|
    np.testing.assert_allclose(ap.lp_pool(x, 1, 2), [[[7.0, 0.0]]])
    np.testing.assert_allclose(ap.lp_pool(x, 1, 2, convention="onnx"), [[[7.0, 2.0]]])


def test_adaptive_and_global_by_hand():
    x = np.arange(6.0).reshape(1, 1, 6)
    np.testing.assert_array_equal(ap.adaptive_avg_pool1d(x, 3), [[[0.5, 2.5, 4.5]]])
    np.testing.assert_array_equal(ap.adaptive_max_pool1d(x, 4), [[[1.0, 2.0, 4.0, 5.0]]])
    assert ap.global_avg_pool(X44).shape == (1, 1, 1, 1)
    assert ap.global_avg_pool(X44, keepdims=False).tolist() == [[7.5]]
    assert ap.global_max_pool(X44, keepdims=False).tolist() == [[15.0]]


def test_blur_pool_by_hand():
    # filt_size 3 is [1, 2, 1] / 4; reflect padding 1 on each side; stride 2
    x = np.array([[[0.0, 4.0, 8.0, 4.0]]])
    # padded: [4, 0, 4, 8, 4, 8]; windows at 0 and 2: (4+0+4)/4 = 2, (4+16+4)/4 = 6
    np.testing.assert_array_equal(ap.blur_pool1d(x, 3), [[[2.0, 6.0]]])
    np.testing.assert_array_equal(ap.blur_pool1d(x, 3, pad_type="zero"), [[[1.0, 6.0]]])
    np.testing.assert_array_equal(ap.blur_pool1d(x, 1), x[..., ::2])


def test_backward_by_hand():
    g = np.ones((1, 1, 2, 2))
    np.testing.assert_array_equal(ap.avg_pool_backward(g, X44.shape, 2), np.full(X44.shape, 0.25))
    grad = ap.max_pool_backward(g, X44, 2)
    assert grad.sum() == 4.0 and grad[0, 0, 1, 1] == grad[0, 0, 3, 3] == 1.0


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_dtype_is_kept_and_rounded_once(dtype):
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(dtype)
    y = ap.avg_pool2d(x, 5, 2, 2)  # 25 taps: summed in float64
    assert y.dtype == dtype
    exact = ap.avg_pool2d(x.astype(np.float64), 5, 2, 2)
    np.testing.assert_array_equal(y, exact.astype(dtype))


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
@pytest.mark.parametrize("channels_last", [False, True])
def test_windows_of_few_taps_sum_in_float32_within_its_bound(dtype, channels_last):
    """Up to 9 taps (`_cpu_drivers.F32_SUM_TAPS`) float32 sums: within (taps + 3) x 2^-24 of the
    window's mean magnitude, then rounded to the dtype."""
    x = np.random.default_rng(0).standard_normal((2, 8, 8, 3) if channels_last else (2, 3, 8, 8))
    y = ap.avg_pool2d(x.astype(dtype), 3, 2, 1, channels_last=channels_last)
    assert y.dtype == dtype
    x64 = x.astype(dtype).astype(np.float64)
    exact = ap.avg_pool2d(x64, 3, 2, 1, channels_last=channels_last)
    magnitude = ap.avg_pool2d(np.abs(x64), 3, 2, 1, channels_last=channels_last)
    rounding = np.spacing(np.abs(y)).astype(np.float64) / 2 if dtype == np.float16 else 0.0
    assert (np.abs(y - exact) <= 12 * 2.0**-24 * magnitude + rounding).all()


def test_max_pool_takes_integers_exactly():
    x = np.array([[[0, 255, 7, 3]]], dtype=np.uint8)
    y = ap.max_pool1d(x, 2)
    assert y.dtype == np.uint8 and y.tolist() == [[[255, 7]]]


@pytest.mark.parametrize(
    ("fn", "kwargs"),
    [
        (ap.avg_pool, {"kernel_size": (2, 3), "stride": (1, 2), "padding": ((0, 1), (1, 1))}),
        (ap.max_pool, {"kernel_size": 3, "padding": 1, "dilation": 2}),
        (ap.lp_pool, {"norm_type": 2, "kernel_size": 2}),
    ],
)
def test_channels_last_equals_moved_axes(fn, kwargs):
    x = np.random.default_rng(1).standard_normal((2, 3, 7, 9))
    first = fn(x, **kwargs)
    last = fn(np.moveaxis(x, 1, -1).copy(), **kwargs, channels_last=True)
    # the kernels may add a window's taps in another order per layout: equal to rounding
    np.testing.assert_allclose(np.moveaxis(last, -1, 1), first, rtol=1e-13, atol=1e-15)


def test_unbatched_equals_batch_of_one():
    x = np.random.default_rng(2).standard_normal((3, 7, 9))
    np.testing.assert_array_equal(ap.avg_pool2d(x, 3, 2, 1), ap.avg_pool2d(x[None], 3, 2, 1)[0])


def test_empty_batch():
    x = np.zeros((0, 3, 6, 6))
    assert ap.avg_pool2d(x, 2).shape == (0, 3, 3, 3)
    assert ap.max_pool2d(x, 2, return_indices=True)[1].shape == (0, 3, 3, 3)
    assert ap.avg_pool_backward(np.zeros((0, 3, 3, 3)), x.shape, 2).shape == x.shape


def test_non_contiguous_and_negative_stride_inputs():
    x = np.random.default_rng(3).standard_normal((2, 3, 10, 12))
    view = x[:, :, ::-1, ::2]
    np.testing.assert_array_equal(ap.avg_pool2d(view, 2), ap.avg_pool2d(view.copy(), 2))


def test_window_argument_equals_geometry_arguments():
    x = np.random.default_rng(4).standard_normal((2, 3, 9))
    w = Window(3, 2, ((1, 2),), count_include_pad=False)
    np.testing.assert_array_equal(
        ap.avg_pool(x, window=w), ap.avg_pool(x, 3, 2, ((1, 2),), count_include_pad=False)
    )


def test_nan_and_inf_propagate():
    x = np.array([[[1.0, np.nan, 2.0, 3.0, np.inf, -np.inf]]])
    np.testing.assert_array_equal(ap.avg_pool1d(x, 2), [[[np.nan, 2.5, np.nan]]])
    np.testing.assert_array_equal(ap.max_pool1d(x, 2), [[[np.nan, 3.0, np.inf]]])


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (
            lambda: ap.avg_pool2d(np.zeros((1, 1, 4, 4), bool), 2),
            TypeError,
            "dtype must be one of .* got bool",
        ),
        (lambda: ap.avg_pool2d(np.zeros((1, 1, 4, 4), complex), 2), TypeError, "got complex128"),
        (lambda: ap.avg_pool2d(np.zeros((1, 1, 4, 4), object), 2), TypeError, "got object"),
        (lambda: ap.avg_pool2d(np.zeros((1, 1, 4, 4), np.int32), 2), TypeError, "got int32"),
        (lambda: ap.avg_pool2d("abc", 2), TypeError, "got <U3"),
        (lambda: ap.avg_pool2d({"x": 1}, 2), TypeError, "must be a NumPy array, got dict"),
        (lambda: ap.avg_pool2d(np.zeros((4, 4)), 2), AvgPoolError, r"4 dimensions .* or 3 \(unbatched\)"),
        (lambda: ap.avg_pool2d(np.zeros((1, 1, 4, 4)), 5), AvgPoolError, "no window fits"),
        (lambda: ap.avg_pool2d(np.zeros((1, 1, 4, 4)), 2.0), TypeError, "kernel_size must be an int"),
        (lambda: ap.avg_pool2d(np.zeros((1, 1, 0, 4)), 2), AvgPoolError, "spatial sizes must be >= 1"),
        (
            lambda: ap.avg_pool(np.zeros((1, 1, 4)), window=Window(2, ndim=1), kernel_size=2),
            AvgPoolError,
            "either",
        ),
        (lambda: ap.avg_pool(np.zeros((1, 1, 4))), AvgPoolError, "kernel_size is required"),
        (lambda: ap.avg_pool1d(np.zeros((1, 1, 4)), window=Window(2, ndim=2)), AvgPoolError, "pools 1-d"),
        (
            lambda: ap.avg_pool(np.zeros((1, 1, 4)), window="2x2"),
            TypeError,
            "window must be an avgpool.Window",
        ),
        (
            lambda: ap.lp_pool1d(np.zeros((1, 1, 4)), 0, 2),
            AvgPoolError,
            "norm_type must be a finite number > 0",
        ),
        (lambda: ap.lp_pool(np.zeros((1, 1, 4)), 2, 2, convention="tf"), ValueError, "'torch' or 'onnx'"),
        (
            lambda: ap.adaptive_avg_pool2d(np.zeros((1, 1, 4, 4)), (2, 0)),
            AvgPoolError,
            "output_size must be >= 1",
        ),
        (
            lambda: ap.adaptive_avg_pool2d(np.zeros((1, 1, 4, 4)), (2, 2, 2)),
            AvgPoolError,
            "output_size must be",
        ),
        (
            lambda: ap.blur_pool2d(np.zeros((1, 1, 4, 4)), 8),
            AvgPoolError,
            "filt_size must be between 1 and 7",
        ),
        (lambda: ap.lp_pool3d(np.ones((1, 1, 2, 2, 2)), 2, 3, ceil_mode=True), AvgPoolError, "smaller than"),
        (lambda: ap.blur_pool2d(np.zeros((1, 1, 4, 4)), pad_type="wrap"), AvgPoolError, "pad_type must be"),
        (lambda: ap.blur_pool2d(np.zeros((1, 1, 2, 8)), 5), AvgPoolError, "reflect padding .* smaller"),
        (
            lambda: ap.avg_pool_backward(np.zeros((1, 1, 3, 3)), (1, 1, 4, 4), 2),
            AvgPoolError,
            r"grad_output must have the forward output's shape \(1, 1, 2, 2\)",
        ),
    ],
)
def test_bad_input_gets_a_clear_error(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_public_surface_is_declared():
    assert set(ap.__all__) <= set(dir(ap))
    assert "Window" in ap.__all__ and "AvgPoolError" in ap.__all__


# -- kept geometry: one entry per shape and window, never another's ----------------------------


def _clear_kept_geometry():
    from avgpool import _args, _arrays, _backends, _cpu_plans, _dispatch, conventions

    for cached in (
        conventions.window,
        _args._window_of,
        _args._global_window_of,
        _backends._geometry,
        _arrays._layout_of,
        _cpu_plans.avg_plan,
        _cpu_plans.avg_backward_plan,
        _cpu_plans.max_plan,
        _dispatch._adaptive_tables,
        _dispatch._blur_tables,
    ):
        cached.cache_clear()


def _kept_geometry_calls():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 3, 7, 6))
    x_cl = np.moveaxis(x, 1, -1).copy()
    g = rng.standard_normal((2, 3, 4, 3))  # the output shape of 3x3/2 pad 1 and of the blur
    pads = ((2, 2), (2, 0))  # the first windows of an axis lie wholly in the padding
    return {
        # one shape, windows that differ in a single field
        "torch": lambda: ap.avg_pool(x, 2, 1, pads, count_include_pad=False),
        "flax (empty windows: NaN)": lambda: ap.avg_pool(
            x, window=Window(2, 1, pads, count_include_pad=False, ndim=2, convention="flax")
        ),
        "counted pads": lambda: ap.avg_pool(x, 2, 1, pads),
        "divisor override": lambda: ap.avg_pool(x, 2, 1, pads, divisor_override=3),
        "ceil mode": lambda: ap.avg_pool(x, 3, 2, 1, ceil_mode=True),
        "floor mode": lambda: ap.avg_pool(x, 3, 2, 1),
        "same": lambda: ap.avg_pool(x, 3, 2, "same"),
        "same_lower": lambda: ap.avg_pool(x, 3, 2, "same_lower"),
        "channels last": lambda: ap.avg_pool(x_cl, 3, 2, 1, channels_last=True),
        "max, tensorflow (NaN skipped)": lambda: ap.max_pool(
            np.where(x > 1, np.nan, x), window=Window.from_tensorflow(2, 1, "VALID")
        ),
        "max, torch (NaN wins)": lambda: ap.max_pool2d(np.where(x > 1, np.nan, x), 2, 1),
        # one window, other shapes and dtypes
        "smaller": lambda: ap.avg_pool(x[:, :, :5, :5], 3, 2, 1),
        "unbatched": lambda: ap.avg_pool(x[0], 3, 2, 1),
        "float32": lambda: ap.avg_pool(x.astype(np.float32), 3, 2, 1),
        "float16": lambda: ap.avg_pool(x.astype(np.float16), 3, 2, 1),
        "backward": lambda: ap.avg_pool_backward(g, x.shape, 3, 2, 1),
        "backward, smaller": lambda: ap.avg_pool_backward(g[:, :, :2, :2], (2, 3, 4, 4), 3, 2, 1),
        "global backward": lambda: ap.global_avg_pool_backward(g[:, :, :1, :1], x.shape),
        "adaptive": lambda: ap.adaptive_avg_pool(x, 3),
        "adaptive, smaller": lambda: ap.adaptive_avg_pool(x[:, :, :5, :4], 3),
        "adaptive max": lambda: ap.adaptive_max_pool(x, 3),
        "blur": lambda: ap.blur_pool(x, 3, 2),
        "blur, replicate": lambda: ap.blur_pool(x, 3, 2, pad_type="replicate"),
        "blur backward": lambda: ap.blur_pool_backward(g, x.shape, 3, 2),
    }


def test_kept_geometry_is_never_shared_between_shapes_dtypes_or_conventions():
    calls = _kept_geometry_calls()
    warm = {}
    for _ in range(2):  # interleaved, with every entry in place
        warm = {name: call() for name, call in calls.items()}
    for name, call in calls.items():
        _clear_kept_geometry()
        fresh = call()
        assert fresh.dtype == warm[name].dtype and fresh.shape == warm[name].shape, name
        np.testing.assert_array_equal(fresh, warm[name], err_msg=name)
    torch_empty, flax_empty = warm["torch"][0, 0, 0, 0], warm["flax (empty windows: NaN)"][0, 0, 0, 0]
    assert torch_empty == 0 and np.isnan(flax_empty)
    assert not np.isnan(warm["max, tensorflow (NaN skipped)"]).any()
    assert np.isnan(warm["max, torch (NaN wins)"]).any()


def test_kept_geometry_keeps_errors_naming_their_argument():
    x = np.zeros((1, 1, 4, 4))
    ap.avg_pool(x, 2)
    with pytest.raises(AvgPoolError, match="input_shape spatial sizes must be >= 1"):
        ap.avg_pool_backward(np.zeros((1, 1, 2, 0)), (1, 1, 4, 0), 2)
    with pytest.raises(AvgPoolError, match="input spatial sizes must be >= 1"):
        ap.avg_pool(np.zeros((1, 1, 4, 0)), 2)


def test_lp_pool_takes_its_definition_from_a_window_read_from_onnx():
    """A window read from an ONNX LpPool computes ONNX's Lp (|x|**p) unless told otherwise."""
    x = np.array([[[-3.0, 4.0, 1.0]]])
    onnx_window = Window.from_onnx({"kernel_shape": [2]}, (1, 1, 3))
    onnx_lp = np.array([[[(27 + 64) ** (1 / 3), (64 + 1) ** (1 / 3)]]])
    torch_lp = np.array([[[(-27 + 64) ** (1 / 3), (64 + 1) ** (1 / 3)]]])
    np.testing.assert_allclose(ap.lp_pool(x, 3, window=onnx_window), onnx_lp)
    np.testing.assert_allclose(ap.lp_pool(x, 3, window=onnx_window, convention="torch"), torch_lp)
    np.testing.assert_allclose(ap.lp_pool(x, 3, 2, 1), torch_lp)  # no window: PyTorch's
    g = np.ones((1, 1, 2))
    by_window = ap.lp_pool_backward(g, x, 3, window=onnx_window)
    np.testing.assert_allclose(by_window, ap.lp_pool_backward(g, x, 3, 2, 1, convention="onnx"))
