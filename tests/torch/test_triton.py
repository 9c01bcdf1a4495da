"""The Triton kernels behind CUDA tensors, run on the CPU by Triton's interpreter
(``TRITON_INTERPRET=1``) on small shapes, against the CPU ops."""

import os

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

os.environ.setdefault("TRITON_INTERPRET", "1")
pytest.importorskip("triton")
if os.environ["TRITON_INTERPRET"] != "1" and not torch.cuda.is_available():
    pytest.skip("Triton needs a GPU or TRITON_INTERPRET=1", allow_module_level=True)

import avgpool.torch as apt
from avgpool.torch import _triton_ops as cuda
from avgpool.torch._library import window_args
from avgpool.window import Window
from tests.torch.conftest import assert_close

DEVICE = "cuda" if os.environ["TRITON_INTERPRET"] != "1" else "cpu"

WINDOWS = [
    Window(3, 2, 1, ceil_mode=True, ndim=2, convention="torch"),
    Window(3, 2, "same", count_include_pad=False, ndim=2, convention="tensorflow"),
    Window((2, 3), (1, 2), ((0, 2), (1, 1)), dilation=(2, 1), divisor_override=5, ndim=2),
    Window(4, 3, 2, ndim=1),
]
LAYOUTS = ["nchw", "channels_last_memory", "channels_last_logical"]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_accumulates_in_float32(dtype):
    w = WINDOWS[0]
    x = (torch.rand(1, 2, 9, 8, device=DEVICE) * 100 + 1000).to(dtype)
    y = cuda.avg_pool(x, *window_args(w))
    assert y.dtype == dtype
    want = apt.avg_pool(x.cpu().double(), window=w).to(dtype)
    assert_close(y.cpu(), want, dtype)


def test_nan_wins_a_max_and_an_empty_window_has_no_index():
    x = torch.tensor([[[1.0, float("nan"), 3.0, 2.0]]], device=DEVICE)
    y, index = cuda.max_pool(x, [2], [2], [0, 0], "", [1], False, False, "torch", "")
    assert torch.isnan(y[0, 0, 0]) and index[0, 0].tolist() == [1, 2]
    # taps at -1 and 2 of a 2-cell axis: no real cell (avgpool's -inf and index -1)
    y, index = cuda.max_pool(
        torch.ones(1, 1, 2, device=DEVICE), [2], [1], [1, 1], "", [3], False, False, "torch", ""
    )
    assert y.tolist() == [[[float("-inf")]]] and index.tolist() == [[[-1]]]
    dx = cuda.max_pool_backward(torch.ones_like(y), index, [1, 1, 2], 1, False)
    assert dx.tolist() == [[[0.0, 0.0]]]


# -- windows above DIRECT_TAPS and 3-D: the per-axis passes ------------------------------------

PASS_WINDOWS = [
    Window(5, 1, 2, ndim=2),  # 25 taps: passes
    Window((4, 6), (3, 2), 1, ceil_mode=True, count_include_pad=False, ndim=2),
    Window((5, 4), 2, ((0, 3), (2, 1)), dilation=(2, 1), divisor_override=7, ndim=2),  # a tap pass
    Window(2, 2, ndim=3),
    Window((3, 2, 3), (1, 2, 2), (1, 0, 1), ceil_mode=True, ndim=3, convention="torch"),
    Window(17, 3, 8, ndim=1),
    Window(3, 2, "same", count_include_pad=False, ndim=3, convention="tensorflow"),
]


