"""max_pool_backward given the forward's indices (no second arg-max search), the direct
scatter of windows that share no cell, their gather in channels-last, and the channels-last
sums of windows that share cells a vector at a time."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import avgpool as ap
from avgpool import _cpu_plans


def _x(shape, dtype=np.float32, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize(
    "args",
    [
        dict(kernel_size=2),
        dict(kernel_size=3, stride=2, padding=1),
        dict(kernel_size=2, dilation=2, stride=3),
    ],
)
def test_indices_give_the_same_gradient_as_the_search(dtype, channels_last, args):
    x = _x((2, 9, 10, 3) if channels_last else (2, 3, 9, 10), dtype)
    y, i = ap.max_pool(x, **args, channels_last=channels_last, return_indices=True)
    g = _x(y.shape, dtype, 1)
    searched = ap.max_pool_backward(g, x, **args, channels_last=channels_last)
    given = ap.max_pool_backward(g, x, **args, channels_last=channels_last, indices=i)
    assert given.dtype == dtype
    np.testing.assert_array_equal(given, searched)
    with ap.use_backend("reference"):
        want = ap.max_pool_backward(g, x, **args, channels_last=channels_last)
    if args.get("kernel_size") == 3 and dtype != np.float64:
        # overlapping windows: up to 4 gradients per cell, summed in float32 in the outputs' order
        bound = (
            3
            * 2.0**-24
            * ap.max_pool_backward(np.abs(g.astype(np.float64)), x, **args, channels_last=channels_last)
        )
        assert (
            np.abs(given.astype(np.float64) - want) <= bound + np.abs(np.spacing(want.astype(dtype)))
        ).all()
    else:  # a cell takes one gradient at most, or sums in float64: the reference's bits
        np.testing.assert_array_equal(given, want)


def test_cells_shared_by_few_windows_sum_in_the_results_dtype(caplog):
    x = _x((1, 2, 12, 12))
    with caplog.at_level("DEBUG", logger="avgpool"):
        for args, sums in (((2,), "float32"), ((3, 2, 1), "float32"), ((4, 1), "float64")):
            y = ap.max_pool(x, *args)
            caplog.clear()
            ap.max_pool_backward(np.ones_like(y), x, *args)
            assert f"max_backward ({sums} sums)" in caplog.text, args


def test_bad_indices_are_refused():
    x = _x((1, 2, 8, 8))
    y, i = ap.max_pool(x, 2, return_indices=True)
    g = np.ones_like(y)
    with pytest.raises(TypeError, match="indices must be an integer NumPy array"):
        ap.max_pool_backward(g, x, 2, indices=i.astype(np.float64))
    with pytest.raises(ap.AvgPoolError, match="indices must have grad_output's shape"):
        ap.max_pool_backward(g, x, 2, indices=i[:, :1])
    for bad in (64, -2):
        j = i.copy()
        j[0, 0, 0, 0] = bad
        with pytest.raises(ap.AvgPoolError, match=r"indices must lie in \[-1, 64\)"):
            ap.max_pool_backward(g, x, 2, indices=j)
        # channels-last windows that share no cell are gathered; a bad index is found there too
        xl, jl = (
            np.ascontiguousarray(x.transpose(0, 2, 3, 1).repeat(4, -1)),
            np.tile(j.transpose(0, 2, 3, 1), 4),
        )
        with pytest.raises(ap.AvgPoolError, match=r"indices must lie in \[-1, 64\)"):
            ap.max_pool_backward(np.ones(jl.shape, np.float32), xl, 2, channels_last=True, indices=jl)


def _brute_windows(axes):
    """Each output's input cells (flat), -1 for a tap in the padding, by walking every tap."""
    sizes = [a.size for a in axes]
    rows = []
    for out in np.ndindex(*(a.out for a in axes)):
        row = []
        for taps in np.ndindex(*(a.kernel for a in axes)):
            at = [
                o * a.stride - a.pad_before + t * a.dilation for o, t, a in zip(out, taps, axes, strict=True)
            ]
            real = all(0 <= i < n for i, n in zip(at, sizes, strict=True))
            row.append(int(np.ravel_multi_index(at, sizes)) if real else -1)
        rows.append(row)
    return np.array(rows, np.int64)


