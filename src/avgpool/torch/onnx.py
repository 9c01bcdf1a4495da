"""ONNX export of avgpool's ops: standard pooling nodes whose attributes reproduce the window.

Importing `avgpool.torch` (which `avgpool.nn` does) teaches PyTorch's own exporters these
translations, so a model with avgpool's modules exports with the plain call, either exporter:

* ``torch.onnx.export(model, args)`` (the dynamo exporter, PyTorch's default), and
  ``torch.onnx.export(torch.export.export(model, args))``: a decomposition per op in PyTorch's
  decomposition table, active only while an ONNX export runs (`avgpool.torch._onnx_fx`);
* ``torch.onnx.export(model, args, f, dynamo=False)`` (TorchScript): `register_symbolics`.

Before PyTorch 2.8 (no ``torch.onnx.ops``), the dynamo exporter needs
``custom_translation_table=translation_table()``. What each op becomes (shapes must be static;
padding is resolved from them, so TensorFlow's asymmetric 'SAME' becomes explicit ``pads``):

=====================  ======================================================================
avg_pool               AveragePool (pads, ceil_mode, count_include_pad, dilations);
                       GlobalAveragePool for a global window. Exact decompositions where
                       AveragePool cannot say it: ``divisor_override`` (Pad, AveragePool, Mul,
                       Div: a sum pool scaled); Flax's NaN for a window with no counted cell,
                       and dilation below opset 19 (Pad, AveragePool or a depthwise Conv of
                       ones, Div by each window's count)
max_pool               MaxPool (+ its Indices turned into PyTorch's per-plane indices);
                       GlobalMaxPool (+ ArgMax)
lp_pool                LpPool for ONNX's Lp and for PyTorch's with an even integer p and no
                       partial window; otherwise PyTorch's own formula (Pow, AveragePool, Mul,
                       Pow), as ``F.lp_pool*d`` exports
adaptive_avg_pool      GlobalAveragePool / AveragePool when every size divides; otherwise one
                       MatMul per axis with the exact window weights
adaptive_max_pool      GlobalMaxPool / MaxPool when every size divides (otherwise refused)
blur_pool              one MatMul per axis with the binomial weights, padding folded in
=====================  ======================================================================

Not exportable exactly: TensorFlow's NaN-skipping max (ONNX Runtime has no such mode; the
export propagates NaN like PyTorch).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from avgpool import reference as ref
from avgpool._errors import AvgPoolError
from avgpool.conventions import EMPTY_AVERAGE
from avgpool.torch._library import window_of

__all__ = ["install", "register_symbolics", "translation_table"]

#: ONNX opset that first has each attribute the translations may emit.
_DILATED_AVERAGE_OPSET = 19


class _Builder:
    """What a translation needs from an exporter: add a node, add a constant, read a shape."""

    opset: int

    def op(self, op_type: str, *inputs: Any, outputs: int = 1, **attrs: Any) -> Any:
        raise NotImplementedError

    def const(self, array: np.ndarray) -> Any:
        raise NotImplementedError

    def shape(self, value: Any) -> list[int | None]:
        raise NotImplementedError

    def dtype(self, value: Any) -> np.dtype:
        raise NotImplementedError


def _static_shape(b: _Builder, x: Any, what: str) -> list[int]:
    shape = b.shape(x)
    if shape is None or any(not isinstance(s, int) for s in shape[-1:] + shape[1:]):
        raise AvgPoolError(
            f"ONNX export of {what} needs static channel and spatial sizes (padding, counts and "
            f"indices are resolved from them), got shape {shape}"
        )
    return shape


# -- layout: channels-last and unbatched tensors pool as (N, C, *spatial) --------------------------


def _to_nc(b: _Builder, x: Any, ndim: int, channels_last: bool) -> tuple[Any, Callable[[Any], Any]]:
    """x as (N, C, *spatial), and the function that puts a result back in x's layout."""
    rank = len(b.shape(x))
    batched = rank == ndim + 2
    steps: list[Callable[[Any], Any]] = []
    if not batched:
        x = b.op("Unsqueeze", x, b.const(np.array([0], np.int64)))
        steps.append(lambda y: b.op("Squeeze", y, b.const(np.array([0], np.int64))))
    if channels_last:
        x = b.op("Transpose", x, perm=[0, ndim + 1, *range(1, ndim + 1)])
        steps.append(lambda y: b.op("Transpose", y, perm=[0, *range(2, ndim + 2), 1]))

    def back(y: Any) -> Any:
        for step in reversed(steps):
            y = step(y)
        return y

    return x, back


