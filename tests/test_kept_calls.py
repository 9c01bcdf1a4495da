"""Kept calls: a public op called again on a NumPy array with the same arguments, shape and
dtype runs its planned call at once, with the same results, and never where the op's first
call did more than that planned call."""

from __future__ import annotations

import logging

import numpy as np
import pytest

import avgpool as ap
from avgpool import _backends

pytestmark = pytest.mark.usefixtures("fresh_plans")


def _x(shape, dtype=np.float32, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def _refuse_planning(monkeypatch):
    def refuse(*_args, **_kwargs):
        raise AssertionError("the op ran again")

    monkeypatch.setattr(_backends.NumpyBackend, "planned_avg", refuse)
    monkeypatch.setattr(_backends.NumpyBackend, "planned_max", refuse)
    monkeypatch.setattr(_backends.NumpyBackend, "_plan_adaptive_avg", refuse)
    monkeypatch.setattr(_backends.compute, "plan_blur", refuse)


CALLS = [
    pytest.param(lambda x: ap.avg_pool(x, 3, 2, 1), id="avg_pool"),
    pytest.param(lambda x: ap.avg_pool2d(x, 2), id="avg_pool2d"),
    pytest.param(lambda x: ap.avg_pool(x, (2, 3), count_include_pad=False, padding=(1, 1)), id="avg tuple"),
    pytest.param(lambda x: ap.max_pool(x, 3, 2), id="max_pool"),
    pytest.param(lambda x: ap.max_pool2d(x, 2, return_indices=True), id="max indices"),
    pytest.param(lambda x: ap.global_avg_pool(x), id="global"),
    pytest.param(lambda x: ap.global_avg_pool(x, keepdims=False), id="global squeezed"),
    pytest.param(lambda x: ap.global_max_pool(x, keepdims=False, channels_last=True), id="global max cl"),
    pytest.param(lambda x: ap.adaptive_avg_pool(x, (3, 2)), id="adaptive"),
    pytest.param(lambda x: ap.adaptive_avg_pool(x, 6, channels_last=True), id="adaptive cl"),
    pytest.param(lambda x: ap.blur_pool(x, 4, 2), id="blur"),
    pytest.param(lambda x: ap.blur_pool(x, 3, 2, pad_type="zero", channels_last=True), id="blur cl"),
]


@pytest.mark.parametrize("call", CALLS)
@pytest.mark.parametrize("shape", [(1, 4, 6, 6), (2, 3, 40, 40)])
def test_a_kept_call_returns_what_the_op_returns(monkeypatch, call, shape):
    first = call(_x(shape))
    assert len(_backends._calls) == 1
    _refuse_planning(monkeypatch)
    x = _x(shape, seed=1)
    again = call(x)
    monkeypatch.undo()
    _backends.clear_plans()
    want = call(x)
    for got, expected in zip(*(r if isinstance(r, tuple) else (r,) for r in (again, want)), strict=True):
        assert type(got) is np.ndarray and got.flags.c_contiguous
        assert got.shape == expected.shape and got.dtype == expected.dtype
        np.testing.assert_array_equal(got, expected)
    assert type(again) is type(first)


def test_arguments_are_told_apart_by_type():
    x = _x((1, 2, 4, 4))
    ap.avg_pool2d(x, 2)
    with pytest.raises(TypeError, match="kernel_size"):
        ap.avg_pool2d(x, 2.0)
    with pytest.raises(TypeError):
        ap.avg_pool2d(x, (2, 2.0))
    y = ap.avg_pool(x, 2, ceil_mode=True)
    assert ap.avg_pool(x, 2, ceil_mode=1).shape == y.shape  # 1 is a flag, kept apart from True
    assert len(_backends._calls) == 3


def test_the_last_call_is_taken_by_its_argument_objects(monkeypatch):
    """An op called again with the very argument objects of its last kept call (plain values
    that never change: ints, floats, bools, strings, None, tuples of them) runs that call
    without building the typed key; equal arguments of another type, another shape, dtype or
    backend, and a list (which could change) build it."""
    x, k = _x((1, 2, 6, 6)), (2, 2)
    ap.avg_pool(x, k, 2, ceil_mode=True)
    want = ap.avg_pool(x, k, 2, ceil_mode=True)  # kept: the dict's call, now the last one
    keys = []
    real = _backends.typed_key
    monkeypatch.setattr(_backends, "typed_key", lambda *a: keys.append(a) or real(*a))
    np.testing.assert_array_equal(ap.avg_pool(x, k, 2, ceil_mode=True), want)
    assert ap.avg_pool(_x((1, 2, 6, 6), seed=1), k, 2, ceil_mode=True).shape == want.shape
    assert not keys
    others = [
        lambda: ap.avg_pool(x, k, 2, ceil_mode=1),
        lambda: ap.avg_pool(x, k, 2),
        lambda: ap.avg_pool(x, k, 2, ceil_mode=True, count_include_pad=True),
        lambda: ap.avg_pool(x.astype(np.float64), k, 2, ceil_mode=True),
        lambda: ap.avg_pool(x[:, :1].copy(), k, 2, ceil_mode=True),
        lambda: ap.avg_pool(x, [2, 2], 2, ceil_mode=True),
    ]
    for n, call in enumerate(others, 1):
        call()
        assert len(keys) == n
    with ap.use_backend("reference"):
        np.testing.assert_allclose(ap.avg_pool(x, k, 2, ceil_mode=True), want, rtol=1e-6)
    assert len(keys) == len(others) + 1
    sizes = [2, 2]
    ap.avg_pool(x, sizes, 2)
    ap.avg_pool(x, sizes, 2)
    sizes[:] = [3, 3]  # a list may change: it is never taken by identity
    assert ap.avg_pool(x, sizes, 2).shape == (1, 2, 2, 2)


def test_calls_differ_by_shape_dtype_and_backend(caplog):
    x = _x((1, 2, 5, 5))
    ap.avg_pool(x, 2)
    ap.avg_pool(x[:, :1].copy(), 2)
    ap.avg_pool(x.astype(np.float64), 2)
    assert len(_backends._calls) == 3
    with ap.use_backend("reference"), caplog.at_level("DEBUG", logger="avgpool"):
        ap.avg_pool(x, 2)
    assert "float64 reference" in caplog.text
    assert len(_backends._calls) == 4


def test_a_kept_call_still_logs_its_path(caplog):
    x = _x((1, 2, 8, 8))
    ap.avg_pool(x, 2)
    with caplog.at_level(logging.DEBUG, logger="avgpool"):
        ap.avg_pool(x, 2)
    assert "avg_pool" in caplog.text


def test_ops_that_do_more_than_one_planned_call_are_not_kept():
    x = _x((1, 2, 6, 6))
    g = _x((1, 2, 3, 3), seed=1)
    ap.max_pool_backward(g, x, 2)  # its forward for the indices, then the scatter
    ap.avg_pool(x, 2, out=np.empty((1, 2, 3, 3), np.float32))  # writes into out
    ap.lp_pool(x, 2.0, 2)  # runs its drivers directly
    h = x.astype(np.float16)
    first = ap.avg_pool(h, 2)  # computed in float32, rounded after
    assert len(_backends._calls) == 1  # the float16 call: its plan returns the op's result
    again = ap.avg_pool(h, 2)
    assert again.dtype == np.float16
    np.testing.assert_array_equal(again, first)


def test_inputs_the_kept_call_cannot_take_run_the_op():
    x = _x((1, 2, 8, 8), np.float64)
    ap.avg_pool(x, 2)
    for view in (x[:, :, ::-1], np.asfortranarray(x), x.tolist()):
        got = ap.avg_pool(view, 2)
        with ap.use_backend("reference"):
            np.testing.assert_allclose(got, ap.avg_pool(np.array(view), 2), rtol=1e-12)
    with pytest.raises(TypeError, match="dtype"):
        ap.avg_pool(x.astype(np.int32), 2)
    ap.avg_pool(x, [2, 2])  # a list is unhashable: no key, the op runs
    assert [key[3] for key in _backends._calls] == ["numba", "reference"]


def test_an_op_inside_another_keeps_neither():
    @_backends.op
    def twice(be, x):
        return ap.avg_pool(ap.avg_pool(x, 1), 2)

    x = _x((1, 2, 4, 4))
    np.testing.assert_array_equal(twice(x), ap.avg_pool(x, 2))
    assert [key[0] for key in _backends._calls] == [ap.avg_pool, ap.avg_pool]  # the inner ops only


def test_kept_calls_are_bounded(monkeypatch):
    monkeypatch.setattr(_backends, "PLANS_CACHED", 3)
    x = _x((1, 1, 12, 12))
    for k in range(1, 6):
        ap.avg_pool(x, k)
    assert len(_backends._calls) == 3
