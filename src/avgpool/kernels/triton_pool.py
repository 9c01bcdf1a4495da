"""Triton kernels (GPU) for 2-D average and max pooling and their backward.

Plain tensors and ints in, like the Numba kernels: no Window, no framework conventions.
Layout comes from strides, so NCHW and channels-last memory run the same kernels (the
launcher orders the flat output index so that neighbouring lanes touch neighbouring memory).
Sums and comparisons run in float32 for float16/bfloat16/float32 input (float64 stays
float64). The average's backward is a gather (each input cell collects from the outputs whose
window covers it: no atomics, deterministic); the max's backward scatters each output's
gradient to its arg-max with float32 atomics (float64 for float64), as PyTorch's CUDA kernel.

Cost: each output reads its kernel_h * kernel_w taps (each input cell, for the backward,
visits kernel_h * kernel_w candidate outputs), from cache: one pass over memory, the best
there is for a small window. `avgpool.torch._triton_ops` sends only windows of at most
``DIRECT_TAPS`` taps here; larger ones run as per-axis passes (`avgpool.kernels.triton_passes`)
whose cost does not grow with the window. The max backward is O(outputs). Run them on a CPU
with ``TRITON_INTERPRET=1`` (the tests do, on small shapes).

``triton`` is imported with this module, which `avgpool.torch` imports only for CUDA tensors.
"""

from __future__ import annotations

import triton
import triton.language as tl

BLOCK = 256


@triton.jit
def _coords(offs, C, OH, OW, CHANNELS_INNER: tl.constexpr):
    """Flat index -> (n, c, oh, ow): c fastest for channels-last memory, ow fastest otherwise."""
    if CHANNELS_INNER:
        c = offs % C
        rest = offs // C
        ow = rest % OW
        rest = rest // OW
        oh = rest % OH
        n = rest // OH
    else:
        ow = offs % OW
        rest = offs // OW
        oh = rest % OH
        rest = rest // OH
        c = rest % C
        n = rest // C
    return n, c, oh, ow


