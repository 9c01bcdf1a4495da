"""Every avgpool ``*_backward`` against central finite differences of avgpool's own forward.

For an op ``y = f(x)``, a random output gradient ``g`` and random input directions ``v``,
``<g, (f(x + eps v) - f(x - eps v)) / (2 eps)>`` must equal ``<backward(g), v>``. Max pools get
inputs with distinct values a wide margin apart, so no perturbation moves an arg-max; Lp pools
get inputs bounded away from zero. Geometries are avgpool's general ones (any padding style,
dilation, ceil mode, divisor rules, channels-last), not only those torch accepts.
"""

from __future__ import annotations

import math

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import avgpool

try:  # tests is a package ...
    from .conformance._tolerances import FINITE_DIFFERENCE
except ImportError:  # ... or tests/ itself is on sys.path
    from conformance._tolerances import FINITE_DIFFERENCE

CASES = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
DIRECTIONS = 3


def check_gradient(forward, x: np.ndarray, grad_x: np.ndarray, grad_y: np.ndarray, rng) -> None:
    """``grad_x`` is the gradient of ``<grad_y, forward(x)>``: compare along random directions.

    Outputs that are not finite at ``x`` (a max-pool window lying wholly in the padding is -inf)
    are constant under small perturbations and are left out of the inner product.
    """
    eps, rtol, atol = (FINITE_DIFFERENCE[k] for k in ("eps", "rtol", "atol"))
    assert isinstance(grad_x, np.ndarray)
    assert grad_x.shape == x.shape, (grad_x.shape, x.shape)
    assert grad_x.dtype == x.dtype, (grad_x.dtype, x.dtype)
    assert np.all(np.isfinite(grad_x))
    y = forward(x)
    finite = np.isfinite(y)
    g = np.where(finite, grad_y, 0.0)

    def objective(z):
        return float(np.sum(g * np.where(finite, forward(z), 0.0)))

    for _ in range(DIRECTIONS):
        v = rng.standard_normal(x.shape)
        numeric = (objective(x + eps * v) - objective(x - eps * v)) / (2 * eps)
        analytic = float(np.sum(grad_x * v))
        scale = float(np.sum(np.abs(grad_x * v))) + float(np.sum(np.abs(g)))
        assert abs(numeric - analytic) <= atol + rtol * scale, (numeric, analytic)


# --------------------------------------------------------------------------------------------
# strategies


@st.composite
def layout(draw, spatial, *, channels_last=None):
    """(shape, channels_last) of a batched input with this spatial shape, small enough."""
    if channels_last is None:
        channels_last = draw(st.booleans())
    n = draw(st.integers(1, 2 if len(spatial) < 3 else 1))
    c = draw(st.integers(1, 3 if len(spatial) < 3 else 2))
    shape = (n, *spatial, c) if channels_last else (n, c, *spatial)
    return shape, channels_last


