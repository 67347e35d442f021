"""`pseudo-label`: the control of the semi-supervised protocol (self-training, Lee 2013).

A teacher (the suite's `cnn`, trained by its recipe on the labelled images alone, seeded by what
the fit depends on) labels the unlabelled pool; the images it is at least ``threshold`` sure of join the training
data with its labels, class-balanced up to ``ratio`` per real image, the most confident first. A
generator that saw the same pool has to beat this before a gain is credited to generation rather
than to the pool. With a classical ``policy`` at a ``magnitude`` above 0 every training batch is
augmented too, so the strongest simple semi-supervised baseline is one config entry.
"""
from __future__ import annotations

import torch

from bench.core.cache import FileCache, cache_key
from bench.core.errors import CellFailed
from bench.core.images import ImageSet
from bench.core.seeding import derive_seed
from bench.core.strategy import Param, Strategy, TrainingData, register_strategy
from bench.models.suite import classifier_versions
from bench.training.loop import predict, train_suite_classifier
from strategies.classical import Classical
from strategies.generative import RATIO, balanced_labels

TEACHER = "cnn"


def confident_balanced(probabilities: torch.Tensor, threshold: float, wanted: int) -> torch.Tensor:
    """Indices of at most ``wanted`` images whose top probability reaches ``threshold``, spread over
    the classes as evenly as the confident images allow (a class short of images leaves its share
    unfilled), the most confident first within each class."""
    confidence, labels = probabilities.max(1)
    num_classes = probabilities.shape[1]
    quota = torch.bincount(balanced_labels(wanted, num_classes), minlength=num_classes)
    chosen = []
    for cls in range(num_classes):
        members = torch.nonzero((labels == cls) & (confidence >= threshold)).flatten()
        order = torch.argsort(confidence[members], descending=True, stable=True)
        chosen.append(members[order[:int(quota[cls])]])
    return torch.cat(chosen).sort().values


@register_strategy("pseudo-label")
class PseudoLabel(Strategy):
    """Self-training control: the pool's images that a cnn teacher labels with confidence."""

    params = {
        "threshold": Param(0.95, low=0.0, high=1.0, tune=True,
                           help="the teacher's confidence an image needs to join the training data"),
        "ratio": Param(RATIO.default, low=RATIO.low, high=RATIO.high, tune=True,
                       help="pool images (with the teacher's labels) per labelled image, class-balanced"),
        "policy": Classical.params["policy"],
        "magnitude": Param(0.0, low=0.0, high=1.0, tune=True,
                           help="strength of the classical policy on every batch (0: none)"),
    }

    @classmethod
    def sees_unlabelled(cls, params):
        return True

    @classmethod
    def versions(cls, params):
        teacher = {f"teacher:{name}": version for name, version in classifier_versions(TEACHER).items()}
        return {**super().versions(params), **teacher, **(Classical.versions(params) if params["magnitude"] else {})}

    def teacher_probabilities(self, labelled: ImageSet, ctx) -> torch.Tensor:
        """The teacher's class probabilities for every pool image. The teacher depends on the fit's
        data alone (its seed comes from their key), not on the threshold or the ratio, which only
        choose among its labels: it is cached in the run folder and shared by every such setting."""
        key = cache_key("teacher", TEACHER, classifier_versions(TEACHER), ctx.cache_key_parts, ctx.budget_scale)

        def probabilities() -> torch.Tensor:
            teacher = train_suite_classifier(TEACHER, labelled, labelled, ctx.num_classes, ctx.budget_scale,
                                             ctx.device, derive_seed("teacher", key))
            return predict(teacher, ctx.unlabelled.images, ctx.device).softmax(1)

        if ctx.cache_dir is None:
            return probabilities()
        cache = FileCache(ctx.cache_dir)

        def fit() -> dict:
            cache.save_tensors("teacher", key, {"probabilities": probabilities()})
            return {"pool_images": len(ctx.unlabelled)}

        cache.json_once("teacher", key, fit, with_tensors=True)
        return cache.load_tensors("teacher", key)["probabilities"]

    def fit(self, labelled, ctx):
        if ctx.unlabelled is None:
            raise CellFailed("pseudo-label needs the unlabelled pool (set `unlabelled`)")
        probabilities = self.teacher_probabilities(labelled, ctx)
        chosen = confident_balanced(probabilities, self.values["threshold"], round(self.values["ratio"] * len(labelled)))
        pseudo = ImageSet(ctx.unlabelled.images[chosen], probabilities[chosen].argmax(1))
        transform = Classical(policy=self.values["policy"], magnitude=self.values["magnitude"]).batch_transform(ctx.hflip)
        return TrainingData(real=labelled, synthetic=pseudo if len(pseudo) else None, batch_transform=transform,
                            synthetic_kind="pseudo-labelled",
                            info={"pseudo_labelled": len(pseudo),
                                  "pseudo_label_confidence": probabilities[chosen].max(1).values.mean().item()
                                  if len(pseudo) else float("nan")})
