"""Each framework's arguments -> Window: defaults, rules and refusals, by example.

Values against the real frameworks live in tests/conformance; here the translation itself.
"""

import numpy as np
import pytest

import avgpool
from avgpool import AvgPoolError, Window


class TestTorch:
    def test_defaults(self):
        w = Window.from_torch(3, ndim=2)
        assert (w.stride, w.padding, w.count_include_pad, w.convention) == (
            (3, 3),
            ((0, 0),) * 2,
            True,
            "torch",
        )

    def test_empty_stride_means_kernel(self):
        assert Window.from_torch((2, 3), []).stride == (2, 3)

    @pytest.mark.parametrize(
        ("args", "kwargs", "message"),
        [
            ((3, 1, 2), {"ndim": 2}, r"padding must be <= kernel_size // 2 .* got padding \(2, 2\)"),
            ((2, 1, 2), {"ndim": 1}, "padding must be <= kernel_size // 2"),
            ((3, 1, 1), {"ndim": 2, "dilation": 2}, "dilation must be 1 for avg pooling"),
            ((3, 1, 1), {"ndim": 2, "op": "lp"}, "padding must be 0 for lp pooling"),
            ((3, 1, "same"), {"ndim": 2}, "no string padding"),
            ((3, 1, 0), {"ndim": 2, "op": "max", "divisor_override": 2}, "divisor_override applies to avg"),
            ((3,), {"ndim": 2, "op": "sum"}, "op must be one of"),
        ],
    )
    def test_refusals(self, args, kwargs, message):
        with pytest.raises(AvgPoolError, match=message):
            Window.from_torch(*args, **kwargs)

    def test_max_pad_limit_ignores_dilation(self):
        # PyTorch bounds padding by kernel_size // 2 even when dilation widens the span
        assert Window.from_torch(3, 1, 1, 2, op="max", ndim=1).padding == ((1, 1),)
        with pytest.raises(AvgPoolError, match="padding must be <= kernel_size // 2"):
            Window.from_torch(3, 1, 2, 2, op="max", ndim=1)


class TestOnnx:
    def test_defaults_follow_the_spec(self):
        w = Window.from_onnx({"kernel_shape": [3, 3]}, (1, 1, 5, 5))
        assert (w.stride, w.padding, w.ceil_mode, w.count_include_pad) == (
            (1, 1),
            ((0, 0),) * 2,
            False,
            False,
        )

    def test_pads_are_begins_then_ends(self):
        w = Window.from_onnx({"kernel_shape": [3, 2], "pads": [1, 0, 2, 1]})
        assert w.padding == ((1, 2), (0, 1))

    @pytest.mark.parametrize("auto_pad", ["SAME_UPPER", b"SAME_UPPER"])
    def test_auto_pad_accepts_bytes(self, auto_pad):
        w = Window.from_onnx({"kernel_shape": [3], "strides": [2], "auto_pad": auto_pad})
        assert w.pads((4,)) == ((0, 1),)

    def test_global_ops_need_the_input_shape(self):
        w = Window.from_onnx({}, (2, 3, 4, 5), op_type="GlobalAveragePool")
        assert w.output_shape((2, 3, 4, 5)) == (2, 3, 1, 1)
        with pytest.raises(AvgPoolError, match="needs input_shape"):
            Window.from_onnx({}, op_type="GlobalMaxPool")

    @pytest.mark.parametrize(
        ("attrs", "message"),
        [
            ({"kernel_shape": [2, 2], "pads": [1, 1, 1]}, "pads must have 4 entries"),
            ({"kernel_shape": [2], "pads": [-1, 0]}, "pads must be >= 0"),
            ({"kernel_shape": [2], "strides": [0]}, "stride must be >= 1"),
            ({"kernel_shape": [2], "strides": [1, 1]}, "strides must have 1 entries"),
            ({"kernel_shape": [2], "auto_pad": "SAME"}, "auto_pad must be NOTSET, SAME_UPPER"),
            ({"kernel_shape": [2], "auto_pad": "VALID", "pads": [1, 1]}, "pads cannot be used together"),
            ({"kernel_shape": [2], "ceil_mode": 2}, "ceil_mode must be 0 or 1"),
            ({"strides": [1]}, "kernel_shape is required"),
        ],
    )
    def test_bad_attributes_name_themselves(self, attrs, message):
        with pytest.raises(AvgPoolError, match=message):
            Window.from_onnx(attrs)

    def test_rank_mismatch_with_input(self):
        with pytest.raises(AvgPoolError, match="kernel_shape has 1 entries but the input has 2"):
            Window.from_onnx({"kernel_shape": [2]}, (1, 1, 4, 4))

    def test_unknown_op_type(self):
        with pytest.raises(AvgPoolError, match="op_type must be one of"):
            Window.from_onnx({"kernel_shape": [2]}, op_type="AvgPool")


