"""The torch runners `avgpool.serve._runners.load_runner` loads: an ``nn.Module`` (forward
hooks on the pooling modules during a sampled run), an ExportedProgram (an fx Interpreter that
keeps the pooling nodes' outputs) and TorchScript (no pooling outputs); `_runners` says how
each samples."""

from __future__ import annotations

import inspect as pyinspect
import os
import threading
from collections.abc import Mapping
from typing import Any

import numpy as np

from avgpool._errors import AvgPoolError
from avgpool.serve._runner import PLATFORMS, Runner, TensorSpec, _no_compile, datatype_of

#: aten ops (without overload, leading underscores stripped) whose output is a pooling layer's.
_ATEN_POOLING = frozenset(
    f"{op}{d}d{suffix}"
    for op in ("avg_pool", "max_pool", "lp_pool", "adaptive_avg_pool", "adaptive_max_pool")
    for d in (1, 2, 3)
    for suffix in ("", "_with_indices")
)


class _Recorder:
    """Collects pooling outputs for one thread: a module called several times in one forward
    adds each call's output along axis 0 (when the shapes allow)."""

    def __init__(self) -> None:
        self.owner = threading.get_ident()
        self.values: dict[str, np.ndarray] = {}

    def add(self, name: str, value: Any) -> None:
        if threading.get_ident() != self.owner:
            return
        array = _copy(value)
        old = self.values.get(name)
        if old is not None and old.shape[1:] == array.shape[1:]:
            array = np.concatenate([old, array])
        self.values[name] = array


def _numpy(value: Any) -> np.ndarray:
    if isinstance(value, (tuple, list)):
        value = value[0]
    if hasattr(value, "detach"):
        import torch

        value = value.detach()
        if value.dtype in (torch.bfloat16,):
            value = value.float()
        return value.cpu().numpy()
    return np.asarray(value)


def _copy(value: Any) -> np.ndarray:
    """A pooling output as an array of its own: a later in-place op of the model (a ReLU with
    ``inplace=True``) would otherwise change what the telemetry reads."""
    return np.array(_numpy(value), copy=True)


# --------------------------------------------------------------------------- torch


