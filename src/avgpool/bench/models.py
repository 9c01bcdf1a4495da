"""Models made ready to time: an ONNX model in ONNX Runtime, or a PyTorch module, behind one call.

`load_model` takes the model forms `avgpool inspect` takes (an ``.onnx`` file, a PyTorch file:
TorchScript, or an ExportedProgram ``.pt2`` or a pickled module ``.pt``/``.pth``, these two
only with ``trust=True``; a ``package.module:factory`` spec, or a loaded ``onnx.ModelProto`` /
``torch.nn.Module``) and
returns a `TimedModel`: its inputs (name, per-sample shape, dtype), its size on disk, the RSS its
loading added, ``native`` (the conversion of NumPy inputs to what the runtime takes, done before
timing) and the timed call itself.

Input shapes. An ONNX model declares its inputs; axis 0 is the batch axis, replaced by each batch
size of a sweep, and any other symbolic axis needs ``input_shapes``. A PyTorch module declares
nothing, so it needs ``input_shapes`` (one unnamed shape, or one per ``forward()`` argument by
name), or sample arrays (an ``.npz`` file, as `avgpool profile` takes). The batch axis of a
given shape is a placeholder: the sweep sets it.

Size on disk: the ``.onnx`` file plus every external-data file it references; the ``.pt`` file;
for a factory spec or a loaded module, the bytes ``torch.save(model.state_dict())`` writes; for
a loaded ``ModelProto``, its serialized size.
"""

from __future__ import annotations

import importlib.util
import inspect as pyinspect
import io
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from avgpool._errors import AvgPoolError
from avgpool._loading import TORCH_SUFFIXES, is_torch_source, load_torch_model
from avgpool.bench.memory import rss_bytes

__all__ = [
    "InputSpec",
    "TimedModel",
    "file_batches",
    "load_model",
    "match_inputs",
    "random_batches",
    "shapes_of",
]

_ORT_TYPES = {
    "tensor(float)": "float32",
    "tensor(double)": "float64",
    "tensor(float16)": "float16",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(int16)": "int16",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
    "tensor(bool)": "bool",
}


@dataclass(frozen=True)
class InputSpec:
    """One model input: its name ("" for a module's single unnamed argument), the shape of one
    sample (the batch axis left out) and its NumPy dtype."""

    name: str
    sample_shape: tuple[int, ...]
    dtype: str

    def shape(self, batch: int) -> tuple[int, ...]:
        return (batch, *self.sample_shape)

    def label(self) -> str:
        """``image Bx3x224x224 float32``: B stands for the batch size."""
        shape = "x".join(["B", *map(str, self.sample_shape)])
        return f"{self.name or 'input'} {shape} {self.dtype}"


@dataclass
class TimedModel:
    """A loaded model: ``call(native(batch))`` is what gets timed (see the module docstring)."""

    source: str
    format: str
    runtime: str
    device: str
    threads: int | None
    inputs: tuple[InputSpec, ...]
    size_bytes: int
    size_files: tuple[str, ...]
    fixed_batch: int | None
    load_rss_bytes: int | None
    rss_before_load_bytes: int | None
    native: Callable[[Mapping[str, np.ndarray]], Any]
    call: Callable[[Any], Any]
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "format": self.format,
            "runtime": self.runtime,
            "device": self.device,
            "threads": self.threads,
            "inputs": [
                {"name": s.name, "sample_shape": list(s.sample_shape), "dtype": s.dtype} for s in self.inputs
            ],
            "size_bytes": self.size_bytes,
            "size_files": list(self.size_files),
            "fixed_batch": self.fixed_batch,
            "load_rss_bytes": self.load_rss_bytes,
            "rss_before_load_bytes": self.rss_before_load_bytes,
            "notes": list(self.notes),
        }


