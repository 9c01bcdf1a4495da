"""The ``.avgprof`` file: a versioned, self-describing container for a profile.

This module knows the bytes, not the classes: `write_profile` reads a profile's fields, and
`read_profile` builds one with the classes it is given, so `avgpool.monitor.profile` (whose
``Profile.save`` and ``Profile.load`` call these) is imported by nothing here.

Format version 2 is a ZIP archive (stored, not compressed) with:

``header.json``
    UTF-8 JSON: ``{"format": "avgpool-profile", "format_version": 2, "avgpool_version",
    "created_utc", "max_buckets", "channel_hist", "batches", "notes", "model": {"source",
    "format", "sha256", "pooling": [{"name", "op", "source_op", "output_shape"}, ...]},
    "layers": [{"name", "op", "channels", "sample_shape", "arrays": "L0", "hist": {"scale",
    "max_buckets", "rows", "positive_offset", "negative_offset"}}, ...]}``.
``L<i>/<field>.npy``
    One NumPy ``.npy`` file (no pickled objects) per field of layer ``i``: ``count``, ``nan``,
    ``posinf``, ``neginf`` (int64, C), ``mean``, ``m2``, ``min``, ``max`` (float64, C), and the
    exponential histogram (`avgpool.monitor.exphist`): ``hist_zero`` (int64, rows),
    ``hist_positive`` and ``hist_negative`` (int64, rows x buckets), with one row per channel
    when the profile keeps per-channel histograms (the layer's is their sum), else one.

Version 1 kept histograms on edges fixed by a profile's first batch; such a file cannot be
compared with or merged into any other, and is refused with a message saying to profile again.

Every member carries the ZIP CRC-32, checked on read, so a flipped byte is an error rather
than a wrong number. A reader refuses a ``format_version`` newer than it knows. Files are
written to a temporary name in the target's directory, flushed to disk and renamed over the
target, so a reader never sees half a file and a failed write leaves the old one intact.
"""

from __future__ import annotations

import datetime
import io
import json
import os
import zipfile
from typing import Any

import numpy as np

from avgpool._files import write_atomically
from avgpool.monitor._errors import ProfileError

__all__ = ["FORMAT", "FORMAT_VERSION", "read_profile", "write_profile"]

FORMAT = "avgpool-profile"
FORMAT_VERSION = 2

_INT_FIELDS = ("count", "nan", "posinf", "neginf")
_FLOAT_FIELDS = ("mean", "m2", "min", "max")


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


def write_profile(profile: Any, path: Any) -> None:
    """Write ``profile`` (a `Profile`) to ``path`` atomically (the module docstring has the format)."""
    from avgpool import __version__
    from avgpool.monitor._json import clean

    path = os.fspath(path)
    layers = []
    members: list[tuple[str, bytes]] = []
    for i, layer in enumerate(profile.layers.values()):
        key = f"L{i}"
        hist = (layer.hist if layer.channel_hist is None else layer.channel_hist).trimmed()
        layers.append(
            {
                "name": layer.name,
                "op": layer.op,
                "channels": layer.channels,
                "sample_shape": list(layer.sample_shape),
                "arrays": key,
                "hist": {
                    "scale": hist.scale,
                    "max_buckets": hist.max_buckets,
                    "rows": hist.rows,
                    "positive_offset": hist.positive.offset,
                    "negative_offset": hist.negative.offset,
                },
            }
        )
        fields = {f: getattr(layer, f) for f in (*_INT_FIELDS, *_FLOAT_FIELDS)}
        fields.update(
            hist_zero=hist.zero, hist_positive=hist.positive.counts, hist_negative=hist.negative.counts
        )
        members += [(f"{key}/{f}.npy", _npy(a)) for f, a in fields.items()]
    header = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "avgpool_version": __version__,
        "created_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "max_buckets": profile.max_buckets,
        "channel_hist": profile.channel_hist,
        "batches": profile.batches,
        "notes": list(profile.notes),
        "model": clean(dict(profile.model)),
        "layers": layers,
    }

    def write(f: Any) -> None:
        with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED) as zf:
            zf.writestr("header.json", json.dumps(header, indent=1))
            for name, data in members:
                zf.writestr(name, data)

    write_atomically(path, write)


