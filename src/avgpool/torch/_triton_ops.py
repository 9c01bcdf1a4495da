"""CUDA kernels of the custom ops: Triton for 1-D, 2-D and 3-D average and max pooling and
their backward (imported on the first CUDA call).

Two kernel families. A small 1-D or 2-D window (at most ``DIRECT_TAPS`` taps) runs fused in one
kernel that reads each tap (`avgpool.kernels.triton_pool`): input and output cross memory once,
and the taps come from cache. Any other window runs as one pass per spatial axis
(`avgpool.kernels.triton_passes`), last axis first, through float32 intermediates (the
input dtype for max, which is exact): each pass costs the same per output whatever the
window's length, so a 15x15 window costs about what a 3x3 one does.

Everything else on a CUDA tensor (integer max pooling, TensorFlow's NaN-skipping max, and the
ops other than avg/max) runs on the CPU kernels through a copy, and the debug log says so.
"""

import logging

import numpy as np
import torch

from avgpool._cpu_plans import tap_counts
from avgpool.conventions import EMPTY_AVERAGE, MAX_NAN_POLICY
from avgpool.torch._library._args import (
    new_empty,
    spatial,
    through_cpu,
    torch_layout,
    window_of,
    with_spatial,
)
from avgpool.window import Axis

log = logging.getLogger("avgpool")
_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


DIRECT_TAPS = 16


def _kernels():
    from avgpool.kernels import triton_pool

    return triton_pool


def _passes():
    from avgpool.kernels import triton_passes

    return triton_passes


def _as_nc(t: torch.Tensor, ndim: int, channels_last: bool) -> torch.Tensor:
    """A (N, C, *spatial) view of a batched or unbatched, channels-first or -last tensor."""
    if channels_last:
        t = t.movedim(-1, -ndim - 1)
    return t.unsqueeze(0) if t.dim() == ndim + 1 else t


def _as_nchw(t: torch.Tensor, ndim: int, channels_last: bool) -> torch.Tensor:
    """(N, C, H, W): 1-D gets H = 1; 3-D merges D and H (a copy where strides don't allow a view)."""
    t = _as_nc(t, ndim, channels_last)
    return t.unsqueeze(-2) if ndim == 1 else t.flatten(2, 3) if ndim == 3 else t


def _axes(window, shape) -> tuple:
    axes = window.resolve(spatial(shape, window.ndim, window.channels_last))
    return (Axis(1, 1, 1, 1, 0, 0, 1), *axes) if window.ndim == 1 else axes


def _geometry(axes) -> tuple:
    h, w = axes
    return (h.kernel, w.kernel, h.stride, w.stride, h.dilation, w.dilation, h.pad_before, w.pad_before)


def _inverse_counts(axes, window, device) -> tuple:
    """Per-axis 1/count (the divisor is their product); an empty window: 0, NaN for Flax."""
    counts = tap_counts(axes, window.count_include_pad)[-len(axes) :]
    empty = EMPTY_AVERAGE.get(window.convention, 0.0)
    inv = []
    for i, n in enumerate(counts):
        if window.divisor_override is not None:
            values = np.full(n.shape, 1.0 / window.divisor_override if i == len(counts) - 1 else 1.0)
        else:
            values = np.where(n > 0, 1.0 / np.maximum(n, 1), empty)
        inv.append(torch.tensor(values, dtype=torch.float64, device=device))
    return tuple(inv)


def _channels_inner(t4: torch.Tensor) -> bool:
    return t4.shape[1] > 1 and t4.stride(1) == 1


def _fits(x: torch.Tensor, window) -> bool:
    return x.dtype in _FLOATS


def _direct(window, axes) -> bool:
    """The fused tap-reading kernels: 1-D and 2-D windows of at most DIRECT_TAPS taps."""
    return window.ndim <= 2 and int(np.prod([a.kernel for a in axes])) <= DIRECT_TAPS


# -- the per-axis passes -----------------------------------------------------------------------


