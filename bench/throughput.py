"""``augbench bench-augment``: our batched augmentation against the usual per-sample pipeline.

The reference is written the usual way: a torch Dataset whose ``__getitem__`` applies torchvision
v2 transforms to one image, batched by a DataLoader (in this process, no workers). Both sides use
the same policy, data and model; the numbers are images per second.
"""
from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from bench.augment import make_batch_transform, parse_policy
from bench.core.images import ImageSet
from bench.data import DatasetSpec, load_dataset
from bench.core.errors import UserError
from bench.models import CLASSIFIERS, build_classifier
from bench.core.seeding import seeded
from bench.train import normalize, to_input, train
from bench.core.strategy import TrainingData

BATCH = 128
MAGNITUDE = 0.5


def reference_transform(policy: str, size: int, hflip: bool):
    """The torchvision v2 per-image equivalent of our policy at magnitude 0.5."""
    from torchvision.transforms import v2

    if policy == "basic":
        steps = [v2.RandomAffine(degrees=30 * MAGNITUDE, translate=(0.1 * MAGNITUDE, 0.1 * MAGNITUDE),
                                 scale=(1 - 0.2 * MAGNITUDE, 1 + 0.2 * MAGNITUDE)),
                 v2.RandomCrop(size, padding=max(1, round(size / 8)))]
        steps += [v2.RandomHorizontalFlip()] if hflip else []
    elif policy == "trivialaugment":
        steps = [v2.TrivialAugmentWide()]
    else:
        raise UserError(f"--policy: the benchmark compares basic or trivialaugment, not {policy!r}")
    return v2.Compose(steps + [v2.ToDtype(torch.float32, scale=True)])


class PerSampleDataset(torch.utils.data.Dataset):
    """The usual pipeline: one image at a time through the v2 transforms."""

    def __init__(self, images: ImageSet, transform):
        self.images, self.transform = images, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.transform(self.images.images[i]), self.images.labels[i]


def _rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("inf")


def _time(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure_augmentation(images: ImageSet, policy: str, hflip: bool, n_images: int) -> tuple[float, float]:
    """Images/s of augmentation alone: (ours, reference)."""
    transform = make_batch_transform(parse_policy(policy), MAGNITUDE, hflip)
    generator = torch.Generator().manual_seed(0)
    labels = F.one_hot(images.labels, 10).float()

    def ours():
        for start in range(0, n_images, BATCH):
            index = torch.arange(start, start + BATCH) % len(images)
            transform(to_input(images.images[index]), labels[index], generator)

    loader = DataLoader(PerSampleDataset(images, reference_transform(policy, images.images.shape[-1], hflip)),
                        batch_size=BATCH, shuffle=True, generator=torch.Generator().manual_seed(0))

    def reference():
        seen = 0
        while seen < n_images:
            for x, _ in loader:
                seen += len(x)
                if seen >= n_images:
                    break

    ours()  # warm-up
    return _rate(n_images, _time(ours)), _rate(n_images, _time(reference))


def measure_training(images: ImageSet, val: ImageSet, policy: str, hflip: bool, steps: int) -> tuple[float, float]:
    """Images/s of cnn training with augmentation: (our loop, the usual DataLoader loop)."""
    recipe = CLASSIFIERS.get("cnn").recipe
    shape = tuple(images.images.shape[1:])
    data = TrainingData(real=images, batch_transform=make_batch_transform(parse_policy(policy), MAGNITUDE, hflip))
    device = torch.device("cpu")

    def ours():
        with seeded(0, device):
            train(build_classifier("cnn", shape, 10), recipe, data, val, steps=steps, num_classes=10, device=device,
                  order_seed=0, augment_seed=0, eval_points=1)

    loader = DataLoader(PerSampleDataset(images, reference_transform(policy, shape[-1], hflip)),
                        batch_size=recipe.batch_size, shuffle=True, drop_last=True,
                        generator=torch.Generator().manual_seed(0))

    def reference():
        with seeded(0, device):
            model = build_classifier("cnn", shape, 10)
            optimizer = torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=0.9, nesterov=True,
                                        weight_decay=recipe.weight_decay)
            done = 0
            while done < steps:
                for x, y in loader:
                    loss = F.cross_entropy(model(normalize(x)), y)
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
                    done += 1
                    if done == steps:
                        break

    n = steps * recipe.batch_size
    return _rate(n, _time(ours)), _rate(n, _time(reference))


def run_throughput_benchmark(dataset: str, policy: str, n_images: int, steps: int, threads: int) -> None:
    if threads:
        torch.set_num_threads(threads)
    ds = load_dataset(DatasetSpec(dataset))
    val = ds.train.subset(torch.arange(min(200, len(ds.train))))
    print(f"bench-augment: {dataset} {tuple(ds.image_shape)}, policy {policy}, batch {BATCH}, "
          f"{torch.get_num_threads()} torch thread(s), cpu")
    aug_ours, aug_ref = measure_augmentation(ds.train, policy, ds.hflip, n_images)
    train_ours, train_ref = measure_training(ds.train, val, policy, ds.hflip, steps)
    print(f"{'measure':<36}{'augbench img/s':>16}{'reference img/s':>17}{'ratio':>8}")
    print(f"{'augmentation alone':<36}{aug_ours:>16,.0f}{aug_ref:>17,.0f}{aug_ours / aug_ref:>7.1f}x")
    print(f"{'cnn training with augmentation':<36}{train_ours:>16,.0f}{train_ref:>17,.0f}{train_ours / train_ref:>7.1f}x")
