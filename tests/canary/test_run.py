"""`avgpool canary run`'s loop: the admin calls it makes for each sequence of verdicts, the timing of
a rollback, holding a step, giving up undecided, and its command line.

The loop's judge and evidence are injected here and the server is an httpx mock transport that
records each call, so these tests run in milliseconds and say exactly which calls happen when.
"""

from __future__ import annotations

import argparse
import json
from types import SimpleNamespace

import pytest

httpx = pytest.importorskip("httpx")

from avgpool._errors import AvgPoolError  # noqa: E402
from avgpool.canary.run import check_steps, run_canary  # noqa: E402

URL = "http://127.0.0.1:8000"


class FakeServer:
    """The admin routes of a server with model ``tinynet`` in versions 1 and 2, each call kept."""

    def __init__(self, versions=("1", "2"), refuse=()):
        self.calls = []
        self.versions = list(versions)
        self.refuse = set(refuse)

    def __call__(self, request):
        body = json.loads(request.content) if request.content else None
        self.calls.append((request.method, request.url.path, body))
        if request.url.path in self.refuse:
            return httpx.Response(403, json={"error": "admin endpoints answer loopback clients only"})
        if request.method == "GET" and request.url.path == "/v2/models/tinynet":
            return httpx.Response(200, json={"name": "tinynet", "versions": self.versions})
        if request.method == "GET":
            return httpx.Response(404, json={"error": "no such model"})
        return httpx.Response(200, json={})

    def client(self):
        return httpx.Client(transport=httpx.MockTransport(self))

    def admin(self):
        """The admin calls as (what, share) pairs: share changes and window resets."""
        out = []
        for _method, path, body in self.calls:
            if path == "/admin/canary":
                out.append(("share", body["share"]))
            elif path.endswith("/reset"):
                out.append(("reset", None))
        return out


class Clock:
    """A clock that moves only when the loop sleeps (and by ``cost`` per look, if set)."""

    def __init__(self):
        self.now = 100.0
        self.sleeps = []

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.now += seconds


def scripted(*verdicts, clock=None, cost=0.0):
    """A judge answering ``verdicts`` in order (the last one repeated), recording each call."""
    calls = []

    def judge(baseline, candidate, *, mirror=None, policy=None, look=1):
        calls.append({"look": look, "policy": policy, "baseline": baseline, "candidate": candidate})
        if clock is not None:
            clock.now += cost
        verdict = verdicts[min(len(calls), len(verdicts)) - 1]
        reason = {"fail": "median slowdown 3.1 ms > 0.5 ms", "not enough data": "150 < 200 requests"}.get(
            verdict, "within bounds"
        )
        check = SimpleNamespace(name="latency", verdict=verdict, reason=reason, stats={})
        ok = SimpleNamespace(name="errors", verdict="pass", reason="0 of 300 vs 0 of 310", stats={})
        return SimpleNamespace(
            verdict=verdict,
            checks=[ok, check],
            look=look,
            to_dict=lambda: {
                "verdict": verdict,
                "look": look,
                "checks": [{"name": "latency", "verdict": verdict}],
            },
        )

    judge.calls = calls
    return judge


def evidence(url, model):
    assert (url, model) == (URL, "tinynet")
    return ("base-evidence", "cand-evidence", None)


def run(server, judge, clock, **kwargs):
    kwargs.setdefault("interval", 10.0)
    return run_canary(
        URL + "/",
        "tinynet",
        "1",
        "2",
        judge=judge,
        source=evidence,
        client=server.client(),
        clock=clock,
        sleep=clock.sleep,
        **kwargs,
    )


def test_four_passes_step_through_every_share_and_promote():
    server, clock = FakeServer(), Clock()
    judge = scripted("pass")
    result = run(server, judge, clock, steps=(0.05, 0.25, 0.5, 1.0))
    assert result.outcome == "promoted"
    assert result.exit_code == 0
    assert result.share == 1.0
    # a fresh window after every share change, the last step (1.0) set without a window to judge
    assert server.admin() == [
        ("share", 0.05),
        ("reset", None),
        ("share", 0.25),
        ("reset", None),
        ("share", 0.5),
        ("reset", None),
        ("share", 1.0),
    ]
    # every open/step/promote is a split canary of version 2 against 1, never a DELETE
    bodies = [body for method, path, body in server.calls if path == "/admin/canary"]
    assert all(
        b["mode"] == "split" and (b["baseline"], b["candidate"], b["model"]) == ("1", "2", "tinynet")
        for b in bodies
    )
    assert all(method != "DELETE" for method, _, _ in server.calls)
    assert [(look.look, look.share, look.verdict) for look in result.looks] == [
        (1, 0.05, "pass"),
        (2, 0.25, "pass"),
        (3, 0.5, "pass"),
    ]
    # the look counter runs over the whole canary, so the judge's correction holds across steps
    assert [c["look"] for c in judge.calls] == [1, 2, 3]
    assert [c["baseline"] for c in judge.calls] == ["base-evidence"] * 3
    assert clock.sleeps == [10.0, 10.0, 10.0]
    assert [a["action"] for a in result.actions] == [
        "open",
        "reset",
        "step",
        "reset",
        "step",
        "reset",
        "promote",
    ]


