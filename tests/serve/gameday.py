"""A game day's processes for the tests: a real Prometheus, a real Alertmanager, ``avgpool serve``
in a subprocess and a webhook receiver, each on 127.0.0.1 (the processes with their own temporary
directory), each a context manager that stops what it started even when the test fails.

Prometheus and Alertmanager are Debian's binaries (``make test`` installs them when absent);
:func:`missing_binaries` names those not found, so a test can skip saying which.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

PROMETHEUS = "prometheus"
ALERTMANAGER = "prometheus-alertmanager"  # Debian's name; upstream's is "alertmanager"

#: seconds a process gets to answer ``/-/ready`` before the test fails with its log
READY_TIMEOUT = 30.0
#: seconds between terminate and kill
STOP_GRACE = 5.0


def binary(name: str) -> str | None:
    """The path of Debian's binary ``name`` (or upstream's Alertmanager name), or None."""
    found = shutil.which(name) or shutil.which(f"/usr/bin/{name}")
    if found is None and name == ALERTMANAGER:
        found = shutil.which("alertmanager")
    return found


def missing_binaries() -> list[str]:
    """The game day's binaries that are not installed."""
    return [name for name in (PROMETHEUS, ALERTMANAGER) if binary(name) is None]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (for binaries that take no port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http_json(url: str, *, data: Any = None, timeout: float = 5.0) -> Any:
    """GET ``url`` (POST ``data`` as JSON when given) and decode the JSON answer."""
    body = None if data is None else json.dumps(data).encode()
    request = urllib.request.Request(url, data=body, method="GET" if body is None else "POST")
    if body is not None:
        request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read() or b"null")


def wait_until(check: Callable[[], Any], timeout: float, what: str, *, every: float = 0.25) -> Any:
    """Call ``check`` until it returns something truthy (returned) or ``timeout`` seconds pass
    (AssertionError naming ``what``); exceptions from ``check`` count as not yet."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            result = check()
            if result:
                return result
            last = result
        except Exception as exc:  # a server still starting refuses connections
            last = exc
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what}: not within {timeout:g} s (last: {last!r})")
        time.sleep(every)


class _PortTaken(Exception):
    pass


class _Process:
    """A binary on 127.0.0.1:``port`` with a temporary directory, its output in a log file there,
    ready once ``GET <ready_path>`` answers 200."""

    name = "process"
    ready_path = "/-/ready"
    ready_timeout = READY_TIMEOUT

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._tmp = tempfile.TemporaryDirectory(prefix=f"avgpool-{self.name}-")
        self.dir = Path(self._tmp.name)
        self.log = self.dir / "output.log"
        self._proc: subprocess.Popen | None = None
        self._log_file = None

    def argv(self) -> list[str]:
        raise NotImplementedError

    def popen_kwargs(self) -> dict:
        return {}

    def __enter__(self):
        for _attempt in range(3):
            try:
                self.start()
                return self
            except _PortTaken:
                # another process took the probed port before the binary bound it
                self.stop()
                self.port = free_port()
                self.url = f"http://127.0.0.1:{self.port}"
            except BaseException:
                self.stop()
                self._tmp.cleanup()
                raise
        self._tmp.cleanup()
        raise RuntimeError(f"{self.name}: three probed ports were taken before it bound one")

    def __exit__(self, exc_type, exc, tb) -> None:
        self.stop()
        if exc_type is not None:  # pytest shows this with the failure
            print(f"--- {self.name} output (last lines) ---\n{self.log_tail()}")
        self._tmp.cleanup()

    def start(self) -> None:
        self._log_file = open(self.log, "wb")
        self._proc = subprocess.Popen(
            self.argv(),
            cwd=self.dir,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            **self.popen_kwargs(),
        )
        deadline = time.monotonic() + self.ready_timeout
        while True:
            if self._proc.poll() is not None:
                if "address already in use" in self.log_tail().lower():
                    raise _PortTaken
                raise RuntimeError(f"{self.name} exited with {self._proc.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}{self.ready_path}", timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() >= deadline:
                raise RuntimeError(
                    f"{self.name} not ready within {self.ready_timeout:g} s:\n{self.log_tail()}"
                )
            time.sleep(0.1)

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(STOP_GRACE)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(STOP_GRACE)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def log_tail(self, lines: int = 30) -> str:
        """The last ``lines`` lines of the process's output (for failure messages)."""
        if self._log_file is not None:
            self._log_file.flush()
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def prometheus_config(
    targets: Mapping[str, Iterable[str]],
    *,
    alertmanager: str | None = None,
    interval: str = "1s",
) -> dict:
    """A Prometheus configuration scraping ``targets`` (job name -> ``host:port`` list) and
    evaluating rules every ``interval``, sending alerts to the Alertmanager at ``alertmanager``
    (``http://host:port``) when given."""
    config: dict = {
        "global": {
            "scrape_interval": interval,
            "scrape_timeout": interval,
            "evaluation_interval": interval,
        },
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": list(hosts)}]} for job, hosts in targets.items()
        ],
    }
    if alertmanager is not None:
        parsed = urllib.parse.urlsplit(alertmanager)
        config["alerting"] = {
            "alertmanagers": [
                {"scheme": parsed.scheme or "http", "static_configs": [{"targets": [parsed.netloc]}]}
            ]
        }
    return config


