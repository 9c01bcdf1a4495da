"""One rule book: the same arguments give the same Window, or the same refusal, through every
door that reads them by a convention: `avgpool.conventions.window`, `avgpool.nn`'s modules
(``convention=``), `avgpool.inspect.window_for` / `shape_report` and the ``avgpool shape`` CLI.

Each row says which conventions accept the arguments; every other one must refuse them, with one
message wherever it is asked.
"""

import importlib.util

import pytest

from avgpool import AvgPoolError, Window, conventions
from avgpool.cli import main
from avgpool.conventions import CONVENTIONS
from avgpool.inspect import shape_report, window_for

HAS_TORCH = importlib.util.find_spec("torch") is not None
ALL = set(CONVENTIONS)

# (op, ndim, kernel, stride, padding, extra arguments, the conventions that accept them)
CASES = [
    ("avg", 2, 3, 2, 0, {}, ALL),
    # tf.nn pooling requires strides (nn built tensorflow windows with stride = kernel)
    ("avg", 2, 3, None, 0, {}, ALL - {"tensorflow"}),
    ("max", 1, 2, None, 0, {}, ALL - {"tensorflow"}),
    # numeric padding: TensorFlow's avg_pool and Keras' layers take only 'same' or 'valid'
    ("avg", 2, 3, 2, 1, {}, {"torch", "onnx", "flax"}),
    ("max", 2, 3, 2, 1, {}, {"torch", "onnx", "tensorflow", "flax"}),
    ("avg", 2, 3, 2, "same", {}, ALL - {"torch"}),
    ("max", 3, 2, 2, "same", {}, ALL - {"torch"}),
    ("avg", 2, 3, 2, "valid", {}, ALL - {"torch"}),
    ("avg", 2, 3, 2, "same_lower", {}, {"onnx"}),  # nn took it in tensorflow, keras, flax
    ("avg", 2, 3, 2, ((0, 1), (1, 0)), {}, {"onnx", "flax"}),
    ("max", 2, 3, 2, ((0, 1), (1, 0)), {}, {"onnx", "tensorflow", "flax"}),
    ("avg", 2, 3, 1, ((1, 1), (1, 1)), {}, {"torch", "onnx", "flax"}),  # symmetric pairs
    ("avg", 1, 3, 1, 2, {}, {"onnx", "flax"}),  # PyTorch: padding <= kernel_size // 2
    # dilation: PyTorch's max only; TensorFlow, Keras and Flax pooling have none
    ("max", 2, 3, 1, 1, {"dilation": 2}, {"torch", "onnx"}),
    ("avg", 2, 3, 1, 0, {"dilation": 2}, {"onnx"}),
    ("avg", 2, 3, 2, 1, {"ceil_mode": True}, {"torch", "onnx"}),
    ("avg", 2, 3, 2, 0, {"count_include_pad": True}, ALL - {"tensorflow", "keras"}),
    ("avg", 2, 3, 2, 1, {"count_include_pad": False}, {"torch", "onnx", "flax"}),
    ("avg", 2, 3, 2, 0, {"divisor_override": 2}, {"torch"}),
    ("max", 2, 3, 2, 0, {"divisor_override": 2}, set()),
    ("avg", 2, (3, 2), (2, 1), (1, 0), {}, {"torch", "onnx", "flax"}),
    ("lp", 2, 3, 2, 0, {}, {"torch", "onnx"}),
    ("lp", 1, 3, 2, 1, {}, {"onnx"}),
    ("lp", 1, 3, 2, 0, {"ceil_mode": True}, {"torch", "onnx"}),
]
IDS = [
    f"{c[0]}{c[1]}d-k{c[2]}-s{c[3]}-p{c[4]}-{'-'.join(f'{k}={v}' for k, v in c[5].items())}" for c in CASES
]


def outcome(build):
    """The Window built, or the refusal as (kind, message); avgpool.nn raises its refusals as
    TorchPoolError, an AvgPoolError that is also the RuntimeError torch.nn users catch."""
    try:
        return build()
    except AvgPoolError as exc:
        return ("refused", str(exc))
    except TypeError as exc:
        return ("TypeError", str(exc))


def built(op, ndim, kernel, stride, padding, extra, convention):
    return outcome(lambda: conventions.window(convention, op, ndim, kernel, stride, padding, **extra))


def module(op, ndim, kernel, stride, padding, extra, convention):
    """The avgpool.nn module for these arguments, or None where its signature cannot take them."""
    import avgpool.nn as apnn

    extra = dict(extra)
    if op == "avg" and "dilation" not in extra:
        cls = getattr(apnn, f"AvgPool{ndim}d")
        if ndim == 1 and "divisor_override" in extra:
            return None  # torch.nn.AvgPool1d has no divisor_override
        return lambda: cls(kernel, stride, padding, convention=convention, **extra)
    if op == "max" and not {"count_include_pad", "divisor_override"} & set(extra):
        cls = getattr(apnn, f"MaxPool{ndim}d")
        return lambda: cls(kernel, stride, padding, convention=convention, **extra)
    if op == "lp" and padding == 0 and not {"dilation", "count_include_pad"} & set(extra):
        cls = getattr(apnn, f"LPPool{ndim}d")
        return lambda: cls(2, kernel, stride, convention=convention, **extra)
    return None


