"""Where the judge's evidence comes from: a live server, Prometheus, or files.

Each source returns ``(baseline, candidate, mirror)``: two `Evidence` and a `Mirror` (None where
no request was mirrored).

- `from_server`: ``GET /admin/canary/{model}`` of an ``avgpool serve --admin`` (the canary's
  per-version records since it opened or was last reset) and each version's live profile.
- `from_server_state`: the same from that JSON as a dict, in the server's own process.
- `from_prometheus`: Prometheus's HTTP query API over a window. Prometheus keeps the
  model-run latency *histogram*, not the requests, so latencies are approximate: each bucket's
  count in the window (``increase`` of the ``_bucket`` series, rounded) becomes that many
  latencies at the bucket's midpoint (the first bucket's from 0, the +Inf bucket's at the largest
  finite bound, an underestimate). The judge's rank statistics then see ties within a bucket:
  a shift smaller than a bucket can go unseen, one across buckets is found. Counts are
  Prometheus's ``increase``: it extrapolates to the window's end (by up to one scrape
  interval's share, the same for every bucket) and misses what a series held at its first
  scrape. Profiles are not in Prometheus, so activations are not available unless profiles
  are given.
- `from_files`: two profile files and two latency logs (one number per line in seconds, or a
  JSON list), for judging offline.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from avgpool._errors import AvgPoolError
from avgpool.canary.judge import Evidence, Mirror

__all__ = [
    "SERVER_ERROR_KINDS",
    "from_files",
    "from_prometheus",
    "from_server",
    "from_server_state",
    "mirror_from_dict",
    "read_latencies",
]

#: Error kinds that count against a version where only kinds are known (Prometheus): the server's
#: own failures (HTTP 5xx). A client's bad request, an unknown model or an oversized body says
#: nothing about the version.
SERVER_ERROR_KINDS = ("model_error", "not_ready")
Sources = tuple[Evidence, Evidence, "Mirror | None"]


def _server_errors(record: Mapping[str, Any]) -> int:
    """The server's own failures: its ``errors`` count (status 5xx), else the 5xx kinds."""
    if "errors" in record:
        return int(record["errors"])
    kinds = record.get("errors_by_kind") or {}
    return int(sum(int(kinds.get(k, 0)) for k in SERVER_ERROR_KINDS))


def from_server_state(state: Mapping[str, Any], profiles: Mapping[str, Any] | None = None) -> Sources:
    """Evidence from the JSON of ``GET /admin/canary/{model}`` (as a dict).

    ``profiles`` maps a version to its live `avgpool.monitor.Profile` (or None)."""
    try:
        versions = state["versions"]
        names = (str(state["baseline"]), str(state["candidate"]))
    except (KeyError, TypeError):
        raise AvgPoolError(
            f"a canary state must have 'baseline', 'candidate' and 'versions', got keys {sorted(state)}"
        ) from None
    profiles = profiles or {}
    evidence = []
    for name in names:
        record = versions.get(name, {})
        latencies = np.asarray(record.get("latencies", []), dtype=np.float64)
        errors = _server_errors(record)
        requests = max(int(record.get("requests", 0)), errors)
        evidence.append(Evidence(name, latencies, requests, errors, profiles.get(name)))
    mirror = mirror_from_dict(state.get("mirror"))
    return evidence[0], evidence[1], mirror


def mirror_from_dict(record: Any) -> Mirror | None:
    """The ``mirror`` part of the canary JSON as a `Mirror`; None when nothing was mirrored."""
    if not isinstance(record, Mapping) or not int(record.get("compared", 0) or 0):
        return None
    return Mirror(
        compared=int(record["compared"]),
        top1_agree=int(record.get("top1_agree", 0)),
        max_abs_error=_number(record.get("max_abs_error")),
        max_rel_error=_number(record.get("max_rel_error")),
    )


def _number(value: Any) -> float:
    return math.nan if value is None else float(value)


def _get(url: str, timeout: float) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:
            return answer.read()
    except urllib.error.HTTPError as exc:
        body = exc.read()[:500].decode("utf-8", "replace")
        raise AvgPoolError(f"GET {url}: HTTP {exc.code}: {body}") from None


def from_server(url: str, model: str, *, timeout: float = 10.0) -> Sources:
    """Evidence from a live ``avgpool serve --admin``: its canary records of ``model`` and both
    versions' live activation profiles.

    Raises
    ------
    AvgPoolError
        The server has no canary open on ``model`` (or answers with an error).
    OSError
        The server cannot be reached.
    """
    from avgpool.monitor import load_profile

    base = url.rstrip("/")
    quoted = urllib.parse.quote(model, safe="")
    state = json.loads(_get(f"{base}/admin/canary/{quoted}", timeout))
    profiles = {}
    with tempfile.TemporaryDirectory(prefix="avgpool-canary-") as tmp:
        for i, version in enumerate((state.get("baseline"), state.get("candidate"))):
            if version is None:
                continue
            v = urllib.parse.quote(str(version), safe="")
            path = os.path.join(tmp, f"{i}.avgprof")
            with open(path, "wb") as f:
                f.write(_get(f"{base}/v2/models/{quoted}/versions/{v}/profile", timeout))
            profiles[str(version)] = load_profile(path)
    return from_server_state(state, profiles)


# -- Prometheus ------------------------------------------------------------------------------