def read_profile(path: Any, profile_cls: type, stats_cls: type) -> Any:
    """Read a profile written by `write_profile`, as a ``profile_cls`` of ``stats_cls`` layers.

    Raises
    ------
    ProfileError
        The file is missing, not a profile, truncated, corrupted, or from a newer format.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ProfileError(f"{path}: no such profile file")
    try:
        with zipfile.ZipFile(path) as zf:
            header = _header(zf, path)
            return _profile(zf, header, path, profile_cls, stats_cls)
    except ProfileError:
        raise
    except zipfile.BadZipFile as exc:
        raise ProfileError(f"{path}: not an avgpool profile, or truncated or corrupted ({exc})") from None
    except Exception as exc:
        raise ProfileError(f"{path}: corrupted avgpool profile ({type(exc).__name__}: {exc})") from None


def _header(zf: zipfile.ZipFile, path: str) -> dict[str, Any]:
    data = _member(zf, "header.json", path)
    if data is None:
        raise ProfileError(f"{path}: a ZIP file but not an avgpool profile (no header.json)")
    header = json.loads(data.decode("utf-8"))
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ProfileError(f"{path}: not an avgpool profile (format {header.get('format')!r})")
    version = header.get("format_version")
    if not isinstance(version, int) or version < 1:
        raise ProfileError(f"{path}: invalid format_version {version!r}")
    if version > FORMAT_VERSION:
        raise ProfileError(
            f"{path}: profile format version {version} was written by a newer avgpool "
            f"({header.get('avgpool_version', '?')}); this one reads version {FORMAT_VERSION}: "
            "upgrade avgpool"
        )
    if version < FORMAT_VERSION:
        raise ProfileError(
            f"{path}: profile format version {version} (avgpool {header.get('avgpool_version', '?')}) "
            "keeps histograms on edges set by its first batch, which no other profile shares; this "
            f"avgpool reads version {FORMAT_VERSION}, whose profiles all compare and merge: profile "
            "the model again with this avgpool"
        )
    return header


def _array(zf: zipfile.ZipFile, name: str, path: str) -> np.ndarray:
    data = _member(zf, name, path)
    if data is None:
        raise ProfileError(f"{path}: corrupted avgpool profile (missing {name})")
    return np.load(io.BytesIO(data), allow_pickle=False)


def _member(zf: zipfile.ZipFile, name: str, path: str) -> bytes | None:
    """A member's bytes, or None if there is none. Profiles are written stored (uncompressed),
    so a member's size is bounded by the file's: a compressed member could inflate a small
    forged file into gigabytes, and is refused before it is read."""
    try:
        info = zf.getinfo(name)
    except KeyError:
        return None
    if info.compress_type != zipfile.ZIP_STORED:
        raise ProfileError(
            f"{path}: not an avgpool profile as written ({name} is compressed; profiles are stored)"
        )
    return zf.read(info)


def _profile(
    zf: zipfile.ZipFile, header: dict[str, Any], path: str, profile_cls: type, stats_cls: type
) -> Any:
    from avgpool.monitor.exphist import Buckets, ExpHistogram

    profile = profile_cls(
        max_buckets=int(header["max_buckets"]),
        channel_hist=bool(header["channel_hist"]),
        model=header.get("model") or {},
        notes=list(header.get("notes") or []),
        batches=int(header.get("batches", 0)),
    )
    for entry in header["layers"]:
        key, c, name = entry["arrays"], int(entry["channels"]), entry["name"]
        if not isinstance(name, str) or not isinstance(entry.get("op", ""), str):
            raise ProfileError(
                f"{path}: corrupted avgpool profile (layer {name!r}: a name or op that is not text)"
            )
        fields = {f: _array(zf, f"{key}/{f}.npy", path) for f in (*_INT_FIELDS, *_FLOAT_FIELDS)}
        hist = {f: _array(zf, f"{key}/hist_{f}.npy", path) for f in ("zero", "positive", "negative")}
        meta = entry["hist"]
        rows = int(meta["rows"])

        def bad(what: str, name: str = name) -> ProfileError:
            return ProfileError(f"{path}: corrupted avgpool profile (layer {name!r}: {what})")

        for f in (*_INT_FIELDS, *_FLOAT_FIELDS):
            if fields[f].shape != (c,):
                raise bad(f"{f} has shape {fields[f].shape}, expected {(c,)}")
        if rows != (c if profile.channel_hist else 1):
            raise bad(f"a histogram of {rows} rows for {c} channels")
        if hist["zero"].shape != (rows,) or any(
            hist[f].ndim != 2 or hist[f].shape[0] != rows for f in ("positive", "negative")
        ):
            raise bad("histogram arrays of the wrong shape")
        wrong = [f for f in _INT_FIELDS if fields[f].dtype.kind not in "iu"]
        wrong += [f for f in _FLOAT_FIELDS if fields[f].dtype.kind != "f"]
        wrong += [f"hist_{f}" for f, a in hist.items() if a.dtype.kind not in "iu"]
        if wrong:
            raise bad(f"{', '.join(wrong)} of the wrong dtype")
        try:
            h = ExpHistogram(
                int(meta["max_buckets"]),
                rows,
                int(meta["scale"]),
                hist["zero"].astype(np.int64),
                Buckets(int(meta["positive_offset"]), hist["positive"].astype(np.int64)),
                Buckets(int(meta["negative_offset"]), hist["negative"].astype(np.int64)),
            )
        except (TypeError, ValueError) as exc:
            raise bad(str(exc)) from None
        per_channel = profile.channel_hist
        layer = stats_cls(
            name=name,
            hist=h.row_sum() if per_channel else h,
            channel_hist=h if per_channel else None,
            op=entry.get("op", ""),
            sample_shape=tuple(entry.get("sample_shape") or ()),
            **{f: fields[f].astype(np.int64) for f in _INT_FIELDS},
            **{f: fields[f].astype(np.float64) for f in _FLOAT_FIELDS},
        )
        problems = layer.problems()
        if problems:
            raise bad("; ".join(problems))
        profile.layers[layer.name] = layer
    return profile
