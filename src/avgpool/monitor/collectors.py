"""Collectors feed a `Profile` from a running model: PyTorch forward hooks, ONNX Runtime with
the chosen intermediate tensors exposed as outputs, or plain NumPy arrays.

By default the profiled layers are the model's pooling layers as `avgpool.inspect.read_model`
finds them, each profiled at its output. PyTorch: any named module can be given instead
(``torch.nn`` pooling, avgpool.nn modules, a block, a conv); functional pooling calls have no
module to hook and are listed in the profile's notes. ONNX: a node name, its cleaned key
(``/down/pool/AveragePool`` -> ``down.pool``) or any tensor name.
"""

from __future__ import annotations

import hashlib
import itertools
import os
from collections.abc import Callable, Iterable, Mapping, MutableMapping, Sequence
from typing import Any

import numpy as np

from avgpool._errors import AvgPoolError
from avgpool._loading import is_torch_source, load_torch_model, sha256_file, to_onnx
from avgpool.monitor.profile import DEFAULT_MAX_BUCKETS, Profile, ProfileError

__all__ = [
    "TorchCollector",
    "iter_batches",
    "load_inputs",
    "profile_arrays",
    "profile_model",
    "profile_onnx",
    "profile_torch",
]

Progress = Callable[[Iterable[Any]], Iterable[Any]]


def load_inputs(path: Any) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz`` file, by name (first axis: samples)."""
    from avgpool._files import read_arrays

    path = os.fspath(path)
    arrays = read_arrays(path, ProfileError)
    sizes = {k: v.shape[0] for k, v in arrays.items()}
    if len(set(sizes.values())) != 1 or 0 in sizes.values():
        raise ProfileError(f"{path}: every input needs the same number of samples on axis 0, got {sizes}")
    return arrays


def iter_batches(arrays: Mapping[str, np.ndarray], batch_size: int) -> list[dict[str, np.ndarray]]:
    """Split named arrays into batches along axis 0."""
    if batch_size < 1:
        raise ProfileError(f"batch_size must be >= 1, got {batch_size}")
    n = next(iter(arrays.values())).shape[0]
    return [{k: v[i : i + batch_size] for k, v in arrays.items()} for i in range(0, n, batch_size)]


def _identity(source: str, fmt: str, sha256: str | None, inventory: Any) -> dict[str, Any]:
    pooling = []
    if inventory is not None:
        pooling = [
            {
                "name": layer.name,
                "op": layer.op,
                "source_op": layer.source_op,
                "output_shape": None if layer.output_shape is None else list(layer.output_shape),
            }
            for layer in inventory.layers
        ]
    return {"source": source, "format": fmt, "sha256": sha256, "pooling": pooling}


def _cached(cache: MutableMapping[Any, Any] | None, key: Any, make: Callable[[], Any]) -> Any:
    """``make()``, kept in ``cache`` under ``key`` when a cache is given (see `profile_model`)."""
    if cache is None:
        return make()
    if key not in cache:
        cache[key] = make()
    return cache[key]


def _start(profile: Profile | None, like: Profile | None, max_buckets: int, channel_hist: bool) -> Profile:
    if profile is not None:
        return profile
    if like is not None:
        return Profile.like(like)
    return Profile(max_buckets=max_buckets, channel_hist=channel_hist)


def profile_arrays(
    batches: Iterable[Mapping[str, Any]],
    *,
    like: Profile | None = None,
    max_buckets: int = DEFAULT_MAX_BUCKETS,
    channel_hist: bool = False,
    progress: Progress | None = None,
) -> Profile:
    """Profile plain arrays: each batch maps a layer name to that layer's output.

    Examples
    --------
    >>> import numpy as np
    >>> p = profile_arrays([{"pool": np.ones((2, 3, 4, 4))}, {"pool": np.zeros((2, 3, 4, 4))}])
    >>> p["pool"].totals()["mean"], p.batches
    (0.5, 2)
    """
    profile = _start(None, like, max_buckets, channel_hist)
    profile.model = {"source": "arrays", "format": "arrays", "sha256": None, "pooling": []}
    for batch in progress(batches) if progress else batches:
        profile.update_many(batch)
    return profile


# --------------------------------------------------------------------------- PyTorch


def _torch():
    try:
        import torch
    except ImportError:  # pragma: no cover
        raise ProfileError("profiling a PyTorch model needs torch: pip install 'avgpool[torch]'") from None
    return torch


def _torch_args(model: Any, batch: Any) -> tuple[Any, ...]:
    torch = _torch()
    if isinstance(batch, Mapping):
        if len(batch) == 1:
            values = list(batch.values())
        else:
            import inspect as pyinspect

            params = [p for p in pyinspect.signature(model.forward).parameters if p in batch]
            if len(params) != len(batch):
                raise ProfileError(
                    f"inputs {sorted(batch)} do not match forward() arguments "
                    f"{list(pyinspect.signature(model.forward).parameters)}"
                )
            values = [batch[p] for p in params]
    elif isinstance(batch, (tuple, list)):
        values = list(batch)
    else:
        values = [batch]
    return tuple(v if isinstance(v, torch.Tensor) else torch.from_numpy(np.asarray(v)) for v in values)


def _torch_sha256(model: Any) -> str:
    # the architecture as printed (module types and arguments) and every tensor of the state
    h = hashlib.sha256(f"{type(model).__qualname__}\n{model!r}".encode())
    for name, t in model.state_dict().items():
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.view(-1).view(_torch().uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _to_numpy(t: Any) -> np.ndarray:
    torch = _torch()
    t = t.detach()
    if t.dtype in (torch.bfloat16, torch.float16):
        t = t.float()
    return t.cpu().numpy()


class TorchCollector:
    """Forward hooks that add each chosen module's output to a profile, while attached.

    Use as a context manager, or call `remove`. ``layers`` are module names
    (``model.named_modules()``); a module called several times in one forward adds every call.

    Parameters
    ----------
    model : torch.nn.Module
    layers : sequence of str
    profile : Profile
    lock : context manager, optional
        Held while a hook updates the profile (a live service reads it from another thread).
    """

    def __init__(self, model: Any, layers: Sequence[str], profile: Profile, *, lock: Any = None) -> None:
        modules = dict(model.named_modules())
        unknown = [name for name in layers if name not in modules]
        if unknown:
            shown = ", ".join(n for n in modules if n) or "none"
            raise ProfileError(f"no module named {unknown} in the model (modules: {shown})")
        self.profile = profile
        self.layers = tuple(layers)
        self._lock = lock
        self._handles = [
            modules[name].register_forward_hook(self._hook(name, type(modules[name]).__name__))
            for name in self.layers
        ]

    def _hook(self, name: str, op: str) -> Callable[..., None]:
        def hook(module: Any, args: Any, output: Any) -> None:
            out = output[0] if isinstance(output, (tuple, list)) else output
            if self._lock is None:
                self.profile.update(name, _to_numpy(out), op=op)
            else:
                value = _to_numpy(out)
                with self._lock:
                    self.profile.update(name, value, op=op)

        return hook

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def __enter__(self) -> TorchCollector:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.remove()


def torch_pooling_layers(model: Any, example: tuple[Any, ...]) -> tuple[list[str], list[str], Any]:
    """(hookable module names, notes, inventory) for a module's pooling layers."""
    from avgpool.inspect.torch_reader import read_torch

    inventory = read_torch(model, example_inputs=example)
    modules = dict(model.named_modules())
    names, notes = [], []
    for layer in inventory.layers:
        if layer.name in modules:
            if layer.name not in names:
                names.append(layer.name)
        else:
            notes.append(
                f"{layer.name} ({layer.source_op}) is a functional call with no module to hook: not "
                "profiled (make it a module, or pass --layers with a module that contains it)"
            )
    return names, notes, inventory