def _memory_order(t: torch.Tensor) -> list[int] | None:
    """A permutation under which ``t`` is contiguous (outermost first), or None."""
    order = sorted(range(t.dim()), key=lambda i: -t.stride(i))
    return order if t.permute(order).is_contiguous() else None


def _empty_in_order(shape, order, dtype, device) -> torch.Tensor:
    """An empty tensor of logical ``shape`` laid out in memory ``order``."""
    t = torch.empty([shape[i] for i in order], dtype=dtype, device=device)
    return t.permute([order.index(i) for i in range(len(order))])


def _line_view(t: torch.Tensor, dim: int, order) -> torch.Tensor:
    """``t`` (dense in ``order``) as (outer, length along dim, inner)."""
    dense = t.permute(order)
    at = order.index(dim)
    shape = dense.shape
    return dense.reshape(int(np.prod(shape[:at])), shape[at], int(np.prod(shape[at + 1 :])))


def _spatial_dims(t: torch.Tensor, ndim: int, channels_last: bool) -> list[int]:
    last = t.dim() - 1 if channels_last else t.dim()
    return list(range(last - ndim, last))


def _run_passes(src, dst, dims, axes, *, op, scales=None, index=None, transposed=False) -> None:
    """``dst`` = the separable pooling of ``src`` over ``dims``, one pass per axis, last first.

    Forward: ``op`` "sum" (scaled per axis) or "max" (then ``index`` gets the flat arg-max in
    the input's spatial plane). ``transposed``: the sum's backward (``src`` is the gradient).
    """
    order = _memory_order(src)
    if order is None:
        src = src.contiguous()
        order = list(range(src.dim()))
    work = torch.float64 if src.dtype == torch.float64 else torch.float32
    cur, cur_index, mult = src, None, 1
    steps = list(zip(dims, axes, scales or [None] * len(dims)))[::-1]
    for n, (dim, a, scale) in enumerate(steps):
        shape = list(cur.shape)
        shape[dim] = a.size if transposed else a.out
        if n == len(steps) - 1 and dst.permute(order).is_contiguous():
            nxt, nxt_index = dst, index
        else:
            dtype = dst.dtype if op == "max" else work
            nxt = _empty_in_order(shape, order, dtype, src.device)
            nxt_index = _empty_in_order(shape, order, torch.int64, src.device) if op == "max" else None
        views = _line_view(cur, dim, order), _line_view(nxt, dim, order)
        geometry = {"k": a.kernel, "s": a.stride, "p": a.pad_before, "d": a.dilation, "scale": scale}
        if transposed:
            _passes().window_pass_transposed(*views, **geometry)
        else:
            _passes().window_pass(
                *views,
                op=op,
                index_in=None if cur_index is None else _line_view(cur_index, dim, order),
                index_out=None if nxt_index is None else _line_view(nxt_index, dim, order),
                pos_mult=mult,
                **geometry,
            )
        mult *= a.size
        cur, cur_index = nxt, nxt_index
    if cur is not dst:
        dst.copy_(cur)
        if index is not None:
            index.copy_(cur_index)


_OPS: dict = {}


def _fallback(name: str, *tensors: torch.Tensor, args: tuple):
    return through_cpu(name, _OPS[name], *tensors, args=args)


def avg_pool(x, *geometry):
    """``avgpool::avg_pool`` on a CUDA tensor (any tensor under ``TRITON_INTERPRET=1``)."""
    w = window_of(*geometry)
    if not _fits(x, w):
        return _fallback("avg_pool", x, args=geometry)
    axes = _axes(w, x.shape)
    shape = with_spatial(x.shape, w.ndim, w.channels_last, [a.out for a in axes[-w.ndim :]])
    y = new_empty(x, shape, w.ndim, w.channels_last)
    inv = _inverse_counts(axes, w, x.device)
    if not _direct(w, axes):
        dims = _spatial_dims(x, w.ndim, w.channels_last)
        _run_passes(x, y, dims, axes[-w.ndim :], op="sum", scales=list(inv[-w.ndim :]))
    else:
        x4, y4 = _as_nchw(x, w.ndim, w.channels_last), _as_nchw(y, w.ndim, w.channels_last)
        _kernels().avg_forward(x4, y4, *inv, _geometry(axes), _channels_inner(x4))
    return torch_layout(y, x, w, "avg")


