"""The checks of a generator fit: its losses stay finite (divergence) and its samples of each class
are not far less diverse than that class's real images (mode collapse). A failed check fails the
cells that need the generator (``CellFailed``), with the reason."""

from __future__ import annotations

import math

import torch

from bench.core.errors import CellFailed
from bench.core.images import ImageSet
from bench.training.stacked import divergence_failure

PROBE_PER_CLASS = 50  # samples per class that the collapse check judges after every fit
COLLAPSE_THRESHOLD = 0.1  # per-class sample diversity below this share of the real diversity = collapse


def diversity(images: torch.Tensor) -> float:
    """Mean pairwise L2 distance between images (as floats in [0, 1])."""
    flat = images.flatten(1).float() / 255.0
    if len(flat) < 2:
        return 0.0
    distances = torch.cdist(flat, flat)
    return (distances.sum() / (len(flat) * (len(flat) - 1))).item()


def check_not_collapsed(samples: ImageSet, real: ImageSet, num_classes: int) -> float:
    """Raise CellFailed if, for some class, samples are far less diverse than the real images.

    Returns the smallest per-class ratio of sample diversity to real diversity.
    """
    ratios = []
    for cls in range(num_classes):
        real_div = diversity(real.images[real.labels == cls])
        if real_div > 0:
            ratios.append(diversity(samples.images[samples.labels == cls]) / real_div)
    worst = min(ratios) if ratios else 1.0
    if worst < COLLAPSE_THRESHOLD:
        raise CellFailed(
            f"mode collapse: samples of one class are {100 * worst:.1f}% as diverse as its real "
            f"images (threshold {100 * COLLAPSE_THRESHOLD:.0f}%)"
        )
    return worst


def check_finite(step: int, **losses: torch.Tensor) -> None:
    """Raise CellFailed when a loss is NaN or infinite (call every few steps: it syncs the device)."""
    for name, value in losses.items():
        number = value.item()
        if not math.isfinite(number):
            raise divergence_failure(name, number, step)
