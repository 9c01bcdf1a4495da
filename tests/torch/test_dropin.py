"""Drop-in where users already are: antialiased-cnns' BlurPool checkpoints load into
avgpool.nn.BlurPool2d, and swap_pooling turns the pooling of timm and torchvision models into
avgpool's with the same outputs. Every model is built locally from its library's code; no
weights are downloaded. Each library is optional: its tests skip when it is not installed.

Tolerances: a max pool is the same maths and matches bit for bit; averages and blurs add the
same terms in another order, so they match to the dtype's TOLERANCES on random inputs and bit
for bit on small integers (where every partial sum is exact). Whole float32 models are compared
with MODEL_TOL, the pooling differences having passed through the layers after them.
"""

import importlib.util
import subprocess
import sys

import pytest
import torch
from torch import nn

import avgpool.nn as apnn
from avgpool import AvgPoolError
from avgpool.inspect import inspect_model
from avgpool.inspect.render import tables, text
from tests.torch.conftest import assert_close

MODEL_TOL = {torch.float32: (1e-5, 1e-5), torch.float64: (1e-12, 1e-12)}
_TORCHVISION_OPS = []  # keeps the stand-in op library below alive


def _torchvision():
    """torchvision, or a skip. The CUDA build of torchvision on a CPU-only torch cannot load its
    C ops, and its import then stops at registering a fake kernel for ``torchvision::nms``;
    the models need none of those ops, so the two schemas it asks for are declared first."""
    if importlib.util.find_spec("torchvision") is None:
        pytest.skip("torchvision is not installed")
    try:
        import torchvision
    except RuntimeError as exc:
        if "torchvision::" not in str(exc):
            raise
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
        lib = torch.library.Library("torchvision", "DEF")
        for op in ("nms", "qnms"):
            lib.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        _TORCHVISION_OPS.append(lib)
        import torchvision
    return torchvision


def _timm():
    if importlib.util.find_spec("timm") is None:
        pytest.skip("timm is not installed")
    _torchvision()  # timm's layers import torchvision
    import timm

    return timm


def _integers(shape, dtype):
    return torch.randint(-50, 50, shape).to(dtype)


def _swapped_matches(model, x, tol=None):
    """Swap ``model``'s pooling in place; assert outputs, state dict and strict loading hold."""
    model.eval()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        want = model(x)
    assert apnn.swap_pooling(model) is model
    with torch.no_grad():
        got = model(x)
    rtol, atol = (tol or MODEL_TOL)[x.dtype]
    torch.testing.assert_close(got, want, rtol=rtol, atol=atol)
    assert list(model.state_dict()) == list(state)
    model.load_state_dict(state, strict=True)
    return model


def _ours(model):
    return [type(m).__name__ for m in model.modules() if type(m).__module__.startswith("avgpool.")]


# -- antialiased-cnns ------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("pad_off", [0, 1])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("pad_type", ["reflect", "replicate", "zero"])
@pytest.mark.parametrize("filt_size", range(1, 8))
def test_blurpool_loads_and_matches_antialiased_cnns(filt_size, pad_type, stride, pad_off, dtype):
    aa = pytest.importorskip("antialiased_cnns")
    theirs = aa.BlurPool(3, pad_type, filt_size, stride, pad_off).to(dtype)
    ours = apnn.BlurPool2d(3, pad_type, filt_size, stride, pad_off)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    x = torch.randn(2, 3, 13, 12, dtype=dtype)
    assert_close(ours(x), theirs(x))
    xi = _integers((2, 3, 13, 12), dtype)
    assert torch.equal(ours(xi), theirs(xi))
    twin = apnn.BlurPool2d.from_antialiased(theirs)
    assert (twin.pad_type, twin.filt_size, twin.stride, twin.pad_off) == (
        pad_type,
        filt_size,
        stride,
        pad_off,
    )
    assert twin.filt.dtype == dtype and torch.equal(twin.filt, theirs.filt)
    assert torch.equal(twin(xi), theirs(xi))


def test_blurpool1d_and_aliases_from_antialiased_cnns():
    aa = pytest.importorskip("antialiased_cnns")
    theirs = aa.BlurPool1D(4, "repl", 5, 2, 1)
    ours = apnn.from_module(theirs)
    assert type(ours) is apnn.BlurPool1d and ours.pad_type == "replicate"
    xi = _integers((2, 4, 17), torch.float32)
    assert torch.equal(ours(xi), theirs(xi))
    twin = apnn.from_module(aa.BlurPool(4, "refl", 3))
    assert type(twin) is apnn.BlurPool2d and twin.pad_type == "reflect"


