"""Planned calls: a repeated call reuses its plan, threads follow the work's size, and a window
that covers the whole input takes the global kernels, whatever the call that wrote it."""

from __future__ import annotations

import numba
import numpy as np
import pytest

import avgpool as ap
from avgpool import _backends, _cpu_calls, _cpu_drivers, _dispatch
from avgpool import reference as ref
from avgpool._arrays import Layout

pytestmark = pytest.mark.usefixtures("fresh_plans")


def _x(shape, dtype=np.float32, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def test_a_repeated_call_reuses_its_plan(monkeypatch):
    x = _x((2, 3, 8, 8))
    first = ap.avg_pool(x, 3, 2, 1)
    assert len(_backends._plans) == 1

    def refuse(*_):
        raise AssertionError("planned again")

    monkeypatch.setattr(_backends.NumpyBackend, "_prepared", refuse)
    again = ap.avg_pool(x + 0, 3, 2, 1)  # another array of the same shape and dtype
    np.testing.assert_array_equal(again, first)
    assert len(_backends._plans) == 1


def test_plans_differ_by_shape_dtype_window_options_and_backend(caplog):
    x = _x((2, 3, 8, 8))
    ap.avg_pool(x, 2)
    ap.avg_pool(x[:1], 2)
    ap.avg_pool(x.astype(np.float64), 2)
    ap.avg_pool(x, 2, count_include_pad=False, padding=1)
    ap.max_pool(x, 2)
    ap.max_pool(x, 2, return_indices=True)
    assert len(_backends._plans) == 6
    with caplog.at_level("DEBUG", logger="avgpool"), ap.use_backend("reference"):
        y = ap.avg_pool(x, 2)
    assert "float64 reference" in caplog.text
    assert len(_backends._plans) == 7
    np.testing.assert_allclose(y, ap.avg_pool(x, 2), rtol=1e-6)


def test_a_planned_call_takes_any_strides_and_float16():
    x = _x((2, 3, 9, 9), np.float64)
    for view in (x, x[:, :, ::-1], np.asfortranarray(x), x.transpose(0, 1, 3, 2)):
        want = ref.avg_pool(
            view.reshape(6, 9, 9), [a.bounded() for a in ap.Window(3, 2, 1, ndim=2).resolve((9, 9))]
        )
        np.testing.assert_allclose(ap.avg_pool(view, 3, 2, 1).reshape(6, 5, 5), want, rtol=1e-12)
    half = x.astype(np.float16)
    got = ap.avg_pool(half, 3, 2, 1)
    assert got.dtype == np.float16
    np.testing.assert_allclose(got, ap.avg_pool(half.astype(np.float32), 3, 2, 1).astype(np.float16))


def test_the_plan_cache_is_bounded(monkeypatch):
    monkeypatch.setattr(_backends, "PLANS_CACHED", 3)
    for n in range(1, 7):
        ap.avg_pool(_x((n, 2, 4, 4)), 2)
    assert len(_backends._plans) == 3


def test_out_still_checked_and_written():
    x = _x((2, 3, 8, 8))
    out = np.empty((2, 3, 4, 4), np.float32)
    assert ap.avg_pool(x, 2, out=out) is out
    np.testing.assert_array_equal(out, ap.avg_pool(x, 2))
    with pytest.raises(ap.AvgPoolError, match="out must be"):
        ap.avg_pool(x, 2, out=np.empty((2, 3, 4, 5), np.float32))


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("channels_last", [False, True])
def test_the_kept_call_writes_into_out(monkeypatch, dtype, channels_last):
    """With ``out``, the kept kernel call writes into it (no second plan, no copy), the same
    values as without, and still refuses an ``out`` of another dtype, shape or layout."""
    x = _x((2, 6, 9, 8)).astype(dtype)
    want = ap.avg_pool(x, 3, 2, 1, channels_last=channels_last)
    out = np.full_like(want, np.nan)
    ran = []
    call_into = _dispatch.call_into

    def spy(planned, *args):
        ran.append((planned, call_into(planned, *args)))
        return ran[-1][1]

    monkeypatch.setattr(_dispatch, "call_into", spy)
    for _ in range(2):
        assert ap.avg_pool(x, 3, 2, 1, channels_last=channels_last, out=out) is out
        assert out.tobytes() == want.tobytes()
    assert len(ran) == 2 and ran[0][0] is ran[1][0] and all(got is out for _, got in ran)
    for bad in (
        want.astype(np.complex64),
        np.empty((*want.shape[:-1], 5), dtype),
        np.empty(want.shape[::-1], dtype).T,
    ):
        with pytest.raises(ap.AvgPoolError, match="out must be"):
            ap.avg_pool(x, 3, 2, 1, channels_last=channels_last, out=bad)


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("spatial", [(7,), (7, 7), (3, 4, 5)])
def test_a_window_over_the_whole_input_is_global(caplog, spatial, channels_last):
    """``avg_pool2d(x, 7)`` on 7x7, ``kernel_size == input``, adaptive to 1: the global kernels,
    forward and backward, in both layouts, with the reference's values."""
    nd = len(spatial)
    shape = (2, *spatial, 5) if channels_last else (2, 5, *spatial)
    x = _x(shape, np.float64)
    cl = channels_last
    glob = ap.global_avg_pool(x, channels_last=cl)
    with caplog.at_level("DEBUG", logger="avgpool"):
        whole = ap.avg_pool(x, spatial, channels_last=cl)
        adaptive = ap.adaptive_avg_pool(x, (1,) * nd, channels_last=cl)
        peak, index = ap.max_pool(x, spatial, channels_last=cl, return_indices=True)
        amax, aindex = ap.adaptive_max_pool(x, (1,) * nd, channels_last=cl, return_indices=True)
        g = np.ones_like(glob)
        back = ap.avg_pool_backward(g, shape, spatial, channels_last=cl)
        aback = ap.adaptive_avg_pool_backward(g, shape, channels_last=cl)
    text = caplog.text
    assert text.count("box_global.global_avg") >= 2, text
    assert text.count("cpu_max.global_max") >= 2, text
    assert text.count("global window, one value per plane or channel") >= 2, text
    np.testing.assert_allclose(whole, glob, rtol=1e-12)
    np.testing.assert_allclose(adaptive, glob, rtol=1e-12)
    gmax = ap.global_max_pool(x, channels_last=cl)
    planes = np.moveaxis(x, -1, 1) if cl else x
    first = planes.reshape(2, 5, -1).argmax(axis=-1).reshape(2, 5, *(1,) * nd)
    gindex = np.moveaxis(first, 1, -1) if cl else first
    np.testing.assert_array_equal(peak, gmax)
    np.testing.assert_array_equal(index, gindex)
    np.testing.assert_array_equal(amax, gmax)
    np.testing.assert_array_equal(aindex, gindex)
    np.testing.assert_allclose(back, np.full(shape, 1 / np.prod(spatial)), rtol=1e-15)
    np.testing.assert_allclose(aback, back, rtol=1e-15)


def test_a_padded_or_overridden_whole_window_stays_windowed(caplog):
    x = _x((1, 2, 5, 5), np.float64)
    with caplog.at_level("DEBUG", logger="avgpool"):
        ap.avg_pool(x, 5, divisor_override=3)
        ap.avg_pool(x, 7, padding=1, count_include_pad=False)
    assert "box_global" not in caplog.text


def test_a_dilated_window_as_long_as_the_input_is_not_global():
    # kernel 3 at dilation 2 over 3 cells (ceil mode keeps the one window): taps 0 and 2 only
    x = np.array([[[-8.0, 17.0, -16.0]]])
    values, index = ap.max_pool(x, 3, 3, dilation=2, ceil_mode=True, return_indices=True)
    assert values.tolist() == [[[-8.0]]] and index.tolist() == [[[0]]]
    assert ap.avg_pool(x, 3, 3, dilation=2, ceil_mode=True).tolist() == [[[-12.0]]]


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="one core: every call is serial")
def test_small_work_runs_serially_and_large_work_on_threads(caplog):
    before = numba.get_num_threads()
    with caplog.at_level("DEBUG", logger="avgpool"):
        ap.avg_pool(_x((1, 4, 8, 8)), 2)
    assert "(serial)" in caplog.text
    caplog.clear()
    big = _x((2, 16, 128, 128))  # 2 MiB in, 0.5 MiB out
    with caplog.at_level("DEBUG", logger="avgpool"):
        ap.avg_pool(big, 2)
    assert "(2 threads)" in caplog.text
    assert numba.get_num_threads() == before
    assert _cpu_calls.threads_for(_cpu_calls.BYTES_PER_THREAD - 1) == 1


