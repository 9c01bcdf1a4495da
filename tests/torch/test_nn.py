"""avgpool.nn: each module against its torch.nn namesake (values, repr, state dict, script),
conventions, from_module / swap_pooling, and gradcheck + gradgradcheck for every module."""

import numpy as np
import pytest
import torch
from torch import nn

import avgpool
import avgpool.nn as apnn
from avgpool import AvgPoolError, Window
from tests.torch.conftest import assert_close

# (avgpool module, torch.nn twin, input shape)
TWINS = [
    (apnn.AvgPool1d(3, 2, 1, ceil_mode=True), nn.AvgPool1d(3, 2, 1, ceil_mode=True), (2, 3, 9)),
    (
        apnn.AvgPool2d(3, 2, 1, count_include_pad=False),
        nn.AvgPool2d(3, 2, 1, count_include_pad=False),
        (2, 3, 9, 8),
    ),
    (apnn.AvgPool2d((2, 3), divisor_override=2), nn.AvgPool2d((2, 3), divisor_override=2), (2, 3, 8, 9)),
    (apnn.AvgPool3d(2, 1, 1), nn.AvgPool3d(2, 1, 1), (1, 2, 4, 5, 4)),
    (apnn.MaxPool1d(3, 1, 1, dilation=2), nn.MaxPool1d(3, 1, 1, dilation=2), (2, 3, 9)),
    (apnn.MaxPool2d(3, 2, 1, ceil_mode=True), nn.MaxPool2d(3, 2, 1, ceil_mode=True), (2, 3, 9, 8)),
    (apnn.MaxPool3d(2, return_indices=True), nn.MaxPool3d(2, return_indices=True), (1, 2, 4, 5, 4)),
    (apnn.LPPool1d(2, 3, 2), nn.LPPool1d(2, 3, 2), (2, 3, 9)),
    (apnn.LPPool2d(3, 2, ceil_mode=True), nn.LPPool2d(3, 2, ceil_mode=True), (2, 3, 9, 8)),
    (apnn.LPPool3d(2, 2), nn.LPPool3d(2, 2), (1, 2, 4, 4, 4)),
    (apnn.AdaptiveAvgPool1d(4), nn.AdaptiveAvgPool1d(4), (2, 3, 9)),
    (apnn.AdaptiveAvgPool2d((4, None)), nn.AdaptiveAvgPool2d((4, None)), (2, 3, 9, 8)),
    (apnn.AdaptiveAvgPool3d(2), nn.AdaptiveAvgPool3d(2), (1, 2, 5, 4, 3)),
    (apnn.AdaptiveMaxPool1d(4), nn.AdaptiveMaxPool1d(4), (2, 3, 9)),
    (
        apnn.AdaptiveMaxPool2d(3, return_indices=True),
        nn.AdaptiveMaxPool2d(3, return_indices=True),
        (2, 3, 9, 8),
    ),
    (apnn.AdaptiveMaxPool3d((2, 3, 1)), nn.AdaptiveMaxPool3d((2, 3, 1)), (1, 2, 5, 4, 3)),
]
IDS = [f"{type(m).__name__}-{i}" for i, (m, _, _) in enumerate(TWINS)]


def _input(shape, lp=False):
    x = torch.randn(*shape, dtype=torch.float64)
    return x.abs() + 0.5 if lp else x


@pytest.mark.parametrize("ours,theirs,shape", TWINS, ids=IDS)
def test_values_repr_and_type_match_torch(ours, theirs, shape):
    x = _input(shape, "LP" in type(ours).__name__)
    got, want = ours(x), theirs(x)
    if isinstance(want, tuple):
        assert_close(got[0], want[0])
        assert torch.equal(got[1], want[1])
    else:
        assert_close(got, want)
    assert repr(ours) == repr(theirs)
    assert isinstance(ours, type(theirs))
    assert ours.state_dict() == {} and theirs.state_dict() == {}


@pytest.mark.parametrize("ours,theirs,shape", TWINS, ids=IDS)
def test_from_module_and_unbatched_input(ours, theirs, shape):
    twin = apnn.from_module(theirs)
    assert type(twin) is type(ours) and repr(twin) == repr(theirs)
    x = _input(shape[1:], "LP" in type(ours).__name__)
    got, want = twin(x), theirs(x)
    assert_close(got[0] if isinstance(got, tuple) else got, want[0] if isinstance(want, tuple) else want)


