"""Profile: moments against NumPy, NaN/inf bookkeeping, histograms, merges of independently
made profiles equal to one pass."""

from __future__ import annotations

import numpy as np
import pytest

from avgpool.monitor import Profile, ProfileError, merge, profile_arrays


def test_hand_worked_example():
    # (N=2, C=2, 3): channel 0 holds 0 1 2 6 7 8, channel 1 holds 3 4 5 9 10 11
    p = Profile(max_buckets=4)
    p.update("pool", np.arange(12.0).reshape(2, 2, 3))
    layer = p["pool"]
    assert layer.count.tolist() == [6, 6]
    assert layer.mean.tolist() == [4.0, 7.0]
    # 1 .. 11 at scale -1 (base 4): (0.25, 1] (1, 4] (4, 16]; and one exact zero
    _, upper, counts = layer.hist.trimmed().layout()
    assert layer.hist.scale == -1
    assert upper.tolist() == [0.0, 1.0, 4.0, 16.0] and counts.tolist() == [[1, 1, 3, 7]]
    assert layer.totals()["mean"] == 5.5
    assert layer.totals()["std"] == pytest.approx(np.arange(12.0).std(), rel=1e-15)


def test_moments_match_numpy_float64_and_are_stable():
    rng = np.random.default_rng(1)
    # a large offset: the naive E[x^2] - E[x]^2 would lose every digit here
    x = 1e8 + rng.standard_normal((40, 5, 6, 6))
    p = Profile()
    for chunk in np.array_split(x, 7):
        p.update("l", chunk)
    per_channel = np.moveaxis(x, 1, 0).reshape(5, -1)
    np.testing.assert_allclose(p["l"].mean, per_channel.mean(1), rtol=1e-15)
    np.testing.assert_allclose(p["l"].std, per_channel.std(1), rtol=1e-7)
    assert p["l"].min.tolist() == per_channel.min(1).tolist()
    assert p["l"].max.tolist() == per_channel.max(1).tolist()
    assert p["l"].totals()["std"] == pytest.approx(x.std(), rel=1e-7)


def test_nan_and_inf_are_counted_not_averaged():
    # (N=2, C=2, 2): channel 0 holds 1, nan, -inf, 2; channel 1 holds 3, inf, 2, nan
    x = np.array([[[1.0, np.nan], [3.0, np.inf]], [[-np.inf, 2.0], [2.0, np.nan]]])
    p = Profile()
    p.update("l", x)
    layer = p["l"]
    assert layer.nan.tolist() == [1, 1]
    assert layer.posinf.tolist() == [0, 1]
    assert layer.neginf.tolist() == [1, 0]
    assert layer.count.tolist() == [2, 2]
    assert layer.mean.tolist() == [1.5, 2.5]
    assert layer.min.tolist() == [1.0, 2.0] and layer.max.tolist() == [2.0, 3.0]
    assert int(layer.hist.total().sum()) == 4


def test_the_first_batch_fixes_nothing_a_later_one_must_share():
    p = Profile(max_buckets=16)
    p.update("l", np.linspace(0.0, 1.0, 11).reshape(11, 1))
    p.update("l", np.array([[-5.0], [5.0], [1e6]]))  # far outside the first batch's range
    layer = p["l"]
    assert int(layer.hist.total().sum()) == 14
    assert layer.quantile(1.0) == 1e6 and layer.quantile(0.0) == -5.0


def _same(a, b) -> None:
    for f in ("count", "nan", "posinf", "neginf", "min", "max"):
        assert np.array_equal(getattr(a, f), getattr(b, f)), f
    for f in ("hist", "channel_hist"):
        x, y = getattr(a, f), getattr(b, f)
        assert (x is None) == (y is None), f
        if x is not None:
            x, y = x.trimmed(), y.trimmed()
            assert x.scale == y.scale, f
            for part in ("positive", "negative"):
                assert getattr(x, part).offset == getattr(y, part).offset or not getattr(x, part).width
                assert np.array_equal(getattr(x, part).counts, getattr(y, part).counts), (f, part)
            assert np.array_equal(x.zero, y.zero), f
    np.testing.assert_allclose(a.mean, b.mean, rtol=1e-14)
    np.testing.assert_allclose(a.m2, b.m2, rtol=1e-12)


def test_independent_shards_merge_to_one_pass():
    rng = np.random.default_rng(2)
    data = rng.gamma(2.0, size=(60, 3, 4, 4))
    data[5, 1, 0, 0] = np.nan
    data[40] *= 1e4  # a late shard far outside the first one's range
    data[41] = 0.0
    one = Profile(channel_hist=True)
    one.update("l", data)
    shards = []
    for part in (data[:10], data[10:25], data[25:]):
        shard = Profile(channel_hist=True)  # nothing shared between the shards
        shard.update("l", part)
        shards.append(shard)
    for order in ([0, 1, 2], [2, 0, 1]):
        merged = merge([shards[i] for i in order])
        _same(merged["l"], one["l"])
    nested = shards[2].merge(shards[0].merge(shards[1]))
    _same(nested["l"], one["l"])
    row_sum = merged["l"].channel_hist.row_sum()
    assert np.array_equal(row_sum.positive.counts, merged["l"].hist.positive.counts)


def test_merge_keeps_channel_histograms_only_when_every_shard_has_them():
    a = profile_arrays([{"l": np.zeros((2, 2))}], channel_hist=True)
    b = profile_arrays([{"l": np.ones((2, 2))}])
    merged = a.merge(b)
    assert merged["l"].channel_hist is None and not merged.channel_hist
    assert merged["l"].hist.zero.tolist() == [4] and int(merged["l"].hist.total()[0]) == 8


def test_merge_refuses_different_models():
    a = profile_arrays([{"l": np.zeros((2, 2))}])
    a.model = {"sha256": "a" * 64}
    c = Profile.like(a, model={"sha256": "b" * 64})
    c.update("l", np.zeros((2, 2)))
    with pytest.raises(ProfileError, match="different models"):
        a.merge(c)


def test_channel_mismatch_and_bad_dtype_are_errors():
    p = Profile()
    p.update("l", np.zeros((2, 3)))
    with pytest.raises(ProfileError, match="4 channels"):
        p.update("l", np.zeros((2, 4)))
    with pytest.raises(ProfileError, match="cannot profile"):
        p.update("l", np.array([["a"]]))
    with pytest.raises(ProfileError, match=r"max_buckets must be in \[4, 65536\], got 2"):
        Profile(max_buckets=2)


def test_quantiles_from_histogram():
    x = np.linspace(0.0, 1.0, 100001).reshape(-1, 1)
    p = Profile()
    p.update("l", x)
    layer = p["l"]
    q = np.array([0.0, 0.1, 0.5, 0.9, 1.0])
    exact = np.quantile(x, q, method="lower")
    assert np.all(np.abs(layer.quantile(q) - exact) <= layer.relative_error * exact * (1 + 1e-12))
    assert layer.relative_error < 0.025  # 1e-5 .. 1 is 17 octaves: scale 4 in 320 buckets
