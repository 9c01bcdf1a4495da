"""Every framework's pooling rules, in one place, and the one builder that applies them.

`window` reads one set of pooling arguments (PyTorch's names: kernel_size, stride, padding,
dilation, ceil_mode, count_include_pad, divisor_override) by one framework's rules and returns
the `Window` that reproduces that framework exactly, or refuses what the framework cannot
express. `avgpool.nn`'s modules (``convention=``), `avgpool.inspect.window_for` and the
``avgpool shape`` command all build through it, so what one accepts, all accept, and a refusal
reads the same everywhere. The readers of each framework's own spelling (`from_onnx` for a
node's attributes, `from_keras` for a layer config, ...) translate that spelling and build
through the same rules.

Where the frameworks differ (checked against the real ones by tests/conformance):

============  ==============  ===================  ====  =============================  ========
convention    default stride  count_include_pad    ceil  padding                        dilation
============  ==============  ===================  ====  =============================  ========
torch         kernel_size     True                 yes   ints <= kernel/2, symmetric    max only
onnx          1               False                yes   any >= 0, same, same_lower     yes
tensorflow    (required)      False only           no    same, valid; explicit for max  no
keras         kernel_size     False only           no    same, valid                    no
flax          1               True                 no    any >= 0, same, valid          no
============  ==============  ===================  ====  =============================  ========

divisor_override is PyTorch's alone; Lp pooling is torch's or onnx's (`avgpool.lp_pool`).
'same' itself agrees everywhere: ``out = ceil(n / stride)``, the odd padded cell at the end
(ONNX SAME_LOWER puts it at the start).

Besides the geometry, a Window's ``convention`` selects the result rules of `RULES`: what the
average of a window with no counted cell is (`EMPTY_AVERAGE`: Flax's 0/0 is NaN) and whether a
max skips NaN (`MAX_NAN_POLICY`: TensorFlow's does).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from avgpool._errors import AvgPoolError
from avgpool.window import Window, _as_int, _per_axis, as_flag, kept_windows

__all__ = [
    "CONVENTIONS",
    "EMPTY_AVERAGE",
    "MAX_NAN_POLICY",
    "RULES",
    "Rules",
    "from_flax",
    "from_keras",
    "from_onnx",
    "from_tensorflow",
    "from_torch",
    "window",
]

_ALL_OPS = ("avg", "max", "lp")


@dataclass(frozen=True)
class Rules:
    """One framework's pooling rules: its defaults, what it cannot express, and its results.

    ``Rules()`` takes everything a `Window` can express, with Window's defaults; each
    framework's entry in `RULES` names what differs.

    Attributes
    ----------
    ops : tuple of str
        The pooling ops it has, of "avg", "max" and "lp".
    default_stride : str
        The stride when none is given: "kernel" (the kernel size), "one", or "required".
    counts_padding, may_count_padding : bool
        count_include_pad's default for average pooling, and whether True may be asked for.
    padding_modes : tuple of str
        The padding strings it takes, of "valid", "same" and "same_lower".
    explicit_padding, dilates : tuple of str
        The ops that take numeric padding other than 0, and a dilation other than 1.
    symmetric_padding : bool
        Whether numeric padding must be the same before and after on each axis.
    ceil_mode, divisor_override : bool
        Whether it has ceil mode and PyTorch's divisor_override.
    empty_average : float
        The average of a window with no counted cell (a ``count_include_pad=False`` window
        wholly in the padding).
    max_nan_policy : str
        "propagate" (a NaN in the window wins the max) or "omit" (NaN never wins).
    why : dict of str to str
        The framework's own words, added to a refusal of that kind: "padding" (a padding
        string), "explicit", "symmetric", "stride", "dilation".
    check : callable, optional
        ``check(window, op)``: the framework's further limits, raising AvgPoolError.
    """

    ops: tuple[str, ...] = _ALL_OPS
    default_stride: str = "kernel"
    counts_padding: bool = True
    may_count_padding: bool = True
    padding_modes: tuple[str, ...] = ("valid", "same", "same_lower")
    explicit_padding: tuple[str, ...] = _ALL_OPS
    symmetric_padding: bool = False
    dilates: tuple[str, ...] = _ALL_OPS
    ceil_mode: bool = True
    divisor_override: bool = True
    empty_average: float = 0.0
    max_nan_policy: str = "propagate"
    why: Mapping[str, str] | None = None
    check: Callable[[Window, str], None] | None = None

    def reason(self, kind: str) -> str:
        text = (self.why or {}).get(kind)
        return f" ({text})" if text else ""


def _torch_limits(window: Window, op: str) -> None:
    """PyTorch's own limit: padding at most half the kernel (of the kernel, not the dilated
    span, also for dilated max pooling)."""
    assert window.kernel_size is not None and not isinstance(window.padding, str)
    pads = tuple(p for p, _ in window.padding)
    limit = tuple(k // 2 for k in window.kernel_size)
    if any(p > m for p, m in zip(pads, limit)):
        raise AvgPoolError(
            f"padding must be <= kernel_size // 2 on every axis in the torch convention, "
            f"got padding {pads} for kernel_size {window.kernel_size}"
        )


_TF_LAYERS = "Keras pooling layers take only 'same' or 'valid'"

#: Every framework's rules, by convention name. A new convention is one entry here (and its
#: maths in avgpool.reference when they differ from every rule below).
RULES: dict[str, Rules] = {
    "torch": Rules(
        padding_modes=(),
        explicit_padding=("avg", "max"),
        symmetric_padding=True,
        dilates=("max",),
        why={
            "padding": "PyTorch pooling has no string padding",
            "explicit": "PyTorch's lp_pool takes no padding",
            "symmetric": "PyTorch pads both sides of an axis alike",
        },
        check=_torch_limits,
    ),
    "onnx": Rules(default_stride="one", counts_padding=False, divisor_override=False),
    "tensorflow": Rules(
        ops=("avg", "max"),
        default_stride="required",
        counts_padding=False,
        may_count_padding=False,
        padding_modes=("valid", "same"),
        explicit_padding=("max",),
        dilates=(),
        ceil_mode=False,
        divisor_override=False,
        max_nan_policy="omit",  # found by tests/golden
        why={
            "padding": "its 'same' puts the odd padded cell at the end",
            "explicit": (
                "explicit padding is tf.nn.max_pool only; tf.nn.avg_pool takes only 'SAME' or 'VALID'"
            ),
            "stride": "tf.nn pooling requires strides",
            "dilation": "tf.nn.avg_pool and max_pool take none",
        },
    ),
    "keras": Rules(
        ops=("avg", "max"),
        counts_padding=False,
        may_count_padding=False,
        padding_modes=("valid", "same"),
        explicit_padding=(),
        dilates=(),
        ceil_mode=False,
        divisor_override=False,
        max_nan_policy="omit",  # Keras' MaxPooling runs TensorFlow's max_pool
        why={"padding": _TF_LAYERS, "explicit": _TF_LAYERS, "dilation": "its pooling layers take none"},
    ),
    "flax": Rules(
        ops=("avg", "max"),
        default_stride="one",
        padding_modes=("valid", "same"),
        dilates=(),
        ceil_mode=False,
        divisor_override=False,
        empty_average=float("nan"),  # Flax divides a sum of 0 by a count of 0
        why={
            "padding": "its 'SAME' puts the odd padded cell at the end",
            "dilation": "flax.linen's pooling takes none",
        },
    ),
}

CONVENTIONS = tuple(RULES)

#: What the average of a window with no counted cell is, by convention (default 0, as the
#: PyTorch and ONNX Runtime kernels write; Flax divides 0 by 0).
EMPTY_AVERAGE = {name: r.empty_average for name, r in RULES.items() if r.empty_average != 0.0}
#: How a windowed max treats NaN, by convention (default "propagate": NaN wins). TensorFlow's
#: max_pool, and Keras' MaxPooling layers on it, skip NaN (found by tests/golden).
MAX_NAN_POLICY = {name: r.max_nan_policy for name, r in RULES.items() if r.max_nan_policy != "propagate"}


@kept_windows
def window(
    convention: str,
    op: str,
    ndim: int | None,
    kernel_size: int | Sequence[int] | None,
    stride: int | Sequence[int] | None = None,
    padding: Any = 0,
    *,
    dilation: int | Sequence[int] = 1,
    ceil_mode: bool = False,
    count_include_pad: bool | None = None,
    divisor_override: int | None = None,
    channels_last: bool = False,
) -> Window:
    """The Window that ``convention`` builds from these pooling arguments, or its refusal.

    Parameters
    ----------
    convention : str
        One of `CONVENTIONS`: whose rules read the arguments (`RULES`).
    op : str
        "avg", "max" or "lp".
    ndim : int or None
        Spatial rank; None infers it from a tuple argument.
    kernel_size, stride, padding, dilation, ceil_mode, divisor_override
        As `Window` takes them. ``stride=None`` (or an empty sequence) is the framework's
        default; padding may be an int, a tuple, (before, after) pairs or a mode string, as
        far as the framework can express it.
    count_include_pad : bool, optional
        None takes the framework's default. Max and Lp pooling have no divisor: their
        Windows always hold False.
    channels_last : bool
        The arrays' layout, whatever the framework's own default.

    Returns
    -------
    Window
        With ``convention`` set, which also selects the result rules of `RULES`.

    Raises
    ------
    AvgPoolError
        For anything the framework cannot express, naming the argument, the value given and
        the framework's rule; every other bad value as `Window` refuses it.

    Examples
    --------
    >>> window("onnx", "avg", 2, 3).stride
    (1, 1)
    >>> window("tensorflow", "avg", 2, 3)
    Traceback (most recent call last):
    ...
    avgpool._errors.AvgPoolError: tensorflow cannot express stride=None (tf.nn pooling requires strides)
    """
    rules = RULES.get(convention) if isinstance(convention, str) else None
    if rules is None:
        raise AvgPoolError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
    if op not in _ALL_OPS:
        raise AvgPoolError(f"op must be one of {_ALL_OPS}, got {op!r}")
    name = convention
    ceil_mode = as_flag(ceil_mode, "ceil_mode")
    if count_include_pad is not None:
        count_include_pad = as_flag(count_include_pad, "count_include_pad")
    if op not in rules.ops:
        raise AvgPoolError(f"{name} cannot express {op} pooling (it has {', '.join(rules.ops)} pooling)")
    if isinstance(stride, Sequence) and not isinstance(stride, str) and len(stride) == 0:
        stride = None  # PyTorch's spelling of "the default"
    if stride is None and kernel_size is not None:
        if rules.default_stride == "required":
            raise AvgPoolError(f"{name} cannot express stride=None{rules.reason('stride')}")
        stride = 1 if rules.default_stride == "one" else kernel_size
    if divisor_override is not None:
        if op != "avg":
            raise AvgPoolError("divisor_override applies to avg pooling only")
        if not rules.divisor_override:
            raise AvgPoolError(
                f"{name} cannot express divisor_override={divisor_override!r} (it is PyTorch's alone)"
            )
    if ceil_mode and not rules.ceil_mode:
        raise AvgPoolError(f"{name} cannot express ceil_mode=True (it rounds output sizes down)")
    if op != "avg":
        count_include_pad = False  # no divisor: one value, so equal geometries give equal Windows
    elif count_include_pad is None:
        count_include_pad = rules.counts_padding
    elif count_include_pad and not rules.may_count_padding:
        raise AvgPoolError(
            f"{name} cannot express count_include_pad=True (its average divides by real cells only)"
        )
    built = Window(
        kernel_size,
        stride,
        padding,
        dilation=dilation,
        ceil_mode=ceil_mode,
        count_include_pad=count_include_pad,
        divisor_override=divisor_override,
        channels_last=channels_last,
        ndim=ndim,
        convention=name,
    )
    mode = built.padding if isinstance(built.padding, str) else "valid"
    if isinstance(padding, str) and mode not in rules.padding_modes:
        raise AvgPoolError(f"{name} cannot express padding={padding!r}{rules.reason('padding')}")
    if isinstance(built.padding, tuple):
        pairs = built.padding
        if op not in rules.explicit_padding and any(p for pair in pairs for p in pair):
            raise AvgPoolError(
                f"padding must be 0 for {op} pooling in the {name} convention"
                f"{rules.reason('explicit')}, got {pairs}"
            )
        if rules.symmetric_padding and any(b != a for b, a in pairs):
            raise AvgPoolError(
                f"padding must be the same before and after in the {name} convention"
                f"{rules.reason('symmetric')}, got {pairs}"
            )
    if op not in rules.dilates and set(built.dilation) != {1}:
        raise AvgPoolError(
            f"dilation must be 1 for {op} pooling in the {name} convention"
            f"{rules.reason('dilation')}, got {built.dilation}"
        )
    if rules.check is not None and built.kernel_size is not None:
        rules.check(built, op)
    return built


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

    The torch rules of `window`: padding is an int or tuple of ints and at most half the
    kernel (``pad <= kernel_size // 2``, also for dilated max pooling); average pooling takes
    no dilation; lp pooling takes neither padding nor dilation.

    Examples
    --------
    >>> Window.from_torch(3, 2, 1, ceil_mode=True, ndim=2).output_shape((1, 1, 6, 6))
    (1, 1, 4, 4)
    """
    return window(
        "torch",
        op,
        ndim,
        kernel_size,
        stride,
        padding,
        dilation=dilation,
        ceil_mode=ceil_mode,
        count_include_pad=count_include_pad,
        divisor_override=divisor_override,
        channels_last=channels_last,
    )


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


