"""Activation telemetry at pooling layers: profiles, drift, exporters.

A `Profile` summarises what a model's pooling layers output (moments, min/max, NaN/inf counts,
base-2 exponential histograms, per channel), batch by batch, saved in a versioned file. Any two
profiles merge and compare, whoever made them. `compare` judges a candidate against a
baseline, layer by layer; the exporters
put the same numbers on a Prometheus endpoint and in TensorBoard.

Importing this package loads NumPy only: torch, onnxruntime, scipy, prometheus_client,
tensorboard, matplotlib and dask.distributed load inside the functions that need them
(``pip install 'avgpool[monitor]'``, ``pip install 'avgpool[dask]'`` for `profile_distributed`).
"""

from avgpool.monitor.collectors import (
    TorchCollector,
    iter_batches,
    load_inputs,
    profile_arrays,
    profile_model,
    profile_onnx,
    profile_torch,
)
from avgpool.monitor.distributed import profile_distributed
from avgpool.monitor.drift import (
    METRICS,
    THRESHOLDS,
    VERDICTS,
    DriftReport,
    LayerDrift,
    Threshold,
    compare,
    parse_threshold,
)
from avgpool.monitor.fileformat import FORMAT_VERSION
from avgpool.monitor.plot import plot_drift
from avgpool.monitor.profile import (
    DEFAULT_MAX_BUCKETS,
    LayerStats,
    Profile,
    ProfileError,
    load_profile,
    merge,
    save_profile,
)
from avgpool.monitor.prometheus import (
    Instrumented,
    ProfileCollector,
    exposition,
    instrument,
    serve,
    write_textfile,
)
from avgpool.monitor.tensorboard import write_tensorboard

__all__ = [
    "DEFAULT_MAX_BUCKETS",
    "FORMAT_VERSION",
    "METRICS",
    "THRESHOLDS",
    "VERDICTS",
    "DriftReport",
    "Instrumented",
    "LayerDrift",
    "LayerStats",
    "Profile",
    "ProfileCollector",
    "ProfileError",
    "Threshold",
    "TorchCollector",
    "compare",
    "exposition",
    "instrument",
    "iter_batches",
    "load_inputs",
    "load_profile",
    "merge",
    "parse_threshold",
    "plot_drift",
    "profile_arrays",
    "profile_distributed",
    "profile_model",
    "profile_onnx",
    "profile_torch",
    "save_profile",
    "serve",
    "write_tensorboard",
    "write_textfile",
]
