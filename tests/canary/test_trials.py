"""Real canaries on 127.0.0.1 with the demo's model family (tests/canary/variants.py): the
identical candidate passes and never fails over every look, the stem swap fails on activations
and outputs, 3 ms of injected latency fails on latency, a padding change at the borders only
fails on outputs or activations, each within the number of requests stated here.

``scripts/canary_trials.py`` runs the same trials, repeated, for the table in docs/canary.md.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
pytest.importorskip("fastapi")
pytest.importorskip("tritonclient.http")

from tests.canary import variants
from tests.canary.trials import run_trial

httpx = pytest.importorskip("httpx")

#: Requests at which each verdict must have come, at the latest (the looks come every 25). The
#: judge passes nothing before each version has answered 200 requests: at 400 in a split at 0.5,
#: at 200 in shadow mode (where the candidate also runs every request, a few behind). It judges
#: outputs from 100 mirrored requests on. A fail needs no minimum: the 3 ms delay and the
#: swapped stem's activations fail at the first look.
DECIDE_WITHIN = {
    "identical/split": 400,
    "identical/shadow": 250,
    "avg-stem/shadow": 125,
    "delay-3ms/split": 50,
    "border-padding/shadow": 125,
}
#: A trial of the identical candidate runs all its looks, so a late false fail counts too.
LOOKS = 20


@pytest.fixture(scope="module")
def family(tmp_path_factory):
    return variants.build(tmp_path_factory.mktemp("canary-family"))


def _pooling(path, x):
    from avgpool.serve import load_runner

    runner = load_runner(path)
    try:
        return runner.run({"image": x}, sample=True)
    finally:
        runner.close()


def test_border_padding_changes_border_cells_only(family):
    v = family["border-padding/shadow"]
    x = np.random.default_rng(7).standard_normal((8, 3, 32, 32)).astype(np.float32)
    (out_b, pool_b), (out_c, pool_c) = _pooling(v.base, x), _pooling(v.candidate, x)
    b, c = pool_b["/pool2/AveragePool"], pool_c["/pool2/AveragePool"]
    assert b.shape == c.shape == (8, 16, 8, 8)
    np.testing.assert_array_equal(pool_b["/pool1/MaxPool"], pool_c["/pool1/MaxPool"])
    # every window but those of the first row and column lies inside the input: identical
    np.testing.assert_array_equal(b[:, :, 1:, 1:], c[:, :, 1:, 1:])
    # the border windows hold 6 cells of input (the corner 4), counted as 9 by the baseline
    np.testing.assert_allclose(c[:, :, 0, 1:], b[:, :, 0, 1:] * 9 / 6, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(c[:, :, 1:, 0], b[:, :, 1:, 0] * 9 / 6, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(c[:, :, 0, 0], b[:, :, 0, 0] * 9 / 4, rtol=1e-5, atol=1e-7)
    # so every border cell differs but those where the ReLU zeroed the whole window
    border = np.concatenate([b[:, :, 0, :], b[:, :, 1:, 0]], axis=-1)
    changed = np.concatenate([c[:, :, 0, :] != b[:, :, 0, :], c[:, :, 1:, 0] != b[:, :, 1:, 0]], axis=-1)
    np.testing.assert_array_equal(changed, border != 0)
    assert changed.mean() > 0.5
    assert np.abs(out_c["linear"] - out_b["linear"]).max() > 1e-3


def test_identical_and_swapped_outputs(family):
    x = variants.images(16)
    base = _pooling(family["identical/split"].base, x)[0]["linear"]
    np.testing.assert_array_equal(_pooling(family["identical/split"].candidate, x)[0]["linear"], base)
    swapped = _pooling(family["avg-stem/shadow"].candidate, x)[0]["linear"]
    assert np.abs(swapped - base).max() > 1e-2


@pytest.mark.parametrize(
    ("key", "seed"),
    [
        ("identical/split", 0),
        ("identical/split", 1),
        ("identical/shadow", 0),
        ("avg-stem/shadow", 0),
        ("delay-3ms/split", 0),
        ("border-padding/shadow", 0),
    ],
)
def test_canary_trial(family, key, seed):
    variant = family[key]
    trial = run_trial(variant, seed=seed, rate=100, look_every=25, max_looks=LOOKS, timeout=40)
    summary = trial.summary()
    assert not trial.errors, summary + f"; errors: {trial.errors}"
    with pytest.raises(httpx.ConnectError):  # the trial stopped its server
        httpx.get(f"{trial.url}/v2/health/live", timeout=5)
    assert trial.verdict == variant.expected, summary
    assert trial.decided_at is not None and trial.decided_at <= DECIDE_WITHIN[key], summary
    if variant.expected == "pass":
        assert len(trial.looks) == LOOKS, summary
        assert all(look.verdict != "fail" for look in trial.looks), summary
        assert trial.first_fail == {}, summary
    else:
        assert trial.expected_checks_failed, summary
        for check in variant.fails_on:
            assert trial.first_fail[check] <= DECIDE_WITHIN[key], summary


def test_the_pooling_diff_shown_in_the_docs(family, capsys):
    from avgpool.cli import main

    v = family["border-padding/shadow"]
    main(["diff", v.base, v.candidate])
    changed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("changed")]
    assert changed == [
        "changed  /pool2/AveragePool  /pool2/AveragePool  name        count_include_pad True -> False  no"
    ]
    assert f"     {changed[0]}\n" in (variants.ROOT / "docs" / "canary.md").read_text()


def _doc_commands() -> list[str]:
    """Every ``avgpool ...`` command of docs/canary.md's shell blocks, continuation lines joined."""
    import re

    text = (variants.ROOT / "docs" / "canary.md").read_text()
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", text, flags=re.S):
        for line in re.sub(r"\\\n\s*", " ", block).splitlines():
            line = re.sub(r"\s+#.*$", "", line.strip()).split(" > ")[0].rstrip("&").strip()
            if line.startswith("avgpool "):
                commands.append(line)
    return commands


def test_the_docs_commands_parse():
    import shlex

    from avgpool.cli import _parser

    commands = _doc_commands()
    assert sum(c.startswith("avgpool canary ") for c in commands) >= 5, commands
    parser = _parser()
    for command in commands:
        parser.parse_args(shlex.split(command)[1:])  # exits 2 on an option the CLI does not have
