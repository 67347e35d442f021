"""Fidelity numbers (FID, KID, IS, precision/recall) from features computed once, with
torch-fidelity's feature-level functions and the settings its ``calculate_metrics`` uses; the
standard Inception-v3 FID/KID through torch-fidelity's own extractor."""

from __future__ import annotations

import torch
import torch_fidelity
from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric
from torch_fidelity.metric_isc import isc_features_to_metric
from torch_fidelity.metric_kid import kid_features_to_metric
from torch_fidelity.metric_prc import prc_features_to_metric

from bench.quality.features import Features

FID, KID, IS = "frechet_inception_distance", "kernel_inception_distance_mean", "inception_score_mean"
KID_SUBSETS, KID_MAX_SUBSET = 100, 1000
ISC_SPLITS, RNG_SEED = 10, 2020
PRC_NEIGHBORHOOD, PRC_BATCH = 3, 10000
METRICS = ("fid", "kid", "isc", "prc")
MIN_IMAGES = 10  # fewer images a side (a control that kept a handful of pool images) give no fidelity numbers


def fid(first: Features, second: Features) -> float:
    return fid_statistics_to_metric(
        fid_features_to_statistics(first.features), fid_features_to_statistics(second.features), verbose=False
    )[FID]


def kid(first: Features, second: Features) -> float:
    return kid_features_to_metric(
        first.features,
        second.features,
        kid_subsets=KID_SUBSETS,
        kid_subset_size=min(KID_MAX_SUBSET, len(first), len(second)),
        verbose=False,
        rng_seed=RNG_SEED,
    )[KID]


def inception_score(first: Features) -> float:
    return isc_features_to_metric(first.logits, ISC_SPLITS, True, RNG_SEED)[IS]


def precision_recall(first: Features, second: Features) -> dict[str, float]:
    """Improved precision and recall of ``first`` (generated) against ``second`` (real)."""
    found = prc_features_to_metric(
        first.features,
        second.features,
        prc_neighborhood=PRC_NEIGHBORHOOD,
        prc_batch_size=PRC_BATCH,
        save_cpu_ram=True,
        verbose=False,
    )
    return {"precision": found["precision"], "recall": found["recall"]}


def fidelity(first: Features, second: Features, metrics: tuple[str, ...] = METRICS) -> dict[str, float]:
    """The asked metrics of ``first`` against ``second`` (keys as torch-fidelity names them); NaN for
    each with fewer than MIN_IMAGES images a side (precision/recall need more than their neighbourhood,
    KID and FID at least two)."""
    if min(len(first), len(second)) < MIN_IMAGES:
        names = {"fid": [FID], "kid": [KID], "isc": [IS], "prc": ["precision", "recall"]}
        return {name: float("nan") for metric in metrics for name in names[metric]}
    found: dict[str, float] = {}
    if "fid" in metrics:
        found[FID] = fid(first, second)
    if "kid" in metrics:
        found[KID] = kid(first, second)
    if "isc" in metrics:
        found[IS] = inception_score(first)
    if "prc" in metrics:
        found.update(precision_recall(first, second))
    return found


class _Images(torch.utils.data.Dataset):
    """Bare uint8 image tensors as torch-fidelity wants them, gray repeated to 3 channels."""

    def __init__(self, images: torch.Tensor):
        self.images = images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i]


def inception_fid_kid(first: torch.Tensor, second: torch.Tensor, device: torch.device, weights: str) -> dict:
    """Standard Inception-v3 FID and KID of two uint8 image sets (torch-fidelity's cache is off: its
    keys ignore the data)."""
    found = torch_fidelity.calculate_metrics(
        input1=_Images(first),
        input2=_Images(second),
        cuda=device.type == "cuda",
        feature_extractor="inception-v3-compat",
        feature_extractor_weights_path=weights,
        cache=False,
        verbose=False,
        save_cpu_ram=True,
        kid_subset_size=min(KID_MAX_SUBSET, len(first), len(second)),
        batch_size=256,
        fid=True,
        kid=True,
    )
    return {"fid_inception": found[FID], "kid_inception": found[KID]}
