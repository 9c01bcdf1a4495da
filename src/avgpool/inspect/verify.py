"""Does the runtime compute what the model means? Run an ONNX model in ONNX Runtime with every
pooling node's input and output exposed, recompute each node with avgpool's float64 reference
under that node's exact ONNX semantics, and compare.

Tolerance: a max picks an element, so MaxPool/GlobalMaxPool/ReduceMax must match exactly. An
average or Lp norm over ``m`` cells accumulated in the runtime's float type may differ from the
exact value by about ``m`` roundings; the bound used is ``eps * (m + 4) * scale``, with ``eps``
the output dtype's machine epsilon and ``scale`` the largest magnitude in the node's input or
exact output. Known ONNX Runtime deviations (docs/conformance.md) fail, with the reason named.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from avgpool import ops
from avgpool._dispatch import use_backend
from avgpool._errors import AvgPoolError
from avgpool.conventions import from_onnx
from avgpool.inspect.layers import Inventory, ModelError, PoolLayer
from avgpool.inspect.onnx_reader import _dims, _onnx, load_onnx, read_onnx
from avgpool.window import Window

__all__ = ["NodeCheck", "VerifyReport", "verify"]


@dataclass(frozen=True)
class NodeCheck:
    """One pooling node: runtime vs reference."""

    name: str
    op: str
    source_op: str
    passed: bool
    max_abs_diff: float
    max_rel_diff: float
    tolerance: float
    runtime_shape: tuple[int, ...] | None
    reference_shape: tuple[int, ...] | None
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "op": self.op,
            "source_op": self.source_op,
            "passed": self.passed,
            "max_abs_diff": _json_float(self.max_abs_diff),
            "max_rel_diff": _json_float(self.max_rel_diff),
            "tolerance": self.tolerance,
            "runtime_shape": None if self.runtime_shape is None else list(self.runtime_shape),
            "reference_shape": None if self.reference_shape is None else list(self.reference_shape),
            "detail": self.detail,
        }


def _json_float(value: float) -> float | None:
    return None if math.isinf(value) or math.isnan(value) else value


@dataclass(frozen=True)
class VerifyReport:
    source: str
    runs: int
    inputs: Mapping[str, tuple[int, ...]]
    checks: tuple[NodeCheck, ...]
    runtime: str

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def failures(self) -> tuple[NodeCheck, ...]:
        return tuple(c for c in self.checks if not c.passed)

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "runtime": self.runtime,
            "runs": self.runs,
            "inputs": {k: list(v) for k, v in self.inputs.items()},
            "passed": self.passed,
            "failed": len(self.failures),
            "checks": [c.to_dict() for c in self.checks],
        }


def known_deviation(layer: PoolLayer) -> str:
    """Why ONNX Runtime is known to differ from the spec for this node ('' when it is not)."""
    w = layer.window
    if w is None or w.kernel_size is None:
        return ""
    spatial = layer.spatial_shape
    reasons = []
    if isinstance(w.padding, str) and w.padding != "valid":
        if any(d > 1 for d in w.dilation):
            reasons.append("ORT computes SAME pads from the undilated kernel when dilation > 1")
        spans = [d * (k - 1) + 1 for k, d in zip(w.kernel_size, w.dilation)]
        if any(s > span for s, span in zip(w.stride, spans)):
            reasons.append("SAME with stride > span needs negative pads: ORT shifts or refuses the windows")
    if spatial is not None and not isinstance(w.padding, str):
        for n, k, d, (b, a) in zip(spatial, w.kernel_size, w.dilation, w.padding):
            if d * (k - 1) + 1 > n + b + a:
                reasons.append("span larger than the padded input: ORT still writes one output")
                break
    return "; ".join(reasons) + (" (docs/conformance.md)" if reasons else "")


def _reference(layer: PoolLayer, x: np.ndarray) -> np.ndarray:
    """The node recomputed in float64 under ONNX semantics."""
    x64 = x.astype(np.float64)
    attrs = dict(layer.attributes)
    src = layer.source_op
    ndim = x.ndim - 2
    if src in ("ReduceMean", "ReduceMax"):
        keep = bool(attrs.get("keepdims", 1))
        fn = ops.global_avg_pool if src == "ReduceMean" else ops.global_max_pool
        return fn(x64, ndim=ndim, keepdims=keep)
    if src == "GlobalAveragePool":
        return ops.global_avg_pool(x64, ndim=ndim)
    if src == "GlobalMaxPool":
        return ops.global_max_pool(x64, ndim=ndim)
    if src == "GlobalLpPool":
        return ops.lp_pool(x64, float(attrs.get("p", 2)), window=Window(None, ndim=ndim), convention="onnx")
    window = from_onnx(attrs, x.shape, op_type=src)
    if src == "AveragePool":
        return ops.avg_pool(x64, window=window)
    if src == "MaxPool":
        return ops.max_pool(x64, window=window)
    if src == "LpPool":
        return ops.lp_pool(x64, float(attrs.get("p", 2)), window=window, convention="onnx")
    raise AvgPoolError(f"no reference for {src}")


def _cells(layer: PoolLayer, x: np.ndarray) -> int:
    w = layer.window
    if w is None or w.kernel_size is None:
        return int(np.prod(x.shape[2:]))
    return int(np.prod(w.kernel_size))


def _compare(layer: PoolLayer, x: np.ndarray, y: np.ndarray) -> tuple[float, float, float, str, Any]:
    """(max abs, max rel, tolerance, problem, reference shape) for one run."""
    try:
        with use_backend("reference"):  # the float64 oracle, not the fast kernels
            ref = _reference(layer, x)
    except AvgPoolError as exc:
        return math.inf, math.inf, 0.0, f"reference refuses the node: {exc}", None
    if ref.shape != y.shape:
        return (
            math.inf,
            math.inf,
            0.0,
            f"runtime output shape {_fmt(y.shape)}, ONNX semantics {_fmt(ref.shape)}",
            ref.shape,
        )
    exact = layer.op in ("max", "global_max")
    dtype = y.dtype if y.dtype.kind == "f" else np.dtype(np.float64)
    with np.errstate(invalid="ignore"):
        diff = np.abs(y.astype(np.float64) - ref)
        both_nan = np.isnan(y) & np.isnan(ref)
        diff = np.where(both_nan, 0.0, diff)
        rel = diff / np.maximum(np.abs(ref), np.finfo(np.float64).tiny)
    max_abs = float(np.nanmax(diff)) if diff.size else 0.0
    if np.isnan(diff).any():
        max_abs = math.inf
    max_rel = float(np.nanmax(rel)) if rel.size else 0.0
    if exact:
        tol = 0.0
        max_abs = (
            float(np.max(np.abs(y.astype(np.float64) - ref.astype(y.dtype).astype(np.float64))))
            if y.size
            else 0.0
        )
    else:
        finite_x = np.abs(x[np.isfinite(x)]) if x.size else np.zeros(1)
        scale = max(
            float(finite_x.max()) if finite_x.size else 0.0,
            float(np.nanmax(np.abs(ref))) if ref.size else 0.0,
        )
        tol = float(np.finfo(dtype).eps) * (_cells(layer, x) + 4) * scale
    return max_abs, max_rel, tol, "", ref.shape


def _fmt(shape: Sequence[int]) -> str:
    return "x".join(str(s) for s in shape)


def _ort():
    try:
        import onnxruntime as ort
    except ImportError:  # pragma: no cover
        raise ModelError("verify needs onnxruntime: pip install 'avgpool[inspect]'") from None
    return ort


def verify(
    model: str | os.PathLike[str] | Any,
    *,
    inputs: Mapping[str, np.ndarray] | str | os.PathLike[str] | None = None,
    random: int = 1,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    seed: int = 0,
) -> VerifyReport:
    """Check every pooling node of an ONNX model in ONNX Runtime against avgpool's reference.

    Parameters
    ----------
    model : path or onnx.ModelProto
    inputs : mapping of input name to array, or a path to an ``.npz`` file, optional
        The model's inputs (an ``.npz`` with one array feeds a single-input model whatever its
        key). Without it, ``random`` seeded standard-normal inputs are drawn.
    random : int
        How many random input sets to run (ignored with ``inputs``).
    input_shapes : mapping, optional
        Fixes dynamic dimensions, as in `read_onnx`.

    Raises
    ------
    ModelError
        Not an ONNX model, no pooling, or ONNX Runtime refuses it.
    """
    onnx = _onnx()
    source = os.fspath(model) if isinstance(model, (str, os.PathLike)) else "<onnx model>"
    proto = load_onnx(model) if isinstance(model, (str, os.PathLike)) else model
    feeds_given = _load_inputs(inputs) if inputs is not None else None
    shapes = dict(input_shapes or {})
    if feeds_given is not None and not shapes:
        shapes = _shapes_from_feeds(proto, feeds_given)
    inventory: Inventory = read_onnx(proto, shapes, source=source)
    if not inventory.layers:
        raise ModelError(f"{source}: no pooling layers to verify")
    inferred = onnx.shape_inference.infer_shapes(_with_shapes(proto, inventory.inputs), strict_mode=False)
    types = {
        vi.name: vi for vi in (*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output)
    }
    exposed = onnx.ModelProto()
    exposed.CopyFrom(proto)
    present = {o.name for o in exposed.graph.output}
    wanted: list[str] = []
    for layer in inventory.layers:
        for name in (layer.inputs[0], layer.outputs[0]):
            if name not in wanted:
                wanted.append(name)
            if name in present:
                continue
            present.add(name)
            if name in types:
                exposed.graph.output.append(types[name])
            else:
                exposed.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    ort = _ort()
    options = ort.SessionOptions()
    # fatal only: ONNX Runtime's own error log would print beside the one line we make of it
    options.log_severity_level = 4
    try:
        session = ort.InferenceSession(
            exposed.SerializeToString(), options, providers=["CPUExecutionProvider"]
        )
    except Exception as exc:
        raise ModelError(f"{source}: ONNX Runtime refuses the model: {str(exc).splitlines()[0]}") from None
    runs = (
        [feeds_given] if feeds_given is not None else _random_feeds(session, inventory.inputs, random, seed)
    )
    worst: dict[int, list[Any]] = {}
    for feeds in runs:
        feeds = _match_feeds(session, feeds)
        try:
            values = dict(zip(wanted, session.run(wanted, feeds)))
        except Exception as exc:
            raise ModelError(f"{source}: ONNX Runtime failed to run: {str(exc).splitlines()[0]}") from None
        for layer in inventory.layers:
            x, y = values[layer.inputs[0]], values[layer.outputs[0]]
            result = _compare(layer, np.asarray(x), np.asarray(y))
            state = worst.setdefault(layer.index, [0.0, 0.0, math.inf, "", None, None])
            state[0] = max(state[0], result[0])
            state[1] = max(state[1], result[1])
            state[2] = min(state[2], result[2])
            state[3] = state[3] or result[3]
            state[4] = tuple(np.shape(y))
            state[5] = None if result[4] is None else tuple(result[4])
    checks = []
    for layer in inventory.layers:
        max_abs, max_rel, tol, problem, rt_shape, ref_shape = worst[layer.index]
        passed = not problem and max_abs <= tol
        detail = problem
        if not passed:
            if not detail:
                detail = f"max abs diff {max_abs:.3g} > tolerance {tol:.3g}"
            deviation = known_deviation(layer)
            if deviation:
                detail += f"; known ONNX Runtime deviation: {deviation}"
        checks.append(
            NodeCheck(
                layer.name,
                layer.op,
                layer.source_op,
                passed,
                max_abs,
                max_rel,
                tol,
                rt_shape,
                ref_shape,
                detail,
            )
        )
    runtime = f"onnxruntime {ort.__version__} (CPUExecutionProvider)"
    return VerifyReport(source, len(runs), dict(inventory.inputs), tuple(checks), runtime)


def _load_inputs(inputs: Mapping[str, np.ndarray] | str | os.PathLike[str]) -> dict[str, np.ndarray]:
    if isinstance(inputs, (str, os.PathLike)):
        from avgpool._files import read_arrays

        arrays = read_arrays(inputs, ModelError)
        empty = [k for k, v in arrays.items() if v.size == 0]
        if empty:  # nothing would run, and nothing failing is not a pass
            raise ModelError(f"{os.fspath(inputs)}: the input(s) {empty} hold no values")
        return arrays
    return {k: np.asarray(v) for k, v in inputs.items()}


def _graph_inputs(proto: Any) -> list[Any]:
    initializers = {t.name for t in proto.graph.initializer}
    return [i for i in proto.graph.input if i.name not in initializers]


def _shapes_from_feeds(proto: Any, feeds: Mapping[str, np.ndarray]) -> dict[str, tuple[int, ...]]:
    names = [i.name for i in _graph_inputs(proto)]
    if len(names) == 1 and len(feeds) == 1:
        return {names[0]: tuple(next(iter(feeds.values())).shape)}
    missing = [n for n in names if n not in feeds]
    if missing:
        raise ModelError(f"the inputs file lacks the model input(s) {missing} (it has {sorted(feeds)})")
    return {n: tuple(feeds[n].shape) for n in names}


def _with_shapes(proto: Any, shapes: Mapping[str, Sequence[int]]) -> Any:
    copy = _onnx().ModelProto()
    copy.CopyFrom(proto)
    for graph_input in copy.graph.input:
        if graph_input.name in shapes and _dims(graph_input.type) is not None:
            dims = graph_input.type.tensor_type.shape
            del dims.dim[:]
            for s in shapes[graph_input.name]:
                dims.dim.add().dim_value = int(s)
    return copy


def _match_feeds(session: Any, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    expected = session.get_inputs()
    if len(expected) == 1 and len(feeds) == 1:
        feeds = {expected[0].name: next(iter(feeds.values()))}
    out = {}
    for meta in expected:
        value = feeds[meta.name]
        dtype = _ort_dtype(meta.type)
        out[meta.name] = value.astype(dtype, copy=False) if dtype is not None else value
    return out


def _ort_dtype(type_name: str) -> Any:
    return {
        "tensor(float)": np.float32,
        "tensor(double)": np.float64,
        "tensor(float16)": np.float16,
        "tensor(int64)": np.int64,
        "tensor(int32)": np.int32,
        "tensor(uint8)": np.uint8,
        "tensor(int8)": np.int8,
    }.get(type_name)


def _random_feeds(
    session: Any, shapes: Mapping[str, Sequence[int]], n: int, seed: int
) -> list[dict[str, np.ndarray]]:
    if n < 1:
        raise AvgPoolError(f"random must be >= 1, got {n}")
    rng = np.random.default_rng(seed)
    runs = []
    for _ in range(n):
        feeds = {}
        for meta in session.get_inputs():
            dtype = _ort_dtype(meta.type) or np.float32
            shape = tuple(shapes[meta.name])
            if np.issubdtype(dtype, np.floating):
                feeds[meta.name] = rng.standard_normal(shape).astype(dtype)
            else:
                feeds[meta.name] = rng.integers(0, 4, size=shape).astype(dtype)
        runs.append(feeds)
    return runs
