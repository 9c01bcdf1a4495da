"""One entry point for any model: `read_model` picks the reader, `inspect_model` adds lint.

A model is an ONNX file (``.onnx``), a PyTorch file (a TorchScript archive, or an
ExportedProgram ``.pt2`` or a ``.pt``/``.pth`` pickled module, these two only with
``trust=True``; see `avgpool._loading`), a ``package.module:attribute`` spec naming a module
or a function that builds one, or an already loaded ``onnx.ModelProto`` or
``torch.nn.Module``. ExportedPrograms and TorchScript models are read through PyTorch's ONNX
export.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from avgpool._loading import is_torch_source, load_torch_model, to_onnx
from avgpool.inspect.layers import Inventory, ModelError
from avgpool.inspect.lint import Finding, exceeds, lint

__all__ = ["InspectReport", "inspect_model", "read_model"]


def read_model(
    model: Any,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    *,
    require_pooling: bool = False,
    trust: bool = False,
) -> Inventory:
    """The pooling inventory of an ONNX or PyTorch model (see the module docstring for forms).

    ``require_pooling=True`` raises ModelError for a model without any pooling layer;
    ``trust=True`` lets a ``.pt``/``.pth`` holding a pickled module be unpickled, which can
    run code from the file.
    """
    inventory = _read(model, input_shapes, trust)
    if require_pooling and not inventory.layers:
        raise ModelError(f"{inventory.source}: no pooling layers found")
    return inventory


def _read(model: Any, input_shapes: Mapping[str, Sequence[int]] | None, trust: bool) -> Inventory:
    if isinstance(model, (str, os.PathLike)):
        text = os.fspath(model)
        if is_torch_source(text):
            return _read_torch_source(text, input_shapes, trust)
        from avgpool.inspect.onnx_reader import read_onnx

        return read_onnx(text, input_shapes)
    kind = type(model).__module__
    if kind.startswith("onnx"):
        from avgpool.inspect.onnx_reader import read_onnx

        return read_onnx(model, input_shapes)
    if kind.startswith("torch") or hasattr(model, "named_modules"):
        from avgpool.inspect.torch_reader import read_torch

        return read_torch(model, input_shapes)
    raise ModelError(f"cannot read a {type(model).__name__}: give an ONNX file, a .pt module or an nn.Module")


def _read_torch_source(text: str, input_shapes: Any, trust: bool) -> Inventory:
    loaded = load_torch_model(text, trust=trust, error=ModelError)
    if loaded.opaque:
        from avgpool.inspect.onnx_reader import read_onnx

        return read_onnx(to_onnx(loaded, input_shapes, ModelError), input_shapes, source=text)
    from avgpool.inspect.torch_reader import read_torch

    return read_torch(loaded.module, input_shapes, source=text)


@dataclass(frozen=True)
class InspectReport:
    """A model's pooling layers and what lint found in them."""

    inventory: Inventory
    findings: tuple[Finding, ...]
    target: str | None = None

    def fails(self, fail_on: str) -> bool:
        return exceeds(self.findings, fail_on)

    def to_dict(self) -> dict[str, Any]:
        counts = {s: sum(f.severity == s for f in self.findings) for s in ("error", "warning", "info")}
        return {
            **self.inventory.to_dict(),
            "target": self.target,
            "summary": {"layers": len(self.inventory.layers), **counts},
            "findings": [f.to_dict() for f in self.findings],
        }


def inspect_model(
    model: Any,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    *,
    target: str | None = None,
    disable: Sequence[str] = (),
    trust: bool = False,
) -> InspectReport:
    """`read_model` (a model must have pooling) and `lint` in one call."""
    inventory = read_model(model, input_shapes, require_pooling=True, trust=trust)
    return InspectReport(inventory, lint(inventory, target, disable=disable), target)