def test_steps_need_not_end_at_one_to_promote_to_one():
    server, clock = FakeServer(), Clock()
    result = run(server, scripted("pass"), clock, steps=(0.1, 0.5))
    assert result.outcome == "promoted"
    assert server.admin() == [
        ("share", 0.1),
        ("reset", None),
        ("share", 0.5),
        ("reset", None),
        ("share", 1.0),
    ]


def test_the_first_fail_rolls_back_within_the_same_look():
    server, clock = FakeServer(), Clock()
    result = run(server, scripted("pass", "fail", clock=clock, cost=0.25), clock)
    assert result.outcome == "rolled back"
    assert result.exit_code == 2
    assert result.share == 0.0
    assert server.admin() == [
        ("share", 0.05),
        ("reset", None),
        ("share", 0.25),
        ("reset", None),
        ("share", 0.0),
    ]
    # the rollback is the next call after the failing look, at that look's time
    fail = result.looks[-1]
    rollback = result.actions[-1]
    assert (fail.look, fail.share, fail.verdict) == (2, 0.25, "fail")
    assert rollback["action"] == "rollback" and rollback["body"]["share"] == 0.0
    # looks fall on the interval's grid (10 s, 20 s); the failing one took 0.25 s and the
    # rollback came in the same instant: within one interval of the step's first evidence
    assert rollback["elapsed"] == fail.elapsed == 20.25
    assert result.reason == "look 2 failed at share 0.25: latency (fail): median slowdown 3.1 ms > 0.5 ms"
    assert fail.reasons[0] == "latency (fail): median slowdown 3.1 ms > 0.5 ms"


def test_looks_keep_to_the_interval_even_when_a_look_takes_time():
    server, clock = FakeServer(), Clock()
    run(server, scripted("not enough data", "pass", clock=clock, cost=3.0), clock, steps=(0.5, 1.0))
    assert clock.sleeps == [10.0, 7.0]


def test_shadow_first_judges_a_shadow_stage_before_any_user_sees_the_candidate():
    server, clock = FakeServer(), Clock()
    result = run(server, scripted("pass"), clock, steps=(0.1, 1.0), shadow_first=True)
    assert result.outcome == "promoted"
    bodies = [(b["mode"], b["share"]) for method, path, b in server.calls if path == "/admin/canary"]
    assert bodies == [("shadow", 0.0), ("split", 0.1), ("split", 1.0)]
    assert [(look.mode, look.share) for look in result.looks] == [("shadow", 0.0), ("split", 0.1)]
    assert result.reason == "every step passed (shadow, 0.1); look 2 of 20"

    server, clock = FakeServer(), Clock()
    result = run(server, scripted("fail"), clock, shadow_first=True)
    assert (result.outcome, result.share, result.mode) == ("rolled back", 0.0, "split")
    assert [(b["mode"], b["share"]) for _, path, b in server.calls if path == "/admin/canary"] == [
        ("shadow", 0.0),
        ("split", 0.0),
    ]
    assert result.reason.startswith("look 1 failed at shadow: latency (fail)")


def test_an_error_in_shadow_closes_the_shadow():
    server, clock = FakeServer(), Clock()

    def broken(*args, **kwargs):
        raise RuntimeError("judge bug")

    with pytest.raises(RuntimeError):
        run(server, broken, clock, shadow_first=True)
    assert [(b["mode"], b["share"]) for _, path, b in server.calls if path == "/admin/canary"] == [
        ("shadow", 0.0),
        ("split", 0.0),
    ]


def test_not_enough_data_and_marginal_hold_the_step():
    server, clock = FakeServer(), Clock()
    judge = scripted("not enough data", "not enough data", "marginal", "pass", "pass")
    result = run(server, judge, clock, steps=(0.05, 0.5, 1.0))
    assert result.outcome == "promoted"
    assert [(look.share, look.verdict) for look in result.looks] == [
        (0.05, "not enough data"),
        (0.05, "not enough data"),
        (0.05, "marginal"),
        (0.05, "pass"),
        (0.5, "pass"),
    ]
    # holding a step keeps its window: no reset until the step changes
    assert server.admin() == [
        ("share", 0.05),
        ("reset", None),
        ("share", 0.5),
        ("reset", None),
        ("share", 1.0),
    ]


