"""Profiling over a dask.distributed cluster: the batches are cut into contiguous shares, each
worker profiles the shares it is given with `profile_model`, and the driver merges the shares'
profiles in share order, so the result does not depend on which worker finished first.

Each worker loads the model once, not once per share: a model given by path (an ONNX or
PyTorch file, or a ``package.module:factory`` spec) is loaded by the worker on its first share
and kept, with its ONNX Runtime session, until the call ends; a model given as an object is
sent to every worker once (``client.scatter(..., broadcast=True)``). The shares themselves are
scattered to the workers, not written into the task graph.

The workers need avgpool and the model's runtime (onnxruntime or torch) installed, and a model
file at the same path as the driver sees it (a worker whose file differs is refused by sha256).
"""

from __future__ import annotations

import math
import os
import pickle
import threading
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from avgpool.monitor.collectors import Progress, profile_model
from avgpool.monitor.profile import Profile, ProfileError, merge

__all__ = ["profile_distributed"]

#: Shares per worker when ``batches_per_task`` is not given: enough to balance uneven workers
#: and to move the progress bar, few enough that scheduling stays a small cost.
SHARES_PER_WORKER = 4

# What each worker has loaded, by (worker address, call key): one cache per worker, even when
# several workers share a process (LocalCluster(processes=False)), and one per call, dropped
# when the call ends. A call's key starts with a fresh id.
_CACHES: dict[tuple[str, tuple[Any, ...]], dict[Any, Any]] = {}
_LOADS: Counter[str] = Counter()
# One share at a time runs a given model in a process: forward hooks belong to the module, so
# two shares running the same module at once would each record the other's outputs.
_IN_USE: dict[tuple[Any, ...], threading.Lock] = {}
# Calls that have ended: a share of one still running (a task cannot be stopped once started)
# must not load the model again after the call dropped it. The most recent ones suffice.
_ENDED: dict[tuple[Any, ...], None] = {}
_ENDED_KEPT = 1024
_REGISTRY = threading.Lock()


def _distributed() -> Any:
    try:
        import distributed
    except ImportError:
        raise ProfileError(
            "profiling over a cluster needs dask.distributed: pip install 'avgpool[dask]'"
        ) from None
    return distributed


