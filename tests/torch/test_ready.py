"""avgpool.nn's ready calls: each module builds its op's arguments and Window once and calls the
CPU kernel directly on a plain eager tensor. That path must give what the dispatcher gives (the
same bits, strides, gradients and errors), step aside wherever the dispatcher must run, and
follow torch.nn's attributes when a user assigns them after construction."""

import pytest
import torch

import avgpool.nn as apnn
from avgpool._errors import TorchPoolError
from avgpool.conventions import CONVENTIONS
from avgpool.torch._library import call, window_args
from tests.torch.conftest import assert_close
from tests.torch.eager_checks import Seen, flat, same

X = torch.randn(2, 3, 9, 8, dtype=torch.float64)

#: Inputs in every form the kernels see: contiguous, channels_last memory, strided, unbatched,
#: and the dtypes with their own handling (float16 as it is, bfloat16 through float32).
INPUTS = {
    "contiguous": X,
    "cl-memory": X.contiguous(memory_format=torch.channels_last),
    "strided": X[..., ::2],
    "unbatched": X[0],
    "float32": X.float(),
    "float16": X.half(),
    "bfloat16": X.bfloat16(),
}

MODULES = {
    "avg": lambda: apnn.AvgPool2d(3, 2, 1),
    "avg-nocip-ceil": lambda: apnn.AvgPool2d(3, 2, 1, ceil_mode=True, count_include_pad=False),
    "avg-tf-same": lambda: apnn.AvgPool2d(3, 2, "same", convention="tensorflow"),
    "max": lambda: apnn.MaxPool2d(3, 2, 1),
    "max-indices": lambda: apnn.MaxPool2d(2, return_indices=True, ceil_mode=True),
    "global-avg": lambda: apnn.GlobalAvgPool(),
    "global-max": lambda: apnn.GlobalMaxPool(keepdims=False),
    "adaptive-avg": lambda: apnn.AdaptiveAvgPool2d((3, None)),
    "adaptive-max": lambda: apnn.AdaptiveMaxPool2d(2, return_indices=True),
    "blur": lambda: apnn.BlurPool2d(3, filt_size=3),
    "lp": lambda: apnn.LPPool2d(2, 3, 2),
    "lp-onnx": lambda: apnn.LPPool2d(3, 2, convention="onnx"),
}


def _dispatched(fn, *args):
    with Seen() as seen:
        y = fn(*args)
    assert any(op.startswith("avgpool.") for op in seen.ops), seen.ops
    return y


@pytest.mark.parametrize("module", MODULES)
@pytest.mark.parametrize("form", INPUTS)
def test_ready_call_gives_the_dispatchers_outputs(module, form):
    m, x = MODULES[module](), INPUTS[form]
    with torch.no_grad():
        got, want = m(x), _dispatched(m, x)
    for a, b in zip(flat(got), flat(want), strict=True):
        same(a, b)


def _grads(m, x):
    x = x.detach().clone().requires_grad_(True)
    out = flat(m(x))[0]
    g = torch.linspace(-1.0, 1.0, out.numel(), dtype=out.dtype).reshape(out.shape).requires_grad_(True)
    (dx,) = torch.autograd.grad(out, x, g, create_graph=True)
    v = torch.linspace(0.5, 1.5, dx.numel(), dtype=dx.dtype).reshape(dx.shape)
    ddx, ddg = torch.autograd.grad(dx, (x, g), v, allow_unused=True)
    return out, dx, ddx, ddg


@pytest.mark.parametrize("module", MODULES)
@pytest.mark.parametrize("form", ["contiguous", "cl-memory", "strided"])
def test_ready_call_gives_the_dispatchers_gradients(module, form):
    m, x = MODULES[module](), INPUTS[form]
    got = _grads(m, x)
    with Seen():
        want = _grads(m, x)
    node = got[0].grad_fn
    if module == "global-max":  # keepdims=False: a view of the op's output
        node = node.next_functions[0][0]
    assert type(node).__name__.startswith("EagerFor_avgpool_")
    for a, b in zip(got, want, strict=True):
        if a is None or b is None:
            assert a is None and b is None
        else:
            same(a.detach(), b.detach())