def test_from_antialiased_takes_the_matching_class_only():
    aa = pytest.importorskip("antialiased_cnns")
    with pytest.raises(
        TypeError, match=r"module must be an antialiased_cnns.BlurPool1D for BlurPool1d, got "
    ):
        apnn.BlurPool1d.from_antialiased(aa.BlurPool(4))
    with pytest.raises(TypeError, match=r"antialiased_cnns.BlurPool for BlurPool2d, got torch.nn.*AvgPool2d"):
        apnn.BlurPool2d.from_antialiased(nn.AvgPool2d(2))


def test_antialiased_cnns_model_swaps_and_keeps_its_checkpoint():
    aa = pytest.importorskip("antialiased_cnns")
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.MaxPool2d(2, 1),
        aa.BlurPool(8, filt_size=4, stride=2),
        nn.Conv2d(8, 4, 3),
        aa.BlurPool(4, pad_type="zero", filt_size=5, stride=2, pad_off=1),
    )
    for dtype in (torch.float32, torch.float64):
        swapped = _swapped_matches(model.to(dtype), torch.randn(2, 3, 20, 18, dtype=dtype))
        assert _ours(swapped) == ["MaxPool2d", "BlurPool2d", "BlurPool2d"]
        assert swapped[2].filt.dtype == dtype


def test_antialiased_cnns_resnet18_swaps_and_loads_its_own_state_dict():
    aa = pytest.importorskip("antialiased_cnns")
    swapped = _swapped_matches(aa.resnet18(pretrained=False), torch.randn(1, 3, 64, 64))
    assert _ours(swapped) == ["MaxPool2d", *["BlurPool2d"] * 7, "AdaptiveAvgPool2d"]
    fresh = aa.resnet18(pretrained=False)  # a checkpoint saved by that project's model
    swapped.load_state_dict(fresh.state_dict(), strict=True)


def test_blurpool_refuses_a_filter_that_is_not_binomial():
    aa = pytest.importorskip("antialiased_cnns")
    state = aa.BlurPool(4, filt_size=3).state_dict()
    state["filt"] = state["filt"] + 1e-6
    with pytest.raises(AvgPoolError, match=r"filt must be the 3-tap binomial filter of shape \(4, 1, 3, 3\)"):
        apnn.BlurPool2d(4, filt_size=3).load_state_dict(state)
    wrong_size = aa.BlurPool(4, filt_size=5).state_dict()
    with pytest.raises(AvgPoolError, match=r"got another filter of shape \(4, 1, 5, 5\)"):
        apnn.BlurPool2d(4, filt_size=3).load_state_dict(wrong_size)
    with pytest.raises(AvgPoolError, match="filt must be the 3-tap"):
        apnn.BlurPool2d(filt_size=3).load_state_dict(state, strict=False)  # no buffer to load into


# -- timm --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name,kwargs,expect",
    [
        ("resnet18", {}, ["MaxPool2d", "AdaptiveAvgPool2d"]),
        ("resnetblur18", {}, ["MaxPool2d", *["BlurPool2d"] * 4, "AdaptiveAvgPool2d"]),
        (
            "resnet18",
            {"global_pool": "catavgmax"},
            ["MaxPool2d", "AvgMaxPool", "AdaptiveAvgPool2d", "AdaptiveMaxPool2d"],
        ),
        (
            "resnet18",
            {"global_pool": "fastavgmax"},
            ["MaxPool2d", "AvgMaxPool", "GlobalAvgPool", "GlobalMaxPool"],
        ),
    ],
    ids=["resnet18", "resnetblur18", "catavgmax", "fastavgmax"],
)
def test_timm_models_swap_with_the_same_outputs(name, kwargs, expect):
    timm = _timm()
    model = timm.create_model(name, pretrained=False, **kwargs)
    swapped = _swapped_matches(model, torch.randn(1, 3, 64, 64))
    assert _ours(swapped) == expect
    assert type(swapped.global_pool).__module__.startswith("timm.")  # only its pool changed


_ADAPTIVE_TWINS = {
    "avg": ["AdaptiveAvgPool2d"],
    "max": ["AdaptiveMaxPool2d"],
    "avgmax": ["AvgMaxPool", "AdaptiveAvgPool2d", "AdaptiveMaxPool2d"],
    "catavgmax": ["AvgMaxPool", "AdaptiveAvgPool2d", "AdaptiveMaxPool2d"],
    "fast": ["GlobalAvgPool"],
    "fastmax": ["GlobalMaxPool"],
    "fastcatavgmax": ["AvgMaxPool", "GlobalAvgPool", "GlobalMaxPool"],
}


