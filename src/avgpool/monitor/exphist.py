"""Base-2 exponential histograms: any two of them merge and compare, whoever made them.

The layout is OpenTelemetry's exponential histogram. At scale ``s`` the base is
``2 ** 2 ** -s``; a value ``v > 0`` falls in positive bucket ``i`` when
``base ** i < v <= base ** (i + 1)``, a value ``v < 0`` in negative bucket ``i`` of ``-v``, and
exact zeros (``-0.0`` too) are counted on their own. Buckets depend on the value alone, never on
the data seen first, so nothing has to be agreed between the processes that fill histograms.

A histogram keeps at most ``max_buckets`` buckets per sign. When a value would widen either
sign's range past that, the scale drops (each step merges bucket pairs ``2j, 2j + 1`` into
``j``) until both fit; merging two histograms does the same at the lower of their scales. Every
bucket index is computed once at `MAX_SCALE` and shifted down, so the buckets of a value at any
scale are consistent bit for bit. The scale a set of values ends at is the highest at which its
range fits, whatever order the values came in and however they were split: filling in one
pass, filling batch by batch and merging shards in any grouping give identical histograms.

Each estimate from a bucket ``(L, U]`` is ``2LU / (L + U)``, within a relative error of
``(base - 1) / (base + 1)`` (`ExpHistogram.relative_error`) of any value in the bucket: about
2.2% at scale 4, 4.3% at scale 3. Zeros are exact.

A histogram has ``rows`` rows sharing one scale and bucket range: one per channel for
per-channel histograms, a single row for a layer.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "DEFAULT_MAX_BUCKETS",
    "MAX_BUCKETS_LIMIT",
    "MAX_SCALE",
    "Buckets",
    "ExpHistogram",
    "aligned",
    "estimates",
]

#: The finest scale: 2**20 buckets per octave (OpenTelemetry's maximum).
MAX_SCALE = 20
#: Buckets per sign unless told otherwise: magnitudes spanning up to 2**20 (a million-fold) keep
#: scale 4 (2.2% error), up to 2**40 scale 3 (4.3%).
DEFAULT_MAX_BUCKETS = 320
#: Fewest and most buckets per sign a histogram may keep (at 4 the whole float64 range fits
#: at scale -10, OpenTelemetry's lowest).
MIN_BUCKETS, MAX_BUCKETS_LIMIT = 4, 1 << 16

_ONE_OCTAVE = 1 << MAX_SCALE


def check_max_buckets(max_buckets: Any, name: str = "max_buckets") -> int:
    """``max_buckets`` as an int in [MIN_BUCKETS, MAX_BUCKETS_LIMIT], else a ValueError/TypeError."""
    if isinstance(max_buckets, bool) or not isinstance(max_buckets, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(max_buckets).__name__}")
    if not MIN_BUCKETS <= int(max_buckets) <= MAX_BUCKETS_LIMIT:
        raise ValueError(f"{name} must be in [{MIN_BUCKETS}, {MAX_BUCKETS_LIMIT}], got {max_buckets}")
    return int(max_buckets)


def indices(magnitudes: np.ndarray) -> np.ndarray:
    """Bucket indices at `MAX_SCALE` of positive, finite magnitudes (int64).

    ``frexp`` splits off the exponent exactly, so only the mantissa's logarithm is rounded, and
    powers of two land exactly on a bucket's (inclusive) upper bound.
    """
    mantissa, exponent = np.frexp(np.asarray(magnitudes, dtype=np.float64))
    # log2 of a mantissa in [0.5, 1) lies in [-1, 0); 0.5 (a power of two) is exactly -1
    frac = np.ceil(np.log2(mantissa) * _ONE_OCTAVE).astype(np.int64)
    frac = np.where(mantissa == 0.5, -_ONE_OCTAVE, np.maximum(frac, 1 - _ONE_OCTAVE))
    return exponent.astype(np.int64) * _ONE_OCTAVE + frac - 1


def _shift_to_fit(ranges: Sequence[tuple[int, int]], max_buckets: int) -> int:
    """The smallest right shift after which every (lo, hi) index range spans <= max_buckets."""
    shift = 0
    while any((hi >> shift) - (lo >> shift) + 1 > max_buckets for lo, hi in ranges):
        shift += 1
    return shift


@dataclass
class Buckets:
    """One sign's buckets: ``counts[:, j]`` is bucket ``offset + j`` of each row."""

    offset: int
    counts: np.ndarray

    @property
    def width(self) -> int:
        return int(self.counts.shape[1])

    def span(self) -> tuple[int, int] | None:
        """First and last index holding a count, or None when empty."""
        used = np.flatnonzero(self.counts.any(axis=0))
        if used.size == 0:
            return None
        return self.offset + int(used[0]), self.offset + int(used[-1])

    def downscaled(self, shift: int) -> Buckets:
        if shift == 0 or self.width == 0:
            return Buckets(self.offset >> shift, self.counts.copy())
        target = (self.offset + np.arange(self.width, dtype=np.int64)) >> shift
        offset = int(target[0])
        counts = np.zeros((self.counts.shape[0], int(target[-1]) - offset + 1), np.int64)
        np.add.at(counts, (slice(None), target - offset), self.counts)
        return Buckets(offset, counts)

    def covering(self, lo: int, hi: int) -> Buckets:
        """The same counts laid out over indices lo..hi (which must contain the used ones)."""
        counts = np.zeros((self.counts.shape[0], hi - lo + 1), np.int64)
        span = self.span()
        if span is not None:
            a, b = span
            counts[:, a - lo : b - lo + 1] = self.counts[:, a - self.offset : b - self.offset + 1]
        return Buckets(lo, counts)


