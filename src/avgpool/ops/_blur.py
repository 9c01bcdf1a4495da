"""Anti-aliased (blur) pooling: antialiased-cnns' BlurPool, its gradient and 1-3d forms."""

from __future__ import annotations

from collections.abc import Sequence

from avgpool import _args
from avgpool._arrays import Layout
from avgpool._backends import Array, Backend, op


def _blur_layout(shape: Sequence[int], ndim: int | None, channels_last: bool, name: str) -> Layout:
    return Layout.of(shape, len(shape) - 2 if ndim is None else ndim, channels_last, name)


@op
def blur_pool(
    be: Backend,
    x: Array,
    filt_size: int = 4,
    stride: int = 2,
    *,
    pad_type: str = "reflect",
    pad_off: int = 0,
    ndim: int | None = None,
    channels_last: bool = False,
) -> Array:
    """Anti-aliased downsampling: a binomial blur, then subsampling by ``stride``.

    Reproduces antialiased-cnns' BlurPool (Zhang, "Making Convolutional Networks
    Shift-Invariant Again", 2019): filter row ``filt_size - 1`` of Pascal's triangle (outer
    product over axes, normalised), padding ``(f-1)//2`` before and ``ceil((f-1)/2)`` after
    (plus ``pad_off``) by reflection, replication or zeros.

    Examples
    --------
    >>> import numpy as np
    >>> blur_pool(np.ones((1, 1, 6, 6)), 3).shape
    (1, 1, 3, 3)
    """
    x = be.array(x)
    layout = _blur_layout(x.shape, ndim, channels_last, "input")
    return be.blur_pool(x, layout, *_args.blur_args(filt_size, stride, pad_type, pad_off, layout.spatial))


@op
def blur_pool_backward(
    be: Backend,
    grad_output: Array,
    input_shape: Sequence[int],
    filt_size: int = 4,
    stride: int = 2,
    *,
    pad_type: str = "reflect",
    pad_off: int = 0,
    ndim: int | None = None,
    channels_last: bool = False,
) -> Array:
    """Gradient of `blur_pool` w.r.t. its input."""
    grad_output = be.array(grad_output, "grad_output")
    layout = _blur_layout(_args.input_shape(input_shape), ndim, channels_last, "input_shape")
    args = _args.blur_args(filt_size, stride, pad_type, pad_off, layout.spatial)
    f, s, _, off = args
    layout.check_grad_shape(grad_output, _args.blur_out(layout.spatial, f, s, off))
    return be.blur_pool_backward(grad_output, layout, *args)


def _fixed_blur(ndim: int, name: str):
    def pool(
        be: Backend,
        input: Array,
        filt_size: int = 4,
        stride: int = 2,
        *,
        pad_type: str = "reflect",
        pad_off: int = 0,
        channels_last: bool = False,
    ) -> Array:
        return blur_pool.impl(
            be,
            input,
            filt_size,
            stride,
            pad_type=pad_type,
            pad_off=pad_off,
            ndim=ndim,
            channels_last=channels_last,
        )

    return op(pool, name=name, doc=f"{ndim}-d anti-aliased downsampling; see `blur_pool`.")


blur_pool1d = _fixed_blur(1, "blur_pool1d")
blur_pool2d = _fixed_blur(2, "blur_pool2d")
blur_pool3d = _fixed_blur(3, "blur_pool3d")
