"""The game day: ``avgpool serve`` with a baseline, a real Prometheus and a real Alertmanager
routing to a webhook, all on 127.0.0.1. Normal traffic fires nothing; shifted activations send
the drift ticket to the ML route; injected latency pages SRE; recovery resolves both.

The harness itself (tests/serve/gameday.py) is checked first on a static exporter and a trivial
rule, so a broken Prometheus/Alertmanager set-up fails there and not as a missing page.
"""

from __future__ import annotations

import contextlib
import threading
import time

import numpy as np
import pytest

from tests.serve import gameday
from tests.serve.conftest import ROOT, images

pytestmark = pytest.mark.gameday

MISSING = gameday.missing_binaries()
needs_binaries = pytest.mark.skipif(
    bool(MISSING),
    reason=(
        f"GAME DAY SKIPPED: {', '.join(MISSING)} not installed "
        "(make test installs Debian's prometheus and prometheus-alertmanager with apt-get)"
    ),
)


def routed_config(webhook: str, routes: dict[str, str], *, interval: str = "1s") -> dict:
    """An Alertmanager configuration sending alerts labelled team=<key> to ``webhook``/<path>,
    grouped and repeated at ``interval`` so a test sees notifications within seconds."""
    return {
        "route": {
            "receiver": "default",
            "group_by": ["alertname"],
            "group_wait": interval,
            "group_interval": interval,
            "repeat_interval": "1h",
            "routes": [{"receiver": team, "matchers": [f'team="{team}"']} for team in routes],
        },
        "receivers": [{"name": "default", "webhook_configs": [{"url": f"{webhook}/default"}]}]
        + [
            {"name": team, "webhook_configs": [{"url": f"{webhook}{path}", "send_resolved": True}]}
            for team, path in routes.items()
        ],
    }


@needs_binaries
def test_harness_fires_routes_and_resolves_a_trivial_alert():
    from prometheus_client import CollectorRegistry, Gauge, start_http_server

    registry = CollectorRegistry()
    probe = Gauge("gameday_probe_value", "set by the test", registry=registry)
    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    exporter = f"127.0.0.1:{server.server_address[1]}"
    rules = {
        "groups": [
            {
                "name": "harness",
                "rules": [
                    {
                        "alert": "ProbeHigh",
                        "expr": "gameday_probe_value > 0",
                        "labels": {"team": "ml", "severity": "ticket"},
                        "annotations": {"runbook_url": "https://example.invalid/probe"},
                    }
                ],
            }
        ]
    }
    start = time.monotonic()
    try:
        with (
            gameday.WebhookReceiver() as hook,
            gameday.Alertmanager(routed_config(hook.url, {"ml": "/ml", "sre": "/sre"})) as am,
            gameday.Prometheus(
                gameday.prometheus_config({"probe": [exporter]}, alertmanager=am.url), [rules]
            ) as prom,
        ):
            gameday.wait_until(lambda: prom.targets_up("probe"), 15, "the exporter scraped")
            assert prom.value("gameday_probe_value") == 0.0
            assert prom.alerts() == []

            probe.set(1)
            note = hook.wait_for(
                lambda n: n.path == "/ml" and n.alert("ProbeHigh", "firing"), 20, "firing at /ml"
            )
            alert = note.alert("ProbeHigh")
            assert alert["labels"]["severity"] == "ticket"
            assert alert["annotations"]["runbook_url"] == "https://example.invalid/probe"
            assert [n.path for n in hook.notifications] == ["/ml"] * len(hook.notifications)
            fired = time.monotonic()

            probe.set(0)
            hook.wait_for(lambda n: n.path == "/ml" and n.status == "resolved", 20, "resolved at /ml")
            assert not any(n.path != "/ml" for n in hook.notifications)
            resolved = time.monotonic()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
    print(f"harness: fired after {fired - start:.1f} s, resolved {resolved - fired:.1f} s later")


@needs_binaries
def test_harness_moves_off_a_port_taken_after_the_probe(monkeypatch):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        ports = iter([taken.getsockname()[1]])
        real = gameday.free_port
        monkeypatch.setattr(gameday, "free_port", lambda: next(ports, None) or real())
        am = gameday.Alertmanager(routed_config("http://127.0.0.1:9", {"ml": "/ml"}))
        assert am.port == taken.getsockname()[1]
        with am:
            assert am.port != taken.getsockname()[1]
            assert gameday.http_json(f"{am.url}/api/v2/status")["cluster"]["status"] == "disabled"
        assert not am.dir.exists()


