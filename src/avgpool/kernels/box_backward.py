"""The backward of box-window averages: the transpose of the forward kernels.

Each input cell receives the sum, over the windows that cover it, of the output gradient
times the reciprocal divisors, with running sums over the covering outputs (restarted every
``CHUNK`` rows, as the forward). Windows that do not overlap need no running sum: each cell
takes one product (`avg_backward_disjoint`, `avg_backward_planes_disjoint`); nor do
channels-last 3x3 windows at stride 1, whose cells gather their few covering gradients at
once (`avg_backward_3x3`). Arrays and ``geo`` as in `avgpool.kernels._common`.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from avgpool.kernels._common import CHUNK
from avgpool.kernels._nrt import keep_alive, unowned
from avgpool.kernels.registry import register


@register("avg_pool_backward", "lp_pool_backward")
@njit(parallel=True, cache=True)
def avg_backward(g, grad, C, geo, inv_d, inv_h, inv_w, cover_h, cover_w):
    """grad = sum over the windows covering each input cell of g * inv_d * inv_h * inv_w.

    ``inv_*`` are per-axis reciprocal divisors (the divisor is separable; the driver folds a
    divisor override into them). ``cover_h``/``cover_w`` (n, 2) hold, for each input row and
    column, the first and last output whose undilated window covers it (last < first: none).
    Parallel over (outer, input depth, chunks of input rows); a chunk with non-finite results
    is summed again output by output, as in `avg_forward`.
    """
    n_outer, D, H = grad.shape[0], grad.shape[1], grad.shape[2]
    run_h = geo[1, 2] == 1
    run_w = geo[2, 2] == 1
    n_chunks = (H + CHUNK - 1) // CHUNK
    for item in prange(n_outer * D * n_chunks):
        o = item // (D * n_chunks)
        idp = (item // n_chunks) % D
        ih0 = (item % n_chunks) * CHUNK
        args = (g, grad, C, geo, inv_d, inv_h, inv_w, cover_h, cover_w, o, idp, ih0)
        if not _avg_backward_chunk(*args, run_h, run_w) and (run_h or run_w):
            _avg_backward_chunk(*args, False, False)


@njit(cache=True)
def _avg_backward_chunk(g, grad, C, geo, inv_d, inv_h, inv_w, cover_h, cover_w, o, idp, ih0, run_h, run_w):
    H, W = grad.shape[2], grad.shape[3] // C
    OH, OWC = g.shape[2], g.shape[3]
    OW = OWC // C
    kh, sh, dh, ph = geo[1, 0], geo[1, 1], geo[1, 2], geo[1, 3]
    T = np.zeros(OWC, dtype=np.float64)
    acc = np.zeros(C, dtype=np.float64)
    check = np.zeros(C, dtype=np.float64)
    finite = True
    lo_cur, hi_cur = 0, -1
    for ih in range(ih0, min(H, ih0 + CHUNK)):
        # T = sum over the output rows whose windows cover input row ih
        if run_h:
            lo, hi = cover_h[ih, 0], cover_h[ih, 1]
            if ih == ih0 or lo > hi_cur:
                T[:] = 0.0
                lo_cur, hi_cur = lo, lo - 1
            while lo_cur < lo:
                _add_grad_row(g, T, o, idp, lo_cur, geo, inv_d, inv_h, -1.0)
                lo_cur += 1
            while hi_cur < hi:
                hi_cur += 1
                _add_grad_row(g, T, o, idp, hi_cur, geo, inv_d, inv_h, 1.0)
        else:
            T[:] = 0.0
            for oh in range(OH):
                if _covers(ih, oh, kh, sh, dh, ph):
                    _add_grad_row(g, T, o, idp, oh, geo, inv_d, inv_h, 1.0)
        grow = grad[o, idp, ih]
        if C == 1:
            finite &= _spread_scalar(T, grow, W, OW, geo, inv_w, cover_w, run_w)
            continue
        wlo_cur, whi_cur = 0, -1
        for iw in range(W):
            if run_w:
                wlo, whi = cover_w[iw, 0], cover_w[iw, 1]
                if iw == 0 or wlo > whi_cur:
                    acc[:] = 0.0
                    wlo_cur, whi_cur = wlo, wlo - 1
                # through slices, indexed by the loop's own counter: an index such as
                # ``wlo_cur * C + c`` may be negative for all Numba knows, so each read takes
                # a wraparound select and the loop compiles to gathers
                while wlo_cur < wlo:
                    cells, f = T[wlo_cur * C : wlo_cur * C + C], inv_w[wlo_cur]
                    for c in range(C):
                        acc[c] -= cells[c] * f
                    wlo_cur += 1
                while whi_cur < whi:
                    whi_cur += 1
                    cells, f = T[whi_cur * C : whi_cur * C + C], inv_w[whi_cur]
                    for c in range(C):
                        acc[c] += cells[c] * f
            else:
                acc[:] = 0.0
                for ow in range(OW):
                    if _covers(iw, ow, geo[2, 0], geo[2, 1], geo[2, 2], geo[2, 3]):
                        cells, f = T[ow * C : ow * C + C], inv_w[ow]
                        for c in range(C):
                            acc[c] += cells[c] * f
            cell = grow[iw * C : iw * C + C]
            for c in range(C):
                check[c] += acc[c] * 0.0
                cell[c] = acc[c]
    return finite and np.sum(check) == 0.0


@register("avg_pool_backward")
@njit(parallel=True, cache=True)
def avg_backward_3x3(g, grad, C, inv_d, inv_h, inv_w, cover_h, cover_w):
    """`avg_backward` for channels-last 3x3 windows at stride 1, one deep: each input cell
    gathers the gradients of the (at most 3x3) outputs whose windows cover it, each times its
    reciprocal divisor, in one float64 sum per channel from 0.0 (as the running sums start):
    the covering outputs in row-major order, a place without one (at the edges) adding +0.0
    from a row of zeros. No running sums, so no residue of their subtractions where the sum is
    0, and nothing to sum again where one is not finite. Parallel over (outer, input row).
    """
    n_outer, H = grad.shape[0], grad.shape[2]
    W = grad.shape[3] // C
    zeros_ = np.zeros(C, g.dtype)
    for item in prange(n_outer * H):
        o, ih = item // H, item % H
        gu, zero = unowned(g), unowned(zeros_)
        grow = unowned(grad)[o, 0, ih]
        h0, nh = cover_h[ih, 0], cover_h[ih, 1] - cover_h[ih, 0] + 1
        # the covering output rows h0 .. h0 + nh - 1 (a row of zeros in place of the others)
        r0 = gu[o, 0, h0] if nh > 0 else zero
        r1 = gu[o, 0, h0 + 1] if nh > 1 else zero
        r2 = gu[o, 0, h0 + 2] if nh > 2 else zero
        f0 = inv_d[0] * inv_h[h0] if nh > 0 else 0.0
        f1 = inv_d[0] * inv_h[h0 + 1] if nh > 1 else 0.0
        f2 = inv_d[0] * inv_h[h0 + 2] if nh > 2 else 0.0
        for iw in range(W):
            w0, nw = cover_w[iw, 0], cover_w[iw, 1] - cover_w[iw, 0] + 1
            e0 = inv_w[w0] if nw > 0 else 0.0
            e1 = inv_w[w0 + 1] if nw > 1 else 0.0
            e2 = inv_w[w0 + 2] if nw > 2 else 0.0
            p0, p1, p2 = _runs3(r0, w0, nw, nh > 0, C, zero)
            q0, q1, q2 = _runs3(r1, w0, nw, nh > 1, C, zero)
            u0, u1, u2 = _runs3(r2, w0, nw, nh > 2, C, zero)
            k00, k01, k02 = f0 * e0, f0 * e1, f0 * e2
            k10, k11, k12 = f1 * e0, f1 * e1, f1 * e2
            k20, k21, k22 = f2 * e0, f2 * e1, f2 * e2
            cell = grow[iw * C : iw * C + C]
            for ch in range(C):
                v = 0.0 + np.float64(p0[ch]) * k00  # from 0.0: a sum of -0.0s is +0.0
                v = v + np.float64(p1[ch]) * k01 + np.float64(p2[ch]) * k02
                v = v + np.float64(q0[ch]) * k10 + np.float64(q1[ch]) * k11 + np.float64(q2[ch]) * k12
                cell[ch] = v + np.float64(u0[ch]) * k20 + np.float64(u1[ch]) * k21 + np.float64(u2[ch]) * k22
    keep_alive(zeros_)


@njit(cache=True, inline="always")
def _runs3(row, w0, nw, real, C, zero):
    """The C-runs of output columns ``w0``, ``w0 + 1``, ``w0 + 2`` of a covering ``row``, the
    row of zeros in place of those past the ``nw`` covering ones, or all three for a row that
    is not ``real``."""
    a = w0 * C
    r0 = row[a : a + C] if real and nw > 0 else zero
    r1 = row[a + C : a + 2 * C] if real and nw > 1 else zero
    r2 = row[a + 2 * C : a + 3 * C] if real and nw > 2 else zero
    return r0, r1, r2


@njit(cache=True)
def _covers(i, o, k, s, d, p):
    """Whether output o's window (with dilation) has a tap on input cell i."""
    off = i - (o * s - p)
    return off >= 0 and off % d == 0 and off // d < k


