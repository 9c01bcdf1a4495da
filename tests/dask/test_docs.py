"""docs/dask.md stays true: its Python blocks run, in order, in one namespace, and every
``expression  # literal`` line gives what its comment shows (the README's rules,
`tests.test_readme`). The page's cluster is a LocalCluster on 127.0.0.1; it is closed
even when a block fails, and an alarm stops the page after `LIMIT_S`. About 15 s: the page
pools a 1 GiB scene and a 968 MiB array."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

pytest.importorskip("dask.array")
pytest.importorskip("distributed")

from tests.test_readme import _blocks, run_blocks

PAGE = Path(__file__).resolve().parents[2] / "docs" / "dask.md"
LIMIT_S = 300  # a computation on the cluster has no timeout of its own


def _too_long(signum, frame):
    raise TimeoutError(f"docs/dask.md's examples ran over {LIMIT_S} s")


def _close(namespace: dict) -> None:
    for name in ("client", "cluster"):
        thing = namespace.get(name)
        if thing is not None:
            thing.close()


def _warm_numba_cache() -> None:
    """Compile the cluster example's kernels (float64 avg 3x3/2 on 1024x1024 chunks: the
    threaded ones) here, into Numba's on-disk cache, so its two workers load them instead of
    both compiling them."""
    import dask.array as da

    import avgpool

    avgpool.avg_pool(da.ones((1, 1, 2048, 2048), chunks=1024), 3, 2).compute(scheduler="sync")


def test_the_dask_page_runs_and_shows_what_it_says(tmp_path, monkeypatch):
    import dask

    _warm_numba_cache()
    monkeypatch.chdir(tmp_path)  # the page writes pooled/ and pooled-cluster/ where it runs
    blocks = _blocks("python", PAGE)
    assert len(blocks) >= 4
    namespace: dict = {}
    # the page's local examples use Dask's default (threaded) scheduler, not this folder's
    # synchronous one
    previous = signal.signal(signal.SIGALRM, _too_long)
    signal.alarm(LIMIT_S)
    with dask.config.set(scheduler="threads"):
        try:
            checked = run_blocks(blocks, namespace, PAGE)
        finally:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, previous)
            _close(namespace)
    assert checked >= 4
    # what the page wrote: the pooled scene and the cluster's result, block row by block row
    written = sorted(p.name for p in (tmp_path / "pooled").iterdir())
    assert written == sorted([*(f"{i}.npy" for i in range(15)), "info"])  # one file per strip
    assert namespace["small"].shape == (8191, 8191)
    assert len(list((tmp_path / "pooled-cluster").glob("*.npy"))) == namespace["y"].numblocks[2]
