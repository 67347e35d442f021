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
from bench.core.schema import check_number
from bench.core.seeding import derive_seed
from bench.core.strategy import FitContext
from bench.models.suite import CLASSIFIERS, classifier_versions
from bench.training.loop import predict, train_suite_classifier

TEACHER = "cnn"


def teacher_versions() -> dict[str, str]:
    """The code versions the teacher's labels depend on (for a strategy's ``versions``)."""
    return {f"teacher:{name}": version for name, version in classifier_versions(TEACHER).items()}


def teacher_steps(n_labelled: int, budget_scale: float, found: int | None = None) -> int:
    """The teacher's budget: the steps `auto` found for its data set's `cnn`, else its recipe's."""
    return found or CLASSIFIERS.get(TEACHER).recipe.steps(n_labelled, budget_scale)


def teacher_key(cache_key_parts: tuple, budget_scale: float, steps: int | None = None) -> str:
    """The cache key of the teacher of a fit's data (trained for ``steps`` where budget.steps: auto
    found them)."""
    budget = (budget_scale,) if steps is None else (budget_scale, steps)
    return cache_key(
        "teacher", TEACHER_CACHE_VERSION, TEACHER, classifier_versions(TEACHER), cache_key_parts, *budget
    )


TEACHER_CACHE_VERSION = "2"  # 2: the cache holds its probabilities for the validation images too
AUTO_PRECISION = 0.95  # threshold: auto keeps the pool images of the confidences at which the
# teacher's labels of the validation images are at least this often right


def threshold_value(value, where: str):
    """A pseudo-label threshold: a confidence in [0, 1], or ``auto`` (chosen on validation data)."""
    return value if value == "auto" else check_number(value, where, float, 0.0, 1.0)


def teacher_probabilities(labelled: ImageSet, ctx: FitContext) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The teacher's class probabilities for every pool image, and for every validation image (None
    where the context holds none). The teacher depends on the fit's data alone (its seed comes from
    their key), not on what chooses among its labels: it is cached in the run folder and shared by
    every strategy and setting that asks for it."""
    if ctx.unlabelled is None or not len(ctx.unlabelled):
        raise CellFailed(
            "pseudo-labels need the unlabelled pool, but the protocol grants none (set `unlabelled`)"
        )
    key = teacher_key(ctx.cache_key_parts, ctx.budget_scale, ctx.teacher_steps)

    def probabilities() -> dict[str, torch.Tensor]:
        teacher = train_suite_classifier(
            TEACHER,
            labelled,
            labelled,
            ctx.num_classes,
            ctx.budget_scale,
            ctx.device,
            derive_seed("teacher", key),
            teacher_steps(len(labelled), ctx.budget_scale, ctx.teacher_steps),
        )
        found = {"probabilities": predict(teacher, ctx.unlabelled.images, ctx.device).softmax(1)}
        if ctx.val is not None:
            found["val_probabilities"] = predict(teacher, ctx.val.images, ctx.device).softmax(1)
        return found

    if ctx.cache_dir is None:
        found = probabilities()
    else:
        cache = FileCache(ctx.cache_dir)

        def fit() -> dict:
            cache.save_tensors("teacher", key, probabilities())
            return {"pool_images": len(ctx.unlabelled)}

        cache.json_once("teacher", key, fit, with_tensors=True)
        found = cache.load_tensors("teacher", key)
    return found["probabilities"], found.get("val_probabilities")


def auto_threshold(
    val_probabilities: torch.Tensor, val_labels: torch.Tensor, precision: float = AUTO_PRECISION
) -> float:
    """The lowest confidence at which the teacher's labels of the validation images it is at least
    that sure of are right at least ``precision`` of the time (1.0 where no confidence reaches it)."""
    confidence, labels = val_probabilities.max(1)
    order = torch.argsort(confidence, descending=True, stable=True)
    right = (labels[order] == val_labels[order]).double().cumsum(0)
    share = right / torch.arange(1, len(order) + 1, dtype=torch.double)
    sure = confidence[order]
    # the confidences where a cut can fall: after the last image of each run of equal confidences
    cut = torch.ones(len(order), dtype=torch.bool)
    cut[:-1] = sure[1:] < sure[:-1]
    good = torch.nonzero(cut & (share >= precision)).flatten()
    return float(sure[good[-1]]) if len(good) else 1.0


def confident_balanced(
    probabilities: torch.Tensor, threshold: float, wanted: int | None = None
) -> torch.Tensor:
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
            order = order[: wanted // num_classes + int(cls < wanted % num_classes)]
        chosen.append(members[order])
    return torch.cat(chosen).sort().values


def pseudo_labelled(
    labelled: ImageSet, ctx: FitContext, threshold: float | str, wanted: int | None = None
) -> tuple[ImageSet, torch.Tensor, float]:
    """The pool images the teacher is at least ``threshold`` sure of (see ``confident_balanced``),
    with its labels, its confidence in each, and the threshold used (``auto``: ``auto_threshold`` on
    the validation images, whose labels alone it reads)."""
    probabilities, val_probabilities = teacher_probabilities(labelled, ctx)
    if threshold == "auto":
        if val_probabilities is None:
            raise CellFailed("threshold: auto needs the validation images, which this fit was not given")
        threshold = auto_threshold(val_probabilities, ctx.val.labels)
    chosen = confident_balanced(probabilities, threshold, wanted)
    confidence, labels = probabilities[chosen].max(1)
    return ImageSet(ctx.unlabelled.images[chosen], labels), confidence, threshold
