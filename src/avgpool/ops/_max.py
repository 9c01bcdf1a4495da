"""Max pooling: `max_pool`, its gradient and the ``max_pool{1,2,3}d`` forms."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from avgpool import _args
from avgpool._backends import Array, Backend, op
from avgpool.window import Window


@op
def max_pool(
    be: Backend,
    x: Array,
    kernel_size: int | Sequence[int] | None = None,
    stride: int | Sequence[int] | None = None,
    padding: Any = 0,
    *,
    dilation: int | Sequence[int] = 1,
    ceil_mode: bool = False,
    return_indices: bool = False,
    channels_last: bool = False,
    window: Window | None = None,
    nan_policy: str | None = None,
    out: Array | None = None,
) -> Array | tuple[Array, Array]:
    """N-d max pooling; padded cells never win.

    With ``return_indices=True`` also returns int64 indices into each (sample, channel)'s
    flattened spatial plane, PyTorch's convention (also for channels-last arrays); without
    it, no arg-max is computed.

    ``nan_policy``: "propagate" (a NaN wins, the last one; PyTorch, ONNX, Flax) or "omit" (NaN
    never wins and results are floored at the dtype's lowest finite value, as TensorFlow's
    max_pool does). Default: the window's convention decides ("omit" for tensorflow and keras
    windows, else "propagate").

    Examples
    --------
    >>> import numpy as np
    >>> x = np.array([[[1.0, 5.0, 2.0, 2.0]]])
    >>> max_pool(x, 2, return_indices=True)
    (array([[[5., 2.]]]), array([[[1, 2]]]))
    """
    x = be.array(x, allow_int=True)
    w = _args.max_window(
        len(x.shape), kernel_size, stride, padding, dilation, ceil_mode, channels_last, window
    )
    return be.max_pool(x, w, _args.nan_policy(nan_policy), out, bool(return_indices))


@op
def max_pool_backward(
    be: Backend,
    grad_output: Array,
    x: Array,
    kernel_size: int | Sequence[int] | None = None,
    stride: int | Sequence[int] | None = None,
    padding: Any = 0,
    *,
    dilation: int | Sequence[int] = 1,
    ceil_mode: bool = False,
    channels_last: bool = False,
    window: Window | None = None,
    nan_policy: str | None = None,
    indices: Array | None = None,
) -> Array:
    """Gradient of `max_pool`: each window's grad goes to its arg-max cell.

    ``indices`` are the forward's (``max_pool(..., return_indices=True)``), so the arg-max is
    not searched again, as a training step has them; without them it is found from ``x``.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.array([[[1.0, 3.0, 2.0, 0.0]]])
    >>> y, i = max_pool(x, 2, return_indices=True)
    >>> max_pool_backward(np.ones_like(y), x, 2, indices=i)
    array([[[0., 1., 1., 0.]]])
    """
    grad_output = be.array(grad_output, "grad_output")
    x = be.array(x, allow_int=True)
    w = _args.max_window(
        len(x.shape), kernel_size, stride, padding, dilation, ceil_mode, channels_last, window
    )
    return be.max_pool_backward(grad_output, x, w, _args.nan_policy(nan_policy), indices)


def _fixed_max(ndim: int, name: str):
    def pool(
        be: Backend,
        input: Array,
        kernel_size: int | Sequence[int] | None = None,
        stride: int | Sequence[int] | None = None,
        padding: int | Sequence[int] = 0,
        dilation: int | Sequence[int] = 1,
        ceil_mode: bool = False,
        return_indices: bool = False,
        *,
        channels_last: bool = False,
        window: Window | None = None,
    ):
        input = be.array(input, allow_int=True)
        if window is None and not channels_last:
            be.precheck_pooling("max", ndim, input, kernel_size, stride, padding, dilation, ceil_mode)
        w = _args.torch_window(
            len(input.shape),
            window,
            ndim,
            "max",
            kernel_size,
            stride,
            padding,
            dilation,
            ceil_mode,
            channels_last=channels_last,
        )
        return be.max_pool(input, w, None, None, bool(return_indices))

    doc = f"{ndim}-d max pooling: ``torch.nn.functional.{name}``, its rules and refusals too."
    return op(pool, name=name, doc=doc)


max_pool1d = _fixed_max(1, "max_pool1d")
max_pool2d = _fixed_max(2, "max_pool2d")
max_pool3d = _fixed_max(3, "max_pool3d")