@pytest.mark.parametrize("ours,theirs,shape", TWINS, ids=IDS)
def test_gradcheck_and_gradgradcheck(ours, theirs, shape):
    x = _input(shape, "LP" in type(ours).__name__).requires_grad_(True)

    def fn(t):
        y = ours(t)
        return y[0] if isinstance(y, tuple) else y

    assert torch.autograd.gradcheck(fn, (x,))
    assert torch.autograd.gradgradcheck(fn, (x,))


OWN = [
    (apnn.GlobalAvgPool(keepdims=False), (2, 3, 5, 4)),
    (apnn.GlobalMaxPool(ndim=1), (2, 3, 7)),
    (apnn.BlurPool1d(3, filt_size=3), (2, 3, 9)),
    (apnn.BlurPool2d(pad_type="replicate", filt_size=4), (2, 3, 8, 8)),
    (apnn.BlurPool3d(filt_size=2, pad_type="zero"), (1, 2, 4, 4, 4)),
    (apnn.AvgPool2d(3, 2, padding="same", convention="tensorflow"), (2, 3, 7, 6)),
    (apnn.MaxPool2d(3, padding="same_lower", convention="onnx"), (2, 3, 7, 6)),
]


# the modules stay scriptable, as torch.nn's are, for code still on TorchScript, which torch
# deprecates
@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
@pytest.mark.parametrize("module,shape", OWN, ids=[repr(m) for m, _ in OWN])
def test_own_modules_gradcheck_gradgradcheck_and_script(module, shape):
    x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(module, (x,))
    assert torch.autograd.gradgradcheck(module, (x,))
    assert_close(torch.jit.script(module)(x), module(x))


def test_own_modules_values():
    x = torch.randn(2, 3, 5, 4, dtype=torch.float64)
    assert_close(apnn.GlobalAvgPool(keepdims=False)(x), x.mean((2, 3)))
    assert_close(apnn.GlobalMaxPool()(x), x.amax((2, 3), keepdim=True))
    blur = apnn.BlurPool2d(3, "reflect", 3, 2)(x)
    np.testing.assert_allclose(blur.numpy(), avgpool.blur_pool2d(x.numpy(), 3, 2), rtol=1e-12)


class _AntialiasedBlurPool(torch.nn.Module):
    """antialiased-cnns' BlurPool, as that project writes it: a pad, then a depthwise conv with
    the normalised binomial filter it keeps as the buffer ``filt``."""

    def __init__(self, channels, pad_type="reflect", filt_size=4, stride=2):
        super().__init__()
        a = torch.tensor({2: [1.0, 1], 3: [1.0, 2, 1], 4: [1.0, 3, 3, 1], 5: [1.0, 4, 6, 4, 1]}[filt_size])
        filt = a[:, None] * a[None, :]
        self.register_buffer("filt", (filt / filt.sum())[None, None].repeat(channels, 1, 1, 1))
        lo, hi = (filt_size - 1) // 2, filt_size - 1 - (filt_size - 1) // 2
        self.pad = torch.nn.ReflectionPad2d((lo, hi, lo, hi)) if pad_type == "reflect" else None
        self.stride, self.channels = stride, channels

    def forward(self, x):
        filt = self.filt.to(x.dtype)
        return nn.functional.conv2d(self.pad(x), filt, stride=self.stride, groups=self.channels)


@pytest.mark.parametrize("filt_size", [2, 3, 4, 5])
def test_blurpool_loads_an_antialiased_cnns_state_dict_strictly(filt_size):
    theirs = _AntialiasedBlurPool(4, filt_size=filt_size)
    ours = apnn.BlurPool2d(4, filt_size=filt_size)
    assert set(ours.state_dict()) == {"filt"}
    ours.load_state_dict(theirs.state_dict(), strict=True)
    x = torch.randn(2, 4, 11, 10, dtype=torch.float64)
    assert_close(ours(x), theirs(x))
    assert apnn.BlurPool2d(filt_size=filt_size).state_dict() == {}  # no channels: no buffer


