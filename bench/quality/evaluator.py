"""The domain evaluator: the suite's `cnn` trained on the training pool without the replicate's
labelled images (where the regime leaves enough), cached per replicate. Its penultimate features are
the feature space of every fidelity number; the same recipe trained on generated images alone gives
CAS (classification accuracy score)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from bench.core.cache import FileCache, cache_key
from bench.core.images import ImageSet
from bench.core.keys import stable_hash
from bench.core.seeding import derive_seed
from bench.data.sets import Dataset
from bench.data.splits import Split, train_pool
from bench.models.suite import CLASSIFIERS, build_classifier, classifier_versions
from bench.quality.settings import EVALUATOR_VERSION
from bench.training.loop import normalize, predict, to_input, train_suite_classifier

EVALUATOR = "augbench-evaluator"


def train_cnn(
    images: ImageSet, val: ImageSet, num_classes: int, budget_scale: float, device: torch.device, seed: int
) -> nn.Module:
    """The suite's `cnn`, trained by its recipe on ``images`` (val only feeds the learning curve)."""
    return train_suite_classifier("cnn", images, val, num_classes, budget_scale, device, seed)


def cnn_steps(n_images: int, budget_scale: float) -> int:
    """Training steps of ``train_cnn`` on ``n_images`` images (what the cost plan counts)."""
    return CLASSIFIERS.get("cnn").recipe.steps(n_images, budget_scale)


def accuracy_on(model: nn.Module, test: ImageSet, device: torch.device) -> float:
    """The share of ``test`` images ``model`` classifies right."""
    return (predict(model, test.images, device).argmax(1) == test.labels).float().mean().item()


def classification_accuracy_score(
    generated: ImageSet, split: Split, num_classes: int, budget_scale: float, device: torch.device, seed: int
) -> float:
    """CAS: test accuracy of a `cnn` trained on the generated images alone."""
    return accuracy_on(
        train_cnn(generated, split.val, num_classes, budget_scale, device, seed), split.test, device
    )


@dataclass(frozen=True)
class Evaluator:
    """A trained evaluator network: its weights file, its name as a feature extractor, whether its
    training images exclude the replicate's labelled images, and its test accuracy."""

    weights: Path
    name: str
    disjoint: bool
    test_accuracy: float


def evaluator_training_images(pool: ImageSet, split: Split) -> tuple[ImageSet, bool]:
    """The training pool without the labelled images, when at least as many images remain as were
    labelled; else (e.g. regime `all`) the whole pool. Returns (images, disjoint)."""
    rest = np.setdiff1d(np.arange(len(pool)), split.labelled_index)
    if len(rest) >= len(split.labelled_index):
        return pool.subset(rest), True
    return pool, False


def evaluator(
    dataset: Dataset, split: Split, device: torch.device, cache: FileCache, budget_scale: float
) -> Evaluator:
    """The domain evaluator of one replicate's split (trained once, then cached)."""
    pool, test = train_pool(dataset, split.spec)
    images, disjoint = evaluator_training_images(pool, split)
    key = cache_key(
        EVALUATOR_VERSION,
        classifier_versions("cnn"),
        dataset.content_hash,
        split.spec,
        budget_scale,
        stable_hash(split.labelled_index.tolist()) if disjoint else "whole pool",
    )

    def fit() -> dict:
        model = train_cnn(
            images, split.val, dataset.num_classes, budget_scale, device, derive_seed("evaluator", key)
        )
        cache.save_tensors(
            "evaluator",
            key,
            {
                "model": {k: v.cpu() for k, v in model.state_dict().items()},
                "shape": torch.tensor(dataset.image_shape),
                "num_classes": torch.tensor(dataset.num_classes),
            },
        )
        return {"test_accuracy": accuracy_on(model, test, device)}

    meta = cache.json_once("evaluator", key, fit, with_tensors=True)
    return Evaluator(
        cache.tensors_path("evaluator", key),
        f"{EVALUATOR}:{dataset.name}:{key[:10]}",
        disjoint,
        meta["test_accuracy"],
    )


class EvaluatorNet(nn.Module):
    """The evaluator's network over uint8 images: (penultimate features, logits)."""

    def __init__(self, weights: Path):
        super().__init__()
        state = torch.load(weights, map_location="cpu", weights_only=True)
        self.net = build_classifier("cnn", tuple(state["shape"].tolist()), int(state["num_classes"]))
        self.net.load_state_dict(state["model"])

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.net[:-1](normalize(to_input(images)))
        return features, self.net[-1](features)


def load_evaluator(weights: Path, device: torch.device) -> EvaluatorNet:
    """The quality evaluator with its trained weights, on ``device``, in eval mode."""
    return EvaluatorNet(weights).to(device).eval()
