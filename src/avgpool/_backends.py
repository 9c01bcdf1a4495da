"""Backends: the array libraries the ops run on, each a small adapter found from the array's type.

`avgpool.ops` defines each op once (its arguments, its `Window`, its defaults, its docs) and
hands the validated geometry to the backend of the op's first array argument:

* NumPy (`NumpyBackend`, here): anything that is not another backend's array;
* PyTorch (`avgpool.torch._backend`): a ``torch.Tensor``; its ops are ``torch.library``
  custom ops, so they differentiate, compile and export.

A backend is looked for only among the array libraries already imported (``"torch" in
sys.modules``), so ``import avgpool`` imports no framework, and a NumPy call never does.
The adapters are named in `ADAPTERS` by module path and imported on their first array: the
front ends sit above the ops in the layers, so the ops never import them by name.
A Dask backend is one more line in `ADAPTERS` and one module implementing `Backend`.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import logging
import math
import operator
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from avgpool import _dispatch as compute
from avgpool._arrays import Layout, as_array, check_allocation
from avgpool._errors import AvgPoolError
from avgpool._settings import get_backend
from avgpool.conventions import EMPTY_AVERAGE, MAX_NAN_POLICY
from avgpool.window import Axis, Window, typed_key

log = logging.getLogger("avgpool")

#: What the ops take and return: a NumPy array (or a list), or another backend's array.
Array = Any

#: (array library's module, its array type's name in it, the adapter module): the adapter
#: defines ``BACKEND``, a `Backend`. Searched in order; NumPy takes every other array.
ADAPTERS: tuple[tuple[str, str, str], ...] = (
    ("torch", "Tensor", "avgpool.torch._backend"),
    ("dask.array", "Array", "avgpool.dask._backend"),
)


class Backend:
    """What an array library gives the ops: its arrays checked, and each op computed.

    The ops have validated every argument and built the geometry before calling a method;
    a backend checks the arrays themselves (type, dtype, shape against the geometry) and
    computes. Errors are `AvgPoolError`s; `errors` is the class they reach the caller as.
    """

    name = "abstract"
    #: The class a backend's callers get avgpool's errors as (a subclass of AvgPoolError).
    errors: type[AvgPoolError] = AvgPoolError

    def array(self, x: Any, name: str = "input", allow_int: bool = False) -> Any:
        """``x`` as this backend's array, or a TypeError naming ``name`` and what is allowed."""
        raise NotImplementedError

    def precheck_pooling(self, op: str, ndim: int, x: Any, *args: Any) -> None:
        """The library's own refusals of a ``*1d/2d/3d`` call (``op``: avg, max or lp; then
        kernel_size, stride, padding, dilation, ceil_mode, divisor_override), run before
        avgpool's. None by default: only PyTorch has a word-for-word contract to keep."""

    def precheck_adaptive(self, kind: str, ndim: int, x: Any, output_size: Any) -> None:
        """As `precheck_pooling`, for ``adaptive_{kind}_pool{ndim}d``."""

    # -- the ops, on validated geometry --------------------------------------------------------

    def avg_pool(self, x: Any, window: Window, out: Any) -> Any:
        raise NotImplementedError

    def avg_pool_backward(self, grad: Any, input_shape: tuple[int, ...], window: Window) -> Any:
        raise NotImplementedError

    def max_pool(self, x: Any, window: Window, nan_policy: str | None, out: Any, return_indices: bool) -> Any:
        """The values, or (values, int64 indices) with ``return_indices``; the arg-max is
        computed only when asked for. ``nan_policy`` None: the window's convention decides."""
        raise NotImplementedError

    def max_pool_backward(
        self, grad: Any, x: Any, window: Window, nan_policy: str | None, indices: Any = None
    ) -> Any:
        """``indices``: the forward's arg-max (`max_pool` with ``return_indices=True``), so the
        forward is not run again; None: found from ``x``."""
        raise NotImplementedError

    def lp_pool(self, x: Any, p: float, window: Window, convention: str) -> Any:
        raise NotImplementedError

    def lp_pool_backward(self, grad: Any, x: Any, p: float, window: Window, convention: str) -> Any:
        raise NotImplementedError

    def adaptive_avg_pool(self, x: Any, layout: Layout, out: tuple[int, ...]) -> Any:
        raise NotImplementedError

    def adaptive_avg_pool_backward(self, grad: Any, layout: Layout, out: tuple[int, ...]) -> Any:
        raise NotImplementedError

    def adaptive_max_pool(self, x: Any, layout: Layout, out: tuple[int, ...]) -> tuple[Any, Any]:
        raise NotImplementedError

    def adaptive_max_pool_backward(self, grad: Any, x: Any, layout: Layout, out: tuple[int, ...]) -> Any:
        raise NotImplementedError

    def blur_pool(self, x: Any, layout: Layout, filt_size: int, stride: int, mode: str, pad_off: int) -> Any:
        raise NotImplementedError

    def blur_pool_backward(
        self, grad: Any, layout: Layout, filt_size: int, stride: int, mode: str, pad_off: int
    ) -> Any:
        raise NotImplementedError