@st.composite
def pooling_window(draw, *, pad_styles=("int", "pairs", "same", "same_lower", "valid")):
    """A general avgpool geometry: keyword arguments and the input spatial shape."""
    nd = draw(st.integers(1, 3))
    top = 3 if nd < 3 else 2
    k = tuple(draw(st.integers(1, top)) for _ in range(nd))
    d = tuple(draw(st.integers(1, 2)) for _ in range(nd))
    s = None if draw(st.booleans()) else tuple(draw(st.integers(1, 3)) for _ in range(nd))
    spans = [(ki - 1) * di + 1 for ki, di in zip(k, d, strict=True)]
    style = draw(st.sampled_from(pad_styles))
    if style == "int":
        pads = [(p, p) for p in (draw(st.integers(0, span // 2 + 1)) for span in spans)]
        padding = tuple(p for p, _ in pads)
    elif style == "pairs":
        pads = [tuple(draw(st.integers(0, span)) for _ in range(2)) for span in spans]
        padding = tuple(pads)
    else:
        pads = [(0, 0)] * nd if style == "valid" else None
        padding = style
    sizes = []
    for i, span in enumerate(spans):
        lo = 1 if pads is None else max(1, span - sum(pads[i]))
        sizes.append(draw(st.integers(lo, lo + (4 if nd < 3 else 2))))
    geometry = {"kernel_size": k, "stride": s, "padding": padding, "dilation": d}
    geometry["ceil_mode"] = draw(st.booleans())
    return geometry, tuple(sizes)


def distinct_values(rng, shape) -> np.ndarray:
    """All different, at least 0.1 apart: no arg-max moves under an eps-sized perturbation."""
    return (rng.permutation(math.prod(shape)).reshape(shape) - math.prod(shape) / 2) * 0.1


def away_from_zero(rng, shape, *, signed: bool) -> np.ndarray:
    x = rng.uniform(0.5, 2.0, shape)
    return x * rng.choice([-1.0, 1.0], shape) if signed else x


# --------------------------------------------------------------------------------------------
# the checks


@CASES
@given(data=st.data())
def test_avg_pool_backward(data):
    geometry, spatial = data.draw(pooling_window())
    shape, channels_last = data.draw(layout(spatial))
    geometry.update(
        count_include_pad=data.draw(st.booleans()),
        divisor_override=data.draw(st.none() | st.integers(1, 7)),
        channels_last=channels_last,
    )
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    x = rng.standard_normal(shape)
    if data.draw(st.booleans()):
        opts = {"window": avgpool.Window(**geometry)}
    else:
        opts = geometry

    def forward(z):
        return avgpool.avg_pool(z, **opts)

    gy = rng.standard_normal(forward(x).shape)
    check_gradient(forward, x, avgpool.avg_pool_backward(gy, x.shape, **opts), gy, rng)


@CASES
@given(data=st.data())
def test_max_pool_backward(data):
    geometry, spatial = data.draw(pooling_window())
    shape, channels_last = data.draw(layout(spatial))
    geometry["channels_last"] = channels_last
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    x = distinct_values(rng, shape)

    def forward(z):
        return avgpool.max_pool(z, **geometry)

    gy = rng.standard_normal(forward(x).shape)
    check_gradient(forward, x, avgpool.max_pool_backward(gy, x, **geometry), gy, rng)


@CASES
@given(data=st.data())
def test_lp_pool_backward(data):
    convention = data.draw(st.sampled_from(["torch", "onnx"]))
    norm = data.draw(st.sampled_from([1, 2, 3, 1.5]))
    geometry, spatial = data.draw(pooling_window())
    shape, channels_last = data.draw(layout(spatial))
    geometry.update(channels_last=channels_last, convention=convention)
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    # torch's convention takes x**p: odd or fractional p needs x > 0 to stay real
    signed = convention == "onnx" or norm == 2
    x = away_from_zero(rng, shape, signed=signed)

    def forward(z):
        return avgpool.lp_pool(z, norm, **geometry)

    gy = rng.standard_normal(forward(x).shape)
    check_gradient(forward, x, avgpool.lp_pool_backward(gy, x, norm, **geometry), gy, rng)


@st.composite
def adaptive_case(draw):
    nd = draw(st.integers(1, 3))
    spatial = tuple(draw(st.integers(1, 6 if nd < 3 else 4)) for _ in range(nd))
    out = tuple(draw(st.none() | st.integers(1, 8 if nd < 3 else 5)) for _ in range(nd))
    shape, channels_last = draw(layout(spatial))
    return shape, out, channels_last


@CASES
@given(case=adaptive_case(), seed=st.integers(0, 2**32 - 1))
def test_adaptive_avg_pool_backward(case, seed):
    shape, out, channels_last = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)

    def forward(z):
        return avgpool.adaptive_avg_pool(z, out, channels_last=channels_last)

    gy = rng.standard_normal(forward(x).shape)
    grad = avgpool.adaptive_avg_pool_backward(gy, x.shape, channels_last=channels_last)
    check_gradient(forward, x, grad, gy, rng)


@CASES
@given(case=adaptive_case(), seed=st.integers(0, 2**32 - 1))
def test_adaptive_max_pool_backward(case, seed):
    shape, out, channels_last = case
    rng = np.random.default_rng(seed)
    x = distinct_values(rng, shape)

    def forward(z):
        return avgpool.adaptive_max_pool(z, out, channels_last=channels_last)

    gy = rng.standard_normal(forward(x).shape)
    grad = avgpool.adaptive_max_pool_backward(gy, x, channels_last=channels_last)
    check_gradient(forward, x, grad, gy, rng)


@CASES
@given(data=st.data())
def test_global_pool_backward(data):
    nd = data.draw(st.integers(1, 3))
    spatial = tuple(data.draw(st.integers(1, 5 if nd < 3 else 3)) for _ in range(nd))
    shape, channels_last = data.draw(layout(spatial))
    opts = {"ndim": data.draw(st.sampled_from([None, nd])), "channels_last": channels_last}
    keepdims = data.draw(st.booleans())
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))

    x = rng.standard_normal(shape)

    def avg(z):
        return avgpool.global_avg_pool(z, keepdims=keepdims, **opts)

    gy = rng.standard_normal(avg(x).shape)
    check_gradient(avg, x, avgpool.global_avg_pool_backward(gy, x.shape, **opts), gy, rng)

    x = distinct_values(rng, shape)

    def amax(z):
        return avgpool.global_max_pool(z, keepdims=keepdims, **opts)

    gy = rng.standard_normal(amax(x).shape)
    check_gradient(amax, x, avgpool.global_max_pool_backward(gy, x, **opts), gy, rng)


@CASES
@given(data=st.data())
def test_blur_pool_backward(data):
    nd = data.draw(st.integers(1, 3))
    filt_size = data.draw(st.integers(1, 7))
    pad_type = data.draw(st.sampled_from(["reflect", "replicate", "zero"]))
    pad_off = data.draw(st.integers(0, 2))
    stride = data.draw(st.integers(1, 3))
    most_pad = math.ceil((filt_size - 1) / 2) + pad_off
    lo = most_pad + 1 if pad_type == "reflect" else 1
    spatial = tuple(data.draw(st.integers(lo, lo + (4 if nd < 3 else 1))) for _ in range(nd))
    shape, channels_last = data.draw(layout(spatial))
    opts = {"filt_size": filt_size, "stride": stride, "pad_type": pad_type, "pad_off": pad_off}
    opts.update(ndim=data.draw(st.sampled_from([None, nd])), channels_last=channels_last)
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    x = rng.standard_normal(shape)

    def forward(z):
        return avgpool.blur_pool(z, **opts)

    gy = rng.standard_normal(forward(x).shape)
    check_gradient(forward, x, avgpool.blur_pool_backward(gy, x.shape, **opts), gy, rng)
