"""avgpool profile / drift: tables, JSON, plot, exit codes 0/1/2, nothing overwritten on error."""

from __future__ import annotations

import json
import os

import pytest

from avgpool.cli import main

pytest.importorskip("onnxruntime")


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def profiles(tmp_path_factory, onnx_files, npz):
    root = tmp_path_factory.mktemp("cli_profiles")
    base, cand = root / "base.avgprof", root / "cand.avgprof"
    assert main(["profile", onnx_files["base"], "--inputs", npz, "-o", str(base), "--no-progress"]) == 0
    # made apart: nothing of the baseline's is needed to compare with it
    argv = ["profile", onnx_files["stem_avg"], "--inputs", npz, "-o", str(cand)]
    assert main([*argv, "--no-progress", "--batch-size", "7"]) == 0
    return str(base), str(cand)


def test_two_profiles_of_one_model_made_apart_pass(capsys, onnx_files, npz, tmp_path):
    a, b = tmp_path / "a.avgprof", tmp_path / "b.avgprof"
    argv = ["profile", onnx_files["base"], "--inputs", npz, "--no-progress"]
    assert main([*argv, "-o", str(a), "--batch-size", "5"]) == 0
    assert main([*argv, "-o", str(b), "--max-buckets", "64"]) == 0
    capsys.readouterr()
    code, out, err = run(capsys, "drift", a, b, "--json")
    assert code == 0 and err == ""
    report = json.loads(out)
    assert report["verdict"] == "ok" and all(d["metrics"]["ks"] < 0.05 for d in report["layers"])


def test_profile_table(capsys, onnx_files, npz, tmp_path):
    out_path = tmp_path / "p.avgprof"
    code, out, err = run(
        capsys, "profile", onnx_files["base"], "--inputs", npz, "-o", out_path, "--no-progress"
    )
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert (
        lines[0]
        == f"profile of {onnx_files['base']}: 3 layers, 2 batches, histograms of up to 320 buckets per sign"
    )
    row = next(line for line in lines if line.startswith("/pool1/MaxPool"))
    assert row.split()[:4] == ["/pool1/MaxPool", "MaxPool", "4x6x6", str(48 * 4 * 36)]
    assert lines[-1].startswith(f"wrote {out_path} (model sha256 ")
    assert out_path.exists()


def test_drift_gate_fails_on_the_stem_with_a_plot(capsys, profiles, tmp_path):
    plot = tmp_path / "drift.png"
    code, out, err = run(capsys, "drift", *profiles, "--plot", plot)
    assert code == 1 and err == ""
    row = next(line for line in out.splitlines() if line.startswith("0  /pool1/MaxPool"))
    assert row.split()[1:6] == ["/pool1/MaxPool", "->", "/pool1/AveragePool", "MaxPool", "->"]
    assert "FAIL" in row
    assert "first drifted layer (execution order): /pool1/MaxPool" in out
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 10_000


def test_drift_json_and_fail_on(capsys, profiles):
    code, out, _ = run(capsys, "drift", *profiles, "--json")
    report = json.loads(out)
    assert code == 1 and report["verdict"] == "fail" and report["first_drifted"] == "/pool1/MaxPool"
    first = report["layers"][0]
    assert first["candidate_name"] == "/pool1/AveragePool" and first["metrics"]["mean_shift"] < -0.5
    psi = report["thresholds"]["psi"]
    assert (psi["warn"], psi["fail"]) == (0.1, 0.25) and psi["source"].startswith("Siddiqi (2006)")
    assert run(capsys, "drift", *profiles, "--fail-on", "never")[0] == 0
    assert run(capsys, "drift", profiles[0], profiles[0], "--fail-on", "warn")[0] == 0


def test_drift_markdown(capsys, profiles):
    code, out, _ = run(capsys, "drift", *profiles, "--markdown")
    assert code == 1
    assert out.startswith("**activation drift:")
    assert (
        "| # | layer | op | verdict | mean shift | std ratio | PSI | KS | W1 | JS | nonfinite | flagged by |"
        in out
    )


@pytest.mark.parametrize("damage", ["truncated", "corrupted", "future"])
def test_bad_profile_exit_2_and_nothing_overwritten(capsys, profiles, onnx_files, npz, tmp_path, damage):
    bad = tmp_path / "bad.avgprof"
    with open(profiles[0], "rb") as f:
        data = f.read()
    if damage == "truncated":
        bad.write_bytes(data[: len(data) // 3])
    elif damage == "corrupted":
        bad.write_bytes(data[:200] + bytes(b ^ 0x5A for b in data[200:260]) + data[260:])
    else:
        from tests.monitor.test_fileformat import _rewrite_header

        bad.write_bytes(data)
        _rewrite_header(bad, format_version=99)
    target = tmp_path / "existing.avgprof"
    target.write_bytes(b"precious")
    plot = tmp_path / "plot.png"
    code, out, err = run(capsys, "drift", bad, profiles[1], "--plot", plot)
    assert code == 2 and out == ""
    assert err.startswith(f"avgpool drift: error: {bad}: ") and len(err.splitlines()) == 1
    assert not plot.exists()
    code, out, err = run(
        capsys,
        "profile",
        onnx_files["base"],
        "--inputs",
        npz,
        "--baseline",
        bad,
        "-o",
        target,
        "--no-progress",
    )
    assert code == 2 and err.startswith("avgpool profile: error: ")
    assert target.read_bytes() == b"precious"
    assert sorted(os.listdir(tmp_path)) == ["bad.avgprof", "existing.avgprof"]
    if damage == "future":
        assert "format version 99 was written by a newer avgpool" in err


def test_bad_arguments_exit_2(capsys, profiles, onnx_files, tmp_path):
    code, _, err = run(capsys, "drift", *profiles, "--threshold", "psi=1")
    assert code == 2 and "METRIC=WARN:FAIL" not in err and "psi=0.1:0.25" in err
    code, _, err = run(
        capsys, "profile", onnx_files["base"], "--inputs", tmp_path / "no.npz", "-o", tmp_path / "x"
    )
    assert code == 2 and "no such inputs file" in err


def test_drift_exports_textfile_and_tensorboard(capsys, profiles, tmp_path):
    pytest.importorskip("prometheus_client")
    pytest.importorskip("tensorboard")
    from prometheus_client.parser import text_string_to_metric_families

    prom, logdir = tmp_path / "m.prom", tmp_path / "tb"
    argv = [
        "drift",
        *profiles,
        "--prometheus-textfile",
        prom,
        "--tensorboard",
        logdir,
        "--model-version",
        "2",
    ]
    code, out, _ = run(capsys, *argv, "--json")
    report = json.loads(out)
    psi = {
        s.labels["layer"]: s.value
        for f in text_string_to_metric_families(prom.read_text())
        for s in f.samples
        if s.name == "avgpool_activation_psi"
    }
    assert code == 1 and psi == {
        d["candidate_name"]: pytest.approx(d["metrics"]["psi"]) for d in report["layers"]
    }
    assert len(list(logdir.iterdir())) == 1
