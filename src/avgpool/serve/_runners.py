"""Model runners: one loaded model version, its tensor metadata, and a ``run`` that returns the
model's outputs and, on sampled requests, the outputs of its pooling layers.

Every request is one model run, sampled or not:

* ONNX (ONNX Runtime): one session in which the pooling layers' tensors are extra graph
  outputs; an unsampled run asks ONNX Runtime for the model's own outputs only, a sampled run
  for those and the pooling tensors.
* ``nn.Module`` (a ``package.module:factory`` spec, a trusted pickle): forward hooks on the
  pooling modules, registered only for the duration of a sampled run and recording only that
  run's thread. With ``compile=True`` unsampled runs call ``torch.compile``'s module; compiled
  graphs skip Python hooks, so sampled runs call the eager module (same weights) with hooks.
* ExportedProgram (``.pt2``): unsampled runs call ``program.module()`` (compiled with
  ``compile=True``); sampled runs go through a ``torch.fx.Interpreter`` that keeps the outputs
  of the pooling nodes (aten pooling ops, global means and maxima over the spatial axes, and
  avgpool's own ``torch.ops.avgpool`` ops; a pooling module such as ``nn.LPPool2d``, exported
  as several ops, is read at its last node).
* TorchScript: a loaded script module takes no Python hooks and hides its graph's Python
  modules, so its pooling outputs are not read: sampled runs return none and the runner says
  so in ``telemetry_note`` (export the model to ONNX to serve it with pooling telemetry).

Torch models need their input shapes: ``input_shapes`` (``--input-shape``), or, for a
factory's module, an ``example_input_shape`` attribute (one input, batch axis included). The
batch axis (axis 0) of a torch model's inputs and outputs is free; the other axes are fixed at
the given shape.
"""

from __future__ import annotations

import inspect as pyinspect
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from avgpool._errors import AvgPoolError

__all__ = ["PLATFORMS", "ModelRunError", "Runner", "TensorSpec", "load_runner"]

#: Platform names in model metadata, by source kind.
PLATFORMS = {
    "onnx": "onnxruntime_onnx",
    "torchscript": "pytorch_torchscript",
    "exported": "pytorch_exportedprogram",
    "module": "pytorch_module",
}

#: Open Inference Protocol datatype by NumPy dtype, and by ONNX Runtime's type name.
_NAMES = ("FP32", "FP64", "FP16", "INT64", "INT32", "INT16", "INT8", "UINT8", "BOOL")
_OIP = dict(zip(map(np.dtype, "f4 f8 f2 i8 i4 i2 i1 u1 ?".split()), _NAMES))
_NUMPY = {v: k for k, v in _OIP.items()}
_ORT_NAMES = "float double float16 int64 int32 int16 int8 uint8 bool string".split()
_ORT = {f"tensor({t})": n for t, n in zip(_ORT_NAMES, (*_NAMES, "BYTES"))}
#: aten ops (without overload, leading underscores stripped) whose output is a pooling layer's.
_ATEN_POOLING = frozenset(
    f"{op}{d}d{suffix}"
    for op in ("avg_pool", "max_pool", "lp_pool", "adaptive_avg_pool", "adaptive_max_pool")
    for d in (1, 2, 3)
    for suffix in ("", "_with_indices")
)


class ModelRunError(AvgPoolError):
    """The model itself failed on inputs that passed validation."""