def profile_torch(
    model: Any,
    batches: Iterable[Any],
    *,
    layers: Sequence[str] | None = None,
    like: Profile | None = None,
    max_buckets: int = DEFAULT_MAX_BUCKETS,
    channel_hist: bool = False,
    progress: Progress | None = None,
    source: str | None = None,
    sha256: str | None = None,
) -> Profile:
    """Profile a ``torch.nn.Module`` (eval mode, no gradients) over batches of inputs.

    A batch is an array or tensor (a single input), a tuple, or a mapping by forward()
    argument name. ``layers`` default to the pooling modules `read_model` finds.
    """
    torch = _torch()
    batches = list(batches)
    if not batches:
        raise ProfileError("no batches to profile")
    profile = _start(None, like, max_buckets, channel_hist)
    first = _torch_args(model, batches[0])
    was_training = model.training
    model.eval()
    try:
        names, notes, inventory = torch_pooling_layers(model, first)
        if layers:
            names = list(layers)
        elif not names:
            raise ProfileError(f"{source or type(model).__name__}: no pooling modules to hook; pass layers=")
        profile.notes = notes if not layers else []
        profile.model = _identity(
            source or type(model).__name__, "torch", sha256 or _torch_sha256(model), inventory
        )
        with TorchCollector(model, names, profile), torch.no_grad():
            for batch in progress(batches) if progress else batches:
                model(*_torch_args(model, batch))
                profile.batches += 1
    finally:
        model.train(was_training)
    return profile


