"""The benchmark's cases: one op, geometry, shape and layout each, and their rotating inputs.

Every geometry is run on a channels-first array and on the same logical shape stored
channels-last. Three scales share the geometries: ``full`` (inputs of 49-64 MiB, larger than
a 32 MB last-level cache; the runner also rotates enough copies to exceed twice the cache it
detects), ``quick`` (about 1 MiB, for a smoke run) and ``tiny`` (for the correctness tests).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import numpy as np

__all__ = ["SCALES", "Case", "make_inputs", "rotation_count", "standard_cases"]

_LAYOUTS = {1: ("NCL", "NLC"), 2: ("NCHW", "NHWC"), 3: ("NCDHW", "NDHWC")}


@dataclass(frozen=True)
class Case:
    """One benchmark case.

    ``shape`` is the forward input's logical channels-first shape ``(N, C, *spatial)``; the
    array in memory is ``(N, *spatial, C)`` when ``channels_last``. ``op`` is "avg", "max",
    "global_avg" or "avg_backward" (whose timed input is grad_output and output grad_input).
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
        if self.kernel is None:
            return (1,) * self.ndim
        stride = self.stride or self.kernel
        return tuple(
            (n + 2 * self.padding - k) // s + 1 for n, k, s in zip(self.spatial, self.kernel, stride)
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
        return self.array_shape if self.op == "avg_backward" else self.out_array_shape

    @property
    def bytes_in(self) -> int:
        return math.prod(self.timed_input_shape) * np.dtype(self.dtype).itemsize

    @property
    def bytes_out(self) -> int:
        return math.prod(self.timed_output_shape) * np.dtype(self.dtype).itemsize

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
        for k in ("shape", "kernel", "stride"):
            if kw.get(k) is not None:
                kw[k] = tuple(kw[k])
        return cls(**kw)


#: Shapes per scale: a 2-D image batch, the global-pool input, a 3-D volume and a 1-D sequence.
SCALES = {
    "full": {
        "image": (16, 64, 128, 128),  # 64 MiB float32
        "global": (128, 2048, 7, 7),  # 49 MiB: ResNet-50's last feature map at batch 128
        "volume": (4, 32, 32, 64, 64),  # 64 MiB
        "sequence": (16, 64, 16384),  # 64 MiB
    },
    "quick": {
        "image": (2, 16, 64, 64),
        "global": (16, 256, 7, 7),
        "volume": (1, 16, 16, 32, 32),
        "sequence": (2, 16, 4096),
    },
    "tiny": {
        "image": (2, 3, 20, 20),
        "global": (2, 5, 7, 7),
        "volume": (1, 2, 6, 8, 8),
        "sequence": (2, 3, 80),
    },
}


def standard_cases(scale: str = "full") -> list[Case]:
    """The ten standard geometries, each channels-first then channels-last.

    Examples
    --------
    >>> [c.id for c in standard_cases("tiny")][:3]
    ['avg2x2s2/cf', 'avg2x2s2/cl', 'avg3x3s1p1/cf']
    >>> c = standard_cases("full")[0]
    >>> c.layout, c.array_shape, c.out_array_shape, c.bytes_in >> 20, c.bytes_out >> 20
    ('NCHW', (16, 64, 128, 128), (16, 64, 64, 64), 64, 16)
    """
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {tuple(SCALES)}, got {scale!r}")
    s = SCALES[scale]
    img, glob, vol, seq = s["image"], s["global"], s["volume"], s["sequence"]
    base = [
        Case("avg2x2s2", "avg 2x2/2", "avg", img, (2, 2), (2, 2)),
        Case("avg3x3s1p1", "avg 3x3/1 p1", "avg", img, (3, 3), (1, 1), 1),
        Case("avg3x3s2p1ex", "avg 3x3/2 p1, pad not counted", "avg", img, (3, 3), (2, 2), 1, False),
        Case("avg7x7s1", "avg 7x7/1", "avg", img, (7, 7), (1, 1)),
        Case("avg15x15s1", "avg 15x15/1", "avg", img, (15, 15), (1, 1)),
        Case("global7x7", "global avg 7x7", "global_avg", glob, None),
        Case("avg3d2s2", "avg 3-D 2x2x2/2", "avg", vol, (2, 2, 2), (2, 2, 2)),
        Case("avg1d64s1", "avg 1-D k=64/1", "avg", seq, (64,), (1,)),
        Case("max3x3s2p1", "max 3x3/2 p1", "max", img, (3, 3), (2, 2), 1),
        Case("bwd2x2s2", "avg backward 2x2/2", "avg_backward", img, (2, 2), (2, 2)),
    ]
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
