"""An image larger than a worker's memory, pooled on a LocalCluster and written chunk by chunk.

The input (1.5 GiB of float64, 24576x8192 in 1024x1024 chunks) is twice each worker's
memory limit (768 MiB) and is made on the workers from a seeded generator, never on the
client; the pooled results go straight from the workers into ``.npy`` files on disk. A worker
process with NumPy, Numba and avgpool loaded already holds about 220 MiB, so a worker has
about 550 MiB for data: a third of the input. (At 512 MiB a worker reached its pause
threshold on a fresh machine: average pooling runs in strips of whole rows, so a worker keeps
a row of input chunks while the strips that read it run; a tall image keeps those rows small,
64 MiB here, well under the pause threshold of 614 MiB.) The test then checks:

(a) values: output chunks at the corners, an edge and the middle equal the NumPy op on the
    matching slice of the input, recreated here from the same generator (only the few input
    chunks under that slice are made): max pooling bit for bit, average pooling to a few ulps
    (the kernels' running sums add a window's cells in an order that depends on where the
    chunk starts);
(b) memory: the workers spilled at most a quarter of the input to disk (the bytes their
    memory monitors wrote, from each worker's ``disk-write`` metrics; a run that leans on
    disk spills more than the whole input, as a limit of 400 MiB shows), no worker was ever
    paused for memory (the scheduler logs every status change) and none was restarted (the
    same addresses and process ids before and after);
(c) time: the computation has a hard timeout; the whole test takes about 15 s here.

The array goes through in pieces: each task holds its chunk, the halo of its neighbours and
its result, and the scheduler holds about a row of chunks that later rows still need.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")

import dask  # noqa: E402
import dask.array as da  # noqa: E402

import avgpool  # noqa: E402

MIB = 1 << 20
MEMORY_LIMIT = 768 * MIB
HEIGHT, WIDTH = 24 * 1024, 8 * 1024  # (1, 1, 24576, 8192) float64: 1536 MiB
CHUNK = 1024
SEED = 2026
#: distributed's default thresholds, set here so a user's dask config cannot change the test
MEMORY_CONFIG = {
    "distributed.worker.memory.target": 0.6,
    "distributed.worker.memory.spill": 0.7,
    "distributed.worker.memory.pause": 0.8,
    "distributed.worker.memory.terminate": 0.95,
    "distributed.admin.system-monitor.interval": "100ms",
}
#: (name, the Dask/NumPy call, kernel, stride): windows that overlap (3 over 2: a halo
#: between chunks) and windows that tile the input
OPS = (
    ("avg3x3s2", avgpool.avg_pool, 3, 2),
    ("max2x2s2", avgpool.max_pool, 2, 2),
)
COMPUTE_TIMEOUT_S = 120  # about 5 s here; a busy machine needs more


def _input(height: int = HEIGHT, width: int = WIDTH, chunk: int = CHUNK) -> da.Array:
    """The lazy input: each chunk made where it is needed, the same values every time."""
    return da.random.default_rng(SEED).random((1, 1, height, width), chunks=(1, 1, chunk, chunk))


class NpyTarget:
    """A ``.npy`` file on disk that `dask.array.store` writes one chunk at a time: each
    write maps the file, fills its region and unmaps it, so a worker holds one chunk's pages,
    and only the path travels to the workers."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __setitem__(self, index: tuple[slice, ...], value: np.ndarray) -> None:
        mapped = np.load(self.path, mmap_mode="r+")
        mapped[index] = value
        mapped.flush()
        del mapped


def _worker_facts(dask_worker) -> dict:
    """What a worker says of its memory: its pid, its peak process memory over the run (the
    system monitor's samples), the bytes it spilled to disk and its status."""
    spilled = sum(v for k, v in dask_worker.digests_total.items() if tuple(k[-2:]) == ("disk-write", "bytes"))
    return {
        "pid": os.getpid(),
        "peak_bytes": max(dask_worker.monitor.quantities["memory"]),
        "spilled_bytes": spilled,
        "status": dask_worker.status.name,
        "memory_limit": dask_worker.memory_manager.memory_limit,
    }


def _pid() -> int:
    return os.getpid()


