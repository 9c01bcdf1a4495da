"""Read the pooling layers of an ONNX model: every pool node, global pooling in disguise
(ReduceMean / ReduceMax over all spatial axes) and the Pad nodes that feed a pool.

Shapes come from ONNX shape inference after the model's inputs are fixed (``input_shapes``);
a dynamic batch dimension alone is fixed to 1, any other dynamic dimension must be given.
onnx is imported lazily (``pip install avgpool[inspect]``).
"""

from __future__ import annotations

import ast
import dataclasses
import os
from collections.abc import Mapping, Sequence
from typing import Any

from avgpool._errors import AvgPoolError
from avgpool.conventions import from_onnx
from avgpool.inspect.layers import (
    Inventory,
    ModelError,
    PadInfo,
    PoolLayer,
    grow_receptive_field,
    renumber,
)
from avgpool.window import Window

__all__ = ["load_onnx", "read_onnx"]

POOL_OPS = {
    "AveragePool": "avg",
    "MaxPool": "max",
    "LpPool": "lp",
    "GlobalAveragePool": "global_avg",
    "GlobalMaxPool": "global_max",
    "GlobalLpPool": "global_lp",
}
REDUCE_OPS = {"ReduceMean": "global_avg", "ReduceMax": "global_max"}
_CONV_OPS = ("Conv", "ConvInteger", "QLinearConv")


def _onnx():
    try:
        import onnx
    except ImportError:  # pragma: no cover - exercised only without the extra
        raise ModelError("reading ONNX models needs onnx: pip install 'avgpool[inspect]'") from None
    return onnx


def load_onnx(path: str | os.PathLike[str]) -> Any:
    """Load an ONNX file with its external data, or raise ModelError with one clear sentence."""
    onnx = _onnx()
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ModelError(f"{path}: no such file")
    if os.path.isdir(path):
        raise ModelError(f"{path}: is a directory, not an ONNX file")
    try:
        model = onnx.load(path, load_external_data=False)
    except Exception as exc:  # protobuf's DecodeError and friends
        raise ModelError(f"{path}: not an ONNX model or truncated ({type(exc).__name__}: {exc})") from None
    if not model.opset_import or not model.graph.node:
        raise ModelError(f"{path}: not an ONNX model (no graph nodes or opset imports)")
    missing = _missing_external_data(model, os.path.dirname(os.path.abspath(path)))
    if missing:
        raise ModelError(f"{path}: external data file {missing!r} is missing (expected beside the model)")
    try:
        from onnx.external_data_helper import load_external_data_for_model

        load_external_data_for_model(model, os.path.dirname(os.path.abspath(path)))
    except Exception as exc:
        raise ModelError(f"{path}: cannot load its external data ({exc})") from None
    return model


def _missing_external_data(model: Any, base: str) -> str | None:
    onnx = _onnx()
    for tensor in _all_tensors(model):
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            info = {e.key: e.value for e in tensor.external_data}
            location = info.get("location", "")
            if not os.path.exists(os.path.join(base, location)):
                return location
    return None


def _all_tensors(model: Any):
    yield from model.graph.initializer
    for node in model.graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t


def _attrs(node: Any) -> dict[str, Any]:
    onnx = _onnx()
    out = {}
    for attr in node.attribute:
        value = onnx.helper.get_attribute_value(attr)
        if isinstance(value, bytes):
            value = value.decode()
        elif isinstance(value, list):
            value = [v.decode() if isinstance(v, bytes) else v for v in value]
        out[attr.name] = value
    return out


def _dims(type_proto: Any) -> tuple[int | str, ...] | None:
    if not type_proto.HasField("tensor_type") or not type_proto.tensor_type.HasField("shape"):
        return None
    dims: list[int | str] = []
    for d in type_proto.tensor_type.shape.dim:
        if d.HasField("dim_value"):
            dims.append(int(d.dim_value))
        else:
            dims.append(d.dim_param or "?")
    return tuple(dims)


