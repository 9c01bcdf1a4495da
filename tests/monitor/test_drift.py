"""Drift statistics: no drift on the same data, the right layer flagged, scipy as the oracle."""

from __future__ import annotations

import numpy as np
import pytest

from avgpool.monitor import THRESHOLDS, Profile, ProfileError, compare, parse_threshold
from avgpool.monitor.drift import PSI_EPSILON, hist_stats
from avgpool.monitor.exphist import aligned, estimates

stats = pytest.importorskip("scipy.stats")


def layers(rng, n=4000):
    return {
        "a": rng.standard_normal((n, 4)),
        "b": rng.gamma(2.0, size=(n, 4, 2)),
        "c": np.maximum(rng.standard_normal((n, 4)), 0),
    }


def profile(batches, like=None, channel_hist=False):
    p = Profile.like(like) if like is not None else Profile(channel_hist=channel_hist)
    for batch in batches:
        p.update_many(batch)
    return p


def test_same_data_no_drift():
    data = layers(np.random.default_rng(0))
    base = profile([data])
    report = compare(base, profile([data], like=base))
    assert report.verdict == "ok" and not report.fails("warn")
    for d in report.layers:
        assert d.metrics == {
            "mean_shift": 0.0,
            "std_ratio": pytest.approx(1.0, abs=1e-15),
            "psi": 0.0,
            "ks": 0.0,
            "wasserstein": 0.0,
            "js": 0.0,
            "nonfinite": 0.0,
        }


def test_fresh_samples_of_the_same_distribution_pass():
    rng = np.random.default_rng(1)
    base = profile([layers(rng)])
    report = compare(base, profile([layers(rng)], like=base))
    assert report.verdict == "ok", [(d.name, d.metrics) for d in report.layers]


@pytest.mark.parametrize(
    ("change", "verdict", "flagged"),
    [
        (lambda x: x + 0.6 * x.std(), "fail", {"mean_shift", "wasserstein"}),
        (lambda x: (x - x.mean()) * 1.3 + x.mean(), "warn", {"std_ratio", "wasserstein"}),
        (lambda x: (x - x.mean()) * 3.0 + x.mean(), "fail", {"std_ratio", "psi", "ks"}),
    ],
)
def test_change_at_one_layer_is_flagged_there_only(change, verdict, flagged):
    rng = np.random.default_rng(2)
    data = layers(rng)
    base = profile([data])
    changed = {**data, "b": change(data["b"])}
    report = compare(base, profile([changed], like=base))
    assert report.by_name("a").verdict == "ok" and report.by_name("c").verdict == "ok"
    b = report.by_name("b")
    assert b.verdict == verdict
    assert flagged <= set(b.reasons)
    assert report.first_drifted is b and report.most_drifted(1) == [b]
    assert report.fails("fail") == (verdict == "fail") and report.fails("warn")
    assert not report.fails("never")


def test_bucketed_ks_and_wasserstein_bracket_the_exact_values():
    rng = np.random.default_rng(3)
    x, y = rng.standard_normal(20000), 0.3 + 1.2 * rng.standard_normal(20000)
    base, cand = Profile(), Profile(max_buckets=64)  # made apart, at different resolutions
    base.update("l", x)
    cand.update("l", y)
    d = compare(base, cand).by_name("l")
    exact_ks = stats.ks_2samp(x, y).statistic
    _, _, hb, hc = aligned(base["l"].hist, cand["l"].hist)
    bucket_mass = max(hb.max(), hc.max()) / 20000
    # on bucket bounds the KS statistic is a lower bound, short of the exact one by at most a bucket's mass
    assert d.metrics["ks"] <= exact_ks + 1e-12
    assert exact_ks - d.metrics["ks"] <= bucket_mass
    # each value moves by at most the relative error a: W1 is within a * (E|x| + E|y|)
    a = max(base["l"].relative_error, cand["l"].relative_error)
    exact_w1 = stats.wasserstein_distance(x, y)
    got_w1 = d.metrics["wasserstein"] * base["l"].totals()["std"]
    assert abs(got_w1 - exact_w1) <= a * (np.abs(x).mean() + np.abs(y).mean())
    assert d.metrics["mean_shift"] == pytest.approx((y.mean() - x.mean()) / x.std(), rel=1e-12)
    assert d.metrics["std_ratio"] == pytest.approx(y.std() / x.std(), rel=1e-12)


