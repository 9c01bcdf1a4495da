"""Power-average (Lp) pooling as the custom op ``avgpool::lp_pool``; its backward is written
with the average ops, so it differentiates again."""

import functools
import math

import numpy as np
import torch
from torch import Tensor

from avgpool import _args
from avgpool._backends import NUMPY
from avgpool.torch._arrays import as_torch_gives, to_numpy
from avgpool.torch._library._args import (
    check_rank,
    new_empty,
    numpy_window,
    spatial,
    torch_layout,
    window_of,
    with_spatial,
)
from avgpool.torch._library._eager import FLOATS, Ready, call, plain_array
from avgpool.window import Window


class LpReady(Ready):
    """``lp_pool`` on one norm and geometry, ready (see `Ready`). The norm and the convention
    are checked on the first call, after the input, in `avgpool.ops.lp_pool`'s order."""

    __slots__ = ("checked", "nhwc", "window")
    name = "lp_pool"

    def __init__(self, norm_type, kernel, stride, padding, mode, dilation, ceil, cl, convention) -> None:
        self.args = (norm_type, kernel, stride, padding, mode, dilation, ceil, cl, convention)
        self.window = window_of(kernel, stride, padding, mode, dilation, ceil, True, None, cl, "torch")
        self.nhwc = numpy_window(self.window, True)
        self.checked: tuple | None = None

    def _run(self, array: np.ndarray, window: Window) -> np.ndarray:
        if self.checked is None:
            self.checked = (_args.norm_type(self.args[0]), _args.lp_convention(self.args[8], window))
        return NUMPY.lp_pool(array, self.checked[0], window, self.checked[1])

    @property
    def ndim(self) -> int:
        return self.window.ndim

    def plan(self, x: Tensor):
        array = plain_array(x, FLOATS)
        if array is None:
            return None
        run, w = self._run, self.window
        return lambda a: torch.from_numpy(run(a, w))

    def cpu(self, x: Tensor) -> Tensor:
        w = self.window
        array = plain_array(x, FLOATS)
        if array is not None:  # contiguous: the NumPy result is the tensor PyTorch gives
            y = torch.from_numpy(self._run(array, w))
            return y if w.channels_last or y.is_contiguous() else as_torch_gives(y, x, w.ndim, "lp")
        v = to_numpy(x, w.ndim, w.channels_last)
        nw = w if v.channels_last == w.channels_last else self.nhwc
        return torch_layout(v.back(self._run(NUMPY.array(v.array), nw)), x, w, "lp")


@functools.lru_cache(maxsize=1024)
def _lp_ready(norm_type, kernel, stride, padding, mode, dilation, ceil, cl, convention) -> LpReady:
    return LpReady(
        norm_type, list(kernel), list(stride), list(padding), mode, list(dilation), ceil, cl, convention
    )


def lp_ready(norm_type, kernel, stride, padding, mode, dilation, ceil, cl, convention) -> LpReady:
    """The ready ``lp_pool`` of these op arguments (kept: a model calls each layer again and again)."""
    return _lp_ready(
        norm_type, tuple(kernel), tuple(stride), tuple(padding), mode, tuple(dilation), ceil, cl, convention
    )


def _lp_pool_cpu(
    x: Tensor,
    norm_type: float,
    kernel_size: list[int],
    stride: list[int],
    padding: list[int],
    padding_mode: str,
    dilation: list[int],
    ceil_mode: bool,
    channels_last: bool,
    convention: str,
) -> Tensor:
    """``convention`` is Lp's own: "torch" (``F.lp_pool*d``) or "onnx" (LpPool)."""
    args = (kernel_size, stride, padding, padding_mode, dilation, ceil_mode, channels_last, convention)
    return lp_ready(norm_type, *args).cpu(x)


lp_pool = torch.library.custom_op("avgpool::lp_pool", _lp_pool_cpu, mutates_args=(), device_types="cpu")


@lp_pool.register_fake
def _(x, norm_type, kernel_size, stride, padding, padding_mode, dilation, ceil_mode, cl, convention):
    w = window_of(kernel_size, stride, padding, padding_mode, dilation, ceil_mode, True, None, cl, "torch")
    check_rank(x, w.ndim)
    out = [a.out for a in w.resolve(spatial(x.shape, w.ndim, cl))]
    return new_empty(x, with_spatial(x.shape, w.ndim, cl, out), w.ndim, cl, kind="lp")


def lp_pool_grad(grad: Tensor, x: Tensor, norm_type: float, geometry: tuple, convention: str) -> Tensor:
    """d lp_pool / dx, written with the average ops so that it differentiates again.

    torch: ``y = (K * avg(x**p))**(1/p)``, so ``dx = x**(p-1) * avg_backward(K * g * T**(1/p-1))``
    with ``T = K * avg(x**p)``; onnx: ``T = sum |x|**p`` and ``sign(x)|x|**(p-1)`` inside.
    0 where a window's power sum is 0, as `avgpool.lp_pool_backward`.
    """
    kernel, stride, padding, mode, dilation, ceil, cl = geometry
    p = float(norm_type)
    if convention == "torch":
        k = float(math.prod(kernel))
        avg_geometry = (kernel, stride, padding, mode, dilation, ceil, True, None, cl, "torch")
        total = call.avg_pool(x.pow(p), *avg_geometry) * k
        inner = x.pow(p - 1.0)
    else:
        k = 1.0
        avg_geometry = (kernel, stride, padding, mode, dilation, ceil, False, 1, cl, "onnx")
        total = call.avg_pool(x.abs().pow(p), *avg_geometry)
        inner = torch.sign(x) * x.abs().pow(p - 1.0)
    nonzero = total != 0
    safe = torch.where(nonzero, total, torch.ones_like(total))
    coef = torch.where(nonzero, grad * safe.pow(1.0 / p - 1.0) * k, torch.zeros_like(total))
    spread = call.avg_pool_backward(coef, list(x.shape), *avg_geometry)
    return inner * spread


def _lp_setup(ctx, inputs, output):
    ctx.save_for_backward(inputs[0])
    ctx.norm_type = inputs[1]
    ctx.geometry = tuple(inputs[2:9])
    ctx.convention = inputs[9]


def _lp_backward(ctx, grad):
    (x,) = ctx.saved_tensors
    return (lp_pool_grad(grad, x, ctx.norm_type, ctx.geometry, ctx.convention),) + (None,) * 9


lp_pool.register_autograd(_lp_backward, setup_context=_lp_setup)


LpReady.setup_context = staticmethod(_lp_setup)
LpReady.backward = staticmethod(_lp_backward)
call.add("lp_pool", _lp_pool_cpu, _lp_setup, _lp_backward)
