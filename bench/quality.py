"""Synthetic-data quality per (data, regime, strategy, seed), through torch-fidelity.

What is scored is what the classifier trains on, one view per distinct image: the synthetic pool
(generated), the real images through the batch transform (augmented: a distortion, not a realism
measure), or the labelled real images themselves (`none`: the floor at this regime). They are
compared with as many distinct real test images (N, recorded with every row), and the real-vs-real
reference uses N distinct unlabelled real images, so that a row and its floor share N. Metrics: KID
(unbiased: the headline at small N), FID (biased upward at small N: compare only at equal N), IS,
precision/recall, in the feature space of a domain evaluator network (the suite's `cnn`, trained on
the training pool without the replicate's labelled images where the regime leaves enough, cached);
for generated images also CAS (a `cnn` trained on them alone, tested on real test images) and
memorization (nearest-neighbour distances to the labelled images). With Inception-v3 weights the
standard Inception FID/KID are computed too. The extractor's name says which evaluator it was.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torch_fidelity
from torch_fidelity.feature_extractor_base import FeatureExtractorBase
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY, register_feature_extractor

from bench.inception import default_weights_file
from bench.cache import FileCache, cache_key
from bench.config import QualitySpec
from bench.core.files import atomic_write
from bench.core.images import ImageSet
from bench.data import Dataset
from bench.core.keys import stable_hash
from bench.models import CLASSIFIERS, build_classifier, classifier_versions
from bench.core.seeding import derive_seed, seeded
from bench.splits import Split, train_pool
from bench.train import normalize, predict, to_input, train
from bench.core.strategy import TrainingData

EVALUATOR = "augbench-evaluator"
EVALUATOR_VERSION = "2"  # 2: trained without the replicate's labelled images
NEAR_COPY_PERCENTILE = 0.05  # a sample nearer to a training image than 95% of real test images are


class EvaluatorExtractor(FeatureExtractorBase):
    """torch-fidelity feature extractor over our evaluator: penultimate features and logits."""

    def __init__(self, name, features_list, feature_extractor_weights_path=None, **kwargs):
        super().__init__(name, features_list)
        state = torch.load(feature_extractor_weights_path, map_location="cpu", weights_only=True)
        self.net = build_classifier("cnn", tuple(state["shape"].tolist()), int(state["num_classes"]))
        self.net.load_state_dict(state["model"])

    @staticmethod
    def get_provided_features_list():
        return "features", "logits"

    @staticmethod
    def get_default_feature_layer_for_metric(metric):
        return "logits" if metric == "isc" else "features"

    @staticmethod
    def can_be_compiled():
        return False

    @staticmethod
    def get_dummy_input_for_compile():
        raise NotImplementedError("the evaluator is not compiled")

    def forward(self, images: torch.Tensor):
        features = self.net[:-1](normalize(to_input(images)))
        found = {"features": features, "logits": self.net[-1](features)}
        return tuple(found[name] for name in self.features_list)


if EVALUATOR not in FEATURE_EXTRACTORS_REGISTRY:
    register_feature_extractor(EVALUATOR, EvaluatorExtractor)


class _Images(torch.utils.data.Dataset):
    """Bare uint8 image tensors, as torch-fidelity wants them; optionally gray -> 3 channels."""

    def __init__(self, images: torch.Tensor, rgb: bool = False):
        self.images = images.expand(-1, 3, -1, -1) if rgb and images.shape[1] == 1 else images

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i]


def train_cnn(images: ImageSet, val: ImageSet, num_classes: int, budget_scale: float, device: torch.device,
              seed: int):
    """The suite's `cnn`, trained by its recipe on ``images`` (val only feeds the learning curve)."""
    recipe = CLASSIFIERS.get("cnn").recipe
    with seeded(seed, device):
        model = build_classifier("cnn", tuple(images.images.shape[1:]), num_classes)
        train(model, recipe, TrainingData(real=images), val, steps=recipe.steps(len(images), budget_scale),
              num_classes=num_classes, device=device, order_seed=seed, augment_seed=seed, eval_points=1)
    return model


def accuracy_on(model, test: ImageSet, device: torch.device) -> float:
    return (predict(model, test.images, device).argmax(1) == test.labels).float().mean().item()


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


