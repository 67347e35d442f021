"""Memorization: how near generated images come to the images their generator saw."""

from __future__ import annotations

import torch

from bench.quality.features import Features

NEAR_COPY_PERCENTILE = 0.05  # a sample nearer to a training image than 95% of real test images are


def memorization(generated: Features, seen: Features, test: Features) -> dict:
    """Nearest-neighbour distances to the seen images in the evaluator's feature space. By
    construction NEAR_COPY_PERCENTILE of real test images are near-copies: that is the chance level."""
    synth_nn = torch.cdist(generated.features, seen.features).min(1).values
    test_nn = torch.cdist(test.features, seen.features).min(1).values
    threshold = torch.quantile(test_nn, NEAR_COPY_PERCENTILE)
    return {
        "mem_nn_synthetic_median": synth_nn.median().item(),
        "mem_nn_test_median": test_nn.median().item(),
        "mem_nn_ratio": (synth_nn.median() / test_nn.median().clamp_min(1e-12)).item(),
        "mem_near_copy_fraction": (synth_nn < threshold).float().mean().item(),
        "mem_near_copy_chance": NEAR_COPY_PERCENTILE,
    }