def load_model(
    model: Any,
    *,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    input_dtypes: Mapping[str, str] | None = None,
    threads: int | None = None,
    device: str = "cpu",
    trust: bool = False,
) -> TimedModel:
    """Load ``model`` for timing (see the module docstring for the forms and the shapes).

    ``input_shapes`` maps input names (or "" for a single input) to full shapes whose axis 0 is
    a placeholder for the batch; ``input_dtypes`` gives a PyTorch model's input dtypes by the same
    names (default float32; an ONNX model declares its own). ``threads`` sets ONNX Runtime's
    intra-op threads or ``torch.set_num_threads`` (None: the runtime's default). ``device`` is
    "cpu" or "cuda". A module passed in is put in eval mode and moved to ``device``.
    ``trust=True`` lets a ``.pt``/``.pth`` holding a pickled module be unpickled (it can run code
    from the file).
    """
    if threads is not None and threads < 1:
        raise AvgPoolError(f"threads must be >= 1, got {threads}")
    if device not in ("cpu", "cuda") and not str(device).startswith("cuda:"):
        raise AvgPoolError(f"device must be 'cpu' or 'cuda', got {device!r}")
    shapes = {str(k): tuple(int(v) for v in s) for k, s in (input_shapes or {}).items()}
    for name, shape in shapes.items():
        if len(shape) < 1 or any(d < 1 for d in shape):
            raise AvgPoolError(f"input shape for {name or 'the input'!r} must be sizes >= 1, got {shape}")
    if isinstance(model, (str, os.PathLike)):
        text = os.fspath(model)
        if is_torch_source(text):
            return _load_torch(text, shapes, input_dtypes or {}, threads, device, trust)
        return _load_onnx(text, shapes, threads, device)
    kind = type(model).__module__
    if kind.startswith("onnx"):
        return _load_onnx(model, shapes, threads, device)
    if hasattr(model, "named_modules"):
        return _load_torch(model, shapes, input_dtypes or {}, threads, device)
    raise AvgPoolError(
        f"model must be an .onnx file, a .pt file, package.module:factory, an onnx.ModelProto or an "
        f"nn.Module, got a {type(model).__name__}"
    )


# --------------------------------------------------------------------------- ONNX Runtime


def _external_files(proto: Any, base: str) -> list[str]:
    from avgpool.inspect.onnx_reader import _all_tensors

    onnx = importlib.import_module("onnx")
    files: list[str] = []
    for tensor in _all_tensors(proto):
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            location = {e.key: e.value for e in tensor.external_data}.get("location", "")
            path = os.path.join(base, location)
            if path not in files:
                if not os.path.exists(path):
                    raise AvgPoolError(
                        f"external data file {location!r} is missing (expected beside the model)"
                    )
                files.append(path)
    return files


def _onnx_specs(
    metas: Sequence[Any], shapes: Mapping[str, tuple[int, ...]], source: str
) -> tuple[tuple[InputSpec, ...], int | None]:
    names = [m.name for m in metas]
    unknown = [n for n in shapes if n and n not in names]
    if unknown:
        raise AvgPoolError(f"--input-shape names {unknown}, not an input of {source} (inputs: {names})")
    if "" in shapes and len(metas) > 1:
        raise AvgPoolError(f"--input-shape: {source} has inputs {names}; name each shape (NAME:1x3x224x224)")
    specs, fixed = [], None
    for m in metas:
        dtype = _ORT_TYPES.get(m.type)
        if dtype is None:
            raise AvgPoolError(f"input {m.name!r} of {source} is a {m.type}: only numeric tensors can be fed")
        dims = list(m.shape)
        if not dims:
            raise AvgPoolError(f"input {m.name!r} of {source} is a scalar: it has no batch axis to sweep")
        if isinstance(dims[0], int) and dims[0] > 0:
            fixed = dims[0] if fixed is None else fixed
        given = shapes.get(m.name, shapes.get("") if len(metas) == 1 else None)
        if given is not None:
            if len(given) != len(dims):
                raise AvgPoolError(
                    f"--input-shape for {m.name!r} has {len(given)} axes, the model's input has {len(dims)} "
                    f"({'x'.join(str(d) for d in dims)})"
                )
            clash = [
                (i, d, g)
                for i, (d, g) in enumerate(zip(dims, given))
                if i and isinstance(d, int) and d > 0 and d != g
            ]
            if clash:
                i, d, g = clash[0]
                raise AvgPoolError(
                    f"--input-shape for {m.name!r}: axis {i} is fixed at {d} in the model, got {g}"
                )
            sample = tuple(given[1:])
        else:
            symbolic = [str(d) for d in dims[1:] if not (isinstance(d, int) and d > 0)]
            if symbolic:
                raise AvgPoolError(
                    f"input {m.name!r} of {source} has symbolic axes {symbolic}: give --input-shape "
                    f"{m.name}:1x... with every size"
                )
            sample = tuple(int(d) for d in dims[1:])
        specs.append(InputSpec(m.name, sample, dtype))
    return tuple(specs), fixed


