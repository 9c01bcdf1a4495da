"""Benchmark harness: avgpool against its peers, and against the memory bandwidth floor.

`make bench` (``benchmarks/run.py``) and ``avgpool bench suite`` run three suites
(`avgpool.bench.suites`): the synthetic cases (`run_benchmark` on `standard_cases`), the real
layers and the per-call overhead, and write the results with `write_results`. Nothing here is
imported by ``import avgpool``, and the peers' frameworks (torch, onnxruntime, cv2, scipy) are
imported only when a peer runs.

- `avgpool.bench.timing`: warm-up excluded, rotating inputs, a per-measurement time budget,
  nearest-rank median and spread.
- `avgpool.bench.floor`: streaming read/write rates measured in the same run; the floor.
- `avgpool.bench.cases`: the case table (geometry x layout x scale) and its inputs.
- `avgpool.bench.peers`: avgpool's call and one adapter per peer.
- `avgpool.bench.runner`: a case end to end, ratios and output agreement.
- `avgpool.bench.report`: machine facts, performance targets, JSON and markdown.
- `avgpool.bench.layers`: the real-layers suite (``layers.toml``, every pooling layer of real
  CNNs) and its summary; `avgpool.bench.overhead`: the per-call suite;
  `avgpool.bench.report_suites`: their markdown; `avgpool.bench.suites`: the three run from
  command-line options.

``avgpool bench`` (latency of one op beside its peers, or of a model, and A/B) is built on the
same timing harness and peers:

- `avgpool.bench.latency`: `bench_model`, `compare_models`, and `bench_op` from
  `avgpool.bench.op_latency`.
- `avgpool.bench.measure`: the settings and how one measurement is taken.
- `avgpool.bench.models`: ONNX Runtime sessions and PyTorch modules behind one timed call.
- `avgpool.bench.ab`: interleaved pairs and the ratio of medians with a bootstrap interval.
- `avgpool.bench.memory`: the RSS high-water mark over a stretch of calls.
- `avgpool.bench.latency_tables`: the command's tables.
- `avgpool.bench.serve_load`: ``avgpool bench serve``, an open-loop load generator for
  Open Inference Protocol servers (an HTTP client; it imports nothing of `avgpool.serve`).
"""

from avgpool.bench.ab import Ratio, ratio_of_medians, time_pairs
from avgpool.bench.cases import Case, make_inputs, rotation_count, standard_cases
from avgpool.bench.floor import Bandwidth, floor_seconds, measure_bandwidth
from avgpool.bench.latency import (
    LatencySettings,
    ModelBench,
    ModelComparison,
    OpBench,
    bench_model,
    bench_op,
    compare_models,
)
from avgpool.bench.memory import PeakRSS
from avgpool.bench.peers import PEERS, Peer, Prepared, avgpool_call
from avgpool.bench.report import detect_llc_bytes, machine_facts, render_markdown, summarize, write_results
from avgpool.bench.runner import Settings, run_benchmark, run_case
from avgpool.bench.timing import Timing, nearest_rank, time_calls

__all__ = [
    "PEERS",
    "Bandwidth",
    "Case",
    "LatencySettings",
    "ModelBench",
    "ModelComparison",
    "OpBench",
    "PeakRSS",
    "Peer",
    "Prepared",
    "Ratio",
    "Settings",
    "Timing",
    "avgpool_call",
    "bench_model",
    "bench_op",
    "compare_models",
    "detect_llc_bytes",
    "floor_seconds",
    "machine_facts",
    "make_inputs",
    "measure_bandwidth",
    "nearest_rank",
    "ratio_of_medians",
    "render_markdown",
    "rotation_count",
    "run_benchmark",
    "run_case",
    "standard_cases",
    "summarize",
    "time_calls",
    "time_pairs",
    "write_results",
]
