"""One definition per op, two backends: ``avgpool.<op>(tensor)`` and ``avgpool.torch.<op>`` are
the same op on the PyTorch backend; arrays of other kinds go to NumPy's."""

import subprocess
import sys

import numpy as np
import pytest
import torch

import avgpool as ap
import avgpool.torch as apt
from avgpool._backends import backend_of, clear_plans
from avgpool._errors import TorchPoolError
from avgpool.torch._library.max import MaxReady


def test_each_array_finds_its_backend():
    assert backend_of(torch.ones(2)).name == "torch"
    assert backend_of(torch.nn.Parameter(torch.ones(2))).name == "torch"
    assert backend_of(np.ones(2)).name == "numpy"
    assert backend_of([1.0, 2.0]).name == "numpy"


def test_a_numpy_call_imports_no_front_end_even_with_torch_imported():
    code = (
        "import sys, numpy as np, torch, avgpool\n"
        "avgpool.avg_pool2d(np.ones((1, 1, 4, 4)), 2)\n"
        "avgpool.max_pool(np.ones((1, 1, 4, 4)), 2)\n"
        "assert 'avgpool.torch' not in sys.modules, sorted(m for m in sys.modules if 'avgpool' in m)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_tensor_call_is_the_torch_functional_call():
    x = torch.randn(2, 3, 9, 8, dtype=torch.float64)
    for name, args, kwargs in [
        ("avg_pool2d", (3, 2, 1), {"count_include_pad": False}),
        ("avg_pool", (2,), {"padding": "same"}),
        ("lp_pool2d", (2.0, 3, 2), {}),
        ("adaptive_max_pool2d", ((4, 3),), {"return_indices": True}),
        ("global_avg_pool", (), {"keepdims": False}),
        ("blur_pool2d", (3, 2), {"pad_type": "zero"}),
    ]:
        got, want = getattr(ap, name)(x, *args, **kwargs), getattr(apt, name)(x, *args, **kwargs)
        got, want = (got, want) if isinstance(got, tuple) else ((got,), (want,))
        for g, w in zip(got, want):
            assert torch.equal(g, w) and g.stride() == w.stride(), name


def test_tensor_errors_are_runtime_errors_whichever_way_the_op_is_called():
    x = torch.zeros(1, 1, 4, 4)
    for pool in (ap.avg_pool2d, apt.avg_pool2d):
        with pytest.raises(TorchPoolError, match="pad should be at most half"):
            pool(x, 2, padding=2)
    with pytest.raises(TorchPoolError, match="nan_policy must be"):
        ap.max_pool(x, 2, nan_policy="skip")
    with pytest.raises(TypeError, match=r"input must be a torch\.Tensor, got ndarray"):
        apt.avg_pool2d(np.zeros((1, 1, 4, 4)), 2)
    with pytest.raises(ap.AvgPoolError) as numpy_error:
        ap.avg_pool2d(np.zeros((1, 1, 4, 4)), 2, padding=2)
    assert not isinstance(numpy_error.value, RuntimeError)


@pytest.fixture
def arg_max_calls(monkeypatch):
    """The runs of the max kernels that compute indices (every path reaches them: the CPU
    kernel, or the plan a repeated call keeps), counted."""
    calls = []
    cpu, plan = MaxReady.cpu, MaxReady.plan

    def counting(self, x, return_indices=True):
        if return_indices:
            calls.append(self.args)
        return cpu(self, x, return_indices)

    def counting_plan(self, x):
        run = plan(self, x)

        def counted(array):
            calls.append(self.args)
            return run(array)

        return counted

    monkeypatch.setattr(MaxReady, "cpu", counting)
    monkeypatch.setattr(MaxReady, "plan", counting_plan)
    clear_plans()  # plans kept before the counting began would run uncounted
    return calls


@pytest.mark.parametrize("module", [ap, apt], ids=["avgpool", "avgpool.torch"])
@pytest.mark.parametrize(
    ("name", "shape", "args"),
    [
        ("max_pool1d", (2, 3, 11), (3, 2, 1)),
        ("max_pool2d", (2, 3, 12, 11), (3, 2, 1)),
        ("max_pool3d", (1, 2, 5, 6, 7), (2,)),
        ("max_pool", (2, 3, 12, 11), (3, 2, 1)),
    ],
)
def test_max_pool_without_indices_computes_no_arg_max(module, name, shape, args, arg_max_calls, caplog):
    x = torch.randn(shape)
    with caplog.at_level("DEBUG", logger="avgpool"):
        y = getattr(module, name)(x, *args)
    assert arg_max_calls == [] and "max_pool values only" in caplog.text
    torch_name = name if name != "max_pool" else "max_pool2d"
    want = getattr(torch.nn.functional, torch_name)(x, *args)
    assert torch.equal(y, want) and y.stride() == want.stride()

    y, index = getattr(module, name)(x, *args, return_indices=True)
    assert len(arg_max_calls) == 1
    want, want_index = getattr(torch.nn.functional, torch_name)(x, *args, return_indices=True)
    assert torch.equal(y, want) and torch.equal(index, want_index)


def test_channels_last_max_pool_without_indices_keeps_the_layout_and_skips_the_arg_max(arg_max_calls):
    x = torch.randn(2, 3, 12, 11).contiguous(memory_format=torch.channels_last)
    y = ap.max_pool2d(x, 3, 2, 1)
    want = torch.nn.functional.max_pool2d(x, 3, 2, 1)
    assert arg_max_calls == [] and torch.equal(y, want) and y.stride() == want.stride()


def test_max_pool_with_a_gradient_still_computes_the_arg_max(arg_max_calls):
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    ap.max_pool2d(x, 2).sum().backward()
    assert len(arg_max_calls) == 1 and x.grad.sum() == 2 * 3 * 4 * 4
