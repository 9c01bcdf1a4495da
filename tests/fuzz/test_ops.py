"""Fuzzing the NumPy ops: any geometry, any array, every call ends in time with the
reference's answer or an AvgPoolError / TypeError.

Geometry values reach the extremes (0, negatives, 2**31, 2**63 - 1, past int64), arrays are
empty, non-contiguous, reversed or read-only, of every dtype, with NaN and inf. Each call runs
in a worker process with a deadline (`_worker.DEADLINE_S`): a hang or a crash fails its
example. ``AVGPOOL_FUZZ_EXAMPLES`` sets the examples per test (default 150; derandomized, so a
run is repeatable).
"""

from __future__ import annotations

import os

import numpy as np
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

EXAMPLES = int(os.environ.get("AVGPOOL_FUZZ_EXAMPLES", "150"))
FUZZ = settings(
    max_examples=EXAMPLES,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
ALLOWED = {"avgpool._errors.AvgPoolError", "builtins.TypeError"}

EXTREMES = [0, -1, 2**31 - 1, 2**31, 2**63 - 1, 2**63, 2**64, -(2**63)]
DTYPES = ["float32", "float64", "float16", "int64", "int32", "uint8", "uint64", "bool", "complex64", "object"]


def _judge(worker, spec):
    outcome, detail = worker.call(spec)
    if outcome == "error":
        name = detail.split(":", 1)[0]
        assert name in ALLOWED, f"{spec}\nraised {detail}"
    else:
        assert outcome == "ok", f"{spec}\n{outcome}: {detail}"


def _values(small: st.SearchStrategy, ndim: int) -> st.SearchStrategy:
    one = st.one_of(small, small, small, st.sampled_from(EXTREMES))
    return st.one_of(one, st.lists(one, min_size=ndim, max_size=ndim).map(tuple))


@st.composite
def arrays(draw, ndim: int, channels_last: bool):
    spatial = draw(st.lists(st.integers(1, 9), min_size=ndim, max_size=ndim))
    n, c = draw(st.integers(0, 2)), draw(st.sampled_from([0, 1, 2, 3, 3]))
    shape = [n, *spatial, c] if channels_last else [n, c, *spatial]
    if draw(st.booleans()) and draw(st.booleans()):
        shape = shape[1:]  # unbatched
    return {
        "shape": shape,
        "dtype": draw(st.sampled_from(DTYPES[:4] * 3 + DTYPES)),
        "layout": draw(st.sampled_from(["contiguous"] * 3 + ["strided", "reversed", "transposed"])),
        "specials": draw(st.booleans()),
        "readonly": draw(st.booleans()) and draw(st.booleans()),
        "seed": draw(st.integers(0, 2**16)),
    }


@st.composite
def windowed(draw, op: str):
    ndim = draw(st.integers(1, 3))
    cl = draw(st.booleans())
    array = draw(arrays(ndim, cl))
    kwargs = {
        "kernel_size": draw(_values(st.integers(1, 5), ndim)),
        "stride": draw(st.one_of(st.none(), _values(st.integers(1, 4), ndim))),
        "padding": draw(st.one_of(_values(st.integers(0, 3), ndim), st.sampled_from(["same", "valid"]))),
        "dilation": draw(_values(st.integers(1, 3), ndim)),
        "ceil_mode": draw(st.sampled_from([False, True, np.True_, 1, "yes"])),
        "channels_last": cl,
    }
    if op == "avg_pool":
        kwargs["count_include_pad"] = draw(st.booleans())
        kwargs["divisor_override"] = draw(st.one_of(st.none(), st.integers(-3, 5), st.sampled_from(EXTREMES)))
    args: list = ["<x>"]
    if op == "lp_pool":
        args.append(draw(st.sampled_from([1, 2, 3.5, 0, -1, float("inf")])))
    spec = {"op": op, "array": array, "args": args, "kwargs": kwargs}
    if draw(st.booleans()) and op != "lp_pool":
        spec["out"] = "input"
    return spec


@st.composite
def adaptive(draw, op: str):
    ndim = draw(st.integers(1, 3))
    cl = draw(st.booleans())
    array = draw(arrays(ndim, cl))
    size = draw(_values(st.integers(1, 6), ndim))
    return {"op": op, "array": array, "args": ["<x>", size], "kwargs": {"channels_last": cl}}


@st.composite
def blur(draw):
    ndim = draw(st.integers(1, 3))
    cl = draw(st.booleans())
    kwargs = {
        "pad_type": draw(st.sampled_from(["reflect", "replicate", "zero", "wrap"])),
        "pad_off": draw(st.sampled_from([0, 1, -1, 2**63])),
        "channels_last": cl,
    }
    filt = draw(st.sampled_from([1, 2, 3, 5, 7, 0, 8, 2**40]))
    stride = draw(st.sampled_from([1, 2, 3, 0, 2**63 - 1]))
    return {
        "op": "blur_pool",
        "array": draw(arrays(ndim, cl)),
        "args": ["<x>", filt, stride],
        "kwargs": kwargs,
    }


@FUZZ
@given(spec=windowed("avg_pool"))
@example(  # a stride past the padded input hung the plane kernel
    spec={
        "op": "avg_pool",
        "array": {"shape": [1, 1, 3, 7], "dtype": "float32", "layout": "contiguous", "seed": 0},
        "args": ["<x>"],
        "kwargs": {"kernel_size": 2, "stride": 2**63 - 1, "padding": 1},
    }
)
@example(  # out= the input itself gave wrong values
    spec={
        "op": "avg_pool",
        "array": {"shape": [1, 1, 4, 4], "dtype": "float64", "layout": "contiguous", "seed": 1},
        "args": ["<x>"],
        "kwargs": {"kernel_size": 3, "stride": 1, "padding": 1},
        "out": "input",
    }
)
@example(  # 0 channels, channels-last: ZeroDivisionError in the kernel
    spec={
        "op": "avg_pool",
        "array": {"shape": [1, 4, 4, 0], "dtype": "float32", "layout": "contiguous", "seed": 2},
        "args": ["<x>"],
        "kwargs": {"kernel_size": 2, "channels_last": True},
    }
)
@example(  # sizes past int64: OverflowError
    spec={
        "op": "avg_pool",
        "array": {"shape": [1, 1, 4, 4], "dtype": "float64", "layout": "contiguous", "seed": 3},
        "args": ["<x>"],
        "kwargs": {"kernel_size": 2, "stride": 2**64},
    }
)
@example(  # numpy's bools are bools
    spec={
        "op": "avg_pool",
        "array": {"shape": [1, 1, 5, 5], "dtype": "float64", "layout": "contiguous", "seed": 4},
        "args": ["<x>"],
        "kwargs": {"kernel_size": 2, "ceil_mode": np.True_},
    }
)
def test_avg_pool(worker, spec):
    _judge(worker, spec)


@FUZZ
@given(spec=windowed("max_pool"))
@example(  # an int64 input with a 2**40 stride hung the max kernel
    spec={
        "op": "max_pool",
        "array": {"shape": [3, 2, 3, 7], "dtype": "int64", "layout": "contiguous", "seed": 0},
        "args": ["<x>"],
        "kwargs": {"kernel_size": 2, "stride": 2**40, "padding": 1},
    }
)
@example(  # a read-only out= was a multi-line Numba TypingError
    spec={
        "op": "max_pool",
        "array": {
            "shape": [1, 1, 4, 4],
            "dtype": "float64",
            "layout": "contiguous",
            "seed": 1,
            "readonly": True,
        },
        "args": ["<x>"],
        "kwargs": {"kernel_size": 3, "stride": 1, "padding": 1},
        "out": "input",
    }
)
def test_max_pool(worker, spec):
    _judge(worker, spec)


@FUZZ
@given(spec=windowed("lp_pool"))
@example(  # an unknown convention was a plain ValueError
    spec={
        "op": "lp_pool",
        "array": {"shape": [1, 1, 4, 4], "dtype": "float64", "layout": "contiguous", "seed": 0},
        "args": ["<x>", 2, 2],
        "kwargs": {"convention": "tensorflow"},
    }
)
def test_lp_pool(worker, spec):
    _judge(worker, spec)


@FUZZ
@given(spec=st.one_of(adaptive("adaptive_avg_pool"), adaptive("adaptive_max_pool")))
@example(  # the spatial rank was inferred as 0 and the input came back unchanged
    spec={
        "op": "adaptive_avg_pool",
        "array": {"shape": [2, 5], "dtype": "float64", "layout": "contiguous", "seed": 0},
        "args": ["<x>", 2],
        "kwargs": {},
    }
)
@example(  # output_size=2**63: "zero-size array to reduction operation"
    spec={
        "op": "adaptive_avg_pool",
        "array": {"shape": [1, 1, 4, 4], "dtype": "float64", "layout": "contiguous", "seed": 0},
        "args": ["<x>", 2**63],
        "kwargs": {},
    }
)
@example(  # 2**31 - 1 outputs from an empty input: a table of 2**31 taps, killed for memory
    spec={
        "op": "adaptive_avg_pool",
        "array": {"shape": [0, 0, 1], "dtype": "float32", "layout": "contiguous", "seed": 0},
        "args": ["<x>", 2**31 - 1],
        "kwargs": {},
    }
)
@example(  # 1-D input: IndexError
    spec={
        "op": "adaptive_max_pool",
        "array": {"shape": [5], "dtype": "float64", "layout": "contiguous", "seed": 0},
        "args": ["<x>", 2],
        "kwargs": {},
    }
)
def test_adaptive_pool(worker, spec):
    _judge(worker, spec)


@FUZZ
@given(spec=blur())
@example(  # 1-D input: IndexError
    spec={
        "op": "blur_pool",
        "array": {"shape": [6], "dtype": "float64", "layout": "contiguous", "seed": 0},
        "args": ["<x>", 3, 2],
        "kwargs": {},
    }
)
def test_blur_pool(worker, spec):
    _judge(worker, spec)


@FUZZ
@given(
    op=st.sampled_from(["global_avg_pool", "global_max_pool"]),
    array=st.integers(1, 3).flatmap(lambda n: arrays(n, False)),
)
def test_global_pool(worker, op, array):
    _judge(worker, {"op": op, "array": array, "args": ["<x>"], "kwargs": {}})


def test_masked_arrays_are_refused_in_a_worker_too(worker):
    # masked arrays cannot be built from a spec; the in-process tests cover them
    # (tests/test_bad_input.py); here the worker itself is checked to report errors by class
    outcome, detail = worker.call(
        {
            "op": "avg_pool",
            "array": {"shape": [1, 1, 2, 2], "dtype": "complex64", "layout": "contiguous", "seed": 0},
            "args": ["<x>", 2],
            "kwargs": {},
        }
    )
    assert (outcome, detail.split(":", 1)[0]) == ("error", "builtins.TypeError")