# -- NumPy -------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1024)
def _geometry(shape: tuple[int, ...], window: Window, name: str = "input") -> tuple[Layout, tuple[Axis, ...]]:
    """The layout of an array of this shape and the window resolved on it.

    Pure shape arithmetic on hashable, immutable values (the shape and the validated
    `Window`, whose equality covers every field, convention and layout included), so it is
    kept: a model calls each of its pooling layers with the same shapes again and again.
    """
    layout = Layout.of(shape, window.ndim, window.channels_last, name)
    return layout, tuple(a.bounded() for a in window.resolve(layout.spatial))


def _out_arg(out: Any, x: np.ndarray) -> tuple[Any, np.ndarray | None]:
    """(``out`` for the kernels to write into, an array to copy the result into afterwards).

    An ``out`` that shares memory with the input would be overwritten while windows still
    read it, so the result is computed apart and copied; a read-only one is refused.
    """
    if isinstance(out, np.ndarray):
        if not out.flags.writeable:
            raise AvgPoolError("out must be a writeable array, got a read-only one")
        if np.may_share_memory(out, x):
            return None, out
    return out, None


def _check_indices(indices: Any, shape: tuple[int, ...]) -> None:
    """Arg-max indices given to a backward: an integer array of the gradient's shape, or a
    TypeError or AvgPoolError. Their values are checked by `_check_index_range`."""
    if not isinstance(indices, np.ndarray) or indices.dtype.kind not in "iu":
        raise TypeError(f"indices must be an integer NumPy array, got {type(indices).__name__}")
    if indices.shape != shape:
        raise AvgPoolError(f"indices must have grad_output's shape {shape}, got {indices.shape}")


def _check_index_range(indices: np.ndarray, cells: int) -> None:
    """Each index in [-1, cells) (-1: a window with no cell), or an AvgPoolError: run before
    any gradient is scattered to them (never a write out of bounds)."""
    if indices.size and (indices.min() < -1 or indices.max() >= cells):
        raise AvgPoolError(
            f"indices must lie in [-1, {cells}) (flat positions in a spatial plane of {cells} cells), "
            f"got values from {indices.min()} to {indices.max()}"
        )


def _nan_args(nan_policy: str | None, window: Window, dtype: np.dtype) -> tuple[str, float]:
    """The kernels' NaN policy (the convention's by default) and the dtype's lowest value."""
    policy = MAX_NAN_POLICY.get(window.convention, "propagate") if nan_policy is None else nan_policy
    info = np.finfo(dtype) if dtype.kind == "f" else np.iinfo(dtype)
    return policy, float(info.min)


#: Planned calls kept by `NumpyBackend` (op, shape, dtype, window, options, backend) -> call.
PLANS_CACHED = 1024
_plans: dict[tuple, Callable[[np.ndarray], Any]] = {}
_plans_lock = threading.Lock()


def _keep(kept: dict, key: Any, value: Any) -> None:
    with _plans_lock:  # another thread may be adding too: no iteration over a changing dict
        if len(kept) >= PLANS_CACHED:
            kept.pop(next(iter(kept)), None)
        kept[key] = value


def _kept(key: tuple, build: Callable[[], Callable[[np.ndarray], Any]]) -> Callable[[np.ndarray], Any]:
    """The call planned for ``key``, built once: a model calls each of its layers with the same
    shapes again and again, and a repeated call then costs a dict lookup before its kernel.
    The oldest plan makes room when `PLANS_CACHED` are kept."""
    planned = _plans.get(key)
    if planned is None:
        planned = build()
        _keep(_plans, key, planned)
    return planned