def _warm_numba_cache() -> None:
    """Compile every kernel the chunks use here, once, into Numba's on-disk cache, so two
    workers do not compile the same kernels side by side inside the timed computation."""
    small = _input(2 * CHUNK, 2 * CHUNK)
    with dask.config.set(scheduler="sync"):
        for _, op, k, s in OPS:
            op(small, k, s).compute()


@pytest.fixture
def client():
    _warm_numba_cache()
    with dask.config.set(MEMORY_CONFIG):
        cluster = distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            memory_limit=MEMORY_LIMIT,
            silence_logs=40,  # errors only: a warning about memory would be a failure below anyway
        )
        try:
            c = distributed.Client(cluster, timeout=60)
            try:
                yield c
            finally:
                c.close(timeout=30)
        finally:
            cluster.close(timeout=30)


def _chunk_slices(chunks: tuple[tuple[int, ...], ...], index: tuple[int, ...]) -> tuple[slice, ...]:
    """The region of the array that chunk ``index`` covers."""
    out = []
    for sizes, i in zip(chunks, index):
        start = sum(sizes[:i])
        out.append(slice(start, start + sizes[i]))
    return tuple(out)


def test_an_image_larger_than_a_worker_pools_chunk_by_chunk(client, tmp_path):
    x = _input()
    assert x.nbytes > 1.8 * MEMORY_LIMIT
    workers_before = client.run(_pid)
    assert len(workers_before) == 2

    results, targets = [], []
    for name, op, k, s in OPS:
        y = op(x, k, s)
        assert isinstance(y, da.Array)
        assert y.shape == (1, 1, (HEIGHT - k) // s + 1, (WIDTH - k) // s + 1)
        path = str(tmp_path / f"{name}.npy")
        np.lib.format.open_memmap(path, mode="w+", dtype=y.dtype, shape=y.shape)
        results.append(y)
        targets.append(NpyTarget(path))
    stored = da.store(results, targets, lock=False, compute=False)
    futures = client.compute(list(stored))
    distributed.wait(futures, timeout=COMPUTE_TIMEOUT_S)
    for future in futures:
        future.result()  # raises the task's error, if one failed

    # (b) memory, read before anything else runs on the workers
    facts = client.run(_worker_facts)
    assert client.run(_pid) == workers_before, "a worker was restarted"
    pause_at = MEMORY_CONFIG["distributed.worker.memory.pause"] * MEMORY_LIMIT
    for address, f in facts.items():
        assert f["memory_limit"] == MEMORY_LIMIT
        assert f["status"] == "running", (address, f)
        statuses = [
            m["status"] for _, m in client.get_events(address) if m.get("action") == "worker-status-change"
        ]
        peak = f"peak {f['peak_bytes'] / MIB:.0f} MiB, pause at {pause_at / MIB:.0f} MiB"
        assert "paused" not in statuses, (address, statuses, peak)
    spilled = sum(f["spilled_bytes"] for f in facts.values())
    assert spilled < x.nbytes / 4, f"the workers spilled {spilled / MIB:.0f} MiB of {x.nbytes / MIB:.0f}"

    # (a) values: output chunks at both corners, the last row's middle, and inside
    reference = _input()
    for (name, op, k, s), y, target in zip(OPS, results, targets):
        written = np.load(target.path, mmap_mode="r")
        rows, cols = len(y.chunks[2]), len(y.chunks[3])
        for i, j in {
            (0, 0),
            (rows - 1, cols - 1),
            (rows - 1, cols // 2),
            (rows // 2, 0),
            (rows // 2, cols // 2),
        }:
            region = _chunk_slices(y.chunks, (0, 0, i, j))
            window = tuple(slice(r.start * s, (r.stop - 1) * s + k) for r in region[2:])
            patch = reference[:, :, window[0], window[1]].compute(scheduler="sync")
            expected = op(patch, k, s)
            # max pooling is exact; the NumPy op on a patch alone starts its running sums where
            # the patch starts, not where the whole array's do: an average agrees to a few ulps
            # (the exactness against the whole array is tested on arrays that fit, in test_exact)
            rtol = 0 if op is avgpool.max_pool else 1e-13
            np.testing.assert_allclose(
                written[region], expected, rtol=rtol, atol=0, err_msg=f"{name} {(i, j)}"
            )
