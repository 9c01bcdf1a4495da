"""avgpool's ops on tensors: values against torch.nn.functional, layouts, dtypes, refusals,
the custom ops' registration (opcheck), and gradients (gradcheck, gradgradcheck)."""

import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import avgpool
import avgpool.torch as apt
from avgpool import AvgPoolError, Window
from tests.torch.conftest import assert_close


def test_import_avgpool_does_not_import_torch():
    code = "import sys, avgpool, avgpool.ops; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_every_numpy_op_has_a_tensor_twin():
    missing = [name for name in avgpool.ops.__all__ if not callable(getattr(apt, name, None))]
    assert missing == []


def test_hand_worked_readme_case_on_tensors():
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    assert apt.avg_pool2d(x, 2)[0, 0].tolist() == [[2.5, 4.5], [10.5, 12.5]]
    # the NumPy entry points forward tensors to the front end, and return tensors
    y = avgpool.avg_pool2d(x, 2)
    assert isinstance(y, torch.Tensor) and y[0, 0].tolist() == [[2.5, 4.5], [10.5, 12.5]]
    g = avgpool.avg_pool_backward(torch.ones(1, 1, 2, 2), (1, 1, 4, 4), 2)
    assert isinstance(g, torch.Tensor) and torch.all(g == 0.25)


def test_tensorflow_same_on_tensors_matches_the_numpy_op():
    img = np.arange(25.0).reshape(1, 5, 5, 1)
    w = Window.from_tensorflow(3, 2, "SAME")
    want = avgpool.avg_pool(img, window=w)
    got = apt.avg_pool(torch.from_numpy(img), window=w)
    assert got[0, 0, 0, 0].item() == 3.0
    np.testing.assert_array_equal(got.numpy(), want)


# -- values against torch.nn.functional ----------------------------------------------------------

AVG_CASES = [
    (2, dict(kernel_size=3, stride=2, padding=1)),
    (2, dict(kernel_size=3, stride=2, padding=1, ceil_mode=True, count_include_pad=False)),
    (2, dict(kernel_size=(2, 3), stride=(1, 2), padding=(1, 0), divisor_override=4)),
    (1, dict(kernel_size=4, stride=3, padding=2, ceil_mode=True)),
    (3, dict(kernel_size=2, stride=1, padding=1, count_include_pad=False)),
]


@pytest.mark.parametrize("ndim,kwargs", AVG_CASES)
def test_avg_pool_matches_torch(ndim, kwargs):
    x = torch.randn(2, 3, *([7] * ndim), dtype=torch.float64)
    assert_close(getattr(apt, f"avg_pool{ndim}d")(x, **kwargs), getattr(F, f"avg_pool{ndim}d")(x, **kwargs))


MAX_CASES = [
    (2, dict(kernel_size=3, stride=2, padding=1, dilation=2, ceil_mode=True)),
    (1, dict(kernel_size=3, stride=1, padding=1)),
    (3, dict(kernel_size=2, stride=2, ceil_mode=True)),
]


@pytest.mark.parametrize("ndim,kwargs", MAX_CASES)
def test_max_pool_matches_torch_with_indices(ndim, kwargs):
    x = torch.randn(2, 3, *([7] * ndim), dtype=torch.float64)
    y, i = getattr(apt, f"max_pool{ndim}d")(x, return_indices=True, **kwargs)
    y2, i2 = getattr(F, f"max_pool{ndim}d")(x, return_indices=True, **kwargs)
    assert_close(y, y2)
    assert torch.equal(i, i2)


@pytest.mark.parametrize(
    "p,kwargs", [(2, dict(kernel_size=3, stride=2)), (3, dict(kernel_size=2, ceil_mode=True))]
)
def test_lp_pool_matches_torch(p, kwargs):
    x = torch.rand(2, 3, 7, 7, dtype=torch.float64) + 0.1
    assert_close(apt.lp_pool2d(x, p, **kwargs), F.lp_pool2d(x, p, **kwargs))


@pytest.mark.parametrize("size", [(3, 4), (5, None), 1, (7, 7)])
def test_adaptive_pools_match_torch(size):
    x = torch.randn(2, 3, 9, 7, dtype=torch.float64)
    assert_close(apt.adaptive_avg_pool2d(x, size), F.adaptive_avg_pool2d(x, size))
    y, i = apt.adaptive_max_pool2d(x, size, return_indices=True)
    y2, i2 = F.adaptive_max_pool2d(x, size, return_indices=True)
    assert_close(y, y2)
    assert torch.equal(i, i2)


