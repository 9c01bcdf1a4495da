"""Lint rules for pooling layers: stable IDs, severities, one-line fixes (docs/lint-rules.md).

Each rule looks at one `PoolLayer` (with a feeding Pad folded in where it can be, see
`PoolLayer.effective`) and, for the portability rules, at a ``target`` convention: what the
model means has to be expressible where it is going.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from avgpool._errors import AvgPoolError
from avgpool.conventions import RULES as CONVENTION_RULES
from avgpool.inspect.layers import Inventory, PoolLayer
from avgpool.reference import pool_taps
from avgpool.window import Axis, Window

__all__ = ["RULES", "SEVERITIES", "TARGETS", "Finding", "Rule", "exceeds", "lint"]

SEVERITIES = ("info", "warning", "error")


@dataclass(frozen=True)
class Rule:
    id: str
    name: str
    severity: str
    summary: str
    fix: str


RULES = {
    r.id: r
    for r in (
        Rule(
            "AP101",
            "edge-truncation",
            "warning",
            "input cells at the end of an axis that no window reads",
            "pad the input (or use ceil_mode) so the last window reaches the edge, or crop on purpose",
        ),
        Rule(
            "AP102",
            "ceil-window-in-padding",
            "warning",
            "ceil mode dropped a last window that would start in the padding",
            "use floor mode, or pads that make the ceil window start inside the input",
        ),
        Rule(
            "AP103",
            "padding-not-expressible",
            "error",
            "padding the target convention cannot express",
            "add an explicit pad op before the pool in the target, or change the padding to one it has",
        ),
        Rule(
            "AP104",
            "count-include-pad-mismatch",
            "warning",
            "padded cells counted in the average differently from the target's convention",
            "set count_include_pad explicitly in the target, or pad explicitly and pool with VALID",
        ),
        Rule(
            "AP105",
            "kernel-larger-than-input",
            "error",
            "the window's span is larger than the padded input",
            "use a global pool, or a smaller kernel, or check the input size the model was built for",
        ),
        Rule(
            "AP106",
            "stride-exceeds-kernel",
            "warning",
            "the stride is larger than the window, so cells between windows are skipped",
            "use stride <= kernel, or say so: subsample with a strided slice",
        ),
        Rule(
            "AP107",
            "downsampling-without-antialiasing",
            "info",
            "a strided max pool subsamples without a low-pass filter (aliasing, shift variance)",
            "max pool with stride 1, then avgpool.blur_pool with the stride (MaxBlurPool)",
        ),
        Rule(
            "AP108",
            "adaptive-export-fixed-size",
            "warning",
            "adaptive pooling that exports as a fixed kernel, valid for one input size only",
            "use a global pool (output size 1), or export with the input size you deploy and pin it",
        ),
        Rule(
            "AP109",
            "fixed-size-global-pool",
            "warning",
            "a fixed-kernel pool that covers the whole input: a global pool valid for one size",
            "replace it with GlobalAveragePool/GlobalMaxPool (AdaptiveAvgPool2d(1) in PyTorch)",
        ),
        Rule(
            "AP110",
            "pad-op-before-pool",
            "warning",
            "an explicit pad op feeding a pool that pooling padding cannot reproduce",
            "pad with -inf before a max pool (or use the pool's own padding); keep zeros only for averages",
        ),
        Rule(
            "AP111",
            "feature-not-expressible",
            "error",
            "ceil mode, dilation, divisor_override or the rank that the target cannot express",
            "compute the geometry explicitly (pad, then pool in floor mode) or keep the layer a custom op",
        ),
        Rule(
            "AP112",
            "global-pool-in-disguise",
            "info",
            "a mean/max reduction over every spatial axis: global pooling not written as one",
            "write GlobalAveragePool/GlobalMaxPool (or AdaptiveAvgPool2d(1)) so tools see a pool",
        ),
        Rule(
            "AP113",
            "pad-not-smaller-than-kernel",
            "error",
            "an explicit pad as long as the kernel or longer, so whole windows can lie in the padding",
            "pad at most kernel - 1 on each side (PyTorch: kernel // 2), or pad explicitly and pool VALID",
        ),
    )
}


@dataclass(frozen=True)
class Finding:
    """One rule firing on one layer."""

    rule: str
    severity: str
    layer: str
    index: int
    message: str
    fix: str

    @property
    def name(self) -> str:
        return RULES[self.rule].name

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "name": self.name,
            "severity": self.severity,
            "layer": self.layer,
            "index": self.index,
            "message": self.message,
            "fix": self.fix,
        }


@dataclass(frozen=True)
class Target:
    """What a deployment target's pooling can express (from each framework's documentation)."""

    name: str
    padding: str  # "any", "symmetric" (<= kernel//2), "same_valid"
    explicit_max_padding: bool
    ceil_mode: bool
    dilation: str  # "all", "max", "none"
    include_pad: tuple[bool, ...]
    default_include_pad: bool
    divisor_override: bool
    ranks: tuple[int, ...]


def target_of(convention: str) -> Target:
    """A convention's target, read from its rules in `avgpool.conventions.RULES`."""
    rules = CONVENTION_RULES[convention]
    if rules.symmetric_padding:
        padding = "symmetric"
    elif "avg" in rules.explicit_padding:
        padding = "any"
    else:
        padding = "same_valid"
    dilates = set(rules.dilates)
    dilation = "all" if {"avg", "max"} <= dilates else "max" if "max" in dilates else "none"
    return Target(
        convention,
        padding,
        "max" in rules.explicit_padding,
        rules.ceil_mode,
        dilation,
        (True, False) if rules.may_count_padding else (False,),
        rules.counts_padding,
        rules.divisor_override,
        (1, 2, 3),
    )


