"""Power-average (Lp) pooling: `lp_pool`, its gradient and the ``lp_pool{1,2,3}d`` forms."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from avgpool import _args
from avgpool._backends import Array, Backend, op
from avgpool.window import Window


@op
def lp_pool(
    be: Backend,
    x: Array,
    norm_type: float,
    kernel_size: int | Sequence[int] | None = None,
    stride: int | Sequence[int] | None = None,
    padding: Any = 0,
    *,
    dilation: int | Sequence[int] = 1,
    ceil_mode: bool = False,
    channels_last: bool = False,
    window: Window | None = None,
    convention: str | None = None,
) -> Array:
    """N-d power-average pooling ``(sum x**p)**(1/p)`` in PyTorch's or ONNX's definition.

    ``convention="torch"`` reproduces ``F.lp_pool*d`` exactly (``x**p`` keeps the sign for odd
    p; a ceil-mode partial window is scaled as if full); ``"onnx"`` is ONNX LpPool
    (``|x|**p``; padded cells add 0). By default, a ``window``'s own convention when it is one
    of those two (``Window.from_onnx``'s computes ONNX's), else PyTorch's.

    Examples
    --------
    >>> import numpy as np
    >>> lp_pool(np.array([[[3.0, 4.0]]]), 2, 2)
    array([[[5.]]])
    """
    x = be.array(x)
    p = _args.norm_type(norm_type)
    w = _args.max_window(
        len(x.shape), kernel_size, stride, padding, dilation, ceil_mode, channels_last, window
    )
    convention = _args.lp_convention(convention, window)
    return be.lp_pool(x, p, w, convention)


@op
def lp_pool_backward(
    be: Backend,
    grad_output: Array,
    x: Array,
    norm_type: float,
    kernel_size: int | Sequence[int] | None = None,
    stride: int | Sequence[int] | None = None,
    padding: Any = 0,
    *,
    dilation: int | Sequence[int] = 1,
    ceil_mode: bool = False,
    channels_last: bool = False,
    window: Window | None = None,
    convention: str | None = None,
) -> Array:
    """Gradient of `lp_pool` w.r.t. its input (0 where a window's power sum is 0)."""
    grad_output, x = be.array(grad_output, "grad_output"), be.array(x)
    p = _args.norm_type(norm_type)
    w = _args.max_window(
        len(x.shape), kernel_size, stride, padding, dilation, ceil_mode, channels_last, window
    )
    convention = _args.lp_convention(convention, window)
    return be.lp_pool_backward(grad_output, x, p, w, convention)


def _fixed_lp(ndim: int, name: str):
    def pool(
        be: Backend,
        input: Array,
        norm_type: float,
        kernel_size: int | Sequence[int],
        stride: int | Sequence[int] | None = None,
        ceil_mode: bool = False,
        *,
        channels_last: bool = False,
    ) -> Array:
        input = be.array(input)
        if not channels_last:
            be.precheck_pooling("lp", ndim, input, kernel_size, stride, 0, 1, ceil_mode)
        w = _args.torch_window(
            len(input.shape),
            None,
            ndim,
            "lp",
            kernel_size,
            stride,
            0,
            1,
            ceil_mode,
            channels_last=channels_last,
        )
        _args.refuse_like_avg_pool3d(input.shape, w)
        return be.lp_pool(input, _args.norm_type(norm_type), w, "torch")

    doc = f"{ndim}-d power-average pooling: ``torch.nn.functional.{name}`` exactly."
    return op(pool, name=name, doc=doc)


lp_pool1d = _fixed_lp(1, "lp_pool1d")
lp_pool2d = _fixed_lp(2, "lp_pool2d")
lp_pool3d = _fixed_lp(3, "lp_pool3d")