class Prometheus(_Process):
    """A Prometheus server with ``config`` (as from :func:`prometheus_config`) and the rule
    groups files ``rule_files`` (each a ``{"groups": [...]}`` mapping), checked with promtool
    first when it is installed so a bad rule fails with promtool's message."""

    name = "prometheus"

    def __init__(self, config: Mapping, rule_files: Iterable[Mapping] = ()) -> None:
        super().__init__()
        config = dict(config)
        paths = []
        for i, rules in enumerate(rule_files):
            path = self.dir / f"rules-{i}.yml"
            path.write_text(yaml.safe_dump(dict(rules), sort_keys=False))
            paths.append(str(path))
        if paths:
            config["rule_files"] = paths
        self.config_file = self.dir / "prometheus.yml"
        self.config_file.write_text(yaml.safe_dump(config, sort_keys=False))
        promtool = shutil.which("promtool")
        if promtool is not None:
            check = subprocess.run(
                [promtool, "check", "config", str(self.config_file)],
                capture_output=True,
                text=True,
            )
            if check.returncode != 0:
                raise RuntimeError(f"promtool check config:\n{check.stdout}{check.stderr}")

    def argv(self) -> list[str]:
        return [
            binary(PROMETHEUS) or PROMETHEUS,
            f"--config.file={self.config_file}",
            f"--storage.tsdb.path={self.dir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            # firing alerts go to Alertmanager every evaluation, not once a minute
            "--rules.alert.resend-delay=1s",
            "--log.level=warn",
        ]

    def api(self, path: str, **params: str) -> Any:
        """``GET /api/v1/<path>`` with ``params``; the ``data`` of a success answer."""
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        answer = http_json(f"{self.url}/api/v1/{path}{query}")
        if answer.get("status") != "success":
            raise RuntimeError(f"prometheus {path}: {answer}")
        return answer["data"]

    def query(self, expr: str) -> list[dict]:
        """The instant vector ``expr`` evaluates to now: ``[{"metric": {...}, "value": [t, "v"]}]``."""
        return self.api("query", query=expr)["result"]

    def value(self, expr: str) -> float | None:
        """The single value of ``expr`` now, or None when it is empty."""
        result = self.query(expr)
        if not result:
            return None
        if len(result) > 1:
            raise AssertionError(f"{expr} has {len(result)} series: {result}")
        return float(result[0]["value"][1])

    def alerts(self) -> list[dict]:
        """Active alerts (pending and firing) as Prometheus sees them."""
        return self.api("alerts")["alerts"]

    def firing(self, name: str | None = None) -> list[dict]:
        return [
            a
            for a in self.alerts()
            if a["state"] == "firing" and (name is None or a["labels"].get("alertname") == name)
        ]

    def targets_up(self, job: str | None = None) -> bool:
        active = self.api("targets", state="active")["activeTargets"]
        active = [t for t in active if job is None or t["labels"].get("job") == job]
        return bool(active) and all(t["health"] == "up" for t in active)

    def rule_groups(self) -> list[dict]:
        return self.api("rules")["groups"]


