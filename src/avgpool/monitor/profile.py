"""Streaming, mergeable activation statistics per layer and per channel.

A `Profile` holds, for each profiled layer, per-channel moments (count, mean, sum of squared
deviations, accumulated in float64 with Chan et al.'s pairwise update, so a batch never loses
precision to a running total), min and max of the finite values, NaN/+inf/-inf counts, and a
fixed-edge histogram of the whole layer (and, on request, of each channel).

Histogram edges are fixed once per layer and never move: they come from a baseline profile
(`Profile.like`), are given explicitly, or are set by the first batch a layer sees (its finite
range, widened by `EDGE_MARGIN` of that range on each side). Values outside the edges fall in
an underflow and an overflow bin, so nothing is lost; profiles to be merged or compared must
share edges. Channels are axis 1 of a layer's output (``(N, C, *spatial)``); an output of shape
``(N,)`` has one channel.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from avgpool.monitor import fileformat
from avgpool.monitor._errors import ProfileError

__all__ = [
    "DEFAULT_BINS",
    "EDGE_MARGIN",
    "LayerStats",
    "Profile",
    "ProfileError",
    "load_profile",
    "merge",
    "save_profile",
]

#: Inner histogram bins per layer (plus an underflow and an overflow bin).
DEFAULT_BINS = 128
#: Edges set by a first batch span its range widened by this fraction of it on each side.
EDGE_MARGIN = 0.1


def _edges_from(values: np.ndarray, bins: int) -> np.ndarray:
    if values.size == 0:
        lo, hi = -1.0, 1.0
    else:
        lo, hi = float(values.min()), float(values.max())
    span = hi - lo
    if span <= 0:
        span = max(abs(lo), 1.0)
    margin = EDGE_MARGIN * span
    return np.linspace(lo - margin, hi + margin, bins + 1)


@dataclass
class LayerStats:
    """Statistics of one layer's output; arrays have one entry per channel.

    ``hist`` has ``bins + 2`` counts: values below ``edges[0]``, one per ``[edges[i],
    edges[i+1])``, and values at or above ``edges[-1]``. ``channel_hist`` is ``(C, bins + 2)``
    or None. ``m2`` is the sum of squared deviations from the mean (finite values only).
    """

    name: str
    edges: np.ndarray
    count: np.ndarray
    mean: np.ndarray
    m2: np.ndarray
    min: np.ndarray
    max: np.ndarray
    nan: np.ndarray
    posinf: np.ndarray
    neginf: np.ndarray
    hist: np.ndarray
    channel_hist: np.ndarray | None = None
    op: str = ""
    sample_shape: tuple[int, ...] = ()

    @classmethod
    def empty(
        cls, name: str, channels: int, edges: np.ndarray, *, channel_hist: bool = False, op: str = ""
    ) -> LayerStats:
        c, nb = channels, len(edges) + 1
        return cls(
            name=name,
            edges=np.asarray(edges, dtype=np.float64),
            count=np.zeros(c, np.int64),
            mean=np.zeros(c),
            m2=np.zeros(c),
            min=np.full(c, np.inf),
            max=np.full(c, -np.inf),
            nan=np.zeros(c, np.int64),
            posinf=np.zeros(c, np.int64),
            neginf=np.zeros(c, np.int64),
            hist=np.zeros(nb, np.int64),
            channel_hist=np.zeros((c, nb), np.int64) if channel_hist else None,
            op=op,
        )

    @property
    def channels(self) -> int:
        return len(self.count)

    @property
    def bins(self) -> int:
        return len(self.edges) - 1

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
        spread, min or max where the channel has values, negative counts, edges that are not
        finite and ascending. A profile that says so was damaged or forged, and a drift gate
        must not judge it; empty when the statistics are sound."""
        seen = np.asarray(self.count) > 0
        out = [
            f"{f} is negative"
            for f in ("hist", "count", "nan", "posinf", "neginf")
            if (np.asarray(getattr(self, f)) < 0).any()
        ]
        if self.channel_hist is not None and (np.asarray(self.channel_hist) < 0).any():
            out.append("channel_hist is negative")
        for f in ("mean", "m2", "min", "max"):
            bad = np.flatnonzero(seen & ~np.isfinite(np.asarray(getattr(self, f), dtype=np.float64)))
            if bad.size:
                channels = ", ".join(str(int(c)) for c in bad[:5]) + (", ..." if bad.size > 5 else "")
                out.append(f"{f} is not finite (channel {channels})")
        if (np.asarray(self.m2)[seen] < 0).any():
            out.append("m2 is negative")
        edges = np.asarray(self.edges, dtype=np.float64)
        if not np.isfinite(edges).all() or (np.diff(edges) < 0).any():
            out.append("edges are not finite and ascending")
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
        nb = self.bins + 2
        idx = np.searchsorted(self.edges, flat, side="right")
        if self.channel_hist is not None:
            idx = idx + (np.arange(self.channels) * nb)[:, None]
        counts = np.bincount(idx[finite] if not all_finite else idx.ravel(), minlength=nb * self.channels)
        if self.channel_hist is not None:
            per_channel = counts.reshape(self.channels, nb)
            self.channel_hist += per_channel
            self.hist += per_channel.sum(axis=0)
        else:
            self.hist += counts[:nb]

    def _combine(self, n_b: np.ndarray, mean_b: np.ndarray, m2_b: np.ndarray) -> None:
        n_a = self.count
        n = n_a + n_b
        safe = np.maximum(n, 1)
        delta = mean_b - self.mean
        self.mean = np.where(n > 0, self.mean + delta * (n_b / safe), 0.0)
        self.m2 = self.m2 + m2_b + delta**2 * (n_a * n_b / safe)
        self.count = n

    def merged(self, other: LayerStats) -> LayerStats:
        """This layer's statistics combined with another shard's (same edges and channels)."""
        if other.channels != self.channels:
            raise ProfileError(
                f"layer {self.name!r}: cannot merge {self.channels} channels with {other.channels}"
            )
        if other.edges.shape != self.edges.shape or not np.array_equal(other.edges, self.edges):
            raise ProfileError(
                f"layer {self.name!r}: histogram edges differ between the shards; profile every "
                "shard with the same edges (Profile.like(reference) or --baseline)"
            )
        if (self.channel_hist is None) != (other.channel_hist is None):
            raise ProfileError(f"layer {self.name!r}: one shard has per-channel histograms, the other not")
        out = copy.deepcopy(self)
        out._combine(other.count, other.mean, other.m2)
        out.min = np.minimum(self.min, other.min)
        out.max = np.maximum(self.max, other.max)
        out.nan = self.nan + other.nan
        out.posinf = self.posinf + other.posinf
        out.neginf = self.neginf + other.neginf
        out.hist = self.hist + other.hist
        if self.channel_hist is not None:
            out.channel_hist = self.channel_hist + other.channel_hist
        out.sample_shape = self.sample_shape or other.sample_shape
        out.op = self.op or other.op
        return out

    def quantile(self, q: float | Sequence[float]) -> np.ndarray:
        """Approximate layer quantiles from the histogram (linear within a bin; the outer bins
        are taken to span [min, edges[0]] and [edges[-1], max])."""
        t = self.totals()
        cum = np.cumsum(self.hist) / max(self.hist.sum(), 1)
        lo = min(t["min"], self.edges[0]) if t["count"] else self.edges[0]
        hi = max(t["max"], self.edges[-1]) if t["count"] else self.edges[-1]
        points = np.concatenate([[lo], self.edges, [hi]])
        cdf = np.concatenate([[0.0], cum])
        return np.interp(np.asarray(q, dtype=np.float64), cdf, points)


