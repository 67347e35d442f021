"""Synthetic-data quality per (data, regime, strategy, seed), through torch-fidelity.

The images a strategy trains on (its synthetic samples; the augmented real images for
`classical`; the real images for `none`) are compared with real test images at a fixed count:
FID, KID, IS, precision/recall in the feature space of a domain evaluator network (the suite's
`cnn` trained once on the data set's full training split, cached by content hash), plus, for
generative strategies, CAS (a `cnn` trained on synthetic images only, tested on real test images)
and memorization (nearest-neighbour distances to the training images). With a path to Inception-v3
weights, the standard Inception FID/KID are computed too. Columns name their extractor.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
import torch_fidelity
from torch_fidelity.feature_extractor_base import FeatureExtractorBase
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY, register_feature_extractor

from bench.cache import FileCache, cache_key
from bench.config import QualitySpec
from bench.core.images import ImageSet
from bench.data import Dataset
from bench.models import CLASSIFIERS, SUITE_VERSION, build_classifier
from bench.core.seeding import derive_seed, seeded
from bench.splits import Split, SplitSpec, train_pool
from bench.train import normalize, predict, to_input, train
from bench.core.strategy import TrainingData

EVALUATOR = "augbench-evaluator"
EVALUATOR_VERSION = "1"
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


def evaluator(dataset: Dataset, split_spec: SplitSpec, device: torch.device, cache: FileCache,
              budget_scale: float) -> tuple[Path, float]:
    """The domain evaluator's weights file and its test accuracy (trained once, then cached)."""
    key = cache_key(EVALUATOR_VERSION, SUITE_VERSION, dataset.content_hash, split_spec, budget_scale)

    def fit() -> dict:
        pool, test = train_pool(dataset, split_spec)
        model = train_cnn(pool, pool.subset(torch.arange(min(500, len(pool)))), dataset.num_classes,
                          budget_scale, device, derive_seed("evaluator", key))
        cache.save_tensors("evaluator", key, {"model": {k: v.cpu() for k, v in model.state_dict().items()},
                                              "shape": torch.tensor(dataset.image_shape),
                                              "num_classes": torch.tensor(dataset.num_classes)})
        return {"test_accuracy": accuracy_on(model, test, device)}

    meta = cache.json_once("evaluator", key, fit)
    return cache.tensors_path("evaluator", key), meta["test_accuracy"]


def trained_on_images(data: TrainingData, n: int, num_classes: int, generator: torch.Generator,
                      device: torch.device) -> ImageSet:
    """n images as the classifier sees them: sampled from the generator, else drawn (with
    replacement) from the training images; then through the batch transform, if any."""
    if data.sampler is not None:
        images = data.sampler(n, generator)
    else:
        pool = data.real if data.synthetic is None else ImageSet(
            torch.cat([data.real.images, data.synthetic.images]), torch.cat([data.real.labels, data.synthetic.labels]))
        images = pool.subset(torch.randint(0, len(pool), (n,), generator=generator, device=device).cpu())
    if data.batch_transform is None:
        return images
    x = to_input(images.images.to(device))
    y = F.one_hot(images.labels.to(device), num_classes).float()
    x, y = data.batch_transform(x, y, generator)
    return ImageSet((x * 255).round().clamp(0, 255).to(torch.uint8).cpu(), y.argmax(1).cpu())


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
    """Nearest-neighbour distances to the training images in the evaluator's feature space."""
    train_f, _ = evaluator_outputs(net, train_images, device)
    synth_nn = torch.cdist(evaluator_outputs(net, synthetic, device)[0], train_f).min(1).values
    test_nn = torch.cdist(evaluator_outputs(net, test_images, device)[0], train_f).min(1).values
    threshold = torch.quantile(test_nn, NEAR_COPY_PERCENTILE)
    return {"mem_nn_synthetic_median": synth_nn.median().item(), "mem_nn_test_median": test_nn.median().item(),
            "mem_nn_ratio": (synth_nn.median() / test_nn.median().clamp_min(1e-12)).item(),
            "mem_near_copy_fraction": (synth_nn < threshold).float().mean().item()}


def classification_accuracy_score(data: TrainingData, split: Split, n: int, num_classes: int, device: torch.device,
                                  budget_scale: float, seed: int) -> float:
    """CAS: a `cnn` trained on n synthetic images only, accuracy on the real test images."""
    synthetic = data.sampler(n, torch.Generator(device=device).manual_seed(seed))
    model = train_cnn(synthetic, split.val, num_classes, budget_scale, device, seed)
    return accuracy_on(model, split.test, device)