def test_min_looks_per_step_needs_passes_in_a_row():
    server, clock = FakeServer(), Clock()
    judge = scripted("pass", "marginal", "pass", "pass", "pass", "pass")
    result = run(server, judge, clock, steps=(0.1, 1.0), min_looks_per_step=2)
    assert result.outcome == "promoted"
    assert [look.verdict for look in result.looks] == ["pass", "marginal", "pass", "pass"]


def test_max_looks_without_a_decision_is_undecided_and_sends_traffic_back():
    server, clock = FakeServer(), Clock()
    judge = scripted("pass", "not enough data")
    result = run(server, judge, clock, max_looks=5)
    assert result.outcome == "undecided"
    assert result.exit_code == 1
    assert len(result.looks) == 5
    assert [c["look"] for c in judge.calls] == [1, 2, 3, 4, 5]
    assert result.reason == "no decision after 5 looks, at share 0.25"
    assert server.admin()[-1] == ("share", 0.0)


def test_hold_undecided_leaves_the_share():
    server, clock = FakeServer(), Clock()
    result = run(server, scripted("marginal"), clock, max_looks=3, hold_undecided=True)
    assert result.outcome == "undecided"
    assert result.share == 0.05
    assert server.admin() == [("share", 0.05), ("reset", None)]


def test_an_error_mid_run_sends_traffic_back_before_it_propagates():
    server, clock = FakeServer(), Clock()

    def broken(*args, **kwargs):
        raise RuntimeError("judge bug")

    with pytest.raises(RuntimeError, match="judge bug"):
        run(server, broken, clock)
    assert server.admin() == [("share", 0.05), ("reset", None), ("share", 0.0)]


def test_the_policy_takes_the_runs_max_looks():
    from dataclasses import dataclass

    @dataclass
    class Policy:
        alpha: float = 0.05
        max_looks: int = 20

    server, clock = FakeServer(), Clock()
    judge = scripted("pass")
    run(server, judge, clock, policy=Policy(), max_looks=7)
    assert judge.calls[0]["policy"] == Policy(max_looks=7)


def test_a_missing_version_is_refused_before_anything_changes():
    server, clock = FakeServer(versions=("1",)), Clock()
    with pytest.raises(AvgPoolError, match=r"candidate: model 'tinynet' has no version '2'; it has \['1'\]"):
        run(server, scripted("pass"), clock)
    assert server.admin() == []


def test_a_refused_admin_call_names_the_route_and_status():
    server, clock = FakeServer(refuse={"/admin/canary"}), Clock()
    with pytest.raises(AvgPoolError, match=r"POST http://127.0.0.1:8000/admin/canary answered 403"):
        run(server, scripted("pass"), clock)


def test_log_sees_every_action_and_look_as_it_happens():
    server, clock = FakeServer(), Clock()
    events = []
    run(
        server,
        scripted("pass", "fail"),
        clock,
        log=lambda event, record: events.append((event, record.get("action") or record.get("verdict"))),
    )
    assert events == [
        ("action", "open"),
        ("action", "reset"),
        ("look", "pass"),
        ("action", "step"),
        ("action", "reset"),
        ("look", "fail"),
        ("action", "rollback"),
    ]


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        ((), r"steps must be shares in \(0, 1\], got \[\]"),
        ((0.5, 0.25), r"steps must rise strictly, got \[0.5, 0.25\]"),
        ((0.0, 1.0), r"steps must be shares in \(0, 1\], got \[0.0, 1.0\]"),
        ((1.5,), r"steps must be shares in \(0, 1\], got \[1.5\]"),
        ((1.0,), r"steps need a share below 1 to judge at"),
    ],
)
def test_bad_steps_are_refused(steps, message):
    with pytest.raises(AvgPoolError, match=message):
        check_steps(steps)


def test_bad_counts_are_refused():
    server, clock = FakeServer(), Clock()
    with pytest.raises(AvgPoolError, match="interval must be > 0 seconds, got 0"):
        run(server, scripted("pass"), clock, interval=0)
    with pytest.raises(AvgPoolError, match="max_looks and min_looks_per_step must be >= 1, got 0 and 1"):
        run(server, scripted("pass"), clock, max_looks=0)


def test_the_json_log_round_trips():
    server, clock = FakeServer(), Clock()
    result = run(server, scripted("pass", "fail"), clock)
    log = json.loads(json.dumps(result.to_dict()))
    assert log["outcome"] == "rolled back" and log["exit_code"] == 2
    assert [look["verdict"] for look in log["looks"]] == ["pass", "fail"]
    assert log["looks"][1]["judge"]["checks"] == [{"name": "latency", "verdict": "fail"}]
    assert log["settings"] == {
        "url": URL,
        "steps": [0.05, 0.25, 0.5, 1.0],
        "interval": 10.0,
        "max_looks": 20,
        "min_looks_per_step": 1,
        "shadow_first": False,
    }


