"""The one place that picks an implementation: the Numba kernels, or the float64 reference.

Every function takes the user's validated array in its own layout (with its `Layout` and
resolved geometry) and returns the result in that layout and dtype, whichever backend runs.
The backend is "numba" unless ``AVGPOOL_BACKEND=reference`` is set or `use_backend` says so;
each call logs the path it took at DEBUG level on the "avgpool" logger, so no fast path is
taken or skipped silently.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence

import numpy as np

from avgpool import _cpu_drivers, _cpu_max_drivers, _cpu_plans, _cpu_taps
from avgpool import reference as ref
from avgpool._arrays import Layout
from avgpool._cpu_calls import Copy, Planned
from avgpool._errors import AvgPoolError
from avgpool._settings import (
    BACKENDS,
    get_backend,
    get_num_threads,
    set_backend,
    set_num_threads,
    use_backend,
)
from avgpool.window import Axis

__all__ = [
    "BACKENDS",
    "get_backend",
    "get_num_threads",
    "set_backend",
    "set_num_threads",
    "use_backend",
]

log = logging.getLogger("avgpool")


def _fast(op: str, array: np.ndarray) -> bool:
    """Whether the kernels run ``op``; an empty array goes to the reference, which has no
    work to do (the kernels size their loops from the channels and would divide by 0)."""
    backend = get_backend()
    if array.size == 0:
        log.debug("%s: float64 reference (empty array)", op)
        return False
    log.debug("%s: %s", op, "numba kernel" if backend == "numba" else "float64 reference")
    return backend == "numba"


def clear_plans() -> None:
    """Forget the CPU drivers' planned calls."""
    _cpu_drivers.clear_plans()
    _cpu_max_drivers.clear_plans()
    _cpu_taps.clear_plans()


def plan_avg_forward(
    layout: Layout, axes: tuple[Axis, ...], cip: bool, override, empty: float, dtype, size: int
):
    """``avg_forward`` planned for arrays of this layout, dtype and size: ``call(x) -> y``."""
    if get_backend() == "numba" and size:
        return _cpu_drivers.plan_avg_forward(layout, axes, cip, override, empty, np.dtype(dtype))
    return lambda x: avg_forward(x, layout, axes, cip, override, empty)  # logs its path


def plan_global_avg(layout: Layout, empty: float, dtype, size: int):
    """``global_avg`` planned for arrays of this layout, dtype and size: ``call(x) -> y``."""
    if get_backend() == "numba" and size:
        return _cpu_drivers.plan_global_avg(layout, np.dtype(dtype))
    return lambda x: global_avg(x, layout, empty)


class ValuesOnly:
    """A planned max pooling without indices as ``call(x) -> (values, None)``. Its ``values``,
    the planned call itself, is what an op that returns the values alone keeps
    (`avgpool._backends._replay`), so a repeated call skips the pair."""

    __slots__ = ("values",)

    def __init__(self, values) -> None:
        self.values = values

    def __call__(self, x: np.ndarray) -> tuple:
        return self.values(x), None


def plan_max_forward(
    layout: Layout,
    axes: tuple[Axis, ...] | None,
    nan_policy: str,
    floor: float,
    dtype,
    size: int,
    with_index: bool,
):
    """``max_forward`` (``global_max`` when ``axes`` is None) planned for arrays of this layout,
    dtype and size: ``call(x) -> (values, indices or None)``."""
    if get_backend() == "numba" and size:
        if axes is None:
            planned = _cpu_max_drivers.plan_global_max(layout, nan_policy, floor, np.dtype(dtype))
        else:
            planned = _cpu_max_drivers.plan_max_forward(
                layout, axes, nan_policy, floor, np.dtype(dtype), with_index
            )
        return planned if planned.index else ValuesOnly(planned)
    if axes is None:
        return lambda x: global_max(x, layout, nan_policy, floor)
    return lambda x: max_forward(x, layout, axes, nan_policy, floor, with_index=with_index)


def into(out: np.ndarray | None, y: np.ndarray) -> np.ndarray:
    """``y`` copied into ``out`` (checked for shape and dtype), or ``y`` itself."""
    if out is None:
        return y
    if not isinstance(out, np.ndarray) or out.shape != y.shape or out.dtype != y.dtype:
        raise AvgPoolError(f"out must be an array of shape {y.shape} and dtype {y.dtype}")
    out[...] = y
    return out