@dataclass
class Profile:
    """Activation statistics of a model's layers, built batch by batch and mergeable.

    Parameters
    ----------
    bins : int
        Inner histogram bins per layer.
    channel_hist : bool
        Also keep one histogram per channel.
    edges : mapping of layer name to array, optional
        Fixed histogram edges (``bins + 1`` increasing values) for these layers.
    model : mapping, optional
        The model's identity: source, format, sha256 and its pooling inventory.

    Examples
    --------
    >>> import numpy as np
    >>> p = Profile(bins=8)
    >>> p.update("pool", np.arange(12.0).reshape(2, 2, 3))
    >>> p["pool"].count.tolist(), p["pool"].mean.tolist()
    ([6, 6], [4.0, 7.0])
    >>> round(p["pool"].totals()["std"], 6)
    3.452053
    """

    bins: int = DEFAULT_BINS
    channel_hist: bool = False
    edges: Mapping[str, Any] = field(default_factory=dict)
    model: Mapping[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    layers: dict[str, LayerStats] = field(default_factory=dict)
    batches: int = 0

    def __post_init__(self) -> None:
        if int(self.bins) < 1:
            raise ProfileError(f"bins must be >= 1, got {self.bins}")
        fixed = {}
        for name, e in dict(self.edges).items():
            e = np.asarray(e, dtype=np.float64)
            if e.ndim != 1 or len(e) != self.bins + 1 or not np.all(np.diff(e) > 0):
                raise ProfileError(f"edges for {name!r} must be {self.bins + 1} increasing values")
            fixed[name] = e
        self.edges = fixed

    @classmethod
    def like(cls, baseline: Profile, *, model: Mapping[str, Any] | None = None) -> Profile:
        """An empty profile with the baseline's bins, edges and per-channel setting, so the two
        can be compared (and shards profiled this way can be merged)."""
        edges = {name: layer.edges for name, layer in baseline.layers.items()}
        edges.update({k: v for k, v in baseline.edges.items() if k not in edges})
        return cls(baseline.bins, baseline.channel_hist, edges, dict(model or {}))

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
            edges = self._fixed_edges(name)
            if edges is None:
                sample = x[np.isfinite(x)] if x.dtype.kind == "f" else x.ravel()
                edges = _edges_from(np.asarray(sample, dtype=np.float64), self.bins)
            layer = LayerStats.empty(name, channels, edges, channel_hist=self.channel_hist, op=op)
            self.layers[name] = layer
        layer.update(x)

    def _fixed_edges(self, name: str) -> np.ndarray | None:
        """Edges given for ``name``, or for the layer it replaced (same cleaned key: an ONNX
        ``/pool/AveragePool`` takes the edges of the baseline's ``/pool/MaxPool``)."""
        if name in self.edges:
            return self.edges[name]
        from avgpool.inspect.layers import layer_key

        key = layer_key(name)
        matches = [e for other, e in self.edges.items() if layer_key(other) == key]
        return matches[0] if len(matches) == 1 else None

    def update_many(self, outputs: Mapping[str, Any], ops: Mapping[str, str] | None = None) -> None:
        """Add one batch of several layers' outputs, and count the batch."""
        for name, x in outputs.items():
            self.update(name, x, op=(ops or {}).get(name, ""))
        self.batches += 1

    def merge(self, *others: Profile) -> Profile:
        """A new profile combining this one with other shards (batches, workers, processes).

        Counts, histograms, min and max combine exactly; mean and std agree with a single
        pass to float64 rounding.
        """
        out = copy.deepcopy(self)
        for other in others:
            if other.bins != out.bins or other.channel_hist != out.channel_hist:
                raise ProfileError(
                    f"cannot merge profiles with bins/channel_hist {out.bins}/{out.channel_hist} and "
                    f"{other.bins}/{other.channel_hist}"
                )
            a, b = out.model.get("sha256"), other.model.get("sha256")
            if a and b and a != b:
                raise ProfileError(f"cannot merge profiles of different models (sha256 {a[:12]} vs {b[:12]})")
            for name, layer in other.layers.items():
                mine = out.layers.get(name)
                out.layers[name] = copy.deepcopy(layer) if mine is None else mine.merged(layer)
            out.batches += other.batches
            out.model = dict(out.model) or dict(other.model)
            out.notes = list(dict.fromkeys([*out.notes, *other.notes]))
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
                "bins": self.bins,
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
