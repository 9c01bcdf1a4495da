"""The ``.avgprof`` file: a versioned, self-describing container for a profile.

This module knows the bytes, not the classes: `write_profile` reads a profile's fields, and
`read_profile` builds one with the classes it is given, so `avgpool.monitor.profile` (whose
``Profile.save`` and ``Profile.load`` call these) is imported by nothing here.

Format version 1 is a ZIP archive (stored, not compressed) with:

``header.json``
    UTF-8 JSON: ``{"format": "avgpool-profile", "format_version": 1, "avgpool_version",
    "created_utc", "bins", "channel_hist", "batches", "notes", "model": {"source", "format",
    "sha256", "pooling": [{"name", "op", "source_op", "output_shape"}, ...]}, "layers":
    [{"name", "op", "channels", "sample_shape", "arrays": "L0"}, ...]}``.
``L<i>/<field>.npy``
    One NumPy ``.npy`` file (no pickled objects) per field of layer ``i``: ``edges``
    (float64, bins+1), ``count``, ``nan``, ``posinf``, ``neginf`` (int64, C), ``mean``, ``m2``,
    ``min``, ``max`` (float64, C), ``hist`` (int64, bins+2) and, with per-channel histograms,
    ``channel_hist`` (int64, C x bins+2).

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
FORMAT_VERSION = 1

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
        layers.append(
            {
                "name": layer.name,
                "op": layer.op,
                "channels": layer.channels,
                "sample_shape": list(layer.sample_shape),
                "arrays": key,
            }
        )
        fields = {"edges": layer.edges, "hist": layer.hist}
        fields.update({f: getattr(layer, f) for f in (*_INT_FIELDS, *_FLOAT_FIELDS)})
        if layer.channel_hist is not None:
            fields["channel_hist"] = layer.channel_hist
        members += [(f"{key}/{f}.npy", _npy(a)) for f, a in fields.items()]
    header = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "avgpool_version": __version__,
        "created_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "bins": profile.bins,
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
    bins = int(header["bins"])
    profile = profile_cls(
        bins=bins,
        channel_hist=bool(header["channel_hist"]),
        model=header.get("model") or {},
        notes=list(header.get("notes") or []),
        batches=int(header.get("batches", 0)),
    )
    for entry in header["layers"]:
        key, c = entry["arrays"], int(entry["channels"])
        fields = {
            f: _array(zf, f"{key}/{f}.npy", path) for f in ("edges", "hist", *_INT_FIELDS, *_FLOAT_FIELDS)
        }
        channel_hist = _array(zf, f"{key}/channel_hist.npy", path) if profile.channel_hist else None
        expected = {
            "edges": (bins + 1,),
            "hist": (bins + 2,),
            **{f: (c,) for f in (*_INT_FIELDS, *_FLOAT_FIELDS)},
        }
        for f, shape in expected.items():
            if fields[f].shape != shape:
                raise ProfileError(
                    f"{path}: corrupted avgpool profile (layer {entry['name']!r} {f} has shape "
                    f"{fields[f].shape}, expected {shape})"
                )
        kinds = {f: "iu" for f in ("hist", *_INT_FIELDS)} | {f: "f" for f in ("edges", *_FLOAT_FIELDS)}
        wrong = [f for f, k in kinds.items() if fields[f].dtype.kind not in k]
        if channel_hist is not None and channel_hist.dtype.kind not in "iu":
            wrong.append("channel_hist")
        if wrong or not isinstance(entry["name"], str) or not isinstance(entry.get("op", ""), str):
            what = f"{', '.join(wrong)} of the wrong dtype" if wrong else "a name or op that is not text"
            raise ProfileError(f"{path}: corrupted avgpool profile (layer {entry['name']!r}: {what})")
        if channel_hist is not None and channel_hist.shape != (c, bins + 2):
            raise ProfileError(f"{path}: corrupted avgpool profile (layer {entry['name']!r} channel_hist)")
        layer = stats_cls(
            name=entry["name"],
            channel_hist=None if channel_hist is None else channel_hist.astype(np.int64),
            op=entry.get("op", ""),
            sample_shape=tuple(entry.get("sample_shape") or ()),
            **{f: fields[f].astype(np.int64) for f in ("hist", *_INT_FIELDS)},
            **{f: fields[f].astype(np.float64) for f in ("edges", *_FLOAT_FIELDS)},
        )
        problems = layer.problems()
        if problems:
            raise ProfileError(
                f"{path}: corrupted avgpool profile (layer {layer.name!r}: {'; '.join(problems)})"
            )
        profile.layers[layer.name] = layer
    return profile