def _scalar(b: _Builder, value: float, dtype: np.dtype) -> Any:
    return b.const(np.array(value, dtype=dtype))


def _pads(axes) -> list[int]:
    return [a.pad_before for a in axes] + [a.pad_after for a in axes]


def _window_attrs(b: _Builder, axes, dilation: Sequence[int], what: str) -> dict:
    attrs: dict[str, Any] = {
        "kernel_shape": [a.kernel for a in axes],
        "strides": [a.stride for a in axes],
        "pads": _pads(axes),
    }
    if any(d != 1 for d in dilation):
        if what == "AveragePool" and b.opset < _DILATED_AVERAGE_OPSET:
            raise AvgPoolError(
                f"a dilated average exports to ONNX opset >= {_DILATED_AVERAGE_OPSET}, got opset {b.opset}"
            )
        attrs["dilations"] = list(dilation)
    return attrs


def _sum_pool(b: _Builder, x: Any, axes, dilation: Sequence[int], dtype: np.dtype) -> Any:
    """The window sums: zeros padded to exactly the extent the windows read, then K * average.

    Every window then lies wholly inside the padded tensor, so AveragePool divides each by the
    full kernel, whatever its count_include_pad and ceil rules. Before opset 19 AveragePool has
    no dilations; a dilated sum is then a depthwise Conv with a kernel of ones.
    """
    after = [(a.out - 1) * a.stride + a.span - a.size - a.pad_before for a in axes]
    pads = [0, 0] + [a.pad_before for a in axes] + [0, 0] + after
    if any(pads):
        x = b.op("Pad", x, b.const(np.array(pads, np.int64)), mode="constant")
    kernel = [a.kernel for a in axes]
    attrs = {"kernel_shape": kernel, "strides": [a.stride for a in axes]}
    if any(d != 1 for d in dilation):
        attrs["dilations"] = list(dilation)
        if b.opset < _DILATED_AVERAGE_OPSET:
            channels = b.shape(x)[1]
            ones = np.ones([channels, 1, *kernel], dtype=dtype)
            return b.op("Conv", x, b.const(ones), group=channels, **attrs)
    mean = b.op("AveragePool", x, **attrs)
    return b.op("Mul", mean, _scalar(b, float(math.prod(kernel)), dtype))


# -- the ops -----------------------------------------------------------------------------------


def avg_pool(b: _Builder, x, kernel, stride, padding, mode, dilation, ceil, cip, override, cl, convention):
    w = window_of(kernel, stride, padding, mode, dilation, ceil, cip, override, cl, convention)
    shape, dtype = _static_shape(b, x, "avg_pool"), b.dtype(x)
    x, back = _to_nc(b, x, w.ndim, cl)
    if w.kernel_size is None:
        return back(b.op("GlobalAveragePool", x))
    axes = w.resolve(_spatial(shape, w.ndim, cl))
    if override is not None:
        total = _sum_pool(b, x, axes, w.dilation, dtype)
        return back(b.op("Div", total, _scalar(b, float(override), dtype)))
    nan_if_empty = math.isnan(EMPTY_AVERAGE.get(convention, 0.0))
    dilation_unsupported = any(d != 1 for d in w.dilation) and b.opset < _DILATED_AVERAGE_OPSET
    counts = None  # each window's count, a table the size of the output: only when needed
    if nan_if_empty or dilation_unsupported:
        counts = ref.divisor([ref.pool_taps(a) for a in axes], cip)
    empty_is_nan = nan_if_empty and not counts.all()
    if empty_is_nan or dilation_unsupported:
        # the sums divided by each window's count, a constant of the geometry; an empty window
        # divides 0 by 0 (Flax's NaN) or, where the convention writes 0 there, by infinity
        divisor = counts if empty_is_nan else np.where(counts == 0, np.inf, counts)
        total = _sum_pool(b, x, axes, w.dilation, dtype)
        return back(b.op("Div", total, b.const(divisor.astype(dtype)[None, None])))
    attrs = _window_attrs(b, axes, w.dilation, "AveragePool")
    attrs.update(ceil_mode=int(w.ceil_mode and not isinstance(w.padding, str)), count_include_pad=int(cip))
    return back(b.op("AveragePool", x, **attrs))