def _fix_inputs(model: Any, input_shapes: Mapping[str, Sequence[int]]) -> tuple[dict, list[str]]:
    """Set every graph input's shape; returns {name: shape} and notes on what was assumed."""
    initializers = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    unknown = set(input_shapes) - {i.name for i in inputs} - {""}
    if unknown:
        names = ", ".join(i.name for i in inputs)
        raise AvgPoolError(f"--input-shape names {sorted(unknown)}, but the model's inputs are: {names}")
    if "" in input_shapes and len(inputs) != 1:
        names = ", ".join(i.name for i in inputs)
        raise AvgPoolError(f"the model has {len(inputs)} inputs ({names}): name them, NAME:1x3x224x224")
    fixed: dict[str, tuple[int, ...]] = {}
    notes: list[str] = []
    for graph_input in inputs:
        declared = _dims(graph_input.type)
        given = input_shapes.get(graph_input.name, input_shapes.get("")) if input_shapes else None
        if given is not None:
            given = tuple(int(g) for g in given)
            if declared is not None and len(declared) != len(given):
                raise AvgPoolError(
                    f"input {graph_input.name!r} has rank {len(declared)} ({_fmt(declared)}), "
                    f"--input-shape gives {_fmt(given)}"
                )
            if declared is not None:
                for d, g in zip(declared, given):
                    if isinstance(d, int) and d != g:
                        raise AvgPoolError(
                            f"input {graph_input.name!r} is declared {_fmt(declared)}; "
                            f"--input-shape {_fmt(given)} contradicts it"
                        )
            shape = given
        elif declared is None:
            raise AvgPoolError(
                f"input {graph_input.name!r} has no declared shape: "
                f"pass --input-shape {graph_input.name}:NxCx..."
            )
        else:
            dynamic = [i for i, d in enumerate(declared) if not isinstance(d, int)]
            if [i for i in dynamic if i != 0]:
                example = [d if isinstance(d, int) else 1 for d in declared]
                raise AvgPoolError(
                    f"input {graph_input.name!r} has dynamic dimensions ({_fmt(declared)}): "
                    f"pass --input-shape {graph_input.name}:{_fmt(example)} "
                    "with the sizes you deploy"
                )
            if dynamic:
                notes.append(f"input {graph_input.name!r}: dynamic batch dimension {declared[0]!r} set to 1")
            shape = tuple(d if isinstance(d, int) else 1 for d in declared)
        dims = graph_input.type.tensor_type.shape
        del dims.dim[:]
        for s in shape:
            dims.dim.add().dim_value = s
        fixed[graph_input.name] = shape
    return fixed, notes


def _fmt(shape: Sequence[Any]) -> str:
    return "x".join(str(s) for s in shape)


class _Graph:
    """Shapes, producers and constant values of one (shape-inferred) graph."""

    def __init__(self, model: Any) -> None:
        onnx = _onnx()
        self.model = model
        self.shapes: dict[str, tuple[int | str, ...]] = {}
        for vi in (*model.graph.input, *model.graph.value_info, *model.graph.output):
            dims = _dims(vi.type)
            if dims is not None:
                self.shapes[vi.name] = dims
        self.producer = {out: node for node in model.graph.node for out in node.output}
        self.consumers: dict[str, list[Any]] = {}
        for node in model.graph.node:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)
        self.initializers = {t.name: t for t in model.graph.initializer}
        for t in model.graph.initializer:
            self.shapes.setdefault(t.name, tuple(t.dims))
        self._numpy_helper = onnx.numpy_helper
        self._cache: dict[str, Any] = {}

    def shape(self, name: str) -> tuple[int, ...] | None:
        dims = self.shapes.get(name)
        if dims is None or not all(isinstance(d, int) for d in dims):
            return None
        return tuple(int(d) for d in dims)

    def constant(self, name: str) -> Any:
        """The value of a tensor computed from constants only, or None."""
        if not name:
            return None
        if name in self._cache:
            return self._cache[name]
        value = None
        if name in self.initializers:
            value = self._numpy_helper.to_array(self.initializers[name])
        else:
            node = self.producer.get(name)
            if node is not None and node.op_type == "Constant":
                attrs = _attrs(node)
                if "value" in attrs:
                    value = self._numpy_helper.to_array(attrs["value"])
                else:
                    import numpy as np

                    for key in ("value_ints", "value_int", "value_floats", "value_float"):
                        if key in attrs:
                            value = np.asarray(attrs[key])
            elif node is not None:
                value = self._fold(node, name)
        self._cache[name] = value
        return value

    def _fold(self, node: Any, name: str) -> Any:
        """Evaluate a small subgraph of constants (exporters compute Pad's pads this way)."""
        needed: list[Any] = []
        stack, seen = [node], set()
        while stack:
            current = stack.pop()
            if id(current) in seen:
                continue
            seen.add(id(current))
            if current.op_type in ("If", "Loop", "Scan") or len(seen) > 64:
                return None
            needed.append(current)
            for inp in current.input:
                if not inp or inp in self.initializers:
                    continue
                producer = self.producer.get(inp)
                if producer is None:  # a graph input: not constant
                    return None
                stack.append(producer)
        onnx = _onnx()
        order = {id(n): i for i, n in enumerate(self.model.graph.node)}
        needed.sort(key=lambda n: order[id(n)])
        used = {i for n in needed for i in n.input}
        inits = [t for t in self.model.graph.initializer if t.name in used]
        graph = onnx.helper.make_graph(
            needed, "fold", [], [onnx.helper.make_empty_tensor_value_info(name)], initializer=inits
        )
        sub = onnx.helper.make_model(graph, opset_imports=self.model.opset_import)
        try:
            from onnx.reference import ReferenceEvaluator

            return ReferenceEvaluator(sub).run(None, {})[0]
        except Exception:
            return None


