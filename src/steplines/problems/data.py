"""Image data sets as plain arrays (no torch): what every loader returns."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ImageData:
    """A labelled image set held in memory.

    Attributes:
        images: ``uint8 [N, C, H, W]`` raw pixel values (0…255).
        labels: ``int64 [N]`` class indices.
        indices: ``int64 [N]`` index of each image in its source split (e.g. the 50,000-image
            CIFAR-10 training split), so that the exact subset is recorded in every run.
    """

    images: np.ndarray
    labels: np.ndarray
    indices: np.ndarray

    def __post_init__(self) -> None:
        if self.images.dtype != np.uint8 or self.images.ndim != 4:
            raise ValueError(
                f"images must be uint8 [N, C, H, W], got {self.images.dtype} {self.images.shape}"
            )
        n = self.images.shape[0]
        if self.labels.shape != (n,) or self.indices.shape != (n,):
            raise ValueError("labels and indices must have shape [N]")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def subset(self, rows: np.ndarray) -> ImageData:
        """Return the rows ``rows`` (positions into this set), keeping source indices."""
        rows = np.asarray(rows, dtype=np.int64)
        return ImageData(self.images[rows], self.labels[rows], self.indices[rows])
