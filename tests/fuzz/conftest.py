"""One worker process for the whole fuzz suite (kernels compile once), stopped at the end."""

import pytest

from ._worker import Worker


@pytest.fixture(scope="session")
def worker():
    w = Worker()
    yield w
    w.stop()
