"""Average pooling: `avg_pool`, its gradient and the ``avg_pool{1,2,3}d`` forms."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from avgpool import _args
from avgpool._backends import Array, Backend, op
from avgpool.window import Window


@op
def avg_pool(
    be: Backend,
    x: Array,
    kernel_size: int | Sequence[int] | None = None,
    stride: int | Sequence[int] | None = None,
    padding: Any = 0,
    *,
    dilation: int | Sequence[int] = 1,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
    divisor_override: int | None = None,
    channels_last: bool = False,
    window: Window | None = None,
    out: Array | None = None,
) -> Array:
    """N-d average pooling, spatial rank from ``kernel_size``, ``window`` or ``x.ndim - 2``.

    Parameters
    ----------
    x : ndarray or Tensor
        (N, C, *spatial), or (N, *spatial, C) with ``channels_last=True``; float16/32/64.
    kernel_size, stride, padding, dilation, ceil_mode, count_include_pad, divisor_override
        As `Window` (PyTorch's meanings; ``padding`` also takes pairs, "valid", "same",
        "same_lower").
    window : Window, optional
        A ready geometry (e.g. ``Window.from_tensorflow(...)``) instead of the arguments.
    out : ndarray or Tensor, optional
        An array of the output's shape and dtype to write into (C-contiguous for NumPy).

    Returns
    -------
    ndarray or Tensor
        The pooled array, same kind, dtype and layout as ``x``.

    Raises
    ------
    AvgPoolError
        A geometry argument is out of range or no window fits the input.
    TypeError
        ``x`` is not a float array, or a size is not an integer.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.arange(16.0).reshape(1, 1, 4, 4)
    >>> avg_pool(x, 2)[0, 0]
    array([[ 2.5,  4.5],
           [10.5, 12.5]])
    """
    x = be.array(x)
    w = _args.window(
        len(x.shape),
        window,
        kernel_size,
        stride,
        padding,
        dilation=dilation,
        ceil_mode=ceil_mode,
        count_include_pad=count_include_pad,
        divisor_override=divisor_override,
        channels_last=channels_last,
    )
    return be.avg_pool(x, w, out)


@op
def avg_pool_backward(
    be: Backend,
    grad_output: Array,
    input_shape: Sequence[int],
    kernel_size: int | Sequence[int] | None = None,
    stride: int | Sequence[int] | None = None,
    padding: Any = 0,
    *,
    dilation: int | Sequence[int] = 1,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
    divisor_override: int | None = None,
    channels_last: bool = False,
    window: Window | None = None,
) -> Array:
    """Gradient of `avg_pool` w.r.t. its input: each window's grad split over its cells.

    Examples
    --------
    >>> import numpy as np
    >>> g = np.ones((1, 1, 2, 2))
    >>> avg_pool_backward(g, (1, 1, 4, 4), 2)[0, 0, 0]
    array([0.25, 0.25, 0.25, 0.25])
    """
    grad_output = be.array(grad_output, "grad_output")
    input_shape = _args.input_shape(input_shape)
    w = _args.window(
        len(input_shape),
        window,
        kernel_size,
        stride,
        padding,
        dilation=dilation,
        ceil_mode=ceil_mode,
        count_include_pad=count_include_pad,
        divisor_override=divisor_override,
        channels_last=channels_last,
    )
    return be.avg_pool_backward(grad_output, input_shape, w)


def _fixed_avg(ndim: int, name: str):
    def pool(
        be: Backend,
        input: Array,
        kernel_size: int | Sequence[int] | None = None,
        stride: int | Sequence[int] | None = None,
        padding: int | Sequence[int] = 0,
        ceil_mode: bool = False,
        count_include_pad: bool = True,
        divisor_override: int | None = None,
        *,
        channels_last: bool = False,
        window: Window | None = None,
    ) -> Array:
        input = be.array(input)
        if window is None and not channels_last:
            be.precheck_pooling(
                "avg", ndim, input, kernel_size, stride, padding, 1, ceil_mode, divisor_override
            )
        w = _args.torch_window(
            len(input.shape),
            window,
            ndim,
            "avg",
            kernel_size,
            stride,
            padding,
            1,
            ceil_mode,
            count_include_pad,
            divisor_override,
            channels_last=channels_last,
        )
        if window is None:
            _args.refuse_like_avg_pool3d(input.shape, w)
        return be.avg_pool(input, w, None)

    doc = (
        f"{ndim}-d average pooling: ``torch.nn.functional.{name}``, its rules and refusals too.\n\n"
        "Also takes unbatched input, ``channels_last`` and ``window=``; for padding PyTorch\n"
        "refuses (asymmetric, 'same', more than kernel // 2) use `avg_pool`."
    )
    return op(pool, name=name, doc=doc)


avg_pool1d = _fixed_avg(1, "avg_pool1d")
avg_pool2d = _fixed_avg(2, "avg_pool2d")
avg_pool3d = _fixed_avg(3, "avg_pool3d")
