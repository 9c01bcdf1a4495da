"""Software prefetch for the kernels that stream their input in short runs.

A kernel that reads its input as rows of a few hundred bytes (channels-first planes, global
averages of 7x7 planes) streams well below the machine's read rate, though its reads are in
memory order: the likely cause is that the hardware prefetchers follow a stream within a 4 KiB
page and start over at the next one, and short rows leave them little to follow. Hinting the
cache lines `PREFETCH_BYTES` ahead of the reading front closes most of that gap (3-D windows
hint the depth slice a tap reads next, not the next one in memory). Channels-last kernels
read rows of 8-32 KiB, which the hardware follows well, so they do not hint; nor do 1-D rows
(`box_planes.PREFETCH_MAX_STEP`).

`box_trees.avg_planes_tree`, whose strips read 16 rows at a time and do several passes over
them in cache, hints none of its input but the next strip's output rows, for writing.

A prefetch is a hint: it never faults and never changes a result, so an address past the
end of the array (the last rows of the last plane) is harmless, and bounds checking
(``NUMBA_BOUNDSCHECK``) does not apply to it.
"""

from __future__ import annotations

from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

#: How far ahead of the reading front the kernels hint (bytes): the middle of the range that
#: measured alike (benchmarks/NOTES.md).
PREFETCH_BYTES = 16384
#: A cache line (bytes): one hint per line.
LINE_BYTES = 64
#: The most bytes one `prefetch_ahead` call hints (far more than any kernel's step).
PREFETCH_MOST = 1 << 20


def _prefetch_codegen(rw):
    def codegen(context, builder, sig, args):
        arr = context.make_array(sig.args[0])(context, builder, args[0])
        i8p = ir.IntType(8).as_pointer()
        itemsize = context.get_abi_sizeof(context.get_data_type(sig.args[0].dtype))
        index = context.cast(builder, args[1], sig.args[1], types.intp)
        offset = builder.mul(index, context.get_constant(types.intp, itemsize))
        address = builder.gep(builder.bitcast(arr.data, i8p), [offset])  # not inbounds: may pass the end
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32])
        fn = builder.module.declare_intrinsic("llvm.prefetch", [i8p], fnty)
        builder.call(fn, [address, i32(rw), i32(3), i32(1)])  # keep in all levels, data
        return context.get_dummy_value()

    return codegen


@intrinsic
def prefetch(typingctx, a, i):
    """Hint that ``a``'s element ``i`` (any index: no bounds, no wraparound, read in C order
    from ``a``'s first element) will be read soon, into every cache level."""
    if not isinstance(a, types.Array) or not isinstance(i, types.Integer):
        return None
    return types.void(a, i), _prefetch_codegen(0)


@intrinsic
def prefetch_write(typingctx, a, i):
    """As `prefetch`, for a write: the line is fetched ready to be written (x86 PREFETCHW),
    so the store that follows does not wait for it."""
    if not isinstance(a, types.Array) or not isinstance(i, types.Integer):
        return None
    return types.void(a, i), _prefetch_codegen(1)


@intrinsic
def _itemsize(typingctx, a):
    """``a.itemsize`` as a constant of the code (Numba's ``a.itemsize`` reads the array's
    struct at run time, so the hint loops' bounds would divide)."""
    if not isinstance(a, types.Array):
        return None

    def codegen(context, builder, sig, args):
        return context.get_constant(types.intp, context.get_abi_sizeof(context.get_data_type(a.dtype)))

    return types.intp(a), codegen


@njit(cache=True, inline="always")
def prefetch_ahead(a, i, n):
    """Hint the ``n`` elements that start `PREFETCH_BYTES` past ``a``'s element ``i`` (in
    memory order: the rows after it, for C-contiguous data), one hint per cache line. Called
    once per step of a kernel whose reading front advances by ``n`` elements a step, it keeps
    the lines a fixed distance ahead of that front. At most `PREFETCH_MOST` bytes are
    hinted a call, so the loop stays short whatever stride the caller steps by."""
    itemsize = _itemsize(a)
    first = i + PREFETCH_BYTES // itemsize
    n = min(n, PREFETCH_MOST // itemsize)
    for j in range(first, first + n, LINE_BYTES // itemsize):
        prefetch(a, j)


@njit(cache=True, inline="always")
def prefetch_write_row(a):
    """Hint the cache lines of the 1-D C-contiguous ``a`` (an output row written soon) for
    writing, one hint per line."""
    for j in range(0, a.shape[0], LINE_BYTES // _itemsize(a)):
        prefetch_write(a, j)
