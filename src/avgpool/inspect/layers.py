"""One record per pooling site of a model (`PoolLayer`), the inventory that holds them, and the
receptive-field arithmetic that places each layer in the model's input.

Readers (`onnx_reader`, `torch_reader`) produce an `Inventory`; lint, diff, verify and the
renderers only read it. Nothing here imports onnx or torch.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from avgpool._errors import AvgPoolError
from avgpool.window import Axis, Window

__all__ = [
    "Inventory",
    "ModelError",
    "PadInfo",
    "PoolLayer",
    "grow_receptive_field",
    "layer_key",
    "parse_input_shapes",
]

#: Pooling kinds a `PoolLayer.op` can be.
POOL_OPS = (
    "avg",
    "max",
    "lp",
    "global_avg",
    "global_max",
    "global_lp",
    "adaptive_avg",
    "adaptive_max",
    "blur",
)


class ModelError(AvgPoolError):
    """A model file or object that cannot be read (not a model, truncated, missing data, ...)."""


@dataclass(frozen=True)
class PadInfo:
    """An explicit Pad node (or module) feeding a pooling layer.

    ``pads`` holds (before, after) per *spatial* axis; ``mode`` is ONNX's word (constant,
    reflect, edge, wrap); ``value`` the constant fill.
    """

    name: str
    mode: str
    value: float
    pads: tuple[tuple[int, int], ...]
    input_shape: tuple[int, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "mode": self.mode,
            "value": self.value,
            "pads": [list(p) for p in self.pads],
            "input_shape": None if self.input_shape is None else list(self.input_shape),
        }


@dataclass(frozen=True)
class PoolLayer:
    """One pooling site of a model.

    Attributes
    ----------
    name : str
        The node's (ONNX) or module's / fx node's (PyTorch) name.
    op : str
        One of avg, max, lp, global_avg, global_max, global_lp, adaptive_avg, adaptive_max, blur.
    source_op : str
        What the model calls it: ``AveragePool``, ``ReduceMean``, ``nn.AvgPool2d``,
        ``F.avg_pool2d``, ...
    convention : str
        The framework whose semantics the layer has (``onnx``, ``torch``, or an avgpool
        module's window convention).
    window : Window or None
        Exact geometry on the layer's own input (None for adaptive pooling).
    input_shape, output_shape : tuple of int or None
        Full shapes (N, C, *spatial); None where shape inference could not tell.
    index : int
        Position among the model's pooling layers, in execution order.
    receptive_field, cumulative_stride : tuple of int or None
        Per spatial axis, in model-input cells: how much input one output cell sees, and the
        distance between neighbouring output cells. None where an op on the way is not
        understood (a resize, a reshape).
    p : float or None
        Lp pooling's exponent.
    output_size : tuple or None
        Adaptive pooling's requested output size (None entries keep that axis).
    pad : PadInfo or None
        An explicit Pad feeding this layer.
    inputs, outputs : tuple of str
        Tensor names (ONNX) the layer reads and writes; verify exposes them.
    attributes : mapping
        The raw attributes (ONNX node attributes, or the module's arguments).
    written_as : str or None
        What the model's source wrote, where an ONNX file records it (PyTorch's dynamo exporter
        does: ``torch.nn.modules.pooling.AdaptiveAvgPool2d`` for a ReduceMean it lowered).
    """

    name: str
    op: str
    source_op: str
    convention: str
    window: Window | None
    input_shape: tuple[int, ...] | None
    output_shape: tuple[int, ...] | None
    index: int = 0
    receptive_field: tuple[int, ...] | None = None
    cumulative_stride: tuple[int, ...] | None = None
    p: float | None = None
    output_size: tuple[int | None, ...] | None = None
    pad: PadInfo | None = None
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    attributes: Mapping[str, Any] = field(default_factory=dict)
    written_as: str | None = None

    @property
    def key(self) -> str:
        """The name diff matches on (ONNX ``/layer1/pool/AveragePool`` -> ``layer1.pool``)."""
        return layer_key(self.name)

    @property
    def spatial_shape(self) -> tuple[int, ...] | None:
        if self.input_shape is None or len(self.input_shape) < 2:
            return None
        if self.window is not None:
            ndim = self.window.ndim
        elif self.output_size is not None:
            ndim = len(self.output_size)
        else:
            ndim = len(self.input_shape) - 2
        if ndim < 1 or len(self.input_shape) < ndim + 1:
            return None
        return tuple(self.input_shape[-ndim:])

    def axes(self) -> tuple[Axis, ...] | None:
        """Resolved per-axis geometry on this layer's input, or None when it cannot resolve."""
        if self.window is None or self.spatial_shape is None:
            return None
        try:
            return self.window.resolve(self.spatial_shape)
        except AvgPoolError:
            return None

    def effective(self) -> tuple[Window, tuple[int, ...]] | None:
        """(window, input shape) with a feeding constant Pad folded into the window's padding.

        A zero Pad before an average is padding that *counts* (count_include_pad=True); a
        -inf Pad before a max is ordinary max padding. Returns the layer's own window and
        input when there is no Pad, and None when the Pad cannot be folded (reflect or edge
        mode, a zero Pad before a max, a pool that pads too and excludes pads).
        """
        if self.window is None or self.input_shape is None:
            return None
        if self.pad is None:
            return self.window, self.input_shape
        pad, w = self.pad, self.window
        if pad.mode != "constant" or pad.input_shape is None or isinstance(w.padding, str):
            return None
        if w.kernel_size is None:
            return None
        own = w.padding
        own_zero = all(b == 0 and a == 0 for b, a in own)
        if self.op == "max":
            if pad.value > -3.0e38:
                return None
            include = w.count_include_pad
        elif self.op in ("avg", "lp"):
            if pad.value != 0.0:
                return None
            if self.op == "avg" and not own_zero and not w.count_include_pad:
                return None
            include = True
        else:
            return None
        pads = tuple((b + pb, a + pa) for (b, a), (pb, pa) in zip(own, pad.pads))
        return w.replace(padding=pads, count_include_pad=include), pad.input_shape

    def to_dict(self) -> dict[str, Any]:
        w = self.window
        axes = self.axes()
        return {
            "index": self.index,
            "name": self.name,
            "key": self.key,
            "op": self.op,
            "source_op": self.source_op,
            "convention": self.convention,
            "input_shape": _list(self.input_shape),
            "output_shape": _list(self.output_shape),
            "kernel_size": None if axes is None else [a.kernel for a in axes],
            "stride": None if axes is None else [a.stride for a in axes],
            "dilation": None if w is None else list(w.dilation),
            "padding": None if axes is None else [[a.pad_before, a.pad_after] for a in axes],
            "auto_pad": w.padding if w is not None and isinstance(w.padding, str) else None,
            "ceil_mode": None if w is None else w.ceil_mode,
            "count_include_pad": None if w is None or self.op != "avg" else w.count_include_pad,
            "divisor_override": None if w is None else w.divisor_override,
            "p": self.p,
            "output_size": _list(self.output_size),
            "receptive_field": _list(self.receptive_field),
            "cumulative_stride": _list(self.cumulative_stride),
            "pad": None if self.pad is None else self.pad.to_dict(),
            "inputs": list(self.inputs),
            "outputs": list(self.outputs),
            "written_as": self.written_as,
        }


def _list(value: Sequence[Any] | None) -> list[Any] | None:
    return None if value is None else list(value)


@dataclass(frozen=True)
class Inventory:
    """Every pooling layer of one model, in execution order.

    ``format`` is ``onnx`` or ``torch``; ``inputs`` maps each model input to the shape used;
    ``notes`` says what the reader assumed or could not see (a batch dimension fixed to 1,
    functional calls invisible without fx, ...).
    """

    source: str
    format: str
    layers: tuple[PoolLayer, ...]
    inputs: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    def __iter__(self):
        return iter(self.layers)

    def __len__(self) -> int:
        return len(self.layers)

    def by_name(self, name: str) -> PoolLayer:
        for layer in self.layers:
            if name in (layer.name, layer.key):
                return layer
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "format": self.format,
            "inputs": {k: list(v) for k, v in self.inputs.items()},
            "notes": list(self.notes),
            "layers": [layer.to_dict() for layer in self.layers],
        }


