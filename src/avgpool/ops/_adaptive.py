"""Adaptive pooling (PyTorch's output-size windows), average and max, and their gradients."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from avgpool import _args
from avgpool._arrays import Layout
from avgpool._backends import Array, Backend, op


def _adaptive(x: Array, output_size: Any, channels_last: bool, ndim: int | None):
    """The input's layout and the validated output size."""
    rank = _args.spatial_rank(len(x.shape), output_size, ndim)
    layout = Layout.of(x.shape, rank, channels_last)
    return layout, _args.output_size(output_size, layout.spatial)


@op
def adaptive_avg_pool(
    be: Backend, x: Array, output_size: Any, *, channels_last: bool = False, ndim: int | None = None
) -> Array:
    """Average over PyTorch's adaptive windows ``[floor(i*n/out), ceil((i+1)*n/out))``.

    Examples
    --------
    >>> import numpy as np
    >>> adaptive_avg_pool(np.arange(5.0).reshape(1, 1, 5), 2)
    array([[[1., 3.]]])
    """
    x = be.array(x)
    return be.adaptive_avg_pool(x, *_adaptive(x, output_size, channels_last, ndim))


@op
def adaptive_avg_pool_backward(
    be: Backend,
    grad_output: Array,
    input_shape: Sequence[int],
    *,
    channels_last: bool = False,
    ndim: int | None = None,
) -> Array:
    """Gradient of `adaptive_avg_pool` (its output size is read from ``grad_output``)."""
    grad_output = be.array(grad_output, "grad_output")
    input_shape = _args.input_shape(input_shape)
    layout = Layout.of(input_shape, len(input_shape) - 2 if ndim is None else ndim, channels_last)
    return be.adaptive_avg_pool_backward(grad_output, layout, _args.grad_out_size(grad_output, layout))


@op
def adaptive_max_pool(
    be: Backend,
    x: Array,
    output_size: Any,
    return_indices: bool = False,
    *,
    channels_last: bool = False,
    ndim: int | None = None,
):
    """Maximum over PyTorch's adaptive windows (indices as `max_pool`)."""
    x = be.array(x, allow_int=True)
    y, index = be.adaptive_max_pool(x, *_adaptive(x, output_size, channels_last, ndim))
    return (y, index) if return_indices else y


@op
def adaptive_max_pool_backward(
    be: Backend, grad_output: Array, x: Array, *, channels_last: bool = False, ndim: int | None = None
) -> Array:
    """Gradient of `adaptive_max_pool`: each window's grad goes to its arg-max cell."""
    grad_output, x = be.array(grad_output, "grad_output"), be.array(x, allow_int=True)
    layout = Layout.of(x.shape, len(x.shape) - 2 if ndim is None else ndim, channels_last)
    return be.adaptive_max_pool_backward(grad_output, x, layout, _args.grad_out_size(grad_output, layout))


def _fixed_adaptive(fn, kind: str, ndim: int, name: str):
    if kind == "max":

        def pool(
            be: Backend,
            input: Array,
            output_size: Any,
            return_indices: bool = False,
            *,
            channels_last: bool = False,
        ):
            input = be.array(input, allow_int=True)
            if not channels_last:
                be.precheck_adaptive("max", ndim, input, output_size)
            return fn.impl(be, input, output_size, return_indices, channels_last=channels_last, ndim=ndim)

    else:

        def pool(be: Backend, input: Array, output_size: Any, *, channels_last: bool = False):
            input = be.array(input)
            if not channels_last:
                be.precheck_adaptive("avg", ndim, input, output_size)
            return fn.impl(be, input, output_size, channels_last=channels_last, ndim=ndim)

    doc = f"{ndim}-d {fn.__name__.replace('_', ' ')}, call-compatible with ``torch.nn.functional.{name}``."
    return op(pool, name=name, doc=doc)


adaptive_avg_pool1d = _fixed_adaptive(adaptive_avg_pool, "avg", 1, "adaptive_avg_pool1d")
adaptive_avg_pool2d = _fixed_adaptive(adaptive_avg_pool, "avg", 2, "adaptive_avg_pool2d")
adaptive_avg_pool3d = _fixed_adaptive(adaptive_avg_pool, "avg", 3, "adaptive_avg_pool3d")
adaptive_max_pool1d = _fixed_adaptive(adaptive_max_pool, "max", 1, "adaptive_max_pool1d")
adaptive_max_pool2d = _fixed_adaptive(adaptive_max_pool, "max", 2, "adaptive_max_pool2d")
adaptive_max_pool3d = _fixed_adaptive(adaptive_max_pool, "max", 3, "adaptive_max_pool3d")
