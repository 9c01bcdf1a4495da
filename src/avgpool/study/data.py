"""The study's data: scikit-learn's digits (shipped inside scikit-learn, nothing downloaded) and
a fixed, stratified train/test split; or any arrays of your own, as a `Dataset`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from avgpool._errors import AvgPoolError

__all__ = ["Dataset", "load_digits_split"]


@dataclass(frozen=True)
class Dataset:
    """Images ``(N, C, H, W)`` float32 and integer labels in ``[0, classes)``, split in two.

    Examples
    --------
    >>> import numpy as np
    >>> d = Dataset("toy", np.zeros((4, 1, 8, 8), np.float32), np.array([0, 1, 0, 1]),
    ...             np.zeros((2, 1, 8, 8), np.float32), np.array([1, 0]), classes=2)
    >>> d.describe()["train"], d.subset(2).x_train.shape
    (4, (2, 1, 8, 8))
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: int
    notes: str = ""

    def __post_init__(self) -> None:
        for split in ("train", "test"):
            x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
            if x.ndim != 4 or x.dtype != np.float32:
                raise AvgPoolError(f"x_{split} must be a float32 array (N, C, H, W), got {x.dtype} {x.shape}")
            if y.shape != (x.shape[0],) or y.dtype.kind not in "iu":
                raise AvgPoolError(f"y_{split} must be {x.shape[0]} integer labels, got {y.dtype} {y.shape}")
            if x.shape[0] == 0:
                raise AvgPoolError(f"x_{split} must hold at least one image")
            if y.min() < 0 or y.max() >= self.classes:
                raise AvgPoolError(
                    f"y_{split} labels must be in [0, {self.classes}), got {y.min()}..{y.max()}"
                )
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise AvgPoolError(
                f"train and test images differ in shape: {self.x_train.shape[1:]} vs {self.x_test.shape[1:]}"
            )

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.x_train.shape[1:])

    def subset(self, n: int) -> Dataset:
        """The same data with only the first ``n`` training images (the test set unchanged)."""
        if isinstance(n, bool) or not isinstance(n, int) or not self.classes <= n <= len(self.y_train):
            raise AvgPoolError(
                f"subset must be an int between {self.classes} and {len(self.y_train)} "
                f"(training images), got {n!r}"
            )
        return Dataset(
            self.name,
            self.x_train[:n],
            self.y_train[:n],
            self.x_test,
            self.y_test,
            self.classes,
            f"{self.notes}; first {n} training images".lstrip("; "),
        )

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "train": len(self.y_train),
            "test": len(self.y_test),
            "image_shape": list(self.image_shape),
            "classes": self.classes,
            "notes": self.notes,
        }


def load_digits_split(test_fraction: float = 0.25, split_seed: int = 0) -> Dataset:
    """scikit-learn's digits (1797 8x8 grayscale images, 10 classes), split once, stratified.

    The split is ``sklearn.model_selection.train_test_split(stratify=labels,
    random_state=split_seed)``: the same images in each part on every run. Pixels (0..16) are
    scaled to [0, 1], then standardised with the training pixels' mean and standard deviation.

    Examples
    --------
    >>> d = load_digits_split()
    >>> d.x_train.shape, d.x_test.shape, d.classes
    ((1347, 1, 8, 8), (450, 1, 8, 8), 10)
    """
    if not 0.05 <= test_fraction <= 0.5:
        raise AvgPoolError(f"test_fraction must be between 0.05 and 0.5, got {test_fraction!r}")
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError:  # pragma: no cover
        raise AvgPoolError("the study's data set needs scikit-learn: pip install 'avgpool[study]'") from None
    digits = load_digits()
    images = (digits.images.astype(np.float32) / np.float32(16.0))[:, None]
    labels = digits.target.astype(np.int64)
    train, test = train_test_split(
        np.arange(len(labels)), test_size=test_fraction, stratify=labels, random_state=split_seed
    )
    mean = images[train].mean(dtype=np.float64)
    std = images[train].std(dtype=np.float64)
    scaled = ((images - mean) / std).astype(np.float32)
    return Dataset(
        name="scikit-learn digits",
        x_train=scaled[train],
        y_train=labels[train],
        x_test=scaled[test],
        y_test=labels[test],
        classes=10,
        notes=(
            f"stratified split, {test_fraction:g} test, random_state={split_seed}; "
            f"pixels/16 standardised with the training mean {mean:.4f} and std {std:.4f}"
        ),
    )
