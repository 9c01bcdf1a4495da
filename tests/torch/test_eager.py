"""The eager path (`avgpool.torch._library.call`): plain CPU calls skip the dispatcher and get
the very same outputs, strides and gradients (double backward included) as through
``torch.ops.avgpool``; everywhere else (compile, trace, fake tensors, modes, vmap, the
profiler, other tensor types) the dispatcher runs and sees the custom op."""

import pytest
import torch

import avgpool.nn as apnn
from avgpool.torch._library import call, needs_dispatcher

X = torch.randn(2, 3, 9, 8, dtype=torch.float64)
G = torch.randn(2, 3, 4, 3, dtype=torch.float64)
CL = X.movedim(1, -1).contiguous()  # channels-last logical layout
CL_MEMORY = X.contiguous(memory_format=torch.channels_last)
SAME = ([3, 3], [2, 2], [], "same", [1, 1], False, True, None, False, "flax")
NO_PADS = [0, 0, 0, 0]

#: (op, inputs): every op with its eager path, on inputs that exercise their less common
#: arguments (explicit pads, 'same', dilation, ceil mode, a divisor override, layouts, dtypes).
CALLS = [
    ("avg_pool", (X, [3, 3], [2, 2], [1, 1, 0, 2], "", [1, 1], True, False, None, False, "onnx")),
    ("avg_pool", (X, [3, 2], [1, 2], [], "same", [1, 1], False, False, 5, False, "torch")),
    ("avg_pool", (CL, [], [1, 1], NO_PADS, "", [1, 1], False, True, None, True, "torch")),
    (
        "avg_pool",
        (X.to(torch.bfloat16), [2, 2], [2, 2], NO_PADS, "", [1, 1], True, True, None, False, "torch"),
    ),
    ("avg_pool_backward", (G, [2, 3, 7, 6], *SAME)),
    ("max_pool", (X, [2, 2], [1, 2], [1, 1, 1, 1], "", [2, 1], True, False, "torch", "")),
    ("max_pool", (CL_MEMORY, [3, 3], [2, 2], [1, 1, 1, 1], "", [1, 1], False, False, "torch", "propagate")),
    ("lp_pool", (X.abs() + 0.5, 2.0, [2, 2], [2, 2], NO_PADS, "", [1, 1], False, False, "torch")),
    ("lp_pool", (X, 3.0, [2, 3], [1, 1], NO_PADS, "", [1, 1], False, False, "onnx")),
    ("adaptive_avg_pool", (X, [4, -1], False)),
    ("adaptive_max_pool", (X, [3, 3], False)),
    ("blur_pool", (X, 4, 2, "reflect", 0, 2, False)),
    ("blur_pool", (X[0], 3, 1, "zero", 1, 2, False)),
]


def _first(y):
    return y[0] if isinstance(y, tuple) else y


_BITS = {
    torch.float64: torch.int64,
    torch.float32: torch.int32,
    torch.float16: torch.int16,
    torch.bfloat16: torch.int16,
}


def _same(a: torch.Tensor | None, b: torch.Tensor | None) -> None:
    """Bitwise equal values (NaN and signed zeros included), same dtype, shape and strides."""
    if a is None or b is None:
        assert a is None and b is None
        return
    assert a.dtype == b.dtype and a.shape == b.shape and a.stride() == b.stride()
    bits = _BITS.get(a.dtype)
    assert torch.equal(a.view(bits), b.view(bits)) if bits else torch.equal(a, b)


def _grads(run, args):
    """Output, input gradient, and the gradients of that gradient w.r.t. the input and the
    output gradient (double backward), of one op call."""
    x = args[0].detach().clone().requires_grad_(True)
    y = run(x, *args[1:])
    out = _first(y)
    g = torch.linspace(-1.0, 1.0, out.numel(), dtype=out.dtype).reshape(out.shape).requires_grad_(True)
    (dx,) = torch.autograd.grad(out, x, g, create_graph=True)
    v = torch.linspace(0.5, 1.5, dx.numel(), dtype=dx.dtype).reshape(dx.shape)
    ddx, ddg = torch.autograd.grad(dx, (x, g), v, allow_unused=True)
    return y, dx, ddx, ddg


@pytest.mark.parametrize("name,args", CALLS, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CALLS)])
def test_eager_path_gives_what_the_dispatcher_gives(name, args):
    eager, dispatched = getattr(call, name), getattr(torch.ops.avgpool, name)
    with torch.no_grad():
        want, got = dispatched(*args), eager(*args)
    for a, b in zip(got if isinstance(got, tuple) else (got,), want if isinstance(want, tuple) else (want,)):
        _same(a, b)
    if name.endswith("_backward"):
        return
    got, want = _grads(eager, args), _grads(dispatched, args)
    assert type(_first(got[0]).grad_fn).__name__ == f"EagerFor_avgpool_{name}Backward"
    for a, b in zip((_first(got[0]), *got[1:]), (_first(want[0]), *want[1:])):
        _same(a, b)


