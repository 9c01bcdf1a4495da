"""Shared by the canary tests."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True, scope="module")
def _no_judge_left_registered():
    """Importing avgpool.canary registers its judge with the server (the Flagger webhook's); the
    server's own tests expect none registered once a module of these is done."""
    yield
    from avgpool.serve._canary import register_judge

    register_judge(None)