def _input(window: Window, layout: str, dtype=torch.float32, seed=0, ties=False):
    shape = {1: (2, 3, 40), 2: (2, 3, 11, 13), 3: (2, 3, 5, 6, 7)}[window.ndim]
    x = torch.randn(*shape, dtype=dtype, device=DEVICE, generator=torch.Generator(DEVICE).manual_seed(seed))
    if ties:
        x.view(-1)[::7] = x.view(-1)[3]  # ties: the first in row-major order must win
        x.view(-1)[5::31] = float("nan")  # the last NaN in row-major order wins
    if layout == "channels_last_memory" and window.ndim > 1:
        fmt = torch.channels_last if window.ndim == 2 else torch.channels_last_3d
        return x.contiguous(memory_format=fmt), window
    if layout == "channels_last_logical":
        return x.movedim(1, -1).contiguous(), window.replace(channels_last=True)
    return x, window


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("window", WINDOWS + PASS_WINDOWS, ids=range(len(WINDOWS + PASS_WINDOWS)))
def test_avg_forward_and_backward_match_the_cpu_kernels(window, layout):
    x, w = _input(window, layout)
    args = window_args(w)
    y = cuda.avg_pool(x, *args)
    want = apt.avg_pool(x.cpu(), window=w)
    assert_close(y.cpu(), want)
    assert y.stride() == want.stride()
    g = torch.randn_like(y)
    dx = cuda.avg_pool_backward(g, list(x.shape), *args)
    want_dx = apt.avg_pool_backward(g.cpu(), x.shape, window=w)
    assert_close(dx.cpu(), want_dx)
    assert dx.stride() == want_dx.stride()  # the gradient's layout follows grad_output's


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("window", WINDOWS + PASS_WINDOWS, ids=range(len(WINDOWS + PASS_WINDOWS)))
def test_max_forward_and_backward_match_the_cpu_kernels(window, layout):
    x, w = _input(window, layout, ties=True)
    kernel, stride, padding, mode, dilation, ceil, _, _, cl, _ = window_args(w)
    w = w.replace(convention="torch")
    y, index = cuda.max_pool(x, kernel, stride, padding, mode, dilation, ceil, cl, "torch", "")
    want, want_index = apt.max_pool(x.cpu(), window=w, return_indices=True)
    assert_close(y.cpu(), want)
    assert torch.equal(index.cpu(), want_index)
    g = torch.randn_like(y)
    dx = cuda.max_pool_backward(g, index, list(x.shape), w.ndim, cl)
    assert_close(dx.cpu(), apt.max_pool_backward(g.cpu(), x.cpu(), window=w))


@pytest.mark.parametrize("window", WINDOWS, ids=range(len(WINDOWS)))
def test_the_passes_agree_with_the_fused_kernels(window, monkeypatch):
    x, w = _input(window, "nchw")
    args = window_args(w)
    fused = cuda.avg_pool(x, *args)
    g = torch.randn_like(fused)
    fused_dx = cuda.avg_pool_backward(g, list(x.shape), *args)
    monkeypatch.setattr(cuda, "DIRECT_TAPS", 0)
    assert_close(cuda.avg_pool(x, *args), fused)
    assert_close(cuda.avg_pool_backward(g, list(x.shape), *args), fused_dx)


def test_a_long_window_is_accurate_for_data_with_a_large_offset():
    # each scanned value sums at most one window's inputs: no running-sum drift along the row
    x = 1e4 + torch.rand(1, 2, 4000, device=DEVICE, generator=torch.Generator(DEVICE).manual_seed(1))
    w = Window(63, 1, ndim=1)
    y = cuda.avg_pool(x, *window_args(w))
    want = apt.avg_pool(x.double().cpu(), window=w)
    rel = ((y.double().cpu() - want).abs() / want.abs()).max().item()
    assert rel < 1e-6


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_passes_accumulate_half_precision_in_float32(dtype):
    w = PASS_WINDOWS[3]
    x = (torch.rand(1, 2, 5, 6, 7, device=DEVICE) * 100 + 1000).to(dtype)
    y = cuda.avg_pool(x, *window_args(w))
    assert y.dtype == dtype
    assert_close(y.cpu(), apt.avg_pool(x.cpu().double(), window=w).to(dtype), dtype)


