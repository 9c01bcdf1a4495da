"""What the tools write: whole files with the umask's mode, no leftovers, no forged statistics,
and nothing at all when one of a command's outputs cannot be written."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from avgpool._files import write_atomically
from avgpool.cli import main
from avgpool.monitor import Profile, ProfileError


@pytest.fixture
def profile():
    p = Profile(max_buckets=8)
    p.update_many({"pool": np.random.default_rng(0).standard_normal((4, 3, 5, 5))}, {"pool": "AveragePool"})
    return p


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_files_get_the_mode_the_umask_gives(tmp_path, umask):
    before = os.umask(umask)
    try:
        path = tmp_path / "f.bin"
        write_atomically(path, b"data")
        assert (path.stat().st_mode & 0o777) == 0o666 & ~umask
        assert path.read_bytes() == b"data"
    finally:
        os.umask(before)


def test_a_failed_write_leaves_the_old_file_and_nothing_else(tmp_path):
    path = tmp_path / "f.txt"
    write_atomically(path, "old")

    def broken(f):
        f.write(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_atomically(path, broken)
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["f.txt"]


def test_a_process_killed_mid_write_leaves_no_temporary_file(tmp_path):
    script = textwrap.dedent(
        f"""
        import os, signal
        from avgpool._files import write_atomically
        def write(f):
            f.write(b"x" * 1000)
            os.kill(os.getpid(), signal.SIGKILL)
        write_atomically({str(tmp_path / "out.bin")!r}, write)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60)
    assert result.returncode == -9
    assert os.listdir(tmp_path) == []


def test_profiles_are_written_with_the_umask_mode(tmp_path, profile):
    before = os.umask(0o022)
    try:
        profile.save(tmp_path / "p.avgprof")
    finally:
        os.umask(before)
    assert (tmp_path / "p.avgprof").stat().st_mode & 0o777 == 0o644
    assert os.listdir(tmp_path) == ["p.avgprof"]


@pytest.mark.parametrize(
    ("field", "value", "problem"),
    [("mean", np.nan, "mean is not finite"), ("m2", np.inf, "m2 is not finite"), ("count", -1, "negative")],
)
def test_forged_statistics_are_refused_on_load_and_by_the_drift_gate(
    tmp_path, profile, capsys, field, value, problem
):
    good, bad = tmp_path / "good.avgprof", tmp_path / "bad.avgprof"
    profile.save(good)
    getattr(profile["pool"], field)[:] = value
    profile.save(bad)
    with pytest.raises(ProfileError, match=problem):
        Profile.load(bad)
    assert main(["drift", str(good), str(bad)]) == 2
    assert problem in capsys.readouterr().err


def test_drift_writes_nothing_when_one_output_cannot_be_written(tmp_path, profile, capsys):
    base = tmp_path / "base.avgprof"
    profile.save(base)
    plot = tmp_path / "ok.png"
    code = main(["drift", str(base), str(base), "--plot", str(plot), "--prometheus-textfile", "nodir/x.prom"])
    assert code == 2 and "nodir" in capsys.readouterr().err
    assert not plot.exists()


def test_profile_checks_its_output_before_running_the_model(tmp_path, capsys):
    code = main(
        ["profile", "no-such-model.onnx", "--inputs", "x.npz", "-o", str(tmp_path / "nodir" / "p.avgprof")]
    )
    assert code == 2 and "no such directory" in capsys.readouterr().err


def test_without_an_unnamed_file_the_write_is_still_whole(tmp_path, monkeypatch):
    import avgpool._files as files

    monkeypatch.setattr(files, "_link_unnamed", lambda *args: None)
    write_atomically(tmp_path / "a.bin", b"first")
    write_atomically(tmp_path / "a.bin", lambda f: f.write(b"second"))
    assert (tmp_path / "a.bin").read_bytes() == b"second" and os.listdir(tmp_path) == ["a.bin"]


def _rewrite(src, dst, change):
    """Copy the profile ZIP ``src`` to ``dst``, passing each member through ``change``."""
    import zipfile

    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            name, data, compression = change(info.filename, zin.read(info))
            zout.writestr(name, data, compress_type=compression)


def test_a_compressed_member_is_refused_before_it_is_inflated(tmp_path, profile, capsys):
    import zipfile

    good, bomb = tmp_path / "good.avgprof", tmp_path / "bomb.avgprof"
    profile.save(good)
    # 64 MiB of zeros deflate to ~64 KiB: a small file must not become a large allocation
    zeros = np.zeros(8 << 20)

    def inflate(name, data):
        if name.endswith("/mean.npy"):
            buf = __import__("io").BytesIO()
            np.save(buf, zeros)
            data = buf.getvalue()
        return name, data, zipfile.ZIP_DEFLATED

    _rewrite(good, bomb, inflate)
    assert bomb.stat().st_size < 1 << 20
    with pytest.raises(ProfileError, match="is compressed"):
        Profile.load(bomb)
    assert main(["drift", str(good), str(bomb)]) == 2
    assert "compressed" in capsys.readouterr().err


