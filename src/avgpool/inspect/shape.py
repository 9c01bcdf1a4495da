"""What a pooling layer's arguments do to a shape, and which conventions disagree about them.

`shape_report` answers the questions behind ``avgpool shape``: the output shape, the padding
each side really gets, the input cells no window reads (edge truncation, skipped cells), and
for every other framework, whether the *same arguments* there give the same numbers. Shapes
and pads are arithmetic, so any size answers at once. The comparison is computed, not argued:
each convention's window pools one seeded random plane (batch 1, one channel: every plane of
a real input differs in the same places) and the outputs are compared. Only the borders can
differ where two conventions place their windows alike, so the plane is a crop: along each
axis, the windows that touch padding or the end at either border, and two interior windows
standing for all the others (cutting whole strides from the middle leaves every convention's
padding and border windows as they were). Any size is compared in milliseconds; a crop still
larger than `COMPARED_CELLS` (strides that differ between conventions cannot be cropped) is
compared by resolved geometry and divisor rules instead.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from avgpool import conventions, ops
from avgpool._errors import AvgPoolError
from avgpool.conventions import CONVENTIONS, EMPTY_AVERAGE, MAX_NAN_POLICY
from avgpool.window import Axis, Window

__all__ = ["COMPARED_CELLS", "ConventionCheck", "ShapeReport", "shape_report", "window_for"]

#: The largest plane (spatial cells) pooled to compare conventions (a crop, see the module
#: docstring), and the longest axis whose uncovered cells are listed: milliseconds at this size.
COMPARED_CELLS = 1 << 20


@dataclass(frozen=True)
class ConventionCheck:
    """How one convention treats the same arguments."""

    convention: str
    window: Window | None
    output_shape: tuple[int, ...] | None = None
    verdict: str = ""  # "same", "different", "cannot express"
    detail: str = ""
    max_abs_diff: float = 0.0
    cells_differing: int = 0


@dataclass(frozen=True)
class ShapeReport:
    input_shape: tuple[int, ...]
    op: str
    convention: str
    window: Window
    axes: tuple[Axis, ...]
    output_shape: tuple[int, ...]
    uncovered: tuple[tuple[int, ...] | None, ...]  # None: axis too long to list
    others: tuple[ConventionCheck, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        return {
            "input_shape": list(self.input_shape),
            "op": self.op,
            "convention": self.convention,
            "output_shape": list(self.output_shape),
            "kernel_size": [a.kernel for a in self.axes],
            "stride": [a.stride for a in self.axes],
            "dilation": [a.dilation for a in self.axes],
            "padding": [[a.pad_before, a.pad_after] for a in self.axes],
            "ceil_mode": self.window.ceil_mode,
            "count_include_pad": self.window.count_include_pad,
            "divisor_override": self.window.divisor_override,
            "uncovered": [None if u is None else list(u) for u in self.uncovered],
            "conventions": [
                {
                    "convention": c.convention,
                    "verdict": c.verdict,
                    "detail": c.detail,
                    "output_shape": None if c.output_shape is None else list(c.output_shape),
                    "max_abs_diff": c.max_abs_diff,
                    "cells_differing": c.cells_differing,
                }
                for c in self.others
            ],
        }


def window_for(
    convention: str,
    ndim: int,
    kernel_size: Any,
    stride: Any = None,
    padding: Any = 0,
    *,
    dilation: Any = 1,
    ceil_mode: bool = False,
    count_include_pad: bool | None = None,
    divisor_override: int | None = None,
    op: str = "avg",
    channels_last: bool = False,
) -> Window:
    """The Window that ``convention`` builds from these user-level arguments.

    `avgpool.conventions.window` with the spatial rank first: arguments left at None take
    that framework's default (stride, count_include_pad), which is where frameworks silently
    disagree. Raises AvgPoolError when the framework cannot express the arguments.
    """
    return conventions.window(
        convention,
        op,
        ndim,
        kernel_size,
        stride,
        padding,
        dilation=dilation,
        ceil_mode=ceil_mode,
        count_include_pad=count_include_pad,
        divisor_override=divisor_override,
        channels_last=channels_last,
    )


def _uncovered(axis: Axis) -> tuple[int, ...] | None:
    if axis.size > COMPARED_CELLS:
        return None
    covered = np.zeros(axis.size, dtype=bool)
    for j in range(min(axis.kernel, -(-(axis.size + axis.pad_before) // axis.dilation))):
        pos = np.arange(axis.out, dtype=np.int64) * axis.stride - axis.pad_before + j * axis.dilation
        covered[pos[(pos >= 0) & (pos < axis.size)]] = True
    return tuple(int(i) for i in np.flatnonzero(~covered))


def _pool(x: np.ndarray, window: Window, op: str) -> np.ndarray:
    return ops.avg_pool(x, window=window) if op == "avg" else ops.max_pool(x, window=window)


def shape_report(
    input_shape: Sequence[int],
    kernel_size: Any,
    stride: Any = None,
    padding: Any = 0,
    *,
    dilation: Any = 1,
    ceil_mode: bool = False,
    count_include_pad: bool | None = None,
    divisor_override: int | None = None,
    convention: str = "torch",
    op: str = "avg",
    channels_last: bool = False,
    seed: int = 0,
) -> ShapeReport:
    """Resolve the arguments under ``convention`` and compare them with every other convention.

    Examples
    --------
    >>> r = shape_report((1, 1, 5, 5), 3, 2, "same", convention="tensorflow")
    >>> r.output_shape, [c.verdict for c in r.others if c.convention == "flax"]
    ((1, 1, 3, 3), ['different'])
    """
    if op not in ("avg", "max"):
        raise AvgPoolError(f"op must be 'avg' or 'max', got {op!r}")
    input_shape = tuple(int(s) for s in input_shape)
    ndim = len(input_shape) - 2
    if not 1 <= ndim <= 3:
        raise AvgPoolError(
            f"input shape must be (N, C, *spatial) with 1 to 3 spatial axes, got {input_shape}"
        )
    args = {
        "dilation": dilation,
        "ceil_mode": ceil_mode,
        "count_include_pad": count_include_pad,
        "divisor_override": divisor_override,
        "op": op,
        "channels_last": channels_last,
    }
    window = window_for(convention, ndim, kernel_size, stride, padding, **args)
    spatial = window.spatial_shape(input_shape)
    axes = window.resolve(spatial)
    output_shape = window.output_shape(input_shape)
    planes = math.prod(input_shape) // math.prod(spatial)
    checks = []
    for other in CONVENTIONS:
        if other == convention:
            continue
        try:
            w = window_for(other, ndim, kernel_size, stride, padding, **args)
            shape = w.output_shape(input_shape)
        except AvgPoolError as exc:
            detail = str(exc).removeprefix(f"{other} cannot express ")
            checks.append(ConventionCheck(other, None, verdict="cannot express", detail=detail))
            continue
        if shape != output_shape:
            checks.append(
                ConventionCheck(other, w, shape, "different", f"output shape {shape} vs {output_shape}")
            )
            continue
        reasons = _why(window, w, spatial)
        counted = _count_differences(window, w, axes, w.resolve(spatial), op, seed)
        if counted is None:
            same = not reasons and _same_rules(window, w, op)
            detail = (
                "" if same else f"by geometry ({reasons or 'divisor or NaN rules'}; plane too large to pool)"
            )
            checks.append(ConventionCheck(other, w, shape, "same" if same else "different", detail))
            continue
        per_plane, max_diff = counted
        differing = per_plane * planes
        verdict = "different" if differing else "same"
        detail = f"{differing} of {math.prod(shape)} outputs differ" + (f" ({reasons})" if reasons else "")
        checks.append(
            ConventionCheck(other, w, shape, verdict, detail if differing else "", max_diff, differing)
        )
    uncovered = tuple(_uncovered(a) for a in axes)
    return ShapeReport(input_shape, op, convention, window, axes, output_shape, uncovered, tuple(checks))


def _border_windows(axis: Axis) -> tuple[int, int]:
    """How many windows at the start and at the end of ``axis`` reach outside the input."""
    head = min(axis.out, -(-axis.pad_before // axis.stride)) if axis.pad_before > 0 else 0
    first_past_end = -(-(axis.size + axis.pad_before - axis.span + 1) // axis.stride)
    return head, min(axis.out, max(0, axis.out - max(first_past_end, 0)))


def _crop(mine: Sequence[Axis], theirs: Sequence[Axis]) -> tuple[list[int], list[np.ndarray]]:
    """Per axis, the input length of the crop and each cropped output's weight (how many
    outputs of the whole axis it stands for)."""
    sizes, weights = [], []
    for a, b in zip(mine, theirs):
        head = max(_border_windows(a)[0], _border_windows(b)[0])
        tail = max(_border_windows(a)[1], _border_windows(b)[1])
        inner = a.out - head - tail
        if a.stride != b.stride or inner <= 2:
            sizes.append(a.size)
            weights.append(np.ones(a.out, dtype=object))
            continue
        cut = inner - 2  # interior windows read whole windows of input alike: two stand for all
        sizes.append(a.size - cut * a.stride)
        w = np.ones(a.out - cut, dtype=object)  # Python ints: a count past 2**63 stays exact
        w[head : head + 2] = (inner // 2, inner - inner // 2)
        weights.append(w)
    return sizes, weights


def _count_differences(
    mine: Window, theirs: Window, axes: Sequence[Axis], other_axes: Sequence[Axis], op: str, seed: int
) -> tuple[int, float] | None:
    """Outputs of one plane that differ between two windows (of equal output shape), counted
    on a seeded random crop; None when even the crop is larger than `COMPARED_CELLS`."""
    sizes, weights = _crop(axes, other_axes)
    if math.prod(sizes) > COMPARED_CELLS:
        return None
    shape = (1, *sizes, 1) if mine.channels_last else (1, 1, *sizes)
    x = np.random.default_rng(seed).standard_normal(shape)
    a, b = _pool(x, mine, op), _pool(x, theirs, op)
    spatial = a.shape[1:-1] if mine.channels_last else a.shape[2:]
    if a.shape != b.shape or tuple(spatial) != tuple(len(w) for w in weights):
        return None  # the crop did not keep the border windows: do not count on it
    a, b = a.reshape(spatial), b.reshape(spatial)
    with np.errstate(invalid="ignore"):
        diff = np.abs(a - b)
        # an empty window's NaN (Flax) against another convention's 0 differs too
        differs = (diff > 1e-12 * (1 + np.abs(a))) | (np.isnan(a) != np.isnan(b))
    diff = np.where(np.isnan(diff), 0.0, diff)  # counted in differs; JSON has no NaN
    scale = weights[0]
    for w in weights[1:]:
        scale = np.multiply.outer(scale, w)
    return int(scale[differs].sum()), float(diff.max(initial=0.0))


def _same_rules(mine: Window, theirs: Window, op: str) -> bool:
    """The same numbers from the same resolved geometry: the empty-window rule of an average,
    the NaN rule of a max."""
    table = EMPTY_AVERAGE if op == "avg" else MAX_NAN_POLICY
    return table.get(mine.convention) == table.get(theirs.convention)


def _why(mine: Window, theirs: Window, spatial: Sequence[int]) -> str:
    reasons = []
    if mine.pads(spatial) != theirs.pads(spatial):
        reasons.append(f"padding {theirs.pads(spatial)}")
    if mine.stride != theirs.stride:
        reasons.append(f"stride {theirs.stride}")
    if mine.count_include_pad != theirs.count_include_pad:
        reasons.append(f"count_include_pad={theirs.count_include_pad}")
    if mine.divisor_override != theirs.divisor_override:
        reasons.append(f"divisor_override={theirs.divisor_override}")
    return ", ".join(reasons)
