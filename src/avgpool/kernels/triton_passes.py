"""Triton kernels (GPU) for one 1-D window pass of a separable pooling, at a cost per output
that does not grow with the window (sums) or grows as its logarithm (max).

A box window over N spatial axes is N passes, one per axis, each a 1-D window reduction over a
dense ``(outer, length, inner)`` view: the window *sum* of a box is the sum along H of the sums
along W, its *max* the max along H of the maxima along W (with the arg-max carried along).

Sum, dilation 1: a program loads a tile of ``BLK`` consecutive positions of ``BN`` lines and
takes prefix sums that restart every ``B`` positions (``B`` the window length rounded up to a
power of two: a reshape and `tl.cumsum`). A window then lies in one block (a difference of two
prefix sums) or spans two (the rest of the first block plus a prefix of the second): four
gathers whatever ``K``. Every partial sum covers fewer than ``2K`` inputs, so a float32 window
sum is about as accurate as a direct one (no long-running-sum drift), and a tile holding an
inf or NaN counts them per window exactly, so a window without one stays finite (IEEE).

Max, dilation 1: doubling. After level ``l`` each tile cell holds the winner of the ``2**l``
cells from it on; ``floor(log2 K)`` levels, then a window is the winner of two overlapping
spans. The rule is PyTorch's in row-major order: a later value wins only when strictly larger,
a NaN always wins, a padded cell (index -1) never does; idempotent, so the overlap is harmless,
and composed over the passes from the last spatial axis to the first it picks the same cell as
one row-major loop over the window.

With dilation > 1 along an axis (or a window longer than ``MAX_SCAN_WINDOW``), that axis's
pass reads its ``K`` taps directly (``_taps`` kernels): cost grows with ``K`` there. The
average's backward is the transposed pass: input cell ``i`` collects the outputs ``o`` whose
window covers it, a contiguous run of at most ``ceil(K / S)`` outputs, summed with the same
block prefix sums in output coordinates.

Plain tensors and ints in, like the other kernels; `avgpool.torch._triton_ops` builds the
passes. ``triton`` is imported with this module.
"""

from __future__ import annotations

import triton
import triton.language as tl

# -- block sums and the max rule --------------------------------------------------------------


