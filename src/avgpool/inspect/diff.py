"""What changed in the pooling layers between two models: the CI gate for "pooling changed
during export or refactor".

Layers are matched by name first (`PoolLayer.key`, so an ONNX node ``/layer1/pool/AveragePool``
matches the PyTorch module ``layer1.pool``), then the rest by position among layers of the same
family. Every difference is a `Change` in one category, so a gate can allow some and fail on
the rest.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from avgpool._errors import AvgPoolError
from avgpool.inspect.layers import Inventory, PoolLayer

__all__ = ["CATEGORIES", "Change", "DiffEntry", "DiffReport", "diff"]

#: added / removed: a layer only in one model; op: avg became max, lp became avg, ...;
#: geometry: kernel, stride, dilation, padding, ceil_mode, output size; semantics:
#: count_include_pad (where padding is read), divisor_override, p; shape: input or output shape;
#: convention: the framework the layer follows; name: matched by position under another name.
CATEGORIES = ("added", "removed", "op", "geometry", "semantics", "shape", "convention", "name")
DEFAULT_ALLOWED = ("convention", "name")


@dataclass(frozen=True)
class Change:
    category: str
    field: str
    old: Any
    new: Any

    def to_dict(self) -> dict[str, Any]:
        return {"category": self.category, "field": self.field, "old": self.old, "new": self.new}


@dataclass(frozen=True)
class DiffEntry:
    """One layer: ``added``, ``removed`` or ``changed`` (with its changes), or ``same``."""

    status: str
    old: PoolLayer | None
    new: PoolLayer | None
    matched_by: str  # "name", "position" or "" for added/removed
    changes: tuple[Change, ...] = ()

    @property
    def name(self) -> str:
        layer = self.new if self.new is not None else self.old
        assert layer is not None
        return layer.name

    @property
    def categories(self) -> tuple[str, ...]:
        if self.status in ("added", "removed"):
            return (self.status,)
        return tuple(dict.fromkeys(c.category for c in self.changes))

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "old": None if self.old is None else self.old.name,
            "new": None if self.new is None else self.new.name,
            "old_index": None if self.old is None else self.old.index,
            "new_index": None if self.new is None else self.new.index,
            "matched_by": self.matched_by,
            "changes": [c.to_dict() for c in self.changes],
        }


@dataclass(frozen=True)
class DiffReport:
    old_source: str
    new_source: str
    entries: tuple[DiffEntry, ...]
    allowed: tuple[str, ...] = DEFAULT_ALLOWED

    @property
    def changed(self) -> tuple[DiffEntry, ...]:
        return tuple(e for e in self.entries if e.status != "same")

    def disallowed(self, allowed: Iterable[str] | None = None) -> tuple[DiffEntry, ...]:
        """Entries with at least one change in a category not allowed."""
        ok = set(self.allowed if allowed is None else allowed)
        return tuple(e for e in self.changed if set(e.categories) - ok)

    def to_dict(self) -> dict[str, Any]:
        return {
            "old": self.old_source,
            "new": self.new_source,
            "allowed": list(self.allowed),
            "summary": {
                s: sum(e.status == s for e in self.entries) for s in ("same", "changed", "added", "removed")
            },
            "disallowed": len(self.disallowed()),
            "entries": [e.to_dict() for e in self.entries],
        }


def _family(layer: PoolLayer) -> str:
    """avg and global_avg and adaptive_avg are one family for matching by position."""
    return layer.op.split("_")[-1]


def _geometry(layer: PoolLayer) -> dict[str, Any]:
    """The fields compared, resolved on the layer's own input where possible."""
    effective = layer.effective()
    window, shape = effective if effective is not None else (layer.window, layer.input_shape)
    out: dict[str, Any] = {}
    if window is not None and shape is not None and window.kernel_size is not None:
        try:
            axes = window.resolve(tuple(shape[-window.ndim :]))
        except AvgPoolError:
            axes = None
        out["kernel"] = list(window.kernel_size)
        out["stride"] = list(window.stride)
        out["dilation"] = list(window.dilation)
        if axes is not None:
            out["padding"] = [[a.pad_before, a.pad_after] for a in axes]
            padded = any(a.pad_before or a.pad_after for a in axes)
        else:
            out["padding"] = (
                window.padding if isinstance(window.padding, str) else [list(p) for p in window.padding]
            )
            padded = True
        out["ceil_mode"] = window.ceil_mode
        if layer.op == "avg" and padded:
            out["count_include_pad"] = window.count_include_pad
        if window.divisor_override is not None:
            out["divisor_override"] = window.divisor_override
    elif window is not None:
        out["kernel"] = "global"
    if layer.output_size is not None:
        out["output_size"] = list(layer.output_size)
    if layer.p is not None:
        out["p"] = layer.p
    return out


