"""Which labels a generator samples: class-balanced, or filling the smaller classes up first."""

from __future__ import annotations

import torch


def balanced_labels(n: int, num_classes: int) -> torch.Tensor:
    """n labels cycling through the classes (counts differ by at most one)."""
    return torch.arange(n) % num_classes


def filling_labels(n: int, real_labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """n labels that first fill each class up to the largest class of ``real_labels`` (in
    proportion to its shortfall when n is smaller than the total), then cycle through all classes."""
    deficit = torch.bincount(real_labels.cpu(), minlength=num_classes)
    deficit = deficit.max() - deficit
    total = int(deficit.sum())
    if total == 0 or n == 0:
        return balanced_labels(n, num_classes)
    share = deficit.double() * min(n, total) / total
    counts = share.floor().long()
    remainder = min(n, total) - int(counts.sum())  # largest remainders get the last ones
    counts[torch.argsort(share - counts, descending=True, stable=True)[:remainder]] += 1
    fill = torch.repeat_interleave(torch.arange(num_classes), counts)
    return torch.cat([fill, balanced_labels(n - len(fill), num_classes)])


def synthetic_labels(n: int, real_labels: torch.Tensor, num_classes: int, balance: bool) -> torch.Tensor:
    """The labels of n synthetic images: filling the small classes first with ``balance``, else
    class-balanced."""
    return filling_labels(n, real_labels, num_classes) if balance else balanced_labels(n, num_classes)
