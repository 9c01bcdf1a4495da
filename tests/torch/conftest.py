"""Shared fixtures and the one table of tolerances for the PyTorch front end's tests."""

import importlib.util

import pytest

if importlib.util.find_spec("torch") is None:  # the front end is optional: avgpool[torch]
    collect_ignore_glob = ["test_*.py"]
    TOLERANCES: dict = {}
else:
    import torch

    #: (rtol, atol) per dtype, for avgpool against torch.nn on the same input.
    TOLERANCES = {
        torch.float64: (1e-12, 1e-12),
        torch.float32: (1e-6, 1e-6),
        torch.float16: (1e-3, 1e-3),
        torch.bfloat16: (1e-2, 1e-2),
    }


def assert_close(actual, expected, dtype=None):
    rtol, atol = TOLERANCES[dtype or expected.dtype]
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol, equal_nan=True)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
