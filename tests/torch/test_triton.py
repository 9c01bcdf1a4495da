"""The Triton kernels behind CUDA tensors, run on the CPU by Triton's interpreter
(``TRITON_INTERPRET=1``) on small shapes, against the CPU ops."""

import os

import pytest
import torch

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


def _input(window: Window, layout: str, dtype=torch.float32):
    shape = (2, 3, 9, 8) if window.ndim == 2 else (2, 3, 11)
    x = torch.randn(*shape, dtype=dtype, device=DEVICE)
    if layout == "channels_last_memory" and window.ndim == 2:
        return x.contiguous(memory_format=torch.channels_last), window
    if layout == "channels_last_logical":
        return x.movedim(1, -1).contiguous(), window.replace(channels_last=True)
    return x, window


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("window", WINDOWS, ids=range(len(WINDOWS)))
def test_avg_forward_and_backward_match_the_cpu_kernels(window, layout):
    x, w = _input(window, layout)
    args = window_args(w)
    y = cuda.avg_pool(x, *args)
    want = apt.avg_pool(x.cpu(), window=w)
    assert_close(y.cpu(), want)
    assert y.stride() == want.stride()
    g = torch.randn_like(y)
    assert_close(
        cuda.avg_pool_backward(g, list(x.shape), *args).cpu(),
        apt.avg_pool_backward(g.cpu(), x.shape, window=w),
    )


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("window", WINDOWS[:2] + WINDOWS[3:], ids=range(3))
def test_max_forward_and_backward_match_the_cpu_kernels(window, layout):
    x, w = _input(window, layout)
    kernel, stride, padding, mode, dilation, ceil, _, _, cl, _ = window_args(w)
    y, index = cuda.max_pool(x, kernel, stride, padding, mode, dilation, ceil, cl, "torch", "")
    want, want_index = apt.max_pool(x.cpu(), window=w.replace(convention="torch"), return_indices=True)
    assert_close(y.cpu(), want)
    assert torch.equal(index.cpu(), want_index)
    g = torch.randn_like(y)
    dx = cuda.max_pool_backward(g, index, list(x.shape), w.ndim, cl)
    assert_close(dx.cpu(), apt.max_pool_backward(g.cpu(), x.cpu(), window=w.replace(convention="torch")))


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