def profile_distributed(
    model: Any,
    batches: Iterable[Mapping[str, Any]],
    *,
    scheduler: Any,
    progress: Progress | None = None,
    trust: bool = False,
    batches_per_task: int | None = None,
    timeout: float = 10.0,
    **options: Any,
) -> Profile:
    """Profile a model over a dask.distributed cluster; the same profile as `profile_model`
    gives in one process, to float64 rounding in the means and spreads.

    Parameters
    ----------
    model : str, path, onnx.ModelProto or torch.nn.Module
        What `profile_model` takes. A path must name the same file on every worker.
    batches : iterable of mapping
        The batches, as for `profile_model` (`iter_batches` cuts them from arrays).
    scheduler : str or distributed.Client
        A scheduler address (``tcp://host:8786``), ``"local"`` or ``"local:N"`` for a
        LocalCluster of N worker processes on 127.0.0.1 for this call only, or a Client.
    progress : callable, optional
        Wraps an iterable of the batches (as `profile_model`'s); advanced as shares finish.
    trust : bool
        As for `profile_model`: unpickle a ``.pt``/``.pth`` module or load a ``.pt2``.
    batches_per_task : int, optional
        Batches per share; by default about `SHARES_PER_WORKER` shares per worker.
    timeout : float
        Seconds to reach the scheduler and for it to have a worker.
    **options
        Passed to `profile_model` unchanged (layers, channel_hist, histogram settings,
        input_shapes).

    Returns
    -------
    Profile
        The shares' profiles merged in share order.

    Raises
    ------
    ProfileError
        The scheduler cannot be reached or has no workers, a worker cannot profile its share
        (the worker's message), a worker died, or dask.distributed is not installed.

    Examples
    --------
    Two worker processes on this machine (a script must call it under
    ``if __name__ == "__main__":``, as every LocalCluster of processes must start):

    >>> from avgpool.monitor import iter_batches, load_inputs
    >>> batches = iter_batches(load_inputs("samples.npz"), 32)  # doctest: +SKIP
    >>> profile = profile_distributed("model.onnx", batches, scheduler="local:2")  # doctest: +SKIP
    >>> profile.save("model.avgprof")  # doctest: +SKIP
    """
    distributed = _distributed()
    batches = list(batches)
    if not batches:
        raise ProfileError("no batches to profile")
    if batches_per_task is not None and batches_per_task < 1:
        raise ProfileError(f"batches_per_task must be >= 1, got {batches_per_task}")
    with _client(distributed, scheduler, timeout) as client:
        workers = max(len(client.scheduler_info(n_workers=-1)["workers"]), 1)
        per_task = batches_per_task or math.ceil(len(batches) / (SHARES_PER_WORKER * workers))
        shares = [batches[i : i + per_task] for i in range(0, len(batches), per_task)]
        ref, key, sha = _model_ref(client, model, trust)
        sent = client.scatter([options], broadcast=True, hash=False)[0]
        data = client.scatter(shares, hash=False)
        futures = [
            client.submit(_profile_share, ref, key, sha, share, trust, sent, pure=False) for share in data
        ]
        index = {future.key: i for i, future in enumerate(futures)}
        results: list[Profile | None] = [None] * len(futures)
        steps = iter(progress(range(len(batches)))) if progress else None
        try:
            if steps is not None:
                next(steps, None)  # the bar at zero while the first shares run
            for future in distributed.as_completed(futures, loop=client.loop):
                i = index[future.key]
                results[i] = _result(distributed, future, i)
                for _ in shares[i]:
                    if steps is not None:
                        next(steps, None)
        finally:
            close = getattr(steps, "close", None)
            if close is not None:
                close()
            client.cancel([*futures, *data, sent, *([ref] if isinstance(ref, distributed.Future) else [])])
            try:
                client.run(_forget, key)
            except Exception:  # the workers drop the model when they stop anyway
                pass
    return merge([r for r in results if r is not None])


@contextmanager
def _client(distributed: Any, scheduler: Any, timeout: float) -> Iterator[Any]:
    """A Client of ``scheduler`` with at least one worker; one made here is closed after."""
    if isinstance(scheduler, distributed.Client):
        yield scheduler
        return
    if not isinstance(scheduler, (str, os.PathLike)):
        raise TypeError(
            f"scheduler must be an address, 'local', 'local:N' or a distributed.Client, got "
            f"{type(scheduler).__name__}"
        )
    scheduler = os.fspath(scheduler)
    cluster = None
    if scheduler == "local" or scheduler.startswith("local:"):
        count = scheduler.partition(":")[2]
        if count and (not count.isdigit() or int(count) < 1):
            raise ProfileError(f"scheduler 'local:N' needs N >= 1 workers, got {scheduler!r}")
        try:
            cluster = distributed.LocalCluster(
                n_workers=int(count) if count else None,
                threads_per_worker=1,
                processes=True,
                host="127.0.0.1",
                dashboard_address="127.0.0.1:0",  # any free port, loopback only
            )
        except Exception as exc:
            raise ProfileError(
                f"cannot start a local dask cluster for scheduler {scheduler!r} ({type(exc).__name__}: "
                f"{exc}); a script that starts one must do so under if __name__ == '__main__':"
            ) from None
        client = distributed.Client(cluster, set_as_default=False)
    else:
        try:
            client = distributed.Client(scheduler, timeout=timeout, set_as_default=False)
        except (OSError, TimeoutError, ValueError) as exc:
            raise ProfileError(
                f"cannot reach the dask scheduler at {scheduler!r} within {timeout:g} s ({exc})"
            ) from None
    try:
        try:
            client.wait_for_workers(1, timeout=timeout)
        except (OSError, TimeoutError) as exc:
            raise ProfileError(
                f"the dask scheduler at {scheduler!r} has no workers (waited {timeout:g} s: {exc})"
            ) from None
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def _model_ref(client: Any, model: Any, trust: bool) -> tuple[Any, tuple[Any, ...], str | None]:
    """What the tasks get for the model, the key of the workers' caches, and its sha256 (of a
    file, or of a module as `profile_model` computes it)."""
    call = uuid.uuid4().hex
    if isinstance(model, (str, os.PathLike)):
        from avgpool._loading import sha256_file

        text = os.fspath(model)
        sha = sha256_file(text) if os.path.isfile(text) else None
        return text, (call, "path", text, trust), sha
    import cloudpickle

    # pickled whole: dask's own serializer of an nn.Module rebuilds its hook dicts as plain
    # dicts, which forward hooks cannot be registered on
    sent = client.scatter([cloudpickle.dumps(model)], broadcast=True, hash=False)[0]
    sha = None
    if hasattr(model, "named_modules"):
        from avgpool.monitor.collectors import _torch_sha256

        # the identity hash includes the class's qualified name, which a class defined in a
        # function loses when pickled by value: hashed here, as one process would
        sha = _torch_sha256(model)
    return sent, (call, "object"), sha