@pytest.mark.parametrize("pool_type", list(_ADAPTIVE_TWINS))
@pytest.mark.parametrize("flatten", [False, True])
def test_timm_adaptive_pools(pool_type, flatten):
    _timm()
    from timm.layers import SelectAdaptivePool2d

    x = torch.randn(2, 6, 7, 5, dtype=torch.float64)
    for output_size in (1, 2) if not pool_type.startswith("fast") and not flatten else (1,):
        head = SelectAdaptivePool2d(output_size, pool_type, flatten)
        want = head(x)
        apnn.swap_pooling(head)
        assert _ours(head) == _ADAPTIVE_TWINS[pool_type]
        got = head(x)
        assert got.shape == want.shape
        if "avg" in pool_type or pool_type == "fast":
            assert_close(got, want)
        else:
            assert torch.equal(got, want)


def test_timm_same_padding_and_blur_layers():
    """timm's 'SAME' pools and its BlurPool2d, in float32 and float64, on odd sizes (where
    'SAME' pads more after than before)."""
    _timm()
    from timm.layers import BlurPool2d, create_conv2d, create_pool2d

    def build():
        return nn.Sequential(
            create_conv2d(3, 8, 3, stride=2, padding="same"),
            create_pool2d("max", 3, 2, padding="same"),
            create_pool2d("avg", 3, 2, padding="same", count_include_pad=False),
            create_pool2d("max", 2, 2, padding="same", dilation=2),
            BlurPool2d(8, 3, 2),
            BlurPool2d(None, 5, 3, pad_mode="constant"),
            BlurPool2d(8, 3, 1, pad_mode="replicate"),
        )

    assert [type(m).__name__ for m in build()][1:4] == ["MaxPool2dSame", "AvgPool2dSame", "MaxPool2dSame"]
    for dtype in (torch.float32, torch.float64):
        swapped = _swapped_matches(build().to(dtype), torch.randn(2, 3, 75, 61, dtype=dtype))
        assert _ours(swapped) == ["MaxPool2d", "AvgPool2d", "MaxPool2d", *["BlurPool2d"] * 3]
        assert [swapped[i].convention for i in (1, 2, 3)] == ["onnx", "flax", "onnx"]
        assert swapped[4].channels == 8 and swapped[5].pad_off == 1
    # NaN wins in timm's max (PyTorch's), so it must in the twin (TensorFlow's own would skip it)
    timm_max = create_pool2d("max", 3, 2, padding="same")
    x = torch.randn(1, 2, 9, 8)
    x[0, 0, 4, 4] = float("nan")
    torch.testing.assert_close(apnn.from_module(timm_max)(x), timm_max(x), equal_nan=True)
    assert torch.isnan(apnn.from_module(timm_max)(x)).any()
    # the swapped layers train alike: the same input gradient
    x = torch.randn(2, 3, 40, 33, dtype=torch.float64, requires_grad=True)
    original, ours = build().double(), apnn.swap_pooling(build().double())
    ours.load_state_dict(original.state_dict())
    (grad,) = torch.autograd.grad(original(x).square().sum(), x)
    (our_grad,) = torch.autograd.grad(ours(x).square().sum(), x)
    assert_close(our_grad, grad)
    # each layer alone, bit for bit: max pools on any input, the others on small integers
    layers = build().double()
    xi = _integers((1, 8, 23, 17), torch.float64)
    for layer in layers[1:]:
        assert torch.equal(apnn.from_module(layer)(xi), layer(xi))


def test_timm_layers_without_an_exact_twin_are_refused():
    _timm()
    from timm.layers import BlurPool2d, SelectAdaptivePool2d

    with pytest.raises(
        AvgPoolError, match=r"timm.layers.blur_pool.BlurPool2d has no exact avgpool twin.*filt_size=4"
    ):
        apnn.from_module(BlurPool2d(4, filt_size=4))
    with pytest.raises(AvgPoolError, match=r"pad_mode must be one of .*got 'circular'"):
        apnn.swap_pooling(nn.Sequential(BlurPool2d(4, pad_mode="circular")))
    with pytest.raises(AvgPoolError, match=r"pools axes \(1, 2\)"):
        apnn.swap_pooling(SelectAdaptivePool2d(pool_type="avg", input_fmt="NHWC"))


def test_include_chooses_whose_pooling_is_swapped():
    timm = _timm()
    model = timm.create_model("resnetblur18", pretrained=False)
    apnn.swap_pooling(model, include=["torch"])
    assert _ours(model) == ["MaxPool2d", "AdaptiveAvgPool2d"]
    apnn.swap_pooling(model, include="timm")
    assert _ours(model).count("BlurPool2d") == 4
    with pytest.raises(AvgPoolError, match=r"include must name libraries among .*got \['keras'\]"):
        apnn.swap_pooling(model, include=("torch", "keras"))


