"""Features of an image set, extracted once and shared by every number computed from them."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

BATCH = 256  # images per forward pass (as torch-fidelity batches them)


@dataclass(frozen=True)
class Features:
    """An image set in the evaluator's space: penultimate features and logits, on the CPU."""

    features: torch.Tensor
    logits: torch.Tensor

    def __len__(self) -> int:
        return len(self.features)


@torch.no_grad()
def extract(net: nn.Module, images: torch.Tensor, device: torch.device) -> Features:
    """The features and logits of uint8 images through ``net`` (one pass over the set)."""
    outs = [net(chunk.to(device)) for chunk in images.split(BATCH)]
    return Features(torch.cat([o[0] for o in outs]).cpu(), torch.cat([o[1] for o in outs]).cpu())