def _spatial_axes(axes: Any, rank: int) -> bool:
    if axes is None or rank < 3:
        return False
    norm = {int(a) % rank for a in axes}
    return norm == set(range(2, rank))


def _reduce_axes(node: Any, attrs: Mapping[str, Any], graph: _Graph, rank: int) -> Any:
    if "axes" in attrs:
        return attrs["axes"]
    if len(node.input) > 1 and node.input[1]:
        value = graph.constant(node.input[1])
        return None if value is None else [int(v) for v in value.reshape(-1)]
    if attrs.get("noop_with_empty_axes", 0):
        return []
    return list(range(rank))  # all axes: a full reduction, batch and channels too


def _pad_info(node: Any, graph: _Graph, rank: int) -> PadInfo | None:
    """A Pad node's spatial pads, or None if it pads batch/channels or is not constant."""
    attrs = _attrs(node)
    mode = attrs.get("mode", "constant")
    if "pads" in attrs:  # opset < 11
        pads = list(attrs["pads"])
        value = float(attrs.get("value", 0.0))
    else:
        raw = graph.constant(node.input[1]) if len(node.input) > 1 else None
        if raw is None:
            return None
        pads = [int(v) for v in raw.reshape(-1)]
        value = 0.0
        if len(node.input) > 2 and node.input[2]:
            fill = graph.constant(node.input[2])
            if fill is None:
                return None
            value = float(fill.reshape(-1)[0]) if fill.size else 0.0
        if len(node.input) > 3 and node.input[3]:
            axes = graph.constant(node.input[3])
            if axes is None:
                return None
            full = [0] * (2 * rank)
            naxes = len(axes.reshape(-1))
            for i, a in enumerate(int(v) % rank for v in axes.reshape(-1)):
                full[a], full[a + rank] = pads[i], pads[i + naxes]
            pads = full
    if len(pads) != 2 * rank or any(pads[i] or pads[i + rank] for i in (0, 1)) or any(p < 0 for p in pads):
        return None
    spatial = tuple((pads[i], pads[i + rank]) for i in range(2, rank))
    return PadInfo(node.name or node.output[0], mode, value, spatial, graph.shape(node.input[0]))


def read_onnx(
    model: Any,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    *,
    source: str | None = None,
) -> Inventory:
    """Every pooling layer of an ONNX model (a path, or a loaded ``onnx.ModelProto``).

    Parameters
    ----------
    model : str, os.PathLike or onnx.ModelProto
    input_shapes : mapping of input name to shape, optional
        Fixes dynamic dimensions (key ``""`` for a model's only input). A dynamic batch
        dimension alone is set to 1; any other dynamic dimension must be given.

    Raises
    ------
    ModelError
        The file is not ONNX, is truncated, or misses its external data.
    AvgPoolError
        Dynamic dimensions without ``input_shapes``, or shapes that contradict the model.
    """
    onnx = _onnx()
    if isinstance(model, (str, os.PathLike)):
        source = source or os.fspath(model)
        model = load_onnx(model)
    else:
        source = source or (model.graph.name or "<onnx model>")
        copy = onnx.ModelProto()
        copy.CopyFrom(model)
        model = copy
    fixed, notes = _fix_inputs(model, dict(input_shapes or {}))
    _fold_pad_inputs(model)
    try:
        model = onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    except Exception as exc:
        raise ModelError(f"{source}: ONNX shape inference failed: {exc}") from None
    graph = _Graph(model)
    if any(n.op_type in ("If", "Loop", "Scan") for n in model.graph.node):
        notes.append("pooling inside If/Loop/Scan subgraphs is not listed")
    layers: list[PoolLayer] = []
    fields: dict[str, tuple[tuple[int, ...], tuple[int, ...]] | None] = {}
    for name, shape in fixed.items():
        if len(shape) >= 3:
            fields[name] = ((1,) * (len(shape) - 2), (1,) * (len(shape) - 2))
    taken: set[str] = set()
    for node in model.graph.node:
        layer = _layer(node, graph, fields)
        if layer is not None:
            named = _module_name(node, taken)
            layer = dataclasses.replace(layer, name=named or layer.name, written_as=_written_as(node))
            layers.append(layer)
            taken.add(layers[-1].name)
        _propagate(node, graph, fields)
    return Inventory(source, "onnx", renumber(layers), fixed, tuple(notes))