@needs_binaries
def test_harness_stops_its_process_when_the_body_fails():
    with pytest.raises(KeyError, match="the test failed"):
        with gameday.Prometheus(gameday.prometheus_config({})) as prom:
            proc = prom._proc
            assert prom.query("vector(1)")[0]["value"][1] == "1"
            raise KeyError("the test failed")
    assert proc.poll() is not None
    assert not prom.dir.exists()
    with pytest.raises(OSError):
        gameday.http_json(f"{prom.url}/-/ready", timeout=1)


# --- the game day -------------------------------------------------------------------------------

MODEL = "base"
VERSION = "1"
#: requests per second the traffic thread aims at, and images per request
RATE = 20.0
BATCH = 4
#: the fault: every infer sleeps this long, far over the P99 objective
FAULT_MS = 400
#: the demo model's pooling layers, as inspect names them in the ONNX graph
LAYERS = ("/pool1/MaxPool", "/pool2/AveragePool", "/gap/ReduceMean")
DRIFT = "AvgpoolActivationDrift"
P99 = "AvgpoolLatencyP99High"
#: webhook paths: Alertmanager's receivers post to /<receiver name>
ML_TICKETS = "/ml-engineers"
SRE_PAGES = "/sre-page"


class Traffic:
    """Infer requests from a background thread at about ``rate`` per second with tritonclient's
    HTTP client (binary tensors, its default), cycling through ``images``; ``transform`` is applied
    to each batch, so a phase can shift the inputs while the thread runs."""

    def __init__(self, url: str, images: np.ndarray, rate: float = RATE) -> None:
        self.url = url
        self.images = images
        self.rate = rate
        self.transform = lambda x: x
        self.ok = 0
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="traffic", daemon=True)

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(10)

    def summary(self) -> str:
        first = f", the first: {self.errors[0]}" if self.errors else ""
        return f"{self.ok} requests answered, {len(self.errors)} failed{first}"

    def _run(self) -> None:
        import tritonclient.http as httpclient

        client = httpclient.InferenceServerClient(url=self.url, network_timeout=10.0)
        try:
            i = 0
            next_at = time.monotonic()
            while not self._stop.is_set():
                start = i * BATCH % len(self.images)
                batch = self.transform(self.images[start : start + BATCH])
                tensor = httpclient.InferInput("image", list(batch.shape), "FP32")
                tensor.set_data_from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
                try:
                    client.infer(MODEL, [tensor], model_version=VERSION)
                    self.ok += 1
                except Exception as exc:  # counted, and shown if a phase fails
                    self.errors.append(repr(exc))
                i += 1
                next_at = max(next_at + 1.0 / self.rate, time.monotonic())
                self._stop.wait(next_at - time.monotonic())
        finally:
            client.close()


def _post(url: str, body: dict) -> None:
    answer = gameday.http_json(url, data=body)
    assert answer is None or "error" not in answer, answer


#: the alert rules' and Alertmanager's time scale: 10 minutes become 5 seconds
SCALE = 1 / 120
#: scrape and evaluation interval (seconds); rate windows span at least four of them
INTERVAL = 1
#: the server's live window (seconds): drift is judged on the last WINDOW seconds of traffic
WINDOW = 4
#: normal traffic lasts longer than the drift alert's ``for`` (15 minutes at SCALE: 7.5 s)
NORMAL_SECONDS = 8


def _rules() -> list[dict]:
    from avgpool.serve import alerting

    return [alerting.rules(SCALE, min_window=4 * INTERVAL)]


def _alertmanager_config(webhook: str) -> dict:
    """Alertmanager's configuration with each receiver posting to ``webhook``/<receiver>:
    /ml-engineers (ML tickets), /ml-engineers-page, /sre (SRE tickets), /sre-page."""
    from avgpool.serve import alerting

    return alerting.alertmanager(SCALE, webhook_base=webhook)


def _routed(*, path: str, status: str, name: str, team: str, severity: str, after: float = 0):
    """A webhook predicate: the notification came to ``path`` (the receiver of that name) at or
    after ``after`` and holds the alert ``name`` with ``status`` and the labels its route
    promises; it returns that alert."""

    def match(note):
        if note.path != path or note.at < after or note.payload.get("receiver") != path[1:]:
            return None
        for alert in note.alerts:
            labels = alert.get("labels", {})
            if (
                alert.get("status") == status
                and labels.get("alertname") == name
                and labels.get("team") == team
                and labels.get("severity") == severity
            ):
                return alert
        return None

    return match