@njit(cache=True)
def _add_grad_row(g, T, o, idp, oh, geo, inv_d, inv_h, sign):
    """T += sign * sum over output depths covering input depth idp of g[o, od, oh] * inv."""
    OD = g.shape[1]
    OWC = g.shape[3]
    kd, sd, dd, pd = geo[0, 0], geo[0, 1], geo[0, 2], geo[0, 3]
    for od in range(OD):
        if _covers(idp, od, kd, sd, dd, pd):
            f = sign * inv_d[od] * inv_h[oh]
            row = g[o, od, oh]
            for i in range(OWC):
                T[i] += row[i] * f


@njit(cache=True)
def _spread_scalar(T, grow, W, OW, geo, inv_w, cover_w, run_w):
    """The transposed W pass for one channel: scalar running sum over the covering outputs."""
    check = 0.0
    acc = 0.0
    wlo_cur, whi_cur = 0, -1
    for iw in range(W):
        if run_w:
            wlo, whi = cover_w[iw, 0], cover_w[iw, 1]
            if iw == 0 or wlo > whi_cur:
                acc = 0.0
                wlo_cur, whi_cur = wlo, wlo - 1
            while wlo_cur < wlo:
                acc -= T[wlo_cur] * inv_w[wlo_cur]
                wlo_cur += 1
            while whi_cur < whi:
                whi_cur += 1
                acc += T[whi_cur] * inv_w[whi_cur]
        else:
            acc = 0.0
            for ow in range(OW):
                if _covers(iw, ow, geo[2, 0], geo[2, 1], geo[2, 2], geo[2, 3]):
                    acc += T[ow] * inv_w[ow]
        check += acc * 0.0
        grow[iw] = acc
    return check == 0.0