def evaluator(dataset: Dataset, split: Split, device: torch.device, cache: FileCache,
              budget_scale: float) -> Evaluator:
    """The domain evaluator of one replicate's split (trained once, then cached)."""
    pool, test = train_pool(dataset, split.spec)
    images, disjoint = evaluator_training_images(pool, split)
    key = cache_key(EVALUATOR_VERSION, classifier_versions("cnn"), dataset.content_hash, split.spec, budget_scale,
                    stable_hash(split.labelled_index.tolist()) if disjoint else "whole pool")

    def fit() -> dict:
        model = train_cnn(images, split.val, dataset.num_classes, budget_scale, device, derive_seed("evaluator", key))
        cache.save_tensors("evaluator", key, {"model": {k: v.cpu() for k, v in model.state_dict().items()},
                                              "shape": torch.tensor(dataset.image_shape),
                                              "num_classes": torch.tensor(dataset.num_classes)})
        return {"test_accuracy": accuracy_on(model, test, device)}

    meta = cache.json_once("evaluator", key, fit, with_tensors=True)
    return Evaluator(cache.tensors_path("evaluator", key), f"{EVALUATOR}:{dataset.name}:{key[:10]}", disjoint,
                     meta["test_accuracy"])


def trained_on_images(data: TrainingData, num_classes: int, generator: torch.Generator,
                      device: torch.device) -> tuple[ImageSet, str]:
    """The images the classifier trains on besides the unchanged real ones, one view of each
    distinct image, and their kind: ``generated`` (the synthetic pool), ``generated+augmented``
    (the pool through the batch transform), ``augmented`` (the real images through it) or ``real``."""
    if data.synthetic is not None:
        images, kind = data.synthetic, "generated"
    else:
        images, kind = data.real, "real"
    if data.batch_transform is None:
        return images, kind
    x = to_input(images.images.to(device))
    y = F.one_hot(images.labels.to(device), num_classes).float()
    x, y = data.batch_transform(x, y, generator)
    shown = ImageSet((x * 255).round().clamp(0, 255).to(torch.uint8).cpu(), y.argmax(1).cpu())
    return shown, "augmented" if kind == "real" else "generated+augmented"


def fidelity_metrics(first: torch.Tensor, second: torch.Tensor, device: torch.device, extractor: str,
                     weights: str, metrics: tuple[str, ...] = ("fid", "kid", "isc", "prc")) -> dict:
    """torch-fidelity metrics of two uint8 image tensors (cache off: its keys ignore the data)."""
    rgb = extractor != EVALUATOR
    return torch_fidelity.calculate_metrics(
        input1=_Images(first, rgb), input2=_Images(second, rgb), cuda=device.type == "cuda",
        feature_extractor=extractor, feature_extractor_weights_path=weights, cache=False, verbose=False,
        save_cpu_ram=True, kid_subset_size=min(1000, len(first), len(second)), batch_size=256,
        **{m: True for m in metrics})


def load_evaluator(weights: Path, device: torch.device) -> EvaluatorExtractor:
    return EvaluatorExtractor(EVALUATOR, ["features", "logits"], feature_extractor_weights_path=weights).to(device).eval()


@torch.no_grad()
def evaluator_outputs(net: EvaluatorExtractor, images: torch.Tensor,
                      device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(features, logits) of the evaluator for uint8 images."""
    outs = [net(chunk.to(device)) for chunk in images.split(1024)]
    return torch.cat([o[0] for o in outs]).cpu(), torch.cat([o[1] for o in outs]).cpu()


def memorization(net: EvaluatorExtractor, synthetic: torch.Tensor, train_images: torch.Tensor,
                 test_images: torch.Tensor, device: torch.device) -> dict:
    """Nearest-neighbour distances to the training images in the evaluator's feature space. By
    construction NEAR_COPY_PERCENTILE of real test images are near-copies: that is the chance level."""
    train_f, _ = evaluator_outputs(net, train_images, device)
    synth_nn = torch.cdist(evaluator_outputs(net, synthetic, device)[0], train_f).min(1).values
    test_nn = torch.cdist(evaluator_outputs(net, test_images, device)[0], train_f).min(1).values
    threshold = torch.quantile(test_nn, NEAR_COPY_PERCENTILE)
    return {"mem_nn_synthetic_median": synth_nn.median().item(), "mem_nn_test_median": test_nn.median().item(),
            "mem_nn_ratio": (synth_nn.median() / test_nn.median().clamp_min(1e-12)).item(),
            "mem_near_copy_fraction": (synth_nn < threshold).float().mean().item(),
            "mem_near_copy_chance": NEAR_COPY_PERCENTILE}


def save_samples(path: Path, real: ImageSet, shown: ImageSet, class_names: tuple[str, ...], kind: str,
                 per_class: int = 8) -> None:
    """Up to ``per_class`` real and trained-on images of every class, for the report's sample grids."""
    def take(images: ImageSet) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.cat([torch.nonzero(images.labels == c).flatten()[:per_class] for c in range(len(class_names))])
        return images.images[index], images.labels[index]

    (real_images, real_labels), (shown_images, shown_labels) = take(real), take(shown)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, real_images=real_images.numpy(), real_labels=real_labels.numpy(),
                        shown_images=shown_images.numpy(), shown_labels=shown_labels.numpy(),
                        class_names=np.array(class_names), kind=np.array(kind))
    atomic_write(path, buffer.getvalue())