def test_bucketed_wasserstein_equals_scipy_on_the_same_buckets():
    rng = np.random.default_rng(4)
    lower = np.array([-4.0, -2.0, -1.0, 0.0, 0.5, 1.0, 2.0])
    upper = np.array([-2.0, -1.0, -0.5, 0.0, 1.0, 2.0, 4.0])
    cb, cc = rng.integers(0, 50, 7), rng.integers(0, 50, 7)
    got = hist_stats(lower, upper, cb, cc)
    points = estimates(lower, upper)
    assert points.tolist() == pytest.approx([-8 / 3, -4 / 3, -2 / 3, 0.0, 2 / 3, 4 / 3, 8 / 3])
    assert got["wasserstein"] == pytest.approx(stats.wasserstein_distance(points, points, cb, cc), rel=1e-12)
    cdf_b, cdf_c = np.cumsum(cb) / cb.sum(), np.cumsum(cc) / cc.sum()
    assert got["ks"] == pytest.approx(np.abs(cdf_b - cdf_c).max(), abs=1e-15)


def test_psi_and_js_hand_worked():
    # ten equal baseline buckets = ten decile groups; the candidate moves 0.1 from the first to the last
    lower, upper = np.arange(1.0, 11.0), np.arange(2.0, 12.0)
    cb = np.array([100] * 10)
    cc = np.array([0, *[100] * 8, 200])
    got = hist_stats(lower, upper, cb, cc)
    pc0 = PSI_EPSILON
    expected = (pc0 - 0.1) * np.log(pc0 / 0.1) + (0.2 - 0.1) * np.log(0.2 / 0.1)
    assert got["psi"] == pytest.approx(expected, rel=1e-12)
    p, q = np.full(10, 0.1), np.array([0, *[0.1] * 8, 0.2])
    m = (p + q) / 2
    kl = lambda a, b: sum(ai * np.log2(ai / bi) for ai, bi in zip(a, b) if ai > 0)  # noqa: E731
    assert got["js"] == pytest.approx(np.sqrt((kl(p, m) + kl(q, m)) / 2), rel=1e-12)


def test_channels_find_the_drifting_channel():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3000, 8, 2))
    base = profile([{"l": x}], channel_hist=True)
    y = x.copy()
    y[:, 5] += 1.0
    cand = profile([{"l": y}], like=base)
    plain = compare(base, cand).by_name("l")
    assert plain.verdict == "warn"  # one channel in eight: diluted at the layer level
    d = compare(base, cand, channels=True).by_name("l")
    assert d.verdict == "fail" and "channels" in d.reasons
    verdicts = d.channels.verdicts.tolist()
    assert verdicts[5] == 2 and verdicts[:5] + verdicts[6:] == [0] * 7
    assert d.channels.worst(1) == [5]


def test_new_nan_values_fail():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((1000, 4))
    base = profile([{"l": x}])
    y = x.copy()
    y[:10, 0] = np.nan
    d = compare(base, profile([{"l": y}], like=base)).by_name("l")
    assert d.metrics["nonfinite"] == pytest.approx(10 / 4000)
    assert d.verdict == "fail" and d.reasons == ("nonfinite",)


def test_layers_match_by_key_and_missing_layers_warn():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((500, 2))
    base = profile([{"/pool/MaxPool": x, "/gap/GlobalAveragePool": x}])
    cand = Profile.like(base)
    cand.update("/pool/AveragePool", x)
    report = compare(base, cand)
    (d,) = report.layers
    assert (d.name, d.candidate_name, d.verdict) == ("/pool/MaxPool", "/pool/AveragePool", "ok")
    assert report.missing == ("/gap/GlobalAveragePool",) and report.verdict == "warn"


