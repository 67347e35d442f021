"""``augbench bench-augment``: our batched augmentation against the usual per-sample pipeline.

The reference is written the usual way: a torch Dataset whose ``__getitem__`` applies torchvision
v2 transforms to one image, batched by a DataLoader (in this process, or in ``loader_workers``
worker processes), each batch then moved to the device. Ours augments whole batches on the device.
Both sides use the same policy, data, model and device and hand the model the same thing (a float
batch on the device); the numbers are images per second.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from bench.core.errors import UserError
from bench.core.files import atomic_write, check_writable
from bench.core.images import ImageSet
from bench.core.seeding import seeded
from bench.core.strategy import TrainingData
from bench.data.sets import DatasetEntry, load_dataset
from bench.models.suite import CLASSIFIERS, OPTIMIZERS, build_classifier
from bench.run.provenance import device_name, resolve_device
from bench.run.resources import timed
from bench.training.augment import make_batch_transform, parse_policy
from bench.training.loop import normalize, to_input, train

BATCH = 128
MAGNITUDE = 0.5


def _basic_reference(size: int, hflip: bool) -> list:
    from torchvision.transforms import v2

    steps = [
        v2.RandomAffine(
            degrees=30 * MAGNITUDE,
            translate=(0.1 * MAGNITUDE, 0.1 * MAGNITUDE),
            scale=(1 - 0.2 * MAGNITUDE, 1 + 0.2 * MAGNITUDE),
        ),
        v2.RandomCrop(size, padding=max(1, round(size / 8))),
    ]
    return steps + ([v2.RandomHorizontalFlip()] if hflip else [])


def _trivialaugment_reference(size: int, hflip: bool) -> list:
    from torchvision.transforms import v2

    return [v2.TrivialAugmentWide()]


# per policy the benchmark compares: its torchvision v2 per-image steps (image size, flips allowed)
REFERENCES = {"basic": _basic_reference, "trivialaugment": _trivialaugment_reference}


def reference_transform(policy: str, size: int, hflip: bool):
    """The torchvision v2 per-image equivalent of our policy at magnitude 0.5."""
    from torchvision.transforms import v2

    if policy not in REFERENCES:
        raise UserError(f"--policy: the benchmark compares {' or '.join(REFERENCES)}, not {policy!r}")
    return v2.Compose(REFERENCES[policy](size, hflip) + [v2.ToDtype(torch.float32, scale=True)])


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


def _reference_loader(
    images: ImageSet, policy: str, hflip: bool, batch_size: int, loader_workers: int, drop_last: bool = False
) -> DataLoader:
    return DataLoader(
        PerSampleDataset(images, reference_transform(policy, images.images.shape[-1], hflip)),
        batch_size=batch_size,
        shuffle=True,
        drop_last=drop_last,
        num_workers=loader_workers,
        persistent_workers=loader_workers > 0,
        generator=torch.Generator().manual_seed(0),
    )


def _reference_batches(loader: DataLoader, device: torch.device, count: int):
    """``count`` batches of the reference loader, moved to the device (epochs repeat as needed)."""
    done = 0
    while done < count:
        for x, y in loader:
            yield x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            done += 1
            if done == count:
                return


def measure_augmentation(
    images: ImageSet,
    num_classes: int,
    policy: str,
    hflip: bool,
    n_images: int,
    device: torch.device,
    loader_workers: int,
) -> tuple[float, float]:
    """Images/s of augmentation alone, ending with float batches on the device: (ours, reference)."""
    transform = make_batch_transform(parse_policy(policy), MAGNITUDE, hflip)
    generator = torch.Generator(device=device).manual_seed(0)
    on_device, labels = images.images.to(device), F.one_hot(images.labels, num_classes).float().to(device)
    batches = -(-n_images // BATCH)

    def ours():
        for k in range(batches):
            index = torch.arange(k * BATCH, (k + 1) * BATCH, device=device) % len(images)
            transform(to_input(on_device[index]), labels[index], generator)

    loader = _reference_loader(images, policy, hflip, BATCH, loader_workers)

    def reference():
        for _ in _reference_batches(loader, device, batches):
            pass

    ours()  # warm-up (kernels, allocator); the reference's workers start in a warm-up pass too
    for _ in _reference_batches(loader, device, 2):
        pass
    n = batches * BATCH
    return _rate(n, timed(ours, device)), _rate(n, timed(reference, device))


def measure_training(
    images: ImageSet,
    val: ImageSet,
    num_classes: int,
    policy: str,
    hflip: bool,
    steps: int,
    device: torch.device,
    loader_workers: int,
) -> tuple[float, float]:
    """Images/s of cnn training with augmentation: (our loop, the usual DataLoader loop)."""
    recipe = CLASSIFIERS.get("cnn").recipe
    shape = tuple(images.images.shape[1:])
    data = TrainingData(
        real=images, batch_transform=make_batch_transform(parse_policy(policy), MAGNITUDE, hflip)
    )

    def ours():
        with seeded(0, device):
            train(
                build_classifier("cnn", shape, num_classes),
                recipe,
                data,
                val,
                steps=steps,
                num_classes=num_classes,
                device=device,
                order_seed=0,
                augment_seed=0,
                eval_points=1,
            )

    loader = _reference_loader(images, policy, hflip, recipe.batch_size, loader_workers, drop_last=True)

    def reference():
        with seeded(0, device):
            model = build_classifier("cnn", shape, num_classes).to(device)
            groups = [{"params": list(model.parameters()), "weight_decay": recipe.weight_decay}]
            optimizer = OPTIMIZERS[recipe.optimizer](groups, recipe.lr)
            for x, y in _reference_batches(loader, device, steps):
                loss = F.cross_entropy(model(normalize(x)), y)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()

    ours()  # warm-up: kernels, allocator, the reference's workers
    for _ in _reference_batches(loader, device, 2):
        pass
    n = steps * recipe.batch_size
    return _rate(n, timed(ours, device)), _rate(n, timed(reference, device))


def run_throughput_benchmark(
    dataset: str,
    policy: str,
    n_images: int,
    steps: int,
    threads: int,
    device: str = "cpu",
    loader_workers: int = 0,
    json_path: Path | None = None,
) -> dict:
    """Measure both pipelines, print a table, and write the figures to ``json_path`` if given."""
    if json_path is not None:
        check_writable(json_path, "--json")
    if threads:
        torch.set_num_threads(threads)
    where = resolve_device(device, "--device")
    ds = load_dataset(DatasetEntry(dataset))
    val = ds.train.subset(torch.arange(min(200, len(ds.train))))
    print(
        f"bench-augment: {dataset} {tuple(ds.image_shape)}, policy {policy}, batch {BATCH}, "
        f"{torch.get_num_threads()} torch thread(s), {device_name(where)}, reference DataLoader with "
        f"{loader_workers} worker(s)"
    )
    aug_ours, aug_ref = measure_augmentation(
        ds.train, ds.num_classes, policy, ds.hflip, n_images, where, loader_workers
    )
    train_ours, train_ref = measure_training(
        ds.train, val, ds.num_classes, policy, ds.hflip, steps, where, loader_workers
    )
    print(f"{'measure':<36}{'augbench img/s':>16}{'reference img/s':>17}{'ratio':>8}")
    print(f"{'augmentation alone':<36}{aug_ours:>16,.0f}{aug_ref:>17,.0f}{aug_ours / aug_ref:>7.1f}x")
    train_ratio = train_ours / train_ref
    print(
        f"{'cnn training with augmentation':<36}{train_ours:>16,.0f}{train_ref:>17,.0f}{train_ratio:>7.1f}x"
    )
    figures = {
        "dataset": dataset,
        "policy": policy,
        "device": device_name(where),
        "threads": torch.get_num_threads(),
        "loader_workers": loader_workers,
        "images": n_images,
        "steps": steps,
        "augmentation": {"ours": aug_ours, "reference": aug_ref, "ratio": aug_ours / aug_ref},
        "training": {"ours": train_ours, "reference": train_ref, "ratio": train_ours / train_ref},
    }
    if json_path is not None:
        atomic_write(json_path, json.dumps(figures, indent=2))
    return figures