def _spatial(shape: Sequence[int], ndim: int, channels_last: bool) -> list[int]:
    return list(shape[-ndim - 1 : -1] if channels_last else shape[len(shape) - ndim :])


def _plane_indices(b: _Builder, flat_index: Any, nc_shape: Sequence[int]) -> Any:
    """ONNX's indices count over the whole (N, C, *spatial) tensor; PyTorch's per plane."""
    n, c, *spatial = nc_shape
    plane = math.prod(spatial)
    if n is None:
        raise AvgPoolError("ONNX export of max pooling indices needs a static batch size")
    offsets = (np.arange(n * c, dtype=np.int64) * plane).reshape(n, c, *([1] * len(spatial)))
    return b.op("Sub", flat_index, b.const(offsets))


def _nc_shape(shape: Sequence[int], ndim: int, channels_last: bool) -> list:
    shape = list(shape)
    if len(shape) == ndim + 1:
        shape = [1, *shape]
    return [shape[0], shape[-1], *shape[1:-1]] if channels_last else shape


def max_pool(b: _Builder, x, kernel, stride, padding, mode, dilation, ceil, cl, convention, nan_policy):
    w = window_of(kernel, stride, padding, mode, dilation, ceil, False, None, cl, convention)
    shape = _static_shape(b, x, "max_pool")
    nc_shape = _nc_shape(shape, w.ndim, cl)
    x, back = _to_nc(b, x, w.ndim, cl)
    if w.kernel_size is None:
        y = b.op("GlobalMaxPool", x)
        if nc_shape[0] is None:
            raise AvgPoolError("ONNX export of global max pooling indices needs a static batch size")
        index = b.op("ArgMax", b.op("Flatten", x, axis=2), axis=1, keepdims=1)
        index = b.op("Reshape", index, b.const(np.array(nc_shape[:2] + [1] * w.ndim, np.int64)))
        return back(y), back(index)
    axes = w.resolve(nc_shape[2:])
    attrs = _window_attrs(b, axes, w.dilation, "MaxPool")
    attrs["ceil_mode"] = int(w.ceil_mode and not isinstance(w.padding, str))
    y, flat_index = b.op("MaxPool", x, outputs=2, **attrs)
    return back(y), back(_plane_indices(b, flat_index, nc_shape))


def lp_pool(b: _Builder, x, norm_type, kernel, stride, padding, mode, dilation, ceil, cl, convention):
    w = window_of(kernel, stride, padding, mode, dilation, ceil, True, None, cl, "torch")
    shape, dtype = _static_shape(b, x, "lp_pool"), b.dtype(x)
    x, back = _to_nc(b, x, w.ndim, cl)
    axes = w.resolve(_spatial(shape, w.ndim, cl))
    p = float(norm_type)
    integer_p = p.is_integer()
    partial = any((a.out - 1) * a.stride - a.pad_before + a.span > a.size + a.pad_after for a in axes)
    if integer_p and (convention == "onnx" or (int(p) % 2 == 0 and not partial)):
        attrs = _window_attrs(b, axes, w.dilation, "LpPool")
        attrs.update(p=int(p), ceil_mode=int(w.ceil_mode and not isinstance(w.padding, str)))
        if not attrs["ceil_mode"]:
            del attrs["ceil_mode"]
        return back(b.op("LpPool", x, **attrs))
    exponent = _scalar(b, p, dtype)
    if convention == "onnx":
        total = _sum_pool(b, b.op("Pow", b.op("Abs", x), exponent), axes, w.dilation, dtype)
    else:  # F.lp_pool*d: avg(x**p) counting padding, scaled by the full kernel
        attrs = _window_attrs(b, axes, w.dilation, "AveragePool")
        attrs.update(ceil_mode=int(w.ceil_mode), count_include_pad=1)
        mean = b.op("AveragePool", b.op("Pow", x, exponent), **attrs)
        total = b.op("Mul", mean, _scalar(b, float(math.prod(a.kernel for a in axes)), dtype))
    return back(b.op("Pow", total, _scalar(b, 1.0 / p, dtype)))


