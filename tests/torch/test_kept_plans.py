"""Kept plans: a repeated plain eager call (a contiguous CPU tensor, no mode, no debug log) on a
shape its Ready has run before is a lookup, the kernel and ``torch.from_numpy``. Whatever
changes after such a call (the shape, dtype, memory layout, gradient mode, backend, a mode or
trace, the debug level, `clear_plans`) must give what the full path gives, errors included."""

import numpy as np
import pytest
import torch

import avgpool
import avgpool.nn as apnn
import avgpool.torch as apt
from avgpool import _backends
from avgpool import reference as ref
from avgpool._backends import NUMPY
from avgpool._cpu_calls import Planned
from avgpool._errors import TorchPoolError
from avgpool.torch._library._eager import Ready
from avgpool.window import Window
from tests.torch.eager_checks import Seen, flat, same

X = torch.randn(2, 3, 8, 8)

#: Each module beside what computes the same in torch (None: the module's own dispatched call).
MODULES = {
    "avg": (lambda: apnn.AvgPool2d(2), lambda: torch.nn.AvgPool2d(2)),
    "avg-padded": (lambda: apnn.AvgPool2d(3, 2, 1), lambda: torch.nn.AvgPool2d(3, 2, 1)),
    "max": (lambda: apnn.MaxPool2d(2), lambda: torch.nn.MaxPool2d(2)),
    "max-indices": (
        lambda: apnn.MaxPool2d(3, 2, 1, return_indices=True),
        lambda: torch.nn.MaxPool2d(3, 2, 1, return_indices=True),
    ),
    "adaptive-avg": (lambda: apnn.AdaptiveAvgPool2d(2), lambda: torch.nn.AdaptiveAvgPool2d(2)),
    "adaptive-avg-uneven": (lambda: apnn.AdaptiveAvgPool2d(3), lambda: torch.nn.AdaptiveAvgPool2d(3)),
    "adaptive-max": (
        lambda: apnn.AdaptiveMaxPool2d(3, return_indices=True),
        lambda: torch.nn.AdaptiveMaxPool2d(3, return_indices=True),
    ),
    "global-avg": (lambda: apnn.GlobalAvgPool(), lambda: torch.nn.AdaptiveAvgPool2d(1)),
    "global-max": (lambda: apnn.GlobalMaxPool(), lambda: torch.nn.AdaptiveMaxPool2d(1)),
    "lp": (lambda: apnn.LPPool2d(2, 2), lambda: torch.nn.LPPool2d(2, 2)),
    "blur": (lambda: apnn.BlurPool2d(3), None),
}


def _dispatched(m, x):
    with Seen() as seen:
        y = m(x)
    assert any(op.startswith("avgpool.") for op in seen.ops), seen.ops
    return y


def _kept_keys() -> list:
    return [k for k in _backends._plans if isinstance(k[0], Ready)]


pytestmark = pytest.mark.usefixtures("fresh_plans")


@pytest.fixture
def no_full_path(monkeypatch):
    """After this, a call that reaches a Ready's full path fails: only kept plans run."""

    def refuse(self, x):
        raise AssertionError(f"{type(self).__name__} took the full path")

    def forbid():
        monkeypatch.setattr(Ready, "run", refuse)
        for cls in {type(r) for r in (k[0] for k in _kept_keys())}:
            if "run" in vars(cls):
                monkeypatch.setattr(cls, "run", refuse)

    return forbid


