"""Serve models over the Open Inference Protocol (KServe v2 REST) with telemetry at their pooling
layers: Prometheus metrics, OpenTelemetry traces and metrics, live activation profiles and drift
against a baseline.

Importing this package loads NumPy only; FastAPI, uvicorn, prometheus-client, OpenTelemetry,
ONNX Runtime and torch load when a server or a model needs them (``pip install 'avgpool[serve]'``).
"""