def test_direct_channels_last_averages_count_each_read_for_their_threads():
    """`box_rows.avg_direct` reads each input cell once per window that covers it, so its
    thread count weighs the input by those reads: a 3x3/1 window (9 reads) moving 640 KiB
    asks for more than one thread, a 2x2/2 window (1 read; padded, or its own kernel takes it)
    of the same input for one."""
    x = _x((1, 8, 8, 1280))
    layout = Layout.of(x.shape, 2, True)
    wanted = {}
    windows = ap.Window(3, 1, 1, ndim=2, channels_last=True), ap.Window(2, 2, 1, ndim=2, channels_last=True)
    for window in windows:
        axes = tuple(a.bounded() for a in window.resolve(layout.spatial))
        planned = _cpu_drivers.plan_avg_forward(layout, axes, True, None, 0.0, x.dtype)
        assert "avg_direct" in planned.path
        wanted[window.kernel_size[0]] = planned.threads
    assert wanted[3] > 1 and wanted[2] == 1


def test_serial_twins_give_the_parallel_kernels_bits():
    """A call's thread count never changes its result: each kernel's serial twin is the same
    code, and gives the same bits as the threaded kernel."""
    x = _x((3, 7, 21, 19))
    layout = Layout.of(x.shape, 2, False)
    for window in (
        ap.Window(3, 1, 1, count_include_pad=False, ndim=2),
        ap.Window(2, ndim=2),
        ap.Window(7, 3, 3, ndim=2),
    ):
        axes = tuple(a.bounded() for a in window.resolve(layout.spatial))
        planned = _cpu_drivers.plan_avg_forward(layout, axes, window.count_include_pad, None, 0.0, x.dtype)
        xv = x.reshape(planned.view)
        a, b = np.empty(planned.out_view, np.float32), np.empty(planned.out_view, np.float32)
        twin = _cpu_calls.serial(planned.kernel)
        assert twin is not planned.kernel and planned.kernel.targetoptions.get("parallel")
        assert not twin.targetoptions.get("parallel")
        planned.kernel(xv, a, *planned.args)
        twin(xv, b, *planned.args)
        np.testing.assert_array_equal(a, b)


