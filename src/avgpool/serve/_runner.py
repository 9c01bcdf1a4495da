"""A served model version: `Runner` (its tensor metadata and ``run``, sampled or not), its
`TensorSpec`s and errors, shared by the ONNX runner (`_runners`) and the torch ones
(`_torch_runners`)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from avgpool._errors import AvgPoolError
from avgpool.serve._protocol import DATATYPES

__all__ = ["PLATFORMS", "ModelRunError", "Runner", "TensorSpec", "datatype_of"]

#: Platform names in model metadata, by source kind.
PLATFORMS = {
    "onnx": "onnxruntime_onnx",
    "torchscript": "pytorch_torchscript",
    "exported": "pytorch_exportedprogram",
    "module": "pytorch_module",
}

#: NumPy dtype of each Open Inference Protocol datatype a tensor of numbers has
#: (`_protocol.DATATYPES` without BYTES), the datatype of each such dtype, and the datatype of
#: each ONNX Runtime tensor type (its NumPy name, but "float" and "double").
_NUMPY = {name: dtype for name, dtype in DATATYPES.items() if name != "BYTES"}
_OIP = {dtype: name for name, dtype in _NUMPY.items()}
_ORT_NAMES = {"float32": "float", "float64": "double"}  # where ONNX Runtime's differ from NumPy's
_ORT = {f"tensor({_ORT_NAMES.get(d.name, d.name)})": n for n, d in _NUMPY.items()}
_ORT["tensor(string)"] = "BYTES"


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


def _no_compile(compile: bool, source: str, kind: str) -> None:
    if compile:
        raise AvgPoolError(
            f"compile=True (--compile) applies to nn.Module and .pt2 models; {source} is {kind}: "
            "serve it without --compile"
        )