def test_swap_pooling_imports_neither_library():
    code = (
        "import sys, torch, avgpool.nn as apnn;"
        "m = apnn.swap_pooling(torch.nn.Sequential(torch.nn.AvgPool2d(2)));"
        "print(type(m[0]).__module__, sorted({'timm', 'antialiased_cnns', 'torchvision'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["avgpool.nn", "[]"]


def test_inspect_shows_the_swapped_layers():
    timm = _timm()
    model = apnn.swap_pooling(timm.create_model("resnetblur18", pretrained=False, global_pool="catavgmax"))
    report = inspect_model(model, {"": (1, 3, 64, 64)})
    layers = report.inventory.layers
    assert [(layer.name, layer.source_op, layer.op) for layer in layers] == [
        ("maxpool.0", "MaxPool2d", "max"),
        ("maxpool.1", "BlurPool2d", "blur"),
        ("layer2.0.aa", "BlurPool2d", "blur"),
        ("layer3.0.aa", "BlurPool2d", "blur"),
        ("layer4.0.aa", "BlurPool2d", "blur"),
        ("global_pool.pool.avg", "AdaptiveAvgPool2d", "adaptive_avg"),
        ("global_pool.pool.max", "AdaptiveMaxPool2d", "adaptive_max"),
    ]
    blur = layers[1]
    assert blur.window.kernel_size == (3, 3) and blur.window.stride == (2, 2)
    assert blur.window.padding == ((1, 1), (1, 1)) and blur.output_shape == (1, 64, 16, 16)
    assert blur.attributes["pad_type"] == "reflect" and blur.receptive_field == (15, 15)
    assert not report.inventory.notes and not report.findings  # fx traced it, nothing to lint
    shown = text(tables(report))
    assert "maxpool.1             BlurPool2d" in shown and "nn." not in shown
    assert "reflect-pad" in next(line for line in shown.splitlines() if "layer2.0.aa" in line)


def test_inspect_lists_avgpool_modules_without_a_window():
    """BlurPool and the adaptive modules carry no Window: inspect knows them by their op, and
    names them apart from torch.nn's."""
    model = nn.Sequential(
        apnn.BlurPool2d(3, "zero", 4, 2, 1), nn.AdaptiveAvgPool2d(2), apnn.AdaptiveMaxPool2d((1, 2))
    )
    layers = inspect_model(model, {"": (1, 3, 9, 8)}).inventory.layers
    assert [(layer.source_op, layer.op) for layer in layers] == [
        ("BlurPool2d", "blur"),
        ("nn.AdaptiveAvgPool2d", "adaptive_avg"),
        ("AdaptiveMaxPool2d", "adaptive_max"),
    ]
    blur = layers[0]
    assert blur.window.padding == ((2, 3), (2, 3)) and blur.output_shape == (1, 3, 6, 5)
    assert blur.attributes == {"filt_size": 4, "stride": 2, "pad_type": "zero", "pad_off": 1, "channels": 3}
    assert layers[2].output_size == (1, 2)


# -- torchvision -------------------------------------------------------------------------------


def test_torchvision_resnet18_swaps_with_the_same_outputs():
    tv = _torchvision()
    swapped = _swapped_matches(tv.models.resnet18(), torch.randn(1, 3, 64, 64))
    assert _ours(swapped) == ["MaxPool2d", "AdaptiveAvgPool2d"]


def test_torchvision_inception_v3_swaps_with_the_same_outputs():
    tv = _torchvision()
    model = tv.models.inception_v3(init_weights=False, aux_logits=False)  # torch's init: fast
    swapped = _swapped_matches(model, torch.randn(1, 3, 75, 75))  # its smallest input
    assert _ours(swapped) == ["MaxPool2d", "MaxPool2d", "AdaptiveAvgPool2d"]


def test_avgmax_pool_is_public_and_pickles_by_its_public_name():
    import pickle

    pool = apnn.AvgMaxPool(apnn.GlobalAvgPool(), apnn.GlobalMaxPool(), concat=True)
    assert type(pool).__module__ == "avgpool.nn" and b"avgpool.nn" in pickle.dumps(pool)
    x = torch.randn(2, 3, 5, 4)
    torch.testing.assert_close(
        pool(x), torch.cat((x.mean((2, 3), keepdim=True), x.amax((2, 3), keepdim=True)), 1)
    )
