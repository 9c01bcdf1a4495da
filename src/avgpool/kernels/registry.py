"""The kernel table: every compiled CPU kernel and the ops it serves.

A kernel registers itself with `register`, written beside its ``@njit``::

    @register("avg_pool", "lp_pool")
    @njit(parallel=True, cache=True)
    def avg_planes(x, out, geo, ...): ...

so the table cannot miss a kernel that a module defines: `kernels` imports every kernel module
of this package (all but this one, the private ``_*`` helpers and the GPU ``triton_*``
modules) and returns what they registered. tests/kernels walks the table, checks each kernel
against the float64 reference, and fails if a kernel module defines a public ``@njit``
function that is not registered. This module imports no Numba: the kernel modules are only
imported when `kernels` is called or a driver first runs one.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

#: Layouts and dtypes every CPU kernel takes (float16 through a float32 copy; integers for
#: the max family only).
LAYOUTS = ("channels_first", "channels_last")
DTYPES = ("float16", "float32", "float64")


@dataclass(frozen=True)
class Kernel:
    """One registered kernel: ``name`` is ``"module.function"`` (``"box_planes.avg_planes"``),
    ``ops`` the public ops (`avgpool.ops` names) whose drivers may call it."""

    name: str
    ops: tuple[str, ...]
    function: Callable[..., Any]


_TABLE: dict[str, Kernel] = {}


def register(*ops: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: enter the compiled function below it in the kernel table, serving ``ops``.

    >>> register()
    Traceback (most recent call last):
    ...
    ValueError: register needs the ops the kernel serves, e.g. register("avg_pool")
    """
    if not ops:
        raise ValueError('register needs the ops the kernel serves, e.g. register("avg_pool")')

    def enter(function: Callable[..., Any]) -> Callable[..., Any]:
        py_func = getattr(function, "py_func", function)  # a Numba dispatcher's Python function
        name = f"{py_func.__module__.rsplit('.', 1)[-1]}.{py_func.__name__}"
        _TABLE[name] = Kernel(name, tuple(ops), function)
        return function

    return enter


def kernel_modules() -> tuple[str, ...]:
    """The names of this package's CPU kernel modules (each may register kernels)."""
    import avgpool.kernels as package

    names = (m.name for m in pkgutil.iter_modules(package.__path__))
    return tuple(sorted(n for n in names if not n.startswith(("_", "triton_")) and n != "registry"))


def kernels() -> dict[str, Kernel]:
    """Every registered CPU kernel by name, after importing every kernel module."""
    for module in kernel_modules():
        importlib.import_module(f"{__package__}.{module}")
    return dict(sorted(_TABLE.items()))


def ops() -> dict[str, tuple[str, ...]]:
    """Every op with a compiled kernel, and the names of the kernels that serve it."""
    table: dict[str, list[str]] = {}
    for kernel in kernels().values():
        for op in kernel.ops:
            table.setdefault(op, []).append(kernel.name)
    return {op: tuple(names) for op, names in sorted(table.items())}