class _Learning(threading.local):
    """The planned calls that the op being learned in this thread ran: (plan, input, result)."""

    runs: list | None = None


_learning = _Learning()


def _call_seen(planned: Callable[[np.ndarray], Any], x: np.ndarray) -> Any:
    """``planned(x)``, seen by the op being learned in this thread (`_learn`), if any."""
    result = planned(x)
    runs = _learning.runs
    if runs is not None:
        runs.append((planned, x, result))
    return result


#: Calls kept by the public ops for NumPy arrays: (op, arguments with their types, shape,
#: dtype, backend setting) -> the planned call that returns the op's result.
_calls: dict[tuple, Callable[[np.ndarray], Any]] = {}


class _LastCall:
    """A public op's last kept call, with the argument objects it was called with. They are
    plain values that never change (ints, floats, bools, strings, None, and tuples of them),
    so a call that passes the very same objects, as a constant in the caller's code or a small
    int does, passes the same arguments: `takes` compares them by identity, which costs less
    than the typed key (1.9 µs for ``(2, 2), (2, 2), 0`` and three keywords)."""

    __slots__ = ("backend", "dtype", "kept", "names", "rest", "shape", "values")

    _SCALARS = frozenset({int, float, bool, str, type(None)})

    def __init__(self, x: np.ndarray, args: tuple, kwargs: dict, backend: str, kept: Callable) -> None:
        self.shape, self.dtype, self.backend, self.kept = x.shape, x.dtype, backend, kept
        self.rest, self.names, self.values = args[1:], tuple(kwargs), tuple(kwargs.values())

    @classmethod
    def plain(cls, args: tuple, kwargs: dict) -> bool:
        """Whether every argument after the array is a plain value (see the class)."""
        for value in (*args[1:], *kwargs.values()):
            if type(value) is tuple:
                if not cls._SCALARS.issuperset(map(type, value)):
                    return False
            elif type(value) not in cls._SCALARS:
                return False
        return True

    def takes(self, x: np.ndarray, args: tuple, kwargs: dict) -> bool:
        """Whether a call of the op on ``x`` with these arguments is this one."""
        return (
            x.shape == self.shape
            and x.dtype == self.dtype
            and len(args) == len(self.rest) + 1
            and len(kwargs) == len(self.names)
            and all(map(operator.is_, args[1:], self.rest))
            and all(map(operator.is_, kwargs, self.names))
            and all(map(operator.is_, kwargs.values(), self.values))
            and get_backend() == self.backend
        )


#: Each public op's `_LastCall` (cleared with the kept calls).
_last_calls: dict[Callable[..., Any], _LastCall] = {}


def _replay(runs: list, x: np.ndarray, result: Any) -> Callable[[np.ndarray], Any] | None:
    """The call that returns what the op returned for ``x``, from the one planned call it ran
    on ``x`` itself, or None when the op did more than that call (another planned call, a
    computation of its own, a result that is not the call's): the caller then runs the op.

    The op's result may be the call's result (or a tuple of the same arrays), the values of a
    (values, indices or None) pair, or a C-contiguous reshape of the values (a global pool without its
    kept axes)."""
    if len(runs) != 1 or runs[0] is None or runs[0][1] is not x:
        return None
    planned, _, got = runs[0]
    bare = getattr(planned, "bare", None)
    run = planned if bare is None else bare(_same)
    if result is got or (
        type(result) is tuple and type(got) is tuple and list(map(id, result)) == list(map(id, got))
    ):
        return run
    values = got[0] if type(got) is tuple and len(got) == 2 else got
    if result is values:
        alone = getattr(planned, "values", None)  # a call that pairs its values with None
        if alone is not None and type(got) is tuple and got[1] is None:
            return alone.bare(_same) if hasattr(alone, "bare") else alone
        return lambda x: run(x)[0]
    if (
        type(result) is np.ndarray
        and type(values) is np.ndarray
        and result.dtype == values.dtype
        and result.size == values.size
        and result.flags.c_contiguous
        and values.flags.c_contiguous
        and result.ctypes.data == values.ctypes.data
    ):
        shape = result.shape
        if values is got:
            return lambda x: run(x).reshape(shape)
        return lambda x: run(x)[0].reshape(shape)
    return None