def _result(distributed: Any, future: Any, share: int) -> Profile:
    try:
        return future.result()
    except ProfileError as exc:  # the worker's own message, without the remote traceback
        raise ProfileError(str(exc)) from None
    except distributed.KilledWorker as exc:
        raise ProfileError(f"share {share}: the workers running it died ({exc})") from None


# --------------------------------------------------------------------------- on the workers


def _profile_share(
    model: Any,
    key: tuple[Any, ...],
    sha: str | None,
    batches: list[Mapping[str, Any]],
    trust: bool,
    options: Mapping[str, Any],
) -> Profile:
    """Profile one share on a worker, with the model this worker has loaded for ``key``."""
    from distributed import get_worker

    address = get_worker().address
    with _REGISTRY:
        if key in _ENDED:
            raise ProfileError("the profiling call this share belongs to has ended")
        loaded = _CACHES.setdefault((address, key), {})
        in_use = _IN_USE.setdefault(key, threading.Lock())
    with in_use:
        if not loaded:
            _check_file(model, sha, address)
            _LOADS[address] += 1
            sent = key[1] == "object"
            loaded["model"] = pickle.loads(model) if sent else model
            # profile_model keeps a model's sha256 under "sha256" in its cache
            loaded["cache"] = {"sha256": sha} if sent and sha else {}
        return profile_model(loaded["model"], batches, trust=trust, cache=loaded["cache"], **options)


def _check_file(model: Any, sha: str | None, address: str) -> None:
    """Refuse a model file that is missing on this worker or differs from the driver's."""
    if sha is None or not isinstance(model, str):
        return
    from avgpool._loading import sha256_file

    if not os.path.isfile(model):
        raise ProfileError(
            f"{model}: no such model file on worker {address} (every worker needs the model at the "
            "path the driver gave)"
        )
    mine = sha256_file(model)
    if mine != sha:
        raise ProfileError(
            f"{model}: the file on worker {address} differs from the driver's (sha256 {mine[:12]} vs "
            f"{sha[:12]})"
        )


def _forget(key: tuple[Any, ...], dask_worker: Any = None) -> None:
    """Drop what this worker loaded for ``key`` (run on every worker when a call ends)."""
    with _REGISTRY:
        _CACHES.pop((dask_worker.address, key), None)
        _IN_USE.pop(key, None)
        _ENDED[key] = None
        while len(_ENDED) > _ENDED_KEPT:
            del _ENDED[next(iter(_ENDED))]


def _loads(dask_worker: Any = None) -> int:
    """How many times this worker has loaded a model (a test counts them)."""
    with _REGISTRY:
        return _LOADS[dask_worker.address]
