"""The canary judge: is the candidate version as good as the baseline on the same window?

Five checks, each pass / marginal / not enough data / fail (or not available, which decides
nothing), and one verdict:

``enough data``  both versions served at least ``min_requests`` requests; below, the verdict is
                 "not enough data" unless another check fails: an early look never passes.
``latency``      the Hodges-Lehmann shift of the candidate's per-request latencies from the
                 baseline's (the median of all ``n*m`` differences candidate - baseline), its
                 distribution-free (Moses) confidence interval, and the one-sided Mann-Whitney
                 U test (candidate slower) beside it. Fails when the interval's lower bound is
                 above the tolerated slowdown, ``max(max_slowdown * baseline median,
                 min_slowdown_s)``; marginal when only the estimate is; passes otherwise.
                 Each bound is one-sided at the look's level: the Mann-Whitney critical value,
                 exact up to `EXACT_PAIRS` pairs, its normal approximation above.
``errors``       server-side error rates, one-sided Fisher exact test (candidate worse): fails
                 when significant at the corrected level, marginal when only at the nominal one.
``activations``  `avgpool.monitor.compare` of the candidate's live activation profile against
                 the baseline's, layers matched as ``diff`` matches them: a failing layer fails,
                 a warning or a layer on one side only is marginal; not enough data until every
                 layer of both holds ``min_profiled`` values per channel.
``outputs``      on mirrored requests (shadow mode): top-1 agreement and the largest absolute
                 difference of the two versions' outputs for the same input.

Overall: any fail is fail; else not enough data; else marginal; else pass (exit 0 pass, 1
marginal or not enough data, 2 fail).

**Sequential looks.** The judge is called again and again while traffic flows (look 1, 2, ... up
to ``max_looks``), each time on all the data so far. Testing each look at ``alpha`` would give
an identical candidate many chances to fail by luck (about one canary in five at 20 looks and
alpha 0.05, as the tests measure). The latency and error tests therefore spend alpha by
Bonferroni over the looks: each look tests at ``alpha / max_looks``, so the chance of any false
fail over all looks is at most ``alpha`` whatever the correlation between looks. An
O'Brien-Fleming (Lan-DeMets) spending function would be less conservative at late looks, but it
needs the information fraction of each look (known only to whoever schedules them, and traffic
rates change) and it spends almost nothing early, where a rollback must be fast; Bonferroni
needs no state between calls.

**Against Kayenta.** Kayenta's judge (NetflixACAJudge, behind Spinnaker and Argo Rollouts)
classifies each metric with a Mann-Whitney U test and the confidence interval of the
Hodges-Lehmann shift (98% by default): High when the whole interval lies above a band of
0.25 x |the estimate itself| and the ratio of the means exceeds ``allowedIncrease`` (default
1.0); the canary's score is the weighted share of metrics that pass, against pass and marginal
score thresholds, and a metric marked critical fails it outright. Ours differs where a
rollback gate needs it:

- An effect-size tolerance, not significance alone: Kayenta's band scales with the estimate,
  so with enough requests any real shift, however small, is High unless an effect size is
  configured, and its effect size is a ratio of means, which a few slow outliers move. Ours
  fails only when the whole interval of the (robust) median shift is beyond a stated slowdown:
  seconds, and a share of the baseline median.
- A sequential correction: Kayenta judges each interval at the same level, so judging a canary
  every interval raises its false-fail rate with every look; ours spends alpha over the looks.
- "Not enough data" is its own verdict, never a pass: Kayenta gives a verdict on whatever count
  the interval holds. A check that cannot be computed (no profile from Prometheus) is shown as
  not available and decides nothing.
- No weights: every check is critical, so good metrics never outvote a broken one; and two
  checks no latency metric can make (activations, outputs on the same inputs) are first-class.

**The Hodges-Lehmann estimate, exactly.** Latencies are taken in whole nanoseconds (no clock in a
server's path resolves finer), so every difference is an exact integer. The k-th smallest of the
``n*m`` differences is found by bisection on its value, counting the differences at or below a
value exactly with one sorted search of the baseline per candidate latency: ``O(m log n)`` per
step and at most about 50 steps, never the ``n*m`` differences themselves (20,000 latencies a side
are 4e8 differences).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from avgpool._errors import AvgPoolError

if TYPE_CHECKING:
    from avgpool._tables import Table
    from avgpool.monitor import Profile, Threshold

__all__ = [
    "EXACT_PAIRS",
    "EXIT_CODES",
    "NOT_AVAILABLE",
    "VERDICTS",
    "Check",
    "Evidence",
    "Mirror",
    "Policy",
    "Verdict",
    "hodges_lehmann",
    "judge",
    "kth_differences",
    "latency_check",
    "lower_rank",
    "verdict_table",
]

#: Every verdict, mildest first, and the exit code of each.
VERDICTS = ("pass", "marginal", "not enough data", "fail")
EXIT_CODES = {"pass": 0, "marginal": 1, "not enough data": 1, "fail": 2}
#: A check that cannot be computed from what was given; it does not decide the verdict.
NOT_AVAILABLE = "not available"
#: Precedence in the overall verdict: a fail wins, then too little data, then a marginal check.
_RANK = {"pass": 0, NOT_AVAILABLE: 0, "marginal": 1, "not enough data": 2, "fail": 3}
#: Latencies above this are refused: no request takes days, and nanosecond differences of
#: larger values would not fit the 64-bit integers the selection counts in.
MAX_LATENCY_S = 1e6
#: Exact Mann-Whitney critical values up to this many pairs, the normal approximation above.
EXACT_PAIRS = 2500


@dataclass
class Evidence:
    """One version over the judging window.

    ``latencies`` in seconds (answered requests), ``requests`` answered plus failed,
    ``errors`` server-side failures only (a client's bad request says nothing of the version),
    ``profile`` its live activation profile, if known."""

    version: str
    latencies: np.ndarray
    requests: int
    errors: int = 0
    profile: Profile | None = None

    def __post_init__(self) -> None:
        self.latencies = np.asarray(self.latencies, dtype=np.float64).ravel()
        sound = np.isfinite(self.latencies) & (self.latencies >= 0) & (self.latencies <= MAX_LATENCY_S)
        if not sound.all():
            raise AvgPoolError(
                f"latencies of version {self.version!r} must be finite seconds from 0 to {MAX_LATENCY_S:g}, "
                f"got {self.latencies[~sound][0]}"
            )
        if not (0 <= self.errors <= self.requests):
            raise AvgPoolError(
                f"errors of version {self.version!r} must be between 0 and requests ({self.requests}), "
                f"got {self.errors}"
            )


@dataclass
class Mirror:
    """Mirrored (shadow) requests: both versions ran the same inputs."""

    compared: int
    top1_agree: int
    max_abs_error: float
    max_rel_error: float = math.nan


@dataclass
class Policy:
    """Every threshold of the judge; the defaults and why.

    alpha
        Family-wise false-fail rate of the latency and error tests over all looks (0.05, the
        usual level).
    max_looks
        Looks the rate is spread over (Bonferroni: each look tests at ``alpha / max_looks``).
        20 covers a 5-step rollout judged 4 times per step.
    max_slowdown, min_slowdown_s
        The slowdown tolerated, relative to the baseline median (10%: what a latency objective
        usually leaves) and absolute (0.5 ms: below that, scheduling noise on a busy host and
        nothing a user sees); the larger counts.
    min_requests
        Requests per version before the judge may pass (200: the Mann-Whitney test's normal
        approximation is excellent there, and a 10% shift of a typical latency spread is found).
    min_mirrored
        Mirrored requests before outputs are judged (100: one disagreement is then 1%).
    min_profiled
        Values per channel in every layer of both live profiles before activations are judged
        (20; for a global pool, the sampled inputs): the drift statistics are effect sizes with
        no allowance for sample size, and over 5 to 10 inputs of the very same model a global
        average pool's PSI already warns and nears the fail threshold.
    min_top1_agreement, max_abs_error
        Two versions of the same model on the same input: top-1 classes agree on 99% of inputs
        at least, and no output differs by more than 1e-4 (float32 rounding between runtimes
        is ~1e-6 relative; a changed layer moves outputs far more).
    drift
        Per-metric overrides of `avgpool.monitor.THRESHOLDS` (a layer's fail fails the canary,
        its warning makes it marginal).
    """

    alpha: float = 0.05
    max_looks: int = 20
    max_slowdown: float = 0.10
    min_slowdown_s: float = 0.0005
    min_requests: int = 200
    min_mirrored: int = 100
    min_profiled: int = 20
    min_top1_agreement: float = 0.99
    max_abs_error: float = 1e-4
    drift: Mapping[str, Threshold] | None = None

    def __post_init__(self) -> None:
        if not (0 < self.alpha <= 0.5):  # a one-sided level above 1/2 bounds nothing
            raise AvgPoolError(f"alpha must be above 0 and at most 0.5, got {self.alpha}")
        for name in ("max_looks", "min_requests", "min_mirrored", "min_profiled"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise AvgPoolError(f"{name} must be an integer >= 1, got {value!r}")
        for name in ("max_slowdown", "min_slowdown_s", "max_abs_error"):
            value = getattr(self, name)
            if not (value >= 0):
                raise AvgPoolError(f"{name} must be a number >= 0, got {value}")
        if not (0 <= self.min_top1_agreement <= 1):
            raise AvgPoolError(f"min_top1_agreement must be between 0 and 1, got {self.min_top1_agreement}")

    def alpha_at(self, look: int) -> float:
        """The level each test uses at ``look`` (Bonferroni over ``max_looks``)."""
        if (
            isinstance(look, bool)
            or not isinstance(look, (int, np.integer))
            or not 1 <= look <= self.max_looks
        ):
            raise AvgPoolError(
                f"look must be an integer from 1 to max_looks ({self.max_looks}), got {look!r}: "
                "the false-alarm budget is spread over max_looks looks"
            )
        return self.alpha / self.max_looks

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["drift"] = None if self.drift is None else {k: [t.warn, t.fail] for k, t in self.drift.items()}
        return out


@dataclass
class Check:
    """One check's verdict, why, and the numbers behind it."""

    name: str
    verdict: str
    reason: str
    stats: dict[str, Any] = field(default_factory=dict)


@dataclass
class Verdict:
    """The judge's answer at one look: the overall verdict and every check."""

    verdict: str
    checks: list[Check]
    look: int
    policy: Policy = field(default_factory=Policy)

    def exit_code(self) -> int:
        """0 pass, 1 marginal or not enough data, 2 fail."""
        return EXIT_CODES[self.verdict]

    def check(self, name: str) -> Check:
        for c in self.checks:
            if c.name == name:
                return c
        raise KeyError(name)

    @property
    def reasons(self) -> list[str]:
        """``name: reason`` of every check that keeps the canary from passing."""
        return [f"{c.name}: {c.reason}" for c in self.checks if _RANK[c.verdict] > 0]

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe: NaN and infinities become null."""
        from avgpool.monitor._json import clean

        return clean(
            {
                "verdict": self.verdict,
                "exit_code": self.exit_code(),
                "look": self.look,
                "max_looks": self.policy.max_looks,
                "alpha_per_look": self.policy.alpha / self.policy.max_looks,
                "reasons": self.reasons,
                "checks": [asdict(c) for c in self.checks],
                "policy": self.policy.to_dict(),
            }
        )


def judge(
    baseline: Evidence,
    candidate: Evidence,
    *,
    mirror: Mirror | None = None,
    policy: Policy | None = None,
    look: int = 1,
) -> Verdict:
    """Judge ``candidate`` against ``baseline`` at ``look`` (1-based, at most ``policy.max_looks``).

    Returns
    -------
    Verdict
        "pass", "marginal", "not enough data" or "fail", with every check.

    Raises
    ------
    AvgPoolError
        ``look`` outside 1..max_looks; a damaged profile (`avgpool.monitor.ProfileError`).
    """
    policy = policy or Policy()
    level = policy.alpha_at(look)
    checks = [
        _enough(baseline, candidate, policy),
        latency_check(baseline.latencies, candidate.latencies, policy, level),
        _errors(baseline, candidate, policy, level),
        _activations(baseline.profile, candidate.profile, policy),
        _outputs(mirror, policy),
    ]
    worst = max(checks, key=lambda c: _RANK[c.verdict]).verdict
    return Verdict("pass" if worst == NOT_AVAILABLE else worst, checks, look, policy)


def _enough(baseline: Evidence, candidate: Evidence, policy: Policy) -> Check:
    stats = {
        "baseline": baseline.requests,
        "candidate": candidate.requests,
        "min_requests": policy.min_requests,
    }
    short = [f"{e.version} {e.requests}" for e in (baseline, candidate) if e.requests < policy.min_requests]
    if short:
        return Check(
            "enough data",
            "not enough data",
            f"requests below {policy.min_requests}: {', '.join(short)}",
            stats,
        )
    return Check("enough data", "pass", f"{baseline.requests} and {candidate.requests} requests", stats)


# -- latency ---------------------------------------------------------------------------------


def _ns(seconds: np.ndarray) -> np.ndarray:
    return np.sort(np.rint(np.asarray(seconds, dtype=np.float64) * 1e9).astype(np.int64))


def kth_differences(x: np.ndarray, y: np.ndarray, ks: Any) -> np.ndarray:
    """The ``ks``-th smallest (1-based) of the differences ``y[j] - x[i]`` of two sorted int64
    arrays, exactly, by bisection on the value (see the module's docstring)."""
    ks = np.atleast_1d(np.asarray(ks, dtype=np.int64))
    n = len(x)
    lo = np.full(len(ks), y[0] - x[-1] - 1)  # no difference at or below: count 0 < k
    hi = np.full(len(ks), y[-1] - x[0])  # every difference at or below: count n*m >= k
    while np.any(hi - lo > 1):
        mid = lo + (hi - lo) // 2
        # y[j] - x[i] <= t  <=>  x[i] >= y[j] - t, exactly in integers
        counts = (n - np.searchsorted(x, y[None, :] - mid[:, None], side="left")).sum(axis=1)
        enough = counts >= ks
        hi, lo = np.where(enough, mid, hi), np.where(enough, lo, mid)
    return hi


@functools.lru_cache(maxsize=64)
def _u_cdf(n: int, m: int) -> np.ndarray:
    """Exact null distribution function of the Mann-Whitney U for samples of n and m (no ties),
    from the recurrence on the last element: f(n, m) = f(n - 1, m) shifted by m + f(n, m - 1)."""
    rows = [np.ones(1) for _ in range(m + 1)]  # n = 0: U is 0 in one way
    for i in range(1, n + 1):
        new = [np.ones(1)]  # m = 0
        for j in range(1, m + 1):
            counts = np.zeros(i * j + 1)
            counts[j : j + len(rows[j])] += rows[j]
            counts[: len(new[j - 1])] += new[j - 1]
            new.append(counts)
        rows = new
    pmf = rows[m] / rows[m].sum()
    return np.cumsum(pmf)


def lower_rank(n: int, m: int, alpha: float) -> int:
    """The k for which the k-th smallest difference is a one-sided (1 - alpha) lower bound of
    the shift: the largest k with P(U <= k - 1) <= alpha (0: no bound). Exact up to
    `EXACT_PAIRS` pairs, else the normal approximation with a continuity correction (ties make
    the true spread of U smaller, so ignoring them widens the interval)."""
    if n * m <= EXACT_PAIRS:
        cdf = _u_cdf(min(n, m), max(n, m))
        return int(np.searchsorted(cdf, alpha * (1 + 1e-12), side="right"))
    from scipy.stats import norm

    sigma = math.sqrt(n * m * (n + m + 1) / 12.0)
    return max(0, math.floor(n * m / 2 - 0.5 - norm.isf(alpha) * sigma) + 1)


def hodges_lehmann(baseline: Any, candidate: Any, alpha: float = 0.05) -> tuple[float, float, float]:
    """The Hodges-Lehmann shift of ``candidate`` from ``baseline`` (seconds) and its Moses
    confidence interval: each bound is a one-sided (1 - ``alpha``) bound, so the two make a
    (1 - 2 ``alpha``) interval; a bound is -inf / inf where the samples are too small for one."""
    if not (0 < alpha <= 0.5):
        raise AvgPoolError(f"alpha must be above 0 and at most 0.5, got {alpha}")
    x, y = _ns(baseline), _ns(candidate)
    n, m = len(x), len(y)
    if not n or not m:
        raise AvgPoolError(f"hodges_lehmann needs latencies on both sides, got {n} and {m}")
    total = n * m
    k = lower_rank(n, m, alpha)
    mid = [(total + 1) // 2, total // 2 + 1]
    wanted = mid + ([k, total - k + 1] if k else [])
    values = kth_differences(x, y, wanted).astype(np.float64) / 1e9
    estimate = float(values[:2].mean())
    lower, upper = (float(values[2]), float(values[3])) if k else (-math.inf, math.inf)
    return estimate, lower, upper


def latency_check(baseline: np.ndarray, candidate: np.ndarray, policy: Policy, level: float) -> Check:
    """The latency check at the test level ``level`` (the look's corrected alpha)."""
    n, m = len(baseline), len(candidate)
    if not n or not m:
        return Check("latency", "not enough data", f"latencies: {n} baseline, {m} candidate", {"n": [n, m]})
    from scipy.stats import mannwhitneyu

    median_b, median_c = float(np.median(baseline)), float(np.median(candidate))
    tolerance = max(policy.max_slowdown * median_b, policy.min_slowdown_s)
    shift, lower, upper = hodges_lehmann(baseline, candidate, level)
    p = float(mannwhitneyu(candidate, baseline, alternative="greater").pvalue)
    stats = {
        "n": [n, m],
        "median_s": [median_b, median_c],
        "p99_s": [float(np.quantile(baseline, 0.99)), float(np.quantile(candidate, 0.99))],
        "shift_s": shift,
        "ci_s": [lower, upper],
        "ci_level": 1 - 2 * level,
        "tolerance_s": tolerance,
        "mann_whitney_p": p,
        "alpha": level,
    }
    said = (
        f"shift {_ms(shift)} (CI {_ms(lower)} to {_ms(upper)}, {1 - 2 * level:.1%}) vs tolerated "
        f"{_ms(tolerance)}; Mann-Whitney p={p:.2g}"
    )
    if lower > tolerance:
        return Check("latency", "fail", f"slower: {said}", stats)
    if shift > tolerance:
        return Check("latency", "marginal", f"maybe slower: {said}", stats)
    return Check("latency", "pass", said, stats)


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:+.3g} ms" if math.isfinite(seconds) else ("-inf" if seconds < 0 else "+inf")


# -- errors, activations, outputs ------------------------------------------------------------


def _errors(baseline: Evidence, candidate: Evidence, policy: Policy, level: float) -> Check:
    from scipy.stats import fisher_exact

    (eb, nb), (ec, nc) = (baseline.errors, baseline.requests), (candidate.errors, candidate.requests)
    if not nb or not nc:
        return Check("errors", "not enough data", f"requests: {nb} baseline, {nc} candidate", {})
    # one-sided Fisher: exact at any count (a chi-square test is not with a handful of errors);
    # conditional, hence conservative, which a rollback gate can afford
    p = float(fisher_exact([[ec, nc - ec], [eb, nb - eb]], alternative="greater").pvalue)
    stats = {
        "errors": [eb, ec],
        "requests": [nb, nc],
        "rate": [eb / nb, ec / nc],
        "fisher_p": p,
        "alpha": level,
    }
    said = f"{ec}/{nc} ({ec / nc:.2%}) vs {eb}/{nb} ({eb / nb:.2%}); Fisher p={p:.2g}"
    if p < level:
        return Check("errors", "fail", f"more errors: {said}", stats)
    if p < policy.alpha:
        return Check(
            "errors", "marginal", f"maybe more errors (not after the look correction): {said}", stats
        )
    return Check("errors", "pass", said, stats)


def _observed(profile: Profile) -> int:
    return sum(
        t["count"] + t["nan"] + t["posinf"] + t["neginf"] for t in (layer.totals() for layer in profile)
    )


def _per_channel(layer: Any) -> int:
    """The fewest values (finite or not) any channel of ``layer`` holds."""
    seen = layer.count + layer.nan + layer.posinf + layer.neginf
    return int(np.min(seen)) if np.size(seen) else 0


def _activations(baseline: Profile | None, candidate: Profile | None, policy: Policy) -> Check:
    if baseline is None or candidate is None:
        which = " and ".join(w for w, p in (("baseline", baseline), ("candidate", candidate)) if p is None)
        return Check("activations", NOT_AVAILABLE, f"no live profile for the {which}", {})
    empty = [w for w, p in (("baseline", baseline), ("candidate", candidate)) if not _observed(p)]
    if empty:
        return Check("activations", "not enough data", f"no sampled activations yet: {', '.join(empty)}", {})
    thin = [
        f"{which} {layer.name} {_per_channel(layer)}"
        for which, profile in (("baseline", baseline), ("candidate", candidate))
        for layer in profile
        if _per_channel(layer) < policy.min_profiled
    ]
    if thin:
        return Check(
            "activations",
            "not enough data",
            f"values per channel below {policy.min_profiled}: {', '.join(thin)}",
            {"min_profiled": policy.min_profiled},
        )
    from avgpool.monitor import compare

    report = compare(baseline, candidate, thresholds=policy.drift)
    layers = {d.name: d.verdict for d in report.layers}
    stats = {
        "layers": {
            d.name: {
                "verdict": d.verdict,
                "reasons": list(d.reasons),
                **{k: d.metrics[k] for k in ("psi", "ks", "mean_shift")},
            }
            for d in report.layers
        },
        "first_drifted": None if report.first_drifted is None else report.first_drifted.name,
        "missing": list(report.missing),
        "added": list(report.added),
    }

    def named(verdict: str) -> str:
        return ", ".join(f"{d.name} ({', '.join(d.reasons)})" for d in report.layers if d.verdict == verdict)

    if "fail" in layers.values():
        return Check("activations", "fail", f"drift at {named('fail')}", stats)
    if "warn" in layers.values() or report.missing:
        parts = [f"drift warns at {named('warn')}"] if "warn" in layers.values() else []
        parts += [f"layers only in the baseline: {', '.join(report.missing)}"] if report.missing else []
        return Check("activations", "marginal", "; ".join(parts), stats)
    return Check("activations", "pass", f"{len(layers)} layers within the drift thresholds", stats)


def _outputs(mirror: Mirror | None, policy: Policy) -> Check:
    if mirror is None:
        return Check("outputs", NOT_AVAILABLE, "no mirrored requests (shadow mode compares outputs)", {})
    stats = {
        "compared": mirror.compared,
        "top1_agreement": mirror.top1_agree / mirror.compared if mirror.compared else math.nan,
        "max_abs_error": mirror.max_abs_error,
        "max_rel_error": mirror.max_rel_error,
    }
    if mirror.compared < policy.min_mirrored:
        return Check(
            "outputs",
            "not enough data",
            f"{mirror.compared} mirrored requests, {policy.min_mirrored} needed",
            stats,
        )
    agreement = stats["top1_agreement"]
    said = f"top-1 agreement {agreement:.2%} on {mirror.compared}, max abs error {mirror.max_abs_error:.3g}"
    wrong = []
    if agreement < policy.min_top1_agreement:
        wrong.append(f"agreement below {policy.min_top1_agreement:.2%}")
    if not (mirror.max_abs_error <= policy.max_abs_error):  # NaN fails too
        wrong.append(f"error above {policy.max_abs_error:.3g}")
    if wrong:
        return Check("outputs", "fail", f"{said}: {'; '.join(wrong)}", stats)
    return Check("outputs", "pass", said, stats)


def verdict_table(verdict: Verdict, title: str = "canary judge") -> Table:
    """The verdict as an `avgpool._tables` table: one row per check."""
    rows = [[c.name, c.verdict, c.reason] for c in verdict.checks]
    policy = verdict.policy
    footer = [
        f"verdict: {verdict.verdict} (exit {verdict.exit_code()})",
        f"look {verdict.look} of {policy.max_looks}: each test at alpha {policy.alpha:g}/{policy.max_looks} "
        f"= {policy.alpha / policy.max_looks:.2g} (Bonferroni over looks)",
    ]
    return (f"{title}: {verdict.verdict}", ["check", "verdict", "reason"], rows, footer)
