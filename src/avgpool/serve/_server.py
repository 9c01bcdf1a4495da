"""Start and stop ``avgpool serve``: the configuration, model loading, and uvicorn with one worker
or several.

The models load before the server binds (a bad model file is an error at once, not a server that
never gets ready); their warm-up runs once the server listens, so ``/v2/health/live`` answers
while Numba compiles and ``/v2/health/ready`` turns 200 when every model has run a request of its
own shapes. With ``workers > 1`` every worker loads and warms up its own copy, and prometheus-client
aggregates their metrics through a temporary ``PROMETHEUS_MULTIPROC_DIR`` removed at exit.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from avgpool._errors import AvgPoolError

__all__ = [
    "ServeConfig",
    "ServerHandle",
    "build_state",
    "parse_canary",
    "parse_model",
    "serve_models",
    "start_in_thread",
]

_NAME = r"[A-Za-z0-9_][A-Za-z0-9_.\-]*"
_MODEL_PREFIX = re.compile(rf"({_NAME})(?::({_NAME}))?=(.+)")
_CONFIG_ENV = "AVGPOOL_SERVE_CONFIG"


def parse_model(text: str) -> tuple[str | None, str | None, str]:
    """``[NAME[:VERSION]=]PATH_OR_SPEC`` as (name or None, version or None, source).

    Examples
    --------
    >>> parse_model("models/tiny.onnx")
    (None, None, 'models/tiny.onnx')
    >>> parse_model("tiny:2=models/tiny-v2.onnx")
    ('tiny', '2', 'models/tiny-v2.onnx')
    >>> parse_model("pkg.mod:factory")
    (None, None, 'pkg.mod:factory')
    """
    match = _MODEL_PREFIX.fullmatch(text)
    if match:
        name, version, source = match.groups()
        return name, version, source
    if not text:
        raise AvgPoolError("MODEL must be [NAME[:VERSION]=]PATH_OR_SPEC, got ''")
    return None, None, text


@dataclass
class ServeConfig:
    """The options of ``avgpool serve`` (see its ``--help``).

    ``models`` are ``[NAME[:VERSION]=]PATH_OR_SPEC`` strings; ``baselines`` maps a model name (or
    ``NAME:VERSION``, or ``""`` for every model) to a ``.avgprof`` file; ``input_shapes`` maps an
    input name (``""`` for a single input) to its shape.
    """

    models: Sequence[str]
    host: str = "127.0.0.1"
    port: int = 8000
    name: str | None = None
    workers: int = 1
    baselines: Mapping[str, str] = field(default_factory=dict)
    sample_every: int = 10
    interval: float = 10.0
    window: float = 300.0
    input_shapes: Mapping[str, Sequence[int]] = field(default_factory=dict)
    trust: bool = False
    compile: bool = False
    max_body_mb: float = 64.0
    admin: bool = False
    warmup: bool = True
    log_level: str = "info"
    canary: str | None = None

    def check(self) -> None:
        """AvgPoolError naming the first option out of range."""
        if self.name is not None and len(self.models) != 1:
            raise AvgPoolError(
                f"--name names one model, got {len(self.models)} MODELs; use NAME=PATH for each"
            )
        checks = [
            ("--port", self.port, 0 <= self.port <= 65535, "0 to 65535"),
            ("--workers", self.workers, self.workers >= 1, ">= 1"),
            ("--sample-every", self.sample_every, self.sample_every >= 0, ">= 0 (0: never)"),
            ("--interval", self.interval, self.interval > 0, "> 0 seconds"),
            ("--window", self.window, self.window >= self.interval, "at least --interval"),
            ("--max-body-mb", self.max_body_mb, self.max_body_mb > 0, "> 0"),
        ]
        for option, value, ok, allowed in checks:
            if not ok:
                raise AvgPoolError(f"{option} must be {allowed}, got {value}")
        if self.canary is not None and not self.admin:
            raise AvgPoolError(
                f"--canary needs --admin (its records and judge are admin routes), got --canary {self.canary}"
            )
        if self.admin and self.workers > 1:
            # a fault or deploy window set through one worker would not reach the others
            raise AvgPoolError(f"--admin needs --workers 1, got --workers {self.workers}")


def load_runners(config: ServeConfig) -> tuple[list[Any], dict[tuple[str, str], float]]:
    """Load every MODEL of ``config``: the runners and each one's load seconds."""
    from avgpool.serve._runners import load_runner

    if not config.models:
        raise AvgPoolError("serve needs at least one MODEL")
    runners: list[Any] = []
    seconds: dict[tuple[str, str], float] = {}
    try:
        for text in config.models:
            name, version, source = parse_model(text)
            start = time.perf_counter()
            runner = load_runner(
                source,
                name=name or config.name,
                version=version or "1",
                input_shapes=config.input_shapes or None,
                trust=config.trust,
                compile=config.compile,
            )
            runners.append(runner)
            seconds[(runner.name, runner.version)] = time.perf_counter() - start
    except BaseException:
        for runner in runners:
            runner.close()
        raise
    return runners, seconds


