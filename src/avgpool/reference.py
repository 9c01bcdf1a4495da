"""The float64 NumPy oracle for every op and its gradient: short, vectorised, obviously right.

Every pooling here is described per spatial axis by a *tap table*: for each output position
``o`` and tap ``j``, the input index ``pos[o, j]`` it reads, whether that tap lands on a real
input cell (``real``), whether it counts in an average's divisor (``counted``) and its weight.
An N-d window is the outer product of its axes' tables, so one gather (fancy indexing) and
one scatter (``np.add.at``) serve avg, max, lp, adaptive, global and blur pooling alike, and
each backward is literally the transpose of its forward.

Arrays here are channels-first and flattened to ``(B, *spatial)`` (B = batch x channels),
float64; the NumPy backend (`avgpool._backends`) adapts layouts and dtypes at the edge.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from avgpool._errors import AvgPoolError
from avgpool.window import Axis

__all__ = [
    "Taps",
    "adaptive_taps",
    "blur_filter",
    "blur_taps",
    "max_forward",
    "pool_taps",
    "scatter",
    "weighted_sum",
]


@dataclass(frozen=True)
class Taps:
    """One axis's tap table; every array has shape (out, taps)."""

    size: int
    pos: np.ndarray
    real: np.ndarray
    counted: np.ndarray
    weight: np.ndarray

    @property
    def out(self) -> int:
        return self.pos.shape[0]


#: The most taps (outputs x kernel) the reference tabulates on one axis: its tables are its
#: scratch memory (about 18 bytes a tap). The compiled kernels need no such table for
#: windowed pooling; adaptive pooling's kernels share the reference's tables, so the limit
#: holds for them too.
REFERENCE_TAPS = 2**24


def pool_taps(axis: Axis) -> Taps:
    """Taps of a strided, dilated, padded window (`avgpool.window` defines the semantics)."""
    if axis.out * axis.kernel > REFERENCE_TAPS:
        raise AvgPoolError(
            f"the float64 reference would tabulate {axis.out} outputs x {axis.kernel} taps on one "
            f"axis, more than its limit of {REFERENCE_TAPS}; the compiled kernels (backend "
            "'numba') take this geometry"
        )
    pos = (np.arange(axis.out) * axis.stride - axis.pad_before)[:, None] + (
        np.arange(axis.kernel) * axis.dilation
    )[None, :]
    real = (pos >= 0) & (pos < axis.size)
    padded = (pos >= -axis.pad_before) & (pos < axis.size + axis.pad_after)
    return Taps(axis.size, pos, real, padded, real.astype(np.float64))