# --------------------------------------------------------------------------- ONNX Runtime


def _onnx_targets(proto: Any, inventory: Any, layers: Sequence[str] | None) -> dict[str, tuple[str, str]]:
    """profile layer name -> (tensor name, op)."""
    if not layers:
        return {layer.name: (layer.outputs[0], layer.source_op) for layer in inventory.layers}
    by_name = {layer.name: layer for layer in inventory.layers}
    by_key = {layer.key: layer for layer in inventory.layers}
    nodes = {n.name: n for n in proto.graph.node}
    tensors = {o: n.op_type for n in proto.graph.node for o in n.output}
    out = {}
    for name in layers:
        layer = by_name.get(name) or by_key.get(name)
        if layer is not None:
            out[layer.name] = (layer.outputs[0], layer.source_op)
        elif name in nodes:
            out[name] = (nodes[name].output[0], nodes[name].op_type)
        elif name in tensors:
            out[name] = (name, tensors[name])
        else:
            raise ProfileError(f"no node or tensor named {name!r} in the ONNX model")
    return out


def profile_onnx(
    model: Any,
    batches: Iterable[Mapping[str, Any]],
    *,
    layers: Sequence[str] | None = None,
    like: Profile | None = None,
    max_buckets: int = DEFAULT_MAX_BUCKETS,
    channel_hist: bool = False,
    progress: Progress | None = None,
    cache: MutableMapping[Any, Any] | None = None,
) -> Profile:
    """Profile an ONNX model in ONNX Runtime (CPU): the chosen tensors are exposed as graph
    outputs and read on every run. A batch maps input names to arrays (a single-input model
    takes any name). A model with a fixed batch size runs each batch in chunks of it."""
    from avgpool.inspect.onnx_reader import _onnx, load_onnx, read_onnx

    _onnx()  # installed, or a clear error before any work
    batches = list(batches)
    if not batches:
        raise ProfileError("no batches to profile")
    source = os.fspath(model) if isinstance(model, (str, os.PathLike)) else "<onnx model>"
    proto = model
    if isinstance(model, (str, os.PathLike)):
        proto = _cached(cache, "onnx", lambda: load_onnx(model))
    initializers = {t.name for t in proto.graph.initializer}
    graph_inputs = [i for i in proto.graph.input if i.name not in initializers]
    first = batches[0]
    if len(graph_inputs) == 1 and len(first) == 1:
        shapes = {graph_inputs[0].name: tuple(next(iter(first.values())).shape)}
    else:
        shapes = {i.name: tuple(first[i.name].shape) for i in graph_inputs if i.name in first}
    for i in graph_inputs:  # a fixed batch axis runs the batches in chunks of it (below)
        dims = i.type.tensor_type.shape.dim
        if i.name in shapes and dims and dims[0].HasField("dim_value") and shapes[i.name]:
            shapes[i.name] = (dims[0].dim_value, *shapes[i.name][1:])
    try:
        inventory = read_onnx(proto, shapes, source=source)
    except ProfileError:
        raise
    except AvgPoolError as exc:
        message = str(exc).replace("--input-shape", "the inputs' shape").replace("gives", "is")
        raise ProfileError(f"{source}: the inputs do not fit the model: {message}") from None
    targets = _onnx_targets(proto, inventory, layers)
    if not targets:
        raise ProfileError(f"{source}: no pooling layers to profile; pass layers=")
    session = _cached(
        cache, ("session", *(t for t, _ in targets.values())), lambda: _onnx_session(proto, targets, source)
    )
    profile = _start(None, like, max_buckets, channel_hist)
    sha = _cached(
        cache,
        "sha256",
        lambda: (
            sha256_file(source)
            if os.path.isfile(source)
            else hashlib.sha256(proto.SerializeToString()).hexdigest()
        ),
    )
    profile.model = _identity(source, "onnx", sha, inventory)
    wanted = [t for t, _ in targets.values()]
    ops = {name: op for name, (_, op) in targets.items()}
    metas = session.get_inputs()
    fixed = metas[0].shape[0] if metas and isinstance(metas[0].shape[0], int) else None
    for batch in progress(batches) if progress else batches:
        feeds = _feeds(metas, batch)
        n = next(iter(feeds.values())).shape[0]
        step = fixed if fixed and fixed != n else n
        for start in range(0, n, max(step, 1)):
            chunk = {k: v[start : start + step] for k, v in feeds.items()}
            try:
                values = session.run(wanted, chunk)
            except Exception as exc:
                raise ProfileError(
                    f"{source}: ONNX Runtime failed to run: {str(exc).splitlines()[0]}"
                ) from None
            for name, value in zip(targets, values):
                profile.update(name, value, op=ops[name])
        profile.batches += 1
    return profile


