"""Kernel calls planned once per input shape: the kernel, its views, its tables, its threads.

A driver in `avgpool._cpu_drivers` plans a call for one input shape, layout and dtype and
returns a `Planned`; kept by the caller, it turns a repeated call into a reshape of the input,
an allocation of the output and the kernel call, with no geometry, table or dispatch work in
Python.

Threads are chosen per plan from the bytes the call reads and writes (`threads_for`): work
below 1.5 `BYTES_PER_THREAD` runs the kernel's serial twin (`serial`: the same code compiled
without a thread pool), since waking a pool costs microseconds when its threads spin and up to
milliseconds when they sleep on a busy machine, more than such work takes. Larger work takes one
thread per `BYTES_PER_THREAD` (to the nearest), up to `avgpool.get_num_threads`. Results do not depend on the
thread count: every kernel fixes its order of additions.
"""

from __future__ import annotations

import functools
import logging
import math
import types
from collections.abc import Callable
from typing import Any

import numpy as np

from avgpool import _buffers
from avgpool._settings import _process, get_num_threads

log = logging.getLogger("avgpool")

#: Bytes (read plus written) per thread: less runs serially. On the 2-core test machine a
#: 3x3/1 p1 average moving 512 KiB took 80 µs on one thread and 47 on two (best of 400; 128
#: KiB: 24 µs on one, and a sleeping second thread can take milliseconds to wake when the
#: machine is busy).
BYTES_PER_THREAD = 1 << 19


