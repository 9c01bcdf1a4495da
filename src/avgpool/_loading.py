"""PyTorch models from a file or a spec: the one loader every model tool uses.

Forms, and what loading each can run:

* a TorchScript archive (``torch.jit.save``, whatever the file is named, often ``.pt``):
  TorchScript code that `torch.jit.load` compiles with its own loader, which builds no
  Python objects.
* ``.pt``/``.pth`` otherwise: ``torch.load(weights_only=True)``, which builds tensors and
  plain containers only. A pickled ``nn.Module`` (``torch.save(model)``) is a pickle that can
  run any code as it loads, so it is refused unless the caller trusts the file
  (``trust=True``, ``--trust-file`` on the command line).
* ``.pt2``: a `torch.export` ExportedProgram (``torch.export.save``). `torch.export.load`
  unpickles parts of the archive (weights saved with pickle, opaque objects: the archive's
  own config says which) without ``weights_only``, so a ``.pt2`` can run code as it loads
  and needs ``trust=True`` too.
* ``package.module:attr``: importing the named code is what the caller asked for.

TorchScript and ExportedProgram modules hide their pooling layers' Python classes and take no
Python hooks, so the tools that look inside a model (inspect, diff, profile) read them through
PyTorch's standard ONNX export (`to_onnx`): their pooling layers are the ONNX nodes it writes.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import warnings
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from avgpool._errors import AvgPoolError

__all__ = ["TORCH_SUFFIXES", "LoadedModel", "is_torch_source", "load_torch_model", "sha256_file", "to_onnx"]

TORCH_SUFFIXES = (".pt", ".pth", ".pt2")

_REFUSED = (
    "holds pickled Python objects (torch.save of a whole module), and unpickling them can run "
    "any code the file contains: pass --trust-file (trust=True in Python) only if you trust the "
    "file, or export the model to ONNX (torch.onnx.export), which loads without running code"
)
_REFUSED_PT2 = (
    "is an ExportedProgram, and torch.export.load unpickles parts of it (pickled weights, opaque "
    "objects) without weights_only, which can run any code the file contains: pass --trust-file "
    "(trust=True in Python) only if you trust the file, or export the model to ONNX "
    "(torch.onnx.export), which loads without running code"
)


@dataclass(frozen=True)
class LoadedModel:
    """A model ready to call: ``module``, its ``format`` ("exported", "torchscript", "pickle"
    or "spec"), where it came from, the file's sha256 (None for a spec) and, for a ``.pt2``,
    the ExportedProgram itself."""

    module: Any
    format: str
    source: str
    sha256: str | None
    program: Any = None

    @property
    def opaque(self) -> bool:
        """Compiled formats whose pooling layers are read through ONNX (see the module doc)."""
        return self.format in ("exported", "torchscript")


def is_torch_source(text: str) -> bool:
    """A PyTorch file by its name, or a ``package.module:attr`` spec (no such file exists)."""
    return text.endswith(TORCH_SUFFIXES) or (not os.path.exists(text) and ":" in text)


def _torch(error: type[AvgPoolError]) -> Any:
    try:
        import torch
    except ImportError:  # pragma: no cover - exercised only without the extra
        raise error("loading a PyTorch model needs torch: pip install 'avgpool[torch]'") from None
    return torch


def sha256_file(path: str) -> str:
    """The file's sha256, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _archive_kind(path: str) -> str | None:
    """ "torchscript" or "exported" for those zip archives, else None (a torch.save pickle)."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return None
    parts = {part for name in names for part in name.split("/")}
    if "serialized_exported_program.json" in parts or "archive_format" in parts:
        return "exported"
    if "code" in parts and "constants.pkl" in parts:
        return "torchscript"
    return None


def load_torch_model(
    spec: str, *, trust: bool = False, error: type[AvgPoolError] = AvgPoolError
) -> LoadedModel:
    """Load ``spec`` (see the module docstring); failures raise ``error`` with one line.

    ``trust=True`` lets a ``.pt``/``.pth`` that holds pickled Python objects (a whole
    ``nn.Module``), or a ``.pt2``, be loaded: only for files you trust, since that can run
    their code.
    """
    torch = _torch(error)
    if not spec.endswith(TORCH_SUFFIXES) and not os.path.exists(spec) and ":" in spec:
        return LoadedModel(_from_spec(spec, error), "spec", spec, None)
    if not os.path.exists(spec):
        raise error(f"{spec}: no such file")
    kind = "exported" if spec.endswith(".pt2") else _archive_kind(spec)
    if kind == "exported" and not trust:
        raise error(f"{spec}: {_REFUSED_PT2}")
    try:
        if kind == "exported":
            program = torch.export.load(spec)
            return LoadedModel(program.module(), kind, spec, sha256_file(spec), program)
        if kind == "torchscript":
            with warnings.catch_warnings():  # deprecated for writing new models; old files abound
                warnings.simplefilter("ignore", DeprecationWarning)
                module = torch.jit.load(spec, map_location="cpu")
            return LoadedModel(module, kind, spec, sha256_file(spec))
        obj = _unpickle(torch, spec, trust, error)
    except AvgPoolError:
        raise
    except Exception as exc:
        raise error(f"{spec}: not a loadable PyTorch file ({type(exc).__name__}: {exc})") from None
    if not isinstance(obj, torch.nn.Module):
        hint = (
            " (a state_dict needs its model: use package.module:factory)" if isinstance(obj, Mapping) else ""
        )
        raise error(f"{spec}: holds a {type(obj).__name__}, not an nn.Module{hint}")
    return LoadedModel(obj, "pickle", spec, sha256_file(spec))


def _unpickle(torch: Any, path: str, trust: bool, error: type[AvgPoolError]) -> Any:
    if trust:
        return torch.load(path, map_location="cpu", weights_only=False)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights_only" in str(exc) or "Weights only" in str(exc):
            raise error(f"{path}: {_REFUSED}") from None
        raise


def _from_spec(spec: str, error: type[AvgPoolError]) -> Any:
    from avgpool._specs import import_spec, is_factory

    try:
        target = import_spec(spec)
    except (ImportError, AttributeError) as exc:
        raise error(f"{spec}: no such model ({exc})") from None
    except Exception as exc:  # the model's own module failed as it ran: the input, not avgpool
        raise error(f"{spec}: importing it failed ({type(exc).__name__}: {exc})") from None
    if is_factory(target):
        try:
            target = target()
        except Exception as exc:
            raise error(
                f"{spec}: calling it to build the model failed ({type(exc).__name__}: {exc})"
            ) from None
    return target


#: A deprecation PyTorch's dynamo exporter triggers in PyTorch's own code.
_LEAFSPEC = r"`isinstance\(treespec, LeafSpec\)` is deprecated"


def to_onnx(
    loaded: LoadedModel,
    input_shapes: Mapping[str, Sequence[int]] | None,
    error: type[AvgPoolError] = AvgPoolError,
) -> Any:
    """An ExportedProgram or TorchScript model as an ``onnx.ModelProto``, by ``torch.onnx.export``.

    A ``.pt2`` carries its input shapes; a TorchScript module needs ``input_shapes`` (one
    shape, or one per ``forward`` argument in order), as float32 inputs.
    """
    import io

    torch = _torch(error)
    try:
        import onnx
    except ImportError:  # pragma: no cover
        raise error("reading a compiled PyTorch model needs onnx: pip install 'avgpool[inspect]'") from None
    try:
        with warnings.catch_warnings():
            # PyTorch's own: a TorchScript module has only the TorchScript exporter, which
            # PyTorch deprecates (and which cannot read a ScriptMethod's signature, and says
            # so); its dynamo exporter calls a check PyTorch deprecates
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.filterwarnings("ignore", _LEAFSPEC, FutureWarning)
            warnings.filterwarnings("ignore", "no signature found for <torch.ScriptMethod", UserWarning)
            if loaded.format == "exported":
                return torch.onnx.export(loaded.program, dynamo=True, verbose=False).model_proto
            shapes = list((input_shapes or {}).values())
            if not shapes:
                raise error(
                    f"{loaded.source}: a TorchScript model declares no input shapes: give --input-shape "
                    "(input_shapes in Python)"
                )
            args = tuple(torch.zeros(tuple(int(n) for n in s)) for s in shapes)
            buffer = io.BytesIO()
            torch.onnx.export(loaded.module, args, buffer, dynamo=False)
            return onnx.load_from_string(buffer.getvalue())
    except AvgPoolError:
        raise
    except Exception as exc:
        raise error(
            f"{loaded.source}: torch.onnx.export could not convert this {loaded.format} model "
            f"({type(exc).__name__}: {exc})"
        ) from None