def renumber(layers: Sequence[PoolLayer]) -> tuple[PoolLayer, ...]:
    return tuple(replace(layer, index=i) for i, layer in enumerate(layers))


_OP_SUFFIX = re.compile(r"/[A-Za-z]+(_\d+)?$")


def layer_key(name: str) -> str:
    """A name comparable across formats: ONNX exporters write module paths as ``/a/b/OpType``.

    >>> layer_key("/layer1/0/pool/AveragePool"), layer_key("layer1.0.pool"), layer_key("/MaxPool_1")
    ('layer1.0.pool', 'layer1.0.pool', '')
    """
    if name.startswith("/"):
        name = _OP_SUFFIX.sub("", name)
        return name.strip("/").replace("/", ".")
    return name


def grow_receptive_field(
    rf: Sequence[int], jump: Sequence[int], span: Sequence[int], stride: Sequence[int]
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Receptive field and cumulative stride after a windowed op with this span and stride.

    ``rf_out = rf_in + (span - 1) * jump_in`` and ``jump_out = jump_in * stride``, per axis.

    >>> grow_receptive_field((1, 1), (1, 1), (3, 3), (2, 2))
    ((3, 3), (2, 2))
    >>> grow_receptive_field((3, 3), (2, 2), (3, 3), (2, 2))
    ((7, 7), (4, 4))
    """
    new_rf = tuple(r + (s - 1) * j for r, j, s in zip(rf, jump, span))
    new_jump = tuple(j * st for j, st in zip(jump, stride))
    return new_rf, new_jump


def parse_input_shapes(
    specs: Sequence[str] | Mapping[str, Sequence[int]] | None,
) -> dict[str, tuple[int, ...]]:
    """``["1x3x224x224"]`` or ``["image:1x3x224x224", "mask:1x1x224x224"]`` -> {name: shape}.

    An unnamed shape is stored under the key ``""`` (the model's only input).

    >>> parse_input_shapes(["x:1x3x32x32"])
    {'x': (1, 3, 32, 32)}
    """
    if specs is None:
        return {}
    if isinstance(specs, Mapping):
        return {str(k): tuple(int(v) for v in s) for k, s in specs.items()}
    shapes: dict[str, tuple[int, ...]] = {}
    for spec in specs:
        name, _, dims = spec.rpartition(":")
        try:
            shape = tuple(int(d) for d in re.split(r"[x,]", dims.strip().lower()))
        except ValueError:
            raise AvgPoolError(
                f"--input-shape must look like 1x3x224x224 or NAME:1x3x224x224, got {spec!r}"
            ) from None
        if any(d < 1 for d in shape):
            raise AvgPoolError(f"--input-shape sizes must be >= 1, got {spec!r}")
        if name in shapes:
            raise AvgPoolError(f"--input-shape given twice for {name or 'the input'!r}")
        shapes[name] = shape
    if "" in shapes and len(shapes) > 1:
        raise AvgPoolError("with several --input-shape, name each one: NAME:1x3x224x224")
    return shapes
