"""Streaming, mergeable activation statistics per layer and per channel.

A `Profile` holds, for each profiled layer, per-channel moments (count, mean, sum of squared
deviations, accumulated in float64 with Chan et al.'s pairwise update, so a batch never loses
precision to a running total), min and max of the finite values, NaN/+inf/-inf counts, and a
base-2 exponential histogram (`avgpool.monitor.exphist`) of the whole layer (and, on request,
of each channel).

The histogram's buckets depend on the values alone, never on which batch came first, so any two
profiles of a model compare and merge, whoever made them: each replica of a server, each worker
of a batch job, last month's CI run and today's. Merging profiles gives the same counts,
histograms, minima and maxima as one pass over all their batches, and the same moments to
float64 rounding. Channels are axis 1 of a layer's output (``(N, C, *spatial)``); an output of
shape ``(N,)`` has one channel.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from avgpool.monitor import fileformat
from avgpool.monitor._errors import ProfileError
from avgpool.monitor.exphist import DEFAULT_MAX_BUCKETS, ExpHistogram, check_max_buckets

__all__ = [
    "DEFAULT_MAX_BUCKETS",
    "LayerStats",
    "Profile",
    "ProfileError",
    "load_profile",
    "merge",
    "save_profile",
]


@dataclass
class LayerStats:
    """Statistics of one layer's output; arrays have one entry per channel.

    ``hist`` is the layer's histogram (one row), ``channel_hist`` one row per channel (sharing
    a scale with ``hist``) or None. ``m2`` is the sum of squared deviations from the mean
    (finite values only); NaN and infinities are counted, never binned.
    """

    name: str
    count: np.ndarray
    mean: np.ndarray
    m2: np.ndarray
    min: np.ndarray
    max: np.ndarray
    nan: np.ndarray
    posinf: np.ndarray
    neginf: np.ndarray
    hist: ExpHistogram
    channel_hist: ExpHistogram | None = None
    op: str = ""
    sample_shape: tuple[int, ...] = ()

    @classmethod
    def empty(
        cls,
        name: str,
        channels: int,
        *,
        max_buckets: int = DEFAULT_MAX_BUCKETS,
        channel_hist: bool = False,
        op: str = "",
    ) -> LayerStats:
        c = channels
        return cls(
            name=name,
            count=np.zeros(c, np.int64),
            mean=np.zeros(c),
            m2=np.zeros(c),
            min=np.full(c, np.inf),
            max=np.full(c, -np.inf),
            nan=np.zeros(c, np.int64),
            posinf=np.zeros(c, np.int64),
            neginf=np.zeros(c, np.int64),
            hist=ExpHistogram(max_buckets),
            channel_hist=ExpHistogram(max_buckets, rows=c) if channel_hist else None,
            op=op,
        )

    @property
    def channels(self) -> int:
        return len(self.count)

    @property
    def relative_error(self) -> float:
        """The histogram's bound on a quantile's relative error (`ExpHistogram.relative_error`)."""
        return self.hist.relative_error

    @property
    def std(self) -> np.ndarray:
        """Per-channel population standard deviation (ddof=0); NaN for an empty channel."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.sqrt(np.where(self.count > 0, self.m2 / np.maximum(self.count, 1), np.nan))

    def totals(self) -> dict[str, float]:
        """The layer as a whole: channels combined exactly (Chan's formula over channels)."""
        n = int(self.count.sum())
        if n:
            mean = float((self.count * self.mean).sum() / n)
            m2 = float(self.m2.sum() + (self.count * (self.mean - mean) ** 2).sum())
            std = (m2 / n) ** 0.5
        else:
            mean = std = float("nan")
        return {
            "count": n,
            "mean": mean,
            "std": std,
            "min": float(self.min.min()) if n else float("nan"),
            "max": float(self.max.max()) if n else float("nan"),
            "nan": int(self.nan.sum()),
            "posinf": int(self.posinf.sum()),
            "neginf": int(self.neginf.sum()),
        }

    def problems(self) -> list[str]:
        """What makes these statistics impossible for any batch to give: a NaN or inf mean,
        spread, min or max where the channel has values, negative counts, a histogram that does
        not count what the counts say. A profile that says so was damaged or forged, and a drift gate
        must not judge it; empty when the statistics are sound."""
        seen = np.asarray(self.count) > 0
        out = [
            f"{f} is negative"
            for f in ("count", "nan", "posinf", "neginf")
            if (np.asarray(getattr(self, f)) < 0).any()
        ]
        out += self.hist.problems()
        if int(self.hist.total().sum()) != int(np.asarray(self.count).sum()):
            out.append("the histogram does not count the finite values")
        if self.channel_hist is not None:
            out += [f"channel {p}" for p in self.channel_hist.problems()]
            if not np.array_equal(self.channel_hist.total(), np.asarray(self.count)):
                out.append("the channel histograms do not count each channel's finite values")
        for f in ("mean", "m2", "min", "max"):
            bad = np.flatnonzero(seen & ~np.isfinite(np.asarray(getattr(self, f), dtype=np.float64)))
            if bad.size:
                channels = ", ".join(str(int(c)) for c in bad[:5]) + (", ..." if bad.size > 5 else "")
                out.append(f"{f} is not finite (channel {channels})")
        if (np.asarray(self.m2)[seen] < 0).any():
            out.append("m2 is negative")
        return out

    def update(self, x: Any) -> None:
        """Add one batch: an array ``(N, C, *spatial)``, ``(N, C)`` or ``(N,)``."""
        x = np.asarray(x)
        if x.dtype.kind not in "fiub":
            raise ProfileError(f"layer {self.name!r}: cannot profile a {x.dtype} array")
        flat = (x.reshape(1, -1) if x.ndim <= 1 else np.moveaxis(x, 1, 0).reshape(x.shape[1], -1)).astype(
            np.float64, copy=False
        )
        if flat.shape[0] != self.channels:
            raise ProfileError(
                f"layer {self.name!r}: batch has {flat.shape[0]} channels (axis 1 of {x.shape}), "
                f"the profile {self.channels}"
            )
        if x.ndim >= 2:
            self.sample_shape = tuple(int(s) for s in x.shape[1:])
        finite = np.isfinite(flat)
        all_finite = bool(finite.all())
        n_b = finite.sum(axis=1)
        if all_finite:
            mean_b = flat.mean(axis=1) if flat.shape[1] else np.zeros(self.channels)
            m2_b = ((flat - mean_b[:, None]) ** 2).sum(axis=1)
            lo, hi = (flat.min(axis=1), flat.max(axis=1)) if flat.shape[1] else (self.min, self.max)
        else:
            self.nan += np.isnan(flat).sum(axis=1)
            self.posinf += (flat == np.inf).sum(axis=1)
            self.neginf += (flat == -np.inf).sum(axis=1)
            mean_b = np.where(finite, flat, 0.0).sum(axis=1) / np.maximum(n_b, 1)
            m2_b = (np.where(finite, flat - mean_b[:, None], 0.0) ** 2).sum(axis=1)
            lo = np.where(finite, flat, np.inf).min(axis=1)
            hi = np.where(finite, flat, -np.inf).max(axis=1)
        self._combine(n_b, mean_b, m2_b)
        np.minimum(self.min, lo, out=self.min)
        np.maximum(self.max, hi, out=self.max)
        values = flat.ravel() if all_finite else flat[finite]
        if self.channel_hist is not None:
            rows = np.broadcast_to(np.arange(self.channels)[:, None], flat.shape)
            self.channel_hist.add(values, rows.ravel() if all_finite else rows[finite])
            self.hist = self.channel_hist.row_sum()
        else:
            self.hist.add(values)

    def _combine(self, n_b: np.ndarray, mean_b: np.ndarray, m2_b: np.ndarray) -> None:
        n_a = self.count
        n = n_a + n_b
        safe = np.maximum(n, 1)
        delta = mean_b - self.mean
        self.mean = np.where(n > 0, self.mean + delta * (n_b / safe), 0.0)
        self.m2 = self.m2 + m2_b + delta**2 * (n_a * n_b / safe)
        self.count = n

    def merged(self, other: LayerStats) -> LayerStats:
        """This layer's statistics combined with another shard's (same channels)."""
        if other.channels != self.channels:
            raise ProfileError(
                f"layer {self.name!r}: cannot merge {self.channels} channels with {other.channels}"
            )
        out = copy.deepcopy(self)
        out._combine(other.count, other.mean, other.m2)
        out.min = np.minimum(self.min, other.min)
        out.max = np.maximum(self.max, other.max)
        out.nan = self.nan + other.nan
        out.posinf = self.posinf + other.posinf
        out.neginf = self.neginf + other.neginf
        if self.channel_hist is not None and other.channel_hist is not None:
            out.channel_hist = self.channel_hist.merged(other.channel_hist)
            out.hist = out.channel_hist.row_sum()
        else:  # per-channel histograms only where every shard kept them
            out.channel_hist = None
            out.hist = self.hist.merged(other.hist)
        out.sample_shape = self.sample_shape or other.sample_shape
        out.op = self.op or other.op
        return out

    def quantile(self, q: float | Sequence[float]) -> np.ndarray:
        """Layer quantiles from the histogram: within `relative_error` of the value of rank
        ``floor(q * (n - 1))`` among the finite values (NumPy's ``method="lower"``), and never
        outside the exact min and max."""
        t = self.totals()
        lo, hi = (t["min"], t["max"]) if t["count"] else (None, None)
        return self.hist.quantile(q, lo, hi)


