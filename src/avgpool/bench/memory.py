"""Peak memory over a stretch of code: the process's resident set (RSS) high-water mark.

Method. Linux keeps each process's RSS high-water mark (``VmHWM`` in ``/proc/self/status``) and
lets the process reset it to the current RSS by writing ``5`` to ``/proc/self/clear_refs``
(Linux 4.0 and later). `PeakRSS` resets it just before the timed runs and reads it just after:
the exact peak over those runs, every page counted however briefly it was resident, at no cost
while the runs are timed. Where that is impossible (another OS, or ``/proc`` read-only), a thread
samples psutil's RSS every millisecond instead; a spike shorter than that can be missed and the
sampler takes some CPU from the runs, so every record names the ``method`` it used.

Why not ``ru_maxrss``: it is the high-water mark of the whole life of the process, so once the
model is loaded, or a larger batch has run, it stops moving and cannot isolate one stretch.
Why not a child process per measurement: that would isolate the model, at the price of importing
the runtime and loading the model again for every measurement (seconds each), and an A/B
comparison needs both models in one process to interleave their runs.

What RSS counts: every resident page of the process (the runtime's code, the weights, arenas,
the inputs). Pages the allocator keeps after a ``free`` count too, and can be handed out again
without RSS growing, so differences of a few MiB are noise, and in a long-lived process a delta
against an earlier baseline can understate. The CLI measures in a fresh process.
psutil (the ``bench`` extra) reads the RSS; without it, Linux's ``/proc/self/statm`` serves.
"""

from __future__ import annotations

import os
import sys
import threading
from types import TracebackType
from typing import Any

__all__ = ["PeakRSS", "cuda_peak", "rss_bytes"]

_CLEAR_REFS = "/proc/self/clear_refs"
_STATUS = "/proc/self/status"


def rss_bytes() -> int:
    """The resident set size of this process now, in bytes."""
    try:
        import psutil
    except ImportError:
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except OSError:
            raise OSError("measuring memory needs psutil: pip install 'avgpool[bench]'") from None
    return int(psutil.Process().memory_info().rss)


def _hwm_bytes() -> int | None:
    try:
        with open(_STATUS) as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _reset_hwm() -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        with open(_CLEAR_REFS, "w") as f:
            f.write("5")
    except OSError:
        return False
    return _hwm_bytes() is not None


class PeakRSS:
    """The RSS high-water mark while the ``with`` block runs (see the module docstring).

    After the block: ``start_bytes`` (RSS on entry), ``peak_bytes`` (the high-water mark,
    never below ``start_bytes``) and ``method`` ("VmHWM reset" or "psutil sampled every 1 ms").

    Examples
    --------
    >>> with PeakRSS() as mem:
    ...     block = bytearray(64 << 20)
    >>> mem.peak_bytes - mem.start_bytes >= 32 << 20
    True
    """

    def __init__(self, interval_s: float = 1e-3) -> None:
        self.interval_s = interval_s
        self.method = ""
        self.start_bytes = 0
        self.peak_bytes = 0
        self._stop: threading.Event | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> PeakRSS:
        self.start_bytes = rss_bytes()
        self.peak_bytes = self.start_bytes
        if _reset_hwm():
            self.method = "VmHWM reset"
            return self
        self.method = f"psutil sampled every {self.interval_s * 1e3:g} ms"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="avgpool-rss-sampler", daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        assert self._stop is not None
        while not self._stop.wait(self.interval_s):
            self.peak_bytes = max(self.peak_bytes, rss_bytes())

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._thread is not None:
            assert self._stop is not None
            self._stop.set()
            self._thread.join()
            self._thread = None
        else:
            self.peak_bytes = max(self.peak_bytes, _hwm_bytes() or 0)
        self.peak_bytes = max(self.peak_bytes, rss_bytes())


def cuda_peak(device: Any) -> tuple[Any, Any]:
    """(reset, read) for torch's CUDA allocator peak on ``device``, or (None, None) off CUDA.

    ``reset()`` clears the peak; ``read()`` returns ``torch.cuda.max_memory_allocated`` since
    then, in bytes: tensors torch allocated, not memory its caching allocator merely reserved.
    """
    torch = sys.modules.get("torch")
    if torch is None or device is None or str(device).split(":")[0] != "cuda":
        return None, None
    if not torch.cuda.is_available():
        return None, None

    def reset() -> None:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)

    def read() -> int:
        torch.cuda.synchronize(device)
        return int(torch.cuda.max_memory_allocated(device))

    return reset, read
