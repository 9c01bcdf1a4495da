"""Run a canary on a live ``avgpool serve --admin``: step the candidate's share of traffic up while
the judge passes, send every request back to the baseline at the first fail, promote at the end.

The loop only steers: it opens the canary, reads the evidence, asks the judge and changes the
share through the server's admin routes. The traffic comes from the server's users; the loop
sends none.

- **Looks.** One every ``interval`` seconds, numbered over the whole canary (not per step), so
  the judge's sequential correction over ``max_looks`` looks holds however the looks fall
  between steps.
- **Steps.** Each step starts a fresh judging window (``POST /admin/canary/{m}/reset``), so a
  step is judged on traffic at its own share only. A step is left upward after
  ``min_looks_per_step`` passing looks in a row; "marginal" and "not enough data" hold it.
- **Shadow first** (optional). A first stage in shadow mode: the baseline answers every
  request and the candidate runs it too, unseen, so the judge compares their outputs before any
  user gets an answer from the candidate.
- **Rollback.** The first "fail" sets the share to 0 at once, in the same look: all unversioned
  traffic goes to the baseline within one interval of the evidence that failed. The canary is
  left open at share 0 rather than deleted, because without a canary a request that names no
  version reaches the highest version, which is usually the candidate.
- **Promotion.** A share of 1.0 would leave the baseline no traffic to compare against, so it is
  never judged: the pass of the last step below 1.0 promotes, setting the share to 1.0 (every
  unversioned request to the candidate), and the canary stays open so it stays that way.
- **Undecided.** No decision after ``max_looks`` looks: traffic goes back to the baseline (unless
  ``hold_undecided``), and the outcome says the judge could not decide.

Every look's verdict, with each check's reason, and every admin call are kept in the
`RunResult`, whose ``to_dict()`` is the JSON log of ``avgpool canary run --json``.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from avgpool._errors import AvgPoolError

__all__ = ["DEFAULT_STEPS", "Look", "RunResult", "check_steps", "run_canary"]

#: The candidate's shares of unversioned traffic, step by step.
DEFAULT_STEPS = (0.05, 0.25, 0.5, 1.0)

#: Exit codes of ``avgpool canary run`` by outcome.
EXIT_CODES = {"promoted": 0, "undecided": 1, "rolled back": 2}


@dataclass
class Look:
    """One look: the share in force, the judge's verdict and each check's reason."""

    look: int
    step: int
    share: float
    elapsed: float
    verdict: str
    reasons: list[str]
    judge: dict[str, Any] = field(default_factory=dict)
    mode: str = "split"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class RunResult:
    """What a canary run did: its outcome, its looks and its admin calls, in order."""

    model: str
    baseline: str
    candidate: str
    outcome: str  # "promoted" | "rolled back" | "undecided"
    reason: str
    share: float  # the candidate's share when the run ended
    mode: str = "split"  # the canary's mode when the run ended
    looks: list[Look] = field(default_factory=list)
    actions: list[dict[str, Any]] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        """0 promoted, 1 undecided, 2 rolled back."""
        return EXIT_CODES[self.outcome]

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["exit_code"] = self.exit_code
        return out


def check_steps(steps: Sequence[float]) -> tuple[float, ...]:
    """``steps`` as a tuple of shares, once they rise strictly within (0, 1] and one is below 1.

    Examples
    --------
    >>> check_steps([0.05, 0.25, 1])
    (0.05, 0.25, 1.0)
    """
    shares = tuple(float(s) for s in steps)
    if not shares or any(not 0.0 < s <= 1.0 for s in shares):
        raise AvgPoolError(f"steps must be shares in (0, 1], got {list(shares)}")
    if any(b <= a for a, b in itertools.pairwise(shares)):
        raise AvgPoolError(f"steps must rise strictly, got {list(shares)}")
    if shares[0] >= 1.0:
        raise AvgPoolError(
            "steps need a share below 1 to judge at (at 1.0 the baseline gets no traffic), "
            f"got {list(shares)}"
        )
    return shares


class _Admin:
    """The server's admin canary routes, each call recorded (with the run's elapsed seconds)."""

    def __init__(
        self, url: str, model: str, baseline: str, candidate: str, client: Any, elapsed: Any
    ) -> None:
        self.url = url.rstrip("/")
        self.model = model
        self.baseline = baseline
        self.candidate = candidate
        self.client = client
        self.elapsed = elapsed
        self.actions: list[dict[str, Any]] = []

    def _call(self, action: str, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        import httpx

        target = f"{self.url}{path}"
        try:
            response = self.client.request(method, target, json=body)
        except httpx.HTTPError as exc:
            raise AvgPoolError(f"url: {method} {target} failed: {exc}") from exc
        record = {"action": action, "method": method, "path": path, "status": response.status_code}
        if body is not None:
            record["body"] = body
        record["elapsed"] = self.elapsed()
        self.actions.append(record)
        if response.status_code >= 300:
            raise AvgPoolError(
                f"url: {method} {target} answered {response.status_code}: {response.text[:300]} "
                "(the canary routes need `avgpool serve --admin` and a loopback client)"
            )
        return response

    def check_versions(self) -> None:
        import httpx

        target = f"{self.url}/v2/models/{quote(self.model, safe='')}"
        try:
            response = self.client.get(target)
        except httpx.HTTPError as exc:
            raise AvgPoolError(f"url: GET {target} failed: {exc}") from exc
        if response.status_code != 200:
            raise AvgPoolError(
                f"model: the server at {self.url} has no model {self.model!r} ({response.status_code})"
            )
        versions = [str(v) for v in response.json().get("versions", [])]
        for what, version in (("baseline", self.baseline), ("candidate", self.candidate)):
            if version not in versions:
                raise AvgPoolError(
                    f"{what}: model {self.model!r} has no version {version!r}; it has {versions}"
                )

    def share(self, action: str, share: float, mode: str = "split") -> None:
        body = {
            "model": self.model,
            "baseline": self.baseline,
            "candidate": self.candidate,
            "share": share,
            "mode": mode,
        }
        self._call(action, "POST", "/admin/canary", body)

    def reset(self) -> None:
        self._call("reset", "POST", f"/admin/canary/{quote(self.model, safe='')}/reset")


def _reasons(verdict: Any) -> list[str]:
    """Each check as ``name (verdict): reason``, the ones that did not pass first."""
    checks = list(getattr(verdict, "checks", []) or [])
    checks.sort(key=lambda c: getattr(c, "verdict", "") == "pass")
    return [f"{c.name} ({c.verdict}): {c.reason}" for c in checks]


def _as_dict(verdict: Any) -> dict[str, Any]:
    to_dict = getattr(verdict, "to_dict", None)
    return to_dict() if callable(to_dict) else {"verdict": getattr(verdict, "verdict", str(verdict))}


def _defaults(judge: Any, source: Any, policy: Any, max_looks: int) -> tuple[Any, Any, Any]:
    if judge is None:
        from avgpool.canary.judge import judge as judge_fn

        judge = judge_fn
    if policy is None:
        try:
            from avgpool.canary.judge import Policy
        except ImportError:  # an injected judge without the judge module: it gets no policy
            pass
        else:
            policy = Policy()
    if policy is not None and getattr(policy, "max_looks", max_looks) != max_looks:
        # the correction spreads alpha over the looks this run may take: the two must agree
        policy = dataclasses.replace(policy, max_looks=max_looks)
    if source is None:
        from avgpool.canary.sources import from_server as source
    return judge, source, policy


def run_canary(
    url: str,
    model: str,
    baseline: str,
    candidate: str,
    *,
    steps: Sequence[float] = DEFAULT_STEPS,
    interval: float = 10.0,
    max_looks: int = 20,
    min_looks_per_step: int = 1,
    policy: Any = None,
    judge: Callable[..., Any] | None = None,
    source: Callable[[str, str], tuple[Any, Any, Any]] | None = None,
    client: Any = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    log: Callable[[str, dict[str, Any]], None] | None = None,
    hold_undecided: bool = False,
    shadow_first: bool = False,
) -> RunResult:
    """Open a split canary of ``candidate`` against ``baseline`` on ``model`` and see it through.

    Parameters
    ----------
    url
        The server (``avgpool serve --admin``), e.g. ``http://127.0.0.1:8000``.
    model, baseline, candidate
        The model name and its two versions.
    steps
        The candidate's shares of unversioned traffic, rising, in (0, 1]. Each step below 1 is
        judged; passing the last of them promotes (share 1.0).
    interval
        Seconds between looks.
    max_looks
        Looks in all before giving up undecided; also the judge's ``Policy.max_looks``.
    min_looks_per_step
        Passing looks in a row needed to leave a step.
    policy
        The judge's `avgpool.canary.judge.Policy` (default: its defaults), with ``max_looks``
        set to this run's.
    judge, source
        ``judge(baseline, candidate, mirror=, policy=, look=)`` and ``source(url, model) ->
        (baseline, candidate, mirror)``; by default `avgpool.canary.judge.judge` and
        `avgpool.canary.sources.from_server`.
    client
        An ``httpx.Client`` for the admin calls (default: a new one, closed at the end).
    clock, sleep
        Monotonic seconds and a sleep, for tests.
    log
        Called as ``log(event, record)`` for every admin call (``event`` "action") and look
        (``event`` "look") as it happens.
    hold_undecided
        Leave the share where it is when undecided, instead of sending traffic to the baseline.
    shadow_first
        Judge a shadow stage before the first step: the baseline answers every request and the
        candidate runs it too, unseen, so its outputs are compared with the baseline's before
        any user gets one of its answers.

    Returns
    -------
    RunResult
        ``outcome`` "promoted", "rolled back" or "undecided", with every look and admin call.

    Raises
    ------
    AvgPoolError
        Bad steps or counts, a server that lacks the model or a version, or an admin call
        refused. On any error or interruption after the canary opened, traffic is sent back to
        the baseline first.
    """
    shares = check_steps(steps)
    # (mode, share) of each judged stage; the share of a shadow stage is no user's traffic
    stages = [("shadow", 0.0)] if shadow_first else []
    stages += [("split", s) for s in shares if s < 1.0]
    if not interval > 0:
        raise AvgPoolError(f"interval must be > 0 seconds, got {interval}")
    if max_looks < 1 or min_looks_per_step < 1:
        raise AvgPoolError(
            f"max_looks and min_looks_per_step must be >= 1, got {max_looks} and {min_looks_per_step}"
        )
    judge, source, policy = _defaults(judge, source, policy, max_looks)
    own_client = client is None
    if own_client:
        import httpx

        client = httpx.Client(timeout=30.0)
    start = clock()

    def elapsed() -> float:
        return round(clock() - start, 6)

    admin = _Admin(url, model, baseline, candidate, client, elapsed)
    result = RunResult(
        model,
        baseline,
        candidate,
        outcome="undecided",
        reason="",
        share=0.0,
        actions=admin.actions,
        settings={
            "url": admin.url,
            "steps": list(shares),
            "interval": interval,
            "max_looks": max_looks,
            "min_looks_per_step": min_looks_per_step,
            "shadow_first": shadow_first,
        },
    )

    def note(event: str, record: dict[str, Any]) -> None:
        if log is not None:
            log(event, record)

    def set_share(action: str, share: float, mode: str = "split") -> None:
        admin.share(action, share, mode)
        result.share, result.mode = share, mode
        note("action", admin.actions[-1])

    def stage(step: int) -> str:
        mode, share = stages[step]
        return "shadow" if mode == "shadow" else f"share {share:g}"

    try:
        admin.check_versions()
        opened = False
        try:
            step = 0
            set_share("open", stages[0][1], stages[0][0])
            opened = True
            admin.reset()
            note("action", admin.actions[-1])
            passes = 0
            for k in range(1, max_looks + 1):
                # looks keep to the interval's grid: the time a look takes is not added to it
                wait = start + k * interval - clock()
                if wait > 0:
                    sleep(wait)
                evidence = source(admin.url, model)
                verdict = judge(evidence[0], evidence[1], mirror=evidence[2], policy=policy, look=k)
                mode, share = stages[step]
                look = Look(
                    k, step, share, elapsed(), verdict.verdict, _reasons(verdict), _as_dict(verdict), mode
                )
                result.looks.append(look)
                note("look", look.to_dict())
                if verdict.verdict == "fail":
                    set_share("rollback", 0.0)
                    result.outcome = "rolled back"
                    result.reason = f"look {k} failed at {stage(step)}: " + "; ".join(
                        r for r in look.reasons if " (fail): " in r
                    )
                    return result
                passes = passes + 1 if verdict.verdict == "pass" else 0
                if passes < min_looks_per_step:
                    continue
                if step + 1 == len(stages):
                    set_share("promote", 1.0)
                    result.outcome = "promoted"
                    passed = ", ".join(m if m == "shadow" else f"{v:g}" for m, v in stages)
                    result.reason = f"every step passed ({passed}); look {k} of {max_looks}"
                    return result
                step += 1
                passes = 0
                set_share("step", stages[step][1], stages[step][0])
                admin.reset()
                note("action", admin.actions[-1])
            result.reason = f"no decision after {max_looks} looks, at {stage(step)}"
            if not hold_undecided:
                set_share("rollback", 0.0)
            return result
        except BaseException:
            if opened and (result.share, result.mode) != (0.0, "split") and result.outcome == "undecided":
                try:  # whatever went wrong, users are better off on the baseline
                    set_share("rollback", 0.0)
                except Exception:  # the original error is the one to report
                    pass
            raise
    finally:
        if own_client:
            client.close()
