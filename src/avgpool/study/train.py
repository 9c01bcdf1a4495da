"""Training and evaluation, deterministic per seed.

A run with seed ``s`` calls ``torch.manual_seed(s)`` and then builds the model (every initial
weight), and shuffles the training set each epoch with its own ``torch.Generator`` seeded with
``s``: nothing else draws random numbers, so the same seed, data, settings and thread count
give bit-identical weights. The thread count is part of that: torch's convolutions sum in an
order that depends on it (avgpool's kernels do not), so `threads` sets both for a block.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from avgpool._errors import AvgPoolError
from avgpool.study.data import Dataset
from avgpool.study.variants import Variant

__all__ = ["TrainedModel", "accuracy", "threads", "train_variant"]


@contextlib.contextmanager
def threads(n: int) -> Iterator[None]:
    """Run torch (intra-op) and avgpool's kernels on ``n`` threads inside the block."""
    import torch

    import avgpool

    before = (torch.get_num_threads(), avgpool.get_num_threads())
    torch.set_num_threads(n)
    avgpool.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before[0])
        avgpool.set_num_threads(before[1])


@dataclass
class TrainedModel:
    """One variant trained with one seed: the model (eval mode), its final test accuracy, and
    per epoch the mean training loss and the test accuracy."""

    variant: str
    seed: int
    model: Any = field(repr=False)
    accuracy: float
    train_loss: list[float]
    test_accuracy: list[float]
    seconds: float


def accuracy(model: Any, x: np.ndarray, y: np.ndarray, *, batch_size: int = 512) -> float:
    """Fraction of ``x`` that ``model`` (in eval mode, without gradients) labels as ``y``.

    Examples
    --------
    >>> import numpy as np, torch
    >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(2, 2, bias=False))
    >>> _ = net[1].weight.data.copy_(torch.eye(2))
    >>> accuracy(net, np.array([[3.0, 1.0], [0.0, 2.0], [5.0, 4.0]], np.float32), np.array([0, 1, 1]))
    0.6666666666666666
    """
    import torch

    was_training = model.training
    model.eval()
    correct = 0
    try:
        with torch.no_grad():
            for start in range(0, len(y), batch_size):
                logits = model(torch.from_numpy(x[start : start + batch_size]))
                correct += int((logits.argmax(1).numpy() == y[start : start + batch_size]).sum())
    finally:
        model.train(was_training)
    return correct / len(y)


def train_variant(
    variant: Variant,
    data: Dataset,
    *,
    seed: int,
    epochs: int,
    batch_size: int = 64,
    lr: float = 1e-2,
) -> TrainedModel:
    """Train ``variant`` on ``data`` with Adam and cross-entropy, from seed ``seed``.

    The reported accuracy is the test accuracy after the last epoch (no epoch is picked by
    looking at the test set). Returns the model in eval mode.
    """
    import torch
    import torch.nn.functional as F

    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise AvgPoolError(f"epochs must be an int >= 1, got {epochs!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise AvgPoolError(f"batch_size must be an int >= 1, got {batch_size!r}")
    start = time.perf_counter()
    torch.manual_seed(seed)
    model = variant.build()
    shuffle = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    x = torch.from_numpy(data.x_train)
    y = torch.from_numpy(data.y_train.astype(np.int64))
    n = len(y)
    losses, accuracies = [], []
    for _ in range(epochs):
        model.train()
        order = torch.randperm(n, generator=shuffle)
        total = 0.0
        for i in range(0, n, batch_size):
            idx = order[i : i + batch_size]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(idx)
        losses.append(total / n)
        accuracies.append(accuracy(model, data.x_test, data.y_test))
    model.eval()
    return TrainedModel(
        variant.name, seed, model, accuracies[-1], losses, accuracies, time.perf_counter() - start
    )
