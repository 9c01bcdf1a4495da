"""PoolLayer, Inventory and input-shape parsing; `import avgpool.inspect` stays light."""

from __future__ import annotations

import subprocess
import sys

import pytest

from avgpool import AvgPoolError, Window
from avgpool.inspect import PadInfo, PoolLayer, parse_input_shapes


def test_import_is_light():
    code = (
        "import sys, avgpool.inspect, avgpool.cli; "
        "print(sorted(m for m in ('onnx', 'onnxruntime', 'torch', 'rich') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_parse_input_shapes():
    assert parse_input_shapes(["1x3x8x8"]) == {"": (1, 3, 8, 8)}
    assert parse_input_shapes(["a:1x3x8x8", "b:1,1,8,8"]) == {"a": (1, 3, 8, 8), "b": (1, 1, 8, 8)}
    with pytest.raises(AvgPoolError, match="must look like"):
        parse_input_shapes(["1xHx8"])
    with pytest.raises(AvgPoolError, match="name each one"):
        parse_input_shapes(["1x3x8x8", "b:1x1x8x8"])


def test_effective_window_folds_a_zero_pad_into_counted_padding():
    w = Window.from_onnx({"kernel_shape": [2, 2], "strides": [2, 2]})
    pad = PadInfo("pad", "constant", 0.0, ((0, 1), (0, 1)), (1, 1, 5, 5))
    layer = PoolLayer("pool", "avg", "AveragePool", "onnx", w, (1, 1, 6, 6), (1, 1, 3, 3), pad=pad)
    window, shape = layer.effective()
    assert (window.padding, window.count_include_pad, shape) == (((0, 1), (0, 1)), True, (1, 1, 5, 5))
    assert layer.key == "pool" and layer.to_dict()["pad"]["pads"] == [[0, 1], [0, 1]]