def test_set_num_threads_one_runs_large_work_serially(caplog):
    before = numba.get_num_threads()
    ap.set_num_threads(1)
    try:
        with caplog.at_level("DEBUG", logger="avgpool"):
            y = ap.avg_pool(_x((2, 16, 128, 128)), 2)
        assert "(serial)" in caplog.text
        np.testing.assert_array_equal(y, ap.avg_pool(_x((2, 16, 128, 128)), 2))
    finally:
        ap.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    assert numba.get_num_threads() == before


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="one core: every call is serial")
def test_a_kept_call_on_threads_reads_the_thread_count_at_each_call(monkeypatch):
    """A kept call planned for two threads runs the kernel at once while its thread's Numba
    count is what it wants, the serial twin after ``set_num_threads(1)``, and under another
    Numba count sets its own for the call and restores that count after; the same values
    each way. The max pooling call keeps its values alone (no pair with None to unpack)."""
    x = _x((1, 768, 17, 17))  # 0.9 MiB in: two threads
    want = ap.max_pool(x, 3, 2)
    assert len(_backends._calls) == 1
    kept = next(iter(_backends._calls.values()))
    assert kept.__qualname__.startswith("Planned.bare")
    twins, switched = [], []
    real_serial, real_switched = _cpu_calls.serial, _cpu_calls._switched
    monkeypatch.setattr(_cpu_calls, "serial", lambda k: twins.append(k) or real_serial(k))
    monkeypatch.setattr(_cpu_calls, "_switched", lambda *a: switched.append(a[:2]) or real_switched(*a))
    before = numba.get_num_threads()
    try:
        ap.set_num_threads(2)
        numba.set_num_threads(2)
        np.testing.assert_array_equal(ap.max_pool(x, 3, 2), want)
        assert not twins and not switched
        numba.set_num_threads(1)
        np.testing.assert_array_equal(ap.max_pool(x, 3, 2), want)
        assert switched == [(1, 2)] and numba.get_num_threads() == 1
        ap.set_num_threads(1)
        np.testing.assert_array_equal(ap.max_pool(x, 3, 2), want)
        assert len(twins) == 1 and len(switched) == 1
    finally:
        ap.set_num_threads(numba.config.NUMBA_NUM_THREADS)
        numba.set_num_threads(before)