def command(argv, monkeypatch, judge):
    """``avgpool canary run ARGV`` against the fake server and an injected judge: (exit code, server)."""
    import argparse

    import avgpool.canary.run as run_module
    from avgpool.cli._canary_run import add_run

    server, clock = FakeServer(), Clock()
    real = run_canary  # the real one, however often this is patched

    def wired(*args, **kwargs):
        return real(
            *args,
            judge=judge,
            source=evidence,
            client=server.client(),
            clock=clock,
            sleep=clock.sleep,
            **kwargs,
        )

    monkeypatch.setattr(run_module, "run_canary", wired)
    parser = argparse.ArgumentParser(prog="avgpool canary")
    add_run(parser.add_subparsers(dest="canary", required=True))
    args = parser.parse_args(["run", *argv])
    return args.func(args), server


def test_the_command_prints_each_look_and_exits_by_outcome(monkeypatch, capsys, tmp_path):
    argv = [URL, "--model", "tinynet", "--baseline", "1", "--candidate", "2", "--steps", "10,50,100"]
    log = tmp_path / "canary.json"
    code, server = command(
        [*argv, "--interval", "2", "--json", str(log)], monkeypatch, scripted("pass", "fail")
    )
    assert code == 2
    assert server.admin() == [
        ("share", 0.1),
        ("reset", None),
        ("share", 0.5),
        ("reset", None),
        ("share", 0.0),
    ]
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        "open: share 10%",
        "look  1  share 10%  pass",
        "step: share 50%",
        "look  2  share 50%  fail",
        "    latency (fail): median slowdown 3.1 ms > 0.5 ms",
        "rollback: share 0%",
        "rolled back: look 2 failed at share 0.5: latency (fail): median slowdown 3.1 ms > 0.5 ms",
    ]
    written = json.loads(log.read_text())
    assert written["outcome"] == "rolled back"
    assert written["settings"]["interval"] == 2.0
    assert [look["verdict"] for look in written["looks"]] == ["pass", "fail"]

    code, _ = command(argv, monkeypatch, scripted("pass"))
    assert code == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("promoted: every step passed (0.1, 0.5)")
    code, _ = command([*argv, "--max-looks", "3"], monkeypatch, scripted("not enough data"))
    assert code == 1


def test_json_to_stdout_leaves_stdout_to_the_log(monkeypatch, capsys):
    argv = [URL, "--model", "tinynet", "--baseline", "1", "--candidate", "2", "--json", "-"]
    code, _ = command(argv, monkeypatch, scripted("pass"))
    captured = capsys.readouterr()
    assert code == 0
    assert json.loads(captured.out)["outcome"] == "promoted"
    assert "look  1  share 5%  pass" in captured.err


def test_steps_in_percent():
    from avgpool.cli._canary_run import parse_steps

    assert parse_steps("5,25,50,100") == (0.05, 0.25, 0.5, 1.0)
    with pytest.raises(
        argparse.ArgumentTypeError, match=r"--steps must look like 5,25,50,100 \(percent\), got '5;25'"
    ):
        parse_steps("5;25")


def test_the_command_passes_its_policy_options_to_the_judge(monkeypatch):
    pytest.importorskip("avgpool.canary.judge")
    judge = scripted("pass")
    argv = [URL, "--model", "tinynet", "--baseline", "1", "--candidate", "2", "--min-requests", "50"]
    code, _ = command([*argv, "--alpha", "0.01", "--max-looks", "9"], monkeypatch, judge)
    assert code == 0
    policy = judge.calls[0]["policy"]
    assert (policy.min_requests, policy.alpha, policy.max_looks) == (50, 0.01, 9)


def test_an_unreachable_server_is_named():
    def refused(request):
        raise httpx.ConnectError("connection refused", request=request)

    clock = Clock()
    with pytest.raises(
        AvgPoolError, match=r"url: GET http://127.0.0.1:8000/v2/models/tinynet failed: connection refused"
    ):
        run_canary(
            URL,
            "tinynet",
            "1",
            "2",
            judge=scripted("pass"),
            source=evidence,
            client=httpx.Client(transport=httpx.MockTransport(refused)),
            clock=clock,
            sleep=clock.sleep,
        )


def test_the_json_log_takes_numpy_statistics(tmp_path):
    np = pytest.importorskip("numpy")
    from avgpool.cli._canary_run import _write

    _write(
        str(tmp_path / "log.json"), {"stats": {"shift": np.float64(0.5), "n": np.int64(3), "x": np.arange(2)}}
    )
    assert json.loads((tmp_path / "log.json").read_text()) == {"stats": {"shift": 0.5, "n": 3, "x": [0, 1]}}