def threads_for(nbytes: int) -> int:
    """Threads a call moving ``nbytes`` asks for (capped by `get_num_threads` when it runs):
    one per `BYTES_PER_THREAD`, to the nearest (768 KiB: two).

    >>> threads_for(100_000), threads_for(3 << 20)
    (1, 6)
    """
    return max(1, (nbytes + BYTES_PER_THREAD // 2) // BYTES_PER_THREAD)


@functools.cache
def serial(kernel: Any) -> Any:
    """The kernel's serial twin: its Python function compiled without ``parallel`` (``prange``
    runs as ``range``), with its own on-disk cache entry (a qualified name of its own). A
    plain Python function (a test's stand-in for a kernel) is its own twin."""
    import numba

    py = getattr(kernel, "py_func", None)
    if py is None:
        return kernel
    twin = types.FunctionType(py.__code__, py.__globals__, py.__name__, py.__defaults__, py.__closure__)
    twin.__qualname__ = f"{py.__qualname__}__serial"
    twin.__module__, twin.__doc__ = py.__module__, py.__doc__
    options = {k: v for k, v in kernel.targetoptions.items() if k not in ("parallel", "nopython")}
    return numba.njit(cache=True, **options)(twin)


@functools.cache
def _numba_threads() -> Callable[[], int]:
    """A reader of the calling thread's Numba thread count. ``numba.get_num_threads`` checks
    that the pool is launched, under a lock, before it reads the count (0.7 µs a call); once it
    is launched, Numba's own C reader (``numba.np.ufunc.parallel._get_num_threads``) reads the
    same thread-local count in 0.1 µs. That reader, or ``numba.get_num_threads`` where a
    Numba has none."""
    import numba

    numba.get_num_threads()  # launches the pool, which sets the reader
    from numba.np.ufunc import parallel

    raw = getattr(parallel, "_get_num_threads", None)
    return raw if callable(raw) else numba.get_num_threads


def call_on(threads: int, fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` with Numba's thread count at ``threads`` for the call, restored after.

    Numba's count is kept per thread; setting it for each call makes avgpool's process-wide
    setting hold in every thread that runs a kernel.
    """
    before = _numba_threads()()
    if before == threads:
        return fn(*args)
    return _switched(before, threads, fn, args)


def _switched(before: int, threads: int, fn: Callable[..., Any], args: tuple) -> Any:
    """``fn(*args)`` with this thread's Numba count at ``threads``, then back at ``before``."""
    import numba

    numba.set_num_threads(threads)
    try:
        return fn(*args)
    finally:
        numba.set_num_threads(before)


def _on_threads(kernel: Any, threads: int, entry: Any = None) -> Callable[..., Any]:
    """``kernel`` run on at most ``threads`` threads (fewer if `get_num_threads` says so; on
    one, its serial twin). The counts are read at each call, Numba's by `_numba_threads`'
    reader: `get_num_threads` and ``numba.get_num_threads`` took a microsecond of a call.
    ``entry``, the kernel's compiled code for the caller's argument types (`_compiled`), runs
    in its place where the thread count needs no change."""
    if threads == 1:
        return serial(kernel)
    read, direct = _numba_threads(), kernel if entry is None else entry

    def run(*args: Any) -> Any:
        here = read()
        wanted = min(threads, here if _process["threads"] is None else _process["threads"])
        if wanted == 1:
            return serial(kernel)(*args)
        if wanted == here:
            return direct(*args)
        return _switched(here, wanted, kernel, args)

    return run


def _compiled(kernel: Any, args: tuple) -> Any:
    """The machine code a Numba dispatcher has compiled for arguments of these types, called
    without the dispatcher's per-call typing (a microsecond on a kernel of many arrays); the
    kernel itself where it is no dispatcher or has compiled no such signature."""
    overloads = getattr(kernel, "overloads", None)
    if not isinstance(overloads, dict):
        return kernel
    from numba.core.typing.typeof import Purpose, typeof

    try:
        return overloads[tuple(typeof(a, Purpose.argument) for a in args)].entry_point
    except (KeyError, AttributeError, ValueError):
        return kernel


def kernel_name(kernel: Any) -> str:
    """``"module.function"`` of a kernel (``"box_planes.avg_planes"``), as the logs name it."""
    py = getattr(kernel, "py_func", kernel)
    return f"{py.__module__.rsplit('.', 1)[-1]}.{py.__name__}"


class Planned:
    """One kernel call, planned for inputs of one shape and dtype.

    ``planned(x)`` runs ``kernel(x_view, out_view, [index_view,] *args)`` and returns the
    output in the user's shape (with its int64 index, when the kernel writes one). ``x`` must
    have the planned shape; it is copied first when it is not C-contiguous or not the kernel's
    dtype (float16 runs on a float32 copy and is rounded once at the end).
    """

    __slots__ = (
        "_run",
        "args",
        "dtype",
        "index",
        "kernel",
        "out_shape",
        "out_view",
        "path",
        "small",
        "threads",
        "view",
        "work",
    )

    def __init__(
        self,
        kernel: Any,
        args: tuple,
        *,
        view: tuple[int, ...],
        out_shape: tuple[int, ...],
        out_view: tuple[int, ...],
        dtype: np.dtype,
        nbytes: int,
        path: str,
        index: bool = False,
    ) -> None:
        self.kernel, self.args, self.view, self.path = kernel, args, view, path
        self.out_shape, self.out_view, self.dtype = out_shape, out_view, np.dtype(dtype)
        self.work = np.dtype(np.float32) if self.dtype == np.float16 else self.dtype
        self.index = index
        self.threads = threads_for(nbytes)
        self._run = _on_threads(kernel, self.threads)
        # results too small for the buffer pool come straight from np.empty
        self.small = math.prod(out_shape) * max(self.dtype.itemsize, 8 if index else 1) < _buffers.MIN_BYTES

    def _empty(self, dtype: np.dtype) -> np.ndarray:
        shape = self.out_shape
        return np.empty(shape, dtype) if self.small else _buffers.empty(shape, dtype)

    def __call__(self, x: np.ndarray, out: np.ndarray | None = None):
        if log.isEnabledFor(logging.DEBUG):
            threads = 1 if self.threads == 1 else min(self.threads, get_num_threads())
            log.debug("%s (%s)", self.path, "serial" if threads == 1 else f"{threads} threads")
        if x.dtype != self.work or not x.flags.c_contiguous:
            x = np.ascontiguousarray(x, dtype=self.work)
        xv = x.reshape(self.view)
        result = self._empty(self.dtype) if out is None else out
        ov = result.reshape(self.out_view) if self.work == self.dtype else np.empty(self.out_view, self.work)
        if self.index:
            index = self._empty(np.dtype(np.int64))
            self._run(xv, ov, index.reshape(self.out_view), *self.args)
        else:
            self._run(xv, ov, *self.args)
        if self.work != self.dtype:
            result.reshape(self.out_view)[...] = ov
        return (result, index) if self.index else result

    def bare(self, wrap: Callable[[np.ndarray], Any]) -> Callable[[np.ndarray], Any]:
        """``wrap`` of each array ``self(x)`` returns, for a C-contiguous ``x`` of the planned
        shape and dtype alone, without the per-call checks of ``x`` or the debug line: for a
        caller that checks the input and the log level itself (the torch front end's kept calls).
        """
        if self.work != self.dtype or not self.small:
            if self.index:
                return lambda x: tuple(wrap(r) for r in self(x))
            return lambda x: wrap(self(x))
        args, view, out_view = self.args, self.view, self.out_view
        shape, dtype, empty = self.out_shape, self.dtype, np.empty
        int64 = np.dtype(np.int64)
        arrays = [empty(view, dtype), empty(out_view, dtype)] + [empty(out_view, int64)] * self.index
        run = self._compiled_run((*arrays, *args))
        if self.index:

            def pair(x: np.ndarray) -> Any:
                result, index = empty(shape, dtype), empty(shape, int64)
                run(x.reshape(view), result.reshape(out_view), index.reshape(out_view), *args)
                return wrap(result), wrap(index)

            return pair

        def single(x: np.ndarray) -> Any:
            result = empty(shape, dtype)
            run(x.reshape(view), result.reshape(out_view), *args)
            return wrap(result)

        return single

    def _compiled_run(self, example: tuple) -> Callable[..., Any]:
        """`_run` for arguments of ``example``'s types through the machine code compiled for
        them, without the dispatcher's typing: the serial twin's, or on threads the kernel's
        where the thread count needs no change (`_on_threads`)."""
        if self.threads == 1:
            return _compiled(self._run, example)
        return _on_threads(self.kernel, self.threads, _compiled(self.kernel, example))


class Copy:
    """A planned call that copies its input: an average whose every window is the one cell it
    stands on (kernel 1, stride 1, no padding, divisor 1), as an adaptive average to the
    input's own size is. The copy is the bandwidth floor and exact (an average of one cell is
    that cell, -0.0, inf and NaN included)."""

    __slots__ = ("dtype", "out_shape", "path", "threads")

    def __init__(self, out_shape: tuple[int, ...], dtype: np.dtype, path: str) -> None:
        self.out_shape, self.dtype, self.path, self.threads = out_shape, np.dtype(dtype), path, 1

    def __call__(self, x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s (serial)", self.path)
        result = _buffers.empty(self.out_shape, self.dtype) if out is None else out
        np.copyto(result, x.reshape(self.out_shape))
        return result

    def bare(self, wrap: Callable[[np.ndarray], Any]) -> Callable[[np.ndarray], Any]:
        """As `Planned.bare`: ``wrap`` of the copy."""
        return lambda x: wrap(self(x))