def save_sample_grid(path: Path, real: ImageSet, synthetic: ImageSet, num_classes: int, per_class: int = 8) -> None:
    """A PNG with one row per class: real images on the left, generated ones on the right."""
    from torchvision.utils import save_image

    def take(images: ImageSet, cls: int) -> torch.Tensor:
        chosen = images.images[images.labels == cls][:per_class]
        pad = torch.zeros(per_class - len(chosen), *images.images.shape[1:], dtype=torch.uint8)
        return torch.cat([chosen, pad])

    rows = [torch.cat([take(real, c), take(synthetic, c)]) for c in range(num_classes)]
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(torch.cat(rows).float() / 255.0, path, nrow=2 * per_class, padding=1, pad_value=0.5)


def reference_distances(dataset: Dataset, split: Split, test_images: torch.Tensor, weights: Path,
                        device: torch.device, seed: int) -> dict:
    """FID/KID against the same test images of two references at the same N: fresh real images from
    the training pool (real vs real: the floor) and uniform noise (the ceiling)."""
    n = len(test_images)
    pool, _ = train_pool(dataset, split.spec)
    generator = torch.Generator().manual_seed(seed)
    real = pool.images[torch.randperm(len(pool), generator=generator)[:n]]
    noise = torch.randint(0, 256, test_images.shape, dtype=torch.uint8, generator=generator)
    row = {}
    for name, images in (("real", real), ("noise", noise)):
        found = fidelity_metrics(images, test_images, device, EVALUATOR, str(weights), metrics=("fid", "kid"))
        row[f"fid_evaluator_ref_{name}"] = found["frechet_inception_distance"]
        row[f"kid_evaluator_ref_{name}"] = found["kernel_inception_distance_mean"]
    return row


def assess_quality(data: TrainingData, dataset: Dataset, split: Split, spec: QualitySpec, device: torch.device,
                   cache: FileCache, budget_scale: float, seed: int, grid_path: Path | None) -> dict:
    """All quality columns for one fitted strategy."""
    weights, evaluator_accuracy = evaluator(dataset, split.spec, device, cache, budget_scale)
    n = min(spec.samples, len(split.test))
    generator = torch.Generator(device=device).manual_seed(seed)
    trained_on = trained_on_images(data, n, dataset.num_classes, generator, device)
    test = split.test.subset(torch.randperm(len(split.test), generator=torch.Generator().manual_seed(seed))[:n])
    found = fidelity_metrics(trained_on.images, test.images, device, EVALUATOR, str(weights))
    references = cache.json_once(  # shared by every strategy of a replicate
        "reference", cache_key(weights.name, n, seed),
        lambda: reference_distances(dataset, split, test.images, weights, device, seed))
    net = load_evaluator(weights, device)
    _, logits = evaluator_outputs(net, trained_on.images, device)
    row = {"quality_n": n, "quality_extractor": f"{EVALUATOR}-cnn-v{SUITE_VERSION}",
           "evaluator_test_accuracy": evaluator_accuracy,
           "fid_evaluator": found["frechet_inception_distance"],
           "kid_evaluator": found["kernel_inception_distance_mean"],
           "is_evaluator": found["inception_score_mean"],
           "precision_evaluator": found["precision"], "recall_evaluator": found["recall"],
           "evaluator_label_agreement": (logits.argmax(1) == trained_on.labels).float().mean().item(),
           **references}
    if spec.inception_weights:
        inception = fidelity_metrics(trained_on.images, test.images, device, "inception-v3-compat",
                                     spec.inception_weights,
                                     metrics=("fid", "kid"))
        row.update(fid_inception=inception["frechet_inception_distance"],
                   kid_inception=inception["kernel_inception_distance_mean"])
    if data.sampler is not None:
        synthetic = data.sampler(n, torch.Generator(device=device).manual_seed(seed + 1))
        row["cas_accuracy"] = classification_accuracy_score(data, split, n, dataset.num_classes, device,
                                                            budget_scale, seed + 2)
        row.update(memorization(net, synthetic.images, split.labelled.images, test.images, device))
        if grid_path is not None:
            save_sample_grid(grid_path, split.labelled, synthetic, dataset.num_classes)
            row["sample_grid"] = str(grid_path)
    return row