def call_into(planned, x: np.ndarray, out: np.ndarray) -> np.ndarray | None:
    """``planned(x)`` written into ``out`` (an array of the result's shape and dtype,
    C-contiguous, sharing no memory with ``x``, else an AvgPoolError) by the kernel itself,
    where ``planned`` is a kernel call planned by the drivers; None for another call (the
    reference's), which cannot write into ``out``."""
    if not isinstance(planned, (Planned, Copy)) or planned.dtype != x.dtype:
        return None
    return planned(x, _cpu_drivers._checked_out(out, planned.out_shape, x.dtype))


def _grad_layout(layout: Layout, out_spatial: Sequence[int]) -> Layout:
    return Layout(layout.out_shape(out_spatial), layout.ndim, layout.channels_last)


# -- average -----------------------------------------------------------------------------------


def avg_forward(
    x, layout: Layout, axes: Sequence[Axis], cip: bool, override, empty: float, out=None, running=True
):
    if _fast("avg_pool", x):
        return _cpu_drivers.avg_forward(x, layout, axes, cip, override, empty, out, running)
    y = ref.avg_pool(layout.to_work(x), axes, cip, override, empty)
    return into(out, layout.from_work(y, x.dtype))


def plan_avg_backward(layout: Layout, axes: tuple[Axis, ...], cip: bool, override, dtype, size: int):
    """``avg_backward`` planned for gradients of this dtype and size (``layout``: the input's):
    ``call(g) -> gradient``."""
    if get_backend() == "numba" and size:
        return _cpu_drivers.plan_avg_backward(layout, tuple(axes), cip, override, np.dtype(dtype))
    return lambda g: avg_backward(g, layout, axes, cip, override)


def avg_backward(g, layout: Layout, axes: Sequence[Axis], cip: bool, override):
    if _fast("avg_pool_backward", g):
        return _cpu_drivers.avg_backward(g, layout, axes, cip, override)
    work = _grad_layout(layout, [a.out for a in axes]).to_work(g)
    return layout.from_work(ref.avg_pool_backward(work, axes, cip, override), g.dtype)


# -- max ---------------------------------------------------------------------------------------


def max_forward(
    x, layout: Layout, axes: Sequence[Axis], nan_policy: str, floor: float, out=None, with_index=True
):
    """(values, int64 indices); ``with_index=False`` lets a kernel skip the arg-max (indices
    then may be None)."""
    if _fast("max_pool", x):
        return _cpu_max_drivers.max_forward(x, layout, axes, nan_policy, floor, out, with_index)
    y, index = ref.max_pool(layout.to_work(x), axes, nan_policy, floor)
    return into(out, layout.from_work(y, x.dtype)), layout.from_work(index, np.dtype(np.int64))


def max_backward(
    g,
    index,
    layout: Layout,
    out_spatial: Sequence[int],
    sharing: int | None = None,
    axes: tuple[Axis, ...] | None = None,
    check_range: Callable[[], None] | None = None,
):
    """The gradient at each window's arg-max; ``sharing``: the most windows that share a cell
    (None: not known); ``axes``: the windows' geometry, when known; ``check_range``: raises
    if an index lies outside the plane, called before anything is scattered to them."""
    if _fast("max_pool_backward", g):
        return _cpu_max_drivers.scatter_to_index(g, index, layout, out_spatial, sharing, axes, check_range)
    if check_range is not None:
        check_range()
    grad_layout = _grad_layout(layout, out_spatial)
    index_work = grad_layout.to_work(index).astype(np.int64)
    grad = ref.max_pool_backward(grad_layout.to_work(g), index_work, layout.spatial)
    return layout.from_work(grad, g.dtype)


# -- power average (Lp): avg kernels around elementwise powers ----------------------------------


def _lp_sum(x64, layout: Layout, axes: Sequence[Axis], p: float, convention: str):
    """torch: avg(x**p) * prod(kernel) (padding counted); onnx: sum |x|**p. Float64.

    Summed tap by tap, not by running sums: a window of zeros must sum to exactly 0, since
    the 1/p power of a rounding residue below 0 would be NaN.
    """
    if convention == "torch":
        mean = avg_forward(np.power(x64, p), layout, axes, True, None, 0.0, running=False)
        return mean * float(np.prod([a.kernel for a in axes]))
    return avg_forward(np.power(np.abs(x64), p), layout, axes, False, 1, 0.0, running=False)


