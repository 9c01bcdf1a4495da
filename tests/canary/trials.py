"""Real canaries on loopback: serve a variant's two models as two versions of one model, open a
canary between them, send the demo's images at a bounded rate and judge every ``look_every``
requests, recording after how many requests the judge decided. Used by
tests/canary/test_trials.py (a short run) and scripts/canary_trials.py (the table in
docs/canary.md).

A trial of a candidate expected to fail stops once the judge has said fail and every check the
variant names has failed (or at ``max_looks``). Any other trial runs all ``max_looks`` looks
unless one fails, so a fail at any of them counts: that is the false alarm the judge's
sequential correction bounds, and what the false-fail rate of the identical candidate reports.
"""

from __future__ import annotations

import statistics
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from avgpool.serve import ServeConfig, start_in_thread
from tests.canary.variants import MEASURED, Variant
from tests.canary.variants import images as demo_images

#: The model name both versions are served under; version 1 is the baseline, 2 the candidate.
MODEL = "tinynet"


@dataclass
class Look:
    """One look of the judge: after ``requests`` requests, its verdict and each check's."""

    look: int
    requests: int
    verdict: str
    checks: dict[str, str]
    reasons: dict[str, str]
    layers: dict[str, dict] = field(default_factory=dict)  # the activations check's, per layer


@dataclass
class Trial:
    """What one canary of ``variant`` came to."""

    variant: Variant
    seed: int
    verdict: str = "undecided"
    decided_at: int | None = None
    deciding: tuple[str, ...] = ()
    first_fail: dict[str, int] = field(default_factory=dict)
    looks: list[Look] = field(default_factory=list)
    seconds: float = 0.0
    sent: int = 0
    errors: list[str] = field(default_factory=list)
    url: str = ""

    @property
    def expected_checks_failed(self) -> bool:
        """Whether the checks the variant names failed (every one of ``fails_on``, at least one
        of ``fails_on_any``)."""
        failed = set(self.first_fail)
        needed = set(self.variant.fails_on)
        anyof = set(self.variant.fails_on_any)
        return needed <= failed and (not anyof or bool(anyof & failed))

    @property
    def ok(self) -> bool:
        """The verdict the variant expects, on the checks it expects (always, when measured)."""
        if self.variant.expected == MEASURED:
            return True
        if self.variant.expected == "pass":
            return self.verdict == "pass"
        return self.verdict == "fail" and self.expected_checks_failed

    def summary(self) -> str:
        checks = ", ".join(
            f"{name} @{n}" for name, n in sorted(self.first_fail.items(), key=lambda kv: kv[1])
        )
        return (
            f"{self.variant.name}/{self.variant.mode} seed {self.seed}: {self.verdict} "
            f"at {self.decided_at} requests ({', '.join(self.deciding) or '-'}); "
            f"failed checks: {checks or 'none'}; {self.sent} sent in {self.seconds:.1f} s"
        )


def _post(url: str, path: str, doc: dict) -> Any:
    import httpx

    answer = httpx.post(f"{url}{path}", json=doc, timeout=10)
    if answer.status_code >= 300:
        raise RuntimeError(f"POST {path} {doc}: {answer.status_code} {answer.text}")
    return answer.json()


class _Sender:
    """A thread sending single images to the model (no version: the canary routes them) at
    ``rate`` per second, ``count`` at a time when told to."""

    def __init__(self, url: str, images: np.ndarray, rate: float) -> None:
        import tritonclient.http as httpclient

        self._client = httpclient.InferenceServerClient(url.removeprefix("http://"), network_timeout=30.0)
        self._input = httpclient.InferInput
        self._images, self._rate = images, rate
        self.sent, self.failures = 0, []
        self._todo = 0
        self._go, self._done, self._stop = threading.Event(), threading.Event(), threading.Event()
        self._thread = threading.Thread(target=self._loop, name="canary-trial-sender", daemon=True)
        self._thread.start()

    def send(self, count: int, timeout: float) -> bool:
        """Send ``count`` more requests; whether they were all sent within ``timeout`` s."""
        self._todo = count
        self._done.clear()
        self._go.set()
        return self._done.wait(timeout)

    def _loop(self) -> None:
        while not self._stop.is_set():
            if not self._go.wait(0.1):
                continue
            self._go.clear()
            start = time.perf_counter()
            for i in range(self._todo):
                if self._stop.is_set():
                    break
                delay = start + i / self._rate - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                image = self._images[self.sent % len(self._images)][None]
                x = self._input("image", list(image.shape), "FP32")
                x.set_data_from_numpy(image)
                try:
                    self._client.infer(MODEL, [x])
                except Exception as exc:  # counted, and the trial reports them
                    self.failures.append(f"{type(exc).__name__}: {exc}")
                self.sent += 1
            self._done.set()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self._client.close()


