"""The pool of reused result memory: a block is reused only once nothing refers to it."""

from __future__ import annotations

import os
import signal
import threading

import numpy as np
import pytest

import avgpool
from avgpool import _buffers

BIG = (4, 8, 128, 128)  # float32: 3x3/1 p1 gives a 2 MiB result, one GRAIN


@pytest.fixture(autouse=True)
def fresh_pool(monkeypatch):
    """An empty pool of 64 MiB with zeroed counters (results of other tests keep theirs)."""
    monkeypatch.setattr(_buffers, "_blocks", [])
    monkeypatch.setattr(_buffers, "_state", {**_buffers._state, "hits": 0, "misses": 0, "unpooled": 0})
    avgpool.set_buffer_pool(64 << 20)


def _x(seed=0):
    return np.random.default_rng(seed).random(BIG, dtype=np.float32)


def _pool(x):
    return avgpool.avg_pool(x, 3, 1, 1)


def test_a_released_result_gives_its_block_to_the_next_call():
    y = _pool(_x())
    address = y.ctypes.data
    del y
    y = _pool(_x(1))
    info = avgpool.buffer_pool_info()
    assert y.ctypes.data == address
    assert (info["hits"], info["misses"], info["blocks"]) == (1, 1, 1)
    np.testing.assert_array_equal(y, avgpool.avg_pool(_x(1), 3, 1, 1, out=np.empty_like(y)))


@pytest.mark.parametrize(
    "keep",
    [
        lambda y: y,
        lambda y: y[1:, ::2],  # a view
        lambda y: memoryview(y),
        lambda y: y.reshape(-1).view(np.int32),
    ],
    ids=["array", "view", "memoryview", "reinterpreted"],
)
def test_a_block_stays_lent_while_anything_refers_to_it(keep):
    first = _pool(_x())
    expected = first.copy()
    kept = keep(first)
    del first
    second = _pool(_x(1))
    assert not np.shares_memory(np.asarray(kept), second)
    np.testing.assert_array_equal(np.asarray(kept).view(np.uint8), np.asarray(keep(expected)).view(np.uint8))
    assert avgpool.buffer_pool_info()["lent"] == 2 * _buffers.GRAIN


def test_a_torch_tensor_keeps_its_block_lent():
    torch = pytest.importorskip("torch")
    t = torch.from_numpy(_pool(_x()))
    expected = t.clone()
    other = _pool(_x(1))
    assert not np.shares_memory(t.numpy(), other)
    assert torch.equal(t, expected)


def test_small_results_and_a_zero_limit_are_not_pooled():
    small = avgpool.avg_pool(np.ones((1, 1, 8, 8), np.float32), 2)
    assert small.flags.owndata
    avgpool.set_buffer_pool(0)
    y = _pool(_x())
    assert y.flags.owndata
    assert avgpool.buffer_pool_info()["blocks"] == 0


def test_the_limit_bounds_what_is_held_and_larger_results_go_unpooled():
    avgpool.set_buffer_pool(_buffers.GRAIN)
    a = _pool(_x())
    b = _pool(_x(1))  # no room while a is lent
    info = avgpool.buffer_pool_info()
    assert not a.flags.owndata and b.flags.owndata
    assert (info["held"], info["unpooled"]) == (_buffers.GRAIN, 1)
    del a, b
    avgpool.set_buffer_pool(4 * _buffers.GRAIN)
    a = _pool(_x())
    big = avgpool.avg_pool(np.zeros((4, 8, 512, 256), np.float32), 1)  # 16 MiB > limit
    assert big.flags.owndata and not a.flags.owndata


def test_empty_cache_frees_only_free_blocks():
    live = _pool(_x())
    _pool(_x(1))  # its block is free again at once
    assert avgpool.buffer_pool_info()["blocks"] == 2
    assert avgpool.empty_cache() == _buffers.GRAIN
    info = avgpool.buffer_pool_info()
    assert (info["blocks"], info["lent"]) == (1, _buffers.GRAIN)
    assert live.base is not None


def test_lowering_the_limit_releases_free_blocks_at_once():
    _pool(_x())
    assert avgpool.buffer_pool_info()["held"] == _buffers.GRAIN
    avgpool.set_buffer_pool(0)
    assert avgpool.buffer_pool_info()["held"] == 0


def test_concurrent_calls_never_share_a_block():
    inputs = [_x(i) for i in range(4)]
    expected = [avgpool.avg_pool(x, 3, 1, 1, out=np.empty((4, 8, 128, 128), np.float32)) for x in inputs]
    errors = []

    def work(i):
        for _ in range(10):
            y = _pool(inputs[i])
            if not np.array_equal(y, expected[i]):
                errors.append(i)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


@pytest.mark.parametrize("bad", [-1, 1.5, True, "1"])
def test_a_bad_limit_names_the_argument(bad):
    with pytest.raises(avgpool.AvgPoolError, match="max_bytes must be an int >= 0"):
        avgpool.set_buffer_pool(bad)


def test_a_bad_environment_limit_names_the_variable(monkeypatch):
    monkeypatch.setenv("AVGPOOL_BUFFER_POOL", "lots")
    with pytest.raises(avgpool.AvgPoolError, match="AVGPOOL_BUFFER_POOL must be a number of bytes"):
        _buffers._limit_from_env()
    monkeypatch.setenv("AVGPOOL_BUFFER_POOL", "0")
    assert _buffers._limit_from_env() == 0


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_takes_blocks_though_the_parent_held_the_lock():
    with _buffers._lock:  # as if another thread were inside the pool at the fork
        pid = os.fork()
        if pid == 0:  # the child: a deadlock would end in SIGALRM after 20 s
            signal.alarm(20)
            ok = False
            try:
                ok = _buffers.empty((1 << 19,), np.float32).nbytes == 2 << 20
            finally:
                os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


def test_unpooled_results_come_from_the_allocator_in_this_thread_only():
    import threading

    from avgpool._buffers import empty, unpooled

    shape = (1 << 20,)  # 8 MiB of float64: pooled by default
    assert empty(shape, np.float64).base is not None
    with unpooled():
        assert empty(shape, np.float64).base is None
        seen = []
        other = threading.Thread(target=lambda: seen.append(empty(shape, np.float64).base is not None))
        other.start()
        other.join()
        assert seen == [True]  # another thread still pools
    assert empty(shape, np.float64).base is not None
