"""The .avgprof file: round trip, atomic writes, and clear errors for bad files."""

from __future__ import annotations

import json
import os
import zipfile

import numpy as np
import pytest

from avgpool.monitor import FORMAT_VERSION, Profile, ProfileError, load_profile


@pytest.fixture
def profile():
    rng = np.random.default_rng(3)
    p = Profile(max_buckets=16, channel_hist=True, model={"source": "m.onnx", "sha256": "ab" * 32, "pooling": []})
    p.update_many(
        {"/pool/MaxPool": rng.standard_normal((4, 3, 5, 5)), "gap": rng.random((4, 3))}, {"gap": "g"}
    )
    p.notes.append("a note")
    return p


def test_round_trip(tmp_path, profile):
    path = tmp_path / "p.avgprof"
    profile.save(path)
    back = Profile.load(path)
    assert back.model == profile.model and back.notes == ["a note"] and back.batches == 1
    assert list(back.layers) == list(profile.layers)
    for name, layer in profile.layers.items():
        other = back[name]
        for f in ("count", "mean", "m2", "min", "max", "nan"):
            assert np.array_equal(getattr(layer, f), getattr(other, f)), f
        for f in ("hist", "channel_hist"):
            a, b = getattr(layer, f).trimmed(), getattr(other, f).trimmed()
            assert (a.scale, a.max_buckets, a.rows) == (b.scale, b.max_buckets, b.rows), f
            for part in ("positive", "negative"):
                assert np.array_equal(getattr(a, part).counts, getattr(b, part).counts), (f, part)
                assert getattr(a, part).offset == getattr(b, part).offset, (f, part)
            assert np.array_equal(a.zero, b.zero), f
        assert other.sample_shape == layer.sample_shape and other.op == layer.op
    with zipfile.ZipFile(path) as zf:
        header = json.loads(zf.read("header.json"))
    assert header["format"] == "avgpool-profile" and header["format_version"] == FORMAT_VERSION
    assert [entry["name"] for entry in header["layers"]] == ["/pool/MaxPool", "gap"]
    assert os.listdir(tmp_path) == ["p.avgprof"]  # no temporary file left behind


def _rewrite_header(path, **changes):
    with zipfile.ZipFile(path) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    header = json.loads(members["header.json"])
    header.update(changes)
    members["header.json"] = json.dumps(header).encode()
    with zipfile.ZipFile(path, "w") as zf:
        for n, data in members.items():
            zf.writestr(n, data)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("truncate", "truncated or corrupted"),
        ("flip", "corrupted"),
        ("future", "format version 3 was written by a newer avgpool"),
        ("old", "format version 1 .* profile the model again"),
        ("not_zip", "not an avgpool profile"),
        ("other_zip", "no header.json"),
        ("missing", "no such profile file"),
    ],
)
def test_bad_files_raise_clear_errors(tmp_path, profile, damage, message):
    path = tmp_path / "p.avgprof"
    profile.save(path)
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "flip":
        # a byte inside the first layer's mean array: the member's CRC-32 catches it
        with zipfile.ZipFile(path) as zf:
            info = zf.getinfo("L0/mean.npy")
        at = info.header_offset + 30 + len(info.filename) + info.file_size - 3
        path.write_bytes(data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1 :])
    elif damage == "future":
        _rewrite_header(path, format_version=FORMAT_VERSION + 1)
    elif damage == "old":
        _rewrite_header(path, format_version=1)
    elif damage == "not_zip":
        path.write_text("hello")
    elif damage == "other_zip":
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("x.npy", b"")
    else:
        path.unlink()
    with pytest.raises(ProfileError, match=message):
        load_profile(path)


def test_failed_write_leaves_the_old_file(tmp_path, profile, monkeypatch):
    path = tmp_path / "p.avgprof"
    profile.save(path)
    before = path.read_bytes()

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        Profile(max_buckets=4).save(path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["p.avgprof"]


def test_drift_refuses_an_old_format_profile_with_exit_2(tmp_path, profile, capsys):
    from avgpool.cli import main

    old, new = tmp_path / "old.avgprof", tmp_path / "new.avgprof"
    profile.save(old)
    profile.save(new)
    _rewrite_header(old, format_version=1)
    assert main(["drift", str(old), str(new)]) == 2
    err = capsys.readouterr().err
    assert "old.avgprof: profile format version 1" in err and "profile the model again" in err
