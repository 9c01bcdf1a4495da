"""The Dask backend's tests: skipped without ``avgpool[dask]``; the synchronous scheduler."""

import importlib.util

import pytest

if importlib.util.find_spec("dask") is None:  # the backend is optional: avgpool[dask]
    collect_ignore_glob = ["test_*.py"]
else:
    import dask

    @pytest.fixture(autouse=True)
    def _synchronous():
        with dask.config.set(scheduler="synchronous"):
            yield
