"""avgpool study: the variants are what they say, training is deterministic and learns, the report
folder's numbers agree with results.json, and the command runs end to end (exit 0 / 2)."""

from __future__ import annotations

import json
import re
import statistics
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")

import torch.nn.functional as F  # noqa: E402

import avgpool.nn as apnn  # noqa: E402
from avgpool.cli import main  # noqa: E402
from avgpool.study import VARIANTS, Setting, load_digits_split, run_study  # noqa: E402
from avgpool.study.train import threads, train_variant  # noqa: E402
from avgpool.study.twins import torch_twin  # noqa: E402

#: Parameters counted by hand: conv1 16*1*9+16 = 160, conv2 32*16*9+32 = 4640, flatten head
#: 128*10+10 = 1290, GAP head 32*10+10 = 330, strided convs 16*16*9+16 = 2320 and 32*32*9+32 = 9248.
PARAMS = {"avg": 6090, "max": 6090, "blur": 6090, "strided": 6090 + 2320 + 9248, "avg-gap": 5130}
#: avgpool.nn modules each model has: two downsampling layers, plus the GAP head's pool.
POOLING_MODULES = {"avg": 2, "max": 2, "blur": 2, "strided": 0, "avg-gap": 3}
#: A study small enough for a test: 2 seeds (a spread), 3 epochs, few latency samples.
TINY = Setting(
    "tiny", seeds=2, epochs=3, latency_batch=64, latency_rounds=2, latency_repeats=5, latency_repeats_batch=2
)


@pytest.fixture(scope="module")
def digits():
    return load_digits_split()


@pytest.fixture(scope="module")
def study(tmp_path_factory, digits):
    out = tmp_path_factory.mktemp("study_report")
    result = run_study(out, TINY, subset=400, data=digits)
    return out, result, json.loads((out / "results.json").read_text())


