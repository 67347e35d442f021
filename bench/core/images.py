"""Labelled images in memory, and the content hash that names them in every key."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class ImageSet:
    """Labelled images held in memory: uint8 images (N, C, H, W) and int64 labels (N,)."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: np.ndarray | torch.Tensor) -> "ImageSet":
        index = torch.as_tensor(index, dtype=torch.long)
        return ImageSet(self.images[index], self.labels[index])


@dataclass(frozen=True)
class UnlabelledImages:
    """Images without labels (uint8 (N, C, H, W)): what the semi-supervised protocol grants a
    strategy of the unlabelled pool. The type has no labels, so none can reach a strategy."""

    images: torch.Tensor

    def __len__(self) -> int:
        return len(self.images)


def content_hash(*sets: ImageSet | None) -> str:
    """SHA-256 over the bytes of every image and label, so changed data never matches a cache."""
    digest = hashlib.sha256()
    for part in sets:
        if part is not None:
            digest.update(part.images.numpy().tobytes())
            digest.update(part.labels.numpy().tobytes())
    return digest.hexdigest()