@settings(max_examples=60, deadline=None)
@given(
    spatial=st.lists(st.integers(1, 9), min_size=1, max_size=3),
    data=st.data(),
)
def test_disjoint_windows_table_matches_every_tap(spatial, data):
    ndim = len(spatial)
    kernel = data.draw(st.tuples(*[st.integers(1, 3)] * ndim))
    stride = data.draw(st.tuples(*[st.integers(1, 4)] * ndim))
    dilation = data.draw(st.tuples(*[st.integers(1, 2)] * ndim))
    pads = tuple(data.draw(st.integers(0, (k - 1) * d // 2)) for k, d in zip(kernel, dilation, strict=True))
    try:
        axes = tuple(
            ap.Window(kernel, stride, pads, dilation=dilation, ceil_mode=data.draw(st.booleans())).resolve(
                spatial
            )
        )
    except ap.AvgPoolError:
        return
    brute = _brute_windows(axes)
    real = brute[brute >= 0]
    table = _cpu_plans.disjoint_windows(axes)
    if len(np.unique(real)) < len(real):
        assert table is None
        return
    cells, lonely = table
    np.testing.assert_array_equal(cells, brute)
    np.testing.assert_array_equal(lonely, np.setdiff1d(np.arange(np.prod(spatial)), real))


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize(
    "args",
    [
        dict(kernel_size=2),
        dict(kernel_size=(2, 3), stride=(3, 3), padding=1),  # lonely cells between windows
        dict(kernel_size=2, dilation=2, stride=4, ceil_mode=True),
        dict(kernel_size=3, stride=3, padding=1, ceil_mode=True),  # windows in the padding: -1
    ],
)
def test_channels_last_disjoint_windows_are_gathered_with_the_scatters_bits(caplog, dtype, args):
    x = _x((3, 11, 10, 24), dtype)
    x[0, :3, :3] = np.nan  # NaN wins
    y, i = ap.max_pool(x, **args, channels_last=True, return_indices=True)
    g = _x(y.shape, dtype, 1)
    g[0, 0, 0, :4] = -0.0  # arrives as 0.0, as 0.0 + g does in the scatter
    with caplog.at_level("DEBUG", logger="avgpool"):
        got = ap.max_pool_backward(g, x, **args, channels_last=True, indices=i)
    assert "max_backward_disjoint" in caplog.text
    with ap.use_backend("reference"):
        want = ap.max_pool_backward(g, x, **args, channels_last=True, indices=i)
    assert got.dtype == dtype and got.tobytes() == (want + dtype(0.0)).astype(dtype).tobytes()
    assert not np.signbit(got[0, 0, 0, :4]).any()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "shape, args",
    [
        ((3, 11, 10, 24), dict(kernel_size=3, stride=2)),  # Inception's reductions
        ((2, 12, 9, 16), dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)),  # ResNet's stem
        ((2, 7, 8, 9), dict(kernel_size=3, stride=1, padding=1)),  # 9 windows a cell
        ((2, 9, 10, 8), dict(kernel_size=(2, 3), stride=(1, 2), dilation=(2, 1))),
        ((2, 5, 6, 7, 8), dict(kernel_size=2, stride=1)),  # 3-D
        ((2, 13, 8), dict(kernel_size=3, stride=2, padding=1)),  # 1-D
    ],
)
def test_channels_last_shared_cells_are_summed_in_vectors_with_the_scatters_bits(
    monkeypatch, caplog, dtype, shape, args
):
    """Channels-last windows that share cells add their gradients a C-vector per tap
    (`cpu_max.max_backward_windows`): bit for bit the scatter's sums (the same additions in
    the same order), with NaN in the input, -0.0 and inf in the gradient; from 8 channels, so
    that any number of channels is tried."""
    from avgpool import _cpu_max_drivers

    monkeypatch.setattr(_cpu_max_drivers, "WINDOW_CHANNELS", 8)
    x = _x(shape, dtype)
    x.reshape(-1, shape[-1])[:5] = np.nan  # NaN wins
    y, i = ap.max_pool(x, **args, channels_last=True, return_indices=True)
    g = _x(y.shape, dtype, 1)
    flat = g.reshape(-1)
    flat[:3], flat[-2:] = -0.0, [np.inf, -np.inf]
    with caplog.at_level("DEBUG", logger="avgpool"):
        got = ap.max_pool_backward(g, x, **args, channels_last=True, indices=i)
    assert "max_backward_windows" in caplog.text
    monkeypatch.setattr(_cpu_max_drivers, "WINDOW_TAPS", 0)
    caplog.clear()
    with caplog.at_level("DEBUG", logger="avgpool"):
        scattered = ap.max_pool_backward(g, x, **args, channels_last=True, indices=i)
    assert "max_backward_windows" not in caplog.text
    assert got.dtype == dtype and got.tobytes() == scattered.tobytes()
    with ap.use_backend("reference"):
        want = ap.max_pool_backward(g, x, **args, channels_last=True, indices=i)
        magnitude = ap.max_pool_backward(
            np.abs(g.astype(np.float64)), x, **args, channels_last=True, indices=i
        )
    finite = np.isfinite(want)
    bound = 8 * np.finfo(dtype).eps * magnitude[finite] + np.spacing(np.abs(want[finite]).astype(dtype))
    assert (np.abs(got[finite] - want[finite]) <= bound).all()
    np.testing.assert_array_equal(got[~finite], want[~finite])


def test_indices_of_another_geometry_over_shared_cells_are_scattered(monkeypatch, caplog):
    """With windows that share cells too, an index that names a cell outside its window is
    sent there, as the scatter does, never dropped."""
    from avgpool import _cpu_max_drivers
    from avgpool.kernels import cpu_max

    monkeypatch.setattr(_cpu_max_drivers, "WINDOW_CHANNELS", 8)
    strays = []
    windows = cpu_max.max_backward_windows
    monkeypatch.setattr(cpu_max, "max_backward_windows", lambda *a: strays.append(windows(*a)) or strays[-1])
    x = _x((2, 9, 9, 16))
    g = _x((2, 4, 4, 16), seed=2)
    _, i = ap.max_pool(x, 3, 2, channels_last=True, return_indices=True)
    i[0, 3, 3, 5] = 0  # the first cell, far from the last window
    with caplog.at_level("DEBUG", logger="avgpool"):
        got = ap.max_pool_backward(g, x, 3, 2, channels_last=True, indices=i)
    assert strays == [1] and "max_backward (float32 sums)" in caplog.text
    with ap.use_backend("reference"):
        want = ap.max_pool_backward(g, x, 3, 2, channels_last=True, indices=i)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    assert got[0, 0, 0, 5] != 0.0


def test_indices_of_another_geometry_are_scattered(caplog):
    """An index that names a cell outside its window (here: the window of 2x2/1 at the same
    output) is sent there, as the scatter does, never dropped."""
    x = _x((2, 8, 8, 16))
    g = _x((2, 4, 4, 16), seed=2)
    _, wide = ap.max_pool(x, 2, 1, channels_last=True, return_indices=True)
    i = np.ascontiguousarray(wide[:, :4, :4])
    with caplog.at_level("DEBUG", logger="avgpool"):
        got = ap.max_pool_backward(g, x, 2, channels_last=True, indices=i)
    assert "max_backward (float32 sums)" in caplog.text
    with ap.use_backend("reference"):
        want = ap.max_pool_backward(g, x, 2, channels_last=True, indices=i)
        magnitude = ap.max_pool_backward(np.abs(g.astype(np.float64)), x, 2, channels_last=True, indices=i)
    # a cell may take two windows' gradients here, summed in float32
    assert (np.abs(got - want) <= 2.0**-24 * magnitude + np.spacing(np.abs(got))).all()
    assert np.count_nonzero(got) == np.count_nonzero(want)


def test_torch_tensors_take_indices_too():
    torch = pytest.importorskip("torch")
    import avgpool.torch  # noqa: F401

    x = torch.randn(2, 3, 9, 10)
    y, i = ap.max_pool(x, 3, 2, 1, return_indices=True)
    g = torch.randn(y.shape)
    given = ap.max_pool_backward(g, x, 3, 2, 1, indices=i)
    torch.testing.assert_close(given, ap.max_pool_backward(g, x, 3, 2, 1), rtol=0, atol=0)
    with pytest.raises(TypeError, match=r"indices must be an int64 torch\.Tensor"):
        ap.max_pool_backward(g, x, 3, 2, 1, indices=i.float())
    bad = i.clone()
    bad[0, 0, 0, 0] = 90
    with pytest.raises(ValueError, match=r"indices must lie in \[-1, 90\)"):
        ap.max_pool_backward(g, x, 3, 2, 1, indices=bad)
