"""Profile: moments against NumPy, NaN/inf bookkeeping, histograms, exact merges."""

from __future__ import annotations

import numpy as np
import pytest

from avgpool.monitor import Profile, ProfileError, merge, profile_arrays


def test_hand_worked_example():
    # (N=2, C=2, 3): channel 0 holds 0 1 2 6 7 8, channel 1 holds 3 4 5 9 10 11
    p = Profile(bins=4, edges={"pool": [0.0, 3.0, 6.0, 9.0, 12.0]})
    p.update("pool", np.arange(12.0).reshape(2, 2, 3))
    layer = p["pool"]
    assert layer.count.tolist() == [6, 6]
    assert layer.mean.tolist() == [4.0, 7.0]
    assert layer.hist.tolist() == [0, 3, 3, 3, 3, 0]
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
    p = Profile(bins=4)
    p.update("l", x)
    layer = p["l"]
    assert layer.nan.tolist() == [1, 1]
    assert layer.posinf.tolist() == [0, 1]
    assert layer.neginf.tolist() == [1, 0]
    assert layer.count.tolist() == [2, 2]
    assert layer.mean.tolist() == [1.5, 2.5]
    assert layer.min.tolist() == [1.0, 2.0] and layer.max.tolist() == [2.0, 3.0]
    assert int(layer.hist.sum()) == 4


def test_first_batch_fixes_edges_and_outliers_go_to_outer_bins():
    p = Profile(bins=10)
    p.update("l", np.linspace(0.0, 1.0, 11).reshape(11, 1))
    edges = p["l"].edges
    np.testing.assert_allclose(edges[[0, -1]], [-0.1, 1.1])
    p.update("l", np.array([[-5.0], [5.0], [0.5]]))
    assert p["l"].edges is edges
    assert p["l"].hist[0] == 1 and p["l"].hist[-1] == 1 and p["l"].hist.sum() == 14


def test_merging_shards_equals_one_pass():
    rng = np.random.default_rng(2)
    data = rng.gamma(2.0, size=(60, 3, 4, 4))
    data[5, 1, 0, 0] = np.nan
    one = Profile(channel_hist=True)
    one.update("l", data[:10])  # fixes the edges for every shard
    one.update("l", data[10:])
    shards = []
    for part in (data[:10], data[10:25], data[25:]):
        shard = Profile.like(one)
        shard.update("l", part)
        shards.append(shard)
    merged = merge(shards)
    a, b = merged["l"], one["l"]
    for f in ("count", "nan", "posinf", "neginf", "hist", "channel_hist", "min", "max"):
        assert np.array_equal(getattr(a, f), getattr(b, f)), f
    np.testing.assert_allclose(a.mean, b.mean, rtol=1e-14)
    np.testing.assert_allclose(a.m2, b.m2, rtol=1e-12)
    assert a.channel_hist.sum(0).tolist() == a.hist.tolist()


def test_merge_refuses_different_edges_and_models():
    a = profile_arrays([{"l": np.zeros((2, 2))}])
    b = profile_arrays([{"l": np.ones((2, 2)) * 5}])
    with pytest.raises(ProfileError, match="edges differ"):
        a.merge(b)
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
    with pytest.raises(ProfileError, match="increasing"):
        Profile(bins=2, edges={"l": [0.0, 0.0, 1.0]})


def test_quantiles_from_histogram():
    x = np.linspace(0.0, 1.0, 100001).reshape(-1, 1)
    p = Profile(bins=100, edges={"l": np.linspace(0.0, 1.0, 101)})
    p.update("l", x)
    np.testing.assert_allclose(p["l"].quantile([0.1, 0.5, 0.9]), [0.1, 0.5, 0.9], atol=1e-4)
