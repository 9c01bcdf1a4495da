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
    look: int | None = None,
) -> Verdict:
    """The verdict on a server's canary records (the dict ``GET /admin/canary/{model}``
    returns) and its versions' live profiles: what the server's Flagger webhook answers with.

    ``look`` defaults to the state's ``"look"`` (the server counts the webhook's calls). A look
    past ``policy.max_looks`` is judged as the last one: every look tests at the same
    Bonferroni level, but the false-fail bound covers ``max_looks`` looks only, so set it to
    the number of times the analysis calls the webhook."""
    policy = policy or Policy()
    if look is None:
        look = min(max(int(state.get("look", 1)), 1), policy.max_looks)
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
