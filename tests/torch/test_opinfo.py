"""PyTorch's own OpInfo samples and error inputs for its pooling functions, run on avgpool.torch.

The samples and the expected errors (class and message pattern) come from the installed torch
(``torch.testing._internal.common_methods_invocations``), so they follow its version.
"""

from __future__ import annotations

import re

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("expecttest")  # torch's test helpers import it

import avgpool.torch as apt  # noqa: E402

NAMES = [f"{kind}_pool{n}d" for kind in ("avg", "max", "adaptive_avg", "adaptive_max") for n in (1, 2, 3)]


def _opinfos():
    from torch.testing._internal.common_methods_invocations import op_db

    wanted = {f"nn.functional.{name}" for name in NAMES}
    return [op for op in op_db if op.name in wanted]


@pytest.fixture(scope="module")
def opinfos():
    return _opinfos()


def _layout(t):
    """The strides that matter: those of axes longer than 1."""
    return tuple(st for n, st in zip(t.shape, t.stride()) if n > 1)


def _ours(op):
    return getattr(apt, op.name.rsplit(".", 1)[-1])


def test_every_pooling_opinfo_is_covered(opinfos):
    assert sorted({op.name.rsplit(".", 1)[-1] for op in opinfos}) == sorted(NAMES)


def test_error_inputs_raise_what_pytorch_raises(opinfos):
    checked, failures = 0, []
    for op in opinfos:
        for error in op.error_inputs("cpu"):
            sample = error.sample_input
            checked += 1
            try:
                _ours(op)(sample.input, *sample.args, **sample.kwargs)
            except Exception as exc:  # the class is what is checked
                if not isinstance(exc, error.error_type) or not re.search(error.error_regex, str(exc)):
                    failures.append(f"{op.name} {sample.kwargs}: {type(exc).__name__}: {exc}")
            else:
                failures.append(f"{op.name} {sample.kwargs}: no error (expected {error.error_regex!r})")
    assert checked >= 60 and not failures, "\n".join(failures)


def test_samples_match_pytorch_values_and_layout(opinfos):
    checked, failures = 0, []
    for op in opinfos:
        for dtype in (torch.float32, torch.float64):
            for sample in op.sample_inputs("cpu", dtype, requires_grad=False):
                checked += 1
                expected = op(sample.input, *sample.args, **sample.kwargs)
                got = _ours(op)(sample.input, *sample.args, **sample.kwargs)
                pairs = zip(expected, got) if isinstance(expected, tuple) else [(expected, got)]
                for e, g in pairs:
                    scale = 1 + e.abs().nan_to_num(0, 0, 0).max().item() if e.numel() else 1
                    atol = (1e-5 if dtype == torch.float32 else 1e-12) * scale
                    if e.shape != g.shape or not torch.allclose(e, g, rtol=0, atol=atol, equal_nan=True):
                        failures.append(f"{op.name} {tuple(sample.input.shape)} {sample.kwargs}: values")
                    elif e.numel() > 1 and _layout(e) != _layout(g):
                        failures.append(
                            f"{op.name} {tuple(sample.input.shape)} {sample.kwargs}: strides "
                            f"{g.stride()} vs {e.stride()}"
                        )
    assert checked > 100 and not failures, "\n".join(failures[:40])


@pytest.mark.parametrize(
    ("name", "args", "x"),
    [
        ("AvgPool2d", (2,), (1, 0, 4, 4)),
        ("MaxPool2d", (2,), (1, 0, 4, 4)),
        ("MaxPool3d", (2,), (2, 1, 0, 4, 4)),
        ("LPPool2d", (2, 2), (1, 3, 0, 4)),
        ("AdaptiveAvgPool2d", (2,), (1, 2, 0, 4)),
        ("AdaptiveMaxPool2d", (2,), (1, 0, 4, 4)),
    ],
)
def test_modules_refuse_what_torch_nn_refuses(name, args, x):
    import avgpool.nn as apnn

    x = torch.zeros(x)
    with pytest.raises(RuntimeError):
        getattr(torch.nn, name)(*args)(x)
    with pytest.raises(RuntimeError) as ours:
        getattr(apnn, name)(*args)(x)
    assert isinstance(ours.value, ValueError)  # and an AvgPoolError


def test_modules_refuse_integer_adaptive_max_as_torch_nn_does():
    import avgpool.nn as apnn

    x = torch.zeros(1, 2, 4, 4, dtype=torch.int64)
    with pytest.raises(RuntimeError, match="not implemented for 'Long'"):
        torch.nn.AdaptiveMaxPool2d(2)(x)
    with pytest.raises(RuntimeError, match="not implemented for 'Long'"):
        apnn.AdaptiveMaxPool2d(2)(x)