def _written_as(node: Any) -> str | None:
    """The innermost torch.nn module the dynamo exporter records for a node, if any."""
    recorded = next((p.value for p in node.metadata_props if p.key == "pkg.torch.onnx.class_hierarchy"), None)
    if not recorded:
        return None
    try:
        classes = ast.literal_eval(recorded)  # "['torch.nn...Sequential', ..., 'aten.mean.dim']"
    except (ValueError, SyntaxError):
        return None
    modules = [c for c in classes[:-1] if isinstance(c, str)] if isinstance(classes, list) else []
    return modules[-1] if modules else None


def _module_name(node: Any, taken: set[str]) -> str | None:
    """A dynamo-exported node's name as the TorchScript exporter writes it (``/layer1/pool/
    AveragePool``), from the module path the exporter records in its ``namespace`` metadata;
    None for a node named otherwise. Its generic name (``node_avg_pool2d_3``) says nothing of
    where the layer is (nor does ``n0``, after its optimiser), and the same path under both
    exporters lets diff match their layers."""
    if node.name.startswith("/"):  # already a path (the TorchScript exporter's)
        return None
    namespace = next((p.value for p in node.metadata_props if p.key == "namespace"), None)
    if not namespace:
        return None
    # ": ResNet/layer1: Sequential/layer1.0: BasicBlock/avg_pool2d: aten.avg_pool2d.default":
    # the root module (no name), each submodule by its qualified name, then the traced op
    hops = [part.split(":", 1)[0].strip() for part in namespace.split("/")][1:-1]
    path = next((h for h in reversed(hops) if h), "").replace(".", "/")
    name = f"/{path}/{node.op_type}" if path else f"/{node.op_type}"
    unique, n = name, 0
    while unique in taken:
        n += 1
        unique = f"{name}_{n}"
    return unique


def _fold_pad_inputs(model: Any) -> None:
    """Replace a Pad's computed pads / fill by initializers, so shape inference sees through them
    (the PyTorch exporter computes F.pad's pads with a dozen Constant/Concat/Slice nodes)."""
    onnx = _onnx()
    graph = _Graph(model)
    for node in model.graph.node:
        if node.op_type != "Pad":
            continue
        for i in range(1, len(node.input)):
            name = node.input[i]
            if not name or name in graph.initializers:
                continue
            value = graph.constant(name)
            if value is None:
                continue
            folded = f"{name}__avgpool_folded"
            model.graph.initializer.append(onnx.numpy_helper.from_array(value, folded))
            node.input[i] = folded


