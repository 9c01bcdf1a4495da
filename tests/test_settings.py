"""Backend and thread settings, seen from several threads at once."""

import threading

import numpy as np
import pytest

import avgpool as ap


def _in_thread(fn):
    box = {}
    thread = threading.Thread(target=lambda: box.setdefault("value", fn()))
    thread.start()
    thread.join()
    return box["value"]


def test_use_backend_holds_for_its_own_thread_only():
    entered, release = threading.Event(), threading.Event()
    seen = {}

    def worker():
        with ap.use_backend("reference"):
            seen["inside"] = ap.get_backend()
            entered.set()
            release.wait(10)

    thread = threading.Thread(target=worker)
    thread.start()
    assert entered.wait(10)
    try:
        assert seen["inside"] == "reference"
        assert ap.get_backend() == "numba"  # this thread is untouched while the block runs
    finally:
        release.set()
        thread.join()
    assert ap.get_backend() == "numba"


def test_overlapping_blocks_in_two_threads_leave_the_process_setting_alone():
    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()

    def first():
        with ap.use_backend("reference"):
            a_in.set()
            b_in.wait(10)
        a_out.set()

    def second():
        a_in.wait(10)
        with ap.use_backend("reference"):
            b_in.set()
            a_out.wait(10)  # leaves its block after the first thread left its own

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert ap.get_backend() == "numba"
    assert _in_thread(ap.get_backend) == "numba"


def test_nested_blocks_restore_in_order():
    with ap.use_backend("reference"):
        with ap.use_backend("numba"):
            assert ap.get_backend() == "numba"
        assert ap.get_backend() == "reference"
    assert ap.get_backend() == "numba"


def test_set_backend_holds_in_every_thread():
    ap.set_backend("reference")
    try:
        assert _in_thread(ap.get_backend) == "reference"
    finally:
        ap.set_backend("numba")


def test_set_num_threads_holds_in_threads_started_later(monkeypatch):
    """A planned kernel call run in a thread started after `set_num_threads(1)` takes the
    serial twin; after the count is raised again, the parallel kernel on that many threads."""
    import numba

    from avgpool import _cpu_calls

    seen = {}

    def probe(*_):
        seen["threads"] = numba.get_num_threads()

    threads = numba.config.NUMBA_NUM_THREADS
    run = _cpu_calls._on_threads(probe, threads)
    ap.set_num_threads(1)
    try:
        assert _in_thread(ap.get_num_threads) == 1
        with monkeypatch.context() as patch:
            patch.setattr(_cpu_calls, "serial", lambda kernel: lambda *_: seen.update(threads="serial"))
            _in_thread(run)
        assert seen["threads"] == ("serial" if threads > 1 else 1)
    finally:
        ap.set_num_threads(threads)
    _in_thread(run)
    assert seen["threads"] == threads


def test_small_work_runs_the_serial_twin_and_leaves_the_callers_count():
    """One thread wanted: the serial twin, with no switch of Numba's thread count (a switch
    takes a process-wide lock on every call)."""
    import numba

    from avgpool import _cpu_calls
    from avgpool.kernels import cpu_max

    assert _cpu_calls._on_threads(cpu_max.max_backward, 1) is _cpu_calls.serial(cpu_max.max_backward)
    before = numba.get_num_threads()
    x = np.random.default_rng(0).standard_normal((1, 2, 6, 6))
    y, index = ap.max_pool(x, 2, return_indices=True)
    grad = ap.max_pool_backward(np.ones_like(y), x, 2, indices=index)
    assert numba.get_num_threads() == before
    with ap.use_backend("reference"):
        np.testing.assert_array_equal(grad, ap.max_pool_backward(np.ones_like(y), x, 2, indices=index))


def test_settings_refuse_bad_values():
    with pytest.raises(ap.AvgPoolError, match="backend must be one of"):
        with ap.use_backend("cuda"):
            pass
    with pytest.raises(ap.AvgPoolError, match="threads must be an int between 1 and"):
        ap.set_num_threads(True)
