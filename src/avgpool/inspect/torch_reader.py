"""Read the pooling layers of a PyTorch model: torch.nn pooling modules, functional calls
(``F.avg_pool2d``, ``x.mean((2, 3))``, ...) seen through torch.fx, and any module carrying an
avgpool `Window` as its ``window`` attribute (the avgpool.nn modules, by duck typing).

The model runs once on a random input of the given shape, which gives every shape and the
values of shape-dependent arguments (``F.avg_pool2d(x, x.shape[-2:])``). A model fx cannot
trace (data-dependent control flow) is read through forward hooks instead: modules only, no
functional calls, no receptive fields; the inventory's notes say so.
torch is imported lazily (``pip install avgpool[torch]``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from avgpool._errors import AvgPoolError
from avgpool.conventions import from_torch
from avgpool.inspect.layers import Inventory, ModelError, PadInfo, PoolLayer, grow_receptive_field, renumber
from avgpool.window import Window

__all__ = ["read_torch"]

_FUNCTIONS = {
    "avg_pool1d": "avg",
    "avg_pool2d": "avg",
    "avg_pool3d": "avg",
    "max_pool1d": "max",
    "max_pool2d": "max",
    "max_pool3d": "max",
    "_max_pool1d": "max",
    "_max_pool2d": "max",
    "_max_pool3d": "max",
    "max_pool1d_with_indices": "max",
    "max_pool2d_with_indices": "max",
    "max_pool3d_with_indices": "max",
    "lp_pool1d": "lp",
    "lp_pool2d": "lp",
    "lp_pool3d": "lp",
    "adaptive_avg_pool1d": "adaptive_avg",
    "adaptive_avg_pool2d": "adaptive_avg",
    "adaptive_avg_pool3d": "adaptive_avg",
    "adaptive_max_pool1d": "adaptive_max",
    "adaptive_max_pool2d": "adaptive_max",
    "adaptive_max_pool3d": "adaptive_max",
    "_adaptive_max_pool1d": "adaptive_max",
    "_adaptive_max_pool2d": "adaptive_max",
    "_adaptive_max_pool3d": "adaptive_max",
    "adaptive_max_pool1d_with_indices": "adaptive_max",
    "adaptive_max_pool2d_with_indices": "adaptive_max",
    "adaptive_max_pool3d_with_indices": "adaptive_max",
}
_PARAMS = {
    "avg": (
        "input",
        "kernel_size",
        "stride",
        "padding",
        "ceil_mode",
        "count_include_pad",
        "divisor_override",
    ),
    "max": ("input", "kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices"),
    "lp": ("input", "norm_type", "kernel_size", "stride", "ceil_mode"),
    "adaptive_avg": ("input", "output_size"),
    "adaptive_max": ("input", "output_size", "return_indices"),
    "reduce": ("input", "dim", "keepdim"),
    "pad": ("input", "pad", "mode", "value"),
    "conv": ("input", "weight", "bias", "stride", "padding", "dilation", "groups"),
}
_PAD_MODES = {
    "ConstantPad": "constant",
    "ZeroPad": "constant",
    "ReflectionPad": "reflect",
    "ReplicationPad": "edge",
    "CircularPad": "wrap",
}
_F_PAD_MODES = {"constant": "constant", "reflect": "reflect", "replicate": "edge", "circular": "wrap"}


def _torch():
    try:
        import torch
        import torch.fx
    except ImportError:  # pragma: no cover - exercised only without the extra
        raise ModelError("reading PyTorch models needs torch: pip install 'avgpool[torch]'") from None
    return torch


def pooling_module_kind(module: Any) -> str | None:
    """The pooling kind of a module, or None: avgpool's modules by their ``op``, other modules
    carrying a `Window` as ``window`` by it, torch.nn pooling classes by class."""
    op = getattr(module, "op", None)
    if isinstance(op, str) and type(module).__module__.startswith("avgpool."):
        return op  # avgpool's modules name their kind (BlurPool and the adaptive ones have no window)
    if isinstance(getattr(module, "window", None), Window):
        if isinstance(op, str):
            return op
        name = type(module).__name__.lower()
        for word, kind in (("blur", "blur"), ("lp", "lp"), ("max", "max")):
            if word in name:
                return kind
        return "avg"
    torch = _torch()
    pooling = torch.nn.modules.pooling
    for cls, kind in (
        (pooling._AvgPoolNd, "avg"),
        (pooling._MaxPoolNd, "max"),
        (pooling._LPPoolNd, "lp"),
        (pooling._AdaptiveAvgPoolNd, "adaptive_avg"),
        (pooling._AdaptiveMaxPoolNd, "adaptive_max"),
    ):
        if isinstance(module, cls):
            return kind
    return None


def _ndim_of(name: str, shape: Sequence[int] | None) -> int:
    for d in (1, 2, 3):
        if name.endswith(f"{d}d") or name.endswith(f"{d}D"):
            return d
    if shape is None:
        raise AvgPoolError(f"cannot tell the spatial rank of {name}")
    return len(shape) - 2


def _window(kind: str, args: Mapping[str, Any], ndim: int) -> Window:
    stride = args.get("stride")
    if stride is not None and isinstance(stride, Sequence) and len(stride) == 0:
        stride = None
    if kind == "avg":
        return from_torch(
            args["kernel_size"],
            stride,
            args.get("padding", 0),
            1,
            bool(args.get("ceil_mode", False)),
            bool(args.get("count_include_pad", True)),
            args.get("divisor_override"),
            op="avg",
            ndim=ndim,
        )
    if kind == "max":
        return from_torch(
            args["kernel_size"],
            stride,
            args.get("padding", 0),
            args.get("dilation", 1),
            bool(args.get("ceil_mode", False)),
            op="max",
            ndim=ndim,
        )
    return from_torch(
        args["kernel_size"], stride, 0, 1, bool(args.get("ceil_mode", False)), op="lp", ndim=ndim
    )


def _module_args(module: Any, kind: str) -> dict[str, Any]:
    names = {
        "avg": ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad", "divisor_override"),
        "max": ("kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices"),
        "lp": ("norm_type", "kernel_size", "stride", "ceil_mode"),
        "adaptive_avg": ("output_size",),
        "adaptive_max": ("output_size", "return_indices"),
    }.get(kind, ())
    return {n: getattr(module, n) for n in names if hasattr(module, n)}


def _module_parts(
    module: Any, name: str, kind: str, in_shape: tuple[int, ...] | None
) -> tuple[str, dict[str, Any], Window | None, PadInfo | None]:
    """(source_op, args, window, pad) of a pooling module: torch.nn's read from its arguments,
    avgpool's from its window; a BlurPool's window is its filter over its own padding."""
    window = getattr(module, "window", None)
    window = window if isinstance(window, Window) else None
    ours = type(module).__module__.startswith("avgpool.")
    source = type(module).__name__ if ours or window is not None else f"nn.{type(module).__name__}"
    if kind == "blur" and ours:
        from avgpool.reference import blur_pads

        ndim = int(module.ndim)
        pads = (blur_pads(int(module.filt_size), int(module.pad_off)),) * ndim
        names = ("filt_size", "stride", "pad_type", "pad_off", "channels")
        args = {n: getattr(module, n) for n in names}
        # the window's padding is where the blur reads; what fills it (reflect, ...) is pad_type
        return source, args, Window(int(module.filt_size), int(module.stride), pads, ndim=ndim), None
    if window is None:
        return source, _module_args(module, kind), None, None
    return source, {"norm_type": getattr(module, "norm_type", None)}, window, None


def _shape(value: Any) -> tuple[int, ...] | None:
    torch = _torch()
    if isinstance(value, torch.Tensor):
        return tuple(int(s) for s in value.shape)
    if isinstance(value, (tuple, list)) and value and isinstance(value[0], torch.Tensor):
        return tuple(int(s) for s in value[0].shape)
    return None


def _adaptive_geometry(n: int, out: int) -> tuple[int, int]:
    """(longest window, typical step) of PyTorch's adaptive windows on one axis."""
    longest = max(-(-(o + 1) * n // out) - (o * n) // out for o in range(out))
    return longest, max(n // out, 1)


def _make_layer(
    name: str,
    kind: str,
    source_op: str,
    args: Mapping[str, Any],
    in_shape: tuple[int, ...] | None,
    out_shape: tuple[int, ...] | None,
    window: Window | None = None,
    pad: PadInfo | None = None,
) -> PoolLayer:
    ndim = window.ndim if window is not None else _ndim_of(source_op, in_shape)
    output_size = None
    if window is None:
        if kind in ("avg", "max", "lp"):
            window = _window(kind, args, ndim)
        elif kind.startswith("global"):
            window = Window(None, ndim=ndim, convention="torch")
        elif kind.startswith("adaptive"):
            size = args["output_size"]
            size = (size,) * ndim if isinstance(size, int) else tuple(size)
            output_size = tuple(None if s is None else int(s) for s in size)
    p = float(args["norm_type"]) if kind == "lp" else None
    if p is None and window is not None and hasattr(args, "get") and args.get("norm_type") is not None:
        p = float(args["norm_type"])
    return PoolLayer(
        name=name,
        op=kind,
        source_op=source_op,
        convention="torch" if window is None else window.convention,
        window=window,
        input_shape=in_shape,
        output_shape=out_shape,
        p=p,
        output_size=output_size,
        pad=pad,
        attributes={k: v for k, v in args.items() if k != "input"},
    )


def _bind(kind: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> dict[str, Any]:
    bound = dict(zip(_PARAMS[kind], args))
    bound.update(kwargs)
    return bound


def _example_inputs(
    model: Any, input_shapes: Mapping[str, Sequence[int]], example_inputs: Sequence[Any] | None
) -> tuple[Any, ...]:
    torch = _torch()
    if example_inputs is not None:
        return tuple(example_inputs)
    if not input_shapes:
        raise AvgPoolError(
            "a PyTorch model needs --input-shape (e.g. 1x3x224x224): it has no declared shapes"
        )
    import inspect as pyinspect

    params = [
        p
        for p in pyinspect.signature(model.forward).parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
    ]
    if "" in input_shapes:
        shapes = [input_shapes[""]]
    else:
        missing = [p.name for p in params if p.name not in input_shapes]
        if missing:
            raise AvgPoolError(f"--input-shape is missing for forward() argument(s) {missing}")
        shapes = [input_shapes[p.name] for p in params]
    gen = torch.Generator().manual_seed(0)
    return tuple(torch.randn(*s, generator=gen) for s in shapes)


def read_torch(
    model: Any,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    *,
    example_inputs: Sequence[Any] | None = None,
    source: str | None = None,
) -> Inventory:
    """Every pooling layer of a ``torch.nn.Module``, in execution order.

    Parameters
    ----------
    model : torch.nn.Module
    input_shapes : mapping, optional
        Shape per ``forward`` argument (key ``""`` for a single input); random inputs of these
        shapes run through the model once (in eval mode, without gradients).
    example_inputs : sequence of tensors, optional
        Used instead of random inputs.
    """
    torch = _torch()
    if not isinstance(model, torch.nn.Module):
        raise ModelError(f"expected a torch.nn.Module, got {type(model).__name__}")
    source = source or type(model).__name__
    inputs = _example_inputs(model, dict(input_shapes or {}), example_inputs)
    shapes = {f"input{i}" if len(inputs) > 1 else "input": _shape(x) or () for i, x in enumerate(inputs)}
    was_training = model.training
    model.eval()
    try:
        try:
            layers, notes = _read_fx(model, inputs)
        except AvgPoolError:
            raise
        except Exception as exc:
            try:
                layers = _read_hooks(model, inputs)
            except Exception as run_exc:
                shown = ", ".join("x".join(map(str, s)) for s in shapes.values())
                raise ModelError(
                    f"{source} failed on a random input of shape {shown}: "
                    f"{type(run_exc).__name__}: {str(run_exc).splitlines()[0] if str(run_exc) else ''}"
                ) from None
            notes = [
                f"torch.fx could not trace the model ({type(exc).__name__}: {_first_line(exc)}); "
                "read through module hooks: functional pooling calls and receptive fields are not shown"
            ]
    finally:
        model.train(was_training)
    return Inventory(source, "torch", renumber(layers), shapes, tuple(notes))


def _first_line(exc: BaseException) -> str:
    text = str(exc)
    return text.splitlines()[0][:120] if text else ""


def _tracer():
    torch = _torch()

    class Tracer(torch.fx.Tracer):
        def is_leaf_module(self, m: Any, qualname: str) -> bool:
            return pooling_module_kind(m) is not None or super().is_leaf_module(m, qualname)

    return Tracer()


def _read_fx(model: Any, inputs: tuple[Any, ...]) -> tuple[list[PoolLayer], list[str]]:
    torch = _torch()
    graph = _tracer().trace(model)
    gm = torch.fx.GraphModule(model, graph)
    values: dict[Any, Any] = {}

    class Recorder(torch.fx.Interpreter):
        def run_node(self, n: Any) -> Any:
            result = super().run_node(n)
            values[n] = _shape(result) if _shape(result) is not None else result
            return result

    with torch.no_grad():
        Recorder(gm).run(*inputs)

    def value(a: Any) -> Any:
        return torch.fx.node.map_arg(a, lambda n: values.get(n))

    layers: list[PoolLayer] = []
    fields: dict[Any, Any] = {}
    pads: dict[Any, PadInfo] = {}
    for node in gm.graph.nodes:
        out_shape = values.get(node) if isinstance(values.get(node), tuple) else None
        if node.op == "placeholder":
            if out_shape and len(out_shape) >= 3:
                fields[node] = ((1,) * (len(out_shape) - 2), (1,) * (len(out_shape) - 2))
            continue
        layer = None
        x = node.args[0] if node.args and isinstance(node.args[0], torch.fx.Node) else None
        in_shape = values.get(x) if x is not None and isinstance(values.get(x), tuple) else None
        if node.op == "call_module":
            module = gm.get_submodule(node.target)
            kind = pooling_module_kind(module)
            if kind is not None:
                source_op, args, window, own_pad = _module_parts(module, node.target, kind, in_shape)
                layer = _make_layer(
                    node.target, kind, source_op, args, in_shape, out_shape, window, own_pad or pads.get(x)
                )
            else:
                pad = _module_pad(module, node.target, in_shape)
                if pad is not None:
                    pads[node] = pad
                    fields[node] = fields.get(x)  # padding keeps the receptive field
                    continue
        elif node.op in ("call_function", "call_method"):
            fname = node.target if node.op == "call_method" else getattr(node.target, "__name__", "")
            kind = _FUNCTIONS.get(fname)
            if kind is not None:
                args = _bind(kind, value(node.args), value(node.kwargs))
                layer = _make_layer(
                    node.name, kind, f"F.{fname.lstrip('_')}", args, in_shape, out_shape, None, pads.get(x)
                )
            elif fname in ("mean", "amax") and in_shape is not None and len(in_shape) >= 3:
                args = _bind("reduce", value(node.args), value(node.kwargs))
                dims = args.get("dim")
                dims = [dims] if isinstance(dims, int) else list(dims or [])
                if {d % len(in_shape) for d in dims} == set(range(2, len(in_shape))):
                    kind = "global_avg" if fname == "mean" else "global_max"
                    prefix = "Tensor." if node.op == "call_method" else "torch."
                    layer = _make_layer(
                        node.name, kind, f"{prefix}{fname}", args, in_shape, out_shape, None, None
                    )
            elif fname == "pad" and in_shape is not None:
                args = _bind("pad", value(node.args), value(node.kwargs))
                pad = _functional_pad(node.name, args, in_shape)
                if pad is not None:
                    pads[node] = pad
                    fields[node] = fields.get(x)
                    continue
        if layer is not None:
            rf = _layer_field(layer, fields.get(x))
            if rf is not None:
                layer = _with_field(layer, rf)
            fields[node] = rf
            layers.append(layer)
        else:
            fields[node] = _node_field(node, gm, fields, values)
    return layers, []


def _with_field(layer: PoolLayer, rf: Any) -> PoolLayer:
    from dataclasses import replace

    return replace(layer, receptive_field=rf[0], cumulative_stride=rf[1])


def _layer_field(layer: PoolLayer, field_in: Any) -> Any:
    shape = layer.spatial_shape
    if field_in is None or shape is None or len(field_in[0]) != len(shape):
        return None
    rf, jump = field_in
    if layer.window is not None:
        if layer.window.kernel_size is None:
            return grow_receptive_field(rf, jump, shape, shape)
        w = layer.window
        spans = tuple(d * (k - 1) + 1 for k, d in zip(w.kernel_size, w.dilation))
        return grow_receptive_field(rf, jump, spans, w.stride)
    if layer.output_size is None:
        return None
    geo = [_adaptive_geometry(n, n if o is None else o) for n, o in zip(shape, layer.output_size)]
    return grow_receptive_field(rf, jump, [g[0] for g in geo], [g[1] for g in geo])


def _node_field(node: Any, gm: Any, fields: Mapping[Any, Any], values: Mapping[Any, Any]) -> Any:
    torch = _torch()
    out_shape = values.get(node)
    if not isinstance(out_shape, tuple):
        return None
    x = node.args[0] if node.args and isinstance(node.args[0], torch.fx.Node) else None
    conv = None
    if node.op == "call_module":
        module = gm.get_submodule(node.target)
        if isinstance(module, torch.nn.modules.conv._ConvNd):
            if module.transposed:
                return None
            conv = (module.kernel_size, module.stride, module.dilation)
    elif node.op == "call_function" and getattr(node.target, "__name__", "") in (
        "conv1d",
        "conv2d",
        "conv3d",
    ):
        args = _bind("conv", node.args, node.kwargs)
        weight = values.get(args["weight"])
        if not isinstance(weight, tuple):
            return None
        n = len(weight) - 2
        stride, dilation = args.get("stride", 1), args.get("dilation", 1)
        conv = (
            weight[2:],
            (stride,) * n if isinstance(stride, int) else stride,
            (dilation,) * n if isinstance(dilation, int) else dilation,
        )
    if conv is not None:
        field_in = fields.get(x)
        if field_in is None:
            return None
        kernel, stride, dilation = conv
        spans = tuple(d * (k - 1) + 1 for k, d in zip(kernel, dilation))
        return grow_receptive_field(field_in[0], field_in[1], spans, stride)
    candidates = []
    for inp in node.all_input_nodes:
        f, s = fields.get(inp), values.get(inp)
        if f is None or not isinstance(s, tuple) or len(out_shape) != len(s):
            continue
        if s[2:] == out_shape[2:]:
            candidates.append(f)
    if not candidates:
        return None
    return max(candidates, key=lambda f: (sum(f[0]), sum(f[1])))


def _module_pad(module: Any, name: str, in_shape: tuple[int, ...] | None) -> PadInfo | None:
    cls = type(module).__name__
    mode = next((m for prefix, m in _PAD_MODES.items() if cls.startswith(prefix)), None)
    if mode is None or in_shape is None:
        return None
    value = float(getattr(module, "value", 0.0) or 0.0)
    return _pad_pairs(name, tuple(module.padding), mode, value, in_shape)


def _functional_pad(name: str, args: Mapping[str, Any], in_shape: tuple[int, ...]) -> PadInfo | None:
    mode = _F_PAD_MODES.get(args.get("mode", "constant"))
    if mode is None:
        return None
    value = args.get("value")
    return _pad_pairs(name, tuple(args["pad"]), mode, 0.0 if value is None else float(value), in_shape)


def _pad_pairs(name: str, flat: tuple[int, ...], mode: str, value: float, in_shape: tuple[int, ...]):
    """torch's pad tuple (last axis first: left, right, top, bottom, ...) -> spatial pairs."""
    ndim = len(in_shape) - 2
    pairs = [(0, 0)] * len(in_shape)
    for i in range(len(flat) // 2):
        pairs[len(in_shape) - 1 - i] = (int(flat[2 * i]), int(flat[2 * i + 1]))
    if any(pairs[:2]) and any(p != (0, 0) for p in pairs[:2]):
        return None
    if any(p < 0 for pair in pairs for p in pair) or math.isnan(value):
        return None
    return PadInfo(name, mode, value, tuple(pairs[2:]), in_shape) if ndim >= 1 else None


def _read_hooks(model: Any, inputs: tuple[Any, ...]) -> list[PoolLayer]:
    torch = _torch()
    seen: list[tuple[str, Any, Any, Any]] = []
    handles = []
    for name, module in model.named_modules():
        if pooling_module_kind(module) is None:
            continue

        def hook(mod: Any, args: Any, output: Any, name: str = name) -> None:
            seen.append((name, mod, _shape(args[0]) if args else None, _shape(output)))

        handles.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            model(*inputs)
    finally:
        for h in handles:
            h.remove()
    layers = []
    for name, module, in_shape, out_shape in seen:
        kind = pooling_module_kind(module)
        source_op, args, window, pad = _module_parts(module, name, kind, in_shape)
        args = args if window is None or kind == "blur" else {}
        layers.append(_make_layer(name, kind, source_op, args, in_shape, out_shape, window, pad))
    return layers