def test_statistics_of_the_wrong_dtype_are_refused(tmp_path, profile):
    import io
    import zipfile

    good, bad = tmp_path / "good.avgprof", tmp_path / "bad.avgprof"
    profile.save(good)

    def floats(name, data):
        if name.endswith("/count.npy"):  # a float count of NaN cast to int64 reads as a huge count
            buf = io.BytesIO()
            np.save(buf, np.full(3, np.nan))
            data = buf.getvalue()
        return name, data, zipfile.ZIP_STORED

    _rewrite(good, bad, floats)
    with pytest.raises(ProfileError, match="count of the wrong dtype"):
        Profile.load(bad)


def test_drift_refuses_a_tensorboard_directory_that_is_a_file_before_writing_the_plot(
    tmp_path, profile, capsys
):
    base = tmp_path / "base.avgprof"
    profile.save(base)
    (tmp_path / "taken").write_text("a file, not a log directory")
    plot = tmp_path / "ok.png"
    args = [
        "drift",
        str(base),
        str(base),
        "--plot",
        str(plot),
        "--tensorboard",
        str(tmp_path / "taken" / "tb"),
    ]
    assert main(args) == 2
    assert "is not a directory" in capsys.readouterr().err and not plot.exists()


def test_drift_refuses_one_path_for_two_outputs(tmp_path, profile, capsys):
    base = tmp_path / "base.avgprof"
    profile.save(base)
    out = str(tmp_path / "out")
    assert main(["drift", str(base), str(base), "--plot", out, "--prometheus-textfile", out]) == 2
    assert "two outputs" in capsys.readouterr().err and os.listdir(tmp_path) == ["base.avgprof"]


def test_directories_to_be_created_are_checked_where_they_would_be(tmp_path):
    from avgpool._files import check_directory, check_writable

    check_directory(tmp_path / "new" / "deeper")  # mkdir -p would make it
    check_writable(tmp_path / "new" / "deeper" / "f.json", parents=True)
    (tmp_path / "file").write_text("")
    with pytest.raises(NotADirectoryError, match="is not a directory"):
        check_directory(tmp_path / "file" / "sub")
    with pytest.raises(IsADirectoryError):
        check_writable(tmp_path, parents=True)


def test_bench_results_are_checked_before_either_is_written(tmp_path):
    from avgpool.bench.report import write_results

    (tmp_path / "latest.md").mkdir()  # the second output cannot be written
    with pytest.raises(IsADirectoryError):
        write_results({"cases": []}, tmp_path)
    assert not (tmp_path / "latest.json").exists()


def test_study_refuses_its_folder_before_training(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    assert main(["study", "--out", str(tmp_path / "file" / "report"), "--subset", "10"]) == 2
    assert "is not a directory" in capsys.readouterr().err


def test_the_drift_plot_draws_any_layer_name(tmp_path):
    pytest.importorskip("matplotlib")
    from avgpool.monitor import compare, plot_drift

    name = "pool$\\frac{$x\nverdict: PASS"  # matplotlib's mathtext refused this title
    base = Profile(max_buckets=8)
    base.update(name, np.random.default_rng(0).standard_normal((50, 2)))
    cand = Profile.like(base)
    cand.update(name, np.random.default_rng(1).standard_normal((50, 2)) + 1)
    assert plot_drift(compare(base, cand), tmp_path / "d.png") == [name]
    assert (tmp_path / "d.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    ("array", "problem"),
    [
        (np.ones((2, 3, 4, 4), complex), "dtype complex128; model inputs must be bool, int or float"),
        (np.array(["a", "b"]), "dtype <U1"),
        (np.float32(1.0), "is a scalar"),
    ],
)
def test_inputs_that_are_not_numbers_are_refused_by_name(tmp_path, capsys, array, problem):
    # a complex array was cast to its real part with a warning, and profiled
    np.savez(tmp_path / "in.npz", image=array)
    argv = ["profile", "model.onnx", "--inputs", str(tmp_path / "in.npz"), "-o", str(tmp_path / "p.avgprof")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert problem in err and "'image'" in err
    assert err.count("\n") == 1


@pytest.mark.parametrize("value", ["psi=nan:nan", "psi=0.1:nan", "ks=-1:-0.5"])
def test_thresholds_that_could_not_judge_are_refused(tmp_path, profile, capsys, value):
    base = tmp_path / "base.avgprof"
    profile.save(base)
    assert main(["drift", str(base), str(base), "--threshold", value]) == 2  # nan:nan passed any drift
    assert "must be numbers >= 0" in capsys.readouterr().err


def test_python_thresholds_are_checked_too(profile):
    from avgpool.monitor import Threshold, compare

    with pytest.raises(ProfileError, match="must be numbers >= 0"):
        compare(profile, profile, thresholds={"psi": Threshold(float("nan"), float("nan"), "mine")})
    with pytest.raises(ProfileError, match="unknown metric"):
        compare(profile, profile, thresholds={"psy": Threshold(0.1, 0.2, "typo")})


def test_a_plot_of_no_layers_is_refused_as_such(tmp_path, profile, capsys):
    base = tmp_path / "base.avgprof"
    profile.save(base)
    assert main(["drift", str(base), str(base), "--plot", str(tmp_path / "d.png"), "--top", "0"]) == 2
    assert "top must be an int >= 1" in capsys.readouterr().err  # said "no layers in common"
    assert not (tmp_path / "d.png").exists()
