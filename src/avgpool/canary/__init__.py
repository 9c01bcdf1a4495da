"""Canaries of a served model: judge a candidate version against the baseline on the same
window, from a live server, Prometheus or files (`avgpool canary judge`).

Imported where ``avgpool serve`` runs, this package registers `judge_server_state` with the
server (``avgpool.serve._app.register_judge``, where that hook exists) so its Flagger webhook
answers with the judge's verdict. Importing it loads NumPy; scipy loads when a judge runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from avgpool.canary.judge import (
    EXIT_CODES,
    VERDICTS,
    Check,
    Evidence,
    Mirror,
    Policy,
    Verdict,
    hodges_lehmann,
    judge,
    verdict_table,
)
from avgpool.canary.sources import from_files, from_prometheus, from_server, from_server_state, read_latencies

__all__ = [
    "EXIT_CODES",
    "VERDICTS",
    "Check",
    "Evidence",
    "Mirror",
    "Policy",
    "Verdict",
    "from_files",
    "from_prometheus",
    "from_server",
    "from_server_state",
    "hodges_lehmann",
    "judge",
    "judge_server_state",
    "read_latencies",
    "verdict_table",
]


def judge_server_state(
    state: Mapping[str, Any],
    profiles: Mapping[str, Any] | None = None,
    *,
    policy: Policy | None = None,
    look: int = 1,
) -> Verdict:
    """The verdict on a server's canary records (the dict ``GET /admin/canary/{model}``
    returns) and its versions' live profiles: what the server's Flagger webhook answers with."""
    baseline, candidate, mirror = from_server_state(state, profiles)
    return judge(baseline, candidate, mirror=mirror, policy=policy, look=look)


def _register_with_server() -> None:
    try:
        from avgpool.serve import _app
    except ImportError:  # the server's extras are not installed: there is no webhook to serve
        return
    register = getattr(_app, "register_judge", None)
    if register is not None:
        register(judge_server_state)


_register_with_server()