@pytest.mark.parametrize(
    "make,x,error",
    [
        (lambda: apnn.AvgPool2d(5, convention="onnx"), torch.ones(1, 1, 3, 3), TorchPoolError),
        (lambda: apnn.AvgPool2d(2), torch.ones(1, 1, 4, 4, dtype=torch.int32), TypeError),
        (lambda: apnn.AdaptiveAvgPool2d(2), torch.ones(1, 1, 4, 4, dtype=torch.int64), TypeError),
        (lambda: apnn.BlurPool2d(filt_size=5), torch.ones(1, 1, 2, 2), TorchPoolError),
        (lambda: apnn.MaxPool2d(4, convention="onnx"), torch.ones(1, 1, 2, 2), TorchPoolError),
    ],
)
def test_ready_call_raises_the_dispatchers_errors(make, x, error):
    m = make()
    with pytest.raises(error) as eager:
        m(x)
    with pytest.raises(error) as dispatched:
        _dispatched(m, x)
    assert str(eager.value) == str(dispatched.value) and str(eager.value)


# -- attributes assigned after construction --------------------------------------------------


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
def test_assigned_geometry_takes_effect_after_a_call():
    x = torch.randn(2, 3, 11, 10)
    avg = apnn.AvgPool2d(2)
    avg(x)
    avg.kernel_size, avg.stride, avg.padding = 3, 2, 1
    avg.ceil_mode, avg.count_include_pad, avg.divisor_override = True, False, 5
    want = torch.nn.functional.avg_pool2d(x, 3, 2, 1, True, False, 5)
    assert_close(avg(x), want)
    assert avg.window.kernel_size == (3, 3) and avg.window.divisor_override == 5
    assert torch.equal(torch.jit.script(avg)(x), avg(x))  # the scripted fields follow too

    mx = apnn.MaxPool2d(2)
    mx(x)
    mx.kernel_size, mx.stride, mx.padding, mx.dilation = 3, 1, 1, 2
    assert torch.equal(mx(x), torch.nn.functional.max_pool2d(x, 3, 1, 1, 2))
    mx.return_indices = True
    assert torch.equal(mx(x)[1], torch.nn.functional.max_pool2d(x, 3, 1, 1, 2, return_indices=True)[1])

    lp = apnn.LPPool2d(2, 2)
    lp(x)
    lp.norm_type, lp.kernel_size = 3, 3
    assert_close(lp(x), torch.nn.functional.lp_pool2d(x, 3, 3))

    adaptive = apnn.AdaptiveAvgPool2d(1)
    adaptive(x)
    adaptive.output_size = (2, None)
    assert_close(adaptive(x), torch.nn.functional.adaptive_avg_pool2d(x, (2, None)))

    blur = apnn.BlurPool2d(3)
    blur(x)
    blur.stride = 1
    assert torch.equal(blur(x), apnn.BlurPool2d(3, stride=1)(x))

    pool = apnn.GlobalAvgPool()
    pool(x)
    pool.ndim = 1
    assert_close(pool(x[0]), x[0].mean(-1, keepdim=True))


def test_a_refused_assignment_raises_at_the_call_and_a_valid_one_recovers():
    x = torch.randn(1, 2, 6, 6)
    avg = apnn.AvgPool2d(2)
    avg.kernel_size = 0  # torch.nn raises on the call, not on the assignment
    with pytest.raises(TorchPoolError, match="kernel_size"):
        avg(x)
    avg.kernel_size = 3
    assert_close(avg(x), torch.nn.functional.avg_pool2d(x, 3, 2))

    adaptive = apnn.AdaptiveMaxPool2d(2)
    adaptive.output_size = (2, 2, 2)
    with pytest.raises(TorchPoolError, match="output_size"):
        adaptive(x)
    adaptive.output_size = 3
    assert torch.equal(adaptive(x), torch.nn.functional.adaptive_max_pool2d(x, 3))