def _tap_matrix(taps: ref.Taps) -> np.ndarray:
    """(size, out) weights: column o holds output o's weight on each input cell."""
    m = np.zeros((taps.size, taps.out))
    for o in range(taps.out):
        for pos, weight in zip(taps.pos[o], taps.weight[o]):
            if weight != 0:
                m[pos, o] += weight
    return m


def _matmul_axes(b: _Builder, x: Any, matrices: Sequence[np.ndarray], dtype: np.dtype) -> Any:
    """Apply one (size, out) matrix per spatial axis of an (N, C, *spatial) tensor."""
    ndim = len(matrices)
    rank = ndim + 2
    for i, m in enumerate(matrices):
        axis = 2 + i
        if axis != rank - 1:
            perm = list(range(rank))
            perm[axis], perm[-1] = perm[-1], perm[axis]
            x = b.op("Transpose", x, perm=perm)
        x = b.op("MatMul", x, b.const(m.astype(dtype)))
        if axis != rank - 1:
            x = b.op("Transpose", x, perm=perm)
    return x


def adaptive_avg_pool(b: _Builder, x, output_size, cl):
    ndim = len(output_size)
    shape, dtype = _static_shape(b, x, "adaptive_avg_pool"), b.dtype(x)
    spatial = _spatial(shape, ndim, cl)
    out = [n if o < 0 else o for o, n in zip(output_size, spatial)]
    x, back = _to_nc(b, x, ndim, cl)
    if all(o == 1 for o in out):
        return back(b.op("GlobalAveragePool", x))
    if all(n % o == 0 for n, o in zip(spatial, out)):
        kernel = [n // o for n, o in zip(spatial, out)]
        return back(b.op("AveragePool", x, kernel_shape=kernel, strides=kernel))
    # each window's sum (0/1 weights, exact in any dtype), divided by the window's size
    sums = [_tap_matrix(t) for t in ref.adaptive_tables(spatial, out)]
    sizes = np.prod(np.meshgrid(*[m.sum(axis=0) for m in sums], indexing="ij"), axis=0)
    total = _matmul_axes(b, x, sums, dtype)
    return back(b.op("Div", total, b.const(sizes.astype(dtype)[None, None])))


def adaptive_max_pool(b: _Builder, x, output_size, cl):
    ndim = len(output_size)
    shape = _static_shape(b, x, "adaptive_max_pool")
    spatial = _spatial(shape, ndim, cl)
    out = [n if o < 0 else o for o, n in zip(output_size, spatial)]
    if not all(n % o == 0 for n, o in zip(spatial, out)):
        raise AvgPoolError(
            f"adaptive max pooling exports to ONNX only when every input size is a multiple of the "
            f"output size (ONNX has no adaptive max); got input {tuple(spatial)}, output {tuple(out)}"
        )
    kernel = [n // o for n, o in zip(spatial, out)]
    return max_pool(b, x, kernel, kernel, [0, 0] * ndim, "", [1] * ndim, False, cl, "torch", "")


def blur_pool(b: _Builder, x, filt_size, stride, pad_type, pad_off, ndim, cl):
    shape, dtype = _static_shape(b, x, "blur_pool"), b.dtype(x)
    spatial = _spatial(shape, ndim, cl)
    x, back = _to_nc(b, x, ndim, cl)
    taps = ref.blur_tables(spatial, filt_size, stride, pad_type, pad_off)
    return back(_matmul_axes(b, x, [_tap_matrix(t) for t in taps], dtype))


_TRANSLATIONS = {
    "avg_pool": avg_pool,
    "max_pool": max_pool,
    "lp_pool": lp_pool,
    "adaptive_avg_pool": adaptive_avg_pool,
    "adaptive_max_pool": adaptive_max_pool,
    "blur_pool": blur_pool,
}


# -- the dynamo exporter -----------------------------------------------------------------------


class _ScriptBuilder(_Builder):
    """onnxscript, as the dynamo exporter's custom translations run it."""

    def __init__(self, opset: int) -> None:
        import onnxscript

        self.opset = opset
        self._op = onnxscript.values.Opset("", opset)
        self._ir = onnxscript.ir

    def op(self, op_type: str, *inputs: Any, outputs: int = 1, **attrs: Any) -> Any:
        result = getattr(self._op, op_type)(*inputs, **attrs)
        if outputs == 1 and isinstance(result, tuple):
            return result[0]
        return result

    def const(self, array: np.ndarray) -> Any:
        return self._op.Constant(value=self._ir.tensor(np.asarray(array)))

    def shape(self, value: Any) -> list[int | None]:
        dims = value.shape
        return None if dims is None else [d if isinstance(d, int) else None for d in dims]

    def dtype(self, value: Any) -> np.dtype:
        return np.dtype(value.dtype.numpy())


def translation_table(opset: int = 20) -> dict:
    """``custom_translation_table`` for ``torch.onnx.export(..., dynamo=True)``.

    >>> import torch
    >>> table = translation_table()
    >>> torch.ops.avgpool.avg_pool.default in table
    True
    """
    import torch

    builder = _ScriptBuilder(opset)
    table = {}
    for name, fn in _TRANSLATIONS.items():

        def translate(*args: Any, _fn=fn) -> Any:
            return _fn(builder, *args)

        table[getattr(torch.ops.avgpool, name).default] = translate
    return table


# -- the TorchScript exporter ------------------------------------------------------------------


class _GraphBuilder(_Builder):
    """torch.onnx's TorchScript graph context."""

    def __init__(self, g: Any) -> None:
        from torch.onnx._internal.torchscript_exporter import symbolic_helper

        self.g = g
        self.opset = symbolic_helper.GLOBALS.export_onnx_opset_version

    def op(self, op_type: str, *inputs: Any, outputs: int = 1, **attrs: Any) -> Any:
        named = {}
        for key, value in attrs.items():
            if isinstance(value, str):
                named[f"{key}_s"] = value
            elif isinstance(value, float) or (
                isinstance(value, list) and any(isinstance(v, float) for v in value)
            ):
                named[f"{key}_f"] = value
            else:
                named[f"{key}_i"] = value
        return self.g.op(op_type, *inputs, outputs=outputs, **named)

    def const(self, array: np.ndarray) -> Any:
        import torch

        return self.g.op("Constant", value_t=torch.from_numpy(np.array(array)))

    def shape(self, value: Any) -> list[int | None]:
        sizes = value.type().varyingSizes() if hasattr(value.type(), "varyingSizes") else None
        return None if sizes is None else list(sizes)

    def dtype(self, value: Any) -> np.dtype:
        import torch
        from torch.onnx._internal.torchscript_exporter._type_utils import JitScalarType

        return torch.empty((), dtype=JitScalarType.from_value(value).dtype()).numpy().dtype


def _constant(value: Any) -> Any:
    """A TorchScript constant argument as a Python value."""
    import torch

    node = value.node()
    if node.kind() in ("prim::Constant", "onnx::Constant"):
        if "value" not in node.attributeNames():
            return None
        kind = node.kindOf("value")
        if kind in ("s", "i", "f"):
            return getattr(node, kind)("value")
        ivalue = node.t("value") if kind == "t" else value.toIValue()
        if isinstance(ivalue, torch.Tensor):
            return ivalue.item() if ivalue.dim() == 0 else ivalue.tolist()
        return ivalue
    if node.kind() == "prim::ListConstruct":
        return [_constant(v) for v in node.inputs()]
    raise AvgPoolError(f"ONNX export needs constant pooling arguments, got {node.kind()}")


def register_symbolics(opset: int = 9) -> None:
    """Teach the TorchScript exporter (``torch.onnx.export(..., dynamo=False)``) the ops.

    `install` calls it when `avgpool.torch` is imported.
    """
    import torch

    for name, fn in _TRANSLATIONS.items():

        def symbolic(g, x, *args, _fn=fn):
            return _fn(_GraphBuilder(g), x, *(_constant(a) for a in args))

        torch.onnx.register_custom_op_symbolic(f"avgpool::{name}", symbolic, opset)


def install() -> bool:
    """Make the plain ``torch.onnx.export`` translate avgpool's ops, with either exporter.

    Runs when `avgpool.torch` is imported. Returns False where this PyTorch has no
    ``torch.onnx.ops`` (before 2.8): the dynamo exporter then needs
    ``custom_translation_table=translation_table()``; the TorchScript exporter works anyway.
    A PyTorch without the (deprecated) TorchScript exporter is served by the dynamo one alone.
    """
    from avgpool.torch import _onnx_fx

    try:
        register_symbolics()
    except (AttributeError, ImportError):  # the TorchScript exporter is gone from this PyTorch
        pass
    return _onnx_fx.install(_TRANSLATIONS)