_CATEGORY = {
    "kernel": "geometry",
    "stride": "geometry",
    "dilation": "geometry",
    "padding": "geometry",
    "ceil_mode": "geometry",
    "output_size": "geometry",
    "count_include_pad": "semantics",
    "divisor_override": "semantics",
    "p": "semantics",
}


def _compare(old: PoolLayer, new: PoolLayer, matched_by: str) -> DiffEntry:
    changes = []
    if old.op != new.op:
        changes.append(Change("op", "op", old.op, new.op))
    g_old, g_new = _geometry(old), _geometry(new)
    for key in dict.fromkeys([*g_old, *g_new]):
        if g_old.get(key) != g_new.get(key):
            changes.append(Change(_CATEGORY.get(key, "geometry"), key, g_old.get(key), g_new.get(key)))
    for key in ("input_shape", "output_shape"):
        a, b = getattr(old, key), getattr(new, key)
        if a is not None and b is not None and tuple(a) != tuple(b):
            changes.append(Change("shape", key, list(a), list(b)))
    if old.convention != new.convention:
        changes.append(Change("convention", "convention", old.convention, new.convention))
    if matched_by == "position" and old.key != new.key:
        changes.append(Change("name", "name", old.name, new.name))
    return DiffEntry("changed" if changes else "same", old, new, matched_by, tuple(changes))


def diff(
    old: Inventory | Sequence[PoolLayer],
    new: Inventory | Sequence[PoolLayer],
    *,
    allowed: Iterable[str] = DEFAULT_ALLOWED,
) -> DiffReport:
    """Match the pooling layers of two models and list what differs.

    Parameters
    ----------
    old, new : Inventory
        From `read_model` (any mix of ONNX and PyTorch).
    allowed : iterable of str
        Categories (see `CATEGORIES`) that do not count against `DiffReport.disallowed`.
    """
    allowed = tuple(allowed)
    bad = set(allowed) - set(CATEGORIES)
    if bad:
        raise AvgPoolError(f"allowed categories must be among {CATEGORIES}, got {sorted(bad)}")
    old_layers = list(old.layers if isinstance(old, Inventory) else old)
    new_layers = list(new.layers if isinstance(new, Inventory) else new)
    pairs: dict[int, tuple[PoolLayer, str]] = {}  # new index -> (old layer, how)
    used_old: set[int] = set()
    by_key: dict[str, list[PoolLayer]] = {}
    for layer in old_layers:
        if layer.key:
            by_key.setdefault(layer.key, []).append(layer)
    for layer in new_layers:
        candidates = [c for c in by_key.get(layer.key, []) if c.index not in used_old] if layer.key else []
        if candidates:
            pairs[layer.index] = (candidates[0], "name")
            used_old.add(candidates[0].index)
    rest_old = [layer for layer in old_layers if layer.index not in used_old]
    rest_new = [layer for layer in new_layers if layer.index not in pairs]
    # by position: walk both remainders in order, pairing layers of the same family, and only
    # between the neighbours already matched by name (a layer does not jump across the model)
    anchors = sorted((n, pairs[n][0].index) for n in pairs)

    def segment(index_new: int) -> int:
        return sum(1 for n, _ in anchors if n < index_new)

    def segment_old(index_old: int) -> int:
        return sum(1 for _, o in anchors if o < index_old)

    for layer in rest_new:
        for cand in rest_old:
            if cand.index in used_old or _family(cand) != _family(layer):
                continue
            if segment_old(cand.index) != segment(layer.index):
                continue
            pairs[layer.index] = (cand, "position")
            used_old.add(cand.index)
            break
    entries: list[tuple[tuple[int, int], DiffEntry]] = []
    for layer in new_layers:
        if layer.index in pairs:
            match, how = pairs[layer.index]
            entries.append(((layer.index, 0), _compare(match, layer, how)))
        else:
            entries.append(((layer.index, 0), DiffEntry("added", None, layer, "")))
    for layer in old_layers:
        if layer.index not in used_old:
            later = [n for n, o in anchors if o > layer.index]
            at = min(later) if later else len(new_layers)
            entries.append(((at, -1), DiffEntry("removed", layer, None, "")))
    entries.sort(key=lambda e: e[0])
    src_old = old.source if isinstance(old, Inventory) else "old"
    src_new = new.source if isinstance(new, Inventory) else "new"
    return DiffReport(src_old, src_new, tuple(e for _, e in entries), allowed)
