"""What the torch front end's eager-path tests share: a dispatch mode that records the ops
reaching the dispatcher, and a bitwise comparison of tensors."""

from __future__ import annotations

import torch
from torch.utils._python_dispatch import TorchDispatchMode

_BITS = {torch.float64: torch.int64, torch.float32: torch.int32, torch.float16: torch.int16}


class Seen(TorchDispatchMode):
    """Records the ops that reach the dispatcher (a dispatch mode also forces the dispatcher)."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(str(func))
        return func(*args, **(kwargs or {}))


def flat(y):
    return list(y) if isinstance(y, tuple) else [y]


def same(a: torch.Tensor, b: torch.Tensor) -> None:
    """Bitwise equal (NaN and signed zeros included), same dtype, shape and strides."""
    assert a.dtype == b.dtype and a.shape == b.shape and a.stride() == b.stride()
    bits = _BITS.get(a.dtype)
    assert torch.equal(a.view(bits), b.view(bits)) if bits else torch.equal(a, b)
