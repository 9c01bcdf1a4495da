"""Window: geometry by hand-worked example, and every bad argument's message."""

import pytest

from avgpool import AvgPoolError, Window


@pytest.mark.parametrize(
    ("n", "kernel", "stride", "pads", "ceil", "out"),
    [
        (4, 2, 2, (0, 0), False, 2),
        (5, 2, 2, (0, 0), False, 2),  # floor drops the last cell
        (5, 2, 2, (0, 0), True, 3),  # ceil keeps a partial window over it
        (6, 3, 2, (1, 1), True, 4),  # room 5 -> ceil(5/2)+1 = 4, last starts at 5 < 6+1
        (5, 2, 2, (1, 1), True, 3),  # ceil gives 4, but window 3 starts at 6 >= 5+1: dropped
        (7, 3, 3, (0, 0), True, 3),
        (3, 3, 1, (0, 0), False, 1),  # kernel == input
        (10, 2, 3, (0, 0), False, 3),  # stride > kernel
        (1, 4, 1, (2, 1), False, 1),  # input smaller than the kernel, padding makes it fit
    ],
)
def test_output_length_by_hand(n, kernel, stride, pads, ceil, out):
    window = Window(kernel, stride, (pads,), ceil_mode=ceil)
    assert window.output_shape((1, 1, n)) == (1, 1, out)


def test_dilation_widens_the_span():
    window = Window(3, 1, dilation=2, ndim=1)
    (axis,) = window.resolve((7,))
    assert (axis.span, axis.out) == (5, 3)


@pytest.mark.parametrize(
    ("n", "kernel", "stride", "same", "lower"),
    [
        (5, 3, 2, ((1, 1),), ((1, 1),)),
        (4, 3, 2, ((0, 1),), ((1, 0),)),  # the odd cell at the end (upper) or start (lower)
        (224, 3, 2, ((0, 1),), ((1, 0),)),
        (6, 2, 2, ((0, 0),), ((0, 0),)),
        (7, 4, 1, ((1, 2),), ((2, 1),)),
    ],
)
def test_same_padding_by_hand(n, kernel, stride, same, lower):
    upper_window = Window(kernel, stride, "same", ndim=1)
    lower_window = Window(kernel, stride, "same_lower", ndim=1)
    assert upper_window.pads((n,)) == same
    assert lower_window.pads((n,)) == lower
    assert upper_window.output_shape((1, n))[-1] == -(-n // stride)
    assert lower_window.output_shape((1, n))[-1] == -(-n // stride)


def test_layouts_and_unbatched_shapes():
    first = Window((2, 3), padding=((0, 1), (1, 1)))
    last = first.replace(channels_last=True)
    assert first.output_shape((8, 3, 6, 7)) == (8, 3, 3, 3)
    assert first.output_shape((3, 6, 7)) == (3, 3, 3)
    assert last.output_shape((8, 6, 7, 3)) == (8, 3, 3, 3)
    assert last.output_shape((6, 7, 3)) == (3, 3, 3)


def test_global_window_covers_every_axis():
    window = Window(None, ndim=3)
    assert window.output_shape((2, 4, 5, 6, 7)) == (2, 4, 1, 1, 1)


def test_padding_forms_are_equivalent():
    assert Window(3, padding=1, ndim=2) == Window(3, padding=(1, 1)) == Window(3, padding=((1, 1), (1, 1)))
    assert Window(3, padding="valid", ndim=2).padding == ((0, 0), (0, 0))
    assert Window(3, padding="SAME_UPPER", ndim=2).padding == "same"


def test_window_is_frozen_and_hashable():
    window = Window(2, ndim=2)
    with pytest.raises(AttributeError):
        window.stride = (1, 1)
    assert len({window, Window(2, ndim=2)}) == 1


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        (
            {"kernel_size": (2, 0)},
            AvgPoolError,
            r"kernel_size must be >= 1 for every spatial axis, got \(2, 0\)",
        ),
        ({"kernel_size": 2, "stride": (2, 0)}, AvgPoolError, r"stride must be >= 1 .* got \(2, 0\)"),
        ({"kernel_size": 2, "stride": -1, "ndim": 1}, AvgPoolError, "stride must be >= 1"),
        ({"kernel_size": 2, "dilation": 0, "ndim": 2}, AvgPoolError, "dilation must be >= 1"),
        ({"kernel_size": 2, "padding": -1, "ndim": 2}, AvgPoolError, "padding must be >= 0"),
        ({"kernel_size": 2, "padding": "full", "ndim": 2}, AvgPoolError, "padding must be .* got 'full'"),
        ({"kernel_size": 2.5, "ndim": 1}, TypeError, "kernel_size must be an int"),
        ({"kernel_size": True, "ndim": 1}, TypeError, "kernel_size must be an int"),
        ({"kernel_size": (2, 2), "stride": (1, 1, 1)}, AvgPoolError, "stride must have 2 entries"),
        ({"kernel_size": 2}, AvgPoolError, "spatial rank is unknown"),
        ({"kernel_size": 2, "ndim": 4}, AvgPoolError, "ndim .* must be 1, 2 or 3, got 4"),
        (
            {"kernel_size": 2, "divisor_override": 0, "ndim": 1},
            AvgPoolError,
            "divisor_override must be a non-zero int",
        ),
        ({"kernel_size": 2, "ceil_mode": "yes", "ndim": 1}, TypeError, "ceil_mode must be a bool"),
        ({"kernel_size": None, "stride": 2, "ndim": 1}, AvgPoolError, "global window"),
        (
            {"kernel_size": 2, "padding": ((1, 1),), "ndim": 2},
            AvgPoolError,
            "must hold 2 .before, after. pairs",
        ),
    ],
)
def test_bad_arguments_name_themselves(kwargs, error, message):
    with pytest.raises(error, match=message):
        Window(**kwargs)


