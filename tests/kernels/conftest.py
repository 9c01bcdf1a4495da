"""Every kernel test plans its calls afresh (`fresh_plans`, in the tests' conftest)."""

import pytest


@pytest.fixture(autouse=True)
def _fresh(fresh_plans):
    yield