_DURATION = re.compile(r"([0-9]+(ms|s|m|h|d|w|y))+")
#: The server's metric families the query reads (`avgpool.serve` exports them).
#: The model-run histogram: the same measure as the server's canary records (the model run with
#: any injected delay, without the HTTP transfer both versions share).
LATENCY_METRIC = "avgpool_inference_latency_seconds"
REQUESTS_METRIC = "avgpool_requests_total"
ERRORS_METRIC = "avgpool_request_errors_total"


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _query(url: str, promql: str, timeout: float) -> list[dict[str, Any]]:
    address = f"{url.rstrip('/')}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    answer = json.loads(_get(address, timeout))
    if answer.get("status") != "success":
        raise AvgPoolError(f"Prometheus refused {promql!r}: {answer.get('error', answer)}")
    return answer["data"]["result"]


def bucket_latencies(buckets: Sequence[tuple[float, float]]) -> np.ndarray:
    """Approximate latencies from cumulative ``(le, count)`` histogram buckets: each bucket's
    count at its midpoint, the +Inf bucket's at the largest finite bound."""
    pairs = sorted((float(le), max(0.0, float(c))) for le, c in buckets)
    edges = [le for le, _ in pairs]
    cumulative = np.maximum.accumulate(np.rint([c for _, c in pairs]).astype(np.int64))
    counts = np.diff(cumulative, prepend=0)
    finite = [e for e in edges if math.isfinite(e)]
    points = []
    previous = 0.0
    for edge in edges:
        points.append((previous + edge) / 2 if math.isfinite(edge) else (finite[-1] if finite else math.nan))
        previous = edge if math.isfinite(edge) else previous
    if counts.sum() and not finite:
        raise AvgPoolError("a latency histogram needs finite buckets; only +Inf was returned")
    return np.repeat(np.asarray(points, dtype=np.float64), counts)


def from_prometheus(
    url: str,
    model: str,
    baseline: str,
    candidate: str,
    window: str = "10m",
    *,
    profiles: Mapping[str, Any] | None = None,
    histogram: str = LATENCY_METRIC,
    timeout: float = 10.0,
) -> Sources:
    """Evidence from Prometheus over the last ``window`` (a Prometheus duration: ``10m``,
    ``1h30m``): latencies approximated from the model-run histogram (``histogram``, e.g.
    ``avgpool_request_duration_seconds`` for whole requests; see the module's docstring),
    requests answered plus failed, server-side errors by kind (`SERVER_ERROR_KINDS`).
    ``profiles`` (version to `Profile`) adds activations; no mirror (Prometheus counts
    agreements, not output errors)."""
    if not _DURATION.fullmatch(window):
        raise AvgPoolError(f"window must be a Prometheus duration such as 10m or 1h30m, got {window!r}")
    profiles = profiles or {}
    evidence = []
    for version in (baseline, candidate):
        where = f'model="{_label(model)}",version="{_label(version)}"'
        rows = _query(url, f"sum by (le) (increase({histogram}_bucket{{{where}}}[{window}]))", timeout)
        latencies = bucket_latencies([(float(r["metric"]["le"]), float(r["value"][1])) for r in rows])
        answered = _total(_query(url, f"sum(increase({REQUESTS_METRIC}{{{where}}}[{window}]))", timeout))
        kinds = {
            r["metric"].get("kind", ""): round(float(r["value"][1]))
            for r in _query(url, f"sum by (kind) (increase({ERRORS_METRIC}{{{where}}}[{window}]))", timeout)
        }
        errors = sum(kinds.get(k, 0) for k in SERVER_ERROR_KINDS)
        requests = answered + sum(kinds.values())
        evidence.append(Evidence(version, latencies, max(requests, errors), errors, profiles.get(version)))
    return evidence[0], evidence[1], None


def _total(rows: list[dict[str, Any]]) -> int:
    return round(sum(float(r["value"][1]) for r in rows))


# -- files -----------------------------------------------------------------------------------


def read_latencies(path: Any) -> np.ndarray:
    """A latency log: one number per line (seconds; blank lines and ``#`` comments skipped), or
    a JSON list of numbers."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if text.lstrip().startswith("["):
        try:
            values = json.loads(text)
        except json.JSONDecodeError as exc:
            raise AvgPoolError(f"{path}: not a JSON list of latencies ({exc})") from None
    else:
        values = [line.split("#")[0].strip() for line in text.splitlines()]
        values = [v for v in values if v]
    try:
        out = np.asarray(values, dtype=np.float64).ravel()
    except (TypeError, ValueError):
        raise AvgPoolError(
            f"{path}: latencies must be numbers in seconds, one per line or a JSON list"
        ) from None
    if not np.isfinite(out).all() or (out < 0).any():
        raise AvgPoolError(f"{path}: latencies must be finite seconds >= 0")
    return out


def from_files(
    base_profile: Any,
    cand_profile: Any,
    base_latencies: Any,
    cand_latencies: Any,
    *,
    versions: tuple[str, str] = ("baseline", "candidate"),
    errors: tuple[int, int] = (0, 0),
    mirror: Mirror | None = None,
) -> Sources:
    """Evidence from two profile files (either may be None) and two latency logs; every logged
    latency is one answered request, plus ``errors`` failed ones per version."""
    from avgpool.monitor import load_profile

    evidence = []
    for version, profile, log, failed in zip(
        versions, (base_profile, cand_profile), (base_latencies, cand_latencies), errors
    ):
        latencies = read_latencies(log)
        loaded = None if profile is None else load_profile(profile)
        evidence.append(Evidence(version, latencies, len(latencies) + int(failed), int(failed), loaded))
    return evidence[0], evidence[1], mirror
