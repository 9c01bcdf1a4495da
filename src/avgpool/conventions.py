"""Each framework's pooling arguments, translated into a `Window` that reproduces it exactly.

Where the frameworks differ (checked against the real ones by tests/conformance):

============  =====================  ===================  ============  ===============
convention    default stride         'same' divisor       ceil mode     explicit pads
============  =====================  ===================  ============  ===============
torch         kernel_size            (no 'same')          yes           <= kernel/2
onnx          1                      count_include_pad=0  yes           any >= 0
tensorflow    (required)             real cells only      no            max_pool only
keras         pool_size              real cells only      no            no
flax          1                      count_include_pad    no            (lo, hi) pairs
============  =====================  ===================  ============  ===============

'same' itself agrees everywhere: ``out = ceil(n / stride)``, the odd padded cell at the end
(ONNX SAME_LOWER puts it at the start).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from avgpool._errors import AvgPoolError
from avgpool.window import Window, _as_int, _per_axis, kept_windows

__all__ = [
    "CONVENTIONS",
    "EMPTY_AVERAGE",
    "MAX_NAN_POLICY",
    "from_flax",
    "from_keras",
    "from_onnx",
    "from_tensorflow",
    "from_torch",
]

CONVENTIONS = ("torch", "onnx", "tensorflow", "keras", "flax")

#: What the average of a window with no counted cell is, by convention (default 0, as the
#: PyTorch and ONNX Runtime kernels write; Flax divides 0 by 0).
EMPTY_AVERAGE = {"flax": float("nan")}
#: How a windowed max treats NaN, by convention (default "propagate": NaN wins). TensorFlow's
#: max_pool, and Keras' MaxPooling layers on it, skip NaN (found by tests/golden).
MAX_NAN_POLICY = {"tensorflow": "omit", "keras": "omit"}
_OPS = ("avg", "max", "lp")


def _check_op(op: str) -> None:
    if op not in _OPS:
        raise AvgPoolError(f"op must be one of {_OPS}, got {op!r}")


def from_torch(
    kernel_size: int | Sequence[int],
    stride: int | Sequence[int] | None = None,
    padding: int | Sequence[int] = 0,
    dilation: int | Sequence[int] = 1,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
    divisor_override: int | None = None,
    *,
    op: str = "avg",
    ndim: int | None = None,
    channels_last: bool = False,
) -> Window:
    """PyTorch's pooling arguments (``F.avg_pool*d``, ``max_pool*d``, ``lp_pool*d``).

    Applies PyTorch's own checks: padding is an int or tuple of ints and at most half the
    kernel (``pad <= kernel_size // 2``, also for dilated max pooling);
    average pooling takes no dilation; lp pooling takes neither padding nor dilation.

    Examples
    --------
    >>> Window.from_torch(3, 2, 1, ceil_mode=True, ndim=2).output_shape((1, 1, 6, 6))
    (1, 1, 4, 4)
    """
    return _from_torch(
        kernel_size,
        stride,
        padding,
        dilation,
        ceil_mode,
        count_include_pad,
        divisor_override,
        op=op,
        ndim=ndim,
        channels_last=channels_last,
    )


@kept_windows
def _from_torch(
    kernel_size,
    stride,
    padding,
    dilation,
    ceil_mode,
    count_include_pad,
    divisor_override,
    *,
    op,
    ndim,
    channels_last,
) -> Window:
    _check_op(op)
    if isinstance(padding, str):
        raise AvgPoolError(
            f"padding must be an int or a tuple of ints in the torch convention "
            f"(PyTorch pooling has no string padding), got {padding!r}"
        )
    window = Window(
        kernel_size,
        stride,
        padding,
        dilation=dilation,
        ceil_mode=ceil_mode,
        count_include_pad=count_include_pad,
        divisor_override=divisor_override,
        channels_last=channels_last,
        ndim=ndim,
        convention="torch",
    )
    assert window.kernel_size is not None and not isinstance(window.padding, str)
    pads = tuple(p for p, _ in window.padding)
    if op != "max" and set(window.dilation) != {1}:
        raise AvgPoolError(f"dilation must be 1 for {op} pooling in the torch convention")
    if op == "lp" and set(pads) != {0}:
        raise AvgPoolError(f"padding must be 0 for lp pooling in the torch convention, got {pads}")
    if op != "avg" and divisor_override is not None:
        raise AvgPoolError("divisor_override applies to avg pooling only")
    limit = tuple(k // 2 for k in window.kernel_size)  # of the kernel, not the dilated span
    if any(p > m for p, m in zip(pads, limit)):
        raise AvgPoolError(
            f"padding must be <= kernel_size // 2 on every axis in the torch convention, "
            f"got padding {pads} for kernel_size {window.kernel_size}"
        )
    return window


def _onnx_ints(attrs: Mapping[str, Any], name: str, ndim: int, default: int) -> tuple[int, ...]:
    if name not in attrs or attrs[name] is None:
        return (default,) * ndim
    values = tuple(_as_int(v, name) for v in attrs[name])
    if len(values) != ndim:
        raise AvgPoolError(f"{name} must have {ndim} entries (as kernel_shape), got {values}")
    return values


def _flag(attrs: Mapping[str, Any], name: str, default: int = 0) -> bool:
    value = _as_int(attrs.get(name, default), name)
    if value not in (0, 1):
        raise AvgPoolError(f"{name} must be 0 or 1, got {value}")
    return bool(value)


def from_onnx(
    attrs: Mapping[str, Any],
    input_shape: Sequence[int] | None = None,
    *,
    op_type: str = "AveragePool",
) -> Window:
    """An ONNX pooling node's attributes (latest opset), as a dict of plain Python values.

    ``op_type`` is one of AveragePool, MaxPool, LpPool, GlobalAveragePool, GlobalMaxPool,
    GlobalLpPool. ``input_shape`` (N, C, *spatial), when given, fixes the rank and is checked.
    ``count_include_pad`` defaults to 0 as in ONNX; ``storage_order`` and ``p`` do not change
    the window and are ignored here.

    Examples
    --------
    >>> w = Window.from_onnx({"kernel_shape": [3, 3], "strides": [2, 2], "auto_pad": "SAME_LOWER"})
    >>> w.pads((4, 4))
    ((1, 0), (1, 0))
    """
    known = ("AveragePool", "MaxPool", "LpPool", "GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool")
    if op_type not in known:
        raise AvgPoolError(f"op_type must be one of {known}, got {op_type!r}")
    ndim = None if input_shape is None else len(input_shape) - 2
    if op_type.startswith("Global"):
        if ndim is None or ndim < 1:
            raise AvgPoolError(f"{op_type} needs input_shape (N, C, *spatial), got {input_shape}")
        window = Window(None, ndim=ndim, convention="onnx")
        window.spatial_shape(input_shape)
        return window
    if "kernel_shape" not in attrs:
        raise AvgPoolError(f"kernel_shape is required for {op_type}")
    kernel = tuple(_as_int(k, "kernel_shape") for k in attrs["kernel_shape"])
    if ndim is not None and len(kernel) != ndim:
        raise AvgPoolError(f"kernel_shape has {len(kernel)} entries but the input has {ndim} spatial axes")
    ndim = len(kernel)
    strides = _onnx_ints(attrs, "strides", ndim, 1)
    dilations = _onnx_ints(attrs, "dilations", ndim, 1)
    auto_pad = attrs.get("auto_pad", "NOTSET")
    if isinstance(auto_pad, bytes):
        auto_pad = auto_pad.decode()
    pads_attr = attrs.get("pads")
    if auto_pad in ("NOTSET", ""):
        flat = (0,) * (2 * ndim) if pads_attr is None else tuple(_as_int(p, "pads") for p in pads_attr)
        if len(flat) != 2 * ndim:
            raise AvgPoolError(f"pads must have {2 * ndim} entries (begins then ends), got {flat}")
        if any(p < 0 for p in flat):
            raise AvgPoolError(f"pads must be >= 0, got {flat}")
        padding: Any = tuple(zip(flat[:ndim], flat[ndim:]))
    elif auto_pad in ("SAME_UPPER", "SAME_LOWER", "VALID"):
        if pads_attr is not None and any(_as_int(p, "pads") for p in pads_attr):
            raise AvgPoolError(f"pads cannot be used together with auto_pad={auto_pad}")
        padding = {"SAME_UPPER": "same", "SAME_LOWER": "same_lower", "VALID": "valid"}[auto_pad]
    else:
        raise AvgPoolError(f"auto_pad must be NOTSET, SAME_UPPER, SAME_LOWER or VALID, got {auto_pad!r}")
    window = Window(
        kernel,
        strides,
        padding,
        dilation=dilations,
        ceil_mode=_flag(attrs, "ceil_mode"),
        count_include_pad=_flag(attrs, "count_include_pad") if op_type == "AveragePool" else False,
        ndim=ndim,
        convention="onnx",
    )
    if input_shape is not None:
        window.output_shape(input_shape)
    return window


_TF_FORMATS = ("NWC", "NCW", "NHWC", "NCHW", "NDHWC", "NCDHW")


def _tf_sizes(value: Any, name: str, ndim: int, channels_last: bool) -> tuple[int, ...]:
    if isinstance(value, Sequence) and len(value) == ndim + 2:
        full = tuple(_as_int(v, name) for v in value)
        outer = (full[0], full[-1]) if channels_last else (full[0], full[1])
        if outer != (1, 1):
            raise AvgPoolError(f"{name} must be 1 on the batch and channel dimensions, got {full}")
        return full[1:-1] if channels_last else full[2:]
    return _per_axis(value, name, ndim)


def from_tensorflow(
    ksize: int | Sequence[int],
    strides: int | Sequence[int],
    padding: str | Sequence[Sequence[int]],
    data_format: str = "NHWC",
    *,
    op: str = "avg",
) -> Window:
    """``tf.nn.avg_pool`` / ``tf.nn.max_pool`` arguments.

    ``ksize`` and ``strides`` are an int, one entry per spatial axis, or one per dimension
    with 1 on batch and channels. ``padding`` is 'SAME', 'VALID' or (max pooling only) explicit
    ``[[0, 0], [before, after], ..., [0, 0]]`` pairs over every dimension. TensorFlow's
    average divides by the real cells only, so 'SAME' borders average fewer cells.

    Examples
    --------
    >>> Window.from_tensorflow(3, 2, "SAME").count_include_pad
    False
    """
    _check_op(op)
    if data_format not in _TF_FORMATS:
        raise AvgPoolError(f"data_format must be one of {_TF_FORMATS}, got {data_format!r}")
    ndim = len(data_format) - 2
    channels_last = data_format.endswith("C")
    kernel = _tf_sizes(ksize, "ksize", ndim, channels_last)
    stride = _tf_sizes(strides, "strides", ndim, channels_last)
    if isinstance(padding, str):
        if padding.upper() not in ("SAME", "VALID"):
            raise AvgPoolError(f"padding must be 'SAME', 'VALID' or explicit pairs, got {padding!r}")
        pads: Any = padding.lower()
    else:
        if op != "max":
            raise AvgPoolError(
                "explicit padding is TensorFlow max_pool only; avg_pool takes 'SAME' or 'VALID'"
            )
        pairs = [tuple(_as_int(p, "padding") for p in pair) for pair in padding]
        if len(pairs) != ndim + 2 or any(len(p) != 2 for p in pairs):
            raise AvgPoolError(
                f"explicit padding must hold {ndim + 2} [before, after] pairs, got {padding!r}"
            )
        outer = (pairs[0], pairs[-1]) if channels_last else (pairs[0], pairs[1])
        if any(p != (0, 0) for p in outer):
            raise AvgPoolError(f"padding must be [0, 0] on the batch and channel dimensions, got {padding!r}")
        pads = tuple(pairs[1:-1] if channels_last else pairs[2:])
    return Window(
        kernel,
        stride,
        pads,
        count_include_pad=False,
        channels_last=channels_last,
        ndim=ndim,
        convention="tensorflow",
    )


_KERAS_LAYERS = {
    "AveragePooling": "avg",
    "AvgPool": "avg",
    "MaxPooling": "max",
    "MaxPool": "max",
    "GlobalAveragePooling": "global_avg",
    "GlobalAvgPool": "global_avg",
    "GlobalMaxPooling": "global_max",
    "GlobalMaxPool": "global_max",
}


def keras_layer_kind(class_name: str) -> tuple[str, int]:
    """('avg'|'max'|'global_avg'|'global_max', spatial rank) of a Keras pooling class name."""
    for prefix, kind in _KERAS_LAYERS.items():
        rest = class_name[len(prefix) :]
        if class_name.startswith(prefix) and rest in ("1D", "2D", "3D"):
            return kind, int(rest[0])
    raise AvgPoolError(f"not a Keras pooling layer class: {class_name!r}")


def from_keras(layer_config: Mapping[str, Any]) -> Window:
    """A Keras pooling layer's config: ``layer.get_config()`` or its serialised form.

    Accepts ``{"class_name": "AveragePooling2D", "config": {...}}`` (as in a saved model) or
    the bare config with ``pool_size``. Global pooling layers need the class name. Keras (on
    every backend) averages over real cells only, so 'same' borders average fewer cells.
    ``keepdims`` of a global layer changes the shape, not the window: pass it to
    `avgpool.global_avg_pool`.
    """
    if not isinstance(layer_config, Mapping):
        raise TypeError(f"layer_config must be a dict, got {type(layer_config).__name__}")
    config = layer_config.get("config", layer_config)
    class_name = layer_config.get("class_name")
    kind, ndim = keras_layer_kind(class_name) if class_name else ("avg", None)
    data_format = config.get("data_format") or "channels_last"
    if data_format not in ("channels_last", "channels_first"):
        raise AvgPoolError(f"data_format must be 'channels_last' or 'channels_first', got {data_format!r}")
    channels_last = data_format == "channels_last"
    if kind.startswith("global"):
        return Window(None, ndim=ndim, channels_last=channels_last, convention="keras")
    if "pool_size" not in config:
        raise AvgPoolError("layer_config has no pool_size (a global pooling layer needs its class_name)")
    pool_size = config["pool_size"]
    strides = config.get("strides")
    padding = str(config.get("padding", "valid")).lower()
    if padding not in ("valid", "same"):
        raise AvgPoolError(f"padding must be 'valid' or 'same' in Keras, got {config.get('padding')!r}")
    return Window(
        pool_size,
        strides if strides is not None else pool_size,
        padding,
        count_include_pad=False,
        channels_last=channels_last,
        ndim=ndim,
        convention="keras",
    )


def from_flax(
    window_shape: Sequence[int],
    strides: Sequence[int] | None = None,
    padding: str | Sequence[Sequence[int]] = "VALID",
    count_include_pad: bool = True,
) -> Window:
    """``flax.linen.avg_pool`` / ``max_pool`` arguments (inputs are channels-last).

    Flax's stride defaults to 1 (not the window), and its average counts padded cells unless
    ``count_include_pad=False``: for 'SAME' it differs from TensorFlow at every border cell.
    """
    if isinstance(window_shape, int) or not isinstance(window_shape, Sequence):
        raise TypeError(f"window_shape must be a tuple of ints (one per spatial axis), got {window_shape!r}")
    ndim = len(window_shape)
    if isinstance(padding, str):
        if padding.upper() not in ("SAME", "VALID"):
            raise AvgPoolError(f"padding must be 'SAME', 'VALID' or (low, high) pairs, got {padding!r}")
        pads: Any = padding.lower()
    else:
        pads = tuple(tuple(pair) for pair in padding)
    return Window(
        window_shape,
        (1,) * ndim if strides is None else strides,
        pads,
        count_include_pad=count_include_pad,
        channels_last=True,
        ndim=ndim,
        convention="flax",
    )