def lp_forward(x, layout: Layout, axes: Sequence[Axis], p: float, convention: str):
    if not _fast("lp_pool", x):
        return layout.from_work(ref.lp_pool(layout.to_work(x), p, axes, convention), x.dtype)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        total = _lp_sum(x.astype(np.float64), layout, axes, p, convention)
        return np.power(total, 1.0 / p).astype(x.dtype)


def lp_backward(g, x, layout: Layout, axes: Sequence[Axis], p: float, convention: str):
    if not _fast("lp_pool_backward", g):
        work = _grad_layout(layout, [a.out for a in axes]).to_work(g)
        grad = ref.lp_pool_backward(work, layout.to_work(x), p, axes, convention)
        return layout.from_work(grad, g.dtype)
    x64, g64 = x.astype(np.float64), g.astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        total = _lp_sum(x64, layout, axes, p, convention)
        coef = np.where(total != 0, g64 * np.power(total, 1.0 / p - 1.0), 0.0)
        if convention == "torch":
            kernel = float(np.prod([a.kernel for a in axes]))
            spread = avg_backward(coef * kernel, layout, axes, True, None)
            inner = np.power(x64, p - 1.0)
        else:
            spread = avg_backward(coef, layout, axes, False, 1)
            inner = np.sign(x64) * np.power(np.abs(x64), p - 1.0)
        return (inner * spread).astype(g.dtype)


# -- adaptive, global, blur --------------------------------------------------------------------


@functools.lru_cache(maxsize=_cpu_plans.TABLES_CACHED)
def _adaptive_tables(spatial: tuple[int, ...], out_sizes: tuple[int, ...]) -> _cpu_plans.TapTables:
    """The kernels' adaptive tables (mean weights, real taps), kept per geometry."""
    return _cpu_plans.tap_tables(ref.adaptive_mean_weights(ref.adaptive_tables(spatial, out_sizes)))


@functools.lru_cache(maxsize=_cpu_plans.TABLES_CACHED)
def _blur_tables(
    spatial: tuple[int, ...], filt_size: int, stride: int, mode: str, pad_off: int
) -> _cpu_plans.TapTables:
    """The kernels' blur tables, kept per geometry."""
    return _cpu_plans.tap_tables(ref.blur_tables(spatial, filt_size, stride, mode, pad_off))