def test_import_stays_light():
    code = (
        "import sys, avgpool, avgpool.study, avgpool.cli\n"
        "avgpool.cli._parser()\n"
        "print(sorted(m for m in ('torch', 'sklearn', 'matplotlib', 'rich') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"


def test_digits_split_is_fixed_and_stratified(digits):
    again = load_digits_split()
    assert digits.x_train.shape == (1347, 1, 8, 8) and digits.x_test.shape == (450, 1, 8, 8)
    assert np.array_equal(digits.x_test, again.x_test) and np.array_equal(digits.y_train, again.y_train)
    # standardised with the training pixels' statistics
    assert abs(float(digits.x_train.mean())) < 1e-5 and abs(float(digits.x_train.std()) - 1) < 1e-5
    # stratified: every class holds 25% of its images in the test part, to within one image
    counts_test, counts_all = np.bincount(digits.y_test), np.bincount(np.r_[digits.y_train, digits.y_test])
    assert np.all(np.abs(counts_test - 0.25 * counts_all) <= 1)


@pytest.mark.parametrize("name", list(VARIANTS))
def test_variant_shapes_and_parameters(name):
    torch.manual_seed(0)
    model = VARIANTS[name].build().eval()
    x = torch.randn(5, 1, 8, 8)
    with torch.no_grad():
        h1 = model.down1(model.relu1(model.conv1(x)))
        h2 = model.down2(model.relu2(model.conv2(h1)))
        logits = model(x)
    assert h1.shape == (5, 16, 4, 4) and h2.shape == (5, 32, 2, 2)
    assert logits.shape == (5, 10) and torch.equal(logits, model.head(h2))
    assert sum(p.numel() for p in model.parameters()) == PARAMS[name]


def test_pooling_on_the_hand_worked_4x4():
    # the README's 4x4 -> 2x2 average: each output is the mean of one 2x2 block
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    down = VARIANTS["avg"].build().down1
    assert down(x).flatten().tolist() == [2.5, 4.5, 10.5, 12.5]
    assert VARIANTS["max"].build().down1(x).flatten().tolist() == [5.0, 7.0, 13.0, 15.0]


def test_each_downsampling_is_what_it_says():
    torch.manual_seed(1)
    x = torch.rand(3, 16, 8, 8)
    avg, mx, blur = (VARIANTS[n].build().down1 for n in ("avg", "max", "blur"))
    assert type(avg) is apnn.AvgPool2d and torch.allclose(avg(x), F.avg_pool2d(x, 2), atol=1e-6)
    assert type(mx) is apnn.MaxPool2d and torch.equal(mx(x), F.max_pool2d(x, 2))
    # blur pool: reflect pad (1, 2), the binomial [1, 3, 3, 1] / 8 in each direction, stride 2
    taps = torch.tensor([1.0, 3.0, 3.0, 1.0]) / 8
    kernel = torch.outer(taps, taps).expand(16, 1, 4, 4)
    expected = F.conv2d(F.pad(x, (1, 2, 1, 2), mode="reflect"), kernel, stride=2, groups=16)
    assert type(blur) is apnn.BlurPool2d and torch.allclose(blur(x), expected, atol=1e-6)
    strided = VARIANTS["strided"].build().down1
    conv = strided[0]
    assert type(conv) is torch.nn.Conv2d
    assert (conv.kernel_size, conv.stride, conv.padding) == ((3, 3), (2, 2), (1, 1))
    assert type(strided[1]) is torch.nn.ReLU
    gap = VARIANTS["avg-gap"].build().head[0]
    assert type(gap) is apnn.GlobalAvgPool and torch.allclose(gap(x), x.mean((2, 3)), atol=1e-6)
    assert type(VARIANTS["avg"].build().head[0]) is torch.nn.Flatten


@pytest.mark.parametrize("name", list(VARIANTS))
def test_torch_twin_computes_the_same(name):
    torch.manual_seed(2)
    model = VARIANTS[name].build().eval()
    twin, swapped = torch_twin(model)
    assert swapped == POOLING_MODULES[name]
    assert not any(type(m).__module__ == "avgpool.nn" for m in twin.modules())
    x = torch.randn(4, 1, 8, 8)
    with torch.no_grad():
        assert torch.allclose(model(x), twin(x), atol=1e-5)


def test_torch_twin_of_other_pooling_and_its_refusals():
    from torch import nn

    net = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        apnn.LPPool2d(2, 2),
        apnn.AdaptiveMaxPool2d(3),
        apnn.AdaptiveAvgPool2d(2),
    ).eval()
    twin, swapped = torch_twin(net)
    assert swapped == 3 and [type(m).__module__ for m in twin[1:]] == ["torch.nn.modules.pooling"] * 3
    x = torch.randn(2, 1, 9, 9)
    with torch.no_grad():
        assert torch.allclose(net(x), twin(x), atol=1e-5)
    for module in (apnn.GlobalMaxPool(), apnn.AvgPool2d(3, 2, padding="same", convention="tensorflow")):
        with pytest.raises(ValueError, match=r"torch\.nn twin"):
            torch_twin(nn.Sequential(nn.ReLU(), module))


def test_same_seed_same_model_other_seed_other_model(digits):
    small = digits.subset(200)
    with threads(1):
        a, b, c = (train_variant(VARIANTS["blur"], small, seed=s, epochs=2) for s in (7, 7, 8))
    assert a.train_loss == b.train_loss and a.test_accuracy == b.test_accuracy
    for (name, pa), pb in zip(a.model.state_dict().items(), b.model.state_dict().values()):
        assert torch.equal(pa, pb), name
    assert a.train_loss != c.train_loss
    assert not torch.equal(a.model.conv1.weight, c.model.conv1.weight)


def test_training_learns(digits):
    with threads(1):
        run = train_variant(VARIANTS["max"], digits, seed=0, epochs=10)
    assert run.accuracy > 0.9  # chance is 0.1
    assert run.train_loss[-1] < 0.25 * run.train_loss[0]
    assert run.accuracy == run.test_accuracy[-1] and len(run.test_accuracy) == 10


def test_report_folder_has_every_file(study):
    out, result, data = study
    names = {"report.md", "results.json", "accuracy_vs_latency.png", "activations.png", "training_curves.png"}
    assert {p.name for p in out.iterdir()} == names
    assert sorted(map(str, result.files)) == sorted(str(out / n) for n in names)
    for png in names - {"report.md", "results.json"}:
        blob = (out / png).read_bytes()
        assert blob[:8] == b"\x89PNG\r\n\x1a\n" and len(blob) > 20_000
    assert data == json.loads(json.dumps(result.to_dict()))
    for name in ("accuracy_vs_latency.png", "activations.png"):
        assert f"]({name})" in (out / "report.md").read_text()


