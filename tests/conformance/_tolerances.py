"""The one table of numeric tolerances used by the conformance and gradient suites."""

from __future__ import annotations

import numpy as np

# Forward and backward results compared against a framework, keyed by dtype name.
CONFORMANCE = {
    "float64": {"rtol": 1e-12, "atol": 1e-12},
    "float32": {"rtol": 1e-5, "atol": 1e-6},
    "float16": {"rtol": 1e-3, "atol": 1e-3},
}

# Central finite differences of avgpool's own forward against its *_backward (float64 only).
FINITE_DIFFERENCE = {"eps": 1e-6, "rtol": 1e-6, "atol": 1e-8}


def conformance_tol(dtype) -> dict:
    """``rtol``/``atol`` for comparing arrays of ``dtype`` against a framework."""
    return CONFORMANCE[np.dtype(dtype).name]