def test_global_pools_and_their_keepdims():
    x = torch.randn(2, 3, 5, 4, dtype=torch.float64)
    assert_close(apt.global_avg_pool(x, keepdims=False), x.mean((2, 3)))
    assert_close(apt.global_max_pool(x), x.amax((2, 3), keepdim=True))


def test_blur_pool_is_a_binomial_filter_then_subsampling():
    x = torch.randn(1, 2, 8, 8, dtype=torch.float64)
    filt = torch.tensor([1.0, 2.0, 1.0], dtype=torch.float64)
    kernel = (filt[:, None] * filt[None, :] / 16).expand(2, 1, 3, 3)
    want = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), kernel, stride=2, groups=2)
    assert_close(apt.blur_pool2d(x, 3), want)


# -- layouts and dtypes ----------------------------------------------------------------------------


def test_channels_last_memory_is_read_in_place_and_kept():
    x = torch.randn(2, 5, 9, 8).contiguous(memory_format=torch.channels_last)
    y = apt.avg_pool2d(x, 3, 2, 1)
    assert y.is_contiguous(memory_format=torch.channels_last)
    assert_close(y, F.avg_pool2d(x, 3, 2, 1))
    _, i = apt.max_pool2d(x, 3, 2, 1, return_indices=True)
    assert torch.equal(i, F.max_pool2d(x, 3, 2, 1, return_indices=True)[1])


def test_logical_channels_last_tensors():
    x = torch.randn(2, 9, 8, 3, dtype=torch.float64)
    y = apt.avg_pool(x, 3, 2, "same", count_include_pad=False, channels_last=True)
    want = avgpool.avg_pool(x.numpy(), 3, 2, "same", count_include_pad=False, channels_last=True)
    np.testing.assert_array_equal(y.numpy(), want)


def test_unbatched_and_strided_inputs():
    x = torch.randn(3, 8, 10)[:, :, ::2]
    assert_close(apt.avg_pool2d(x, 2), F.avg_pool2d(x, 2))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_low_precision_dtypes_keep_their_dtype(dtype):
    x = torch.randn(2, 3, 8, 8).to(dtype)
    y = apt.avg_pool2d(x, 3, 2, 1)
    assert y.dtype == dtype
    assert_close(y, F.avg_pool2d(x.double(), 3, 2, 1).to(dtype), dtype)


def test_integer_max_pool():
    x = torch.randint(-100, 100, (1, 2, 6, 6), dtype=torch.int32)
    assert torch.equal(apt.max_pool2d(x, 2), F.max_pool2d(x.double(), 2).to(torch.int32))


# -- refusals ------------------------------------------------------------------------------------


def test_refusals_name_the_argument():
    x = torch.randn(1, 1, 4, 4)
    with pytest.raises(AvgPoolError, match=r"pad should be at most half .* avgpool\.avg_pool takes any"):
        apt.avg_pool2d(x, 2, padding=2)
    with pytest.raises(AvgPoolError, match="stride must be >= 1"):
        apt.avg_pool(x, 2, (2, 0))
    with pytest.raises(TypeError, match=r"input must be a torch\.Tensor"):
        apt.avg_pool2d(np.ones((1, 1, 4, 4)), 2)
    with pytest.raises(AvgPoolError, match="grad_output must have the forward output's shape"):
        apt.avg_pool_backward(torch.ones(1, 1, 3, 3), (1, 1, 4, 4), 2)
    with pytest.raises(AvgPoolError, match="no window fits"):
        apt.avg_pool(x, 5)


# -- the custom ops: registration, gradients -------------------------------------------------------

