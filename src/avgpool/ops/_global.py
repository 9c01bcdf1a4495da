"""Global pooling: one value per channel, the mean or the maximum over every spatial axis."""

from __future__ import annotations

from collections.abc import Sequence

from avgpool import _args
from avgpool._arrays import Layout
from avgpool._backends import Array, Backend, op
from avgpool.ops._avg import avg_pool_backward
from avgpool.ops._max import max_pool_backward
from avgpool.window import Window


def _squeeze(y: Array, window: Window, keepdims: bool) -> Array:
    if keepdims:
        return y
    return y.reshape(_args.squeezed_shape(y.shape, window.ndim, window.channels_last))


def _global_grad(grad: Array, shape: Sequence[int], window: Window) -> Array:
    """``grad`` with its spatial axes restored to length 1 when it came without them."""
    keep = _args.kept_shape(grad.shape, Layout.of(shape, window.ndim, window.channels_last, "input_shape"))
    return grad if keep is None else grad.reshape(keep)


@op
def global_avg_pool(
    be: Backend,
    x: Array,
    *,
    ndim: int | None = None,
    keepdims: bool = True,
    channels_last: bool = False,
    window: Window | None = None,
) -> Array:
    """Mean over all spatial axes (ONNX GlobalAveragePool; Keras with keepdims).

    Examples
    --------
    >>> import numpy as np
    >>> global_avg_pool(np.arange(8.0).reshape(1, 2, 4), keepdims=False)
    array([[1.5, 5.5]])
    """
    x = be.array(x)
    w = _args.global_window(len(x.shape), ndim, channels_last, window)
    return _squeeze(be.avg_pool(x, w, None), w, keepdims)


@op
def global_max_pool(
    be: Backend,
    x: Array,
    *,
    ndim: int | None = None,
    keepdims: bool = True,
    channels_last: bool = False,
    window: Window | None = None,
) -> Array:
    """Maximum over all spatial axes (ONNX GlobalMaxPool, Keras GlobalMaxPooling*; NaN wins).

    Keras' global max is a plain reduce_max, which propagates NaN, unlike its windowed max.
    """
    x = be.array(x, allow_int=True)
    w = _args.global_window(len(x.shape), ndim, channels_last, window)
    return _squeeze(be.max_pool(x, w, "propagate", None, False), w, keepdims)


@op
def global_avg_pool_backward(
    be: Backend,
    grad_output: Array,
    input_shape: Sequence[int],
    *,
    ndim: int | None = None,
    channels_last: bool = False,
) -> Array:
    """Gradient of `global_avg_pool` (``grad_output`` with or without the kept dims)."""
    grad_output = be.array(grad_output, "grad_output")
    input_shape = _args.input_shape(input_shape)
    w = _args.global_window(len(input_shape), ndim, channels_last, None)
    grad = _global_grad(grad_output, input_shape, w)
    return avg_pool_backward.impl(be, grad, input_shape, window=w)


@op
def global_max_pool_backward(
    be: Backend, grad_output: Array, x: Array, *, ndim: int | None = None, channels_last: bool = False
) -> Array:
    """Gradient of `global_max_pool`: each channel's grad goes to its arg-max cell."""
    grad_output, x = be.array(grad_output, "grad_output"), be.array(x, allow_int=True)
    w = _args.global_window(len(x.shape), ndim, channels_last, None)
    grad = _global_grad(grad_output, x.shape, w)
    return max_pool_backward.impl(be, grad, x, window=w, nan_policy="propagate")
