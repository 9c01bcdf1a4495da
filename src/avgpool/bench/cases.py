"""The benchmark's cases: one op, geometry, shape and layout each, and their rotating inputs.

The cases are data, in ``cases.toml`` beside this module. Every geometry is run on a
channels-first array and on the same logical shape stored channels-last. Three scales share
the geometries: ``full`` (inputs of 49-64 MiB, larger than a 32 MB last-level cache; the runner
also rotates enough copies to exceed twice the cache it detects), ``quick`` (about 1 MiB, for a
smoke run) and ``tiny`` (for the correctness tests).
"""

from __future__ import annotations

import functools
import math
import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = [
    "CASES_FILE",
    "Case",
    "make_grad_output",
    "make_inputs",
    "rotation_count",
    "scales",
    "standard_cases",
    "suite_table",
    "targets",
]

_LAYOUTS = {1: ("NCL", "NLC"), 2: ("NCHW", "NHWC"), 3: ("NCDHW", "NDHWC")}


@dataclass(frozen=True)
class Case:
    """One benchmark case.

    ``shape`` is the forward input's logical channels-first shape ``(N, C, *spatial)``; the
    array in memory is ``(N, *spatial, C)`` when ``channels_last``. ``op`` is "avg", "max",
    "global_avg", "adaptive_avg", "blur" (a binomial ``filt_size`` blur padded by ``pad_type``,
    then ``stride``) or "avg_backward" (whose timed input is grad_output and output grad_input).
    With ``fwd_bwd`` the timed call is a training step's two pooling calls: the forward on the
    input, then the gradient for a fixed grad_output (`make_grad_output`); its output is grad_input.
    """

    key: str
    title: str
    op: str
    shape: tuple[int, ...]
    kernel: tuple[int, ...] | None
    stride: tuple[int, ...] | None = None
    padding: int = 0
    count_include_pad: bool = True
    channels_last: bool = False
    dtype: str = "float32"
    ceil_mode: bool = False
    output_size: tuple[int, ...] | None = None
    filt_size: int = 0
    pad_type: str = "reflect"
    pad_off: int = 0
    fwd_bwd: bool = False

    @property
    def id(self) -> str:
        return f"{self.key}/{'cl' if self.channels_last else 'cf'}"

    @property
    def ndim(self) -> int:
        return len(self.shape) - 2

    @property
    def layout(self) -> str:
        return _LAYOUTS[self.ndim][self.channels_last]

    @property
    def spatial(self) -> tuple[int, ...]:
        return self.shape[2:]

    @property
    def out_spatial(self) -> tuple[int, ...]:
        if self.op == "adaptive_avg":
            return tuple(self.output_size or ())
        if self.op == "blur":  # (f - 1) // 2 + pad_off before, f // 2 + pad_off after
            pads = self.filt_size - 1 + 2 * self.pad_off
            return tuple((n + pads - self.filt_size) // self.stride[0] + 1 for n in self.spatial)
        if self.kernel is None:
            return (1,) * self.ndim
        stride = self.stride or self.kernel
        return tuple(
            _pooled(n, k, s, self.padding, self.ceil_mode)
            for n, k, s in zip(self.spatial, self.kernel, stride)
        )

    def _memory(self, spatial: tuple[int, ...]) -> tuple[int, ...]:
        n, c = self.shape[:2]
        return (n, *spatial, c) if self.channels_last else (n, c, *spatial)

    @property
    def array_shape(self) -> tuple[int, ...]:
        """The forward input as stored."""
        return self._memory(self.spatial)

    @property
    def out_array_shape(self) -> tuple[int, ...]:
        """The forward output as stored."""
        return self._memory(self.out_spatial)

    @property
    def timed_input_shape(self) -> tuple[int, ...]:
        """The array the timed call reads (grad_output for a backward case)."""
        return self.out_array_shape if self.op == "avg_backward" else self.array_shape

    @property
    def timed_output_shape(self) -> tuple[int, ...]:
        return self.array_shape if self.op == "avg_backward" or self.fwd_bwd else self.out_array_shape

    @property
    def bytes_in(self) -> int:
        """Bytes the timed call must read (a training step also reads grad_output)."""
        cells = math.prod(self.timed_input_shape) + (math.prod(self.out_array_shape) if self.fwd_bwd else 0)
        return cells * np.dtype(self.dtype).itemsize

    @property
    def bytes_out(self) -> int:
        """Bytes the timed call must write (a training step writes the output and grad_input)."""
        cells = math.prod(self.timed_output_shape) + (math.prod(self.out_array_shape) if self.fwd_bwd else 0)
        return cells * np.dtype(self.dtype).itemsize

    @property
    def outputs(self) -> int:
        """Forward outputs (for time per output); for backward, the grad_input cells."""
        return math.prod(self.timed_output_shape)

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(
            id=self.id,
            layout=self.layout,
            array_shape=self.array_shape,
            out_array_shape=self.out_array_shape,
            bytes_in=self.bytes_in,
            bytes_out=self.bytes_out,
        )
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Case:
        fields = cls.__dataclass_fields__
        kw = {k: v for k, v in d.items() if k in fields}
        for k in ("shape", "kernel", "stride", "output_size"):
            if kw.get(k) is not None:
                kw[k] = tuple(kw[k])
        return cls(**kw)


def _pooled(n: int, k: int, s: int, p: int, ceil_mode: bool) -> int:
    """Output length of one axis, PyTorch's rule (a ceil-mode window must start inside the
    input or its left padding)."""
    if not ceil_mode:
        return (n + 2 * p - k) // s + 1
    out = -(-(n + 2 * p - k) // s) + 1
    return out - 1 if (out - 1) * s >= n + p else out


#: Where the cases are written down, as data.
CASES_FILE = Path(__file__).with_name("cases.toml")

_OPS = ("avg", "max", "global_avg", "avg_backward")


@functools.cache
def _read_cases(path: Path = CASES_FILE) -> tuple[dict, list[dict], dict]:
    with path.open("rb") as f:
        data = tomllib.load(f)
    scales = {name: {k: tuple(v) for k, v in shapes.items()} for name, shapes in data["scales"].items()}
    keys = {entry.get("key") for entry in data["case"]}
    for entry in data["case"]:
        if entry.get("op") not in _OPS:
            raise ValueError(f"{path}: case {entry.get('key')!r}: op must be one of {_OPS}")
    targets = data["targets"]
    for name in ("large_window", "small_window"):
        if targets[name] not in keys:
            raise ValueError(f"{path}: targets.{name} must name a case, got {targets[name]!r}")
    return scales, data["case"], targets


def _case(entry: dict, shapes: dict) -> Case:
    def axes(name: str) -> tuple[int, ...] | None:
        return None if entry.get(name) is None else tuple(entry[name])

    return Case(
        entry["key"],
        entry["title"],
        entry["op"],
        shapes[entry["input"]],
        axes("kernel"),
        axes("stride"),
        entry.get("padding", 0),
        entry.get("count_include_pad", True),
    )


def suite_table(name: str) -> dict[str, Any]:
    """Another suite's table of ``cases.toml`` (``layers``, ``overhead``), as read."""
    with CASES_FILE.open("rb") as f:
        return tomllib.load(f)[name]


def scales() -> dict[str, dict[str, tuple[int, ...]]]:
    """The input shapes of each scale, by name (``full``, ``quick``, ``tiny``)."""
    return _read_cases()[0]


def targets() -> dict[str, Any]:
    """What the benchmark's summary checks (``[targets]`` in ``cases.toml``)."""
    return dict(_read_cases()[2])


def standard_cases(scale: str = "full") -> list[Case]:
    """The cases of ``cases.toml`` at one scale, each channels-first then channels-last.

    Examples
    --------
    >>> [c.id for c in standard_cases("tiny")][:3]
    ['avg2x2s2/cf', 'avg2x2s2/cl', 'avg3x3s1p1/cf']
    >>> c = standard_cases("full")[0]
    >>> c.layout, c.array_shape, c.out_array_shape, c.bytes_in >> 20, c.bytes_out >> 20
    ('NCHW', (16, 64, 128, 128), (16, 64, 64, 64), 64, 16)
    """
    all_scales, entries, _ = _read_cases()
    if scale not in all_scales:
        raise ValueError(f"scale must be one of {tuple(all_scales)}, got {scale!r}")
    base = [_case(entry, all_scales[scale]) for entry in entries]
    return [replace(c, channels_last=cl) for c in base for cl in (False, True)]


def rotation_count(case: Case, rotate_bytes: int, minimum: int = 2) -> int:
    """How many input copies to rotate so that together they exceed ``rotate_bytes``.

    Examples
    --------
    >>> rotation_count(standard_cases("full")[0], 520 << 20)
    9
    """
    return max(minimum, math.ceil(rotate_bytes / case.bytes_in) + (rotate_bytes % case.bytes_in == 0))


def make_inputs(case: Case, count: int, seed: int = 0) -> list[np.ndarray]:
    """``count`` separate arrays holding the same uniform [0, 1) values, as the timed call reads.

    The same ``seed`` gives the same values in every process (the avgpool child makes its own).
    """
    first = np.random.default_rng(seed).random(case.timed_input_shape, dtype=np.dtype(case.dtype).type)
    return [first] + [first.copy() for _ in range(count - 1)]


def make_grad_output(case: Case, seed: int = 0) -> np.ndarray:
    """The fixed grad_output (as stored) of a forward+backward case; the same in every process.

    Examples
    --------
    >>> c = Case("k", "t", "max", (1, 2, 4, 4), (2, 2), fwd_bwd=True)
    >>> make_grad_output(c).shape, c.timed_output_shape, c.bytes_in, c.bytes_out
    ((1, 2, 2, 2), (1, 2, 4, 4), 160, 160)
    """
    dtype = np.dtype(case.dtype).type
    return np.random.default_rng(seed + 1).random(case.out_array_shape, dtype=dtype) - dtype(0.5)