#: Every convention avgpool reproduces, and two deployment targets that are lint's alone.
TARGETS = {
    **{name: target_of(name) for name in CONVENTION_RULES},
    # TFLite AVERAGE_POOL_2D / MAX_POOL_2D / L2_POOL_2D: SAME/VALID, 2-D only
    "tflite": Target("tflite", "same_valid", False, False, "none", (False,), False, False, (2,)),
    # Core ML (MIL avg_pool/max_pool): custom pads, ceil_mode, exclude_padding_from_average
    "coreml": Target("coreml", "any", True, True, "none", (True, False), True, False, (1, 2, 3)),
}


def _rank(severity: str) -> int:
    return SEVERITIES.index(severity)


def exceeds(findings: Iterable[Finding], fail_on: str) -> bool:
    """Whether any finding is at or above ``fail_on`` (a severity, or "never")."""
    if fail_on == "never":
        return False
    if fail_on not in SEVERITIES:
        raise AvgPoolError(f"fail_on must be one of {(*SEVERITIES, 'never')}, got {fail_on!r}")
    return any(_rank(f.severity) >= _rank(fail_on) for f in findings)


def lint(
    inventory: Inventory | Sequence[PoolLayer],
    target: str | None = None,
    *,
    disable: Sequence[str] = (),
) -> tuple[Finding, ...]:
    """Run every rule on every layer; ``target`` adds the portability rules (AP103, AP104, AP111).

    Findings come in layer order, then by rule ID.
    """
    if target is not None and target not in TARGETS:
        raise AvgPoolError(f"target must be one of {tuple(TARGETS)}, got {target!r}")
    unknown = set(disable) - set(RULES)
    if unknown:
        raise AvgPoolError(f"unknown rule IDs to disable: {sorted(unknown)}; known: {', '.join(RULES)}")
    layers = inventory.layers if isinstance(inventory, Inventory) else tuple(inventory)
    findings: list[Finding] = []
    for layer in layers:
        for rule_id, message, severity in _check(layer, TARGETS.get(target) if target else None):
            if rule_id in disable:
                continue
            rule = RULES[rule_id]
            findings.append(
                Finding(rule_id, severity or rule.severity, layer.name, layer.index, message, rule.fix)
            )
    return tuple(sorted(findings, key=lambda f: (f.index, f.rule)))


def _fmt(values: Sequence[Any]) -> str:
    return "x".join(str(v) for v in values)


def _ranges(cells: Sequence[int]) -> str:
    out: list[str] = []
    for c in cells:
        if out and isinstance(out[-1], list) and out[-1][1] == c - 1:
            out[-1][1] = c
        else:
            out.append([c, c])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in out)


def _pad_vs_kernel(window: Window | None):
    """ONNX Runtime refuses a node whose explicit pads are not smaller than kernel_shape, and
    PyTorch any pad over kernel // 2: a window could then read padding only."""
    if window is None or window.kernel_size is None or not isinstance(window.padding, tuple):
        return
    long = [
        f"axis {i}: pads {before}:{after} for kernel {k}"
        for i, ((before, after), k) in enumerate(zip(window.padding, window.kernel_size))
        if before >= k or after >= k
    ]
    if long:
        yield "AP113", "; ".join(long) + " (ONNX Runtime refuses pads >= kernel_shape)", None