class Alertmanager(_Process):
    """An Alertmanager with ``config`` (a mapping as Alertmanager's YAML), clustering off."""

    name = "alertmanager"

    def __init__(self, config: Mapping) -> None:
        super().__init__()
        self.config_file = self.dir / "alertmanager.yml"
        self.config_file.write_text(yaml.safe_dump(dict(config), sort_keys=False))
        amtool = shutil.which("amtool")
        if amtool is not None:
            check = subprocess.run(
                [amtool, "check-config", str(self.config_file)], capture_output=True, text=True
            )
            if check.returncode != 0:
                raise RuntimeError(f"amtool check-config:\n{check.stdout}{check.stderr}")

    def argv(self) -> list[str]:
        return [
            binary(ALERTMANAGER) or ALERTMANAGER,
            f"--config.file={self.config_file}",
            f"--storage.path={self.dir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--cluster.listen-address=",
            "--log.level=warn",
        ]

    def alerts(self) -> list[dict]:
        return http_json(f"{self.url}/api/v2/alerts")


class AvgpoolServe(_Process):
    """``avgpool serve`` in a subprocess (``python -m avgpool serve <args>``) on 127.0.0.1, ready
    once ``/v2/health/ready`` answers 200 (every model warmed up, Numba's kernels compiled)."""

    name = "avgpool-serve"
    ready_path = "/v2/health/ready"
    ready_timeout = 180.0  # a cold Numba cache compiles the telemetry's kernels first

    def __init__(self, *args: str, python: str = sys.executable, env: Mapping | None = None):
        super().__init__()
        self.args = list(args)
        self.python = python
        self.env = None if env is None else dict(env)

    def argv(self) -> list[str]:
        return [
            self.python,
            "-m",
            "avgpool",
            "serve",
            *self.args,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
        ]

    def popen_kwargs(self) -> dict:
        return {} if self.env is None else {"env": self.env}


@dataclass(frozen=True)
class Notification:
    """One Alertmanager webhook POST: the receiver's ``path`` (``/ml``), the decoded ``payload``
    and the monotonic time it arrived."""

    path: str
    payload: dict
    at: float = field(compare=False)

    @property
    def status(self) -> str:
        return self.payload.get("status", "")

    @property
    def alerts(self) -> list[dict]:
        return self.payload.get("alerts", [])

    def alert(self, name: str, status: str | None = None) -> dict | None:
        """The first alert named ``name`` (with ``status``, ``firing`` or ``resolved``, if given)."""
        for alert in self.alerts:
            if alert.get("labels", {}).get("alertname") == name and (
                status is None or alert.get("status") == status
            ):
                return alert
        return None


class WebhookReceiver:
    """An HTTP server on 127.0.0.1 (port 0) recording every POSTed Alertmanager payload with its
    path, so routes to ``http://127.0.0.1:PORT/ml`` and ``.../sre`` stay apart."""

    def __init__(self) -> None:
        self.notifications: list[Notification] = []
        self._changed = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                raw = self.rfile.read(length)
                try:
                    payload = json.loads(raw)
                except ValueError:
                    payload = {"undecodable": raw.decode(errors="replace")}
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()
                with receiver._changed:
                    receiver.notifications.append(Notification(self.path, payload, time.monotonic()))
                    receiver._changed.notify_all()

            def log_message(self, format, *args) -> None:  # keep the test output quiet
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread: threading.Thread | None = None

    def __enter__(self) -> WebhookReceiver:
        self._thread = threading.Thread(target=self._server.serve_forever, name="webhook", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(STOP_GRACE)
            self._thread = None
        self._server.server_close()

    def wait_for(
        self, predicate: Callable[[Notification], Any], timeout: float, what: str = ""
    ) -> Notification:
        """The first notification (already received or arriving within ``timeout`` seconds)
        for which ``predicate`` is truthy; AssertionError listing what did arrive otherwise."""
        deadline = time.monotonic() + timeout
        seen = 0
        with self._changed:
            while True:
                for note in self.notifications[seen:]:
                    if predicate(note):
                        return note
                seen = len(self.notifications)
                left = deadline - time.monotonic()
                if left <= 0:
                    got = [
                        (n.path, n.status, [a["labels"].get("alertname") for a in n.alerts])
                        for n in self.notifications
                    ]
                    raise AssertionError(
                        f"no webhook notification {what} within {timeout:g} s; received: {got}"
                    )
                self._changed.wait(left)

    def since(self, start: float) -> list[Notification]:
        with self._changed:
            return [n for n in self.notifications if n.at >= start]
