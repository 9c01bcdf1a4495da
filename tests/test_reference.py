"""The float64 reference against a naive loop, on general geometries no single framework covers.

PyTorch has no asymmetric padding, ONNX no divisor_override, TensorFlow no ceil mode: the
generic Window semantics (asymmetric pads larger than the kernel, dilation with padding,
ceil-mode windows hanging past the padded input, windows entirely in padding) are pinned here.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from avgpool import Window, reference
from tests import naive


@st.composite
def geometries(draw, max_ndim=3):
    ndim = draw(st.integers(1, max_ndim))
    kernel = draw(st.tuples(*[st.integers(1, 4)] * ndim))
    stride = draw(st.tuples(*[st.integers(1, 4)] * ndim))
    dilation = draw(st.tuples(*[st.integers(1, 3)] * ndim))
    pads = draw(st.tuples(*[st.tuples(st.integers(0, 4), st.integers(0, 4))] * ndim))
    ceil_mode = draw(st.booleans())
    window = Window(kernel, stride, pads, dilation=dilation, ceil_mode=ceil_mode)
    spans = [d * (k - 1) + 1 for k, d in zip(kernel, dilation)]
    spatial = tuple(
        draw(st.integers(max(1, s - b - a), max(1, s - b - a) + 5)) for s, (b, a) in zip(spans, pads)
    )
    return window, spatial


def _input(spatial, seed, batch=2):
    return np.random.default_rng(seed).standard_normal((batch, *spatial))


@settings(max_examples=150, deadline=None)
@given(geometries(), st.booleans(), st.sampled_from([None, 1, 3]), st.integers(0, 2**16))
def test_avg_matches_naive_loop(geometry, count_include_pad, divisor_override, seed):
    window, spatial = geometry
    axes = window.resolve(spatial)
    x = _input(spatial, seed)
    got = reference.avg_pool(x, axes, count_include_pad, divisor_override)
    want = naive.avg_pool(x, axes, count_include_pad, divisor_override)
    np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-13)


@settings(max_examples=150, deadline=None)
@given(geometries(), st.integers(0, 2**16))
def test_max_and_indices_match_naive_loop(geometry, seed):
    window, spatial = geometry
    axes = window.resolve(spatial)
    x = np.round(_input(spatial, seed), 1)  # ties are common: the first one must win
    x.flat[:: max(1, x.size // 3)] = np.nan
    got, got_index = reference.max_pool(x, axes)
    want, want_index = naive.max_pool(x, axes)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(got_index, want_index)


@settings(max_examples=60, deadline=None)
@given(geometries(), st.booleans(), st.integers(0, 2**16))
def test_avg_backward_is_the_transpose(geometry, count_include_pad, seed):
    # <avg(x), g> == <x, avg_backward(g)> for every x, g: the backward is the adjoint.
    window, spatial = geometry
    axes = window.resolve(spatial)
    x = _input(spatial, seed)
    g = np.random.default_rng(seed + 1).standard_normal((2, *[a.out for a in axes]))
    lhs = np.sum(reference.avg_pool(x, axes, count_include_pad) * g)
    rhs = np.sum(x * reference.avg_pool_backward(g, axes, count_include_pad))
    assert lhs == pytest.approx(rhs, rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("pad_type", ["reflect", "replicate", "zero"])
@pytest.mark.parametrize("filt_size", range(1, 8))
def test_blur_backward_is_the_transpose(pad_type, filt_size):
    rng = np.random.default_rng(filt_size)
    x = rng.standard_normal((3, 9, 8))
    y = reference.blur_pool(x, filt_size, 2, pad_type)
    g = rng.standard_normal(y.shape)
    lhs = np.sum(y * g)
    rhs = np.sum(x * reference.blur_pool_backward(g, x.shape[1:], filt_size, 2, pad_type))
    assert lhs == pytest.approx(rhs, rel=1e-12)


def test_blur_filters_are_normalised_binomial_rows():
    assert reference.blur_filter(1).tolist() == [1.0]
    assert reference.blur_filter(3).tolist() == [0.25, 0.5, 0.25]
    np.testing.assert_allclose(reference.blur_filter(5), np.array([1, 4, 6, 4, 1]) / 16)
    np.testing.assert_allclose(reference.blur_filter(7), np.array([1, 6, 15, 20, 15, 6, 1]) / 64)


def test_adaptive_windows_follow_torch_formula():
    # n=5 -> 3: [floor(5i/3), ceil(5(i+1)/3)) = [0,2), [1,4), [3,5)
    taps = reference.adaptive_taps(5, 3)
    windows = [tuple(p[r]) for p, r in zip(taps.pos, taps.real)]
    assert windows == [(0, 1), (1, 2, 3), (3, 4)]


def test_divisor_is_the_product_of_per_axis_counts():
    window = Window((3, 2), (2, 2), ((1, 2), (0, 1)), ceil_mode=True)
    axes = window.resolve((5, 4))
    taps = [reference.pool_taps(a) for a in axes]
    ones = np.ones((1, 5, 4))
    # sum of ones over real cells == divisor counting real cells
    np.testing.assert_array_equal(reference.weighted_sum(ones, taps)[0], reference.divisor(taps, False))