@functools.lru_cache(maxsize=_cpu_plans.TABLES_CACHED)
def _even_axes(spatial: tuple[int, ...], out_sizes: tuple[int, ...]) -> tuple[Axis, ...] | None:
    """An adaptive pool whose sizes divide evenly is a plain one (kernel = stride = size / out:
    PyTorch's windows [floor(i n / o), ceil((i + 1) n / o)) are then exactly those), which
    the box and max kernels run (an output of 1 is a whole-input window: the global kernels);
    None otherwise."""
    if any(o < 1 or n % o for n, o in zip(spatial, out_sizes)):
        return None
    return tuple(Axis(n, n // o, n // o, 1, 0, 0, o).bounded() for n, o in zip(spatial, out_sizes))


def adaptive_avg_forward(x, layout: Layout, out_sizes: Sequence[int]):
    axes = _even_axes(layout.spatial, tuple(out_sizes))
    if axes is not None:
        return avg_forward(x, layout, axes, True, None, 0.0)
    if not _fast("adaptive_avg_pool", x):
        return layout.from_work(ref.adaptive_avg_pool(layout.to_work(x), out_sizes), x.dtype)
    return _cpu_taps.taps_sum(x, layout, _adaptive_tables(layout.spatial, tuple(out_sizes)))


def plan_adaptive_avg(layout: Layout, out_sizes: tuple[int, ...], dtype, size: int):
    """`adaptive_avg_forward` planned for arrays of this layout, dtype and size: ``call(x) -> y``."""
    axes = _even_axes(layout.spatial, out_sizes)
    if axes is not None:
        return plan_avg_forward(layout, axes, True, None, 0.0, dtype, size)
    if get_backend() == "numba" and size:
        return _cpu_taps.plan_taps_sum(layout, _adaptive_tables(layout.spatial, out_sizes), np.dtype(dtype))
    return lambda x: adaptive_avg_forward(x, layout, out_sizes)


def plan_adaptive_avg_backward(layout: Layout, out_sizes: tuple[int, ...], dtype, size: int):
    """`adaptive_avg_backward` planned for gradients of this dtype and size (``layout``: the
    input's): ``call(g) -> gradient``."""
    axes = _even_axes(layout.spatial, out_sizes)
    if axes is not None:
        return plan_avg_backward(layout, axes, True, None, dtype, size)
    return lambda g: adaptive_avg_backward(g, layout, out_sizes)


def adaptive_avg_backward(g, layout: Layout, out_sizes: Sequence[int]):
    axes = _even_axes(layout.spatial, tuple(out_sizes))
    if axes is not None:
        return avg_backward(g, layout, axes, True, None)
    if not _fast("adaptive_avg_pool_backward", g):
        work = _grad_layout(layout, out_sizes).to_work(g)
        return layout.from_work(ref.adaptive_avg_pool_backward(work, layout.spatial), g.dtype)
    return _cpu_taps.taps_scatter(g, layout, _adaptive_tables(layout.spatial, tuple(out_sizes)))


def adaptive_max_forward(x, layout: Layout, out_sizes: Sequence[int]):
    axes = _even_axes(layout.spatial, tuple(out_sizes))
    if axes is not None:
        return max_forward(x, layout, axes, "propagate", -np.inf)
    if not _fast("adaptive_max_pool", x):
        y, index = ref.adaptive_max_pool(layout.to_work(x), out_sizes)
        return layout.from_work(y, x.dtype), layout.from_work(index, np.dtype(np.int64))
    return _cpu_taps.taps_max(x, layout, _adaptive_tables(layout.spatial, tuple(out_sizes)))


def plan_adaptive_max(layout: Layout, out_sizes: tuple[int, ...], dtype, size: int):
    """`adaptive_max_forward` planned for arrays of this layout, dtype and size:
    ``call(x) -> (values, indices)``."""
    axes = _even_axes(layout.spatial, out_sizes)
    if axes is not None:
        return plan_max_forward(layout, axes, "propagate", -np.inf, dtype, size, True)
    if get_backend() == "numba" and size:
        return _cpu_taps.plan_taps_max(layout, _adaptive_tables(layout.spatial, out_sizes), np.dtype(dtype))
    return lambda x: adaptive_max_forward(x, layout, out_sizes)


def global_avg(x, layout: Layout, empty: float):
    if _fast("global_avg_pool", x):
        return _cpu_drivers.global_avg(x, layout)
    axes = [Axis(n, n, 1, 1, 0, 0, 1) for n in layout.spatial]
    return layout.from_work(ref.avg_pool(layout.to_work(x), axes, True, None, empty), x.dtype)


def global_max(x, layout: Layout, nan_policy: str, floor: float):
    if _fast("global_max_pool", x):
        return _cpu_max_drivers.global_max(x, layout, nan_policy, floor)
    axes = [Axis(n, n, 1, 1, 0, 0, 1) for n in layout.spatial]
    y, index = ref.max_pool(layout.to_work(x), axes, nan_policy, floor)
    return layout.from_work(y, x.dtype), layout.from_work(index, np.dtype(np.int64))


def blur_forward(x, layout: Layout, filt_size: int, stride: int, mode: str, pad_off: int):
    if not _fast("blur_pool", x):
        y = ref.blur_pool(layout.to_work(x), filt_size, stride, mode, pad_off)
        return layout.from_work(y, x.dtype)
    return _cpu_taps.taps_sum(x, layout, _blur_tables(layout.spatial, filt_size, stride, mode, pad_off))


def plan_blur(layout: Layout, filt_size: int, stride: int, mode: str, pad_off: int, dtype, size: int):
    """`blur_forward` planned for arrays of this layout, dtype and size: ``call(x) -> y``."""
    if get_backend() == "numba" and size:
        tables = _blur_tables(layout.spatial, filt_size, stride, mode, pad_off)
        return _cpu_taps.plan_taps_sum(layout, tables, np.dtype(dtype))
    return lambda x: blur_forward(x, layout, filt_size, stride, mode, pad_off)


def blur_backward(g, layout: Layout, filt_size: int, stride: int, mode: str, pad_off: int):
    if not _fast("blur_pool_backward", g):
        taps = ref.blur_tables(layout.spatial, filt_size, stride, mode, pad_off)
        work = _grad_layout(layout, [t.out for t in taps]).to_work(g)
        grad = ref.blur_pool_backward(work, layout.spatial, filt_size, stride, mode, pad_off)
        return layout.from_work(grad, g.dtype)
    return _cpu_taps.taps_scatter(g, layout, _blur_tables(layout.spatial, filt_size, stride, mode, pad_off))