_ONNX_OPS = {"AveragePool": "avg", "MaxPool": "max", "LpPool": "lp"}
_ONNX_GLOBAL = ("GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool")


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
    known = (*_ONNX_OPS, *_ONNX_GLOBAL)
    if op_type not in known:
        raise AvgPoolError(f"op_type must be one of {known}, got {op_type!r}")
    ndim = None if input_shape is None else len(input_shape) - 2
    if op_type in _ONNX_GLOBAL:
        if ndim is None or ndim < 1:
            raise AvgPoolError(f"{op_type} needs input_shape (N, C, *spatial), got {input_shape}")
        built = Window(None, ndim=ndim, convention="onnx")
        built.spatial_shape(input_shape)
        return built
    if "kernel_shape" not in attrs:
        raise AvgPoolError(f"kernel_shape is required for {op_type}")
    kernel = tuple(_as_int(k, "kernel_shape") for k in attrs["kernel_shape"])
    if ndim is not None and len(kernel) != ndim:
        raise AvgPoolError(f"kernel_shape has {len(kernel)} entries but the input has {ndim} spatial axes")
    ndim = len(kernel)
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
    built = window(
        "onnx",
        _ONNX_OPS[op_type],
        ndim,
        kernel,
        _onnx_ints(attrs, "strides", ndim, 1),
        padding,
        dilation=_onnx_ints(attrs, "dilations", ndim, 1),
        ceil_mode=_flag(attrs, "ceil_mode"),
        count_include_pad=_flag(attrs, "count_include_pad"),
    )
    if input_shape is not None:
        built.output_shape(input_shape)
    return built


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
        pairs = [tuple(_as_int(p, "padding") for p in pair) for pair in padding]
        if len(pairs) != ndim + 2 or any(len(p) != 2 for p in pairs):
            raise AvgPoolError(
                f"explicit padding must hold {ndim + 2} [before, after] pairs, got {padding!r}"
            )
        outer = (pairs[0], pairs[-1]) if channels_last else (pairs[0], pairs[1])
        if any(p != (0, 0) for p in outer):
            raise AvgPoolError(f"padding must be [0, 0] on the batch and channel dimensions, got {padding!r}")
        pads = tuple(pairs[1:-1] if channels_last else pairs[2:])
    return window("tensorflow", op, ndim, kernel, stride, pads, channels_last=channels_last)


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
    the bare config with ``pool_size`` (read as average pooling). Global pooling layers need
    the class name. Keras (on every backend) averages over real cells only, so 'same'
    borders average fewer cells. ``keepdims`` of a global layer changes the shape, not the
    window: pass it to `avgpool.global_avg_pool`.
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
    padding = str(config.get("padding", "valid")).lower()
    if padding not in ("valid", "same"):
        raise AvgPoolError(f"padding must be 'valid' or 'same' in Keras, got {config.get('padding')!r}")
    return window(
        "keras", kind, ndim, config["pool_size"], config.get("strides"), padding, channels_last=channels_last
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
    if isinstance(padding, str):
        if padding.upper() not in ("SAME", "VALID"):
            raise AvgPoolError(f"padding must be 'SAME', 'VALID' or (low, high) pairs, got {padding!r}")
        pads: Any = padding.lower()
    else:
        pads = tuple(tuple(pair) for pair in padding)
    return window(
        "flax",
        "avg",
        len(window_shape),
        window_shape,
        strides,
        pads,
        count_include_pad=count_include_pad,
        channels_last=True,
    )


# The readers are also Window's constructors (``Window.from_onnx(...)``). They are set here,
# beside the rules they apply, so that window.py, the geometry every layer builds on, imports
# no framework's rules.
Window.from_torch = staticmethod(from_torch)  # type: ignore[attr-defined]
Window.from_onnx = staticmethod(from_onnx)  # type: ignore[attr-defined]
Window.from_tensorflow = staticmethod(from_tensorflow)  # type: ignore[attr-defined]
Window.from_keras = staticmethod(from_keras)  # type: ignore[attr-defined]
Window.from_flax = staticmethod(from_flax)  # type: ignore[attr-defined]
