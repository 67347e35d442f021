"""The teacher of the semi-supervised protocol: the suite's `cnn`, trained by its recipe on a
cell's labelled images alone, and its class probabilities for every image of the unlabelled pool.
The `pseudo-label` control trains the classifier on its confident labels; a generator with
``generator_data: pseudo-labelled`` trains on them (the same images, so that pseudo-label is the
control of both)."""
from __future__ import annotations

import torch

from bench.core.cache import FileCache, cache_key
from bench.core.errors import CellFailed
from bench.core.images import ImageSet
from bench.core.seeding import derive_seed
from bench.core.strategy import FitContext
from bench.models.suite import classifier_versions
from bench.training.loop import predict, train_suite_classifier

TEACHER = "cnn"


def teacher_versions() -> dict[str, str]:
    """The code versions the teacher's labels depend on (for a strategy's ``versions``)."""
    return {f"teacher:{name}": version for name, version in classifier_versions(TEACHER).items()}


def uses_teacher(versions: dict[str, str]) -> bool:
    """Whether a strategy with these code versions (its ``versions``) trains on the teacher's labels."""
    return any(name.startswith("teacher:") for name in versions)


def teacher_key(cache_key_parts: tuple, budget_scale: float) -> str:
    """The cache key of the teacher of a fit's data."""
    return cache_key("teacher", TEACHER, classifier_versions(TEACHER), cache_key_parts, budget_scale)


def teacher_probabilities(labelled: ImageSet, ctx: FitContext) -> torch.Tensor:
    """The teacher's class probabilities for every pool image. The teacher depends on the fit's
    data alone (its seed comes from their key), not on what chooses among its labels: it is cached
    in the run folder and shared by every strategy and setting that asks for it."""
    if ctx.unlabelled is None or not len(ctx.unlabelled):
        raise CellFailed("pseudo-labels need the unlabelled pool, but the protocol grants none (set `unlabelled`)")
    key = teacher_key(ctx.cache_key_parts, ctx.budget_scale)

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


def confident_balanced(probabilities: torch.Tensor, threshold: float, wanted: int | None = None) -> torch.Tensor:
    """Indices of the images whose top probability reaches ``threshold``: all of them, or at most
    ``wanted`` spread over the classes as evenly as the confident images allow (a class short of
    images leaves its share unfilled), the most confident first within each class."""
    confidence, labels = probabilities.max(1)
    num_classes = probabilities.shape[1]
    chosen = []
    for cls in range(num_classes):
        members = torch.nonzero((labels == cls) & (confidence >= threshold)).flatten()
        order = torch.argsort(confidence[members], descending=True, stable=True)
        if wanted is not None:  # an even share, the first wanted % num_classes classes one more
            order = order[:wanted // num_classes + int(cls < wanted % num_classes)]
        chosen.append(members[order])
    return torch.cat(chosen).sort().values


def pseudo_labelled(labelled: ImageSet, ctx: FitContext, threshold: float,
                    wanted: int | None = None) -> tuple[ImageSet, torch.Tensor]:
    """The pool images the teacher is at least ``threshold`` sure of (see ``confident_balanced``),
    with its labels, and its confidence in each."""
    probabilities = teacher_probabilities(labelled, ctx)
    chosen = confident_balanced(probabilities, threshold, wanted)
    confidence, labels = probabilities[chosen].max(1)
    return ImageSet(ctx.unlabelled.images[chosen], labels), confidence