def test_results_json_is_consistent(study):
    _, _, data = study
    assert [v["name"] for v in data["variants"]] == list(VARIANTS) and data["seeds"] == [0, 1]
    assert data["data"]["train"] == 400 and data["data"]["test"] == 450
    edges = {}
    for v in data["variants"]:
        per_seed = list(v["accuracy"]["per_seed"].values())
        assert len(per_seed) == 2 and all(0 <= a <= 1 for a in per_seed)
        assert v["accuracy"]["mean"] == pytest.approx(statistics.fmean(per_seed))
        assert v["accuracy"]["std"] == pytest.approx(statistics.stdev(per_seed))
        assert [c[-1] for c in v["curves"]["test_accuracy"].values()] == per_seed
        assert v["params"] == PARAMS[v["name"]]
        lat = v["latency"]
        assert lat["batch1"]["batch"] == 1 and lat["batch"]["batch"] == 64
        assert lat["batch1"]["n"] == 10 and lat["batch"]["n"] == 4  # 2 rounds x 5 and x 2
        assert 0 < lat["batch1"]["p50_ms"] <= lat["batch1"]["p95_ms"]
        assert (v["latency_torch_nn"] is None) == (POOLING_MODULES[v["name"]] == 0)
        for k, a in enumerate(v["activations"]):
            assert a["probe"] == f"down{k + 1}" and a["count"] == 2 * 450 * int(np.prod(a["shape"]))
            assert sum(a["hist"]) == a["count"] and a["below"] == a["above"] == 0
            assert 0 <= a["zeros"] <= a["count"] and a["sparsity"] == a["zeros"] / a["count"]
            assert a["edges"][0] <= a["min"] and a["max"] < a["edges"][-1]
            edges.setdefault(k, a["edges"])
            assert a["edges"] == edges[k]  # shared by every variant at the same probe


