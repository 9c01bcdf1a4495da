"""Array views that Numba does not reference-count, for kernels that make a view per row.

Every array Numba makes in compiled code (a row ``x[o, d, h]``, a row of a scratch buffer)
shares its owner's reference count, and making or dropping one is an atomic add on that
count; what Numba's pruning pass leaves of them in a loop runs once per view. For rows of a
few hundred bytes that can be most of the time spent on the row. With two threads the count
of a shared input is also one cache line that both cores write.

`unowned(a)` is ``a`` with no owner: views of it count nothing (a count of no owner is a
null test, no atomic). Its shape and strides are ``a``'s, so bounds checking
(``NUMBA_BOUNDSCHECK``) still applies. The caller keeps the owner alive while the views are
in use: a kernel's arguments live for its call; an array a kernel allocates needs
`keep_alive` after its last use through an unowned view, since Numba frees an array after
the last use it can see.
"""

from __future__ import annotations

from numba import types
from numba.core import cgutils
from numba.extending import intrinsic


@intrinsic
def unowned(typingctx, a):
    """``a`` without an owner (a view that no reference count follows)."""
    if not isinstance(a, types.Array):
        return None

    def codegen(context, builder, sig, args):
        src = context.make_array(a)(context, builder, value=args[0])
        view = context.make_array(a)(context, builder)
        for field in ("nitems", "itemsize", "data", "shape", "strides"):
            setattr(view, field, getattr(src, field))
        view.meminfo = cgutils.get_null_value(view.meminfo.type)
        view.parent = cgutils.get_null_value(view.parent.type)
        return view._getvalue()

    return a(a), codegen


@intrinsic
def keep_alive(typingctx, a):
    """A use of ``a``: Numba frees it no earlier than here."""
    if not isinstance(a, types.Array):
        return None

    def codegen(context, builder, sig, args):
        return context.get_dummy_value()

    return types.none(a), codegen
