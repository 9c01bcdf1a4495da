"""The bandwidth floor: the time a case would take if it only streamed its bytes.

Method. Pooling at these sizes is memory-bound, so the fastest conceivable run of a case reads
its input once from main memory and writes its output once. We measure, in the same run as the
benchmark and with the same thread count, two streaming rates on float32 arrays much larger than
the last-level cache (4x the cache, at least 256 MiB, so neither array fits):

- **read rate**: ``np.maximum.reduce`` over the array (bytes read / seconds). Not ``np.sum``:
  NumPy's pairwise float32 sum is compute-bound (about 9 GB/s per core on the machine this was
  written on, where the SIMD max reduction streams at about 15 GB/s);
- **write rate**: ``memset`` (through ctypes) of a preallocated array (bytes written / seconds).
  glibc's memset uses non-temporal stores at these sizes, so no read-for-ownership traffic is
  counted; the array is touched once first so no page faults are timed.

With ``threads > 1`` the array is split into one contiguous slice per thread and the slices are
processed concurrently from a thread pool (NumPy and ctypes release the GIL inside these calls).
Each rate is the best of ``repeats`` runs, since a floor is a lower bound on time; the median
rate is kept too. A case's floor is then::

    floor_s = input_bytes / read_rate + output_bytes / write_rate

For a backward case the "input" is grad_output and the "output" is grad_input. The ratio
``time / floor`` is the slowdown against the floor; ``floor / time`` is the fraction of the
floor reached. The sum assumes reads and writes do not overlap. They partly do on most machines,
so a fast op can come in under the floor: as a calibration the same run also times a plain
copy (``np.copyto`` between two such arrays, ``copy_bytes_per_s`` = bytes copied / seconds),
and reports where that copy lands against the floor of a same-size read plus write.
"""

from __future__ import annotations

import ctypes
import itertools
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["Bandwidth", "floor_seconds", "measure_bandwidth"]

_MIB = 1 << 20


@dataclass(frozen=True)
class Bandwidth:
    """Streaming rates in bytes per second (best and median of the runs) and how they were taken."""

    read_bytes_per_s: float
    write_bytes_per_s: float
    read_median_bytes_per_s: float
    write_median_bytes_per_s: float
    copy_bytes_per_s: float
    array_bytes: int
    threads: int
    repeats: int

    def to_dict(self) -> dict:
        d = asdict(self)
        d["read_gb_per_s"] = self.read_bytes_per_s / 1e9
        d["write_gb_per_s"] = self.write_bytes_per_s / 1e9
        d["copy_gb_per_s"] = self.copy_bytes_per_s / 1e9
        d["copy_vs_floor"] = self.copy_vs_floor
        return d

    @property
    def copy_vs_floor(self) -> float:
        """A plain copy's time over the floor of reading and writing the same bytes (< 1: overlap)."""
        return (1 / self.copy_bytes_per_s) / (1 / self.read_bytes_per_s + 1 / self.write_bytes_per_s)


def floor_seconds(bytes_in: int, bytes_out: int, bandwidth: Bandwidth) -> float:
    """``bytes_in / read rate + bytes_out / write rate``, in seconds.

    Examples
    --------
    >>> bw = Bandwidth(10e9, 5e9, 10e9, 5e9, 4e9, 1 << 30, 2, 3)
    >>> floor_seconds(10**9, 10**9, bw)  # 0.1 s reading + 0.2 s writing
    0.30000000000000004
    """
    return bytes_in / bandwidth.read_bytes_per_s + bytes_out / bandwidth.write_bytes_per_s


def _slices(n: int, parts: int) -> list[slice]:
    edges = np.linspace(0, n, parts + 1).astype(int)
    return [slice(int(a), int(b)) for a, b in itertools.pairwise(edges)]


def _best_and_median(run: Callable[[], None], nbytes: int, repeats: int) -> tuple[float, float]:
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        seconds.append(time.perf_counter() - start)
    seconds.sort()
    return nbytes / seconds[0], nbytes / seconds[(len(seconds) - 1) // 2]


def measure_bandwidth(
    threads: int = 1, llc_bytes: int = 32 * _MIB, repeats: int = 5, array_bytes: int | None = None
) -> Bandwidth:
    """Measure the streaming read and write rates (see the module docstring for the method).

    ``array_bytes`` defaults to ``max(4 * llc_bytes, 256 MiB)``; pass less only in tests.
    """
    if threads < 1 or repeats < 1:
        raise ValueError(f"threads and repeats must be >= 1, got {threads} and {repeats}")
    nbytes = array_bytes if array_bytes is not None else max(4 * llc_bytes, 256 * _MIB)
    n = nbytes // 4
    src = np.ones(n, dtype=np.float32)  # np.ones touches every page before any timing
    dst = np.zeros(n, dtype=np.float32)
    parts = _slices(n, threads)
    sink = np.zeros(threads, dtype=np.float64)

    with ThreadPoolExecutor(max_workers=threads) as pool:

        def read() -> None:
            def part(i: int) -> None:
                sink[i] = np.maximum.reduce(src[parts[i]])

            list(pool.map(part, range(threads)))

        def write() -> None:
            def part(i: int) -> None:
                ctypes.memset(dst[parts[i]].ctypes.data, 0, dst[parts[i]].nbytes)

            list(pool.map(part, range(threads)))

        def copy() -> None:
            def part(i: int) -> None:
                np.copyto(dst[parts[i]], src[parts[i]])

            list(pool.map(part, range(threads)))

        read()  # warm the pool and the pages
        write()
        read_best, read_median = _best_and_median(read, n * 4, repeats)
        write_best, write_median = _best_and_median(write, n * 4, repeats)
        copy()
        copy_best, _ = _best_and_median(copy, n * 4, repeats)
    return Bandwidth(read_best, write_best, read_median, write_median, copy_best, n * 4, threads, repeats)