def _layer(node: Any, graph: _Graph, fields: Mapping[str, Any]) -> PoolLayer | None:
    if node.domain not in ("", "ai.onnx"):
        return None
    op = POOL_OPS.get(node.op_type) or REDUCE_OPS.get(node.op_type)
    if op is None:
        return None
    attrs = _attrs(node)
    x = node.input[0]
    in_shape = graph.shape(x)
    out_shape = graph.shape(node.output[0])
    rank = len(in_shape) if in_shape else len(graph.shapes.get(x, ())) or None
    if node.op_type in REDUCE_OPS:
        if rank is None or not _spatial_axes(_reduce_axes(node, attrs, graph, rank), rank):
            return None
        window: Window | None = Window(None, ndim=rank - 2, convention="onnx")
    elif op.startswith("global"):
        if rank is None or rank < 3:
            return None
        window = Window(None, ndim=rank - 2, convention="onnx")
    else:
        try:
            window = from_onnx(attrs, op_type=node.op_type)
            if rank is not None and window.ndim != rank - 2:  # ONNX Runtime refuses these too
                raise AvgPoolError(
                    f"kernel_shape has {window.ndim} entries but the input has {rank - 2} spatial axes "
                    f"(rank {rank})"
                )
        except AvgPoolError as exc:
            raise ModelError(f"node {node.name or node.output[0]!r} ({node.op_type}): {exc}") from None
    for shape in (in_shape, out_shape):
        if shape and any(isinstance(d, int) and d < 0 for d in shape):
            raise ModelError(
                f"node {node.name or node.output[0]!r} ({node.op_type}): shape {list(shape)} has a "
                "negative dimension: the model's geometry does not fit its input"
            )
    pad = None
    producer = graph.producer.get(x)
    if producer is not None and producer.op_type == "Pad" and rank:
        pad = _pad_info(producer, graph, rank)
    rf = _after(node, graph, fields, window)
    return PoolLayer(
        name=node.name or node.output[0],
        op=op,
        source_op=node.op_type,
        convention="onnx",
        window=window,
        input_shape=in_shape,
        output_shape=out_shape,
        receptive_field=None if rf is None else rf[0],
        cumulative_stride=None if rf is None else rf[1],
        p=float(attrs.get("p", 2)) if op in ("lp", "global_lp") else None,
        pad=pad,
        inputs=tuple(node.input),
        outputs=tuple(node.output),
        attributes=attrs,
    )


def _after(node: Any, graph: _Graph, fields: Mapping[str, Any], window: Window | None):
    """(receptive field, cumulative stride) of a windowed node's output."""
    x = node.input[0]
    field_in = fields.get(x)
    shape = graph.shape(x)
    if field_in is None or window is None or shape is None:
        return None
    rf, jump = field_in
    if len(rf) != len(shape) - 2:
        return None
    if window.kernel_size is None:
        return grow_receptive_field(rf, jump, shape[2:], shape[2:])
    spans = tuple(d * (k - 1) + 1 for k, d in zip(window.kernel_size, window.dilation))
    return grow_receptive_field(rf, jump, spans, window.stride)


def _propagate(node: Any, graph: _Graph, fields: dict[str, Any]) -> None:
    """Carry receptive fields through one node (convs and pools grow them; shape-preserving
    ops pass the widest input's through; anything else makes them unknown)."""
    if not node.output:
        return
    out = node.output[0]
    if node.op_type in POOL_OPS or node.op_type in REDUCE_OPS:
        attrs = _attrs(node)
        if node.op_type in REDUCE_OPS:
            shape = graph.shape(node.input[0])
            rank = len(shape) if shape else 0
            if rank and _spatial_axes(_reduce_axes(node, attrs, graph, rank), rank):
                fields[out] = _after(node, graph, fields, Window(None, ndim=rank - 2))
            return
        try:
            if node.op_type.startswith("Global"):
                shape = graph.shape(node.input[0])
                window = Window(None, ndim=len(shape) - 2) if shape and len(shape) > 2 else None
            else:
                window = from_onnx(attrs, op_type=node.op_type)
        except AvgPoolError:
            window = None
        fields[out] = _after(node, graph, fields, window)
        return
    if node.op_type in _CONV_OPS:
        attrs = _attrs(node)
        field_in = fields.get(node.input[0])
        weight = graph.shape(node.input[3 if node.op_type == "QLinearConv" else 1])
        kernel = attrs.get("kernel_shape") or (weight[2:] if weight else None)
        if field_in is None or kernel is None:
            fields[out] = None
            return
        n = len(kernel)
        strides = attrs.get("strides") or [1] * n
        dilations = attrs.get("dilations") or [1] * n
        spans = tuple(d * (k - 1) + 1 for k, d in zip(kernel, dilations))
        fields[out] = grow_receptive_field(field_in[0], field_in[1], spans, strides)
        return
    known = [fields[i] for i in node.input if fields.get(i) is not None]
    out_shape = graph.shape(out)
    if not known or out_shape is None:
        return
    same = [
        f
        for i, f in ((i, fields.get(i)) for i in node.input)
        if f is not None and (graph.shape(i) or ())[2:] == out_shape[2:] and len(out_shape) - 2 == len(f[0])
    ]
    if node.op_type == "Pad":
        same = [fields[node.input[0]]] if fields.get(node.input[0]) is not None else []
    if same:
        widest = max(same, key=lambda f: (sum(f[0]), sum(f[1])))
        for o in node.output:
            fields[o] = widest
