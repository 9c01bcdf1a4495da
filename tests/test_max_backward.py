"""max_pool_backward given the forward's indices (no second arg-max search), and the direct
scatter of windows that share no cell."""

import numpy as np
import pytest

import avgpool as ap


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