@dataclass
class Profile:
    """Activation statistics of a model's layers, built batch by batch and mergeable.

    Parameters
    ----------
    max_buckets : int
        Histogram buckets per sign (see `avgpool.monitor.exphist`): more buckets keep a finer
        scale over a wider range of values.
    channel_hist : bool
        Also keep one histogram per channel.
    model : mapping, optional
        The model's identity: source, format, sha256 and its pooling inventory.

    Examples
    --------
    >>> import numpy as np
    >>> p = Profile()
    >>> p.update("pool", np.arange(12.0).reshape(2, 2, 3))
    >>> p["pool"].count.tolist(), p["pool"].mean.tolist()
    ([6, 6], [4.0, 7.0])
    >>> round(p["pool"].totals()["std"], 6)
    3.452053
    >>> q = Profile()
    >>> q.update("pool", np.arange(12.0, 24.0).reshape(2, 2, 3))
    >>> p.merge(q)["pool"].count.tolist()
    [12, 12]
    """

    max_buckets: int = DEFAULT_MAX_BUCKETS
    channel_hist: bool = False
    model: Mapping[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    layers: dict[str, LayerStats] = field(default_factory=dict)
    batches: int = 0

    def __post_init__(self) -> None:
        try:
            self.max_buckets = check_max_buckets(self.max_buckets)
        except (TypeError, ValueError) as exc:
            raise ProfileError(str(exc)) from None

    @classmethod
    def like(cls, baseline: Profile, *, model: Mapping[str, Any] | None = None) -> Profile:
        """An empty profile with the baseline's histogram resolution and per-channel setting
        (any two profiles compare; this one also keeps the baseline's precision)."""
        return cls(baseline.max_buckets, baseline.channel_hist, dict(model or {}))

    def __getitem__(self, name: str) -> LayerStats:
        try:
            return self.layers[name]
        except KeyError:
            raise KeyError(f"no layer {name!r} in the profile (it has {sorted(self.layers)})") from None

    def __iter__(self) -> Iterator[LayerStats]:
        return iter(self.layers.values())

    def __len__(self) -> int:
        return len(self.layers)

    def update(self, name: str, x: Any, *, op: str = "") -> None:
        """Add a batch of layer ``name``'s output (channels on axis 1)."""
        x = np.asarray(x)
        layer = self.layers.get(name)
        if layer is None:
            channels = 1 if x.ndim <= 1 else int(x.shape[1])
            layer = LayerStats.empty(
                name, channels, max_buckets=self.max_buckets, channel_hist=self.channel_hist, op=op
            )
            self.layers[name] = layer
        layer.update(x)

    def update_many(self, outputs: Mapping[str, Any], ops: Mapping[str, str] | None = None) -> None:
        """Add one batch of several layers' outputs, and count the batch."""
        for name, x in outputs.items():
            self.update(name, x, op=(ops or {}).get(name, ""))
        self.batches += 1

    def merge(self, *others: Profile) -> Profile:
        """A new profile combining this one with other shards (batches, workers, processes).

        Counts, histograms, min and max equal a single pass over every shard's batches, in any
        order and grouping; mean and std agree with it to float64 rounding. Histograms merge at
        the smaller ``max_buckets``; per-channel histograms are kept only when every shard has
        them.
        """
        out = copy.deepcopy(self)
        for other in others:
            a, b = out.model.get("sha256"), other.model.get("sha256")
            if a and b and a != b:
                raise ProfileError(f"cannot merge profiles of different models (sha256 {a[:12]} vs {b[:12]})")
            for name, layer in other.layers.items():
                mine = out.layers.get(name)
                out.layers[name] = copy.deepcopy(layer) if mine is None else mine.merged(layer)
            out.batches += other.batches
            out.max_buckets = min(out.max_buckets, other.max_buckets)
            out.channel_hist = out.channel_hist and other.channel_hist
            out.model = dict(out.model) or dict(other.model)
            out.notes = list(dict.fromkeys([*out.notes, *other.notes]))
        for layer in out.layers.values():  # a layer some shards lack: the same rules
            if not out.channel_hist:
                layer.channel_hist = None
            layer.hist = layer.hist.fitted(out.max_buckets)
            if layer.channel_hist is not None:
                layer.channel_hist = layer.channel_hist.fitted(out.max_buckets)
        return out

    def copy(self) -> Profile:
        return copy.deepcopy(self)

    def summary(self) -> list[dict[str, Any]]:
        """One dict per layer: name, op, channels, sample shape and the layer totals."""
        return [
            {
                "name": layer.name,
                "op": layer.op,
                "channels": layer.channels,
                "sample_shape": list(layer.sample_shape),
                **layer.totals(),
            }
            for layer in self.layers.values()
        ]

    def to_dict(self) -> dict[str, Any]:
        from avgpool.monitor._json import clean

        return clean(
            {
                "model": dict(self.model),
                "max_buckets": self.max_buckets,
                "channel_hist": self.channel_hist,
                "batches": self.batches,
                "notes": list(self.notes),
                "layers": self.summary(),
            }
        )

    def save(self, path: Any) -> None:
        """Write the profile atomically (a temporary file beside it, then a rename)."""
        save_profile(self, path)

    @classmethod
    def load(cls, path: Any) -> Profile:
        """Read a profile file; ProfileError names what is wrong with a bad one."""
        return load_profile(path)


def save_profile(profile: Profile, path: Any) -> None:
    """Write ``profile`` to ``path`` atomically, as an ``.avgprof`` file."""
    fileformat.write_profile(profile, path)


def load_profile(path: Any) -> Profile:
    """Read an ``.avgprof`` file.

    Raises
    ------
    ProfileError
        The file is missing, not a profile, truncated, corrupted, or from a newer format.
    """
    return fileformat.read_profile(path, Profile, LayerStats)


def merge(profiles: Sequence[Profile]) -> Profile:
    """Combine shards into one profile (see `Profile.merge`)."""
    if not profiles:
        raise ProfileError("merge needs at least one profile")
    return profiles[0].merge(*profiles[1:])