@st.composite
def _geometries(draw):
    """A random N-d window and input (any padding, ceil mode, dilation, count_include_pad)."""
    ndim = draw(st.integers(1, 3))
    size = [draw(st.integers(1, 9)) for _ in range(ndim)]
    kernel = [draw(st.integers(1, 6)) for _ in range(ndim)]
    dilation = [draw(st.sampled_from([1, 1, 2])) for _ in range(ndim)]
    stride = [draw(st.integers(1, 4)) for _ in range(ndim)]
    pads = [(draw(st.integers(0, 3)), draw(st.integers(0, 3))) for _ in range(ndim)]
    for i in range(ndim):  # at least one output
        span = dilation[i] * (kernel[i] - 1) + 1
        if size[i] + sum(pads[i]) < span:
            size[i] = span
    w = Window(
        tuple(kernel), tuple(stride), tuple(pads), dilation=tuple(dilation),
        ceil_mode=draw(st.booleans()), count_include_pad=draw(st.booleans()),
        channels_last=draw(st.booleans()), ndim=ndim,
    )  # fmt: skip
    shape = (2, *size, 3) if w.channels_last else (2, 3, *size)
    return w, shape, draw(st.integers(0, 2**16))


@settings(max_examples=40, deadline=None)
@given(_geometries(), st.booleans())
def test_random_geometries_match_the_cpu_kernels(case, force_passes):
    w, shape, seed = case
    gen = torch.Generator(DEVICE).manual_seed(seed)
    x = torch.randn(*shape, device=DEVICE, generator=gen).round(decimals=1)  # rounding: ties for max
    limit = 0 if force_passes else cuda.DIRECT_TAPS
    old, cuda.DIRECT_TAPS = cuda.DIRECT_TAPS, limit
    try:
        args = window_args(w)
        y = cuda.avg_pool(x, *args)
        assert_close(y.cpu(), apt.avg_pool(x.cpu(), window=w))
        g = torch.randn(y.shape, device=DEVICE, generator=gen)
        dx = cuda.avg_pool_backward(g, list(shape), *args)
        assert_close(dx.cpu(), apt.avg_pool_backward(g.cpu(), shape, window=w))
        kernel, stride, padding, mode, dilation, ceil, _, _, cl, _ = args
        m, index = cuda.max_pool(x, kernel, stride, padding, mode, dilation, ceil, cl, "torch", "")
        want, want_index = apt.max_pool(x.cpu(), window=w.replace(convention="torch"), return_indices=True)
        assert_close(m.cpu(), want)
        assert torch.equal(index.cpu(), want_index)
        dm = cuda.max_pool_backward(g, index, list(shape), w.ndim, cl)
        assert_close(dm.cpu(), apt.max_pool_backward(g.cpu(), x.cpu(), window=w.replace(convention="torch")))
    finally:
        cuda.DIRECT_TAPS = old


# inf * 0 in Triton's CPU interpreter (NumPy underneath) is the NaN this test feeds on purpose
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning:triton")
@pytest.mark.parametrize("window", PASS_WINDOWS, ids=range(len(PASS_WINDOWS)))
def test_passes_keep_inf_and_nan_to_their_own_windows(window):
    # block prefix sums would spread one inf or NaN over its block: the counts must stop that
    x, w = _input(window, "nchw", seed=3)
    x = x.clone()
    flat = x.view(-1)
    flat[7], flat[40], flat[41], flat[90] = float("inf"), float("-inf"), float("inf"), float("nan")
    args = window_args(w)
    y = cuda.avg_pool(x, *args)
    assert_close(y.cpu(), apt.avg_pool(x.cpu(), window=w))
    g = torch.randn_like(y)
    g.view(-1)[3] = float("inf")
    assert_close(
        cuda.avg_pool_backward(g, list(x.shape), *args).cpu(),
        apt.avg_pool_backward(g.cpu(), x.shape, window=w),
    )