def _pool_module(written_as: str | None) -> bool:
    """Whether the source wrote a pooling module (the exporter lowered it to a reduction)."""
    return written_as is not None and written_as.rsplit(".", 1)[-1].endswith(
        ("Pool", "Pool1d", "Pool2d", "Pool3d")
    )


def _check(layer: PoolLayer, target: Target | None):
    """Yield (rule id, message, severity or None for the rule's own)."""
    if layer.source_op in (
        "ReduceMean",
        "ReduceMax",
        "Tensor.mean",
        "torch.mean",
        "Tensor.amax",
        "torch.amax",
    ) and not _pool_module(layer.written_as):
        yield "AP112", f"{layer.source_op} over all spatial axes is a {layer.op.replace('_', ' ')} pool", None
    if layer.op.startswith("adaptive"):
        yield from _adaptive(layer)
        return
    effective = layer.effective()
    if layer.pad is not None and effective is None:
        yield "AP110", _pad_message(layer), "info" if layer.pad.mode != "constant" else None
    yield from _pad_vs_kernel(layer.window)
    window, shape = effective if effective is not None else (layer.window, layer.input_shape)
    if window is None or shape is None:
        return
    spatial = tuple(shape[-window.ndim :])
    if window.kernel_size is None:
        return
    if _too_large(window, spatial):
        yield "AP105", _too_large(window, spatial), None
        return
    axes = window.resolve(spatial)
    yield from _coverage(axes)
    yield from _ceil(window, axes)
    if layer.op == "max" and any(a.stride > 1 for a in axes):
        yield "AP107", f"max pool with stride {_fmt([a.stride for a in axes])} and no blur before it", None
    if all(a.out == 1 and a.kernel == a.size and not (a.pad_before or a.pad_after) for a in axes):
        yield "AP109", f"kernel {_fmt([a.kernel for a in axes])} equals the input {_fmt(spatial)}", None
    if target is not None:
        yield from _portability(layer, window, axes, spatial, target)


def _pad_message(layer: PoolLayer) -> str:
    pad = layer.pad
    assert pad is not None
    pads = ", ".join(f"{b}/{a}" for b, a in pad.pads)
    if pad.mode != "constant":
        return (
            f"{pad.mode} pad {pads} ({pad.name}) before the {layer.op} pool: no pooling padding reproduces it"
        )
    if layer.op == "max":
        return f"pad with {pad.value:g} ({pad.name}) before a max pool: padded cells can win the max"
    return f"pad with {pad.value:g} ({pad.name}) before an {layer.op} pool: padded cells enter the result"


def _too_large(window: Window, spatial: Sequence[int]) -> str:
    assert window.kernel_size is not None
    problems = []
    for i, (n, k, d) in enumerate(zip(spatial, window.kernel_size, window.dilation)):
        span = d * (k - 1) + 1
        if isinstance(window.padding, str):
            if window.padding != "valid":
                continue
            before = after = 0
        else:
            before, after = window.padding[i]
        if span > n + before + after:
            problems.append(f"axis {i}: span {span} > {n}+{before}+{after}")
    return "; ".join(problems)


def _coverage(axes: Sequence[Axis]):
    trailing, skipped = [], []
    for i, axis in enumerate(axes):
        taps = pool_taps(axis)
        covered = np.zeros(axis.size, dtype=bool)
        covered[taps.pos[taps.real]] = True
        missing = np.flatnonzero(~covered)
        if missing.size == 0:
            continue
        last = int(np.flatnonzero(covered).max()) if covered.any() else -1
        tail = [int(c) for c in missing if c > last]
        inner = [int(c) for c in missing if c < last]
        if tail:
            trailing.append(f"axis {i}: {len(tail)} of {axis.size} ({_ranges(tail)})")
        if inner and axis.stride > axis.span:
            skipped.append(
                f"axis {i}: stride {axis.stride} > span {axis.span}, {len(inner)} cells never read"
            )
    if trailing:
        yield "AP101", "never read: " + "; ".join(trailing), None
    if skipped:
        yield "AP106", "; ".join(skipped), None


