"""avgpool's ONNX translations as FX graph nodes, for the plain ``torch.onnx.export(dynamo=True)``.

The dynamo exporter captures avgpool's custom ops with ``torch.export`` and then decomposes every
op its registry cannot translate, using the decompositions registered in PyTorch's global table.
`install` puts one there for each forward op. During an ONNX export it runs the same translation
the other exporters run, through `FxBuilder`: ONNX's pooling operators become
``torch.onnx.ops.symbolic`` nodes (the exporter writes them as they are), and the arithmetic
around them (transposes, padding, scaling, matrix products) becomes ordinary ATen ops that the
exporter lowers as it lowers any model's. Otherwise it stands aside: it calls the op itself with
its entry withdrawn, so whatever else reads the table (fake tensors with symbolic sizes, a trace
given the whole table) sees the op as if the entry were not there.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

#: The opset the dynamo exporter builds its graph in; it converts to a requested opset afterwards,
#: so a translation may only use operators (and attributes) this opset has.
BUILD_OPSET = 18

_POOLS = ("AveragePool", "MaxPool", "LpPool")
_GLOBAL_POOLS = ("GlobalAveragePool", "GlobalMaxPool")


def _pool_shape(shape: Sequence[int], attrs: dict) -> list[int]:
    """An ONNX pooling node's output shape, by ONNX's own formula (the last window starts inside)."""
    kernel = attrs["kernel_shape"]
    ndim = len(kernel)
    strides = attrs.get("strides", [1] * ndim)
    dilations = attrs.get("dilations", [1] * ndim)
    pads = attrs.get("pads", [0] * 2 * ndim)
    out = list(shape[:2])
    for i, size in enumerate(shape[2:]):
        before, after = pads[i], pads[ndim + i]
        reach = size + before + after - ((kernel[i] - 1) * dilations[i] + 1)
        if attrs.get("ceil_mode", 0):
            n = -(-reach // strides[i]) + 1
            if (n - 1) * strides[i] >= size + before:
                n -= 1
        else:
            n = reach // strides[i] + 1
        out.append(n)
    return out


class FxBuilder:
    """The translations' builder over traced tensors (see the module docstring)."""

    opset = BUILD_OPSET

    def __init__(self) -> None:
        import torch

        self._torch = torch

    # -- what a translation asks of its builder ------------------------------------------------

    def const(self, array: np.ndarray) -> np.ndarray:
        return np.asarray(array)

    def shape(self, value: Any) -> list[int | None]:
        return [d if isinstance(d, int) else None for d in value.shape]

    def dtype(self, value: Any) -> np.dtype:
        return np.dtype(str(value.dtype).removeprefix("torch."))

    def op(self, op_type: str, *inputs: Any, outputs: int = 1, **attrs: Any) -> Any:
        torch = self._torch
        x = inputs[0]
        if op_type in _POOLS or op_type in _GLOBAL_POOLS:
            return self._pool(op_type, x, outputs, attrs)
        if op_type == "Transpose":
            return x.permute(attrs["perm"])
        if op_type == "Unsqueeze":
            return x.unsqueeze(int(inputs[1][0]))
        if op_type == "Squeeze":
            return x.squeeze(int(inputs[1][0]))
        if op_type == "Reshape":
            return x.reshape([int(v) for v in inputs[1]])
        if op_type == "Flatten":  # ONNX's is always 2-D: the axes before `axis`, and the rest
            return x.reshape(math.prod(x.shape[: attrs["axis"]]), -1)
        if op_type == "ArgMax":
            return torch.argmax(x, dim=attrs["axis"], keepdim=bool(attrs.get("keepdims", 1)))
        if op_type == "Abs":
            return torch.abs(x)
        if op_type == "Pad":
            # ONNX: all begins, then all ends; torch.nn.functional.pad: (begin, end) from the last axis
            pads = [int(p) for p in inputs[1]]
            rank = len(pads) // 2
            torch_pads = [v for axis in reversed(range(rank)) for v in (pads[axis], pads[rank + axis])]
            return torch.nn.functional.pad(x, torch_pads, mode=attrs.get("mode", "constant"))
        if op_type in ("Mul", "Div", "Pow"):
            other = inputs[1]
            operand = float(other) if np.ndim(other) == 0 else self._tensor(other, x)
            return {"Mul": torch.mul, "Div": torch.div, "Pow": torch.pow}[op_type](x, operand)
        if op_type == "Conv":
            conv = getattr(torch.nn.functional, f"conv{x.dim() - 2}d")
            weight = self._tensor(inputs[1], x)
            return conv(x, weight, None, attrs["strides"], 0, attrs["dilations"], attrs["group"])
        if op_type == "Sub":
            return x - self._tensor(inputs[1], x)
        if op_type == "MatMul":
            return torch.matmul(x, self._tensor(inputs[1], x))
        raise NotImplementedError(f"no FX form for ONNX {op_type}")

    # -- helpers -------------------------------------------------------------------------------

    def _tensor(self, array: np.ndarray, like: Any) -> Any:
        """A constant as an ONNX Constant node: a traced decomposition cannot hold tensors.

        Its values travel as a float32 (or int64) list; the translations only ask for values
        float32 holds exactly (counts, indicator and binomial weights, flat offsets).
        """
        torch = self._torch
        array = np.asarray(array)
        if array.dtype.kind in "iub":
            flat, dtype, key = [int(v) for v in array.ravel()], torch.int64, "value_ints"
        else:
            flat, dtype, key = [float(v) for v in array.ravel()], torch.float32, "value_floats"
        const = torch.onnx.ops.symbolic(
            "Constant", (), {key: flat}, dtype=dtype, shape=[len(flat)], version=self.opset
        )
        return const.reshape(array.shape).to(like.dtype if dtype.is_floating_point else dtype)

    def _pool(self, op_type: str, x: Any, outputs: int, attrs: dict) -> Any:
        torch = self._torch
        shape = list(x.shape)
        if op_type in _GLOBAL_POOLS:
            out_shape = shape[:2] + [1] * (len(shape) - 2)
        else:
            out_shape = _pool_shape(shape, attrs)
        if outputs == 1:
            return torch.onnx.ops.symbolic(
                op_type, (x,), attrs, dtype=x.dtype, shape=out_shape, version=self.opset
            )
        return torch.onnx.ops.symbolic_multi_out(
            op_type,
            (x,),
            attrs,
            dtypes=[x.dtype, torch.int64],
            shapes=[out_shape, out_shape],
            version=self.opset,
        )


