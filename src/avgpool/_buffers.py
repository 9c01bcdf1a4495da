"""Reused memory for large results, so that a steady loop of calls does not page-fault.

A fresh array of tens of MiB costs its page faults on first write: on a virtual machine that
hands freed memory back to the host, as this project's test machine does, 64 MiB costs 8-80
ms, several times the pooling itself (PyTorch pays it too; ONNX Runtime's arena does not).
So results of at least `MIN_BYTES` are carved out of blocks that avgpool keeps: a block is
lent out as the base of one result and is free again once nothing refers to it, which CPython's
reference count of the block tells exactly (every NumPy view of a result, a torch tensor made
with ``torch.from_numpy``, a memoryview: each keeps the block referenced). What is pooled is
bounded by `set_buffer_pool` (default `DEFAULT_BYTES`; environment ``AVGPOOL_BUFFER_POOL``, in
bytes; 0 turns pooling off); `empty_cache` hands the free blocks back to the system.

A pooled result is an ordinary C-contiguous array whose ``base`` is the block (``owndata`` is
False, so ``ndarray.resize`` refuses it, as for any view). Where ``sys.getrefcount`` does not
exist (PyPy), nothing is pooled.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import threading
from collections.abc import Iterator

import numpy as np

from avgpool._errors import AvgPoolError

__all__ = ["buffer_pool_info", "empty_cache", "set_buffer_pool", "unpooled"]

#: Results smaller than this come from ``np.empty``: the C allocator already reuses them.
MIN_BYTES = 1 << 20
#: Blocks are sized in multiples of this (a huge page), so close sizes share blocks.
GRAIN = 2 << 20
DEFAULT_BYTES = 1 << 30


def _limit_from_env() -> int:
    raw = os.environ.get("AVGPOOL_BUFFER_POOL")
    if raw is None:
        return DEFAULT_BYTES
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value < 0:
        raise AvgPoolError(f"AVGPOOL_BUFFER_POOL must be a number of bytes >= 0, got {raw!r}")
    return value


def _refs(blocks: list, i: int) -> int:
    return sys.getrefcount(blocks[i])


_lock = threading.Lock()


def _new_lock_in_child() -> None:
    """A forked child gets a fresh lock: another thread may have held the parent's at the fork."""
    global _lock
    _lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_lock_in_child)
_blocks: list[np.ndarray] = []  # uint8 arrays owned by the pool; lent while referenced elsewhere
_thread = threading.local()  # .off: this thread's results come from np.empty (see `unpooled`)
_state = {"limit": None, "hits": 0, "misses": 0, "unpooled": 0}
_CAN_POOL = hasattr(sys, "getrefcount")
# The count of a block that only the pool refers to, read the way `_free_index` reads it.
_IDLE = _refs([np.empty(1, np.uint8)], 0) if _CAN_POOL else 0


def _limit() -> int:
    if _state["limit"] is None:
        _state["limit"] = _limit_from_env()
    return _state["limit"]


def set_buffer_pool(max_bytes: int) -> int:
    """Keep at most ``max_bytes`` of blocks for large results (0: pool nothing); returns the old
    limit. Free blocks beyond the new limit are released at once."""
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 0:
        raise AvgPoolError(f"max_bytes must be an int >= 0, got {max_bytes!r}")
    with _lock:
        old = _limit()
        _state["limit"] = max_bytes
        _shrink_to(max_bytes)
    return old


def empty_cache() -> int:
    """Release every free block (blocks lent to live results stay); returns the bytes freed."""
    with _lock:
        return _shrink_to(0)


def buffer_pool_info() -> dict:
    """The pool now: ``limit``, ``held`` (bytes of blocks), ``lent`` (of those, bytes backing a
    live result), ``blocks``, and since start ``hits`` (a block reused), ``misses`` (a block
    made) and ``unpooled`` (a large result made outside the pool: no room under the limit)."""
    with _lock:
        held = sum(b.nbytes for b in _blocks)
        free = sum(_blocks[i].nbytes for i in range(len(_blocks)) if _refs(_blocks, i) == _IDLE)
        return {
            "limit": _limit(),
            "held": held,
            "lent": held - free,
            "blocks": len(_blocks),
            "hits": _state["hits"],
            "misses": _state["misses"],
            "unpooled": _state["unpooled"],
        }


def _shrink_to(limit: int) -> int:
    """Drop free blocks, largest first, until the pool holds at most ``limit``; bytes freed."""
    freed = 0
    held = sum(b.nbytes for b in _blocks)
    for i in sorted(range(len(_blocks)), key=lambda j: -_blocks[j].nbytes):
        if held <= limit:
            break
        if _refs(_blocks, i) == _IDLE:
            held -= _blocks[i].nbytes
            freed += _blocks[i].nbytes
            _blocks[i] = None  # type: ignore[call-overload]
    _blocks[:] = [b for b in _blocks if b is not None]
    return freed


def _free_index(nbytes: int) -> int:
    """The smallest free block that holds ``nbytes`` without wasting half of itself, or -1."""
    best = -1
    for i in range(len(_blocks)):
        size = _blocks[i].nbytes
        if nbytes <= size <= 2 * nbytes and (best < 0 or size < _blocks[best].nbytes):
            if _refs(_blocks, i) == _IDLE:
                best = i
    return best


@contextlib.contextmanager
def unpooled() -> Iterator[None]:
    """Within the block, this thread's results are plain ``np.empty`` arrays, never pooled.

    For results whose lifetime another system manages, such as a Dask task's: a worker with
    a memory limit frees memory by spilling results to disk, and a pooled block would go back to
    avgpool's pool, not to the system.
    """
    before = getattr(_thread, "off", False)
    _thread.off = True
    try:
        yield
    finally:
        _thread.off = before


def empty(shape: tuple[int, ...], dtype) -> np.ndarray:
    """Like ``np.empty(shape, dtype)`` (C order), from a pooled block when it is large."""
    dtype = np.dtype(dtype)
    nbytes = math.prod(shape) * dtype.itemsize  # not np.prod: 10 µs a call, for a handful of ints
    if nbytes < MIN_BYTES or not _CAN_POOL or getattr(_thread, "off", False):
        return np.empty(shape, dtype)
    with _lock:
        i = _free_index(nbytes)
        if i >= 0:
            _state["hits"] += 1
            block = _blocks[i]
        else:
            size = -(-nbytes // GRAIN) * GRAIN
            limit = _limit()
            if size > limit:
                _state["unpooled"] += 1
                return np.empty(shape, dtype)
            held = sum(b.nbytes for b in _blocks)
            if held + size > limit:
                _shrink_to(limit - size)
                held = sum(b.nbytes for b in _blocks)
            if held + size > limit:
                _state["unpooled"] += 1
                return np.empty(shape, dtype)
            _state["misses"] += 1
            block = np.empty(size, np.uint8)
            _blocks.append(block)
        # the view refers to the block before the lock is released: no other call can take it
        return block[:nbytes].view(dtype).reshape(shape)