class TestTensorflow:
    @pytest.mark.parametrize("ksize", [2, [2, 2], [1, 2, 2, 1]])
    def test_ksize_forms(self, ksize):
        w = Window.from_tensorflow(ksize, [1, 1, 1, 1], "VALID")
        assert (w.kernel_size, w.stride, w.channels_last) == ((2, 2), (1, 1), True)

    def test_nchw_full_rank_sizes(self):
        w = Window.from_tensorflow([1, 1, 3, 2], [1, 1, 2, 1], "SAME", "NCHW")
        assert (w.kernel_size, w.stride, w.channels_last) == ((3, 2), (2, 1), False)

    def test_average_excludes_padding(self):
        assert not Window.from_tensorflow(3, 2, "SAME").count_include_pad

    def test_explicit_padding_for_max_only(self):
        w = Window.from_tensorflow(3, 1, [[0, 0], [1, 2], [0, 1], [0, 0]], op="max")
        assert w.padding == ((1, 2), (0, 1))
        with pytest.raises(AvgPoolError, match="max_pool only"):
            Window.from_tensorflow(3, 1, [[0, 0], [1, 1], [1, 1], [0, 0]])
        with pytest.raises(AvgPoolError, match="batch and channel"):
            Window.from_tensorflow(3, 1, [[1, 0], [1, 1], [1, 1], [0, 0]], op="max")

    @pytest.mark.parametrize(
        ("args", "message"),
        [
            ((2, 2, "same_lower"), "padding must be 'SAME', 'VALID'"),
            ((2, 2, "SAME", "NHCW"), "data_format must be one of"),
            (([2, 2, 2, 2], 1, "SAME"), "ksize must be 1 on the batch and channel"),
        ],
    )
    def test_refusals(self, args, message):
        with pytest.raises(AvgPoolError, match=message):
            Window.from_tensorflow(*args)


class TestKeras:
    def test_serialised_and_bare_configs(self):
        config = {"pool_size": [2, 2], "strides": None, "padding": "same", "data_format": "channels_first"}
        a = Window.from_keras({"class_name": "AveragePooling2D", "config": config})
        b = Window.from_keras(config)
        assert a == b
        assert (a.stride, a.padding, a.channels_last, a.count_include_pad) == ((2, 2), "same", False, False)

    def test_global_layers(self):
        w = Window.from_keras({"class_name": "GlobalAveragePooling3D", "config": {"keepdims": False}})
        assert w.kernel_size is None and w.ndim == 3 and w.channels_last

    @pytest.mark.parametrize(
        ("config", "message"),
        [
            ({"class_name": "Conv2D", "config": {}}, "not a Keras pooling layer"),
            ({"class_name": "MaxPooling2D", "config": {}}, "no pool_size"),
            ({"pool_size": [2], "padding": "causal"}, "padding must be 'valid' or 'same'"),
            ({"pool_size": [2], "data_format": "NHWC"}, "data_format must be"),
        ],
    )
    def test_refusals(self, config, message):
        with pytest.raises(AvgPoolError, match=message):
            Window.from_keras(config)