#: Withdrawals of table entries: one at a time across threads (another thread that finds an
#: entry gone while it calls it waits here, then withdraws it itself), and per thread the ops
#: whose entry this thread has withdrawn.
_WITHDRAWING = threading.RLock()
_withdrawn = threading.local()


def _decomposition(op: Any, translate: Any, table: dict) -> Any:
    def decompose(*args: Any) -> Any:
        import torch

        if torch.onnx.is_in_onnx_export():
            return translate(FxBuilder(), *args)
        mine = _withdrawn.__dict__.setdefault("ops", set())
        if op in mine:
            # called again from inside the call below, by a tracer holding its own copy of the
            # table: the op stays as it is
            return NotImplemented
        # Not an export: whoever consulted the table (fake tensors with symbolic sizes do) gets
        # the op itself, dispatched as if the table had no entry for it.
        with _WITHDRAWING:
            mine.add(op)
            table.pop(op, None)
            try:
                return op(*args)
            finally:
                table[op] = decompose
                mine.discard(op)

    return decompose


def install(translations: dict[str, Any]) -> bool:
    """Register a decomposition per forward op; False where this PyTorch cannot take them.

    Needs ``torch.onnx.ops`` (PyTorch >= 2.8) and ``torch._decomp.decomposition_table``.
    """
    import torch

    try:
        import torch._decomp
        import torch.onnx.ops
    except ImportError:
        return False
    table = getattr(torch._decomp, "decomposition_table", None)
    if not isinstance(table, dict):
        return False
    for name, translate in translations.items():
        op = getattr(torch.ops.avgpool, name).default
        table[op] = _decomposition(op, translate, table)
    return True


__all__ = ["BUILD_OPSET", "FxBuilder", "install"]