@dataclass(frozen=True)
class TensorSpec:
    """One input or output: its name, Open Inference Protocol datatype and shape (-1 where the
    model leaves an axis free)."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


def datatype_of(dtype: Any) -> str:
    """The Open Inference Protocol name of a NumPy or torch dtype (TypeError when it has none)."""
    text = str(dtype)
    if text.startswith("torch."):
        text = {"torch.bfloat16": "float32"}.get(text, text[len("torch.") :])
        if text == "bool":
            text = "bool_"
    try:
        return _OIP[np.dtype(text)]
    except (TypeError, KeyError):
        raise TypeError(f"dtype {dtype} has no Open Inference Protocol datatype") from None


def _free(dim: Any) -> int:
    return int(dim) if isinstance(dim, (int, np.integer)) and int(dim) >= 0 else -1


class Runner:
    """One loaded model version (build it with `load_runner`).

    Attributes
    ----------
    name, version : str
    platform : str
        ``onnxruntime_onnx``, ``pytorch_torchscript``, ``pytorch_exportedprogram`` or
        ``pytorch_module``.
    inputs, outputs : tuple of TensorSpec
    layers : tuple of str
        The pooling layers that sampled runs return, by name.
    size_bytes : int
        The file's size (a factory's module: its parameters' and buffers' bytes).
    sha256 : str
    telemetry_note : str or None
        Why some pooling layers (or all) are not profiled, where that is so.
    """

    def __init__(
        self,
        *,
        name: str,
        version: str,
        platform: str,
        inputs: Sequence[TensorSpec],
        outputs: Sequence[TensorSpec],
        layers: Sequence[str],
        size_bytes: int,
        sha256: str,
        plain: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]],
        sampled: Callable[[dict[str, np.ndarray]], tuple[dict[str, np.ndarray], dict[str, np.ndarray]]],
        telemetry_note: str | None = None,
        example_shapes: Mapping[str, Sequence[int]] | None = None,
    ) -> None:
        self.name, self.version, self.platform = name, version, platform
        self.inputs, self.outputs = tuple(inputs), tuple(outputs)
        self.layers = tuple(layers)
        self.size_bytes, self.sha256 = int(size_bytes), sha256
        self.telemetry_note = telemetry_note
        self._plain, self._sampled = plain, sampled
        self._example_shapes = {k: tuple(int(n) for n in v) for k, v in (example_shapes or {}).items()}

    def __repr__(self) -> str:
        return f"Runner({self.name!r}, version={self.version!r}, platform={self.platform!r})"

    def check_inputs(self, inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """The inputs as arrays, or AvgPoolError naming the input, what was given and what the
        model takes (names, datatype, rank, fixed axes)."""
        wanted = [spec.name for spec in self.inputs]
        missing = [n for n in wanted if n not in inputs]
        extra = sorted(n for n in inputs if n not in wanted)
        if missing or extra:
            parts = ([f"missing {missing}"] if missing else []) + ([f"unknown {extra}"] if extra else [])
            given = sorted(inputs)
            raise AvgPoolError(
                f"inputs of {self.name}: {' and '.join(parts)}; the model takes {wanted}, got {given}"
            )
        out = {}
        for spec in self.inputs:
            value = np.asarray(inputs[spec.name])
            try:
                given = datatype_of(value.dtype)
            except TypeError:
                given = str(value.dtype)
            if given != spec.datatype:
                raise AvgPoolError(
                    f"input {spec.name!r}: datatype {given} given, the model takes {spec.datatype}"
                )
            shape = tuple(value.shape)
            bad_rank = len(shape) != len(spec.shape)
            if bad_rank or any(want not in (-1, got) for want, got in zip(spec.shape, shape)):
                raise AvgPoolError(
                    f"input {spec.name!r}: shape {list(shape)} given, the model takes "
                    f"{list(spec.shape)} (-1: any size)"
                )
            out[spec.name] = value
        return out

    def run(
        self, inputs: Mapping[str, Any], *, sample: bool = False
    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Run the model once.

        Returns
        -------
        (outputs, pooling)
            The model's outputs by name, and the pooling layers' outputs by layer name (empty
            unless ``sample``).

        Raises
        ------
        AvgPoolError
            Inputs that do not fit the model (see `check_inputs`).
        ModelRunError
            The model failed on them.
        """
        feeds = self.check_inputs(inputs)
        try:
            if sample:
                return self._sampled(feeds)
            return self._plain(feeds), {}
        except AvgPoolError:
            raise
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise ModelRunError(f"model {self.name} failed: {type(exc).__name__}: {first}") from exc

    def example_inputs(self, batch: int = 1) -> dict[str, np.ndarray]:
        """Inputs of the model's own shapes: axis 0 is ``batch`` where free, other free axes
        are taken from ``input_shapes`` where given, else 1; deterministic values."""
        rng = np.random.default_rng(0)
        out = {}
        for spec in self.inputs:
            given = self._example_shapes.get(spec.name)
            shape = []
            for axis, n in enumerate(spec.shape):
                if n >= 0:
                    shape.append(n)
                elif axis == 0:
                    shape.append(batch)
                else:
                    shape.append(given[axis] if given and len(given) == len(spec.shape) else 1)
            dtype = _NUMPY.get(spec.datatype, np.dtype(np.float32))
            if dtype.kind == "f":
                out[spec.name] = rng.standard_normal(shape).astype(dtype)
            else:
                out[spec.name] = np.zeros(shape, dtype)
        return out

    def warmup(self) -> float:
        """Run a sampled and an unsampled request of the example inputs, so both paths (and the
        Numba kernels of avgpool layers inside the model) are compiled; the seconds it took."""
        start = time.perf_counter()
        example = self.example_inputs()
        self.run(example, sample=True)
        self.run(example, sample=False)
        return time.perf_counter() - start

    def close(self) -> None:
        """Release the model (its session or module); later runs raise ModelRunError."""

        def closed(*args: Any) -> Any:
            raise ModelRunError(f"model {self.name} is closed")

        self._plain = self._sampled = closed