def _baseline_for(config: ServeConfig, runner: Any, cache: dict[str, Any]) -> Any:
    from avgpool.monitor import Profile

    key = next(
        (k for k in (f"{runner.name}:{runner.version}", runner.name, "") if k in config.baselines), None
    )
    if key is None:
        return None
    path = config.baselines[key]
    if path not in cache:
        cache[path] = Profile.load(path)
    return cache[path]


def build_state(
    config: ServeConfig,
    *,
    runners: Sequence[Any] | None = None,
    telemetry: Any = None,
    load_seconds: Mapping[tuple[str, str], float] | None = None,
    otel: Any = None,
) -> Any:
    """The app's state for ``config``: its runners (loaded unless given) registered with the
    telemetry (a new `Telemetry` unless given); ``otel``: the tracing (default: from the
    ``OTEL_*`` environment when the app starts)."""
    from avgpool.serve._app import AppState, ModelRepository

    config.check()
    if runners is None:
        runners, load_seconds = load_runners(config)
    repository = ModelRepository(runners)
    names = set(repository.models)
    unknown = [k for k in config.baselines if k and k.partition(":")[0] not in names]
    if unknown:
        raise AvgPoolError(f"--baseline names model {unknown[0]!r}; the models served are {sorted(names)}")
    if "" in config.baselines and len(names) > 1:
        raise AvgPoolError(
            f"--baseline FILE without a name is for one model; {len(names)} are served: use NAME=FILE"
        )
    if telemetry is None:
        from avgpool.serve._telemetry import Telemetry

        telemetry = Telemetry(
            sample_every=config.sample_every,
            interval=config.interval,
            window=config.window,
            multiproc_dir=os.environ.get("PROMETHEUS_MULTIPROC_DIR") if config.workers > 1 else None,
        )
    cache: dict[str, Any] = {}
    for runner in runners:
        telemetry.add_model(runner, baseline=_baseline_for(config, runner, cache))
    state = AppState(
        repository=repository,
        telemetry=telemetry,
        max_body_bytes=int(config.max_body_mb * 2**20),
        admin=config.admin,
        warmup=config.warmup,
        load_seconds=dict(load_seconds or {}),
        workers=config.workers,
        otel=otel,
    )
    if config.canary is not None:
        state.canaries.open(*parse_canary(config.canary, state))
    return state


def parse_canary(text: str, state: Any) -> tuple[str, str, str, float, str]:
    """(model, baseline, candidate, share, mode) of ``--canary NAME=BASELINE,CANDIDATE[,MODE[,SHARE]]``
    (mode ``split`` or ``shadow``, default shadow; share default 0), checked as ``POST
    /admin/canary`` checks its body; AvgPoolError naming what is wrong."""
    from avgpool.serve._canary_routes import parse_open
    from avgpool.serve._protocol import V2Error

    form = "NAME=BASELINE,CANDIDATE[,MODE[,SHARE]], e.g. tinynet=1,2,shadow or tinynet=1,2,split,0.05"
    name, sep, rest = text.partition("=")
    parts = rest.split(",")
    if not sep or not name or not 2 <= len(parts) <= 4 or not all(parts):
        raise AvgPoolError(f"--canary must be {form}, got {text!r}")
    doc: dict[str, Any] = {"model": name, "baseline": parts[0], "candidate": parts[1]}
    doc["mode"] = parts[2] if len(parts) > 2 else "shadow"
    if len(parts) > 3:
        try:
            doc["share"] = float(parts[3])
        except ValueError:
            raise AvgPoolError(f"--canary's share must be a number from 0 to 1, got {parts[3]!r}") from None
    try:
        return parse_open(doc, state.canaries, state.repository)
    except V2Error as exc:
        raise AvgPoolError(f"--canary {text}: {exc.message}") from None