def _ceil(window: Window, axes: Sequence[Axis]):
    if not window.ceil_mode or isinstance(window.padding, str):
        return
    dropped = []
    for i, a in enumerate(axes):
        room = a.size + a.pad_before + a.pad_after - a.span
        raw = -(-room // a.stride) + 1
        if raw > a.out:
            dropped.append(f"axis {i}: window {raw - 1} would start at {(raw - 1) * a.stride - a.pad_before}")
    if dropped:
        yield (
            "AP102",
            "; ".join(dropped) + " (in the padding; dropped by PyTorch and ORT, kept by some runtimes)",
            None,
        )


def _adaptive(layer: PoolLayer):
    spatial, size = layer.spatial_shape, layer.output_size
    if spatial is None or size is None:
        return
    outs = [n if o is None else o for n, o in zip(spatial, size)]
    if all(o == 1 for o in outs):
        return
    if all(n % o == 0 for n, o in zip(spatial, outs)):
        kernel = [n // o for n, o in zip(spatial, outs)]
        yield (
            "AP108",
            f"output {_fmt(outs)} from {_fmt(spatial)} exports as kernel = stride = {_fmt(kernel)}: "
            "other input sizes give other output sizes",
            None,
        )
    else:
        yield (
            "AP108",
            f"output {_fmt(outs)} from {_fmt(spatial)}: windows of unequal size, no fixed-kernel export "
            "(torch.onnx refuses it)",
            "error",
        )


def _same_result(window: Window, spatial: Sequence[int], axes: Sequence[Axis], **changes: Any) -> bool:
    """Whether the window with these changes reads exactly the same cells and padding."""
    try:
        other = window.replace(**changes).resolve(spatial)
    except AvgPoolError:
        return False
    return all(
        o.out == a.out and o.pad_before == a.pad_before and _used_pads(o) == _used_pads(a)
        for o, a in zip(other, axes)
    )


def _portability(layer: PoolLayer, window: Window, axes: Sequence[Axis], spatial: Sequence[int], t: Target):
    pads = tuple(_used_pads(a) for a in axes)
    kernel = tuple(a.kernel for a in axes)
    padded = any(p for pair in pads for p in pair)
    ceil = window.ceil_mode
    if window.ndim not in t.ranks:
        yield (
            "AP111",
            f"{t.name} pools {', '.join(f'{r}-d' for r in t.ranks)} only; this is {window.ndim}-d",
            None,
        )
    if ceil and not t.ceil_mode:
        if _same_result(window, spatial, axes, ceil_mode=False):
            ceil = False
        else:
            yield "AP111", f"ceil_mode changes the output here and {t.name} has no ceil mode", None
    dilated = any(d > 1 for d in window.dilation)
    if dilated and (t.dilation == "none" or (t.dilation == "max" and layer.op != "max")):
        yield "AP111", f"dilation {_fmt(window.dilation)}: {t.name} has no dilated {layer.op} pooling", None
    if window.divisor_override is not None and not t.divisor_override:
        yield "AP111", f"divisor_override={window.divisor_override}: {t.name} has none", None
    if padded:
        problem = None
        if t.padding == "symmetric":
            symmetric = tuple(a.pad_before for a in axes)
            if not _same_result(window, spatial, axes, padding=symmetric, ceil_mode=ceil):
                problem = f"padding {_pairs(pads)} (no symmetric padding reads the same cells)"
            elif any(b > k // 2 for b, k in zip(symmetric, kernel)):
                problem = (
                    f"padding {_fmt(symmetric)} larger than kernel//2 = {_fmt([k // 2 for k in kernel])}"
                )
        elif t.padding == "same_valid" and not (t.explicit_max_padding and layer.op == "max"):
            if not any(
                _same_result(window, spatial, axes, padding=p, ceil_mode=False) for p in ("same", "valid")
            ):
                same = window.replace(padding="same", ceil_mode=False).pads(spatial)
                problem = f"padding {_pairs(pads)}: neither VALID nor SAME ({_pairs(same)}) for this input"
        if problem:
            yield "AP103", f"{t.name} cannot express {problem}", None
    if layer.op == "avg" and padded and window.divisor_override is None:
        include = window.count_include_pad
        if include not in t.include_pad:
            what = "counts" if include else "excludes"
            yield (
                "AP104",
                f"this average {what} padded cells; {t.name} always "
                f"{'counts' if t.include_pad[0] else 'excludes'} them: border outputs differ",
                "error",
            )
        elif include != t.default_include_pad:
            yield (
                "AP104",
                f"count_include_pad={include} here, {t.name}'s default is {t.default_include_pad}: "
                "border outputs differ unless set explicitly",
                None,
            )


def _used_pads(a: Axis) -> tuple[int, int]:
    """The padding some window actually reads (pads no window reaches change nothing)."""
    end = (a.out - 1) * a.stride - a.pad_before + a.span
    return a.pad_before, min(a.pad_after, max(0, end - a.size))


def _pairs(pads: Sequence[tuple[int, int]]) -> str:
    return "x".join(f"{b}:{a}" for b, a in pads)