def test_backward_ops_differentiate_on_the_eager_path():
    g = G.clone().requires_grad_(True)
    for run in (call.avg_pool_backward, torch.ops.avgpool.avg_pool_backward):
        assert torch.autograd.gradcheck(lambda t, run=run: run(t, [2, 3, 7, 6], *SAME), (g,))


def test_a_plain_cpu_tensor_skips_the_dispatcher():
    assert not needs_dispatcher(torch.ones(2, 3))
    assert not needs_dispatcher(torch.ones(2, 3, requires_grad=True))
    with torch.inference_mode():
        assert not needs_dispatcher(torch.ones(2, 3))


# torch deprecates its TorchScript tracer, but torch.onnx's TorchScript exporter still traces:
# under it, the custom op must still reach the dispatcher
@pytest.mark.filterwarnings("ignore:`torch.jit.trace` is deprecated:DeprecationWarning")
def test_everything_else_goes_through_the_dispatcher():
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.fx.experimental.proxy_tensor import make_fx

    x = torch.ones(1, 2, 4, 4)
    assert needs_dispatcher(torch.nn.Parameter(x))  # a subclass
    assert needs_dispatcher(x.to("meta"))  # another device
    with FakeTensorMode() as mode:
        assert needs_dispatcher(mode.from_tensor(x)) and needs_dispatcher(x)
    with torch.device("cpu"):  # a function mode
        assert needs_dispatcher(x)
    with torch.profiler.profile():
        assert needs_dispatcher(x)
    seen = []
    make_fx(lambda t: seen.append(needs_dispatcher(t)) or t)(x)
    torch.func.vmap(lambda t: seen.append(needs_dispatcher(t)) or t)(x)
    torch.jit.trace(lambda t: seen.append(needs_dispatcher(t)) or t * 1, (x,), check_trace=False)
    assert seen == [True, True, True]


def test_graphs_exports_and_profiles_still_show_the_custom_op():
    pool = apnn.AvgPool2d(2)
    x = torch.randn(1, 2, 4, 4)
    graphs = []

    def backend(gm, inputs):
        graphs.append(str(gm.graph))
        return gm

    torch.compile(pool, backend=backend, fullgraph=True)(x)
    assert "avgpool.avg_pool" in graphs[0]
    assert "torch.ops.avgpool.avg_pool.default" in str(torch.export.export(pool, (x,)).graph)
    with torch.profiler.profile() as prof:
        pool(x)
    assert "avgpool::avg_pool" in {e.key for e in prof.key_averages()}


def test_fake_and_meta_tensors_get_the_fake_implementation():
    from torch._subclasses.fake_tensor import FakeTensorMode

    x = torch.randn(2, 3, 8, 8).contiguous(memory_format=torch.channels_last)
    real = apnn.MaxPool2d(3, 2, 1)(x)
    with FakeTensorMode() as mode:
        fake = apnn.MaxPool2d(3, 2, 1)(mode.from_tensor(x))
    meta = apnn.MaxPool2d(3, 2, 1)(x.to("meta"))
    assert fake.shape == meta.shape == real.shape and fake.stride() == meta.stride() == real.stride()


@pytest.mark.parametrize(
    "args", [args for op, args in CALLS if op == "max_pool"], ids=["dilated", "cl-memory"]
)
def test_max_values_without_a_gradient_skip_the_arg_max(args, caplog):
    """Inference (no gradient, plain eager CPU tensor) runs the values-only kernels: the same
    bits and strides as the op's values. With a gradient, the op runs and backward works."""
    with caplog.at_level("DEBUG", logger="avgpool"):
        with torch.no_grad():
            values = call.max_pool_values(*args)
    assert "max_pool values only" in caplog.text
    _same(values, torch.ops.avgpool.max_pool(*args)[0])

    caplog.clear()
    x = args[0].detach().requires_grad_()
    with caplog.at_level("DEBUG", logger="avgpool"):
        y = call.max_pool_values(x, *args[1:])
    assert "max_pool values only" not in caplog.text
    y.sum().backward()
    expected = torch.ops.avgpool.max_pool(args[0].detach().requires_grad_(), *args[1:])[0]
    _same(y.detach(), expected.detach())
    assert x.grad is not None and x.grad.sum() == y.numel()


def test_max_pool_modules_and_functions_take_the_values_path_at_inference(caplog):
    import avgpool.torch as aptorch

    x = torch.randn(2, 3, 12, 11)
    with caplog.at_level("DEBUG", logger="avgpool"), torch.no_grad():
        y = apnn.MaxPool2d(3, 2, 1)(x)
        f = aptorch.max_pool(x, 3, 2, 1)
        g = aptorch.global_max_pool(x)
        yi, index = apnn.MaxPool2d(3, 2, 1, return_indices=True)(x)
    assert caplog.text.count("max_pool values only") == 3
    expected, expected_index = torch.nn.functional.max_pool2d(x, 3, 2, 1, return_indices=True)
    for got in (y, f, yi):
        assert torch.equal(got, expected)
    assert torch.equal(index, expected_index)
    assert torch.equal(g, x.amax(dim=(2, 3), keepdim=True))