def _load_onnx(
    model: Any, shapes: Mapping[str, tuple[int, ...]], threads: int | None, device: str
) -> TimedModel:
    try:
        import onnx
        import onnxruntime as ort
    except ImportError:
        raise AvgPoolError(
            "benchmarking an ONNX model needs onnx and onnxruntime: pip install 'avgpool[bench]'"
        ) from None
    if isinstance(model, str):
        if not os.path.exists(model):
            raise AvgPoolError(f"{model}: no such model file")
        if os.path.isdir(model):
            raise AvgPoolError(f"{model}: is a directory, not an ONNX file")
        try:
            proto = onnx.load(model, load_external_data=False)
        except Exception as exc:
            raise AvgPoolError(
                f"{model}: not an ONNX model or truncated ({type(exc).__name__}: {exc})"
            ) from None
        files = [model, *_external_files(proto, os.path.dirname(os.path.abspath(model)))]
        del proto  # the session reads the file itself; the copy would count as the model's memory
        size = sum(os.path.getsize(f) for f in files)
        source, payload = model, model
    else:
        source, files = "<onnx.ModelProto>", []
        payload = model.SerializeToString()
        size = len(payload)
    providers = ["CPUExecutionProvider"]
    if device != "cpu":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise AvgPoolError(f"device {device!r}: this onnxruntime build has no CUDAExecutionProvider")
        index = int(device.partition(":")[2] or 0)
        providers = [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if threads is not None:
        options.intra_op_num_threads = threads
    before = rss_bytes()
    try:
        session = ort.InferenceSession(payload, options, providers=providers)
    except Exception as exc:
        raise AvgPoolError(f"{source}: ONNX Runtime refuses the model: {str(exc).splitlines()[0]}") from None
    loaded = rss_bytes() - before
    specs, fixed = _onnx_specs(session.get_inputs(), shapes, source)
    dtypes = {s.name: np.dtype(s.dtype) for s in specs}

    def native(arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {k: np.ascontiguousarray(v, dtype=dtypes[k]) for k, v in arrays.items()}

    def call(feeds: dict[str, np.ndarray]) -> Any:
        return session.run(None, feeds)

    used = session.get_providers()[0]
    runtime = f"onnxruntime {ort.__version__} {used}"
    return TimedModel(
        source,
        "onnx",
        runtime,
        device,
        threads,
        specs,
        size,
        tuple(files),
        fixed,
        loaded,
        before,
        native,
        call,
    )


# --------------------------------------------------------------------------- PyTorch


def _state_dict_bytes(torch: Any, module: Any) -> int:
    buffer = io.BytesIO()
    torch.save(module.state_dict(), buffer)
    return buffer.getbuffer().nbytes


def _torch_specs(
    module: Any, shapes: Mapping[str, tuple[int, ...]], dtypes: Mapping[str, str], source: str
) -> tuple[InputSpec, ...]:
    if not shapes:
        raise AvgPoolError(
            f"--input-shape: {source} is a PyTorch model, which does not declare its input shapes; give "
            "--input-shape 1x3x224x224 (NAME:SHAPE per forward() argument), or --inputs FILE.npz"
        )
    if "" in shapes:
        if len(shapes) > 1:
            raise AvgPoolError("--input-shape: with several inputs, name each one (NAME:1x3x224x224)")
        return (InputSpec("", shapes[""][1:], dtypes.get("", "float32")),)
    params = list(pyinspect.signature(module.forward).parameters)
    unknown = [n for n in shapes if n not in params]
    if unknown:
        raise AvgPoolError(f"--input-shape names {unknown}, not forward() arguments of {source} ({params})")
    return tuple(InputSpec(n, shapes[n][1:], dtypes.get(n, "float32")) for n in params if n in shapes)


def _load_torch(
    model: Any,
    shapes: Mapping[str, tuple[int, ...]],
    dtypes: Mapping[str, str],
    threads: int | None,
    device: str,
    trust: bool = False,
) -> TimedModel:
    try:
        import torch
    except ImportError:
        raise AvgPoolError("benchmarking a PyTorch model needs torch: pip install 'avgpool[torch]'") from None

    if device != "cpu" and not torch.cuda.is_available():
        raise AvgPoolError(f"device {device!r}: torch sees no CUDA device")
    if threads is not None:
        torch.set_num_threads(threads)
    if isinstance(model, str):
        before: int | None = rss_bytes()
        loaded_model = load_torch_model(model, trust=trust)
        module, source = loaded_model.module, model
        kind = loaded_model.format
    else:
        before, module, source, kind = None, model, type(model).__name__, "module"
    if kind != "exported":  # an ExportedProgram's module is fixed in inference form
        module.eval()
        module.to(device)
    elif device != "cpu":
        raise AvgPoolError(f"{source}: an ExportedProgram runs on the device it was exported on (cpu here)")
    loaded = None if before is None else rss_bytes() - before
    if isinstance(model, str) and model.endswith(TORCH_SUFFIXES):
        files: tuple[str, ...] = (model,)
        size = os.path.getsize(model)
    else:
        files, size = (), _state_dict_bytes(torch, module)
    specs = _torch_specs(module, shapes, dtypes, source)
    sync = torch.cuda.synchronize if device != "cpu" else None

    def native(arrays: Mapping[str, np.ndarray]) -> tuple[Any, ...]:
        return tuple(torch.from_numpy(np.ascontiguousarray(arrays[s.name])).to(device) for s in specs)

    def call(args: tuple[Any, ...]) -> Any:
        with torch.inference_mode():
            out = module(*args)
        if sync is not None:
            sync()
        return out

    runtime = f"torch {torch.__version__} {device}"
    notes = [] if files else ["size on disk: the bytes torch.save(model.state_dict()) writes"]
    return TimedModel(
        source,
        "torch",
        runtime,
        device,
        torch.get_num_threads(),
        specs,
        size,
        files,
        None,
        loaded,
        before,
        native,
        call,
        notes,
    )


# --------------------------------------------------------------------------- inputs


def random_batches(
    specs: Sequence[InputSpec], batch: int, count: int, seed: int = 0
) -> list[dict[str, np.ndarray]]:
    """``count`` different random input sets of ``batch`` samples (seeded by ``seed`` and ``batch``).

    Floats are standard normal, integers uniform in [0, 10), booleans fair coin flips: use sample
    inputs (`file_batches`) where values steer the work (token ids, masks).

    Examples
    --------
    >>> sets = random_batches([InputSpec("x", (3, 4), "float32")], batch=2, count=3)
    >>> len(sets), sets[0]["x"].shape, sets[0]["x"].dtype, bool((sets[0]["x"] != sets[1]["x"]).any())
    (3, (2, 3, 4), dtype('float32'), True)
    """
    rng = np.random.default_rng([seed, batch])
    out = []
    for _ in range(count):
        arrays = {}
        for s in specs:
            dtype = np.dtype(s.dtype)
            shape = s.shape(batch)
            if dtype.kind == "f":
                arrays[s.name] = rng.standard_normal(shape, dtype=np.float32).astype(dtype, copy=False)
            elif dtype.kind in "iu":
                arrays[s.name] = rng.integers(0, 10, shape).astype(dtype)
            else:
                arrays[s.name] = rng.random(shape) < 0.5
        out.append(arrays)
    return out


def match_inputs(specs: Sequence[InputSpec], arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The sample arrays by the model's input names (a single array feeds a single input)."""
    if len(specs) == 1 and len(arrays) == 1:
        return {specs[0].name: next(iter(arrays.values()))}
    missing = [s.name for s in specs if s.name not in arrays]
    if missing:
        raise AvgPoolError(f"--inputs lacks the model input(s) {missing} (the file has {sorted(arrays)})")
    return {s.name: arrays[s.name] for s in specs}


def file_batches(
    specs: Sequence[InputSpec], arrays: Mapping[str, np.ndarray], batch: int, count: int
) -> list[dict[str, np.ndarray]]:
    """``count`` batches of ``batch`` consecutive samples from ``arrays`` (samples on axis 0),
    continuing where the previous batch ended and wrapping around the file.

    Examples
    --------
    >>> sets = file_batches([InputSpec("x", (), "int64")], {"x": np.arange(5)}, batch=3, count=2)
    >>> [s["x"].tolist() for s in sets]
    [[0, 1, 2], [3, 4, 0]]
    """
    named = match_inputs(specs, arrays)
    n = next(iter(named.values())).shape[0]
    out = []
    for i in range(count):
        rows = (np.arange(batch) + i * batch) % n
        out.append(
            {s.name: np.ascontiguousarray(named[s.name][rows], dtype=np.dtype(s.dtype)) for s in specs}
        )
    return out


def shapes_of(arrays: Mapping[str, np.ndarray]) -> tuple[dict[str, tuple[int, ...]], dict[str, str]]:
    """(shapes with axis 0 a placeholder, dtypes) by name from sample arrays; a single array is
    stored under "" and so feeds a single-input model whatever the input is called."""
    if len(arrays) == 1:
        value = next(iter(arrays.values()))
        return {"": (1, *value.shape[1:])}, {"": value.dtype.name}
    return {k: (1, *v.shape[1:]) for k, v in arrays.items()}, {k: v.dtype.name for k, v in arrays.items()}
