"""An open-loop load generator for an Open Inference Protocol (KServe v2 REST) endpoint.

``avgpool bench serve URL --model M --rate R --duration S`` is built on `run_load`: requests go
out on a fixed schedule (``rate`` per second for ``duration`` seconds) whatever the server does,
and each request's latency is measured from the moment the schedule said to send it. A closed
loop (send, wait for the answer, send the next) slows down with the server and so never sees the
queue a slow server builds: its latencies look fine while real clients wait ("coordinated
omission"). Here a server that stalls for a second shows that second in the latencies of every
request scheduled during the stall.

The request bodies are built here (`request_body`): JSON tensors, or the binary tensor extension
that ``tritonclient`` sends by default (a JSON header, its length in
``Inference-Header-Content-Length``, then the raw little-endian tensor bytes). Only httpx is
needed (the ``serve`` extra has it).

A load test is easy to aim at the wrong host, so `run_load` refuses any URL whose host is not
loopback unless ``allow_remote=True`` (``--allow-remote``), and it is bounded: at most
`MAX_REQUESTS` requests and `MAX_DURATION` seconds, however it is called.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from avgpool._errors import AvgPoolError
from avgpool._tables import Table

__all__ = [
    "MAX_DURATION",
    "MAX_REQUESTS",
    "LoadResult",
    "check_loopback",
    "fetch_metadata",
    "inputs_from_metadata",
    "latency_summary",
    "load_table",
    "request_body",
    "run_load",
    "v2_datatype",
]

#: The most requests one run sends, and the longest it schedules them for (seconds).
MAX_REQUESTS = 100_000
MAX_DURATION = 3600.0

#: A generator that dispatches a request this late (seconds) behind its schedule is itself the
#: bottleneck; the table says so, since the figures then describe the client, not the server.
_LAG_WARNING = 0.010

_V2_TYPES = {
    "float16": "FP16",
    "float32": "FP32",
    "float64": "FP64",
    "int8": "INT8",
    "int16": "INT16",
    "int32": "INT32",
    "int64": "INT64",
    "uint8": "UINT8",
    "uint16": "UINT16",
    "uint32": "UINT32",
    "uint64": "UINT64",
    "bool": "BOOL",
}
_NUMPY_TYPES = {v: k for k, v in _V2_TYPES.items()}


def v2_datatype(dtype: Any) -> str:
    """The Open Inference Protocol name of a NumPy dtype (``float32`` -> ``FP32``).

    Raises
    ------
    TypeError
        For a dtype with no fixed-size v2 datatype (strings, objects, complex numbers).
    """
    name = np.dtype(dtype).name
    if name not in _V2_TYPES:
        raise TypeError(f"inputs: dtype {name} has no v2 datatype; allowed: {', '.join(_V2_TYPES)}")
    return _V2_TYPES[name]


def request_body(
    inputs: Mapping[str, np.ndarray], *, binary: bool = True, binary_output: bool = True
) -> tuple[bytes, int | None]:
    """A v2 ``infer`` request body for ``inputs`` (name -> array), and its JSON header's length.

    Parameters
    ----------
    inputs
        The input tensors by name.
    binary
        True: the binary tensor extension (each input's ``binary_data_size`` in the JSON header,
        the raw little-endian bytes after it, in input order). False: every value in the JSON.
    binary_output
        Ask for the outputs as binary data (``"binary_data_output": true``), as tritonclient
        does when no outputs are named.

    Returns
    -------
    (body, header_length)
        ``header_length`` is the value of the ``Inference-Header-Content-Length`` header, or
        None when the body is JSON alone.
    """
    tensors = []
    blobs = []
    for name, value in inputs.items():
        array = np.asarray(value)
        datatype = v2_datatype(array.dtype)
        tensor: dict[str, Any] = {"name": name, "shape": list(array.shape), "datatype": datatype}
        if binary:
            raw = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
            tensor["parameters"] = {"binary_data_size": len(raw)}
            blobs.append(raw)
        else:
            tensor["data"] = array.ravel().tolist()
        tensors.append(tensor)
    request: dict[str, Any] = {"inputs": tensors}
    if binary_output:
        request["parameters"] = {"binary_data_output": True}
    header = json.dumps(request, separators=(",", ":"), allow_nan=False).encode()
    if not blobs:
        return header, None
    return header + b"".join(blobs), len(header)


def check_loopback(url: str, allow_remote: bool = False) -> str:
    """``url`` without its trailing slash, once it is an http(s) URL whose host is loopback.

    Raises
    ------
    AvgPoolError
        For another scheme, or a host that is not ``localhost`` nor a loopback address (unless
        ``allow_remote``): names are not resolved, so only a loopback literal or ``localhost``
        passes.
    """
    import httpx

    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise AvgPoolError(f"url: not a URL: {url!r} ({exc})") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise AvgPoolError(f"url must be http://HOST[:PORT] or https://..., got {url!r}")
    if not allow_remote and not _is_loopback(parsed.host):
        raise AvgPoolError(
            f"url: {parsed.host} is not a loopback host; a load test sent there reaches another "
            "machine: pass allow_remote=True (--allow-remote) if that is meant"
        )
    return url.rstrip("/")


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _model_path(model: str, version: str | None) -> str:
    from urllib.parse import quote

    path = f"/v2/models/{quote(model, safe='')}"
    return path if version is None else f"{path}/versions/{quote(str(version), safe='')}"


def fetch_metadata(url: str, model: str, version: str | None = None, *, timeout: float = 10.0) -> dict:
    """The model's v2 metadata (``GET /v2/models/{model}[/versions/{version}]``).

    Raises
    ------
    AvgPoolError
        When the server cannot be reached or does not answer 200 (its v2 error message quoted).
    """
    import httpx

    target = url.rstrip("/") + _model_path(model, version)
    try:
        response = httpx.get(target, timeout=timeout)
    except httpx.HTTPError as exc:
        raise AvgPoolError(f"url: cannot reach {target}: {exc}") from None
    if response.status_code != 200:
        detail = _error_text(response.content)
        raise AvgPoolError(f"model: {target} answered {response.status_code}: {detail}")
    return response.json()


def _error_text(content: bytes) -> str:
    try:
        return str(json.loads(content)["error"])
    except (ValueError, KeyError, TypeError):
        return content[:200].decode("utf-8", "replace")


def inputs_from_metadata(metadata: Mapping[str, Any], *, seed: int = 0) -> dict[str, np.ndarray]:
    """Random inputs of the shapes and datatypes the metadata lists (a free axis, -1, is 1).

    Floats are standard normal, integers in [0, 10), booleans fair coins.
    """
    rng = np.random.default_rng(seed)
    arrays = {}
    for spec in metadata.get("inputs", []):
        datatype = str(spec["datatype"])
        if datatype not in _NUMPY_TYPES:
            raise TypeError(
                f"inputs: {spec['name']} has datatype {datatype}; random data can be made only for "
                f"{', '.join(_NUMPY_TYPES)}: pass the inputs"
            )
        dtype = np.dtype(_NUMPY_TYPES[datatype])
        shape = tuple(1 if int(d) < 0 else int(d) for d in spec["shape"])
        if dtype.kind == "f":
            arrays[spec["name"]] = rng.standard_normal(shape).astype(dtype)
        elif dtype.kind == "b":
            arrays[spec["name"]] = rng.random(shape) < 0.5
        else:
            arrays[spec["name"]] = rng.integers(0, 10, shape).astype(dtype)
    return arrays


def latency_summary(latencies: np.ndarray) -> dict[str, float]:
    """P50, P95, P99 (NumPy's linear-interpolated percentiles), max and mean, as given (NaN if empty)."""
    values = np.asarray(latencies, dtype=np.float64)
    if values.size == 0:
        return dict.fromkeys(("p50", "p95", "p99", "max", "mean"), float("nan"))
    p50, p95, p99 = np.percentile(values, [50, 95, 99])
    return {"p50": float(p50), "p95": float(p95), "p99": float(p99), "max": float(values.max()),
            "mean": float(values.mean())}  # fmt: skip


@dataclass
class LoadResult:
    """What one `run_load` saw. Times in seconds.

    ``latencies`` holds, for each request answered 200, the time from its scheduled send to the
    end of its response; ``statuses`` counts every outcome by HTTP status (``"200"``, ``"503"``)
    or by failure (``"timeout"``, ``"connect_error"``, ``"transport_error"``, ``"cancelled"`` for
    those still open when the run's time ran out). ``max_dispatch_lag`` is how far behind the
    schedule the generator itself sent a request (large: the client limited the rate).
    """

    url: str
    model: str
    version: str | None
    rate: float
    duration: float
    binary: bool
    concurrency_limit: int
    sent: int
    elapsed: float
    latencies: np.ndarray
    statuses: dict[str, int]
    max_dispatch_lag: float
    first_errors: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> int:
        return self.statuses.get("200", 0)

    @property
    def errors(self) -> int:
        return sum(self.statuses.values()) - self.ok

    @property
    def throughput(self) -> float:
        """Requests answered 200 per second, over the run's wall time."""
        return self.ok / self.elapsed if self.elapsed > 0 else 0.0

    def summary(self) -> dict[str, float]:
        return latency_summary(self.latencies)

    def to_dict(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "model": self.model,
            "version": self.version,
            "rate": self.rate,
            "duration": self.duration,
            "binary": self.binary,
            "concurrency_limit": self.concurrency_limit,
            "sent": self.sent,
            "ok": self.ok,
            "errors": self.errors,
            "elapsed_s": self.elapsed,
            "throughput_per_s": self.throughput,
            "latency_s": self.summary(),
            "statuses": dict(self.statuses),
            "first_errors": dict(self.first_errors),
            "max_dispatch_lag_s": self.max_dispatch_lag,
            "latencies_s": self.latencies.tolist(),
        }


def run_load(
    url: str,
    model: str,
    inputs: Mapping[str, np.ndarray] | None = None,
    *,
    rate: float,
    duration: float,
    version: str | None = None,
    binary: bool = True,
    concurrency_limit: int = 64,
    timeout: float = 10.0,
    allow_remote: bool = False,
    seed: int = 0,
) -> LoadResult:
    """Send ``rate`` infer requests per second for ``duration`` seconds, open loop, and time them.

    The schedule is fixed before the first request: request ``i`` is due at ``start + i / rate``
    and is sent then, whether or not earlier ones were answered (at most ``concurrency_limit``
    in flight; a request that waits for a free slot waits on the clock). Each latency runs from
    the scheduled send time to the end of the response, so queueing in the server, in the
    network or in this client is counted, not hidden (no coordinated omission).

    Parameters
    ----------
    url
        The server's base URL (``http://127.0.0.1:8000``); loopback only unless ``allow_remote``.
    model, version
        The model to call (``version`` None: the server's default version).
    inputs
        The input tensors by name; None: random data of the shapes the server's metadata lists
        (a free axis is 1). The same body is sent every time.
    rate, duration
        Requests per second and seconds; ``rate * duration`` at most `MAX_REQUESTS`,
        ``duration`` at most `MAX_DURATION`.
    binary
        The binary tensor extension (True, what tritonclient sends) or JSON tensors.
    concurrency_limit
        Requests in flight at most (and the HTTP connection pool's size).
    timeout
        Seconds for one request; once the schedule ends, requests still open after this long
        are cancelled (counted as ``"cancelled"``).
    seed
        Seeds the random inputs.

    Returns
    -------
    LoadResult

    Raises
    ------
    AvgPoolError
        For a non-loopback URL (without ``allow_remote``), a rate, duration, limit or timeout out
        of range, or a model the server does not know.
    """
    base = check_loopback(url, allow_remote)
    rate, duration = float(rate), float(duration)
    if not (np.isfinite(rate) and rate > 0):
        raise AvgPoolError(f"rate must be > 0 requests per second, got {rate}")
    if not (np.isfinite(duration) and 0 < duration <= MAX_DURATION):
        raise AvgPoolError(f"duration must be in (0, {MAX_DURATION:g}] seconds, got {duration}")
    count = round(rate * duration)
    if not 1 <= count <= MAX_REQUESTS:
        raise AvgPoolError(
            f"rate * duration must make between 1 and {MAX_REQUESTS} requests, got "
            f"{rate:g} * {duration:g} = {rate * duration:g}"
        )
    if int(concurrency_limit) < 1:
        raise AvgPoolError(f"concurrency_limit must be >= 1, got {concurrency_limit}")
    if not (np.isfinite(timeout) and timeout > 0):
        raise AvgPoolError(f"timeout must be > 0 seconds, got {timeout}")
    metadata = fetch_metadata(base, model, version, timeout=timeout)
    arrays = dict(inputs) if inputs is not None else inputs_from_metadata(metadata, seed=seed)
    body, header_length = request_body(arrays, binary=binary)
    headers = {"Content-Type": "application/octet-stream" if header_length else "application/json"}
    if header_length is not None:
        headers["Inference-Header-Content-Length"] = str(header_length)
    target = base + _model_path(model, version) + "/infer"
    run = _Run(target, body, headers, rate, count, int(concurrency_limit), float(timeout))
    _run_coroutine(run.drive())
    statuses = dict(sorted(Counter(run.outcomes).items()))
    return LoadResult(
        url=base,
        model=model,
        version=version,
        rate=rate,
        duration=duration,
        binary=binary,
        concurrency_limit=int(concurrency_limit),
        sent=run.sent,
        elapsed=run.elapsed,
        latencies=np.asarray(run.ok_latencies, dtype=np.float64),
        statuses=statuses,
        max_dispatch_lag=run.max_lag,
        first_errors=run.first_errors,
    )


def _run_coroutine(coroutine: Any) -> None:
    """Run on a fresh event loop; in a thread when the caller already runs one (a notebook)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(coroutine)
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, coroutine).result()


class _Run:
    """One run's schedule and what came back."""

    def __init__(
        self, target: str, body: bytes, headers: dict[str, str], rate: float, count: int, limit: int,
        timeout: float,
    ) -> None:  # fmt: skip
        self.target, self.body, self.headers = target, body, headers
        self.rate, self.count, self.limit, self.timeout = rate, count, limit, timeout
        self.sent = 0
        self.elapsed = 0.0
        self.max_lag = 0.0
        self.outcomes: list[str] = []
        self.ok_latencies: list[float] = []
        self.first_errors: dict[str, str] = {}

    async def drive(self) -> None:
        import httpx

        limits = httpx.Limits(max_connections=self.limit, max_keepalive_connections=self.limit)
        slots = asyncio.Semaphore(self.limit)
        async with httpx.AsyncClient(limits=limits, timeout=self.timeout) as client:
            # a short lead, so the first requests are not late while the loop starts
            start = time.perf_counter() + 0.02
            tasks = []
            for i in range(self.count):
                due = start + i / self.rate
                wait = due - time.perf_counter()
                if wait > 0:
                    await asyncio.sleep(wait)
                self.max_lag = max(self.max_lag, time.perf_counter() - due)
                tasks.append(asyncio.create_task(self._one(client, slots, due)))
                self.sent += 1
            _, pending = await asyncio.wait(tasks, timeout=self.timeout + 1.0)
            for task in pending:
                task.cancel()
            # let the cancelled requests unwind before the client closes their connections
            await asyncio.gather(*pending, return_exceptions=True)
            self.outcomes += ["cancelled"] * len(pending)
            self.elapsed = time.perf_counter() - start

    async def _one(self, client: Any, slots: asyncio.Semaphore, due: float) -> None:
        import httpx

        async with slots:
            try:
                response = await client.post(self.target, content=self.body, headers=self.headers)
            except httpx.TimeoutException:
                outcome, detail = "timeout", f"no answer within {self.timeout:g} s"
            except httpx.ConnectError as exc:
                outcome, detail = "connect_error", str(exc)
            except httpx.TransportError as exc:
                outcome, detail = "transport_error", f"{type(exc).__name__}: {exc}"
            else:
                outcome, detail = str(response.status_code), ""
                if response.status_code == 200:
                    self.ok_latencies.append(time.perf_counter() - due)
                else:
                    detail = _error_text(response.content)
        self.outcomes.append(outcome)
        if outcome != "200":
            self.first_errors.setdefault(outcome, detail[:300])


def _ms(seconds: float) -> str:
    return "-" if not np.isfinite(seconds) else f"{seconds * 1e3:.2f}"


def load_table(result: LoadResult) -> Table:
    """The ``avgpool bench serve`` table: one row of latency percentiles, throughput and errors."""
    s = result.summary()
    name = result.model if result.version is None else f"{result.model}:{result.version}"
    rows = [
        [
            name,
            f"{result.rate:g}",
            str(result.sent),
            str(result.ok),
            str(result.errors),
            _ms(s["p50"]),
            _ms(s["p95"]),
            _ms(s["p99"]),
            _ms(s["max"]),
            f"{result.throughput:.1f}",
        ]
    ]
    headers = ["model", "rate/s", "sent", "ok", "errors", "P50 ms", "P95 ms", "P99 ms", "max ms", "ok/s"]
    footer = [
        f"{result.url}, {'binary' if result.binary else 'JSON'} bodies, {result.duration:g} s scheduled, "
        f"{result.elapsed:.2f} s in all, at most {result.concurrency_limit} in flight; latency from each "
        "request's scheduled send time (open loop), over the requests answered 200",
    ]
    others = {k: v for k, v in result.statuses.items() if k != "200"}
    if others:
        footer.append("errors: " + ", ".join(f"{k} x{v}" for k, v in others.items()))
        footer += [f"  {k}: {msg}" for k, msg in result.first_errors.items() if msg]
    if result.max_dispatch_lag > _LAG_WARNING:
        footer.append(
            f"the generator sent a request {result.max_dispatch_lag * 1e3:.0f} ms behind its schedule: "
            "this client, not only the server, limited the rate"
        )
    title = f"avgpool bench serve: {result.rate:g} requests/s for {result.duration:g} s"
    return title, headers, rows, footer