@needs_binaries
def test_game_day(tmp_path, demo_models):
    from avgpool.cli import main

    timings: dict[str, float] = {}
    began = time.monotonic()
    mark = began

    def phase(name: str) -> None:
        nonlocal mark
        now = time.monotonic()
        timings[name] = now - mark
        mark = now

    model = demo_models["base"]
    np.savez(tmp_path / "samples.npz", image=images(256))
    baseline = str(tmp_path / "base.avgprof")
    code = main(
        ["profile", model, "--inputs", str(tmp_path / "samples.npz"), "-o", baseline, "--no-progress"]
    )
    assert code == 0
    # live traffic: new images from the same process as the baseline's, not the same ones
    normal = images(256, seed=1)
    phase("baseline profile")

    traffic = None
    with contextlib.ExitStack() as stack:
        # each process prints its last output lines when the test fails inside it
        server = stack.enter_context(
            gameday.AvgpoolServe(
                f"{MODEL}:{VERSION}={model}",
                "--baseline",
                baseline,
                "--sample-every",
                "1",
                "--interval",
                str(INTERVAL),
                "--window",
                str(WINDOW),
                "--admin",
            )
        )
        hook = stack.enter_context(gameday.WebhookReceiver())
        am = stack.enter_context(gameday.Alertmanager(_alertmanager_config(hook.url)))
        prom = stack.enter_context(
            gameday.Prometheus(
                gameday.prometheus_config(
                    {"avgpool": [f"127.0.0.1:{server.port}"]}, alertmanager=am.url, interval=f"{INTERVAL}s"
                ),
                _rules(),
            )
        )
        try:
            gameday.wait_until(lambda: prom.targets_up("avgpool"), 20, "the server scraped")
            phase("start-up")
            traffic = stack.enter_context(Traffic(f"127.0.0.1:{server.port}", normal))
            _normal_phase(prom, hook, traffic)
            phase("normal traffic")
            _drift_phase(prom, hook, traffic)
            phase("shifted activations")
            _latency_phase(server, prom, hook, traffic)
            phase("injected latency")
            _recovery_phase(server, prom, hook, traffic)
            phase("recovery")
        except BaseException:
            _print_state(prom, hook)
            raise
        finally:
            total = time.monotonic() - began
            for name, seconds in timings.items():
                print(f"game day: {name:<20} {seconds:6.1f} s")
            sent = "no traffic" if traffic is None else traffic.summary()
            print(f"game day: {'total':<20} {total:6.1f} s ({sent})")
    assert total < 180, f"the game day took {total:.0f} s"


def _print_state(prom, hook) -> None:
    """What Prometheus and the receivers saw, for a failed phase."""
    try:
        for alert in prom.alerts():
            print(f"game day: prometheus alert {alert['labels']} {alert['state']} value {alert['value']}")
        for expr in (
            f'avgpool_activation_drift_status{{model="{MODEL}"}}',
            f'model_version:avgpool_request_duration_seconds:p99_5m{{model="{MODEL}"}}',
        ):
            for series in prom.query(expr):
                print(f"game day: {expr.split('{')[0]}{series['metric']} = {series['value'][1]}")
    except Exception as exc:  # the failure being reported matters more
        print(f"game day: prometheus unreadable: {exc!r}")
    for note in hook.notifications:
        names = [(a["labels"].get("alertname"), a.get("status")) for a in note.alerts]
        print(f"game day: webhook {note.path} {note.status} {names}")


