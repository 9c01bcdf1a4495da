"""Backends are found from the array's type, among the array libraries already imported; each op's
arguments are handled once, before any backend sees them (`avgpool._backends`)."""

import sys
import types

import numpy as np
import pytest

import avgpool as ap
from avgpool import _backends
from avgpool.window import Window


class _Recording(_backends.Backend):
    """A backend that records what the ops hand it."""

    name = "recording"

    class errors(ap.AvgPoolError):
        pass

    def __init__(self):
        self.calls = []

    def array(self, x, name="input", allow_int=False):
        return x

    def avg_pool(self, x, window, out):
        self.calls.append(("avg_pool", window))
        return "pooled"

    def max_pool(self, x, window, nan_policy, out, return_indices):
        self.calls.append(("max_pool", window, nan_policy, return_indices))
        return "maxed"


@pytest.fixture
def library(monkeypatch):
    """An imported array library 'fakearray' and its adapter, registered as a Dask one would be."""
    fakearray = types.ModuleType("fakearray")
    fakearray.Array = type("Array", (), {"shape": (1, 2, 6, 6)})
    adapter = types.ModuleType("fakearray_adapter")
    adapter.BACKEND = _Recording()
    monkeypatch.setitem(sys.modules, "fakearray", fakearray)
    monkeypatch.setitem(sys.modules, "fakearray_adapter", adapter)
    monkeypatch.setattr(_backends, "ADAPTERS", (("fakearray", "Array", "fakearray_adapter"),))
    monkeypatch.setattr(_backends, "_found", {})
    return fakearray, adapter.BACKEND


def test_an_adapter_gets_the_validated_geometry(library):
    fakearray, backend = library
    assert ap.avg_pool2d(fakearray.Array(), 3, 2, 1) == "pooled"
    assert ap.max_pool(fakearray.Array(), 2, nan_policy="omit") == "maxed"
    assert backend.calls == [
        ("avg_pool", Window.from_torch(3, 2, 1, ndim=2)),
        ("max_pool", Window(2, ndim=2), "omit", False),
    ]


def test_argument_errors_reach_the_caller_as_the_backends_class(library):
    fakearray, backend = library
    with pytest.raises(backend.errors, match="padding must be <= kernel_size // 2"):
        ap.avg_pool2d(fakearray.Array(), 2, padding=2)
    with pytest.raises(backend.errors, match="nan_policy must be"):
        ap.max_pool(fakearray.Array(), 2, nan_policy="skip")
    assert backend.calls == []


def test_a_library_that_is_not_imported_is_never_looked_for(library, monkeypatch):
    monkeypatch.delitem(sys.modules, "fakearray")
    monkeypatch.delitem(sys.modules, "fakearray_adapter")
    np.testing.assert_array_equal(ap.avg_pool(np.ones((1, 1, 4, 4)), 2), np.ones((1, 1, 2, 2)))
    assert "fakearray_adapter" not in sys.modules


def test_a_bound_op_takes_its_backends_arrays_only():
    numpy_only = ap.avg_pool2d.on(_backends.NUMPY)
    assert numpy_only.__name__ == "avg_pool2d"
    np.testing.assert_array_equal(numpy_only(np.ones((1, 1, 4, 4)), 2), np.ones((1, 1, 2, 2)))
    with pytest.raises(TypeError, match="input must be a NumPy array, got object"):
        numpy_only(object(), 2)