@pytest.mark.parametrize("module", MODULES)
def test_a_repeated_call_runs_the_kept_plan_and_gives_the_first_calls_result(module, no_full_path):
    make, twin = MODULES[module]
    m = make()
    with torch.no_grad():
        first = m(X)
        assert len(_kept_keys()) == 1
        no_full_path()
        again = m(X)
        want = twin()(X) if twin is not None else None
    for a, b in zip(flat(again), flat(first), strict=True):
        same(a, b)
    if want is not None:
        for a, b in zip(flat(again), flat(want), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
            assert a.stride() == b.stride()


#: Inputs that differ from X in one way each: none may run X's kept plan.
CHANGED = {
    "shape": torch.randn(3, 3, 12, 10),
    "unbatched": X[0],
    "float64": X.double(),
    "float16": X.half(),
    "bfloat16": X.bfloat16(),
    "cl-memory": X.contiguous(memory_format=torch.channels_last),
    "strided": torch.randn(2, 3, 8, 16)[..., ::2],
}


@pytest.mark.parametrize("module", MODULES)
def test_a_kept_plan_serves_its_shape_and_dtype_only(module):
    m = MODULES[module][0]()
    with torch.no_grad():
        m(X)
        for x in CHANGED.values():
            got, want = m(x), _dispatched(m, x)
            for a, b in zip(flat(got), flat(want), strict=True):
                same(a, b)
            got, want = m(X), _dispatched(m, X)  # and X's plan still serves X
            for a, b in zip(flat(got), flat(want), strict=True):
                same(a, b)


@pytest.mark.parametrize(
    "make,bad,message",
    [
        (lambda: apnn.AvgPool2d(2), torch.randn(1, 0, 8, 8), "non-empty 3D or 4D"),
        (lambda: apnn.AvgPool2d(2), torch.randn(8, 8), "non-empty 3D or 4D"),
        (lambda: apnn.MaxPool2d(2), torch.randn(2, 3, 4, 8, 8), "Expected 3D or 4D"),
        (lambda: apnn.LPPool2d(2, 2), torch.randn(1, 3, 0, 8), "non-empty 3D or 4D"),
        (lambda: apnn.AdaptiveAvgPool2d(2), torch.randn(8), "Input dimension should be at least 3"),
        (lambda: apnn.AdaptiveMaxPool2d(2), torch.randn(1, 0, 8, 8), "non-zero size for non-batch"),
        (lambda: apnn.GlobalAvgPool(), torch.randn(8), "must have 4 dimensions"),
    ],
)
def test_after_a_kept_call_the_input_checks_still_refuse(make, bad, message):
    m = make()
    with torch.no_grad():
        m(X)
        m(X)
        with pytest.raises(TorchPoolError, match=message) as kept:
            m(bad)
    with pytest.raises(TorchPoolError) as dispatched:
        _dispatched(m, bad)
    assert str(kept.value) == str(dispatched.value)


@pytest.mark.parametrize("module", ["avg-padded", "max-indices", "adaptive-avg"])
def test_a_kept_plan_reads_a_tensor_whose_data_is_not_aligned(module):
    """A kept plan calls the kernel's machine code for aligned arrays straight; a float32
    tensor over a buffer at an odd byte offset must still read right."""
    n = X.numel()
    x = torch.frombuffer(bytearray(4 * n + 1), dtype=torch.float32, offset=1, count=n).reshape(X.shape)
    x.copy_(X)
    assert x.data_ptr() % 4 and x.is_contiguous()
    m = MODULES[module][0]()
    with torch.no_grad():
        want = flat(m(X))
        m(X)
        for _ in range(2):
            for a, b in zip(flat(m(x)), want, strict=True):
                same(a, b)


def test_a_plan_kept_without_the_modules_check_does_not_pass_it():
    """avgpool.torch's adaptive max pools integers; torch.nn's module refuses them, plan or not."""
    x = torch.arange(2 * 3 * 8 * 8).reshape(2, 3, 8, 8)
    for _ in range(2):
        assert torch.equal(
            apt.adaptive_max_pool(x, 2), torch.nn.functional.adaptive_max_pool2d(x.double(), 2).long()
        )
    m = apnn.AdaptiveMaxPool2d(2)
    for _ in range(2):
        with pytest.raises(TorchPoolError, match="not implemented for 'Long'"):
            m(x)


@pytest.mark.parametrize("module", ["avg", "max-indices", "adaptive-avg", "global-avg", "lp", "blur"])
def test_gradients_and_inference_mode_after_a_kept_call(module):
    make, twin = MODULES[module]
    m = make()
    with torch.no_grad():
        m(X)
    grads = []
    for _ in range(3):  # the first call keeps its plans (forward and backward), the others run them
        x = X.clone().requires_grad_(True)
        out = flat(m(x))[0]
        assert type(out.grad_fn).__name__.startswith("EagerFor_avgpool_")
        g = torch.linspace(-1.0, 1.0, out.numel()).reshape(out.shape)
        grads.append(torch.autograd.grad(out, x, g)[0])
        if twin is not None:
            x2 = X.clone().requires_grad_(True)
            out2 = flat(twin()(x2))[0]
            torch.testing.assert_close(grads[-1], torch.autograd.grad(out2, x2, g)[0])
    for a in grads[1:]:
        same(a, grads[0])
    with torch.no_grad():  # an input that requires grad, but no gradient recorded
        out = flat(m(X.clone().requires_grad_(True)))[0]
        assert out.grad_fn is None and not out.requires_grad
    with torch.inference_mode():  # a tensor made in inference mode, as torch.nn's modules give
        first, again = flat(m(X))[0], flat(m(X))[0]
        assert first.is_inference() and again.is_inference()
    same(again, flat(m(X))[0])


def test_double_backward_after_kept_calls():
    m = apnn.AvgPool2d(3, 2, 1)
    for _ in range(3):
        x = X.double().requires_grad_(True)
        out = m(x)
        g = torch.randn_like(out, requires_grad=True)
        (dx,) = torch.autograd.grad(out, x, g, create_graph=True)
        (dg,) = torch.autograd.grad(dx.sum(), g)
        assert torch.allclose(dg, m(torch.ones_like(x)))


def test_a_kept_plan_follows_the_backend(monkeypatch):
    m = apnn.AvgPool2d(3, 2, 1)
    with torch.no_grad():
        want = m(X)
        m(X)
        calls = []
        reference = ref.avg_pool

        def counting(*args, **kwargs):
            calls.append(1)
            return reference(*args, **kwargs)

        monkeypatch.setattr(ref, "avg_pool", counting)
        with avgpool.use_backend("reference"):
            got = m(X)
            m(X)
        assert len(calls) == 2
        torch.testing.assert_close(got, want)
        m(X)  # numba again: its kept plan
        assert len(calls) == 2


def test_clear_plans_forgets_the_kept_calls():
    m = apnn.MaxPool2d(2)
    with torch.no_grad():
        want = m(X)
        assert _kept_keys()
        _backends.clear_plans()
        assert not _kept_keys()
        same(m(X), want)
        assert _kept_keys()


@pytest.mark.parametrize("module", ["avg", "max", "adaptive-avg", "global-avg", "blur"])
def test_traces_modes_and_the_profiler_after_a_kept_call_still_reach_the_custom_op(module):
    from torch.fx.experimental.proxy_tensor import make_fx

    m = MODULES[module][0]()
    with torch.no_grad():
        want = m(X)
        m(X)
        same(_dispatched(m, X), want)
        assert "avgpool." in str(make_fx(m)(X).graph)
        with torch.profiler.profile() as prof:
            m(X)
        assert any(e.key.startswith("avgpool::") for e in prof.key_averages())
        stacked = torch.func.vmap(m)(X[:, None])
        assert torch.equal(stacked[:, 0], want)


def test_the_debug_log_after_a_kept_call_names_the_path(caplog):
    m = apnn.AvgPool2d(2)
    with torch.no_grad():
        m(X)
        m(X)
        with caplog.at_level("DEBUG", logger="avgpool"):
            m(X)
    assert "avg_pool without the dispatcher" in caplog.text
    assert "avg_pool: " in caplog.text and "serial" in caplog.text


# -- Planned.bare: the NumPy call a kept plan runs ------------------------------------------


def _planned(shape, dtype, window, op="avg"):
    x = np.random.default_rng(0).standard_normal(shape).astype(dtype)
    planned = NUMPY.planned_avg(x, window) if op == "avg" else NUMPY.planned_max(x, window, None, True)
    assert isinstance(planned, Planned)
    return planned, x


@pytest.mark.parametrize(
    "shape,dtype,op",
    [
        ((2, 3, 8, 8), np.float32, "avg"),
        ((2, 3, 8, 8), np.float64, "max"),  # values and indices
        ((2, 3, 8, 8), np.float16, "avg"),  # through float32: the planned call itself
        ((1, 4, 512, 512), np.float32, "avg"),  # a result the buffer pool lends
    ],
)
def test_bare_calls_give_the_planned_calls_results(shape, dtype, op, caplog):
    planned, x = _planned(shape, dtype, Window(2, ndim=2), op)
    want = planned(x)
    bare = planned.bare(lambda a: ("wrapped", a))
    with caplog.at_level("DEBUG", logger="avgpool"):
        got = bare(x)
    pairs = list(zip(got, want, strict=True)) if planned.index else [(got, want)]
    for (tag, a), b in pairs:
        assert tag == "wrapped" and a.dtype == b.dtype and a.flags.c_contiguous
        np.testing.assert_array_equal(a, b)
    if planned.small and planned.work == planned.dtype:
        assert caplog.text == ""  # the caller logs, or checked the level


def test_an_inference_max_pool_keeps_its_values_kernel_call():
    """Without a gradient a max pool runs the values-only kernels; its kept plan is that
    kernel's bare call (no (values, None) pair to unpack), with the first call's values."""
    _backends.clear_plans()
    pool = apnn.MaxPool2d(2)
    x = torch.randn(1, 4, 8, 8)
    with torch.no_grad():
        first = pool(x)
        again = pool(x)
    kept = [plan for key, plan in _backends._plans.items() if key[0] is pool._ready]
    assert len(kept) == 1 and kept[0].__qualname__.startswith("Planned.bare")
    torch.testing.assert_close(again, first, rtol=0, atol=0)
    torch.testing.assert_close(first, torch.nn.functional.max_pool2d(x, 2), rtol=0, atol=0)
