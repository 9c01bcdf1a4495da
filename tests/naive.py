"""A deliberately naive oracle for the oracle: one Python loop per output cell, no cleverness.

It shares nothing with avgpool.reference (no tap tables, no vectorisation) beyond the
per-axis `Axis` numbers, so agreement between the two is evidence about the semantics, not
about shared code. Only for tiny arrays.
"""

from __future__ import annotations

import itertools
import math

import numpy as np


def _window_cells(axes, out_index):
    """Per axis: the taps of window `out_index` as (position, is_real, is_in_padded_input)."""
    per_axis = []
    for a, o in zip(axes, out_index):
        start = o * a.stride - a.pad_before
        taps = []
        for j in range(a.kernel):
            p = start + j * a.dilation
            taps.append((p, 0 <= p < a.size, -a.pad_before <= p < a.size + a.pad_after))
        per_axis.append(taps)
    return itertools.product(*per_axis)


def avg_pool(x, axes, count_include_pad=True, divisor_override=None):
    """x: (B, *spatial) float64."""
    out = np.zeros((x.shape[0], *[a.out for a in axes]))
    for b in range(x.shape[0]):
        for o in itertools.product(*[range(a.out) for a in axes]):
            total, real_cells, padded_cells = 0.0, 0, 0
            for cell in _window_cells(axes, o):
                if all(real for _, real, _ in cell):
                    total += x[(b, *[p for p, _, _ in cell])]
                    real_cells += 1
                if all(padded for _, _, padded in cell):
                    padded_cells += 1
            if divisor_override is not None:
                div = divisor_override
            else:
                div = padded_cells if count_include_pad else real_cells
            out[(b, *o)] = total / div if div else 0.0
    return out


def max_pool(x, axes):
    """Max over real cells and its flat spatial index; NaN wins (the last one), ties go first."""
    out = np.full((x.shape[0], *[a.out for a in axes]), -np.inf)
    idx = np.full(out.shape, -1, dtype=np.int64)
    sizes = [a.size for a in axes]
    for b in range(x.shape[0]):
        for o in itertools.product(*[range(a.out) for a in axes]):
            best, best_i = -math.inf, -1
            for cell in _window_cells(axes, o):
                if not all(real for _, real, _ in cell):
                    continue
                pos = tuple(p for p, _, _ in cell)
                v = x[(b, *pos)]
                flat = int(np.ravel_multi_index(pos, sizes))
                if best_i == -1 or v > best or math.isnan(v):
                    best, best_i = v, flat
            out[(b, *o)] = best
            idx[(b, *o)] = best_i
    return out, idx
