"""Box-window averages of channels-first planes without dilation: the common case.

Arrays are ``(planes, D, H, W)`` (C == 1), ``geo`` as in `avgpool.kernels._common`.
`avg_planes` keeps running column sums down the plane and fuses the W pass with the scaling;
`avg_planes_direct` sums every output row's taps afresh, for windows that do not overlap down
the plane or sum in float32. Channels-first kernels, whose rows are short runs, prefetch the
input ahead of the rows they read (`_prefetch`); the prefix sums of four output rows run side
by side (`_prefix_chunk`), as a prefix sum is a chain of dependent adds.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from avgpool.kernels._common import CHUNK, split_runs
from avgpool.kernels._nrt import keep_alive, unowned
from avgpool.kernels._planes import (
    block_sweeps,
    fused_w,
    fused_w_stride1,
    next_row,
    plane_divisors,
    prefix_rows4,
    prefix_w,
    slide_rows,
    sum_rows,
    tap_sweeps,
)
from avgpool.kernels._prefetch import PREFETCH_BYTES, prefetch_ahead
from avgpool.kernels.registry import register

#: Channels-first planes prefetch ahead (`_prefetch`) when an output row's step down the
#: plane reads at most this many bytes: longer runs (1-D rows) gain nothing from it.
PREFETCH_MAX_STEP = 4096


@register("avg_pool", "lp_pool", "lp_pool_backward")
@njit(parallel=True, cache=True)
def avg_planes(x, out, geo, count, zero, real, empty, running, blocks):
    """Channels-first average pooling without dilation: one plane (and output depth) per item.

    The common case gets a kernel of its own with the simplest loops: a float64 row buffer
    padded by ``pad_before`` zeros on the left (and enough on the right) so that every window
    reads it without a bounds test, holding the sum over the window's depth taps and rows:
    running sums down the plane (restarted every ``CHUNK`` rows; a leaving and an entering row
    are applied in one sweep), then a W pass fused with the scaling: float32 results spell out
    windows 1-7 wide (`fused_w_stride1`, and 2-3 wide at stride 2) and difference a prefix sum
    for longer ones (four output rows at a time, `_prefix_chunk`); float64 results sum 8-24 wide
    windows in blocks of 4, longer ones by a prefix sum, others tap by tap, and divide. The
    divisor is a product of per-axis reciprocals (0 for a window with no real cell), ``empty``
    patched in where a count is 0. ``x`` (planes, D, H, W), ``out`` (planes, OD, OH, OW);
    ``geo``, ``count``, ``zero``, ``real`` as `avg_forward`. Non-finite chunks are summed again
    tap by tap. Windows that do not overlap down the plane, with float32 results, go to
    `avg_planes_direct` instead.

    The items are split into at most ``blocks`` runs (`_cpu_drivers._blocks`: a few per thread),
    each allocating its row buffers once rather than once per item.
    """
    n, D, W = x.shape[0], x.shape[1], x.shape[3]
    OD, OH, OW = out.shape[1], out.shape[2], out.shape[3]
    kd, sd, pd = geo[0, 0], geo[0, 1], geo[0, 3]
    kh, sh, ph = geo[1, 0], geo[1, 1], geo[1, 3]
    kw, sw, pw = geo[2, 0], geo[2, 1], geo[2, 3]
    width = max(pw + W, (OW - 1) * sw + kw)
    (div_d, div_h, div_w), (scale_d, scale_h, scale_w) = plane_divisors(count, zero, real, OD, OH, OW)
    any_zero_w = zero[2, :OW].any()
    items = n * OD
    runs, per = split_runs(items, blocks)
    rows4 = out.itemsize == 4 and kw > 7 and OH > 1  # float32 prefix-sum windows: `_prefix_chunk`
    for block in prange(runs):
        Rp = np.zeros(width, dtype=np.float64)
        tmp = np.zeros(OW, dtype=np.float64)
        prefix = np.zeros(width + 1, dtype=np.float64)
        R4 = np.zeros((4 if rows4 else 0, width), dtype=np.float64)
        P4 = np.zeros((4 if rows4 else 0, width + 1), dtype=np.float64)
        window = (kh, sh, ph, kw, sw, pw)
        scaling = (div_h, div_w, scale_h, scale_w, zero[1], zero[2], any_zero_w, empty)
        for item in range(block * per, min(items, (block + 1) * per)):
            o, od = item // OD, item % OD
            d0, d1 = max(od * sd - pd, 0), min(od * sd - pd + kd, D)
            depth = (d0, d1, div_d[od], scale_d[od], zero[0, od])
            for oh0 in range(0, OH, CHUNK):
                oh1 = min(OH, oh0 + CHUNK)
                run_h, run_w = running and sh < kh, running and sw < kw
                for _attempt in range(2):  # a second, tap-by-tap pass only if the first met inf/NaN
                    if rows4 and run_w:
                        ok = _prefix_chunk(
                            x, out[o, od], o, depth, oh0, oh1, (R4, P4), window, scaling, run_h
                        )
                    else:
                        ok = _plane_chunk(
                            x,
                            out[o, od],
                            o,
                            depth,
                            oh0,
                            oh1,
                            (Rp, tmp, prefix),
                            window,
                            scaling,
                            run_h,
                            run_w,
                        )
                    if ok or not (run_h or run_w):
                        break
                    run_h = run_w = False


@njit(cache=True)
def _plane_chunk(x, oplane, o, depth, oh0, oh1, buffers, window, scaling, run_h, run_w):
    """Output rows oh0..oh1 of ``oplane`` (plane o at one output depth, whose window spans the
    input depths d0..d1); False if some output came out non-finite.

    The arguments come in the groups `avg_planes` builds once per run of items:

    * ``depth``: ``(d0, d1, div_d, scale_d, zero_d)``, the output depth's input depths and
      its divisor factor, reciprocal and whether its count is 0;
    * ``buffers``: ``(Rp, tmp, prefix)``, the zero-padded row of column sums, the W sums and
      a prefix-sum row;
    * ``window``: ``(kh, sh, ph, kw, sw, pw)``, kernel, stride and padding along H and W;
    * ``scaling``: ``(div_h, div_w, scale_h, scale_w, zero_h, zero_w, any_zero_w, empty)``,
      per output row and column the divisor factors, their reciprocals (0 for a window with
      no real cell) and whether the count is 0, and the value of an output whose count is 0.
    """
    H, W = x.shape[2], x.shape[3]
    OW = oplane.shape[1]
    d0, d1, div_d, scale_d, zero_d = depth
    Rp, tmp, prefix = buffers
    kh, sh, ph, kw, sw, pw = window
    div_h, div_w, scale_h, scale_w, zero_h, zero_w, any_zero_w, empty = scaling
    R = Rp[pw : pw + W]
    bad = 0
    hint = sh * W if sh <= PREFETCH_MAX_STEP // (W * x.itemsize) else 0  # no overflow: sh may be large
    for oh in range(oh0, oh1):
        start = oh * sh - ph
        for d in range(d0, d1):
            prefetch_ahead(x[o, d, min(max(start, 0), H - 1)], 0, hint)
        if oh == oh0 or not run_h:
            sum_rows(x, o, d0, d1, max(start, 0), min(start + kh, H), R)
        else:
            slide_rows(x, o, d0, d1, R, start, sh, kh, H, W)
        orow = oplane[oh]
        sc, dh, exact = scale_h[oh] * scale_d, div_h[oh] * div_d, oplane.itemsize == 8
        # the common windows, float32 results: W sums fused with the scaling, no row buffer
        # in between (float64 results divide, as PyTorch and the oracle do: the exact quotient)
        if not exact and kw == 2 and sw == 2:
            for ow in range(OW):
                v = Rp[2 * ow] + Rp[2 * ow + 1]
                bad |= v - v != 0.0
                orow[ow] = v * (sc * scale_w[ow])
        elif not exact and kw == 3 and sw == 1:
            for ow in range(OW):
                v = Rp[ow] + Rp[ow + 1] + Rp[ow + 2]
                bad |= v - v != 0.0
                orow[ow] = v * (sc * scale_w[ow])
        elif not exact and kw == 3 and sw == 2:
            for ow in range(OW):
                v = Rp[2 * ow] + Rp[2 * ow + 1] + Rp[2 * ow + 2]
                bad |= v - v != 0.0
                orow[ow] = v * (sc * scale_w[ow])
        elif not exact and sw == 1 and (kw == 1 or 4 <= kw <= 7):
            bad |= fused_w_stride1(Rp, orow, OW, kw, sc, scale_w)
        elif not exact and kw == 2 and sw == 1:
            for ow in range(OW):
                v = Rp[ow] + Rp[ow + 1]
                bad |= v - v != 0.0
                orow[ow] = v * (sc * scale_w[ow])
        elif not exact and run_w and kw > 7:
            bad |= prefix_w(Rp, prefix, orow, OW, kw, sw, sc, scale_w)
        else:
            # in functions of their own: the same loops inlined here run slower
            if sw == 1 and 8 <= kw <= 24:
                block_sweeps(Rp, prefix, tmp, kw, OW)
            elif run_w and kw > 8:
                prefix[0] = 0.0
                for i in range(Rp.shape[0]):
                    prefix[i + 1] = prefix[i] + Rp[i]
                for ow in range(OW):
                    tmp[ow] = prefix[ow * sw + kw] - prefix[ow * sw]
            elif sw == 1:
                tap_sweeps(Rp, tmp, kw, OW)
            else:
                tmp[:] = 0.0
                for j in range(kw):
                    if sw == 2:
                        src = Rp[j : j + 2 * OW - 1]
                        for i in range(OW):
                            tmp[i] += src[2 * i]
                    else:
                        for i in range(OW):
                            tmp[i] += Rp[i * sw + j]
            if exact:
                for ow in range(OW):
                    v = tmp[ow] if sc != 0.0 and scale_w[ow] != 0.0 else 0.0
                    bad |= v - v != 0.0
                    orow[ow] = v / (dh * div_w[ow])
            else:
                for ow in range(OW):
                    v = tmp[ow]
                    bad |= v - v != 0.0
                    orow[ow] = v * (sc * scale_w[ow])
        zero_row = zero_h[oh] or zero_d
        if zero_row or any_zero_w:
            for ow in range(OW):
                if zero_row or zero_w[ow]:
                    orow[ow] = empty
    return bad == 0


@njit(cache=True)
def _prefix_chunk(x, oplane, o, depth, oh0, oh1, buffers, window, scaling, run_h):
    """`_plane_chunk` for float32 results and running W windows longer than 7 (15x15/1), four
    output rows at a time: their column sums in the four rows of ``R4`` (each row's running
    sum continues from the one before it, as in `_plane_chunk`: the same bits), then their W
    sums in one call (`prefix_rows4`). False if some output came out non-finite. Arguments as
    `_plane_chunk`, with ``buffers`` = ``(R4, P4)``: four rows of column sums and of prefix
    sums.

    Calls and array views cost as much as a row's work here, so the row above is slid down
    in this body, not copied by slice assignment nor slid by a call."""
    H, W = x.shape[2], x.shape[3]
    OW = oplane.shape[1]
    d0, d1, _, scale_d, zero_d = depth
    R4, P4 = buffers
    kh, sh, ph, kw, sw, pw = window
    _, _, scale_h, scale_w, zero_h, zero_w, any_zero_w, empty = scaling
    hint = sh * W if sh <= PREFETCH_MAX_STEP // (W * x.itemsize) else 0  # no overflow: sh may be large
    sc = np.empty(4)
    bad = 0
    for g0 in range(oh0, oh1, 4):
        g1 = min(g0 + 4, oh1)
        for oh in range(g0, g1):
            start = oh * sh - ph
            for d in range(d0, d1):
                prefetch_ahead(x[o, d, min(max(start, 0), H - 1)], 0, hint)
            R = R4[oh - g0, pw : pw + W]
            src = R4[(oh - g0 - 1) % 4, pw : pw + W]
            if oh == oh0 or not run_h:
                sum_rows(x, o, d0, d1, max(start, 0), min(start + kh, H), R)
            elif sh == 1 and d1 - d0 == 1 and 0 < start and start + kh <= H:
                # the row above, slid down: one row leaving and one entering, in one sweep
                # (the additions of `slide_rows`, in its order)
                a, b = x[o, d0, start - 1], x[o, d0, start + kh - 1]
                for i in range(W):
                    R[i] = src[i] + (np.float64(b[i]) - np.float64(a[i]))
            else:  # the row above, copied and slid
                for i in range(W):
                    R[i] = src[i]
                slide_rows(x, o, d0, d1, R, start, sh, kh, H, W)
        for oh in range(g0, g1):
            sc[oh - g0] = scale_h[oh] * scale_d
        if g1 - g0 == 4:
            bad |= prefix_rows4(R4, P4, oplane, g0, OW, kw, sw, sc, scale_w)
        else:
            for oh in range(g0, g1):
                bad |= prefix_w(R4[oh - g0], P4[0], oplane[oh], OW, kw, sw, sc[oh - g0], scale_w)
        for oh in range(g0, g1):
            zero_row = zero_h[oh] or zero_d
            if zero_row or any_zero_w:
                orow = oplane[oh]
                for ow in range(OW):
                    if zero_row or zero_w[ow]:
                        orow[ow] = empty
    return bad == 0


@register("avg_pool", "lp_pool", "lp_pool_backward")
@njit(parallel=True, cache=True)
def avg_planes_direct(x, out, geo, count, zero, real, empty, blocks, acc):
    """`avg_planes` for float32 results and a W window `fused_w` spells out
    (`_cpu_drivers.fused_w_window`), when the windows do not overlap down the plane or sum in float32:
    every output row's taps summed afresh, four input rows per sweep, then one fused W pass.

    ``acc`` is an empty array of the sums' dtype (`_cpu_drivers.sum_dtype`): float32 for windows of
    few taps, which then also scale in float32, float64 otherwise. A float32 window of two or
    four rows, 2 wide at stride 2 and reading no W padding (2x2/2, 2x2x2/2) adds its taps
    straight from the input rows in one sweep, with no row buffer.

    Nothing runs or restarts, so there is no second pass for inf and NaN. A kernel of its own,
    with its loops inlined into the item body, as short rows spend much of their time in the
    per-chunk calls of `avg_planes`; float32 sums save the float64 conversions and half the
    row buffer's traffic. Other arguments as `avg_planes`.
    """
    n, D, H, W = x.shape[0], x.shape[1], x.shape[2], x.shape[3]
    OD, OH, OW = out.shape[1], out.shape[2], out.shape[3]
    kd, sd, pd = geo[0, 0], geo[0, 1], geo[0, 3]
    kh, sh, ph = geo[1, 0], geo[1, 1], geo[1, 3]
    kw, sw, pw = geo[2, 0], geo[2, 1], geo[2, 3]
    width = max(pw + W, (OW - 1) * sw + kw)
    _, (scale_d, scale_h, scale_w) = plane_divisors(count, zero, real, OD, OH, OW)
    t = acc.dtype.type
    scale_wt = scale_w.astype(acc.dtype)
    any_zero_w = zero[2, :OW].any()
    pairs = acc.itemsize == 4 and kw == 2 and sw == 2 and pw == 0 and 2 * OW <= W
    items = n * OD
    HW, ahead = H * W, PREFETCH_BYTES // x.itemsize
    runs, per = split_runs(items, blocks)
    for block in prange(runs):
        Rp_ = np.zeros(width, dtype=acc.dtype)  # zeros left and right of R: the padding
        Rp = unowned(Rp_)  # views with no reference count (`_nrt`): no atomic per row view
        R = Rp[pw : pw + W]
        xu, ou, zu, swu = unowned(x), unowned(out), unowned(zero), unowned(scale_wt)
        for item in range(block * per, min(items, (block + 1) * per)):
            o, od = item // OD, item % OD
            d0, d1 = max(od * sd - pd, 0), min(od * sd - pd + kd, D)
            oplane, zero_d = ou[o, od], zu[0, od]
            for oh in range(OH):
                start = oh * sh - ph
                h0, h1 = max(start, 0), min(start + kh, H)
                rows = max(d1 - d0, 0) * max(h1 - h0, 0)
                orow, sc = oplane[oh], t(scale_h[oh] * scale_d[od])
                if rows > 0:  # hint the lines each depth's rows read next
                    at = h0 * W
                    if at + ahead >= HW:  # past this slice: the slice this tap reads next
                        at += (sd - 1) * HW
                    for d in range(d0, d1):
                        prefetch_ahead(xu[o, d], at, sh * W)
                if pairs and (rows == 2 or rows == 4):
                    a = xu[o, d0, h0]
                    d, h = next_row(d0, h0, h0, h1)
                    b = xu[o, d, h]
                    if rows == 2:
                        for ow in range(OW):
                            i = 2 * ow
                            v = (t(a[i]) + t(a[i + 1])) + (t(b[i]) + t(b[i + 1]))
                            orow[ow] = v * (sc * swu[ow])
                    else:
                        d, h = next_row(d, h, h0, h1)
                        c = xu[o, d, h]
                        d, h = next_row(d, h, h0, h1)
                        e = xu[o, d, h]
                        for ow in range(OW):
                            i = 2 * ow
                            v = ((t(a[i]) + t(a[i + 1])) + (t(b[i]) + t(b[i + 1]))) + (
                                (t(c[i]) + t(c[i + 1])) + (t(e[i]) + t(e[i + 1]))
                            )
                            orow[ow] = v * (sc * swu[ow])
                else:
                    sum_rows(xu, o, d0, d1, h0, h1, R)
                    fused_w(Rp, orow, OW, kw, sw, sc, swu)
                zero_row = zu[1, oh] or zero_d
                if zero_row or any_zero_w:
                    for ow in range(OW):
                        if zero_row or zu[2, ow]:
                            orow[ow] = empty
        keep_alive(Rp_)