def run_trial(
    variant: Variant,
    *,
    seed: int = 0,
    images: np.ndarray | None = None,
    rate: float = 100.0,
    share: float = 0.5,
    look_every: int = 25,
    max_looks: int = 20,
    timeout: float = 60.0,
    policy: Any = None,
) -> Trial:
    """Run one canary of ``variant`` on 127.0.0.1 and return what the judge said at each look.

    Parameters
    ----------
    variant
        The two models and the canary's mode (``split`` at ``share``, or ``shadow``).
    seed
        Orders the demo's 256 images (each repeat sees them in another order).
    rate
        Requests per second at most, one image each.
    look_every, max_looks
        The judge looks after every ``look_every`` requests, at most ``max_looks`` times (also
        the judge policy's number of looks, which its sequential correction spreads ``alpha``
        over).
    timeout
        Seconds the whole trial may take; it ends undecided past it.
    policy
        The judge's `Policy`; default: its defaults with ``max_looks``.
    """
    from avgpool.canary.judge import Policy, judge
    from avgpool.canary.sources import from_server

    policy = policy if policy is not None else Policy(max_looks=max_looks)
    pool = demo_images() if images is None else images
    order = np.random.default_rng(seed).permutation(len(pool))
    trial = Trial(variant, seed)
    config = ServeConfig(
        models=[f"{MODEL}:1={variant.base}", f"{MODEL}:2={variant.candidate}"],
        port=0,
        admin=True,
        sample_every=1,
        interval=0.5,
        window=max(60.0, 2 * timeout),
        log_level="warning",
    )
    started = time.monotonic()
    server = start_in_thread(config)
    trial.url = server.url
    sender = None
    try:
        if not server.wait_ready(timeout):
            raise RuntimeError(f"the server was not ready within {timeout} s")
        if variant.latency_ms:
            _post(
                server.url,
                "/admin/faults",
                {"model": MODEL, "version": "2", "latency_ms": variant.latency_ms},
            )
        _post(
            server.url,
            "/admin/canary",
            {"model": MODEL, "baseline": "1", "candidate": "2", "share": share, "mode": variant.mode},
        )
        sender = _Sender(server.url, pool[order], rate)
        for look in range(1, max_looks + 1):
            left = timeout - (time.monotonic() - started)
            if left <= 0 or not sender.send(look_every, left):
                trial.errors.append(f"timed out after {timeout} s")
                break
            baseline, candidate, mirror = from_server(server.url, MODEL)
            verdict = judge(baseline, candidate, mirror=mirror, policy=policy, look=look)
            _record(trial, look, sender.sent, verdict)
            if _finished(trial):
                break
        trial.sent = sender.sent
        trial.errors.extend(sender.failures[:5])
    finally:
        if sender is not None:
            sender.close()
        server.stop()
        for runner in server.state.repository.runners():
            runner.close()
        trial.seconds = time.monotonic() - started
    return trial


def _record(trial: Trial, look: int, requests: int, verdict: Any) -> None:
    checks = {c.name: c.verdict for c in verdict.checks}
    layers = next((c.stats.get("layers", {}) for c in verdict.checks if c.name == "activations"), {})
    trial.looks.append(
        Look(look, requests, verdict.verdict, checks, {c.name: c.reason for c in verdict.checks}, layers)
    )
    for name, said in checks.items():
        if said == "fail":
            trial.first_fail.setdefault(name, requests)
    if trial.verdict == "fail":
        return
    if verdict.verdict == "fail":
        trial.verdict, trial.decided_at = "fail", requests
        trial.deciding = tuple(sorted(n for n, said in checks.items() if said == "fail"))
    elif verdict.verdict == "pass" and trial.decided_at is None:
        trial.verdict, trial.decided_at = "pass", requests
    elif trial.decided_at is None:
        trial.verdict = verdict.verdict  # "not enough data" or "marginal", for now