@triton.jit
def _avg_forward(
    x_ptr, y_ptr, inv_h_ptr, inv_w_ptr, total, C, H, W, OH, OW,
    sxn, sxc, sxh, sxw, syn, syc, syh, syw,
    KH, KW, SH, SW, DH, DW, PH, PW,
    CHANNELS_INNER: tl.constexpr, ACC: tl.constexpr, BLOCK_SIZE: tl.constexpr,
):  # fmt: skip
    offs = tl.program_id(0).to(tl.int64) * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
    mask = offs < total
    n, c, oh, ow = _coords(offs, C, OH, OW, CHANNELS_INNER)
    base = x_ptr + n * sxn + c * sxc
    acc = tl.zeros([BLOCK_SIZE], ACC)
    for kh in range(0, KH):
        ih = oh * SH - PH + kh * DH
        in_h = (ih >= 0) & (ih < H)
        for kw in range(0, KW):
            iw = ow * SW - PW + kw * DW
            m = mask & in_h & (iw >= 0) & (iw < W)
            acc += tl.load(base + ih * sxh + iw * sxw, mask=m, other=0.0).to(ACC)
    inv = tl.load(inv_h_ptr + oh, mask=mask, other=0.0).to(ACC) * tl.load(
        inv_w_ptr + ow, mask=mask, other=0.0
    ).to(ACC)
    out = y_ptr + n * syn + c * syc + oh * syh + ow * syw
    tl.store(out, (acc * inv).to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _avg_backward(
    g_ptr, dx_ptr, inv_h_ptr, inv_w_ptr, total, C, H, W, OH, OW,
    sgn, sgc, sgh, sgw, sdn, sdc, sdh, sdw,
    KH, KW, SH, SW, DH, DW, PH, PW,
    CHANNELS_INNER: tl.constexpr, ACC: tl.constexpr, BLOCK_SIZE: tl.constexpr,
):  # fmt: skip
    offs = tl.program_id(0).to(tl.int64) * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
    mask = offs < total
    n, c, ih, iw = _coords(offs, C, H, W, CHANNELS_INNER)
    base = g_ptr + n * sgn + c * sgc
    acc = tl.zeros([BLOCK_SIZE], ACC)
    for kh in range(0, KH):
        th = ih + PH - kh * DH
        oh = th // SH
        ok_h = (th >= 0) & (th % SH == 0) & (oh < OH)
        inv_h = tl.load(inv_h_ptr + oh, mask=mask & ok_h, other=0.0).to(ACC)
        for kw in range(0, KW):
            tw = iw + PW - kw * DW
            ow = tw // SW
            m = mask & ok_h & (tw >= 0) & (tw % SW == 0) & (ow < OW)
            g = tl.load(base + oh * sgh + ow * sgw, mask=m, other=0.0).to(ACC)
            acc += g * inv_h * tl.load(inv_w_ptr + ow, mask=m, other=0.0).to(ACC)
    out = dx_ptr + n * sdn + c * sdc + ih * sdh + iw * sdw
    tl.store(out, acc.to(dx_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _max_forward(
    x_ptr, y_ptr, i_ptr, total, C, H, W, OH, OW,
    sxn, sxc, sxh, sxw, syn, syc, syh, syw,
    KH, KW, SH, SW, DH, DW, PH, PW,
    CHANNELS_INNER: tl.constexpr, ACC: tl.constexpr, BLOCK_SIZE: tl.constexpr,
):  # fmt: skip
    offs = tl.program_id(0).to(tl.int64) * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
    mask = offs < total
    n, c, oh, ow = _coords(offs, C, OH, OW, CHANNELS_INNER)
    base = x_ptr + n * sxn + c * sxc
    best = tl.full([BLOCK_SIZE], float("-inf"), ACC)
    index = tl.full([BLOCK_SIZE], -1, tl.int64)
    for kh in range(0, KH):
        ih = oh * SH - PH + kh * DH
        in_h = (ih >= 0) & (ih < H)
        for kw in range(0, KW):
            iw = ow * SW - PW + kw * DW
            m = mask & in_h & (iw >= 0) & (iw < W)
            v = tl.load(base + ih * sxh + iw * sxw, mask=m, other=float("-inf")).to(ACC)
            # PyTorch's rule: a strictly larger value wins (the first maximum stays), NaN always wins
            take = m & ((v > best) | (v != v) | (index < 0))
            best = tl.where(take, v, best)
            index = tl.where(take, ih * W + iw, index)
    out = n * syn + c * syc + oh * syh + ow * syw
    tl.store(y_ptr + out, best.to(y_ptr.dtype.element_ty), mask=mask)
    tl.store(i_ptr + out, index, mask=mask)


@triton.jit
def _max_backward(
    g_ptr, i_ptr, acc_ptr, total, C, OH, OW, plane,
    sgn, sgc, sgh, sgw,
    CHANNELS_INNER: tl.constexpr, ACC: tl.constexpr, BLOCK_SIZE: tl.constexpr,
):  # fmt: skip
    offs = tl.program_id(0).to(tl.int64) * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
    mask = offs < total
    n, c, oh, ow = _coords(offs, C, OH, OW, CHANNELS_INNER)
    at = n * sgn + c * sgc + oh * sgh + ow * sgw
    winner = tl.load(i_ptr + at, mask=mask, other=-1)
    m = mask & (winner >= 0)
    g = tl.load(g_ptr + at, mask=m, other=0.0).to(ACC)
    tl.atomic_add(acc_ptr + (n * C + c) * plane + winner, g, mask=m)


def _launch(
    kernel,
    total: int,
    tensors: tuple,
    sizes: tuple,
    strides: tuple,
    geometry: tuple,
    channels_inner: bool,
    acc,
):
    grid = (triton.cdiv(max(total, 1), BLOCK),)
    kernel[grid](
        *tensors, total, *sizes, *strides, *geometry,
        CHANNELS_INNER=channels_inner, ACC=acc, BLOCK_SIZE=BLOCK,
    )  # fmt: skip


def _acc(dtype_is_double: bool):
    return tl.float64 if dtype_is_double else tl.float32


def avg_forward(x, y, inv_h, inv_w, geometry: tuple, channels_inner: bool) -> None:
    """y[n, c, oh, ow] = inv_h[oh] * inv_w[ow] * (sum of the window's real cells).

    ``x`` (N, C, H, W) and ``y`` (N, C, OH, OW) in any strides; ``geometry`` is
    ``(KH, KW, SH, SW, DH, DW, PH, PW)``.
    """
    _, c, h, w = x.shape
    oh, ow = y.shape[2:]
    _launch(
        _avg_forward, y.numel(), (x, y, inv_h, inv_w), (c, h, w, oh, ow),
        (*x.stride(), *y.stride()), geometry, channels_inner, _acc(x.element_size() == 8),
    )  # fmt: skip


def avg_backward(g, dx, inv_h, inv_w, geometry: tuple, channels_inner: bool) -> None:
    """dx[n, c, ih, iw] = sum over the outputs covering (ih, iw) of g * inv_h * inv_w."""
    _, c, h, w = dx.shape
    oh, ow = g.shape[2:]
    _launch(
        _avg_backward, dx.numel(), (g, dx, inv_h, inv_w), (c, h, w, oh, ow),
        (*g.stride(), *dx.stride()), geometry, channels_inner, _acc(g.element_size() == 8),
    )  # fmt: skip


def max_forward(x, y, index, geometry: tuple, channels_inner: bool) -> None:
    """Window maxima and their flat ``ih * W + iw`` index (-1 for a window with no real cell)."""
    _, c, h, w = x.shape
    oh, ow = y.shape[2:]
    _launch(
        _max_forward, y.numel(), (x, y, index), (c, h, w, oh, ow),
        (*x.stride(), *y.stride()), geometry, channels_inner, _acc(x.element_size() == 8),
    )  # fmt: skip


def max_backward(g, index, acc) -> None:
    """acc[n, c, cell] += g for every output whose arg-max is that cell (index -1: nowhere).

    ``index`` has ``g``'s shape and strides; ``acc`` is a zeroed, contiguous (N, C, H*W)
    float32 (float64 for float64 ``g``) buffer: atomics need a 32-bit or wider float.
    """
    _, c, oh, ow = g.shape
    grid = (triton.cdiv(max(g.numel(), 1), BLOCK),)
    _max_backward[grid](
        g, index, acc, g.numel(), c, oh, ow, acc.shape[-1], *g.stride(),
        CHANNELS_INNER=_channels_inner(g), ACC=_acc(g.element_size() == 8), BLOCK_SIZE=BLOCK,
    )  # fmt: skip


def _channels_inner(t) -> bool:
    return t.shape[1] > 1 and t.stride(1) == 1