def cli_argv(op, ndim, kernel, stride, padding, extra, convention):
    def ints(v):
        return "x".join(map(str, v)) if isinstance(v, tuple) else str(v)

    argv = ["shape", "x".join(["1", "1", *["9"] * ndim]), "-k", ints(kernel), "-c", convention, "--op", op]
    if stride is not None:
        argv += ["-s", ints(stride)]
    if isinstance(padding, tuple) and isinstance(padding[0], tuple):
        argv += ["-p", "x".join(f"{b}:{a}" for b, a in padding)]
    else:
        argv += ["-p", ints(padding)]
    if "dilation" in extra:
        argv += ["-d", ints(extra["dilation"])]
    if extra.get("ceil_mode"):
        argv += ["--ceil-mode"]
    if "count_include_pad" in extra:
        argv += ["--count-include-pad" if extra["count_include_pad"] else "--no-count-include-pad"]
    if "divisor_override" in extra:
        argv += ["--divisor-override", str(extra["divisor_override"])]
    return argv


@pytest.mark.parametrize("convention", CONVENTIONS)
@pytest.mark.parametrize(("op", "ndim", "kernel", "stride", "padding", "extra", "accepts"), CASES, ids=IDS)
def test_every_door_builds_the_same_window_or_refusal(
    capsys, convention, op, ndim, kernel, stride, padding, extra, accepts
):
    args = (op, ndim, kernel, stride, padding, extra)
    want = built(*args, convention)
    assert isinstance(want, Window) == (convention in accepts), want
    if isinstance(want, Window):
        assert want.convention == convention and want.ndim == ndim
    else:
        assert want[0] == "refused"

    if op != "lp":  # avgpool shape compares avg and max pooling
        assert outcome(lambda: window_for(convention, ndim, kernel, stride, padding, op=op, **extra)) == want
        report = outcome(
            lambda: shape_report(
                (1, 1, *[9] * ndim), kernel, stride, padding, convention=convention, op=op, **extra
            )
        )
        assert (report.window if hasattr(report, "window") else report) == want
        code = main(cli_argv(*args, convention))
        out, err = capsys.readouterr()
        if isinstance(want, Window):
            assert code == 0 and f"{op}_pool, {convention} convention" in out
        else:
            assert (code, err) == (2, f"avgpool shape: error: {want[1]}\n")

    if HAS_TORCH:
        make = module(*args, convention)
        if make is not None:
            got = outcome(make)
            assert (got.window if hasattr(got, "window") else got) == want


@pytest.mark.parametrize(
    ("convention", "op", "stride", "padding", "extra", "message"),
    [
        (
            "tensorflow",
            "avg",
            None,
            0,
            {},
            "tensorflow cannot express stride=None (tf.nn pooling requires strides)",
        ),
        (
            "tensorflow",
            "avg",
            2,
            1,
            {},
            "padding must be 0 for avg pooling in the tensorflow convention (explicit padding is "
            "tf.nn.max_pool only; tf.nn.avg_pool takes only 'SAME' or 'VALID'), got ((1, 1), (1, 1))",
        ),
        (
            "keras",
            "max",
            2,
            1,
            {},
            "padding must be 0 for max pooling in the keras convention (Keras pooling layers take only "
            "'same' or 'valid'), got ((1, 1), (1, 1))",
        ),
        (
            "tensorflow",
            "max",
            1,
            0,
            {"dilation": 2},
            "dilation must be 1 for max pooling in the tensorflow convention (tf.nn.avg_pool and max_pool "
            "take none), got (2, 2)",
        ),
        (
            "flax",
            "avg",
            2,
            "same_lower",
            {},
            "flax cannot express padding='same_lower' (its 'SAME' puts the odd padded cell at the end)",
        ),
        (
            "torch",
            "avg",
            2,
            ((0, 1), (0, 1)),
            {},
            "padding must be the same before and after in the torch convention (PyTorch pads both sides "
            "of an axis alike), got ((0, 1), (0, 1))",
        ),
        (
            "onnx",
            "avg",
            2,
            0,
            {"divisor_override": 2},
            "onnx cannot express divisor_override=2 (it is PyTorch's alone)",
        ),
        ("keras", "lp", 2, 0, {}, "keras cannot express lp pooling (it has avg, max pooling)"),
        (
            "caffe",
            "avg",
            2,
            0,
            {},
            "convention must be one of ('torch', 'onnx', 'tensorflow', 'keras', 'flax'), got 'caffe'",
        ),
    ],
)
def test_refusals_name_the_argument_the_value_and_the_rule(convention, op, stride, padding, extra, message):
    with pytest.raises(AvgPoolError) as caught:
        conventions.window(convention, op, 2, 3, stride, padding, **extra)
    assert str(caught.value) == message


def test_every_convention_has_rules_and_a_table_row():
    # a new convention is one RULES entry; the rows above then test it through every door
    assert CONVENTIONS == tuple(conventions.RULES)
    for convention in CONVENTIONS:
        assert any(convention in accepts for *_, accepts in CASES)