def test_blurpool_refuses_a_filter_it_cannot_compute():
    state = _AntialiasedBlurPool(4, filt_size=3).state_dict()
    state["filt"] = torch.rand_like(state["filt"])
    with pytest.raises(AvgPoolError, match="filt must be the 3-tap binomial filter"):
        apnn.BlurPool2d(4, filt_size=3).load_state_dict(state)


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")  # as above
@pytest.mark.parametrize("ours,theirs,shape", TWINS[:10], ids=IDS[:10])
def test_script_and_trace_like_torch(ours, theirs, shape):
    x = _input(shape, "LP" in type(ours).__name__)
    scripted = torch.jit.script(ours)
    got, want = scripted(x), theirs(x)
    assert_close(got[0] if isinstance(got, tuple) else got, want[0] if isinstance(want, tuple) else want)


def test_conventions_reproduce_their_framework():
    """TensorFlow's 'SAME' average: asymmetric padding, padded cells not counted."""
    pool = apnn.AvgPool2d(3, 2, padding="same", convention="tensorflow")
    assert repr(pool) == "AvgPool2d(kernel_size=3, stride=2, padding=same, convention=tensorflow)"
    assert pool.window.convention == "tensorflow" and not pool.window.count_include_pad
    img = np.arange(25.0).reshape(1, 1, 5, 5)
    want = avgpool.avg_pool(img, window=Window.from_tensorflow(3, 2, "SAME", "NCHW"))
    got = pool(torch.from_numpy(img))
    assert got[0, 0, 0, 0].item() == 3.0
    np.testing.assert_array_equal(got.numpy(), want)
    flax = apnn.AvgPool2d(3, 2, padding="same", convention="flax")(torch.from_numpy(img))
    assert round(flax[0, 0, 0, 0].item(), 4) == 1.3333
    assert apnn.AvgPool2d(3, convention="onnx").stride == 1


def test_convention_refusals():
    with pytest.raises(AvgPoolError, match="convention must be one of"):
        apnn.AvgPool2d(3, convention="caffe")
    # the wording of avgpool.conventions.window, which avgpool shape gives too
    with pytest.raises(AvgPoolError, match=r"tensorflow cannot express count_include_pad=True \(its average"):
        apnn.AvgPool2d(3, 2, "same", count_include_pad=True, convention="tensorflow")
    with pytest.raises(AvgPoolError, match=r"keras cannot express ceil_mode=True \(it rounds"):
        apnn.AvgPool2d(3, 2, "same", ceil_mode=True, convention="keras")
    with pytest.raises(AvgPoolError, match="padding must be <= kernel_size // 2"):
        apnn.AvgPool2d(2, padding=2)
    with pytest.raises(AvgPoolError, match="filt_size must be between 1 and 7"):
        apnn.BlurPool2d(filt_size=9)
    with pytest.raises(TypeError, match="module must be one of"):
        apnn.from_module(nn.Conv2d(1, 1, 1))


def test_swap_pooling_gives_identical_outputs_and_loads_state_dicts():
    net = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1),
        nn.MaxPool2d(2),
        nn.Sequential(nn.ReLU(), nn.AvgPool2d(3, 1, 1, count_include_pad=False)),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 2),
    ).double()
    x = torch.randn(2, 2, 8, 8, dtype=torch.float64)
    want = net(x)
    state = net.state_dict()
    swapped = apnn.swap_pooling(net)
    assert swapped is net
    assert type(net[1]) is apnn.MaxPool2d and type(net[2][1]) is apnn.AvgPool2d
    assert type(net[3]) is apnn.AdaptiveAvgPool2d
    net.load_state_dict(state, strict=True)
    assert_close(net(x), want)


def test_lppool_convention_picks_the_lp_definition():
    # torch: F.lp_pool's sum of x**p keeps the sign for odd p; onnx: LpPool's |x|**p
    x = torch.tensor([[[-1.0, -2.0, 3.0, 4.0]]], dtype=torch.float64)
    assert apnn.LPPool1d(1, 2)(x).tolist() == [[[-3.0, 7.0]]] == nn.functional.lp_pool1d(x, 1, 2).tolist()
    assert apnn.LPPool1d(1, 2, 2, convention="onnx")(x).tolist() == [[[3.0, 7.0]]]


def test_torch_convention_runs_pytorchs_input_checks():
    empty = torch.ones(2, 0, 4)
    with pytest.raises(RuntimeError, match=r"non-empty 2D or 3D \(batch mode\) tensor expected for input"):
        apnn.AvgPool1d(2)(empty)
    assert apnn.AvgPool1d(2, 2, convention="onnx")(empty).shape == (2, 0, 2)