@pytest.mark.parametrize("convention", CONVENTIONS)
@pytest.mark.parametrize(
    "make",
    [
        lambda c: apnn.AvgPool2d(3, convention=c),
        lambda c: apnn.AvgPool2d((3, 2), 2, padding="same" if c != "torch" else 1, convention=c),
        lambda c: apnn.AvgPool1d(3, 1, convention=c),
        lambda c: apnn.AvgPool3d(2, convention=c),
        lambda c: apnn.MaxPool2d(3, 2, convention=c),
        lambda c: apnn.MaxPool1d(2, convention=c),
        lambda c: apnn.GlobalMaxPool(3, convention=c),
    ],
)
def test_the_attributes_rebuild_the_constructed_window(make, convention):
    try:
        m = make(convention)
    except TorchPoolError:
        pytest.skip("a geometry this convention refuses")
    assert m._attribute_window() == m.window


# -- where the dispatcher must run -----------------------------------------------------------


@pytest.mark.parametrize("module", MODULES)
def test_traces_and_transforms_still_reach_the_custom_op(module):
    from torch.fx.experimental.proxy_tensor import make_fx

    m, x = MODULES[module](), X.float()
    graph = str(make_fx(m)(x).graph)
    assert "avgpool." in graph
    stacked = torch.func.vmap(m)(x[:, None])
    for i in range(x.shape[0]):
        for a, b in zip(flat(stacked), flat(m(x[i : i + 1])), strict=True):
            assert torch.equal(a[i], b)
    with torch.profiler.profile() as prof:
        m(x)
    assert any(e.key.startswith("avgpool::") for e in prof.key_averages())


def test_the_functional_api_and_call_take_the_ready_path_too(caplog):
    import avgpool.torch as apt

    pool = apnn.AvgPool2d(3, 2, 1)
    x = torch.randn(2, 3, 9, 8)
    with caplog.at_level("DEBUG", logger="avgpool"), torch.no_grad():
        a = apt.avg_pool2d(x, 3, 2, 1)
        b = call.avg_pool(x, *window_args(pool.window))
        c = pool(x)
    assert caplog.text.count("avg_pool without the dispatcher") == 3
    assert torch.equal(a, c) and torch.equal(b, c)
    assert_close(c, torch.nn.functional.avg_pool2d(x, 3, 2, 1))


@pytest.mark.parametrize("module", MODULES)
def test_copied_and_pickled_modules_keep_computing_the_same(module):
    import copy
    import io
    import pickle

    m, x = MODULES[module](), X.float()
    want = flat(m(x))
    buffer = io.BytesIO()
    torch.save(m, buffer)
    buffer.seek(0)
    copies = (copy.deepcopy(m), pickle.loads(pickle.dumps(m)), torch.load(buffer, weights_only=False))
    for twin in copies:
        for a, b in zip(flat(twin(x)), want, strict=True):
            same(a, b)


def test_kept_pytorch_checks_still_refuse_what_they_refused():
    """PyTorch's argument checks keep the sets that passed; a set that differs only in type,
    or in the input's shape, is checked again."""
    import avgpool.torch as apt

    x = torch.randn(1, 2, 8, 8)
    apt.avg_pool2d(x, 3, 1, 1)
    for _ in range(2):
        with pytest.raises(TorchPoolError, match="pad should be at most half"):
            apt.avg_pool2d(x, 1, 1, 1)
        with pytest.raises(TorchPoolError, match="Output size is too small"):
            apt.avg_pool2d(x[..., :2, :2], 3, 1, 0)
    with pytest.raises(TypeError):
        apt.max_pool2d(x, True, padding=1)  # True is no kernel size, though True == 1
    with pytest.raises(TorchPoolError, match="pad should be at most half"):
        apt.max_pool2d(x, 1, padding=1)


# torch.compile's first use imports code that calls torch's deprecated TorchScript decorators
@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
@pytest.mark.parametrize("module", MODULES)
def test_modules_compile_with_dynamic_shapes_and_follow_assigned_attributes(module):
    torch._dynamo.reset()  # each case compiles afresh, within the recompile limit
    m = MODULES[module]()
    compiled = torch.compile(m, fullgraph=True, dynamic=True)
    for x in (X.float(), torch.randn(3, 3, 12, 10)):
        for a, b in zip(flat(compiled(x)), flat(m(x)), strict=True):
            torch.testing.assert_close(a, b)
    if hasattr(m, "kernel_size"):
        m.kernel_size = 2
        x = torch.randn(3, 3, 12, 10)
        for a, b in zip(flat(compiled(x)), flat(m(x)), strict=True):
            torch.testing.assert_close(a, b)