def _finished(trial: Trial) -> bool:
    if trial.variant.expected == "fail":
        return trial.verdict == "fail" and trial.expected_checks_failed
    return trial.verdict == "fail"  # otherwise every look runs: a late false fail counts


# ---------------------------------------------------------------------------- the table


def table(trials: list[Trial]) -> str:
    """The markdown table of ``trials``: one row per variant and mode."""
    rows = [
        "| candidate | mode | expected | verdict | deciding check(s) | requests to decide "
        "(median, range) | first fail of each expected check (median) | false fails (95% bound) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    groups: dict[tuple[str, str], list[Trial]] = {}
    for t in trials:
        groups.setdefault((t.variant.name, t.variant.mode), []).append(t)
    for (name, mode), group in groups.items():
        v = group[0].variant
        verdicts = _counts(t.verdict for t in group)
        deciding = _counts("+".join(t.deciding) for t in group if t.deciding) or "-"
        wanted = ("pass", "fail") if v.expected == MEASURED else (v.expected,)
        decided = [t.decided_at for t in group if t.decided_at is not None and t.verdict in wanted]
        to_decide = f"{_median(decided)} ({min(decided)}-{max(decided)})" if decided else "-"
        named = v.fails_on + v.fails_on_any
        firsts = ", ".join(
            f"{c} {_median([t.first_fail[c] for t in group if c in t.first_fail])}"
            for c in named
            if any(c in t.first_fail for t in group)
        )
        false_fails = (
            _false_fails(sum(t.verdict == "fail" for t in group), len(group)) if v.expected == "pass" else "-"
        )
        rows.append(
            f"| {name} | {mode} | {_expected(v)} | {verdicts} | {deciding} | "
            f"{to_decide} | {firsts or '-'} | {false_fails} |"
        )
    return "\n".join(rows)


def activation_notes(trials: list[Trial]) -> list[str]:
    """For each variant and mode whose activations never failed: each layer's largest mean shift
    and PSI over its trials' last looks (what the drift thresholds saw and let through)."""
    groups: dict[tuple[str, str], list[Trial]] = {}
    for t in trials:
        groups.setdefault((t.variant.name, t.variant.mode), []).append(t)
    notes = []
    for (name, mode), group in groups.items():
        if any("activations" in t.first_fail for t in group) or not any(t.looks for t in group):
            continue
        last = [t.looks[-1] for t in group if t.looks and t.looks[-1].layers]
        layers = sorted({layer for look in last for layer in look.layers})
        if not layers:  # not judged yet at the last look (too few values per channel)
            continue
        seen = {layer: [look.layers[layer] for look in last if layer in look.layers] for layer in layers}
        worst = ", ".join(
            f"{layer} mean shift {max(abs(m['mean_shift']) for m in metrics):.2g} "
            f"PSI {max(m['psi'] for m in metrics):.2g}"
            for layer, metrics in seen.items()
        )
        notes.append(
            f"{name} ({mode}), activations at the last look, the largest of {len(last)} trials "
            f"(at {max(look.requests for look in last)} requests at most): {worst}"
        )
    return notes


def _false_fails(k: int, n: int) -> str:
    """``k/n`` and the one-sided 95% Clopper-Pearson upper bound of the rate."""
    from scipy.stats import beta

    upper = 1.0 if k == n else float(beta.ppf(0.95, k + 1, n - k))
    return f"{k}/{n} (at most {upper:.0%})"


def _expected(v: Variant) -> str:
    if v.expected == MEASURED:
        return "reported, not required"
    if v.fails_on:
        return f"fail on {' and '.join(v.fails_on)}"
    if v.fails_on_any:
        return f"fail on {' or '.join(v.fails_on_any)}"
    return v.expected


def _counts(values) -> str:
    values = list(values)
    if not values:
        return ""
    tally: dict[str, int] = {}
    for v in values:
        tally[v] = tally.get(v, 0) + 1
    if len(tally) == 1:
        ((value, n),) = tally.items()
        return value if n == 1 else f"{value} ({n}/{n})"
    return ", ".join(f"{v} {n}/{len(values)}" for v, n in sorted(tally.items(), key=lambda kv: -kv[1]))


def _median(values: list[int]) -> str:
    return f"{statistics.median(values):g}" if values else "-"