@pytest.mark.parametrize("channels_last", [False, True])
def test_adaptive_pools_whose_sizes_divide_are_plain_ones(caplog, channels_last):
    """VGG's adaptive 7x7 on a 7x7 map, 14x14 -> 7x7: kernel = stride = size / out, run by the
    box and max kernels, with the reference's values and indices."""
    cl = channels_last
    for spatial, out in (((7, 7), 7), ((14, 12), (7, 3))):
        shape = (2, *spatial, 5) if cl else (2, 5, *spatial)
        x = _x(shape, np.float64)
        caplog.clear()
        with caplog.at_level("DEBUG", logger="avgpool"):
            y = ap.adaptive_avg_pool(x, out, channels_last=cl)
            m, i = ap.adaptive_max_pool(x, out, return_indices=True, channels_last=cl)
            g = ap.adaptive_avg_pool_backward(np.ones_like(y), shape, channels_last=cl)
        assert "cpu_taps" not in caplog.text and "avg_pool: " in caplog.text, caplog.text
        with ap.use_backend("reference"):
            np.testing.assert_allclose(
                y, ap.adaptive_avg_pool(x, out, channels_last=cl), rtol=1e-12, atol=1e-15
            )
            want_m, want_i = ap.adaptive_max_pool(x, out, return_indices=True, channels_last=cl)
            want_g = ap.adaptive_avg_pool_backward(np.ones_like(y), shape, channels_last=cl)
        np.testing.assert_array_equal(m, want_m)
        np.testing.assert_array_equal(i, want_i)
        np.testing.assert_allclose(g, want_g, rtol=1e-15)


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="one core: every call is serial")
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_large_windows_of_one_cell_copy_on_threads_forward_and_backward(caplog, dtype):
    """VGG's adaptive 7x7 head at batch 32 moves MiBs: the forward and the gradient copy on
    threads (`box_rows.copy_cells`; float16, not a kernel dtype, through NumPy), bit for bit,
    into ``out=`` too."""
    x = _x((32, 7, 7, 96), dtype)
    g = _x(x.shape, dtype, seed=1)
    for a in (x, g):
        a[0, 0, 0, :3] = a[-1, -1, -1, -3:] = [-0.0, np.inf, np.nan]
    with caplog.at_level("DEBUG", logger="avgpool"):
        y = ap.adaptive_avg_pool(x, 7, channels_last=True)
        grad = ap.adaptive_avg_pool_backward(g, x.shape, channels_last=True)
        out = np.empty_like(x)
        assert ap.avg_pool(x, 1, channels_last=True, out=out) is out
        grad1 = ap.avg_pool_backward(g, x.shape, 1, channels_last=True)
    for got, want in ((y, x), (grad, g), (out, x), (grad1, g)):
        assert got.dtype == dtype and got.shape == want.shape
        np.testing.assert_array_equal(got.view(np.uint8), want.view(np.uint8))
    threaded = dtype != np.float16
    assert caplog.text.count("copy_cells (every window is one cell) (2 threads)") == 4 * threaded
    assert caplog.text.count("copy (every window is one cell) (serial)") == 4 * (not threaded)


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_windows_of_one_cell_are_a_copy(caplog, channels_last, dtype):
    """Adaptive to the input's own size (VGG's 7x7 head on a 7x7 map) and kernel 1 at stride 1
    copy the input, bit for bit (-0.0, inf and NaN kept), into ``out=`` too; a divisor
    override other than 1, a stride, or padding still pools."""
    x = _x((2, 3, 7, 7), dtype)
    x[0, 0, 0, :3] = [-0.0, np.inf, np.nan]
    x = np.ascontiguousarray(np.moveaxis(x, 1, -1)) if channels_last else x
    with caplog.at_level("DEBUG", logger="avgpool"):
        for y in (
            ap.adaptive_avg_pool(x, 7, channels_last=channels_last),
            ap.avg_pool(x, 1, channels_last=channels_last),
        ):
            assert y.dtype == dtype and y is not x
            np.testing.assert_array_equal(y.view(np.uint8), x.view(np.uint8))
        out = np.empty_like(x)
        assert ap.avg_pool(x, 1, channels_last=channels_last, out=out) is out
        np.testing.assert_array_equal(out.view(np.uint8), x.view(np.uint8))
    assert caplog.text.count("copy (every window is one cell)") == 3
    caplog.clear()
    with caplog.at_level("DEBUG", logger="avgpool"):
        halved = ap.avg_pool(x, 1, divisor_override=2, channels_last=channels_last)
        ap.avg_pool(x, 1, 1, 1, channels_last=channels_last)
        ap.avg_pool(x, 1, 2, channels_last=channels_last)
    assert "copy" not in caplog.text
    np.testing.assert_array_equal(halved, x / dtype(2))