@triton.jit
def _block_prefix(v, BLK: tl.constexpr, B: tl.constexpr, BN: tl.constexpr):
    """Prefix sums that restart every B positions (B a power of two): (BLK, BN) -> (BLK, BN)."""
    return tl.reshape(tl.cumsum(tl.reshape(v, (BLK // B, B, BN)), axis=1), (BLK, BN))


@triton.jit
def _run_sum(v, prefix, lo, hi, B: tl.constexpr):
    """The sum of v over the runs [lo, hi] (tile positions, hi - lo < B, lo <= hi)."""
    to_hi = tl.gather(prefix, hi, 0)
    from_lo = tl.gather(v, lo, 0) - tl.gather(prefix, lo, 0)
    block_end = (lo // B) * B + (B - 1)
    rest_of_block = tl.gather(prefix, block_end, 0) + from_lo
    return tl.where(lo // B == hi // B, to_hi + from_lo, rest_of_block + to_hi)


@triton.jit
def _window_sums(v, lo, hi, BLK: tl.constexpr, B: tl.constexpr, BN: tl.constexpr):
    """IEEE sums of v over the runs [lo, hi]: a run with no inf or NaN is finite.

    Prefix differences would spread one inf or NaN to every run of its block, so the sums run
    over the finite values and, in a tile holding any non-finite value, exact integer counts
    of NaN, +inf and -inf per run decide those runs (NaN, +inf, -inf, or NaN for +inf + -inf).
    """
    bad = (v != v) | (tl.abs(v) == float("inf"))
    finite = tl.where(bad, 0.0, v)
    total = _run_sum(finite, _block_prefix(finite, BLK, B, BN), lo, hi, B)
    if tl.max(tl.max(bad.to(tl.int32), axis=1), axis=0) > 0:
        kind = tl.where(v != v, 1, tl.where(v > 0, 1 << 21, 1 << 42)).to(tl.int64)
        code = tl.where(bad, kind, 0)
        counts = _run_sum(code, _block_prefix(code, BLK, B, BN), lo, hi, B)
        nan = (counts & ((1 << 21) - 1)) > 0
        pos, neg = ((counts >> 21) & ((1 << 21) - 1)) > 0, (counts >> 42) > 0
        total = tl.where(pos, float("inf"), tl.where(neg, float("-inf"), total))
        total = tl.where(nan | (pos & neg), float("nan"), total)
    return total


@triton.jit
def _later_wins(av, ai, bv, bi):
    """Does the later candidate b replace the earlier a? (strictly larger, NaN, or a empty)."""
    return (bi >= 0) & ((bv > av) | (bv != bv) | (ai < 0))


@triton.jit
def _pick(av, ai, bv, bi):
    take = _later_wins(av, ai, bv, bi)
    return tl.where(take, bv, av), tl.where(take, bi, ai)


# -- forward passes ----------------------------------------------------------------------------


@triton.jit
def _lanes(BN: tl.constexpr, lanes, inner):
    n = tl.program_id(0).to(tl.int64) * BN + tl.arange(0, BN)
    return n < lanes, n // inner, n % inner


@triton.jit
def _tile(ptr, o0, S, P, K, L, lane_off, lane_ok, sl, BLK: tl.constexpr, BO: tl.constexpr):
    """Tile positions 0..BLK-1 from the first window's start, their input position and mask."""
    r = tl.arange(0, BLK)
    pos = o0 * S - P + r
    real = (pos >= 0) & (pos < L) & (r < (BO - 1) * S + K)
    mask = real[:, None] & lane_ok[None, :]
    return pos, mask, ptr + pos[:, None] * sl + lane_off[None, :]


@triton.jit
def _sum_scan(
    x_ptr, y_ptr, scale_ptr, lanes, inner, L, OL,
    sxo, sxl, sxi, syo, syl, syi, K, S, P,
    HAS_SCALE: tl.constexpr, ACC: tl.constexpr,
    BLK: tl.constexpr, B: tl.constexpr, BO: tl.constexpr, BN: tl.constexpr,
):  # fmt: skip
    """y[o] = scale[o] * sum of x over [o*S - P, o*S - P + K) (padding: 0), per line."""
    lane_ok, outer, inn = _lanes(BN, lanes, inner)
    o0 = tl.program_id(1) * BO
    xoff = outer * sxo + inn * sxi
    _, m, ptrs = _tile(x_ptr, o0, S, P, K, L, xoff, lane_ok, sxl, BLK, BO)
    v = tl.load(ptrs, mask=m, other=0.0).to(ACC)
    j = tl.arange(0, BO)
    start = (j * S)[:, None] + tl.zeros([BO, BN], tl.int32)
    total = _window_sums(v, start, start + K - 1, BLK, B, BN)
    o = o0 + j
    o_ok = o < OL
    if HAS_SCALE:
        total = total * tl.load(scale_ptr + o, mask=o_ok, other=0.0).to(ACC)[:, None]
    out = y_ptr + o[:, None] * syl + (outer * syo + inn * syi)[None, :]
    tl.store(out, total.to(y_ptr.dtype.element_ty), mask=o_ok[:, None] & lane_ok[None, :])


@triton.jit
def _carried(pos, mask, i_ptr, ioff, sil, pos_mult, HAS_INDEX: tl.constexpr):
    """The flat index of each tile cell: pos * pos_mult + the index carried from the last pass."""
    index = pos[:, None].to(tl.int64) * pos_mult
    if HAS_INDEX:
        before = tl.load(i_ptr + pos[:, None] * sil + ioff[None, :], mask=mask, other=-1)
        index = tl.where(before >= 0, index + before, -1)
    return tl.where(mask, index, -1)


@triton.jit
def _max_scan(
    x_ptr, i_ptr, y_ptr, j_ptr, lanes, inner, L, OL,
    sxo, sxl, sxi, syo, syl, syi, K, S, P, pos_mult, LEVELS,
    HAS_INDEX: tl.constexpr, ACC: tl.constexpr,
    BLK: tl.constexpr, BO: tl.constexpr, BN: tl.constexpr,
):  # fmt: skip
    """y[o], j[o] = max of x over the window and its flat index (``i_ptr``: the index carried
    from the previous pass, in x's strides); a window with no real cell gives -inf and -1.

    Doubling: after level l, each tile cell holds the winner of the 2**l cells from it on; a
    window of K cells is the winner of two such spans (W = 2**LEVELS <= K) starting at its
    first cell and at its last W cells, which overlap: the max rule is idempotent."""
    lane_ok, outer, inn = _lanes(BN, lanes, inner)
    o0 = tl.program_id(1) * BO
    xoff = outer * sxo + inn * sxi
    pos, m, ptrs = _tile(x_ptr, o0, S, P, K, L, xoff, lane_ok, sxl, BLK, BO)
    best = tl.load(ptrs, mask=m, other=float("-inf")).to(ACC)
    index = _carried(pos, m, i_ptr, xoff, sxl, pos_mult, HAS_INDEX)
    at = tl.arange(0, BLK)[:, None] + tl.zeros([BLK, BN], tl.int32)
    span = 1
    for _ in range(LEVELS):
        ahead = tl.minimum(at + span, BLK - 1)
        best, index = _pick(best, index, tl.gather(best, ahead, 0), tl.gather(index, ahead, 0))
        span *= 2
    j = tl.arange(0, BO)
    first = (j * S)[:, None] + tl.zeros([BO, BN], tl.int32)
    last = first + K - span
    head = tl.gather(best, first, 0), tl.gather(index, first, 0)
    best, index = _pick(*head, tl.gather(best, last, 0), tl.gather(index, last, 0))
    o = o0 + j
    ok = (o < OL)[:, None] & lane_ok[None, :]
    out = o[:, None] * syl + (outer * syo + inn * syi)[None, :]
    tl.store(y_ptr + out, best.to(y_ptr.dtype.element_ty), mask=ok)
    tl.store(j_ptr + out, index, mask=ok)


@triton.jit
def _taps(
    x_ptr, i_ptr, y_ptr, j_ptr, scale_ptr, lanes, inner, L, OL,
    sxo, sxl, sxi, syo, syl, syi, K, S, P, D, pos_mult,
    IS_MAX: tl.constexpr, HAS_INDEX: tl.constexpr, HAS_SCALE: tl.constexpr, ACC: tl.constexpr,
    BO: tl.constexpr, BN: tl.constexpr,
):  # fmt: skip
    """The same pass tap by tap, for any dilation ``D`` (cost grows with ``K``)."""
    lane_ok, outer, inn = _lanes(BN, lanes, inner)
    o = tl.program_id(1) * BO + tl.arange(0, BO)
    o_ok = o < OL
    xoff = outer * sxo + inn * sxi
    if IS_MAX:
        acc = tl.full([BO, BN], float("-inf"), ACC)
    else:
        acc = tl.zeros([BO, BN], ACC)
    index = tl.full([BO, BN], -1, tl.int64)
    for k in range(0, K):
        pos = o * S - P + k * D
        m = ((pos >= 0) & (pos < L) & o_ok)[:, None] & lane_ok[None, :]
        if IS_MAX:
            v = tl.load(x_ptr + pos[:, None] * sxl + xoff[None, :], mask=m, other=float("-inf")).to(ACC)
            cand = _carried(pos, m, i_ptr, xoff, sxl, pos_mult, HAS_INDEX)
            take = _later_wins(acc, index, v, cand)
            acc, index = tl.where(take, v, acc), tl.where(take, cand, index)
        else:
            acc += tl.load(x_ptr + pos[:, None] * sxl + xoff[None, :], mask=m, other=0.0).to(ACC)
    if HAS_SCALE:
        acc = acc * tl.load(scale_ptr + o, mask=o_ok, other=0.0).to(ACC)[:, None]
    ok = o_ok[:, None] & lane_ok[None, :]
    at = o[:, None] * syl + (outer * syo + inn * syi)[None, :]
    tl.store(y_ptr + at, acc.to(y_ptr.dtype.element_ty), mask=ok)
    if IS_MAX:
        tl.store(j_ptr + at, index, mask=ok)


# -- the average's backward: the transposed pass -------------------------------------------------


@triton.jit
def _first_cover(i, K, S, P):
    """The first output whose window [o*S - P, o*S - P + K) reaches cell i (>= 0)."""
    t = i + P - K + 1
    return tl.where(t <= 0, 0, (tl.maximum(t, 0) + S - 1) // S)


@triton.jit
def _sum_scan_transposed(
    g_ptr, dx_ptr, scale_ptr, lanes, inner, L, OL,
    sgo, sgl, sgi, sdo, sdl, sdi, K, S, P,
    HAS_SCALE: tl.constexpr, ACC: tl.constexpr,
    BLK: tl.constexpr, B: tl.constexpr, BI: tl.constexpr, BN: tl.constexpr,
):  # fmt: skip
    """dx[i] = sum of scale[o] * g[o] over the outputs o whose window covers cell i.

    Those outputs are a run of at most ``ceil(K / S) <= B`` consecutive ones: block prefix
    sums in output coordinates, as in the forward pass."""
    lane_ok, outer, inn = _lanes(BN, lanes, inner)
    i0 = tl.program_id(1) * BI
    first = _first_cover(i0, K, S, P)
    goff = outer * sgo + inn * sgi
    o = first + tl.arange(0, BLK)
    m = (o < OL)[:, None] & lane_ok[None, :]
    v = tl.load(g_ptr + o[:, None] * sgl + goff[None, :], mask=m, other=0.0).to(ACC)
    if HAS_SCALE:
        v = v * tl.load(scale_ptr + o, mask=o < OL, other=0.0).to(ACC)[:, None]

    i = i0 + tl.arange(0, BI)
    lo = _first_cover(i, K, S, P) - first
    hi = tl.minimum((i + P) // S, OL - 1) - first
    some = (lo <= hi)[:, None] & lane_ok[None, :]
    zero = tl.zeros([BI, BN], tl.int32)
    qlo = tl.minimum(tl.maximum(lo, 0), BLK - 1)[:, None] + zero
    qhi = tl.minimum(tl.maximum(hi[:, None], qlo), BLK - 1)
    total = tl.where(some, _window_sums(v, qlo, qhi, BLK, B, BN), 0.0)
    out = dx_ptr + i[:, None] * sdl + (outer * sdo + inn * sdi)[None, :]
    tl.store(out, total.to(dx_ptr.dtype.element_ty), mask=(i < L)[:, None] & lane_ok[None, :])


@triton.jit
def _taps_transposed(
    g_ptr, dx_ptr, scale_ptr, lanes, inner, L, OL,
    sgo, sgl, sgi, sdo, sdl, sdi, K, S, P, D,
    HAS_SCALE: tl.constexpr, ACC: tl.constexpr, BI: tl.constexpr, BN: tl.constexpr,
):  # fmt: skip
    """The transposed pass tap by tap, for any dilation (cost grows with ``K``)."""
    lane_ok, outer, inn = _lanes(BN, lanes, inner)
    i = tl.program_id(1) * BI + tl.arange(0, BI)
    goff = outer * sgo + inn * sgi
    acc = tl.zeros([BI, BN], ACC)
    for k in range(0, K):
        t = i + P - k * D
        tt = tl.maximum(t, 0)
        o = tt // S
        ok = (t >= 0) & (tt % S == 0) & (o < OL) & (i < L)
        m = ok[:, None] & lane_ok[None, :]
        g = tl.load(g_ptr + o[:, None] * sgl + goff[None, :], mask=m, other=0.0).to(ACC)
        if HAS_SCALE:
            g = g * tl.load(scale_ptr + o, mask=ok, other=0.0).to(ACC)[:, None]
        acc += g
    out = dx_ptr + i[:, None] * sdl + (outer * sdo + inn * sdi)[None, :]
    tl.store(out, acc.to(dx_ptr.dtype.element_ty), mask=(i < L)[:, None] & lane_ok[None, :])


# -- launchers ---------------------------------------------------------------------------------

TILE = 4096  # elements of one program's tile (positions x lines)
MAX_SCAN_WINDOW = 1024  # longer windows (rare: a global pool is its own op) read tap by tap


def _pow2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


def _lane_block(blk: int, lanes: int) -> int:
    return max(1, min(_pow2(lanes), TILE // blk))


def _acc(t):
    return tl.float64 if t.element_size() == 8 else tl.float32


def _views(x, y):
    """(lanes, inner, length, out length) and the (outer, length, inner) strides of x and y."""
    outer, length, inner = x.shape
    return (outer * inner, inner, length, y.shape[1]), (*x.stride(), *y.stride())


def _forward_tiles(k: int, s: int, out_len: int) -> tuple[int, int]:
    """(BLK, BO): BO outputs (a power of two) whose windows fit in BLK positions."""
    bo = min(32 if k <= 64 else 8, _pow2(out_len))
    return _pow2((bo - 1) * s + k), bo


def window_pass(x, y, *, k: int, s: int, p: int, d: int = 1, scale=None, op: str = "sum",
                index_in=None, index_out=None, pos_mult: int = 1) -> None:  # fmt: skip
    """One 1-D window pass from ``x`` (outer, L, inner) into ``y`` (outer, OL, inner).

    ``op="sum"`` (times ``scale[o]`` when given) or ``"max"`` (``index_out`` gets the flat
    index ``pos * pos_mult + index_in[pos]``; -1 for a window with no real cell).
    """
    (lanes, inner, length, out_len), strides = _views(x, y)
    if lanes == 0 or out_len == 0:
        return
    geometry = (k, s, p)
    if d == 1 and k <= MAX_SCAN_WINDOW:
        blk, bo = _forward_tiles(k, s, out_len)
        bn = _lane_block(blk, lanes)
        grid = (triton.cdiv(lanes, bn), triton.cdiv(out_len, bo))
        if op == "sum":
            _sum_scan[grid](
                x, y, scale, lanes, inner, length, out_len, *strides, *geometry,
                HAS_SCALE=scale is not None, ACC=_acc(x), BLK=blk, B=_pow2(k), BO=bo, BN=bn,
            )  # fmt: skip
        else:
            _max_scan[grid](
                x, index_in, y, index_out, lanes, inner, length, out_len, *strides, *geometry,
                pos_mult, k.bit_length() - 1,
                HAS_INDEX=index_in is not None, ACC=_acc(x), BLK=blk, BO=bo, BN=bn,
            )  # fmt: skip
        return
    bo = min(32, _pow2(out_len))
    bn = _lane_block(bo, lanes)
    grid = (triton.cdiv(lanes, bn), triton.cdiv(out_len, bo))
    _taps[grid](
        x, index_in, y, index_out, scale, lanes, inner, length, out_len, *strides, *geometry, d, pos_mult,
        IS_MAX=op == "max", HAS_INDEX=index_in is not None, HAS_SCALE=scale is not None,
        ACC=_acc(x), BO=bo, BN=bn,
    )  # fmt: skip


def window_pass_transposed(g, dx, *, k: int, s: int, p: int, d: int = 1, scale=None) -> None:
    """The transpose of a sum pass: from ``g`` (outer, OL, inner) into ``dx`` (outer, L, inner)."""
    (lanes, inner, out_len, length), strides = _views(g, dx)
    if lanes == 0 or length == 0:
        return
    bi = min(32, _pow2(length))
    if d == 1 and k <= MAX_SCAN_WINDOW:
        blk = _pow2((bi - 1 + k - 1) // s + 2)
        bn = _lane_block(blk, lanes)
        grid = (triton.cdiv(lanes, bn), triton.cdiv(length, bi))
        _sum_scan_transposed[grid](
            g, dx, scale, lanes, inner, length, out_len, *strides, k, s, p,
            HAS_SCALE=scale is not None, ACC=_acc(g), BLK=blk, B=_pow2(-(-k // s)), BI=bi, BN=bn,
        )  # fmt: skip
        return
    bn = _lane_block(bi, lanes)
    grid = (triton.cdiv(lanes, bn), triton.cdiv(length, bi))
    _taps_transposed[grid](
        g, dx, scale, lanes, inner, length, out_len, *strides, k, s, p, d,
        HAS_SCALE=scale is not None, ACC=_acc(g), BI=bi, BN=bn,
    )  # fmt: skip