X = torch.randn(2, 3, 7, 6, dtype=torch.float64)
OPS = {
    "avg": lambda t: apt.avg_pool(t, 3, 2, "same", count_include_pad=False),
    "avg_ceil": lambda t: apt.avg_pool2d(t, 3, 2, 1, ceil_mode=True),
    "avg_divisor": lambda t: apt.avg_pool2d(t, 2, 1, 1, divisor_override=3),
    "max": lambda t: apt.max_pool2d(t, 3, 2, 1, dilation=2),
    "lp_torch": lambda t: apt.lp_pool2d(t, 2, 3, 2, ceil_mode=True),
    "lp_onnx": lambda t: apt.lp_pool(t, 3, 2, 1, 1, convention="onnx"),
    "adaptive_avg": lambda t: apt.adaptive_avg_pool2d(t, (4, 4)),
    "adaptive_max": lambda t: apt.adaptive_max_pool2d(t, (3, 4)),
    "global_avg": lambda t: apt.global_avg_pool(t, keepdims=False),
    "global_max": lambda t: apt.global_max_pool(t),
    "blur": lambda t: apt.blur_pool2d(t, 3, pad_type="replicate"),
    "channels_last": lambda t: apt.avg_pool2d(t.contiguous(memory_format=torch.channels_last), 3, 2, 1),
}


@pytest.mark.parametrize("name", sorted(OPS))
def test_gradcheck_and_gradgradcheck(name):
    x = (X.abs() + 0.5 if name.startswith("lp") else X).clone().requires_grad_(True)
    fn = OPS[name]
    assert torch.autograd.gradcheck(fn, (x,))
    assert torch.autograd.gradgradcheck(fn, (x,))


def test_gradient_matches_torch_backward():
    x = torch.randn(2, 3, 9, 8, dtype=torch.float64, requires_grad=True)
    g = torch.randn(2, 3, 5, 5, dtype=torch.float64)
    (ours,) = torch.autograd.grad(apt.avg_pool2d(x, 3, 2, 1, ceil_mode=True), x, g)
    (theirs,) = torch.autograd.grad(F.avg_pool2d(x, 3, 2, 1, ceil_mode=True), x, g)
    assert_close(ours, theirs)
    g = torch.randn(2, 3, 5, 4, dtype=torch.float64)
    assert_close(apt.max_pool_backward(g, x, 3, 2, 1), torch.autograd.grad(F.max_pool2d(x, 3, 2, 1), x, g)[0])


OPCHECK = [
    ("avg_pool", (X, [3, 3], [2, 2], [1, 1, 0, 2], "", [1, 1], True, False, None, False, "onnx")),
    (
        "avg_pool_backward",
        (
            torch.randn(2, 3, 4, 3, dtype=torch.float64),
            [2, 3, 7, 6],
            [3, 3],
            [2, 2],
            [],
            "same",
            [1, 1],
            False,
            True,
            None,
            False,
            "flax",
        ),
    ),
    ("max_pool", (X, [2, 2], [1, 2], [1, 1, 1, 1], "", [2, 1], True, False, "torch", "")),
    ("lp_pool", (X.abs() + 0.5, 2.0, [2, 2], [2, 2], [0, 0, 0, 0], "", [1, 1], False, False, "torch")),
    ("adaptive_avg_pool", (X, [4, -1], False)),
    ("adaptive_max_pool", (X, [3, 3], False)),
    ("blur_pool", (X, 4, 2, "reflect", 0, 2, False)),
]


@pytest.mark.parametrize("name,args", OPCHECK, ids=[n for n, _ in OPCHECK])
def test_opcheck(name, args):
    """Schema, fake (meta) implementation, autograd registration, as torch.library checks them."""
    args = tuple(a.clone().requires_grad_(True) if isinstance(a, torch.Tensor) else a for a in args)
    torch.library.opcheck(getattr(torch.ops.avgpool, name).default, args)


def test_fake_tensor_shapes_match_real_ones():
    from torch._subclasses.fake_tensor import FakeTensorMode

    x = torch.randn(2, 3, 9, 8).contiguous(memory_format=torch.channels_last)
    real = apt.avg_pool(x, 3, 2, "same")
    with FakeTensorMode() as mode:
        fake = apt.avg_pool(mode.from_tensor(x), 3, 2, "same")
    assert fake.shape == real.shape and fake.stride() == real.stride()


def test_compile_fullgraph_of_functional_calls():
    def f(x):
        return apt.avg_pool2d(x, 3, 2, 1) + apt.max_pool(x, 3, 2, "same")

    x = torch.randn(2, 3, 8, 8)
    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    assert_close(compiled(x), f(x))