def test_window_that_fits_nowhere():
    with pytest.raises(AvgPoolError, match="no window fits"):
        Window(5, ndim=1).output_shape((1, 1, 4))
    with pytest.raises(AvgPoolError, match="no window fits"):
        Window(3, dilation=3, ndim=1).output_shape((1, 1, 6))


def test_wrong_input_rank():
    with pytest.raises(AvgPoolError, match=r"4 \(batched\) dimensions for a 2-d window, got shape \(5, 5\)"):
        Window(2, ndim=2).output_shape((5, 5))


def test_avg_pool_error_is_a_value_error():
    assert issubclass(AvgPoolError, ValueError)


# -- kept windows: the same arguments get the same Window, refusals stay refusals --------------


def test_kept_windows_return_one_window_per_arguments():
    from avgpool.conventions import from_torch

    first = from_torch(3, 2, 1, ndim=2)
    assert from_torch(3, 2, 1, ndim=2) is first
    assert from_torch(3, 2, 1, ndim=2, channels_last=True) is not first
    assert from_torch(3, 2, 1, ndim=2, channels_last=True) == first.replace(channels_last=True)
    # the same geometry, its own entry; a max has no divisor, so its Window never counts padding
    assert from_torch(3, 2, 1, ndim=2, op="max") == first.replace(count_include_pad=False)
    assert from_torch([3, 3], [2, 2], 1) == first  # lists: built afresh, not kept


@pytest.mark.parametrize(
    "kwargs,error",
    [
        ({"kernel_size": 2.0}, TypeError),
        ({"kernel_size": True}, TypeError),
        ({"kernel_size": (2, 2.0)}, TypeError),
        ({"kernel_size": 2, "ceil_mode": 2}, TypeError),
        ({"kernel_size": 2, "padding": 1.0}, TypeError),
        ({"kernel_size": 2, "padding": 2}, AvgPoolError),
    ],
)
def test_kept_windows_never_let_a_refused_value_through(kwargs, error):
    from avgpool.conventions import from_torch

    # the accepted twin of each bad value is kept first: 2 for 2.0 and True, 1 for 1.0, ...
    from_torch(2, ndim=2)
    from_torch((2, 2), ndim=2)
    from_torch(2, ceil_mode=True, ndim=2)
    from_torch(2, padding=1, ndim=2)
    for _ in range(2):
        with pytest.raises(error):
            from_torch(**kwargs, ndim=2)