def adaptive_taps(size: int, out: int) -> Taps:
    """PyTorch's adaptive windows: ``[floor(o*n/out), ceil((o+1)*n/out))``."""
    longest = -(-size // out) + 1  # no adaptive window spans more cells
    if out * min(longest, size) > REFERENCE_TAPS:
        raise AvgPoolError(
            f"adaptive pooling to {out} outputs from {size} cells needs a table of about "
            f"{out * min(longest, size)} taps on one axis, more than the limit of {REFERENCE_TAPS}"
        )
    o = np.arange(out)
    start = (o * size) // out
    end = -((-(o + 1) * size) // out)
    pos = start[:, None] + np.arange(int((end - start).max()))[None, :]
    real = pos < end[:, None]
    return Taps(size, pos, real, real, real.astype(np.float64))


def blur_filter(filt_size: int) -> np.ndarray:
    """The normalised 1-D binomial filter of antialiased-cnns (row ``filt_size-1`` of Pascal)."""
    row = np.array([1.0])
    for _ in range(filt_size - 1):
        row = np.convolve(row, [1.0, 1.0])
    return row / row.sum()


def blur_taps(size: int, filt_size: int, stride: int, pad_before: int, pad_after: int, mode: str) -> Taps:
    """Taps of a binomial blur over an input padded by reflect, replicate or zeros."""
    padded_size = size + pad_before + pad_after
    out = (padded_size - filt_size) // stride + 1
    pos = (np.arange(out) * stride)[:, None] + np.arange(filt_size)[None, :] - pad_before
    if mode == "reflect":
        pos = np.abs(pos)
        pos = np.where(pos >= size, 2 * (size - 1) - pos, pos)
        real = np.ones_like(pos, dtype=bool)
    elif mode == "replicate":
        pos = np.clip(pos, 0, size - 1)
        real = np.ones_like(pos, dtype=bool)
    else:
        real = (pos >= 0) & (pos < size)
    weight = np.where(real, blur_filter(filt_size)[None, :], 0.0)
    return Taps(size, pos, real, real, weight)


# -- the N-d gather and scatter -------------------------------------------------------------


def _outer(tables: Sequence[np.ndarray]) -> np.ndarray:
    """Product of per-axis (out, taps) tables, shaped (out1, taps1, out2, taps2, ...)."""
    nd = len(tables)
    result = np.ones((1,) * (2 * nd), dtype=np.result_type(*tables))
    for a, table in enumerate(tables):
        shape = [1] * (2 * nd)
        shape[2 * a : 2 * a + 2] = table.shape
        result = result * table.reshape(shape)
    return result


def _index_sum(taps: Sequence[Taps], strides: np.ndarray) -> np.ndarray:
    nd = len(taps)
    total = np.zeros((1,) * (2 * nd), dtype=np.int64)
    for a, (t, s) in enumerate(zip(taps, strides)):
        shape = [1] * (2 * nd)
        shape[2 * a : 2 * a + 2] = t.pos.shape
        total = total + (np.clip(t.pos, 0, t.size - 1) * s).reshape(shape)
    return total


def _to_window_last(a: np.ndarray, nd: int) -> np.ndarray:
    """(..., o1, k1, o2, k2, ...) -> (..., o1, o2, ..., k1*k2*...)."""
    lead = a.ndim - 2 * nd
    order = [*range(lead), *(lead + 2 * i for i in range(nd)), *(lead + 2 * i + 1 for i in range(nd))]
    moved = a.transpose(order)
    return moved.reshape(*moved.shape[: lead + nd], -1)


def _gather(x: np.ndarray, taps: Sequence[Taps]) -> np.ndarray:
    """x (B, *spatial) -> values (B, out1, ..., taps1*taps2*...) in row-major tap order."""
    flat = x.reshape(x.shape[0], int(np.prod(x.shape[1:])))
    index = _to_window_last(_index_sum(taps, _strides(taps)), len(taps))
    return flat[:, index]


def _strides(taps: Sequence[Taps]) -> np.ndarray:
    sizes = [t.size for t in taps]
    return np.array([int(np.prod(sizes[a + 1 :])) for a in range(len(sizes))], dtype=np.int64)


def _table(taps: Sequence[Taps], field: str) -> np.ndarray:
    return _to_window_last(_outer([getattr(t, field) for t in taps]), len(taps))


def weighted_sum(x: np.ndarray, taps: Sequence[Taps]) -> np.ndarray:
    """sum_j weight_j * x[pos_j] over each window (pads and zero weights contribute 0)."""
    values = _gather(x, taps)
    weight = _table(taps, "weight")
    # inf + -inf in one window is NaN, and a sum past float64's range inf, as in every framework
    with np.errstate(invalid="ignore", over="ignore"):
        return np.where(weight != 0, values * weight, 0.0).sum(axis=-1)


def divisor(taps: Sequence[Taps], count_include_pad: bool) -> np.ndarray:
    """Cells counted by each window's average: a product of per-axis counts (separable)."""
    counts = [(t.counted if count_include_pad else t.real).sum(axis=1) for t in taps]
    return np.prod(np.meshgrid(*counts, indexing="ij"), axis=0).astype(np.float64)


def max_forward(x: np.ndarray, taps: Sequence[Taps]) -> tuple[np.ndarray, np.ndarray]:
    """Window max over real taps and its flat spatial index, with PyTorch's tie rules.

    The first maximum in row-major window order wins; a NaN beats everything and the last NaN
    wins; a window of -inf points at its first real cell. A window with no real cell gives
    the lowest value of x's dtype (-inf for floats) and index -1. Integers stay integers.
    """
    values = _gather(x, taps)
    real = np.broadcast_to(_table(taps, "real"), values.shape)
    index = np.broadcast_to(_to_window_last(_index_sum(taps, _strides(taps)), len(taps)), values.shape)
    lowest = -np.inf if x.dtype.kind == "f" else np.iinfo(x.dtype).min
    masked = np.where(real, values, lowest)
    pick = np.argmax(masked, axis=-1)  # the first maximum; NaN counts as the maximum here
    if x.dtype.kind == "f":
        isnan = np.isnan(masked)
        last_nan = masked.shape[-1] - 1 - np.argmax(isnan[..., ::-1], axis=-1)
        pick = np.where(isnan.any(axis=-1), last_nan, pick)
    chosen_real = np.take_along_axis(real, pick[..., None], -1)[..., 0]
    pick = np.where(chosen_real, pick, np.argmax(real, axis=-1))  # all lowest: first real cell
    value = np.take_along_axis(masked, pick[..., None], -1)[..., 0]
    flat = np.take_along_axis(index, pick[..., None], -1)[..., 0]
    return value, np.where(real.any(axis=-1), flat, -1).astype(np.int64)


def scatter(coef: np.ndarray, taps: Sequence[Taps]) -> np.ndarray:
    """The transpose of `weighted_sum`: each tap's input cell receives coef * weight."""
    spatial = tuple(t.size for t in taps)
    weight = _table(taps, "weight")
    index = _to_window_last(_index_sum(taps, _strides(taps)), len(taps))
    with np.errstate(invalid="ignore"):
        contrib = np.where(weight != 0, coef[..., None] * weight, 0.0)
    b = coef.shape[0]
    grad = np.zeros((b, int(np.prod(spatial))))
    np.add.at(grad, (np.arange(b)[:, None], index.reshape(1, -1)), contrib.reshape(b, index.size))
    return grad.reshape(b, *spatial)


def scatter_index(grad_out: np.ndarray, index: np.ndarray, spatial: Sequence[int]) -> np.ndarray:
    """Route each output's gradient to the input cell at its flat spatial index (max pools)."""
    b = grad_out.shape[0]
    grad = np.zeros((b, int(np.prod(spatial))))
    keep = index >= 0
    rows = np.broadcast_to(np.arange(b).reshape(-1, *[1] * (index.ndim - 1)), index.shape)
    np.add.at(grad, (rows[keep], index[keep]), grad_out[keep])
    return grad.reshape(b, *spatial)


# -- the ops, on (B, *spatial) float64 arrays and resolved geometry --------------------------


def _safe_divide(num: np.ndarray, den: np.ndarray, empty: float = 0.0) -> np.ndarray:
    """num / den, and ``empty`` where den == 0 (a window with no counted cell)."""
    return np.divide(num, den, out=np.full(np.broadcast(num, den).shape, empty), where=den != 0)


def _avg_divisor(taps: Sequence[Taps], count_include_pad: bool, divisor_override: int | None) -> np.ndarray:
    if divisor_override is not None:
        return np.full([t.out for t in taps], float(divisor_override))
    return divisor(taps, count_include_pad)


def avg_pool(
    x: np.ndarray,
    axes: Sequence[Axis],
    count_include_pad: bool = True,
    divisor_override: int | None = None,
    empty: float = 0.0,
) -> np.ndarray:
    """Window sum of real cells divided by the divisor the geometry asks for.

    A window whose divisor is 0 (no real cell, padding not counted) gives ``empty``: 0 in
    PyTorch's and ONNX Runtime's kernels, NaN (0/0) in Flax.
    """
    taps = [pool_taps(a) for a in axes]
    return _safe_divide(weighted_sum(x, taps), _avg_divisor(taps, count_include_pad, divisor_override), empty)


def avg_pool_backward(
    grad_out: np.ndarray,
    axes: Sequence[Axis],
    count_include_pad: bool = True,
    divisor_override: int | None = None,
) -> np.ndarray:
    """Each real input cell receives grad_out / divisor from every window that covers it."""
    taps = [pool_taps(a) for a in axes]
    return scatter(_safe_divide(grad_out, _avg_divisor(taps, count_include_pad, divisor_override)), taps)


def max_pool(
    x: np.ndarray, axes: Sequence[Axis], nan_policy: str = "propagate", floor: float = -np.inf
) -> tuple[np.ndarray, np.ndarray]:
    """Window maximum and the flat spatial index of the cell that holds it.

    ``nan_policy="propagate"``: a NaN wins (PyTorch, ONNX, Flax). ``"omit"``: NaN never wins
    and the result is at least ``floor`` (TensorFlow starts its running max at the dtype's
    lowest finite value, so a window of NaN and -inf gives that value).
    """
    if nan_policy == "omit":
        x = np.where(np.isnan(x), -np.inf, x)
    value, index = max_forward(x, [pool_taps(a) for a in axes])
    return (np.maximum(value, floor) if nan_policy == "omit" and x.dtype.kind == "f" else value), index


def max_pool_backward(grad_out: np.ndarray, index: np.ndarray, spatial: Sequence[int]) -> np.ndarray:
    """The gradient goes to each window's arg-max (summed where windows share it)."""
    return scatter_index(grad_out, index, spatial)


#: The conventions with an Lp pooling of their own (they differ: see `lp_pool`).
LP_CONVENTIONS = ("torch", "onnx")


def check_lp_convention(convention: str) -> None:
    if convention not in LP_CONVENTIONS:
        raise AvgPoolError(f"convention must be 'torch' or 'onnx' for lp pooling, got {convention!r}")


def lp_pool(x: np.ndarray, p: float, axes: Sequence[Axis], convention: str = "torch") -> np.ndarray:
    """Power-mean pooling in PyTorch's or ONNX's definition.

    torch: ``(avg_pool(x**p, count_include_pad=True) * prod(kernel)) ** (1/p)``, exactly as
    ``F.lp_pool*d`` computes it, so a ceil-mode partial window is scaled up to a full one and
    odd p keeps the sign of x. onnx: ``(sum |x|**p over real cells) ** (1/p)``.
    """
    check_lp_convention(convention)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        if convention == "torch":
            scaled = avg_pool(np.power(x, p), axes, True) * np.prod([a.kernel for a in axes])
        else:
            scaled = weighted_sum(np.power(np.abs(x), p), [pool_taps(a) for a in axes])
        return np.power(scaled, 1.0 / p)


def lp_pool_backward(
    grad_out: np.ndarray, x: np.ndarray, p: float, axes: Sequence[Axis], convention: str = "torch"
) -> np.ndarray:
    """Chain rule through the power mean: g * S**(1/p - 1) * (dS/dx) / p, summed over windows.

    Where a window's power sum is 0 the gradient is 0 (as PyTorch's relu of that sum gives).
    """
    check_lp_convention(convention)
    taps = [pool_taps(a) for a in axes]
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        if convention == "torch":
            kernel = float(np.prod([a.kernel for a in axes]))
            scaled = avg_pool(np.power(x, p), axes, True) * kernel
            coef = np.where(scaled != 0, grad_out * np.power(scaled, 1.0 / p - 1.0) * kernel, 0.0)
            inner = np.power(x, p - 1.0)
            return inner * avg_pool_backward(coef, axes, True)
        total = weighted_sum(np.power(np.abs(x), p), taps)
        coef = np.where(total != 0, grad_out * np.power(total, 1.0 / p - 1.0), 0.0)
        inner = np.sign(x) * np.power(np.abs(x), p - 1.0)
        return inner * scatter(coef, taps)


def adaptive_tables(spatial: Sequence[int], out_sizes: Sequence[int]) -> list[Taps]:
    return [adaptive_taps(n, o) for n, o in zip(spatial, out_sizes)]


def adaptive_mean_weights(taps: Sequence[Taps]) -> list[Taps]:
    """Adaptive windows with weight 1/len per axis: their product is 1 / window size."""
    return [dataclasses.replace(t, weight=t.real / t.real.sum(axis=1, keepdims=True)) for t in taps]


def adaptive_avg_pool(x: np.ndarray, out_sizes: Sequence[int]) -> np.ndarray:
    """Mean over PyTorch's adaptive windows, each cell weighted by 1/len per axis.

    The same numbers as PyTorch's sum-then-divide, but for windows whose float64 sum would
    overflow (values near 1.8e308): their mean stays finite here, where PyTorch gives inf.
    """
    return weighted_sum(x, adaptive_mean_weights(adaptive_tables(x.shape[1:], out_sizes)))


def adaptive_avg_pool_backward(grad_out: np.ndarray, spatial: Sequence[int]) -> np.ndarray:
    taps = adaptive_tables(spatial, grad_out.shape[1:])
    return scatter(grad_out / divisor(taps, False), taps)


def adaptive_max_pool(x: np.ndarray, out_sizes: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Maximum over PyTorch's adaptive windows, with the flat index of the cell holding it."""
    return max_forward(x, adaptive_tables(x.shape[1:], out_sizes))


def blur_pads(filt_size: int, pad_off: int) -> tuple[int, int]:
    """antialiased-cnns' padding: (f-1)//2 before, ceil((f-1)/2) after, each plus pad_off."""
    return (filt_size - 1) // 2 + pad_off, filt_size // 2 + pad_off


def blur_tables(
    spatial: Sequence[int], filt_size: int, stride: int, pad_type: str, pad_off: int
) -> list[Taps]:
    before, after = blur_pads(filt_size, pad_off)
    return [blur_taps(n, filt_size, stride, before, after, pad_type) for n in spatial]


def blur_pool(x: np.ndarray, filt_size: int, stride: int, pad_type: str, pad_off: int = 0) -> np.ndarray:
    """Binomial low-pass filter, then subsample: anti-aliased downsampling (Zhang, 2019)."""
    return weighted_sum(x, blur_tables(x.shape[1:], filt_size, stride, pad_type, pad_off))


def blur_pool_backward(
    grad_out: np.ndarray, spatial: Sequence[int], filt_size: int, stride: int, pad_type: str, pad_off: int = 0
) -> np.ndarray:
    """The transposed blur: reflected and replicated taps send their share back to the source."""
    return scatter(grad_out, blur_tables(spatial, filt_size, stride, pad_type, pad_off))