def reference_distances(pool: ImageSet, split: Split, test_images: torch.Tensor, evaluator_: Evaluator,
                        device: torch.device, seed: int) -> dict:
    """FID/KID against the same test images of two references: as many distinct real images from
    the pool (neither labelled nor validation) as are scored (real vs real: the floor at this N),
    and uniform noise (the ceiling)."""
    unused = np.setdiff1d(np.arange(len(pool)), np.concatenate([split.labelled_index, split.val_index]))
    generator = torch.Generator().manual_seed(seed)
    chosen = torch.from_numpy(unused)[torch.randperm(len(unused), generator=generator)[:len(test_images)]]
    real = pool.images[chosen]
    noise = torch.randint(0, 256, test_images.shape, dtype=torch.uint8, generator=generator)
    row = {"quality_ref_n": len(real)}
    for name, images in (("real", real), ("noise", noise)):
        found = fidelity_metrics(images, test_images, device, EVALUATOR, str(evaluator_.weights), metrics=("fid", "kid"))
        row[f"fid_evaluator_ref_{name}"] = found["frechet_inception_distance"]
        row[f"kid_evaluator_ref_{name}"] = found["kernel_inception_distance_mean"]
    return row


def subset_of(images: ImageSet, n: int, seed: int) -> ImageSet:
    """n of the images (all of them, in order, when there are no more), chosen by ``seed``."""
    if len(images) <= n:
        return images
    return images.subset(torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[:n])


def assess_quality(data: TrainingData, dataset: Dataset, split: Split, spec: QualitySpec, device: torch.device,
                   cache: FileCache, budget_scale: float, seed: int, samples_path: Path | None) -> dict:
    """All quality columns for one fitted strategy."""
    judge = evaluator(dataset, split, device, cache, budget_scale)
    shown, kind = trained_on_images(data, dataset.num_classes, torch.Generator(device=device).manual_seed(seed),
                                    device)
    n = min(spec.samples, len(shown), len(split.test))
    scored, test = subset_of(shown, n, seed), subset_of(split.test, n, seed + 1)
    found = fidelity_metrics(scored.images, test.images, device, EVALUATOR, str(judge.weights))
    pool, _ = train_pool(dataset, split.spec)
    references = cache.json_once(  # shared by every strategy of a replicate with this N
        "reference", cache_key(judge.name, n, seed),
        lambda: reference_distances(pool, split, test.images, judge, device, seed))
    net = load_evaluator(judge.weights, device)
    _, logits = evaluator_outputs(net, scored.images, device)
    row = {"quality_kind": kind, "quality_n": n, "quality_n_test": len(test), "quality_extractor": judge.name,
           "evaluator_disjoint": judge.disjoint, "evaluator_test_accuracy": judge.test_accuracy,
           "fid_evaluator": found["frechet_inception_distance"],
           "kid_evaluator": found["kernel_inception_distance_mean"],
           "is_evaluator": found["inception_score_mean"],
           "precision_evaluator": found["precision"], "recall_evaluator": found["recall"],
           "evaluator_label_agreement": (logits.argmax(1) == scored.labels).float().mean().item(),
           **references}
    if spec.inception_weights:
        weights = default_weights_file() if spec.inception_weights == "auto" else spec.inception_weights
        inception = fidelity_metrics(scored.images, test.images, device, "inception-v3-compat", str(weights),
                                     metrics=("fid", "kid"))
        row.update(fid_inception=inception["frechet_inception_distance"],
                   kid_inception=inception["kernel_inception_distance_mean"])
    if kind.startswith("generated"):
        cas_model = train_cnn(shown, split.val, dataset.num_classes, budget_scale, device, seed + 2)
        row["cas_accuracy"] = accuracy_on(cas_model, split.test, device)
        row.update(memorization(net, scored.images, split.labelled.images, test.images, device))
    if kind != "real" and samples_path is not None:
        save_samples(samples_path, split.labelled, shown, dataset.class_names, kind)
        row["sample_grid"] = f"{samples_path.parent.name}/{samples_path.name}"  # relative to the run folder
    return row
