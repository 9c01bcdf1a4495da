"""`import avgpool` and `import avgpool.monitor` stay light: no optional stack at import."""

from __future__ import annotations

import subprocess
import sys

HEAVY = (
    "torch",
    "onnx",
    "onnxruntime",
    "scipy",
    "prometheus_client",
    "tensorboard",
    "matplotlib",
    "rich",
    "tqdm",
)


def test_import_monitor_loads_no_optional_dependency():
    code = (
        "import sys, avgpool, avgpool.monitor, avgpool.cli\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"