# --------------------------------------------------------------------------- loading


def load_runner(
    source: str,
    *,
    name: str | None = None,
    version: str = "1",
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    trust: bool = False,
    compile: bool = False,
) -> Runner:
    """Load ``source`` as a `Runner`.

    Parameters
    ----------
    source : str
        ``path/x.onnx``, a ``.pt2`` ExportedProgram, a TorchScript file, a ``.pt``/``.pth``
        pickled module (with ``trust``) or a ``package.module:factory`` spec.
    name : str, optional
        Default: the file's name without its suffix, or the spec's attribute.
    version : str
    input_shapes : mapping of input name to shape, optional
        Torch models need them (key ``""`` for a single input) unless the factory's module has
        an ``example_input_shape``; for ONNX they only fill free axes of the example inputs.
    trust : bool
        Let a pickled module or a ``.pt2`` load (both can run code as they load).
    compile : bool
        ``torch.compile`` an ``nn.Module`` or a ``.pt2``'s module (see the module docstring);
        ONNX and TorchScript models refuse it.
    """
    from avgpool._loading import _archive_kind, is_torch_source

    version = str(version)
    if name is None:
        base = os.path.basename(source)
        name = (
            source.rpartition(":")[2].rpartition(".")[2] if ":" in base else base.rpartition(".")[0] or base
        )
    shapes = {str(k): tuple(int(n) for n in v) for k, v in (input_shapes or {}).items()}
    torch_archive = os.path.isfile(source) and not source.endswith(".onnx") and _archive_kind(source)
    if is_torch_source(source) or torch_archive:
        return _torch_runner(source, name, version, shapes, trust=trust, compile=compile)
    if not os.path.exists(source):
        raise AvgPoolError(f"{source}: no such model file (give an .onnx file or a package.module:factory)")
    _no_compile(compile, source, "an ONNX model")
    return _onnx_runner(source, name, version, shapes)


def _no_compile(compile: bool, source: str, kind: str) -> None:
    if compile:
        raise AvgPoolError(
            f"compile=True (--compile) applies to nn.Module and .pt2 models; {source} is {kind}: "
            "serve it without --compile"
        )


def _onnx_runner(source: str, name: str, version: str, shapes: dict[str, tuple[int, ...]]) -> Runner:
    from avgpool._loading import sha256_file
    from avgpool.inspect.onnx_reader import load_onnx, read_onnx
    from avgpool.monitor.collectors import _onnx_session

    proto = load_onnx(source)
    initializers = {t.name for t in proto.graph.initializer}
    graph_inputs = [i.name for i in proto.graph.input if i.name not in initializers]
    if "" in shapes and len(graph_inputs) == 1:
        shapes = {graph_inputs[0]: shapes[""]}
    try:
        inventory = read_onnx(proto, shapes, source=source)
        layers = {layer.name: (layer.outputs[0], layer.source_op) for layer in inventory.layers}
        note = None
    except AvgPoolError as exc:  # free spatial axes without shapes: serve it, without telemetry
        layers, note = {}, f"pooling layers not read ({exc}); pass --input-shape to profile them"
    session = _onnx_session(proto, layers, source)
    own = [o.name for o in proto.graph.output]
    metas = {m.name: m for m in (*session.get_inputs(), *session.get_outputs())}

    def spec(tensor: str) -> TensorSpec:
        meta = metas[tensor]
        return TensorSpec(tensor, _ORT.get(meta.type, meta.type), tuple(_free(d) for d in meta.shape))

    inputs = tuple(spec(m.name) for m in session.get_inputs())
    outputs = tuple(spec(o) for o in own)
    pooled = [(layer, tensor) for layer, (tensor, _) in layers.items()]
    wanted = own + [t for _, t in pooled if t not in own]

    def plain(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(own, session.run(own, feeds)))

    def sampled(feeds: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        values = dict(zip(wanted, session.run(wanted, feeds)))
        return {o: values[o] for o in own}, {layer: values[t] for layer, t in pooled}

    return Runner(
        name=name,
        version=version,
        platform=PLATFORMS["onnx"],
        inputs=inputs,
        outputs=outputs,
        layers=tuple(layers),
        size_bytes=os.path.getsize(source),
        sha256=sha256_file(source),
        plain=plain,
        sampled=sampled,
        telemetry_note=note,
        example_shapes=shapes,
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


def _torch_runner(
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