def _same(array: np.ndarray) -> np.ndarray:
    return array


def clear_plans() -> None:
    """Forget every planned call (after changing a driver's tuning constant, as tests do)."""
    _plans.clear()
    _calls.clear()
    _last_calls.clear()
    compute.clear_plans()


class NumpyBackend(Backend):
    """NumPy arrays (and lists), computed by `avgpool._dispatch`: the Numba kernels or the
    float64 reference. Results are new C-contiguous arrays of the input's dtype and layout."""

    name = "numpy"

    def array(self, x: Any, name: str = "input", allow_int: bool = False) -> np.ndarray:
        return as_array(x, name, allow_int)

    def _prepared(self, x: np.ndarray, window: Window, what: Any = None):
        layout, axes = _geometry(x.shape, window)
        check_allocation(layout.out_shape([a.out for a in axes]), what or x.dtype, "the output")
        return layout, axes

    def _grad_geometry(self, grad: np.ndarray, input_shape: Sequence[int], window: Window):
        layout, axes = _geometry(tuple(input_shape), window, "input_shape")
        layout.check_grad_shape(grad, [a.out for a in axes])
        return layout, axes

    def planned_avg(self, x, window):
        """``avg_pool(x, window, None)`` planned for arrays of ``x``'s shape and dtype (kept)."""
        key = ("avg", x.shape, x.dtype, window, get_backend())
        return _kept(key, lambda: self._plan_avg(x, window))

    def avg_pool(self, x, window, out):
        if out is None:
            return _call_seen(self.planned_avg(x, window), x)
        out, later = _out_arg(out, x)
        if out is not None and window.kernel_size is not None:
            # the kept call writes into out itself: a repeated call into a buffer of its own
            # costs what one without out does
            y = compute.call_into(self.planned_avg(x, window), x, out)
            if y is not None:
                return y
        layout, axes = self._prepared(x, window)
        empty = EMPTY_AVERAGE.get(window.convention, 0.0)
        if window.kernel_size is None and out is None:
            y = compute.global_avg(x, layout, empty)
        else:
            cip, override = window.count_include_pad, window.divisor_override
            y = compute.avg_forward(x, layout, axes, cip, override, empty, out)
        return compute.into(later, y)

    def _plan_avg(self, x, window):
        layout, axes = self._prepared(x, window)
        empty = EMPTY_AVERAGE.get(window.convention, 0.0)
        if window.kernel_size is None:
            return compute.plan_global_avg(layout, empty, x.dtype, x.size)
        cip, override = window.count_include_pad, window.divisor_override
        return compute.plan_avg_forward(layout, axes, cip, override, empty, x.dtype, x.size)

    def planned_avg_backward(self, grad, input_shape, window):
        """``avg_pool_backward(grad, input_shape, window)`` planned for gradients of ``grad``'s
        shape and dtype (kept; the shapes checked once): ``call(grad) -> gradient``."""
        key = ("avg_backward", grad.shape, grad.dtype, tuple(input_shape), window, get_backend())
        return _kept(key, lambda: self._plan_avg_backward(grad, input_shape, window))

    def _plan_avg_backward(self, grad, input_shape, window):
        layout, axes = self._grad_geometry(grad, input_shape, window)
        check_allocation(input_shape, grad.dtype, "the gradient (input_shape)")
        cip, override = window.count_include_pad, window.divisor_override
        return compute.plan_avg_backward(layout, axes, cip, override, grad.dtype, grad.size)

    def avg_pool_backward(self, grad, input_shape, window):
        layout, axes = self._grad_geometry(grad, input_shape, window)
        check_allocation(input_shape, grad.dtype, "the gradient (input_shape)")
        return compute.avg_backward(grad, layout, axes, window.count_include_pad, window.divisor_override)

    def _max(self, x, window, layout, axes, nan_policy, out=None, with_index=True):
        args = _nan_args(nan_policy, window, x.dtype)
        if window.kernel_size is None and out is None:
            return compute.global_max(x, layout, *args)
        return compute.max_forward(x, layout, axes, *args, out, with_index=with_index)

    def planned_max(self, x, window, nan_policy, return_indices):
        """``max_pool(x, window, nan_policy, None, return_indices)`` planned for arrays of
        ``x``'s shape and dtype (kept): ``call(x) -> (values, indices or None)``."""
        key = ("max", x.shape, x.dtype, window, nan_policy, return_indices, get_backend())
        return _kept(key, lambda: self._plan_max(x, window, nan_policy, return_indices))

    def max_pool(self, x, window, nan_policy, out, return_indices):
        if out is None:
            y, index = _call_seen(self.planned_max(x, window, nan_policy, return_indices), x)
            return (y, index) if return_indices else y
        layout, axes = self._prepared(x, window)
        out, later = _out_arg(out, x)
        y, index = self._max(x, window, layout, axes, nan_policy, out, return_indices)
        y = compute.into(later, y)
        return (y, index) if return_indices else y

    def _plan_max(self, x, window, nan_policy, with_index):
        layout, axes = self._prepared(x, window)
        policy, floor = _nan_args(nan_policy, window, x.dtype)
        axes = None if window.kernel_size is None else axes
        return compute.plan_max_forward(layout, axes, policy, floor, x.dtype, x.size, with_index)

    def max_pool_backward(self, grad, x, window, nan_policy, indices=None):
        layout, axes = self._prepared(x, window)
        out_spatial = [a.out for a in axes]
        layout.check_grad_shape(grad, out_spatial)
        check_range = None  # the indices computed here need no check
        if indices is None:
            _, indices = self._max(x, window, layout, axes, nan_policy)
        else:
            _check_indices(indices, grad.shape)
            check_range = functools.partial(_check_index_range, indices, math.prod(layout.spatial))
        # how many windows share a cell at most: each axis's window span over its stride, rounded up
        sharing = (
            1
            if window.kernel_size is None
            else math.prod(-(-((a.kernel - 1) * a.dilation + 1) // a.stride) for a in axes)
        )
        return compute.max_backward(grad, indices, layout, out_spatial, sharing, tuple(axes), check_range)

    def lp_pool(self, x, p, window, convention):
        layout, axes = self._prepared(x, window)
        return compute.lp_forward(x, layout, axes, p, convention)

    def lp_pool_backward(self, grad, x, p, window, convention):
        layout, axes = self._prepared(x, window)
        layout.check_grad_shape(grad, [a.out for a in axes])
        return compute.lp_backward(grad, x, layout, axes, p, convention)

    def adaptive_avg_pool(self, x, layout, out):
        key = ("adaptive_avg", layout, x.dtype, tuple(out), get_backend())
        return _call_seen(_kept(key, lambda: self._plan_adaptive_avg(x, layout, tuple(out))), x)

    def _plan_adaptive_avg(self, x, layout, out):
        check_allocation(layout.out_shape(out), x.dtype, "the output")
        return compute.plan_adaptive_avg(layout, out, x.dtype, x.size)

    def adaptive_avg_pool_backward(self, grad, layout, out):
        check_allocation(layout.shape, grad.dtype, "the gradient (input_shape)")
        return compute.adaptive_avg_backward(grad, layout, out)

    def planned_adaptive_avg_backward(self, grad, layout, out):
        """`adaptive_avg_pool_backward` planned for gradients of ``grad``'s dtype and size."""
        check_allocation(layout.shape, grad.dtype, "the gradient (input_shape)")
        return compute.plan_adaptive_avg_backward(layout, tuple(out), grad.dtype, grad.size)

    def adaptive_max_pool(self, x, layout, out):
        check_allocation(layout.out_shape(out), np.int64, "the output with its indices")
        return compute.adaptive_max_forward(x, layout, out)

    def adaptive_max_pool_backward(self, grad, x, layout, out):
        _, index = compute.adaptive_max_forward(x, layout, out)
        return compute.max_backward(grad, index, layout, out)

    def blur_pool(self, x, layout, filt_size, stride, mode, pad_off):
        key = ("blur", layout, x.dtype, filt_size, stride, mode, pad_off, get_backend())
        plan = _kept(
            key, lambda: compute.plan_blur(layout, filt_size, stride, mode, pad_off, x.dtype, x.size)
        )
        return _call_seen(plan, x)

    def blur_pool_backward(self, grad, layout, filt_size, stride, mode, pad_off):
        check_allocation(layout.shape, grad.dtype, "the gradient (input_shape)")
        return compute.blur_backward(grad, layout, filt_size, stride, mode, pad_off)


NUMPY = NumpyBackend()


_found: dict[type, Backend] = {}


def backend_of(array: Any) -> Backend:
    """The backend of ``array``: the first adapter whose library is imported and owns its type,
    else NumPy's."""
    kind = type(array)
    try:
        return _found[kind]
    except KeyError:
        pass
    for module, type_name, adapter in ADAPTERS:
        library = sys.modules.get(module)
        if library is not None and isinstance(array, getattr(library, type_name)):
            backend = importlib.import_module(adapter).BACKEND
            break
    else:
        backend = NUMPY
    _found[kind] = backend
    return backend


def _first_array(args: Sequence[Any], kwargs: dict[str, Any], name: str) -> Any:
    return args[0] if args else kwargs.get(name)


def run(fn: Callable[..., Any], backend: Backend, args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
    """``fn(backend, *args, **kwargs)``, its AvgPoolErrors raised as the backend's class."""
    try:
        return fn(backend, *args, **kwargs)
    except AvgPoolError as exc:
        if isinstance(exc, backend.errors):
            raise
        raise backend.errors(str(exc)) from None


def op(fn: Callable[..., Any] | None = None, *, name: str | None = None, doc: str | None = None):
    """The public op of ``fn(backend, array, ...)``: same signature without ``backend``,
    which is found from the first array argument (``name`` and ``doc``, if given, replace
    ``fn``'s).

    ``op.impl`` is ``fn`` (ops that call another op pass their backend on); ``op.on(backend)``
    is the op on that backend alone (a front end's functional API: other arrays are refused).
    """
    if fn is None:
        return functools.partial(op, name=name, doc=doc)
    if name is not None:
        fn.__name__ = fn.__qualname__ = name
    if doc is not None:
        fn.__doc__ = doc
    signature = inspect.signature(fn)
    parameters = list(signature.parameters.values())[1:]
    first = parameters[0].name

    @functools.wraps(fn)
    def public(*args: Any, **kwargs: Any) -> Any:
        x = args[0] if args else kwargs.get(first)
        if type(x) is not np.ndarray or not args or not x.flags.c_contiguous:
            return run(fn, backend_of(x), args, kwargs)
        last = _last_calls.get(public)
        if last is not None and last.takes(x, args, kwargs) and not log.isEnabledFor(logging.DEBUG):
            return last.kept(x)
        try:
            key = (public, x.shape, x.dtype, get_backend(), typed_key(args[1:], kwargs))
            kept = _calls.get(key)
        except TypeError:  # an unhashable argument (a list, an array)
            return run(fn, NUMPY, args, kwargs)
        if kept is not None and not log.isEnabledFor(logging.DEBUG):
            if _LastCall.plain(args, kwargs):
                _last_calls[public] = _LastCall(x, args, kwargs, key[3], kept)
            return kept(x)
        return _learn(fn, key, x, args, kwargs)

    public.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
    public.impl = fn  # type: ignore[attr-defined]
    public.on = functools.partial(_bound, fn, public.__signature__)  # type: ignore[attr-defined]
    return public


def _learn(
    fn: Callable[..., Any], key: tuple, x: np.ndarray, args: Sequence[Any], kwargs: dict[str, Any]
) -> Any:
    """``fn`` on the NumPy array ``x``, its planned call kept under ``key`` when the op's result
    is that call's (`_replay`): a repeated call with the same arguments, shape and dtype then
    skips the op's argument checks and geometry, which take most of a small array's time."""
    outer = _learning.runs
    runs = _learning.runs = []
    try:
        result = run(fn, NUMPY, args, kwargs)
    finally:
        _learning.runs = outer
        if outer is not None:  # an op inside another: the outer op is more than one call
            outer.append(None)
    kept = _replay(runs, x, result)
    if kept is not None:
        _keep(_calls, key, kept)
    return result


def _bound(fn: Callable[..., Any], signature: inspect.Signature, backend: Backend) -> Callable[..., Any]:
    def bound(*args: Any, **kwargs: Any) -> Any:
        return run(fn, backend, args, kwargs)

    bound.__name__ = bound.__qualname__ = fn.__name__
    bound.__signature__ = signature  # type: ignore[attr-defined]
    return bound
