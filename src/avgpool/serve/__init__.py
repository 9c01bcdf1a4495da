"""Serve models over the Open Inference Protocol (KServe v2 REST) with telemetry at their pooling
layers: Prometheus metrics, OpenTelemetry traces and metrics, live activation profiles and drift
against a baseline.

- `load_runner`: one model version (ONNX Runtime, or torch: a module, an ExportedProgram,
  TorchScript) whose sampled runs also return the outputs of its pooling layers;
- `Telemetry`: the Prometheus metrics (`METRICS`), 1-in-N sampling, the rolling live profile and
  its drift against a baseline;
- `ServeConfig`, `serve_models` (what ``avgpool serve`` runs) and `start_in_thread`;
- `alerting` and `dashboards`: the alert rules, the Alertmanager routes and the Grafana
  dashboards for these metrics, each from one definition (``scripts/make_deploy.py`` writes
  them to ``deploy/``).

Importing this package loads NumPy only; FastAPI, uvicorn, prometheus-client, OpenTelemetry,
ONNX Runtime and torch load when a server or a model needs them (``pip install 'avgpool[serve]'``).
"""

from avgpool.serve import alerting, dashboards
from avgpool.serve._runners import ModelRunError, Runner, TensorSpec, load_runner
from avgpool.serve._server import ServeConfig, ServerHandle, parse_model, serve_models, start_in_thread
from avgpool.serve._telemetry import ERROR_KINDS, METRICS, ModelTelemetry, Telemetry

__all__ = [
    "ERROR_KINDS",
    "METRICS",
    "ModelRunError",
    "ModelTelemetry",
    "Runner",
    "ServeConfig",
    "ServerHandle",
    "Telemetry",
    "TensorSpec",
    "alerting",
    "dashboards",
    "load_runner",
    "parse_model",
    "serve_models",
    "start_in_thread",
]
