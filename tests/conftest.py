"""Fixtures shared across the test folders."""

import pytest

from avgpool._backends import clear_plans


@pytest.fixture
def fresh_plans():
    """Every planned and kept call forgotten before and after the test: tests change the
    drivers' tuning constants (which kernel a geometry takes), and a call planned by an
    earlier test would keep the old choice."""
    clear_plans()
    yield
    clear_plans()
