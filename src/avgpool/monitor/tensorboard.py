"""TensorBoard export: each layer's histogram straight from the profile's own buckets (no raw
activations kept), and its mean, std and drift statistics as scalars, written with the
tensorboard package's event-file writer (no TensorFlow, no torch needed).

Tags: ``<prefix>/activation/<layer>`` (histogram), ``<prefix>/mean/<layer>``,
``<prefix>/std/<layer>`` and, with a baseline, ``<prefix>/psi/<layer>``,
``<prefix>/mean_shift/<layer>``, ``<prefix>/std_ratio/<layer>``. Leading slashes of ONNX node
names are dropped.
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np

from avgpool.monitor.profile import LayerStats, Profile, ProfileError

__all__ = ["write_tensorboard"]


def _histogram_proto(layer: LayerStats) -> Any:
    from tensorboard.compat.proto.summary_pb2 import HistogramProto

    t = layer.totals()
    # sum and sum of squares from the exact moments; bucket i spans (limit[i-1], limit[i]]: the
    # exponential buckets in ascending order, each at its upper bound
    n = t["count"]
    total = float((layer.count * layer.mean).sum())
    squares = float((layer.m2 + layer.count * layer.mean**2).sum())
    _, upper, counts = layer.hist.trimmed().layout()
    return HistogramProto(
        min=t["min"] if n else 0.0,
        max=t["max"] if n else 0.0,
        num=float(n),
        sum=total,
        sum_squares=squares,
        bucket_limit=upper.tolist(),
        bucket=counts[0].astype(np.float64).tolist(),
    )


def write_tensorboard(
    logdir: Any,
    profile: Profile,
    *,
    step: int = 0,
    baseline: Profile | None = None,
    prefix: str = "avgpool",
) -> str:
    """Write one step of ``profile`` (and its drift from ``baseline``) to an event file in
    ``logdir``; returns the event file's path."""
    try:
        from tensorboard.compat.proto.event_pb2 import Event
        from tensorboard.compat.proto.summary_pb2 import Summary
        from tensorboard.summary.writer.event_file_writer import EventFileWriter
    except ImportError:  # pragma: no cover
        raise ProfileError("TensorBoard export needs tensorboard: pip install 'avgpool[monitor]'") from None
    values = []
    for layer in profile:
        tag = layer.name.lstrip("/")
        t = layer.totals()
        values.append(Summary.Value(tag=f"{prefix}/activation/{tag}", histo=_histogram_proto(layer)))
        if t["count"]:
            values.append(Summary.Value(tag=f"{prefix}/mean/{tag}", simple_value=t["mean"]))
            values.append(Summary.Value(tag=f"{prefix}/std/{tag}", simple_value=t["std"]))
    if baseline is not None:
        from avgpool.monitor.drift import compare

        for d in compare(baseline, profile).layers:
            tag = d.candidate_name.lstrip("/")
            for metric in ("psi", "mean_shift", "std_ratio"):
                values.append(Summary.Value(tag=f"{prefix}/{metric}/{tag}", simple_value=d.metrics[metric]))
    logdir = os.fspath(logdir)
    os.makedirs(logdir, exist_ok=True)
    before = set(os.listdir(logdir))
    writer = EventFileWriter(logdir, filename_suffix=".avgpool")
    try:
        writer.add_event(Event(wall_time=time.time(), step=int(step), summary=Summary(value=values)))
    finally:
        writer.close()
    (created,) = sorted(set(os.listdir(logdir)) - before)
    return os.path.join(logdir, created)