class TestFlax:
    def test_defaults_stride_one_and_count_padding(self):
        w = Window.from_flax((3, 3), padding="SAME")
        assert (w.stride, w.count_include_pad, w.channels_last) == ((1, 1), True, True)

    def test_explicit_pairs(self):
        assert Window.from_flax((2,), (2,), [(0, 1)]).padding == ((0, 1),)

    def test_window_shape_must_be_a_tuple(self):
        with pytest.raises(TypeError, match="window_shape must be a tuple"):
            Window.from_flax(3)


def test_tensorflow_and_flax_same_padding_disagree_at_every_border_cell():
    # The README's case: 5x5 input, 3x3 window, stride 2, 'SAME'.
    x = np.arange(25.0).reshape(1, 5, 5, 1)
    tf = avgpool.avg_pool(x, window=Window.from_tensorflow(3, 2, "SAME"))
    fx = avgpool.avg_pool(x, window=Window.from_flax((3, 3), (2, 2), "SAME"))
    border = np.ones((3, 3), dtype=bool)
    border[1, 1] = False
    differs = ~np.isclose(tf[0, :, :, 0], fx[0, :, :, 0])
    np.testing.assert_array_equal(differs, border)
    # corner: TF averages the 4 real cells {0, 1, 5, 6}; Flax divides their sum by 9
    assert tf[0, 0, 0, 0] == 3.0
    assert fx[0, 0, 0, 0] == pytest.approx(12.0 / 9)


class TestWhatTheConventionChanges:
    """A Window's convention is more than its name: each result rule it selects, by example."""

    def test_it_takes_part_in_equality(self):
        assert Window(2, ndim=1) != Window(2, ndim=1, convention="flax")

    def test_flax_averages_a_window_with_no_counted_cell_to_nan(self):
        x = np.ones((1, 1, 4))
        w = Window(1, 1, ((2, 2),), count_include_pad=False, ndim=1)  # 4 windows wholly in padding
        np.testing.assert_array_equal(avgpool.avg_pool(x, window=w)[0, 0], [0, 0, 1, 1, 1, 1, 0, 0])
        flax = avgpool.avg_pool(x, window=w.replace(convention="flax"))[0, 0]
        np.testing.assert_array_equal(flax, [np.nan, np.nan, 1, 1, 1, 1, np.nan, np.nan])
        assert avgpool.conventions.EMPTY_AVERAGE == {"flax": pytest.approx(np.nan, nan_ok=True)}

    @pytest.mark.parametrize("convention", avgpool.conventions.CONVENTIONS)
    def test_tensorflow_and_keras_max_skip_nan(self, convention):
        x = np.array([[[np.nan, 1.0, np.nan, np.nan]]])
        got = avgpool.max_pool(x, window=Window(2, 2, ndim=1, convention=convention))[0, 0]
        if convention in ("tensorflow", "keras"):  # NaN never wins; an all-NaN window: lowest finite
            np.testing.assert_array_equal(got, [1.0, np.finfo(np.float64).min])
        else:
            np.testing.assert_array_equal(got, [np.nan, np.nan])
        # an explicit nan_policy overrides the convention's
        w = Window(2, 2, ndim=1, convention=convention)
        np.testing.assert_array_equal(
            avgpool.max_pool(x, window=w, nan_policy="propagate")[0, 0], [np.nan] * 2
        )


def test_window_imports_no_framework_rules():
    # conventions builds on window, never the other way: window.py imports no avgpool module
    # but the errors, not even inside a function
    import ast
    import inspect

    import avgpool.window

    tree = ast.parse(inspect.getsource(avgpool.window))
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert {m for m in imported if m and m.startswith("avgpool")} == {"avgpool._errors"}


def test_window_constructors_are_the_conventions_readers():
    import subprocess
    import sys

    # in a fresh interpreter: importing the Window alone brings its framework constructors
    code = "from avgpool.window import Window; print(Window.from_onnx({'kernel_shape': [2]}).stride)"
    assert (
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
        == "(1,)\n"
    )
    for name in ("torch", "onnx", "tensorflow", "keras", "flax"):
        assert getattr(Window, f"from_{name}") is getattr(avgpool.conventions, f"from_{name}")
