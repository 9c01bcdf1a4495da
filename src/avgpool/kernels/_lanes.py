"""Explicit 8-lane vector steps for kernels whose loops are too short to vectorise.

`small_planes.max_small` holds a block of 8 planes transposed, each cell of the planes a run
of 8 values (one per plane); `flat_planes.avg_tiles` and `max_tiles` pool 2x2/2 on planes
whose rows are a few outputs long. Numba leaves LLVM's SLP vectoriser off, so a loop of a
constant 8 iterations compiles to 8 scalar steps, and the loop vectoriser only takes loops
long enough for several vectors; these intrinsics emit the vector step itself: `lanes_max3`
(the maximum of three runs of 8), `transpose8` (an 8x8 tile transposed, 8 vector loads,
three rounds of shuffles, 8 vector stores), `tiles_sum8` / `tiles_max8` (eight 2x2
windows from two rows' runs of 16: adjacent pairs, then the rows), `same3x3_rows8` (a
3x3/1 pad-1 average over a plane 8 cells wide, a row per vector, looping over the rows), and
`run_sum8` (a run of any length summed in 8 lanes in a fixed order, its ragged end read
masked: the float32 global average of channels-first planes), and `windows3s2_max8` (eight
3x3/2 windows of a row's maxima from the rows as they lie: `plane_max.max3s2_planes`).

Every run is 8 consecutive elements of a 1-D C-contiguous array, read and written as one
vector of the array's dtype. Under ``NUMBA_BOUNDSCHECK`` each run's first and last index is
checked as an ordinary index would be (IndexError).

Numba's disk cache keys each kernel on its own source file, not on this one: after changing a
step here, clear the kernels' cache (or point ``NUMBA_CACHE_DIR`` at a fresh directory) before
testing or timing them, or they run the machine code of the old step.
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

#: Values per run (planes per block).
LANES = 8


def _run_pointer(context, builder, aty, aval, idx, idxty, vec):
    """A pointer to the run ``aval[idx : idx + len(vec)]`` as a vector; bounds checked when on."""
    arr = context.make_array(aty)(context, builder, aval)
    i = context.cast(builder, idx, idxty, types.intp)
    if context.enable_boundscheck:
        n = builder.extract_value(arr.shape, 0)
        cgutils.do_boundscheck(context, builder, i, n)
        cgutils.do_boundscheck(context, builder, builder.add(i, i.type(vec.count - 1)), n)
    return builder.bitcast(builder.gep(arr.data, [i], inbounds=True), vec.as_pointer())


def _bigger(builder, dtype, a, b):
    """Lane by lane, ``b`` where it is larger than ``a`` or NaN, else ``a``: the rule of
    `small_planes._bigger` (a NaN wins; of equal values the first is kept)."""
    if isinstance(dtype, types.Float):
        take = builder.or_(builder.fcmp_ordered(">", b, a), builder.fcmp_unordered("uno", b, b))
    elif dtype.signed:
        take = builder.icmp_signed(">", b, a)
    else:
        take = builder.icmp_unsigned(">", b, a)
    return builder.select(take, b, a)


def _arrays_1d(*arrays) -> bool:
    return all(isinstance(a, types.Array) and a.ndim == 1 and a.dtype == arrays[0].dtype for a in arrays)


@intrinsic
def lanes_max3(typingctx, dst, d, p, i, q, j, r, k):
    """``dst[d : d+8] = bigger(bigger(p[i : i+8], q[j : j+8]), r[k : k+8])`` lane by lane
    (`_bigger`'s rule). All four arrays 1-D, C-contiguous, of one dtype; the sources are
    read before ``dst`` is written, so a source may be ``dst``'s own run."""
    if not _arrays_1d(dst, p, q, r):
        return None
    dtype = dst.dtype

    def codegen(context, builder, sig, args):
        vec = ir.VectorType(context.get_data_type(dtype), LANES)
        align = context.get_abi_sizeof(context.get_data_type(dtype))
        ptrs = [
            _run_pointer(context, builder, sig.args[n], args[n], args[n + 1], sig.args[n + 1], vec)
            for n in (0, 2, 4, 6)
        ]
        va, vb, vc = (builder.load(ptr, align=align, typ=vec) for ptr in ptrs[1:])
        builder.store(_bigger(builder, dtype, _bigger(builder, dtype, va, vb), vc), ptrs[0], align=align)
        return context.get_dummy_value()

    return types.void(dst, d, p, i, q, j, r, k), codegen


def _pair_halves(context, builder, sig, args):
    """The runs of 16 at ``src[i]`` and ``src[j]`` (args 2-4) of `tiles_sum8` / `tiles_max8`,
    each split into its even and odd elements: ``[(even, odd) of row i, (even, odd) of row j]``."""
    dtype = sig.args[0].dtype
    wide = ir.VectorType(context.get_data_type(dtype), 2 * LANES)
    align = context.get_abi_sizeof(context.get_data_type(dtype))
    index = ir.VectorType(ir.IntType(32), LANES)
    even = ir.Constant(index, list(range(0, 2 * LANES, 2)))
    odd = ir.Constant(index, list(range(1, 2 * LANES, 2)))
    rows = []
    for n in (3, 4):
        ptr = _run_pointer(context, builder, sig.args[2], args[2], args[n], sig.args[n], wide)
        run = builder.load(ptr, align=align, typ=wide)
        rows.append((builder.shuffle_vector(run, run, even), builder.shuffle_vector(run, run, odd)))
    return rows


def _pair_reduced(context, builder, sig, args, reduce):
    """The 8 results of `tiles_sum8` / `tiles_max8`: the runs of 16 at ``src[i]`` and
    ``src[j]`` (args 2-4), each reduced over its adjacent pairs, then the two reduced."""
    (a, b), (c, d) = _pair_halves(context, builder, sig, args)
    return reduce(reduce(a, b), reduce(c, d))


@intrinsic
def tiles_sum8(typingctx, dst, d, src, i, j, scale):
    """``dst[d + l] = ((src[i + 2l] + src[i + 2l + 1]) + (src[j + 2l] + src[j + 2l + 1])) *
    scale`` for l < 8: eight 2x2 windows of two input rows (at ``i`` and ``j``) averaged, in
    the order and rounding of the scalar loop (no fused multiply-add). Both arrays 1-D,
    C-contiguous, of one float dtype; ``scale`` is cast to it."""
    if not (_arrays_1d(dst, src) and isinstance(dst.dtype, types.Float)):
        return None

    def codegen(context, builder, sig, args):
        dtype = sig.args[0].dtype
        vec = ir.VectorType(context.get_data_type(dtype), LANES)
        total = _pair_reduced(context, builder, sig, args, builder.fadd)
        factor = context.cast(builder, args[5], sig.args[5], dtype)
        one = builder.insert_element(ir.Constant(vec, ir.Undefined), factor, ir.IntType(32)(0))
        splat = builder.shuffle_vector(
            one, one, ir.Constant(ir.VectorType(ir.IntType(32), LANES), [0] * LANES)
        )
        _store_run(context, builder, sig, args, builder.fmul(total, splat))
        return context.get_dummy_value()

    return types.void(dst, d, src, i, j, scale), codegen


@intrinsic
def tiles_max8(typingctx, dst, d, src, i, j):
    """``dst[d + l] = bigger(bigger(src[i + 2l], src[i + 2l + 1]), bigger(src[j + 2l],
    src[j + 2l + 1]))`` for l < 8 (`_bigger`'s rule): the maxima of eight 2x2 windows of two
    input rows, as `tiles_sum8` reads them. Both arrays 1-D, C-contiguous, of one dtype.

    For floats, the run first takes each larger value by one ordered comparison (a
    ``maxps``), which is `_bigger`'s rule wherever no NaN is read; a run that reads a NaN is
    reduced again by the rule itself, so NaN still wins (the last one read)."""
    if not _arrays_1d(dst, src):
        return None

    def codegen(context, builder, sig, args):
        dtype = sig.args[0].dtype
        (a, b), (c, d) = _pair_halves(context, builder, sig, args)

        def by_rule():
            def bigger(x, y):
                return _bigger(builder, dtype, x, y)

            return bigger(bigger(a, b), bigger(c, d))

        if not isinstance(dtype, types.Float):
            _store_run(context, builder, sig, args, by_rule())
            return context.get_dummy_value()

        def larger(x, y):  # y where it is larger, else x: `_bigger` without its NaN test
            return builder.select(builder.fcmp_ordered(">", y, x), y, x)

        nan = builder.or_(builder.fcmp_unordered("uno", a, b), builder.fcmp_unordered("uno", c, d))
        mask = ir.IntType(LANES)
        any_nan = builder.icmp_unsigned("!=", builder.bitcast(nan, mask), mask(0))
        with builder.if_else(any_nan, likely=False) as (with_nan, finite):
            with with_nan:
                _store_run(context, builder, sig, args, by_rule())
            with finite:
                _store_run(context, builder, sig, args, larger(larger(a, b), larger(c, d)))
        return context.get_dummy_value()

    return types.void(dst, d, src, i, j), codegen


@intrinsic
def windows3s2_max8(typingctx, dst, d, src, i, j, k):
    """``dst[d + l] = bigger(bigger(m[2l], m[2l + 1]), m[2l + 2])`` for l < 8, where ``m[c] =
    bigger(bigger(src[i + c], src[j + c]), src[k + c])`` (`_bigger`'s rule): eight 3-wide,
    stride-2 windows' maxima over three rows that start at ``i``, ``j`` and ``k``, their cells
    and taps in row-major order. Reads cells 0-16 of each row, as two runs of 16 (at 0 and 1);
    a window over two rows names one of them twice, which gives the same bits. Both arrays 1-D,
    C-contiguous, of one dtype. For floats, as `tiles_max8`: ordered comparisons (``maxps``)
    unless a NaN was read, when the windows are reduced again by the rule itself."""
    if not _arrays_1d(dst, src):
        return None

    def codegen(context, builder, sig, args):
        dtype = sig.args[0].dtype
        wide = ir.VectorType(context.get_data_type(dtype), 2 * LANES)
        align = context.get_abi_sizeof(context.get_data_type(dtype))
        runs = []  # runs[row][a]: the row's 16 cells from its offset + a
        for n in (3, 4, 5):
            at0 = context.cast(builder, args[n], sig.args[n], types.intp)
            row = []
            for a in (0, 1):
                at = builder.add(at0, at0.type(a))
                ptr = _run_pointer(context, builder, sig.args[2], args[2], at, types.intp, wide)
                row.append(builder.load(ptr, align=align, typ=wide))
            runs.append(row)
        even, odd = _lane_index(*range(0, 2 * LANES, 2)), _lane_index(*range(1, 2 * LANES, 2))

        def windows(bigger):
            m0, m1 = (bigger(bigger(runs[0][a], runs[1][a]), runs[2][a]) for a in (0, 1))
            taps = (
                builder.shuffle_vector(m0, m0, even),
                builder.shuffle_vector(m0, m0, odd),
                builder.shuffle_vector(m1, m1, odd),
            )
            return bigger(bigger(taps[0], taps[1]), taps[2])

        def by_rule(x, y):
            return _bigger(builder, dtype, x, y)

        if not isinstance(dtype, types.Float):
            _store_run(context, builder, sig, args, windows(by_rule))
            return context.get_dummy_value()

        def larger(x, y):  # y where it is larger, else x: `_bigger` without its NaN test
            return builder.select(builder.fcmp_ordered(">", y, x), y, x)

        nan = builder.or_(
            builder.fcmp_unordered("uno", runs[0][0], runs[1][0]),
            builder.fcmp_unordered("uno", runs[2][0], runs[0][1]),
        )
        nan = builder.or_(nan, builder.fcmp_unordered("uno", runs[1][1], runs[2][1]))
        mask = ir.IntType(2 * LANES)
        any_nan = builder.icmp_unsigned("!=", builder.bitcast(nan, mask), mask(0))
        with builder.if_else(any_nan, likely=False) as (with_nan, finite):
            with with_nan:
                _store_run(context, builder, sig, args, windows(by_rule))
            with finite:
                _store_run(context, builder, sig, args, windows(larger))
        return context.get_dummy_value()

    return types.void(dst, d, src, i, j, k), codegen


def _store_run(context, builder, sig, args, values):
    """``values`` (8 lanes) stored at ``dst[d]`` (args 0-1)."""
    ptr = _run_pointer(context, builder, sig.args[0], args[0], args[1], sig.args[1], values.type)
    builder.store(values, ptr, align=context.get_abi_sizeof(context.get_data_type(sig.args[0].dtype)))


def _transposed(builder, rows):
    """``n`` vectors of ``n`` -> their transpose (vector c holds element c of every row):
    log2(n) rounds of one perfect shuffle (rows r and r + n/2 zipped into rows 2r, 2r + 1)."""
    n = len(rows)
    index = ir.VectorType(ir.IntType(32), n)
    low = ir.Constant(index, [e for i in range(n // 2) for e in (i, n + i)])
    high = ir.Constant(index, [e for i in range(n // 2, n) for e in (i, n + i)])
    for _ in range(n.bit_length() - 1):
        zipped = []
        for r in range(n // 2):
            zipped += [
                builder.shuffle_vector(rows[r], rows[r + n // 2], low),
                builder.shuffle_vector(rows[r], rows[r + n // 2], high),
            ]
        rows = zipped
    return rows


@intrinsic
def transpose8(typingctx, dst, d, dstep, src, s, sstep):
    """``dst[d + c*dstep + r] = src[s + r*sstep + c]`` for r, c < 8: the 8x8 tile whose rows
    start every ``sstep`` elements of ``src`` written as the rows, every ``dstep`` elements,
    of ``dst``. Both arrays 1-D, C-contiguous and not overlapping, of one dtype or of two float
    dtypes (each value converted as an assignment converts it: exact when widening, rounded
    to nearest when narrowing)."""
    floats = all(isinstance(a, types.Array) and isinstance(a.dtype, types.Float) for a in (dst, src))
    if not (_arrays_1d(dst, src) or (floats and _arrays_1d(dst) and _arrays_1d(src))):
        return None

    def codegen(context, builder, sig, args):
        vec = ir.VectorType(context.get_data_type(src.dtype), LANES)
        out = ir.VectorType(context.get_data_type(dst.dtype), LANES)
        d0, dn, s0, sn = (context.cast(builder, args[n], sig.args[n], types.intp) for n in (1, 2, 4, 5))
        rows = []
        for r in range(LANES):
            at = builder.add(s0, builder.mul(sn, sn.type(r)))
            ptr = _run_pointer(context, builder, sig.args[3], args[3], at, types.intp, vec)
            rows.append(builder.load(ptr, align=context.get_abi_sizeof(vec.element), typ=vec))
        for c, column in enumerate(_transposed(builder, rows)):
            at = builder.add(d0, builder.mul(dn, dn.type(c)))
            column = _converted(context, builder, column, src.dtype, dst.dtype) if floats else column
            builder.store(
                column,
                _run_pointer(context, builder, sig.args[0], args[0], at, types.intp, out),
                align=context.get_abi_sizeof(out.element),
            )
        return context.get_dummy_value()

    return types.void(dst, d, dstep, src, s, sstep), codegen


def _converted(context, builder, value, src, dst):
    """A vector of float dtype ``src`` as float dtype ``dst`` (exact when widening)."""
    wide = ir.VectorType(context.get_data_type(dst), value.type.count)
    if src.bitwidth < dst.bitwidth:
        return builder.fpext(value, wide)
    if src.bitwidth > dst.bitwidth:
        return builder.fptrunc(value, wide)
    return value


@intrinsic
def same3x3_rows8(typingctx, dst, d, src, s, scale, t, rows):
    """A 3x3/1 pad-1 window's averages over one plane of ``rows`` rows of 8 cells, the plane's
    rows held in vectors: ``dst[d + 8r + l] = ((h[r-1] + h[r]) + h[r+1])[l] * scale[t + 8r + l]``
    where ``h[r] = (x[r, l-1] + x[r, l]) + x[r, l+1]``, ``x[r, l] = src[s + 8r + l]`` and every
    cell outside the plane reads +0.0. Sums are in ``scale``'s dtype (``src`` widened to it),
    the result is stored in ``dst``'s; these are the masked taps of `flat_planes.avg_same` in
    its order, so the bits are the same. Each row is read once: the cell's neighbours come from
    the same vector shifted one lane (the lane shifted in is +0.0), and the rows above and below
    are the sums already made. All three arrays 1-D, C-contiguous, of float dtypes."""
    arrays = (dst, src, scale)
    if not all(isinstance(a, types.Array) and a.ndim == 1 for a in arrays):
        return None
    if not all(isinstance(a.dtype, types.Float) and a.dtype.bitwidth in (32, 64) for a in arrays):
        return None

    def codegen(context, builder, sig, args):
        out_t, in_t, acc_t = (sig.args[n].dtype for n in (0, 2, 4))
        vec = {a: ir.VectorType(context.get_data_type(a), LANES) for a in (out_t, in_t, acc_t)}
        size = {a: context.get_abi_sizeof(context.get_data_type(a)) for a in (out_t, in_t, acc_t)}
        index = ir.VectorType(ir.IntType(32), LANES)
        shifted_in = ir.Constant(index, [LANES, *range(LANES - 1)])  # lane 0 from the zeros
        shifted_out = ir.Constant(index, [*range(1, LANES), LANES])  # lane 7 from the zeros
        zero = ir.Constant(vec[acc_t], [0.0] * LANES)
        d0, s0, t0, n = (context.cast(builder, args[k], sig.args[k], types.intp) for k in (1, 3, 5, 6))
        step = n.type(LANES)

        def row_sums(r):
            at = builder.add(s0, builder.mul(r, step))
            ptr = _run_pointer(context, builder, sig.args[2], args[2], at, types.intp, vec[in_t])
            row = builder.load(ptr, align=size[in_t], typ=vec[in_t])
            row = _converted(context, builder, row, in_t, acc_t)
            left = builder.shuffle_vector(row, zero, shifted_in)
            right = builder.shuffle_vector(row, zero, shifted_out)
            return builder.fadd(builder.fadd(left, row), right)

        above, here, below = (cgutils.alloca_once(builder, vec[acc_t]) for _ in range(3))
        builder.store(zero, above)
        builder.store(zero, here)
        with builder.if_then(builder.icmp_signed(">", n, n.type(0))):
            builder.store(row_sums(n.type(0)), here)
        with cgutils.for_range(builder, n) as loop:
            r = loop.index
            nxt = builder.add(r, r.type(1))
            with builder.if_else(builder.icmp_signed("<", nxt, n)) as (more, last):
                with more:
                    builder.store(row_sums(nxt), below)
                with last:
                    builder.store(zero, below)
            ha, hh, hb = (builder.load(p, typ=vec[acc_t]) for p in (above, here, below))
            total = builder.fadd(builder.fadd(ha, hh), hb)
            at = builder.add(t0, builder.mul(r, step))
            sp = _run_pointer(context, builder, sig.args[4], args[4], at, types.intp, vec[acc_t])
            mean = builder.fmul(total, builder.load(sp, align=size[acc_t], typ=vec[acc_t]))
            at = builder.add(d0, builder.mul(r, step))
            dp = _run_pointer(context, builder, sig.args[0], args[0], at, types.intp, vec[out_t])
            builder.store(_converted(context, builder, mean, acc_t, out_t), dp, align=size[out_t])
            builder.store(hh, above)
            builder.store(hb, here)
        return context.get_dummy_value()

    return types.void(dst, d, src, s, scale, t, rows), codegen


def _lane_index(*lanes):
    """An i32 constant (one lane) or a vector of them (several): shuffle masks, lane numbers."""
    i32 = ir.IntType(32)
    return i32(lanes[0]) if len(lanes) == 1 else ir.Constant(ir.VectorType(i32, len(lanes)), list(lanes))


def _masked_load(builder, ptr, vec, mask, align):
    """``llvm.masked.load`` of ``vec`` at ``ptr``: lanes off in ``mask`` read nothing (no fault
    past the end of an array) and come back +0.0."""
    ptr_t = ptr.type
    fnty = ir.FunctionType(vec, [ptr_t, ir.IntType(32), mask.type, vec])
    width = 32 if vec.element == ir.FloatType() else 64
    name = f"llvm.masked.load.v{vec.count}f{width}.p0"
    fn = cgutils.get_or_insert_function(builder.module, fnty, name)
    zero = ir.Constant(vec, [0.0] * vec.count)
    return builder.call(fn, [ptr, ir.IntType(32)(align), mask, zero])


@intrinsic
def run_sum8(typingctx, src, s, n):
    """The sum of ``src[s : s + n]`` in ``src``'s float dtype, in a fixed order: lane ``l`` of
    an 8-lane vector adds cells ``s + l``, ``s + 8 + l``, ... one after another (the first onto
    +0.0, exactly), the last ``n % 8`` cells through a masked read (no read past ``s + n``), then
    the lanes in a tree three additions deep ((0 + 4) + (2 + 6)) + ((1 + 5) + (3 + 7)). A cell
    reaches the sum through at most ``ceil(n / 8) - 1 + 3`` roundings. ``src`` 1-D,
    C-contiguous, float32 or float64."""
    if not (isinstance(src, types.Array) and src.ndim == 1 and isinstance(src.dtype, types.Float)):
        return None
    if not (isinstance(s, types.Integer) and isinstance(n, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        dtype = sig.args[0].dtype
        vec = ir.VectorType(context.get_data_type(dtype), LANES)
        align = context.get_abi_sizeof(context.get_data_type(dtype))
        s0, n0 = (context.cast(builder, args[k], sig.args[k], types.intp) for k in (1, 2))
        step = s0.type(LANES)
        if context.enable_boundscheck:
            arr = context.make_array(sig.args[0])(context, builder, args[0])
            size = builder.extract_value(arr.shape, 0)
            with builder.if_then(builder.icmp_signed(">", n0, n0.type(0))):
                cgutils.do_boundscheck(context, builder, s0, size)
                cgutils.do_boundscheck(context, builder, builder.sub(builder.add(s0, n0), n0.type(1)), size)
        full = builder.sdiv(n0, step)
        acc = cgutils.alloca_once(builder, vec)
        builder.store(ir.Constant(vec, [0.0] * LANES), acc)
        with cgutils.for_range(builder, full) as loop:
            at = builder.add(s0, builder.mul(loop.index, step))
            ptr = _run_pointer(context, builder, sig.args[0], args[0], at, types.intp, vec)
            run = builder.load(ptr, align=align, typ=vec)
            builder.store(builder.fadd(builder.load(acc, typ=vec), run), acc)
        tail = builder.sub(n0, builder.mul(full, step))
        with builder.if_then(builder.icmp_signed(">", tail, tail.type(0))):
            lanes = ir.VectorType(tail.type, LANES)
            left = builder.insert_element(ir.Constant(lanes, ir.Undefined), tail, _lane_index(0))
            left = builder.shuffle_vector(left, left, _lane_index(*[0] * LANES))
            mask = builder.icmp_signed("<", ir.Constant(lanes, list(range(LANES))), left)
            arr = context.make_array(sig.args[0])(context, builder, args[0])
            at = builder.add(s0, builder.mul(full, step))
            ptr = builder.bitcast(builder.gep(arr.data, [at], inbounds=True), vec.as_pointer())
            run = _masked_load(builder, ptr, vec, mask, align)
            builder.store(builder.fadd(builder.load(acc, typ=vec), run), acc)
        total = builder.load(acc, typ=vec)
        four = builder.fadd(
            builder.shuffle_vector(total, total, _lane_index(0, 1, 2, 3)),
            builder.shuffle_vector(total, total, _lane_index(4, 5, 6, 7)),
        )
        two = builder.fadd(
            builder.shuffle_vector(four, four, _lane_index(0, 1)),
            builder.shuffle_vector(four, four, _lane_index(2, 3)),
        )
        low, high = (builder.extract_element(two, _lane_index(k)) for k in (0, 1))
        return builder.fadd(low, high)

    return src.dtype(src, s, n), codegen