def _empty(rows: int) -> Buckets:
    return Buckets(0, np.zeros((rows, 0), np.int64))


@dataclass
class ExpHistogram:
    """Counts of finite values in base-2 exponential buckets, one row per channel (or one).

    Examples
    --------
    >>> h = ExpHistogram(max_buckets=8)
    >>> h.add(np.array([0.0, 1.0, 3.0, -2.0, 1000.0]))
    >>> h.scale, h.base, int(h.total()[0])
    (-1, 4.0, 5)
    >>> h.quantile([0.0, 0.25, 1.0]).tolist()
    [-1.6, 0.0, 409.6]
    """

    max_buckets: int = DEFAULT_MAX_BUCKETS
    rows: int = 1
    scale: int = MAX_SCALE
    zero: np.ndarray = field(default=None)  # type: ignore[assignment]
    positive: Buckets = field(default=None)  # type: ignore[assignment]
    negative: Buckets = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        self.max_buckets = check_max_buckets(self.max_buckets)
        if self.zero is None:
            self.zero = np.zeros(self.rows, np.int64)
        if self.positive is None:
            self.positive = _empty(self.rows)
        if self.negative is None:
            self.negative = _empty(self.rows)

    # ------------------------------------------------------------------ filling, merging

    def add(self, values: np.ndarray, rows: np.ndarray | None = None) -> None:
        """Count finite ``values`` (1-D), each in row ``rows[k]`` (default row 0)."""
        values = np.asarray(values, dtype=np.float64).ravel()
        rows = np.zeros(values.size, np.int64) if rows is None else np.asarray(rows, np.int64).ravel()
        zero = values == 0
        if zero.any():
            self.zero += np.bincount(rows[zero], minlength=self.rows)
        parts = []
        for sign, which in ((1.0, values > 0), (-1.0, values < 0)):
            idx = indices(sign * values[which]) if which.any() else np.zeros(0, np.int64)
            parts.append((idx, rows[which]))
        new = [(int(idx.min()), int(idx.max())) if idx.size else None for idx, _ in parts]
        # the scale is the highest at which the old buckets and the new values both fit
        down = MAX_SCALE - self.scale
        ranges = []
        for old, fresh in zip((self.positive.span(), self.negative.span()), new):
            merged = [r for r in (old, None if fresh is None else (fresh[0] >> down, fresh[1] >> down)) if r]
            if merged:
                ranges.append((min(r[0] for r in merged), max(r[1] for r in merged)))
        extra = _shift_to_fit(ranges, self.max_buckets)
        self._downscale(extra)
        shift = MAX_SCALE - self.scale
        self.positive = self._with(self.positive, *parts[0], shift)
        self.negative = self._with(self.negative, *parts[1], shift)

    def _with(self, buckets: Buckets, idx: np.ndarray, rows: np.ndarray, shift: int) -> Buckets:
        if idx.size == 0:
            return buckets
        idx = idx >> shift
        span = buckets.span()
        lo, hi = int(idx.min()), int(idx.max())
        if span is not None:
            lo, hi = min(lo, span[0]), max(hi, span[1])
        out = buckets.covering(lo, hi)
        width = hi - lo + 1
        flat = rows * width + (idx - lo)
        out.counts += np.bincount(flat, minlength=self.rows * width).reshape(self.rows, width)
        return out

    def _downscale(self, shift: int) -> None:
        if shift:
            self.positive = self.positive.downscaled(shift)
            self.negative = self.negative.downscaled(shift)
            self.scale -= shift

    def merged(self, other: ExpHistogram) -> ExpHistogram:
        """A new histogram holding both: at the highest scale where both fit, with the smaller
        ``max_buckets`` of the two."""
        if other.rows != self.rows:
            raise ValueError(f"cannot merge histograms of {self.rows} and {other.rows} rows")
        a, b = self.copy(), other.copy()
        a.max_buckets = b.max_buckets = min(a.max_buckets, b.max_buckets)
        scale = min(a.scale, b.scale)
        a._downscale(a.scale - scale)
        b._downscale(b.scale - scale)
        ranges = []
        for x, y in ((a.positive, b.positive), (a.negative, b.negative)):
            spans = [s for s in (x.span(), y.span()) if s]
            if spans:
                ranges.append((min(s[0] for s in spans), max(s[1] for s in spans)))
        extra = _shift_to_fit(ranges, a.max_buckets)
        a._downscale(extra)
        b._downscale(extra)
        a.zero = a.zero + b.zero
        a.positive = _summed(a.positive, b.positive)
        a.negative = _summed(a.negative, b.negative)
        return a

    def fitted(self, max_buckets: int) -> ExpHistogram:
        """A copy that keeps at most ``max_buckets`` per sign (at a lower scale if it must)."""
        out = self.copy()
        out.max_buckets = check_max_buckets(max_buckets)
        out._downscale(
            _shift_to_fit([s for s in (out.positive.span(), out.negative.span()) if s], max_buckets)
        )
        return out.trimmed()

    def copy(self) -> ExpHistogram:
        return copy.deepcopy(self)

    def row_sum(self) -> ExpHistogram:
        """The rows added together: one row, same scale and buckets."""
        return ExpHistogram(
            self.max_buckets,
            1,
            self.scale,
            np.array([self.zero.sum()], np.int64),
            Buckets(self.positive.offset, self.positive.counts.sum(axis=0, keepdims=True)),
            Buckets(self.negative.offset, self.negative.counts.sum(axis=0, keepdims=True)),
        )

    def trimmed(self) -> ExpHistogram:
        """The same histogram with empty buckets at either end of each sign dropped."""
        out = self.copy()
        for sign in ("positive", "negative"):
            b = getattr(out, sign)
            span = b.span()
            setattr(out, sign, b.covering(*span) if span else _empty(self.rows))
        return out

    # ------------------------------------------------------------------ reading

    @property
    def base(self) -> float:
        return float(2.0 ** (2.0**-self.scale))

    @property
    def relative_error(self) -> float:
        """Largest relative error of a bucket's estimate for any value in the bucket."""
        b = self.base
        return (b - 1) / (b + 1)

    def total(self) -> np.ndarray:
        """Values counted, per row."""
        return self.zero + self.positive.counts.sum(axis=1) + self.negative.counts.sum(axis=1)

    def problems(self) -> list[str]:
        """What no filling can give: negative counts, a scale or bucket count out of range."""
        out = []
        if any((np.asarray(a) < 0).any() for a in (self.zero, self.positive.counts, self.negative.counts)):
            out.append("histogram counts are negative")
        if not -10 <= self.scale <= MAX_SCALE:
            out.append(f"histogram scale {self.scale} is outside [-10, {MAX_SCALE}]")
        if max(self.positive.width, self.negative.width) > self.max_buckets:
            out.append(f"histogram has more than max_buckets={self.max_buckets} buckets per sign")
        return out

    def layout(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every bucket in ascending value order: lower bounds, upper bounds and counts
        ``(rows, buckets)``; negative buckets first, then the zero bucket ``[0, 0]``, then the
        positive ones."""
        return _layout(self.scale, self.positive, self.negative, self.zero)

    def estimates(self) -> np.ndarray:
        """Each bucket's estimate in `layout` order: ``2LU / (L + U)`` with the bucket's sign,
        0 for the zero bucket."""
        lo, hi, _ = self.layout()
        return estimates(lo, hi)

    def quantile(
        self, q: float | Sequence[float], lo: float | None = None, hi: float | None = None
    ) -> np.ndarray:
        """Quantiles of all rows together: the estimate of the bucket holding the value of rank
        ``floor(q * (n - 1))`` (NumPy's ``method="lower"``), within `relative_error` of it.
        Given the exact minimum and maximum ``lo`` and ``hi``, the first and last ranks are
        exactly them and every estimate is clipped to them. NaN when empty."""
        q = np.asarray(q, dtype=np.float64)
        if ((q < 0) | (q > 1) | np.isnan(q)).any():
            raise ValueError(f"q must be in [0, 1], got {q.tolist()}")
        _, _, counts = self.layout()
        counts = counts.sum(axis=0)
        n = int(counts.sum())
        if n == 0:
            return np.full(q.shape, np.nan)
        rank = np.floor(q * (n - 1)).astype(np.int64)
        out = self.estimates()[np.searchsorted(np.cumsum(counts), rank, side="right")]
        if lo is not None and hi is not None:
            out = np.where(rank == 0, lo, np.where(rank == n - 1, hi, np.clip(out, lo, hi)))
        return out

    def otlp(self, row: int = 0) -> dict[str, Any]:
        """One row as an OTLP ``ExponentialHistogramDataPoint``'s bucket fields (its JSON
        mapping: ``scale``, ``zeroCount``, ``positive``/``negative`` ``{offset, bucketCounts}``)."""
        t = self.trimmed()
        return {
            "scale": t.scale,
            "zeroCount": int(t.zero[row]),
            "zeroThreshold": 0.0,
            "positive": {"offset": t.positive.offset, "bucketCounts": t.positive.counts[row].tolist()},
            "negative": {"offset": t.negative.offset, "bucketCounts": t.negative.counts[row].tolist()},
        }


def _summed(a: Buckets, b: Buckets) -> Buckets:
    spans = [s for s in (a.span(), b.span()) if s]
    if not spans:
        return _empty(a.counts.shape[0])
    lo, hi = min(s[0] for s in spans), max(s[1] for s in spans)
    out = a.covering(lo, hi)
    out.counts += b.covering(lo, hi).counts
    return out


def _bounds(scale: int, first: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    i = first + np.arange(width + 1, dtype=np.float64)
    with np.errstate(over="ignore"):
        edges = np.exp2(i * 2.0**-scale)
    edges = np.minimum(edges, np.finfo(np.float64).max)
    return edges[:-1], edges[1:]


def _layout(
    scale: int, positive: Buckets, negative: Buckets, zero: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    plo, phi = _bounds(scale, positive.offset, positive.width)
    nlo, nhi = _bounds(scale, negative.offset, negative.width)
    lower = np.concatenate([-nhi[::-1], [0.0], plo])
    upper = np.concatenate([-nlo[::-1], [0.0], phi])
    counts = np.concatenate([negative.counts[:, ::-1], zero[:, None], positive.counts], axis=1)
    return lower, upper, counts


def estimates(lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """Each bucket's estimate from its bounds: ``2LU / (L + U)`` with the bucket's sign, 0 for
    the zero bucket."""
    a, b = np.abs(lower), np.abs(upper)
    with np.errstate(invalid="ignore", divide="ignore"):
        mag = np.where(a + b > 0, 2 * a * b / (a + b), 0.0)
    return np.where(upper < 0, -mag, mag)


def aligned(a: ExpHistogram, b: ExpHistogram) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Two histograms over the same buckets, for comparing them: at the lower of their scales,
    over the union of their bucket ranges (no bucket limit applies). Returns lower and upper
    bounds, and the counts of ``a`` and of ``b`` (each ``(rows, buckets)``), in ascending
    value order."""
    scale = min(a.scale, b.scale)
    x, y = a.copy(), b.copy()
    x._downscale(x.scale - scale)
    y._downscale(y.scale - scale)
    out = []
    for sign in ("positive", "negative"):
        bx, by = getattr(x, sign), getattr(y, sign)
        spans = [s for s in (bx.span(), by.span()) if s]
        if spans:
            lo, hi = min(s[0] for s in spans), max(s[1] for s in spans)
            out.append((bx.covering(lo, hi), by.covering(lo, hi)))
        else:
            out.append((_empty(x.rows), _empty(y.rows)))
    (px, py), (nx, ny) = out
    lower, upper, cx = _layout(scale, px, nx, x.zero)
    _, _, cy = _layout(scale, py, ny, y.zero)
    return lower, upper, cx, cy
