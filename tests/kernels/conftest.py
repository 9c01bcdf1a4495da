"""Every kernel test plans its calls afresh: tests change the drivers' tuning constants (which
kernel a geometry takes), and a call planned by an earlier test would keep the old choice."""

import pytest

from avgpool._backends import clear_plans


@pytest.fixture(autouse=True)
def fresh_plans():
    clear_plans()
    yield
    clear_plans()
