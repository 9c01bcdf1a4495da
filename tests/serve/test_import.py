"""`import avgpool.serve` stays light: the server's stack loads when a server or a model needs it."""

from __future__ import annotations

import subprocess
import sys

HEAVY = (
    "torch",
    "onnxruntime",
    "fastapi",
    "uvicorn",
    "starlette",
    "prometheus_client",
    "opentelemetry",
    "psutil",
    "httpx",
)


def test_import_serve_loads_no_server_stack():
    code = f"import sys, avgpool.serve, avgpool.cli\nprint(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"