def _results_rows(markdown: str) -> dict[str, list[str]]:
    section = markdown.split("## Results", 1)[1].split("##", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ")][2:]  # after the header
    return {cells[0]: cells for cells in ([c.strip() for c in r.strip("|").split("|")] for r in rows)}


def _floats(cell: str) -> list[float]:
    return [float(x) for x in re.findall(r"-?\d+(?:\.\d+)?", cell.replace(",", ""))]


def test_report_numbers_equal_results_json(study):
    out, _, data = study
    rows = _results_rows((out / "report.md").read_text())
    assert list(rows) == [v["name"] for v in data["variants"]]
    for v in data["variants"]:
        cells = rows[v["name"]]
        acc = v["accuracy"]
        assert _floats(cells[1]) == pytest.approx([acc["mean"], acc["std"]], abs=5e-5)
        assert _floats(cells[2]) == pytest.approx(list(acc["per_seed"].values()), abs=5e-5)
        for cell, t in zip(cells[3:5], (v["latency"]["batch1"], v["latency"]["batch"])):
            assert _floats(cell) == pytest.approx([t["p50_ms"], t["p95_ms"], t["n"]], abs=5e-4)
        assert _floats(cells[5]) == [v["params"]]
        for cell, a in zip(cells[6:8], v["activations"]):
            assert _floats(cell) == pytest.approx([a["mean"], a["std"], 100 * a["sparsity"]], abs=5e-2)


def test_reading_is_computed_from_the_numbers(study):
    out, _, data = study
    text = (out / "report.md").read_text()
    vs = data["variants"]
    best = max(vs, key=lambda v: v["accuracy"]["mean"])
    worst = min(vs, key=lambda v: v["accuracy"]["mean"])
    gap = 100 * (best["accuracy"]["mean"] - worst["accuracy"]["mean"])
    assert f"- Most accurate: {best['name']}, " in text
    assert f"least accurate: {worst['name']}, {gap:.1f} points lower." in text
    fastest = min(vs, key=lambda v: v["latency"]["batch1"]["p50_ms"])
    p50 = fastest["latency"]["batch1"]["p50_ms"]
    assert f"Latency at batch 1: fastest {fastest['name']} (P50 {p50:.3f} ms)" in text
    assert "Head, same downsampling: avg (flatten -> Linear(128, 10))" in text
    assert "Parameters: strided has the most, 17,658 (3.4x avg-gap's 5,130)." in text


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_end_to_end(capsys, tmp_path):
    out_dir = tmp_path / "report"
    argv = ["study", "--seeds", "1", "--epochs", "1", "--subset", "200", "--variants", "avg", "strided"]
    code, out, err = run(capsys, *argv, "--out", out_dir, "--no-progress")
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert lines[0] == "pooling study on scikit-learn digits: fast setting, 1 seed(s) x 1 epochs, 1 thread(s)"
    assert [line.split()[0] for line in lines[4:6]] == ["avg", "strided"]
    assert "One seed: there is no spread to judge these differences by; run more seeds." in out
    assert lines[-1].startswith(f"report: {out_dir / 'report.md'} (with results.json, ")
    data = json.loads((out_dir / "results.json").read_text())
    assert [v["name"] for v in data["variants"]] == ["avg", "strided"] and data["setting"]["epochs"] == 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--seeds", "0"], "seeds must be an int between 1 and 100, got 0"),
        (["--epochs", "0"], "epochs must be an int between 1 and 1000, got 0"),
        (["--variants", "median"], "variants must be among ['avg', 'max', 'blur', 'strided', 'avg-gap']"),
        (["--variants", "avg", "avg"], "variants must be one or more distinct names, got ['avg', 'avg']"),
        (["--threads", "0"], "threads must be an int between 1 and "),
        (["--subset", "3"], "subset must be an int between 10 and 1347 (training images), got 3"),
    ],
)
def test_cli_rejects_bad_arguments_with_exit_2(capsys, tmp_path, argv, message):
    code, out, err = run(capsys, "study", *argv, "--out", tmp_path / "never", "--no-progress")
    assert code == 2 and out == ""
    assert err.startswith("avgpool study: error: ") and message in err
    assert not (tmp_path / "never").exists()


def test_cli_rejects_a_file_as_out_dir(capsys, tmp_path):
    target = tmp_path / "file.txt"
    target.write_text("keep me")
    code, _, err = run(capsys, "study", "--seeds", "1", "--out", target, "--no-progress")
    assert code == 2 and "out_dir must be a folder" in err and target.read_text() == "keep me"


@pytest.mark.parametrize("argv", [["--fast", "--full"], ["--seeds", "two"]])
def test_cli_usage_errors_exit_2(capsys, argv):
    with pytest.raises(SystemExit) as exc:
        main(["study", *argv])
    assert exc.value.code == 2
    assert "usage: avgpool study" in capsys.readouterr().err


def test_a_variant_and_data_of_your_own(digits):
    from avgpool.study import Dataset, Variant, digits_cnn

    small = Variant(
        "max-small", "max 2x2, 8 and 16 channels", "flatten", lambda: digits_cnn("max", widths=(8, 16))
    )
    result = run_study(None, TINY, seeds=[3], epochs=1, variants=[small, "avg"], subset=100, data=digits)
    # conv1 8*9+8 = 80, conv2 16*8*9+16 = 1168, head 16*2*2*10+10 = 650
    assert result["max-small"].params == 1898 and result["max-small"].seeds == [3]
    assert result["max-small"].latency_torch_nn is not None and result.files == []
    eight_classes = Dataset(
        "ones",
        np.ones((20, 1, 12, 12), np.float32),
        np.arange(20) % 8,
        np.ones((4, 1, 12, 12), np.float32),
        np.arange(4),
        classes=8,
    )
    with pytest.raises(ValueError, match=r"the built-in variants \['avg'\] take 1x8x8 images in 10 classes"):
        run_study(None, TINY, variants=["avg"], data=eight_classes)
    wrong = Variant("wrong", "?", "?", lambda: digits_cnn("avg"), probes=("pool",))
    with pytest.raises(ValueError, match=r"variant 'wrong': probes must name modules of its model"):
        run_study(None, TINY, variants=[wrong], data=digits)