@register("avg_pool_backward", "lp_pool_backward", "global_avg_pool_backward")
@njit(parallel=True, cache=True)
def avg_backward_disjoint(g, grad, C, geo, inv_d, inv_h, inv_w):
    """`avg_backward` for undilated windows that do not overlap (kernel <= stride on every
    axis), any layout: each input cell takes ``g * inv_d * inv_h * inv_w`` of the one output
    covering it (``(i + pad) // stride``, if its window reaches ``i``), or 0.

    One float64 product per output cell and row, a C-vector written per input cell: no running
    sums over the covering outputs, so no chunks and no second pass for inf and NaN.
    Parallel over (outer,
    input depth, input row); arguments as `avg_backward` (no cover tables).
    """
    n_outer, D, H = grad.shape[0], grad.shape[1], grad.shape[2]
    W = grad.shape[3] // C
    OD, OH, OW = g.shape[1], g.shape[2], g.shape[3] // C
    kd, sd, pd = geo[0, 0], geo[0, 1], geo[0, 3]
    kh, sh, ph = geo[1, 0], geo[1, 1], geo[1, 3]
    kw, sw, pw = geo[2, 0], geo[2, 1], geo[2, 3]
    for item in prange(n_outer * D * H):
        o = item // (D * H)
        idp = (item // H) % D
        ih = item % H
        grow = grad[o, idp, ih]
        od, oh = (idp + pd) // sd, (ih + ph) // sh
        if od >= OD or idp + pd - od * sd >= kd or oh >= OH or ih + ph - oh * sh >= kh:
            grow[:] = 0.0
            continue
        f, grow_g = inv_d[od] * inv_h[oh], g[o, od, oh]
        for iw in range(W):
            ow = (iw + pw) // sw
            cell = grow[iw * C : iw * C + C]
            if ow >= OW or iw + pw - ow * sw >= kw:
                cell[:] = 0.0
                continue
            s, src = f * inv_w[ow], grow_g[ow * C : ow * C + C]
            for c in range(C):
                cell[c] = src[c] * s


@register("avg_pool_backward", "lp_pool_backward")
@njit(parallel=True, cache=True)
def avg_backward_planes(g, grad, geo, inv_h, inv_w, cover_h, running):
    """The transpose of `avg_planes` (channels-first 1-D/2-D, no dilation): one plane per item.

    For each input row, a float64 row ``T`` holds the sum over the output rows whose windows
    cover it of ``g * inv_h`` (a running sum down the plane, restarted every ``CHUNK`` rows);
    each column tap then adds ``T * inv_w`` into a zero-padded row at a literal stride, and the
    real part of that row is the gradient. Non-finite chunks are summed again row by row.
    """
    n, H, W = grad.shape
    OW = g.shape[2]
    kw, sw, pw = geo[2, 0], geo[2, 1], geo[2, 3]
    width = max(pw + W, (OW - 1) * sw + kw)
    for o in prange(n):
        T = np.zeros(OW, dtype=np.float64)
        spread = np.zeros(width, dtype=np.float64)
        for ih0 in range(0, H, CHUNK):
            ih1 = min(H, ih0 + CHUNK)
            run = running
            for _attempt in range(2):  # a second, row-by-row pass only if the first met inf/NaN
                ok = _backward_plane_chunk(
                    g, grad, o, ih0, ih1, T, spread, inv_h, inv_w, cover_h, kw, sw, pw, run
                )
                if ok or not run:
                    break
                run = False


@njit(cache=True)
def _backward_plane_chunk(g, grad, o, ih0, ih1, T, spread, inv_h, inv_w, cover_h, kw, sw, pw, run):
    """Input rows ih0..ih1 of plane o; False if some gradient came out non-finite."""
    W = grad.shape[2]
    OW = g.shape[2]
    lo_cur, hi_cur = 0, -1
    bad = 0
    for ih in range(ih0, ih1):
        lo, hi = cover_h[ih, 0], cover_h[ih, 1]
        if not run or ih == ih0 or lo > hi_cur:
            T[:] = 0.0
            lo_cur, hi_cur = lo, lo - 1
        while lo_cur < lo:
            f = inv_h[lo_cur]
            row = g[o, lo_cur]
            for i in range(OW):
                T[i] -= row[i] * f
            lo_cur += 1
        while hi_cur < hi:
            hi_cur += 1
            f = inv_h[hi_cur]
            row = g[o, hi_cur]
            for i in range(OW):
                T[i] += row[i] * f
        spread[:] = 0.0
        for j in range(kw):
            # literal strides: LLVM vectorises the scattered adds only with a known stride
            if sw == 1:
                dst = spread[j : j + OW]
                for i in range(OW):
                    dst[i] += T[i] * inv_w[i]
            elif sw == 2:
                dst = spread[j : j + 2 * OW - 1]
                for i in range(OW):
                    dst[2 * i] += T[i] * inv_w[i]
            else:
                for i in range(OW):
                    spread[i * sw + j] += T[i] * inv_w[i]
        grow = grad[o, ih]
        src = spread[pw : pw + W]
        for i in range(W):
            v = src[i]
            bad |= v - v != 0.0
            grow[i] = v
    return bad == 0


@register("avg_pool_backward", "lp_pool_backward")
@njit(parallel=True, cache=True)
def avg_backward_planes_disjoint(g, grad, geo, inv_h, inv_w, cover_h):
    """`avg_backward_planes` for windows that do not overlap (kernel <= stride along H and W):
    each input cell takes ``g * inv_h * inv_w`` of the one output covering it, or 0.

    No running sum, no row of sums: one product per output (the same float64 product as
    `avg_backward_planes`, so the same bits), written straight into the rows it covers; a
    2-wide window at stride 2 with no W padding writes each pair of cells in one sweep.
    """
    n, H, W = grad.shape
    OW = g.shape[2]
    kw, sw, pw = geo[2, 0], geo[2, 1], geo[2, 3]
    width = max(pw + W, (OW - 1) * sw + kw)
    pairs = kw == 2 and sw == 2 and pw == 0 and 2 * OW <= W
    for o in prange(n):
        spread = np.zeros(width, dtype=grad.dtype)  # cells no window covers stay 0
        for ih in range(H):
            lo, hi = cover_h[ih, 0], cover_h[ih, 1]
            grow = grad[o, ih]
            if lo > hi:
                grow[:] = 0.0
                continue
            f, grow_g = inv_h[lo], g[o, lo]
            if pairs:
                for ow in range(OW):
                    v = (grow_g[ow] * f) * inv_w[ow]
                    grow[2 * ow] = v
                    grow[2 * ow + 1] = v
                grow[2 * OW :] = 0.0
            else:
                for ow in range(OW):
                    v = (grow_g[ow] * f) * inv_w[ow]
                    for j in range(kw):
                        spread[ow * sw + j] = v
                grow[:] = spread[pw : pw + W]


@register("avg_pool_backward", "global_avg_pool_backward", "adaptive_avg_pool_backward")
@njit(parallel=True, cache=True)
def global_spread(g, grad, inv_h, inv_w):
    """A global window's backward: grad (outer, S, C) gets ``0 + (0 + g * inv_h) * inv_w`` of
    its plane's or channel's g (outer, 1, C) in every cell.

    The same float64 operations, in the same order, as `avg_backward_planes` makes for a window
    that covers the whole plane (its running row sum ``T = 0 + g * inv_h``, then
    ``0 + T * inv_w`` for each cell), so the same bits; that kernel would spend a slice per
    column here. ``inv_h`` is the product of the reciprocals of every axis but the last (and
    of a divisor override), ``inv_w`` the last's.
    """
    n_outer, S, C = grad.shape
    for o in prange(n_outer):
        if C == 1:
            v = 0.0 + (0.0 + np.float64(g[o, 0, 0]) * inv_h) * inv_w
            for s in range(S):
                grad[o, s, 0] = v
        else:
            row = grad[o, 0]
            for c in range(C):
                row[c] = 0.0 + (0.0 + np.float64(g[o, 0, c]) * inv_h) * inv_w
            for s in range(1, S):
                grad[o, s] = row
