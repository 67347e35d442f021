"""The quality stage: synthetic-data quality per (data, regime, strategy, seed).

What is scored is what the classifier trains on, one view per distinct image: the synthetic pool
(generated), the real images through the batch transform (augmented: a distortion, not a realism
measure), or the labelled real images themselves (`none`: the floor at this regime). They are
compared with as many distinct real test images (N, recorded with every row), and the real-vs-real
reference uses N distinct unlabelled real images, so that a row and its floor share N. Every image
set passes through the domain evaluator once (bench/quality/evaluator.py); KID (unbiased: the
headline at small N), FID (biased upward at small N: compare only at equal N), IS and
precision/recall are computed from those features (bench/quality/fidelity.py); for generated images
also CAS and memorization (bench/quality/memorization.py). With Inception-v3 weights the standard
Inception FID/KID are computed too. The extractor's name says which evaluator it was.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from bench.core.cache import FileCache, cache_key
from bench.core.files import atomic_write
from bench.core.images import ImageSet, UnlabelledImages
from bench.core.strategy import TrainingData
from bench.data.sets import Dataset
from bench.data.splits import Split, train_pool
from bench.quality.evaluator import (
    Evaluator,
    EvaluatorNet,
    classification_accuracy_score,
    cnn_steps,
    evaluator,
    load_evaluator,
)
from bench.quality.features import Features, extract
from bench.quality.fidelity import FID, IS, KID, fidelity, inception_fid_kid
from bench.quality.inception import default_weights_file
from bench.quality.memorization import memorization
from bench.quality.settings import QualitySpec
from bench.training.loop import to_input


@dataclass(frozen=True)
class QualityWork:
    """What one piece of the quality stage costs, in the units the cost plan calibrates: steps of
    the evaluator's `cnn` recipe, and images passed through the evaluator and the metrics."""

    cnn_steps: int
    feature_images: int


def scored_count(samples: int, n_trained_on: int, n_test: int) -> int:
    """N, the distinct images per side that the quality stage scores: at most ``samples``, and no
    more than the images trained on besides the real ones (or the real ones) and the test images."""
    return min(samples, n_trained_on, n_test)


def strategy_work(n_scored: int, n_synthetic: int, budget_scale: float) -> QualityWork:
    """A strategy's quality row: its scored images and as many test images, and CAS where generated."""
    return QualityWork(cnn_steps(n_synthetic, budget_scale) if n_synthetic else 0, 2 * n_scored)


def evaluator_work(n_evaluator_images: int, n_scored: int, budget_scale: float) -> QualityWork:
    """A replicate's evaluator and its real-vs-real and noise references at N scored images."""
    return QualityWork(cnn_steps(n_evaluator_images, budget_scale), 2 * n_scored)


@dataclass(frozen=True)
class TrainedOn:
    """The images the classifier trains on besides the unchanged real ones, one view of each
    distinct image: their ``source`` (``real``, or the synthetic pool's kind: ``generated``, or
    ``pseudo-labelled`` where it holds real pool images with a teacher's labels) and whether they
    went through the strategy's batch transform."""

    images: ImageSet
    source: str
    augmented: bool

    @property
    def synthetic(self) -> bool:
        return self.source != "real"

    @property
    def kind(self) -> str:
        """The ``quality_kind`` column: real, augmented, generated, generated+augmented, ..."""
        if not self.synthetic:
            return "augmented" if self.augmented else "real"
        return f"{self.source}+augmented" if self.augmented else self.source


def trained_on_images(
    data: TrainingData, num_classes: int, generator: torch.Generator, device: torch.device
) -> TrainedOn:
    """What the classifier trains on besides the unchanged real images: the synthetic pool where
    there is one, else the real images, through the batch transform where there is one."""
    if data.synthetic is not None:
        images, source = data.synthetic, data.synthetic_kind
    else:
        images, source = data.real, "real"
    if data.batch_transform is None:
        return TrainedOn(images, source, augmented=False)
    x = to_input(images.images.to(device))
    y = F.one_hot(images.labels.to(device), num_classes).float()
    x, y = data.batch_transform(x, y, generator)
    shown = ImageSet((x * 255).round().clamp(0, 255).to(torch.uint8).cpu(), y.argmax(1).cpu())
    return TrainedOn(shown, source, augmented=True)


def save_samples(
    path: Path, real: ImageSet, shown: ImageSet, class_names: tuple[str, ...], kind: str, per_class: int = 8
) -> None:
    """Up to ``per_class`` real and trained-on images of every class, for the report's sample grids."""

    def take(images: ImageSet) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.cat(
            [torch.nonzero(images.labels == c).flatten()[:per_class] for c in range(len(class_names))]
        )
        return images.images[index], images.labels[index]

    (real_images, real_labels), (shown_images, shown_labels) = take(real), take(shown)
    buffer = io.BytesIO()
    np.savez_compressed(
        buffer,
        real_images=real_images.numpy(),
        real_labels=real_labels.numpy(),
        shown_images=shown_images.numpy(),
        shown_labels=shown_labels.numpy(),
        class_names=np.array(class_names),
        kind=np.array(kind),
    )
    atomic_write(path, buffer.getvalue())