def test_profiles_made_apart_compare():
    rng = np.random.default_rng(9)
    x = rng.standard_normal((4000, 2))
    a, b = Profile(), Profile(max_buckets=16)  # no baseline shared, different resolutions
    a.update("l", x[:2000])
    b.update("l", x[2000:])
    assert compare(a, b).verdict == "ok"
    c = Profile()
    c.update("l", np.full((100, 2), 1e6))  # nowhere near the baseline's buckets
    d = compare(a, c).by_name("l")
    assert d.verdict == "fail" and d.metrics["ks"] == pytest.approx(1.0)


def test_thresholds_override_and_parse():
    assert parse_threshold("psi=0.2:0.3")[1].warn == 0.2
    assert parse_threshold("ks=off")[1].fail == float("inf")
    for bad in ("psi", "nope=1:2", "psi=0.3:0.2", "psi=a:b"):
        with pytest.raises(ProfileError):
            parse_threshold(bad)
    rng = np.random.default_rng(8)
    x = rng.standard_normal((2000, 2))
    base = profile([{"l": x}])
    cand = profile([{"l": x + 0.3}], like=base)
    assert compare(base, cand).verdict == "fail"
    loose = {m: parse_threshold(f"{m}=off")[1] for m in ("psi", "ks", "wasserstein", "js")}
    assert compare(base, cand, thresholds=loose).verdict == "warn"  # mean shift 0.3: warn only
    assert compare(base, cand, metrics=["std_ratio"]).verdict == "ok"
    assert all(t.source for t in THRESHOLDS.values())


@pytest.mark.parametrize(("field", "value"), [("mean", np.nan), ("std", np.inf), ("max", -np.inf)])
def test_the_gate_refuses_statistics_no_data_can_give(field, value):
    # a profile forged or damaged in memory (load() refuses the same in a file)
    x = np.random.default_rng(8).standard_normal((200, 3))
    base = profile([{"l": x}])
    cand = profile([{"l": x}], like=base)
    stats = cand["l"]
    if field == "std":
        stats.m2[:] = value
    else:
        getattr(stats, field)[1] = value
    what = "m2" if field == "std" else field
    with pytest.raises(ProfileError, match=rf"candidate profile's layer 'l'.*{what} is not finite"):
        compare(base, cand)


def test_a_layer_with_no_finite_values_fails_whatever_metrics_gate():
    x = np.random.default_rng(9).standard_normal((300, 2))
    base = profile([{"l": x}])
    cand = profile([{"l": np.full_like(x, np.nan)}], like=base)
    for gating in (None, ["psi"], ["mean_shift", "ks"]):  # nonfinite alone used to catch it
        d = compare(base, cand, metrics=gating).by_name("l")
        assert d.verdict == "fail" and "no finite values" in d.reasons, gating
        assert np.isnan(d.metrics["mean_shift"]) and np.isnan(d.metrics["wasserstein"])
    both_nan = compare(cand, cand)
    assert both_nan.verdict == "fail" and both_nan.layers[0].reasons == ("no finite values",)
    assert any("no finite values in either profile" in n for n in both_nan.notes)


def test_a_gated_metric_that_cannot_be_computed_fails_a_channel():
    x = np.random.default_rng(10).standard_normal((300, 3))
    base = profile([{"l": x}])
    y = x.copy()
    y[:, 2] = np.nan  # one channel left with nothing to compare
    d = compare(base, profile([{"l": y}], like=base), metrics=["mean_shift"], channels=True).by_name("l")
    assert d.channels.verdicts.tolist() == [0, 0, 2] and d.verdict == "fail"
    both = compare(profile([{"l": y}]), profile([{"l": y}]), channels=True).by_name("l")
    assert both.channels.verdicts.tolist() == [0, 0, 2]
    assert both.channels.worst(1) == [2]  # its NaN statistics scored 0: it ranked last


def test_a_constant_layer_that_stays_constant_passes():
    x = np.zeros((100, 2))
    base = profile([{"l": x}])
    d = compare(base, profile([{"l": x}], like=base), channels=True).by_name("l")
    assert d.metrics["wasserstein"] == 0.0 and d.metrics["mean_shift"] == 0.0
    assert d.verdict == "ok" and d.channels.verdicts.tolist() == [0, 0]