def _normal_phase(prom, hook, traffic) -> None:
    """Normal traffic for longer than the drift alert's ``for``: drift is computed against the
    baseline and stays ok at every layer, and no alert fires or reaches a receiver."""
    gameday.wait_until(
        lambda: prom.value(f'sum(avgpool_requests_total{{model="{MODEL}"}})'),
        20,
        "requests counted in Prometheus",
    )
    gameday.wait_until(
        lambda: prom.query(f'avgpool_activation_drift_status{{model="{MODEL}"}}'),
        20,
        "drift status exported against the baseline",
    )
    time.sleep(NORMAL_SECONDS)
    status = prom.query(f'avgpool_activation_drift_status{{model="{MODEL}"}}')
    layers = {s["metric"]["layer"]: float(s["value"][1]) for s in status}
    assert layers == dict.fromkeys(LAYERS, 0.0), layers
    worst = prom.value(
        f'max_over_time(max(avgpool_activation_drift_status{{model="{MODEL}"}})'
        f"[{NORMAL_SECONDS}s:{INTERVAL}s])"
    )
    assert worst == 0.0, f"a layer left 'ok' during normal traffic: {worst}"
    psi = prom.value(f'max(avgpool_activation_psi{{model="{MODEL}"}})')
    dropped = prom.value(f'sum(avgpool_telemetry_dropped_total{{model="{MODEL}"}})')
    # a pending alert (one slow request on a busy machine) is shown, not failed on
    pending = [a["labels"]["alertname"] for a in prom.alerts() if a["state"] == "pending"]
    print(f"game day: normal traffic: largest PSI {psi:.3g}, {dropped:g} samples dropped, pending {pending}")
    assert prom.firing() == [], prom.firing()
    assert hook.notifications == [], hook.notifications
    assert traffic.errors == [], traffic.errors[:3]


def _check_runbook(alert: dict, name: str) -> None:
    """The alert links the runbook ``docs/runbooks/<name>.md``, and that page exists."""
    url = alert["annotations"]["runbook_url"]
    assert url.endswith(f"runbooks/{name}.md"), url
    assert (ROOT / "docs" / "runbooks" / f"{name}.md").is_file(), url


def _drift_phase(prom, hook, traffic) -> None:
    """Shifted inputs (x * 4 + 3) move every pooling layer: the drift ticket reaches the ML
    route with its runbook link, and nothing reaches SRE."""
    start = time.monotonic()
    traffic.transform = lambda x: x * 4 + 3
    ticket = _routed(path=ML_TICKETS, status="firing", name=DRIFT, team="ml", severity="ticket")
    alert = ticket(hook.wait_for(ticket, 60, f"drift ticket at {ML_TICKETS}"))
    assert alert["labels"]["model"] == MODEL and alert["labels"]["version"] == VERSION, alert
    _check_runbook(alert, "drift-triage")
    status = prom.query(f'avgpool_activation_drift_status{{model="{MODEL}"}}')
    assert {s["metric"]["layer"]: s["value"][1] for s in status} == dict.fromkeys(LAYERS, "2"), status
    assert {n.path for n in hook.since(start)} == {ML_TICKETS}, hook.since(start)


def _latency_phase(server, prom, hook, traffic) -> None:
    """Every infer sleeps FAULT_MS: the P99 page reaches the SRE route."""
    _post(
        f"{server.url}/admin/faults",
        {"model": MODEL, "version": VERSION, "latency_ms": FAULT_MS},
    )
    gameday.wait_until(
        lambda: prom.value(f'avgpool_fault_latency_seconds{{model="{MODEL}"}}') == FAULT_MS / 1000,
        10,
        "the fault visible in Prometheus",
    )
    start = time.monotonic()
    page = _routed(path=SRE_PAGES, status="firing", name=P99, team="sre", severity="page")
    alert = page(hook.wait_for(page, 60, f"P99 page at {SRE_PAGES}"))
    assert alert["labels"]["model"] == MODEL and alert["labels"]["version"] == VERSION, alert
    _check_runbook(alert, "high-latency")
    p99 = prom.value(f'model_version:avgpool_request_duration_seconds:p99_5m{{model="{MODEL}"}}')
    assert p99 > 0.25, p99
    assert {n.path for n in hook.since(start)} == {SRE_PAGES}, hook.since(start)


def _recovery_phase(server, prom, hook, traffic) -> None:
    """Faults cleared and normal inputs again: both alerts resolve at their routes."""
    start = time.monotonic()
    _post(f"{server.url}/admin/faults", {"model": MODEL, "version": VERSION, "latency_ms": 0})
    traffic.transform = lambda x: x
    for path, name, team, severity in (
        (SRE_PAGES, P99, "sre", "page"),
        (ML_TICKETS, DRIFT, "ml", "ticket"),
    ):
        resolved = _routed(path=path, status="resolved", name=name, team=team, severity=severity, after=start)
        hook.wait_for(resolved, 60, f"{name} resolved at {path}")
    gameday.wait_until(lambda: not prom.firing(), 20, "no alert firing in Prometheus")