def torch_runner(
    source: str, name: str, version: str, shapes: dict[str, tuple[int, ...]], *, trust: bool, compile: bool
) -> Runner:
    import torch

    from avgpool._loading import load_torch_model

    loaded = load_torch_model(source, trust=trust)
    module = loaded.module
    if loaded.format == "exported":
        return _exported_runner(torch, loaded, name, version, compile)
    module.eval()
    if loaded.format == "torchscript":
        _no_compile(compile, source, "TorchScript")
        arguments = module.forward.schema.arguments[1:]
        names = [a.name for a in arguments if not a.has_default_value()]
    else:
        params = pyinspect.signature(module.forward).parameters.values()
        names = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        names = [p.name for p in params if p.name in names and p.default is p.empty]
    shapes = _torch_shapes(source, module, names, shapes)
    inputs = tuple(TensorSpec(n, "FP32", (-1, *s[1:])) for n, s in shapes.items())
    example = tuple(torch.zeros(s) for s in shapes.values())
    with torch.no_grad():
        outputs = _output_specs(_flat_outputs(module(*example)))
    if loaded.format == "torchscript":
        layers: list[str] = []
        note = (
            "pooling telemetry is unavailable for TorchScript (a script module takes no Python hooks): "
            "serve the model as ONNX (torch.onnx.export) to profile its pooling layers"
        )
    else:
        from avgpool.monitor.collectors import torch_pooling_layers

        layers, notes, _ = torch_pooling_layers(module, example)
        note = "; ".join(notes) or None
    modules = dict(module.named_modules())
    compiled = torch.compile(module) if compile else module

    def tensors(feeds: dict[str, np.ndarray]) -> tuple[Any, ...]:
        return tuple(torch.from_numpy(np.ascontiguousarray(feeds[n])) for n in shapes)

    def plain(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with torch.no_grad():
            return _flat_outputs(compiled(*tensors(feeds)))

    def sampled(feeds: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        if not layers:
            return plain(feeds), {}
        recorder = _Recorder()
        handles = [
            modules[layer].register_forward_hook(lambda m, a, out, layer=layer: recorder.add(layer, out))
            for layer in layers
        ]
        try:
            with torch.no_grad():  # the eager module: compiled graphs would skip the hooks
                result = _flat_outputs(module(*tensors(feeds)))
        finally:
            for handle in handles:
                handle.remove()
        return result, recorder.values

    if loaded.sha256 is not None:
        size, sha = os.path.getsize(source), loaded.sha256
    else:
        from avgpool.monitor.collectors import _torch_sha256

        tensors_ = [*module.parameters(), *module.buffers()]
        size, sha = sum(t.numel() * t.element_size() for t in tensors_), _torch_sha256(module)
    kind = "torchscript" if loaded.format == "torchscript" else "module"
    return Runner(
        name=name,
        version=version,
        platform=PLATFORMS[kind],
        inputs=inputs,
        outputs=outputs,
        layers=layers,
        size_bytes=size,
        sha256=sha,
        plain=plain,
        sampled=sampled,
        telemetry_note=note,
        example_shapes=shapes,
    )


def _torch_shapes(
    source: str, module: Any, names: list[str], shapes: dict[str, tuple[int, ...]]
) -> dict[str, tuple[int, ...]]:
    """Input shape by forward() argument name (see the module docstring)."""
    if not shapes and len(names) == 1:
        own = getattr(module, "example_input_shape", None)
        if own is not None:
            return {names[0]: tuple(int(n) for n in own)}
    if len(names) == 1 and len(shapes) == 1:  # one input: its key (unless "") names it
        key, shape = next(iter(shapes.items()))
        return {key or names[0]: shape}
    missing = [n for n in names if n not in shapes]
    if missing or not names:
        raise AvgPoolError(
            f"{source}: a PyTorch model needs its input shapes: pass --input-shape NAME=1x3x224x224 "
            f"(input_shapes in Python) for forward() argument(s) {missing or names}, got {shapes or 'none'}"
        )
    return {n: shapes[n] for n in names}


def _flat_outputs(result: Any) -> dict[str, np.ndarray]:
    if isinstance(result, Mapping):
        return {str(k): _numpy(v) for k, v in result.items()}
    if isinstance(result, (tuple, list)):
        return {f"output{i}": _numpy(v) for i, v in enumerate(result)}
    return {"output": _numpy(result)}


def _output_specs(outputs: Mapping[str, np.ndarray]) -> tuple[TensorSpec, ...]:
    return tuple(
        TensorSpec(k, datatype_of(v.dtype), (-1, *v.shape[1:]) if v.ndim else ()) for k, v in outputs.items()
    )


def _pool_owner(node: Any) -> str | None:
    """The pooling layer a node of an exported graph belongs to: its outermost pooling module
    (by class name), else the node itself when it is a pooling op, else None."""
    for path, kind in (node.meta.get("nn_module_stack") or {}).values():
        if "Pool" in str(kind).rpartition(".")[2] and path:
            return str(path)
    if node.op != "call_function":
        return None
    namespace, _, rest = str(node.target).partition(".")
    op = rest.partition(".")[0]
    if namespace == "avgpool" and "backward" not in op:
        return node.name
    if namespace == "aten" and (op.lstrip("_") in _ATEN_POOLING or _global_reduction(node, op)):
        return node.name
    return None


def _global_reduction(node: Any, op: str) -> bool:
    """A mean or amax over every spatial axis (global pooling, as inspect counts it)."""
    if op not in ("mean", "amax") or len(node.args) < 2:
        return False
    val = getattr(node.args[0], "meta", {}).get("val")
    rank = getattr(val, "ndim", 0)
    dims = node.args[1] if isinstance(node.args[1], (list, tuple)) else [node.args[1]]
    return rank >= 3 and {int(d) % rank for d in dims} == set(range(2, rank))


def _exported_runner(torch: Any, loaded: Any, name: str, version: str, compile: bool) -> Runner:
    program, gm = loaded.program, loaded.module
    compiled = torch.compile(gm) if compile else gm
    placeholders = {n.name: n for n in program.graph.nodes if n.op == "placeholder"}
    inputs = []
    for user in program.graph_signature.user_inputs:
        val = placeholders[user].meta.get("val")
        dims = tuple(int(d) if isinstance(d, int) else -1 for d in val.shape)
        inputs.append(TensorSpec(str(user), datatype_of(val.dtype), dims))
    taps: dict[Any, str] = {}
    nodes = list(gm.graph.nodes)
    for node, after in zip(nodes, [*nodes[1:], None]):
        owner = _pool_owner(node)
        if owner is not None and (after is None or _pool_owner(after) != owner):
            taps[node] = owner  # the last node of each call of the layer
    layers = tuple(dict.fromkeys(taps.values()))

    class Tap(torch.fx.Interpreter):
        def __init__(self, recorder: _Recorder) -> None:
            super().__init__(gm)
            self.recorder = recorder

        def run_node(self, n: Any) -> Any:
            result = super().run_node(n)
            if n in taps:
                self.recorder.add(taps[n], result)
            return result

    def tensors(feeds: dict[str, np.ndarray]) -> tuple[Any, ...]:
        return tuple(torch.from_numpy(np.ascontiguousarray(feeds[s.name])) for s in inputs)

    def plain(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with torch.no_grad():
            return _flat_outputs(compiled(*tensors(feeds)))

    def sampled(feeds: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        recorder = _Recorder()
        with torch.no_grad():
            result = _flat_outputs(Tap(recorder).run(*tensors(feeds)))
        return result, recorder.values

    runner = Runner(
        name=name,
        version=version,
        platform=PLATFORMS["exported"],
        inputs=inputs,
        outputs=(),
        layers=layers,
        size_bytes=os.path.getsize(loaded.source),
        sha256=loaded.sha256,
        plain=plain,
        sampled=sampled,
    )
    free = any(s.shape and s.shape[0] == -1 for s in inputs)
    with torch.no_grad():  # the eager module: compiling waits for the warm-up
        outputs = _flat_outputs(gm(*tensors(runner.example_inputs())))
    runner.outputs = (
        _output_specs(outputs)
        if free
        else tuple(TensorSpec(k, datatype_of(v.dtype), v.shape) for k, v in outputs.items())
    )
    return runner
