"""Extreme geometry: huge strides, sizes past int64, results too large to allocate.

Each call that once hung inside a compiled kernel runs in a child process with a deadline, so
a regression fails here instead of hanging the suite.
"""

import subprocess
import sys
import textwrap

import numpy as np
import pytest

import avgpool as ap
from avgpool.window import MAX_AXIS

DEADLINE_S = 120  # a first call compiles its kernels (seconds); the calls themselves are instant


def _run_child(code: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=DEADLINE_S,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_a_stride_past_the_padded_input_gives_one_window_at_once():
    out = _run_child(
        """
        import numpy as np, avgpool as ap
        x = np.arange(21, dtype=np.float32).reshape(1, 1, 3, 7)
        y = ap.avg_pool(x, 2, 2**63 - 1, 1)
        # one window at the top-left corner: the real cell 0 and three padded zeros
        print(y.shape, y.ravel().tolist())
        z = ap.max_pool(np.arange(126, dtype=np.int64).reshape(3, 2, 3, 7), 2, 2**40, 1)
        print(z.shape, z[:, :, 0, 0].ravel().tolist())
        """
    )
    first, second = out.splitlines()
    assert first == "(1, 1, 1, 1) [0.0]"
    assert second == "(3, 2, 1, 1) [0, 21, 42, 63, 84, 105]"


@pytest.mark.parametrize("op", ["avg", "max"])
@pytest.mark.parametrize("layout", ["channels_first", "channels_last"])
def test_huge_strides_and_dilations_match_the_reference(op, layout):
    cl = layout == "channels_last"
    x = np.random.default_rng(0).normal(size=(2, 3, 9, 11) if not cl else (2, 9, 11, 3))
    pool = ap.avg_pool if op == "avg" else ap.max_pool
    cases = [
        dict(kernel_size=3, stride=2**62, padding=1),
        dict(kernel_size=(2, 3), stride=(1, 2**63 - 1)),
        dict(kernel_size=2, stride=2**40, dilation=(1, 5), padding=1),
        dict(kernel_size=(1, 4), stride=(3, 2**35), dilation=(2**62, 1), ceil_mode=True),
        dict(kernel_size=20, stride=2**50, ceil_mode=True),
    ]
    for kwargs in cases:
        y = pool(x, channels_last=cl, **kwargs)
        with ap.use_backend("reference"):
            expected = pool(x, channels_last=cl, **kwargs)
        np.testing.assert_allclose(y, expected, rtol=1e-12, err_msg=str(kwargs))


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        (dict(kernel_size=2**63), "kernel_size"),
        (dict(kernel_size=2, stride=2**64), "stride"),
        (dict(kernel_size=2, padding=2**63), "padding"),
        (dict(kernel_size=2, dilation=-(2**63) - 1), "dilation"),
    ],
)
def test_values_past_int64_are_refused_by_name(kwargs, name):
    with pytest.raises(ap.AvgPoolError, match=f"{name} must fit a 64-bit integer"):
        ap.avg_pool(np.zeros((1, 1, 4, 4)), **kwargs)


def test_sizes_past_int64_are_refused_by_name():
    with pytest.raises(ap.AvgPoolError, match="output_size must fit a 64-bit integer"):
        ap.adaptive_avg_pool(np.zeros((1, 1, 4, 4)), 2**63)
    with pytest.raises(ap.AvgPoolError, match="input_shape must fit a 64-bit integer"):
        ap.avg_pool_backward(np.zeros((1, 1, 1, 1)), (1, 1, 2**63, 4), 2)


def test_an_axis_longer_than_the_limit_is_refused_before_any_work():
    with pytest.raises(ap.AvgPoolError, match=f"exceeds the limit of {MAX_AXIS} cells per axis"):
        ap.avg_pool(np.zeros((1, 1, 4)), 3, 1, 2**31)
    with pytest.raises(ap.AvgPoolError, match="output_size must be at most"):
        ap.adaptive_avg_pool(np.zeros((1, 1, 4, 4)), 2**40)
    with pytest.raises(ap.AvgPoolError, match="span on spatial axis 0"):
        ap.avg_pool(np.zeros((1, 1, 4)), 2**31, 2**62, ceil_mode=True)


@pytest.mark.parametrize(
    "call",
    [
        lambda: ap.avg_pool(np.zeros((1, 1, 4, 4)), 1, 1, 2**29),
        lambda: ap.max_pool(np.zeros((64, 64, 1, 1), np.float32), 1, 1, 2**18),
        lambda: ap.avg_pool_backward(np.ones((1, 1, 1, 1)), (1, 1, 2**30, 2**30), 2**30),
        lambda: ap.adaptive_avg_pool(np.zeros((1, 1, 4, 4)), 2**30),
        lambda: ap.adaptive_avg_pool_backward(np.zeros((1, 1, 1, 1)), (1, 1, 2**30, 2**30)),
    ],
)
def test_a_result_larger_than_memory_is_refused_before_allocation(call):
    with pytest.raises(ap.AvgPoolError, match=r"would have shape .* GiB, more than the .* GiB of memory"):
        call()


def test_the_reference_refuses_tables_past_its_scratch_limit():
    x = np.zeros((1, 1, 2**13))
    with ap.use_backend("reference"), pytest.raises(ap.AvgPoolError, match="compiled kernels"):
        ap.avg_pool(x, 2**12, 1)
    assert ap.avg_pool(x, 2**12, 1).shape == (1, 1, 2**12 + 1)


@pytest.mark.parametrize("shape", [(0, 0, 1), (1, 1, 1)])
def test_adaptive_tables_past_the_limit_are_refused_not_allocated(shape):
    with pytest.raises(ap.AvgPoolError, match="needs a table of about"):
        ap.adaptive_avg_pool(np.zeros(shape, np.float32), 2**31 - 1)