def reference_distances(
    pool: ImageSet, split: Split, test: Features, net: EvaluatorNet, device: torch.device, seed: int
) -> dict:
    """FID/KID against the same test images of two references: as many distinct real images from
    the pool (neither labelled nor validation) as are scored (real vs real: the floor at this N),
    and uniform noise (the ceiling)."""
    n = len(test)
    unused = split.unlabelled_index
    generator = torch.Generator().manual_seed(seed)
    chosen = torch.from_numpy(unused)[torch.randperm(len(unused), generator=generator)[:n]]
    real = pool.images[chosen]
    noise = torch.randint(0, 256, (n, *pool.images.shape[1:]), dtype=torch.uint8, generator=generator)
    real_found = fidelity(extract(net, real, device), test, metrics=("fid", "kid"))
    noise_found = fidelity(extract(net, noise, device), test, metrics=("fid", "kid"))
    return {
        "quality_ref_n": len(real),
        "fid_evaluator_ref_real": real_found[FID],
        "kid_evaluator_ref_real": real_found[KID],
        "fid_evaluator_ref_noise": noise_found[FID],
        "kid_evaluator_ref_noise": noise_found[KID],
    }


def subset_of(images: ImageSet, n: int, seed: int) -> ImageSet:
    """n of the images (all of them, in order, when there are no more), chosen by ``seed``."""
    if len(images) <= n:
        return images
    return images.subset(torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[:n])


def _evaluator_columns(judge: Evaluator) -> dict:
    return {
        "quality_extractor": judge.name,
        "evaluator_disjoint": judge.disjoint,
        "evaluator_test_accuracy": judge.test_accuracy,
    }


def assess_quality(
    data: TrainingData,
    dataset: Dataset,
    split: Split,
    spec: QualitySpec,
    device: torch.device,
    cache: FileCache,
    budget_scale: float,
    seed: int,
    samples_path: Path | None,
    unlabelled: UnlabelledImages | None = None,
    unlabelled_in_pool: bool = False,
) -> dict:
    """All quality columns for one fitted strategy. ``unlabelled``: the images without labels its fit
    saw besides the labelled ones (memorization is measured against both); ``unlabelled_in_pool``:
    they are training-pool images, which the evaluator trained on too."""
    judge = evaluator(dataset, split, device, cache, budget_scale)
    net = load_evaluator(judge.weights, device)
    trained_on = trained_on_images(
        data, dataset.num_classes, torch.Generator(device=device).manual_seed(seed), device
    )
    shown, kind = trained_on.images, trained_on.kind
    n = scored_count(spec.samples, len(shown), len(split.test))
    scored, test = subset_of(shown, n, seed), subset_of(split.test, n, seed + 1)
    scored_f, test_f = extract(net, scored.images, device), extract(net, test.images, device)
    found = fidelity(scored_f, test_f)
    pool, _ = train_pool(dataset, split.spec)
    references = cache.json_once(  # shared by every strategy of a replicate with this N
        "reference",
        cache_key(judge.name, n, seed),
        lambda: reference_distances(pool, split, test_f, net, device, seed),
    )
    row = {
        "quality_kind": kind,
        "quality_n": n,
        "quality_n_test": len(test),
        **_evaluator_columns(judge),
        "evaluator_overlaps_fit": not judge.disjoint or unlabelled_in_pool,
        "fid_evaluator": found[FID],
        "kid_evaluator": found[KID],
        "is_evaluator": found[IS],
        "precision_evaluator": found["precision"],
        "recall_evaluator": found["recall"],
        "evaluator_label_agreement": (scored_f.logits.argmax(1) == scored.labels).float().mean().item(),
        **references,
    }
    if spec.inception_weights:
        weights = default_weights_file() if spec.inception_weights == "auto" else spec.inception_weights
        row.update(inception_fid_kid(scored.images, test.images, device, str(weights)))
    if trained_on.synthetic:  # a synthetic pool: generated or pseudo-labelled images
        row["cas_accuracy"] = classification_accuracy_score(
            shown, split, dataset.num_classes, budget_scale, device, seed + 2
        )
    if trained_on.source == "generated":
        seen = (
            split.labelled.images
            if unlabelled is None
            else torch.cat([split.labelled.images, unlabelled.images])
        )
        row.update(memorization(scored_f, extract(net, seen, device), test_f))
    if (trained_on.synthetic or trained_on.augmented) and samples_path is not None:
        save_samples(samples_path, split.labelled, shown, dataset.class_names, kind)
        row["sample_grid"] = f"{samples_path.parent.name}/{samples_path.name}"  # relative to the run folder
    return row