def avg_pool_backward(grad, input_shape, *geometry):
    """``avgpool::avg_pool_backward`` on a CUDA tensor."""
    w = window_of(*geometry)
    if not _fits(grad, w):
        return _fallback("avg_pool_backward", grad, args=(input_shape, *geometry))
    axes = _axes(w, input_shape)
    dx = new_empty(grad, list(input_shape), w.ndim, w.channels_last)
    inv = _inverse_counts(axes, w, grad.device)
    if not _direct(w, axes):
        dims = _spatial_dims(grad, w.ndim, w.channels_last)
        _run_passes(grad, dx, dims, axes[-w.ndim :], op="sum", scales=list(inv[-w.ndim :]), transposed=True)
        return dx
    g4, d4 = _as_nchw(grad, w.ndim, w.channels_last), _as_nchw(dx, w.ndim, w.channels_last)
    _kernels().avg_backward(g4, d4, *inv, _geometry(axes), _channels_inner(d4))
    return dx


def max_pool(x, kernel, stride, padding, mode, dilation, ceil, cl, convention, nan_policy):
    """``avgpool::max_pool`` on a CUDA tensor."""
    w = window_of(kernel, stride, padding, mode, dilation, ceil, False, None, cl, convention)
    policy = nan_policy or MAX_NAN_POLICY.get(convention, "propagate")
    if not _fits(x, w) or policy != "propagate":
        args = (kernel, stride, padding, mode, dilation, ceil, cl, convention, nan_policy)
        return _fallback("max_pool", x, args=args)
    axes = _axes(w, x.shape)
    shape = with_spatial(x.shape, w.ndim, cl, [a.out for a in axes[-w.ndim :]])
    y = new_empty(x, shape, w.ndim, cl)
    index = new_empty(x, shape, w.ndim, cl, torch.int64)
    if not _direct(w, axes):
        dims = _spatial_dims(x, w.ndim, cl)
        _run_passes(x, y, dims, axes[-w.ndim :], op="max", index=index)
    else:
        x4, y4, i4 = (_as_nchw(t, w.ndim, cl) for t in (x, y, index))
        _kernels().max_forward(x4, y4, i4, _geometry(axes), _channels_inner(x4))
    return torch_layout(y, x, w, "max"), torch_layout(index, x, w, "max")


def max_pool_backward(grad, indices, input_shape, ndim, channels_last):
    """``avgpool::max_pool_backward`` on a CUDA tensor: an atomic scatter to the arg-max."""
    if grad.dtype not in _FLOATS:
        return _fallback("max_pool_backward", grad, indices, args=(input_shape, ndim, channels_last))
    dx = new_empty(grad, list(input_shape), ndim, channels_last)
    g4 = _as_nchw(grad, ndim, channels_last)
    i4 = _as_nchw(indices, ndim, channels_last)
    if i4.stride() != g4.stride():
        i4 = torch.empty_like(g4, dtype=torch.int64).copy_(i4)
    d = _as_nc(dx, ndim, channels_last)
    wide = torch.float64 if grad.dtype == torch.float64 else torch.float32
    acc = torch.zeros(d.shape[0], d.shape[1], int(np.prod(d.shape[2:])), dtype=wide, device=grad.device)
    _kernels().max_backward(g4, i4, acc)
    d.copy_(acc.reshape(d.shape))
    return dx


def register(ops: dict) -> None:
    """Register the four kernels above for CUDA; ``ops`` maps names to the custom ops."""
    _OPS.update(ops)
    for name, kernel in (
        ("avg_pool", avg_pool),
        ("avg_pool_backward", avg_pool_backward),
        ("max_pool", max_pool),
        ("max_pool_backward", max_pool_backward),
    ):
        ops[name].register_kernel("cuda")(kernel)
