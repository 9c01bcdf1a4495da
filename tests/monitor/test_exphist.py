"""Exponential histograms: buckets that depend on the value alone, merges equal to one pass in any
order and grouping, quantiles within the stated relative error of NumPy's exact ones."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from avgpool.monitor.exphist import MAX_SCALE, Buckets, ExpHistogram, aligned, indices

finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
samples = st.lists(
    st.one_of(finite, st.sampled_from([0.0, -0.0, 1.0, 2.0, 0.5, -4.0, 5e-324, 1.7e308])),
    min_size=0,
    max_size=60,
)


def _state(h: ExpHistogram) -> tuple:
    t = h.trimmed()
    return (
        t.scale,
        t.max_buckets,
        t.zero.tolist(),
        t.positive.offset if t.positive.width else None,
        t.positive.counts.tolist(),
        t.negative.offset if t.negative.width else None,
        t.negative.counts.tolist(),
    )


def _filled(values, max_buckets: int = 8, rows=None, n_rows: int = 1) -> ExpHistogram:
    h = ExpHistogram(max_buckets, rows=n_rows)
    h.add(np.asarray(values, dtype=np.float64), rows)
    return h


def test_bucket_bounds_are_upper_inclusive_and_exact_at_powers_of_two():
    one = 1 << MAX_SCALE
    got = indices(np.array([1.0, 2.0, 0.5, 1024.0, 2.0**-1074]))
    assert got.tolist() == [-1, one - 1, -one - 1, 10 * one - 1, -1074 * one - 1]
    # just above a power of two: the next bucket
    assert indices(np.array([np.nextafter(1.0, 2.0)])).tolist() == [0]
    h = _filled([1.0, 2.0, 3.0, 4.0], max_buckets=4)
    assert h.scale == 0  # (0.5, 1], (1, 2], (2, 4]: three buckets fit in four
    lower, upper, counts = h.trimmed().layout()
    assert lower.tolist() == [0.0, 0.5, 1.0, 2.0] and upper.tolist() == [0.0, 1.0, 2.0, 4.0]
    assert counts.tolist() == [[0, 1, 1, 2]]


def test_signs_and_zeros_are_counted_apart():
    h = _filled([0.0, -0.0, 3.0, -3.0, -3.0], max_buckets=4)
    lower, upper, counts = h.trimmed().layout()
    assert h.zero.tolist() == [2]
    assert counts.tolist() == [[2, 2, 1]]
    assert upper[0] < 0 and lower[2] > 0 and lower[1] == upper[1] == 0.0


def test_the_scale_drops_only_as_far_as_the_range_needs():
    h = ExpHistogram(max_buckets=16)
    h.add(np.array([1.0, 1.01]))
    # log2(1.01) = 0.01436 octave: 15055 buckets apart at scale 20, 15 at scale 10
    assert h.scale == 10
    h.add(np.array([1000.0]))
    assert h.scale == 0  # 1 .. 1000 is ten octaves: 11 buckets at scale 0, 21 at scale 1
    assert h.relative_error == pytest.approx(1 / 3)


@settings(max_examples=150, deadline=None)
@given(samples, st.lists(st.integers(0, 60), max_size=4), st.integers(4, 12), st.randoms())
def test_any_split_and_any_merge_order_equals_one_pass(values, cuts, max_buckets, rnd):
    x = np.asarray(values, dtype=np.float64)
    one = _filled(x, max_buckets)
    # batch by batch into one histogram
    streamed = ExpHistogram(max_buckets)
    bounds = sorted({0, len(x), *(c for c in cuts if c <= len(x))})
    parts = [x[a:b] for a, b in itertools.pairwise(bounds)] or [x]
    for part in parts:
        streamed.add(part)
    assert _state(streamed) == _state(one)
    # shards merged in a random order and grouping
    shards = [_filled(p, max_buckets) for p in parts]
    rnd.shuffle(shards)
    while len(shards) > 1:
        i = rnd.randrange(len(shards) - 1)
        shards[i : i + 2] = [shards[i].merged(shards[i + 1])]
    assert _state(shards[0]) == _state(one)


@settings(max_examples=60, deadline=None)
@given(samples, samples, samples)
def test_merge_is_associative_and_commutative(a, b, c):
    ha, hb, hc = (_filled(v, 6) for v in (a, b, c))
    assert _state(ha.merged(hb)) == _state(hb.merged(ha))
    assert _state(ha.merged(hb).merged(hc)) == _state(ha.merged(hb.merged(hc)))


def test_merging_at_different_max_buckets_takes_the_smaller():
    x = np.geomspace(1e-3, 1e3, 50)
    coarse = _filled(x, 8).merged(_filled(x, 64))
    assert coarse.max_buckets == 8
    assert _state(coarse) == _state(_filled(np.concatenate([x, x]), 8))


@pytest.mark.parametrize(
    "data",
    [
        lambda r: r.lognormal(0.0, 2.0, 20000),
        lambda r: r.standard_normal(20000) * 50,
        lambda r: np.maximum(r.standard_normal(20000), 0.0),  # ReLU: half exact zeros
        lambda r: r.uniform(-1e-3, 1e6, 20000),
        lambda r: np.round(r.standard_normal(5000), 1),  # ties
    ],
)
def test_quantiles_are_within_the_stated_relative_error(data):
    x = data(np.random.default_rng(3))
    h = _filled(x, 256)
    q = np.linspace(0.0, 1.0, 201)
    exact = np.quantile(x, q, method="lower")
    got = h.quantile(q, x.min(), x.max())
    assert np.all(np.abs(got - exact) <= h.relative_error * np.abs(exact) * (1 + 1e-12))
    assert got[0] == x.min() or abs(got[0] - x.min()) <= h.relative_error * abs(x.min())
    assert h.quantile(0.0, x.min(), x.max()) >= x.min() and h.quantile(1.0, x.min(), x.max()) <= x.max()


def test_rows_fill_one_per_channel_and_sum_to_the_layer():
    rng = np.random.default_rng(4)
    v = rng.standard_normal(300)
    rows = rng.integers(0, 3, 300)
    h = _filled(v, 16, rows=rows, n_rows=3)
    assert h.total().tolist() == np.bincount(rows, minlength=3).tolist()
    for r in range(3):  # each row is the histogram of its own values, at the shared scale
        alone = _filled(v[rows == r], 16)
        alone._downscale(alone.scale - h.scale)
        row = ExpHistogram(
            16, 1, h.scale, h.zero[[r]], *(Buckets(b.offset, b.counts[[r]]) for b in (h.positive, h.negative))
        )
        assert _state(row) == _state(alone)
    # the shared scale is the one all values together need: the row sum is the one-row histogram
    assert _state(h.row_sum()) == _state(_filled(v, 16))


def test_aligned_puts_two_scales_on_the_same_buckets():
    fine = _filled([1.0, 1.5], 64)
    coarse = _filled([1.0, 1e6], 8)
    lower, upper, a, b = aligned(fine, coarse)
    assert lower.shape == upper.shape == a.shape[1:] == b.shape[1:]
    assert np.all(lower <= upper) and np.all(upper[:-1] <= lower[1:])
    assert a.sum() == 2 and b.sum() == 2


def test_otlp_fields():
    h = _filled([0.0, 1.0, 3.0, -2.0], 8)
    point = h.otlp()
    assert point["scale"] == h.scale and point["zeroCount"] == 1
    assert sum(point["positive"]["bucketCounts"]) == 2 and sum(point["negative"]["bucketCounts"]) == 1


@pytest.mark.parametrize(
    ("value", "error"), [(3, ValueError), (1 << 20, ValueError), (8.0, TypeError), (True, TypeError)]
)
def test_bad_max_buckets_are_refused_with_the_allowed_range(value, error):
    with pytest.raises(error, match="max_buckets"):
        ExpHistogram(value)


def test_quantile_of_nothing_is_nan_and_q_is_checked():
    h = ExpHistogram()
    assert np.isnan(h.quantile(0.5))
    with pytest.raises(ValueError, match=r"q must be in \[0, 1\]"):
        _filled([1.0]).quantile(1.5)