def _uvicorn_config(app: Any, config: ServeConfig, **extra: Any) -> Any:
    import uvicorn

    return uvicorn.Config(
        app,
        host=config.host,
        port=config.port,
        log_level=config.log_level,
        access_log=False,
        timeout_graceful_shutdown=10,
        **extra,
    )


def worker_app() -> Any:
    """The app factory each uvicorn worker calls (``workers > 1``): config from the environment."""
    from avgpool.serve._app import create_app

    config = ServeConfig(**json.loads(os.environ[_CONFIG_ENV]))
    return create_app(build_state(config))


def serve_models(config: ServeConfig) -> int:
    """Load the models, serve them until SIGTERM or SIGINT, release everything; the exit code."""
    import uvicorn

    from avgpool.serve._app import create_app

    config.check()
    # uvicorn re-raises the signal it caught once it has shut down; a no-op handler for SIGTERM
    # lets this function clean up and return instead of dying with the default action
    previous = signal.signal(signal.SIGTERM, lambda *_: None) if _main_thread() else None
    try:
        if config.workers == 1:
            state = build_state(config)
            try:
                uvicorn.Server(_uvicorn_config(create_app(state), config)).run()
            finally:
                for runner in state.repository.runners():
                    runner.close()
            return 0
        # load once here so a bad model is an error now, not in N workers that never start
        runners, _ = load_runners(config)
        for runner in runners:
            runner.close()
        multiproc = tempfile.mkdtemp(prefix="avgpool-metrics-")
        saved = {k: os.environ.get(k) for k in ("PROMETHEUS_MULTIPROC_DIR", _CONFIG_ENV)}
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = multiproc
        os.environ[_CONFIG_ENV] = json.dumps(asdict(config))
        try:
            uvicorn.run(
                "avgpool.serve._server:worker_app",
                factory=True,
                workers=config.workers,
                host=config.host,
                port=config.port,
                log_level=config.log_level,
                access_log=False,
            )
        finally:
            shutil.rmtree(multiproc, ignore_errors=True)
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
        return 0
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


class ServerHandle:
    """A server running in a thread of this process (`start_in_thread`)."""

    def __init__(self, server: Any, thread: threading.Thread, state: Any) -> None:
        self._server, self._thread, self.state = server, thread, state
        self.app = server.config.app
        host, port = server.servers[0].sockets[0].getsockname()[:2]
        host = f"[{host}]" if ":" in host else host
        self.url = f"http://{host}:{port}"
        self.port = port

    def wait_ready(self, timeout: float = 60.0) -> bool:
        """Wait for the warm-up to end; whether every model is ready."""
        self.state.warmed_up.wait(timeout)
        return self.state.all_ready()

    def stop(self, timeout: float = 10.0) -> None:
        """Shut the server down and wait for its thread."""
        self._server.should_exit = True
        self._thread.join(timeout)

    def __enter__(self) -> ServerHandle:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def start_in_thread(
    config: ServeConfig,
    *,
    runners: Sequence[Any] | None = None,
    telemetry: Any = None,
    otel: Any = None,
    timeout: float = 30.0,
) -> ServerHandle:
    """Serve ``config`` from a thread of this process (one worker; port 0 picks a free port) and
    return once it listens: the handle's ``url``, ``wait_ready()`` and ``stop()``.

    ``runners``, ``telemetry`` and ``otel`` replace the ones ``config`` would load and make
    (tests).
    """
    import uvicorn

    from avgpool.serve._app import create_app

    if config.workers != 1:
        raise AvgPoolError(f"start_in_thread runs one worker, got workers={config.workers}")
    state = build_state(config, runners=runners, telemetry=telemetry, otel=otel)
    server = uvicorn.Server(_uvicorn_config(create_app(state), config, lifespan="on"))
    failure: list[BaseException] = []

    def run() -> None:
        try:
            server.run()
        except BaseException as exc:  # reported to the caller below
            failure.append(exc)

    thread = threading.Thread(target=run, name="avgpool-serve", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if failure or not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            thread.join(5)
            reason = repr(failure[0]) if failure else "it did not start in time"
            raise AvgPoolError(f"the server on {config.host}:{config.port} did not start: {reason}")
        time.sleep(0.01)
    return ServerHandle(server, thread, state)
