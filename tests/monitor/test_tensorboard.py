"""TensorBoard: the histogram and scalars read back with TensorBoard's own event reader."""

from __future__ import annotations

import numpy as np
import pytest

from avgpool.monitor import Profile, compare, write_tensorboard

pytest.importorskip("tensorboard")


def test_histograms_and_scalars_round_trip(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 2, 3))
    base = Profile(max_buckets=8)
    base.update("/pool/MaxPool", x)
    cand = Profile.like(base)
    cand.update("/pool/MaxPool", x * 1.5)
    path = write_tensorboard(tmp_path, cand, baseline=base, step=7)
    assert path.startswith(str(tmp_path)) and path.endswith(".avgpool")
    acc = EventAccumulator(str(tmp_path), size_guidance={"histograms": 0, "scalars": 0}).Reload()
    tags = acc.Tags()
    assert tags["histograms"] == ["avgpool/activation/pool/MaxPool"]
    assert set(tags["scalars"]) == {
        f"avgpool/{m}/pool/MaxPool" for m in ("mean", "std", "psi", "mean_shift", "std_ratio")
    }
    (event,) = acc.Histograms("avgpool/activation/pool/MaxPool")
    h = event.histogram_value
    layer = cand["/pool/MaxPool"]
    t = layer.totals()
    assert event.step == 7
    assert (h.num, h.min, h.max) == (1800, pytest.approx(t["min"]), pytest.approx(t["max"]))
    _, upper, counts = layer.hist.trimmed().layout()
    assert list(h.bucket) == counts[0].tolist() and sum(h.bucket) == 1800
    assert list(h.bucket_limit) == pytest.approx(upper.tolist())
    assert h.sum == pytest.approx((x * 1.5).sum(), rel=1e-9)
    assert h.sum_squares == pytest.approx(((x * 1.5) ** 2).sum(), rel=1e-9)
    (std,) = acc.Scalars("avgpool/std/pool/MaxPool")
    assert std.value == pytest.approx(t["std"], rel=1e-6)
    (psi,) = acc.Scalars("avgpool/psi/pool/MaxPool")
    assert psi.value == pytest.approx(compare(base, cand).layers[0].metrics["psi"], rel=1e-6)
