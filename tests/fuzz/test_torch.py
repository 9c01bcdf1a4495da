"""Fuzzing the torch front end against PyTorch itself: for the same call, avgpool.torch gives
torch.nn.functional's values and strides, or an error of the same built-in class.

Inputs are contiguous, channels-last, sliced channels-last or strided CPU tensors; geometry
arguments range over small values, zero and negatives. Each call runs in the worker process
with its deadline, as in test_ops.
"""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from .test_ops import FUZZ

pytest.importorskip("torch")

SMALL = st.integers(-1, 5)
#: Calls PyTorch answers and avgpool refuses on purpose (README, Reliability): an adaptive
#: output size of 0, and an adaptive average to size 1 of an empty axis (PyTorch's NaN).
DELIBERATE = ("output_size must be >= 1", "Expected input to have non-zero size")


def _per_axis(ndim: int) -> st.SearchStrategy:
    return st.one_of(SMALL, st.lists(SMALL, min_size=ndim, max_size=ndim).map(tuple))


@st.composite
def calls(draw):
    ndim = draw(st.integers(1, 3))
    kind = draw(st.sampled_from(["avg", "max", "lp", "adaptive_avg", "adaptive_max"]))
    spatial = draw(st.lists(st.integers(0, 7), min_size=ndim, max_size=ndim))
    shape = [draw(st.integers(0, 2)), draw(st.integers(0, 3)), *spatial]
    if draw(st.booleans()) and draw(st.booleans()):
        shape = shape[1:]
    array = {
        "shape": shape,
        # integer averages are refused on purpose (a TypeError; PyTorch truncates them)
        "dtype": draw(
            st.sampled_from(["float32", "float64", "float32", *(["int64"] if "max" in kind else [])])
        ),
        "layout": draw(st.sampled_from(["contiguous", "channels_last", "channels_last_sliced", "strided"])),
        "specials": draw(st.booleans()),
        "seed": draw(st.integers(0, 2**16)),
    }
    name = f"{kind}_pool{ndim}d"
    if kind.startswith("adaptive"):
        size = draw(st.one_of(st.integers(-1, 6), st.lists(st.integers(-1, 6), max_size=ndim + 1).map(tuple)))
        args: list = [size]
        kwargs: dict = {}
    elif kind == "lp":
        kernel = draw(SMALL if ndim == 1 else _per_axis(ndim))  # torch's lp_pool1d takes an int only
        args = [draw(st.sampled_from([1, 2, 3])), kernel]
        kwargs = {"stride": draw(st.one_of(st.none(), _per_axis(ndim))), "ceil_mode": draw(st.booleans())}
    else:
        args = [draw(_per_axis(ndim))]
        kwargs = {
            "stride": draw(st.one_of(st.none(), _per_axis(ndim))),
            "padding": draw(_per_axis(ndim)),
            "ceil_mode": draw(st.booleans()),
        }
        if kind == "avg":
            kwargs["count_include_pad"] = draw(st.booleans())
            if ndim > 1:  # PyTorch's avg_pool1d has no divisor_override
                kwargs["divisor_override"] = draw(st.sampled_from([None, None, 1, 3, -2, 0]))
        else:
            kwargs["dilation"] = draw(_per_axis(ndim))
            kwargs["return_indices"] = draw(st.booleans())
    return {"torch": True, "op": name, "array": array, "args": args, "kwargs": kwargs}


@FUZZ
@given(spec=calls())
@example(  # a channels-last input sliced along C: torch keeps it channels-last
    spec={
        "torch": True,
        "op": "avg_pool2d",
        "array": {"shape": [2, 3, 6, 6], "dtype": "float32", "layout": "channels_last_sliced", "seed": 0},
        "args": [2],
        "kwargs": {},
    }
)
@example(  # adaptive pooling of a 2-D tensor is of one unbatched (C, L) signal
    spec={
        "torch": True,
        "op": "adaptive_avg_pool1d",
        "array": {"shape": [2, 5], "dtype": "float64", "layout": "contiguous", "seed": 0},
        "args": [2],
        "kwargs": {},
    }
)
@example(  # integer adaptive max: torch refuses it
    spec={
        "torch": True,
        "op": "adaptive_max_pool2d",
        "array": {"shape": [1, 2, 4, 4], "dtype": "int64", "layout": "contiguous", "seed": 0},
        "args": [2],
        "kwargs": {},
    }
)
def test_torch_functions_match_pytorch(worker, spec):
    outcome, detail = worker.call(spec)
    if outcome == "mismatch" and any(reason in detail for reason in DELIBERATE):
        return
    assert outcome == "ok", f"{spec}\n{outcome}: {detail}"
