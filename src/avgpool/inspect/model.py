"""One entry point for any model: `read_model` picks the reader, `inspect_model` adds lint.

A model is an ONNX file (``.onnx``), a pickled PyTorch module (``.pt``/``.pth``, loaded with
``weights_only=False``: only open files you trust), a ``package.module:attribute`` spec naming
a module or a function that builds one, or an already loaded ``onnx.ModelProto`` or
``torch.nn.Module``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from avgpool.inspect.layers import Inventory, ModelError
from avgpool.inspect.lint import Finding, exceeds, lint

__all__ = ["InspectReport", "inspect_model", "read_model"]

_TORCH_SUFFIXES = (".pt", ".pth")


def read_model(
    model: Any,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    *,
    require_pooling: bool = False,
) -> Inventory:
    """The pooling inventory of an ONNX or PyTorch model (see the module docstring for forms).

    ``require_pooling=True`` raises ModelError for a model without any pooling layer.
    """
    inventory = _read(model, input_shapes)
    if require_pooling and not inventory.layers:
        raise ModelError(f"{inventory.source}: no pooling layers found")
    return inventory


def _read(model: Any, input_shapes: Mapping[str, Sequence[int]] | None) -> Inventory:
    if isinstance(model, (str, os.PathLike)):
        text = os.fspath(model)
        if not os.path.exists(text) and ":" in text and not text.endswith((".onnx", *_TORCH_SUFFIXES)):
            return _read_spec(text, input_shapes)
        if text.endswith(_TORCH_SUFFIXES):
            return _read_torch_file(text, input_shapes)
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


def _read_torch_file(path: str, input_shapes: Any) -> Inventory:
    from avgpool.inspect.torch_reader import _torch, read_torch

    torch = _torch()
    if not os.path.exists(path):
        raise ModelError(f"{path}: no such file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise ModelError(f"{path}: not a loadable PyTorch file ({type(exc).__name__}: {exc})") from None
    if isinstance(obj, torch.jit.ScriptModule):
        raise ModelError(f"{path}: TorchScript is not supported; export it to ONNX, or save the nn.Module")
    if not isinstance(obj, torch.nn.Module):
        raise ModelError(
            f"{path}: holds a {type(obj).__name__}, not an nn.Module (a state_dict needs its model: "
            "use package.module:factory)"
        )
    return read_torch(obj, input_shapes, source=path)


def _read_spec(spec: str, input_shapes: Any) -> Inventory:
    from avgpool._specs import import_spec, is_factory
    from avgpool.inspect.torch_reader import read_torch

    try:
        target = import_spec(spec)
    except (ImportError, AttributeError) as exc:
        raise ModelError(f"{spec}: no such model ({exc})") from None
    if is_factory(target):
        try:
            target = target()
        except Exception as exc:
            raise ModelError(
                f"{spec}: calling it to build the model failed ({type(exc).__name__}: {exc})"
            ) from None
    return read_torch(target, input_shapes, source=spec)


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
) -> InspectReport:
    """`read_model` (a model must have pooling) and `lint` in one call."""
    inventory = read_model(model, input_shapes, require_pooling=True)
    return InspectReport(inventory, lint(inventory, target, disable=disable), target)