def _onnx_session(proto: Any, targets: Mapping[str, tuple[str, str]], source: str) -> Any:
    """An ONNX Runtime session (CPU) of ``proto`` with the targets' tensors exposed as outputs."""
    from avgpool.inspect.onnx_reader import _onnx

    onnx = _onnx()
    exposed = onnx.ModelProto()
    exposed.CopyFrom(proto)
    present = {o.name for o in exposed.graph.output}
    for tensor, _ in targets.values():
        if tensor not in present:
            present.add(tensor)
            exposed.graph.output.append(onnx.helper.make_empty_tensor_value_info(tensor))
    try:
        import onnxruntime as ort
    except ImportError:  # pragma: no cover
        raise ProfileError(
            "profiling an ONNX model needs onnxruntime: pip install 'avgpool[inspect]'"
        ) from None
    options = ort.SessionOptions()
    # fatal only: ONNX Runtime's own error log would print beside the one line we make of it
    options.log_severity_level = 4
    try:
        return ort.InferenceSession(exposed.SerializeToString(), options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ProfileError(f"{source}: ONNX Runtime refuses the model: {str(exc).splitlines()[0]}") from None


def _feeds(metas: Sequence[Any], batch: Mapping[str, Any]) -> dict[str, np.ndarray]:
    types = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16}
    if len(metas) == 1 and len(batch) == 1:
        batch = {metas[0].name: next(iter(batch.values()))}
    missing = [m.name for m in metas if m.name not in batch]
    if missing:
        raise ProfileError(f"the inputs lack the model input(s) {missing} (they have {sorted(batch)})")
    out = {}
    for m in metas:
        value = np.asarray(batch[m.name])
        dtype = types.get(m.type)
        out[m.name] = value.astype(dtype, copy=False) if dtype is not None else value
    return out


# --------------------------------------------------------------------------- any model


def profile_model(
    model: Any,
    batches: Iterable[Mapping[str, Any]],
    *,
    layers: Sequence[str] | None = None,
    like: Profile | None = None,
    max_buckets: int = DEFAULT_MAX_BUCKETS,
    channel_hist: bool = False,
    progress: Progress | None = None,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    trust: bool = False,
    cache: MutableMapping[Any, Any] | None = None,
) -> Profile:
    """Profile an ONNX file or ``ModelProto``, an ``nn.Module``, a PyTorch file or a
    ``package.module:factory`` spec (the forms `avgpool.inspect.read_model` takes).

    ``trust=True`` lets a ``.pt``/``.pth`` holding a pickled module be unpickled (it can run
    code from the file). ExportedProgram and TorchScript files are profiled through their
    standard ONNX export (a TorchScript model needs ``input_shapes`` for it).

    ``cache``, a dict kept by the caller for one model, holds what is loaded (the module, the
    ONNX model, its ONNX Runtime session, its sha256), so later calls with the same model and
    the same dict reuse it rather than load again (a cluster worker profiling share after share)."""
    options = {
        "layers": layers,
        "like": like,
        "max_buckets": max_buckets,
        "channel_hist": channel_hist,
        "progress": progress,
    }
    if isinstance(model, (str, os.PathLike)):
        text = os.fspath(model)
        if is_torch_source(text):
            loaded = _cached(cache, "torch", lambda: load_torch_model(text, trust=trust, error=ProfileError))
            if loaded.opaque:  # shapes for the export from the first batch, unless given
                batches = iter(batches)
                first = next(batches, None)
                if input_shapes is None and isinstance(first, Mapping):
                    input_shapes = {str(k): np.shape(v) for k, v in first.items()}
                shapes = None if input_shapes is None else {k: tuple(v) for k, v in input_shapes.items()}
                exported = _cached(cache, ("export", repr(shapes)), dict)
                proto = _cached(exported, "onnx", lambda: to_onnx(loaded, input_shapes, ProfileError))
                return profile_onnx(
                    proto,
                    itertools.chain([] if first is None else [first], batches),
                    cache=exported if cache is not None else None,
                    **options,
                )
            return profile_torch(loaded.module, batches, source=text, sha256=loaded.sha256, **options)
        if not os.path.exists(text):
            raise ProfileError(f"{text}: no such model file")
        return profile_onnx(text, batches, cache=cache, **options)
    if type(model).__module__.startswith("onnx"):
        return profile_onnx(model, batches, cache=cache, **options)
    if hasattr(model, "named_modules"):
        sha = _cached(cache, "sha256", lambda: _torch_sha256(model)) if cache is not None else None
        return profile_torch(model, batches, sha256=sha, **options)
    raise ProfileError(f"cannot profile a {type(model).__name__}: give an ONNX model or an nn.Module")
