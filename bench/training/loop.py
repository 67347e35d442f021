"""The one training loop, shared by every classifier and strategy.

Data lives on the device as uint8 tensors; batches are index slices of ``randperm`` streams (no
DataLoader); the strategy's batch transform runs on the device; AMP (bf16) on CUDA. Real batches
depend only on the order seed, so strategies compare on common random numbers.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from bench.core.images import ImageSet
from bench.core.errors import CellFailed
from bench.core.seeding import seeded
from bench.models.suite import CLASSIFIERS, Recipe, build_classifier
from bench.core.strategy import TrainingData

# called after each evaluation with (point index, validation accuracy); may raise to stop early
EvalHook = Callable[[int, float], None]


@dataclass
class TrainResult:
    curve: list[dict]  # one entry per evaluation point: step, epoch (real passes), train_loss, val_accuracy
    steps: int
    real_per_step: int
    synthetic_per_step: int


def to_input(images_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 images -> float in [0, 1], the space batch transforms work in."""
    return images_uint8.float().div_(255.0)


def normalize(x: torch.Tensor) -> torch.Tensor:
    """The classifier's input normalization, applied after augmentation."""
    return (x - 0.5) / 0.5


def _optimizer(model: nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": recipe.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=recipe.lr, momentum=0.9, nesterov=True)
    return torch.optim.AdamW(groups, lr=recipe.lr)


def _warmup_cosine(steps: int) -> Callable[[int], float]:
    warmup = max(1, steps // 20)
    return lambda step: (step + 1) / warmup if step < warmup else \
        0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))


def _autocast(device: torch.device):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, device: torch.device, batch_size: int = 1024) -> torch.Tensor:
    """Logits (float32, on the CPU) for uint8 images, in eval mode."""
    was_training = model.training
    model.eval()
    outputs = []
    for start in range(0, len(images), batch_size):
        chunk = images[start:start + batch_size].to(device, non_blocking=True)
        with _autocast(device):
            outputs.append(model(normalize(to_input(chunk))).float().cpu())
    model.train(was_training)
    return torch.cat(outputs)


class IndexStream:
    """Endless batches of indices into ``n`` items: successive random permutations cut into
    batches that run across epoch boundaries, so every batch has the same size even when ``n`` is
    smaller than the batch. ``on_epoch`` is called as each new permutation starts."""

    def __init__(self, n: int, generator: torch.Generator, device: torch.device,
                 on_epoch: Callable[[], None] | None = None):
        self.n, self.generator, self.device, self.on_epoch = n, generator, device, on_epoch
        self.order, self.cursor = torch.empty(0, dtype=torch.long, device=device), n

    def take(self, k: int) -> torch.Tensor:
        parts = []
        while k > 0:
            if self.cursor >= self.n:
                if self.on_epoch is not None and len(self.order):
                    self.on_epoch()
                self.order, self.cursor = torch.randperm(self.n, generator=self.generator, device=self.device), 0
            chunk = self.order[self.cursor:self.cursor + k]
            self.cursor += len(chunk)
            k -= len(chunk)
            parts.append(chunk)
        return parts[0] if len(parts) == 1 else torch.cat(parts)


def batch_split(batch_size: int, n_real: int, n_synthetic: int, mixing: str) -> tuple[int, int]:
    """(real, synthetic) images per step. ``add``: the full real batch that `none` uses plus
    round(r * B) synthetic images, r = n_synthetic / n_real; ``replace``: a fixed batch B of which
    round(B * r / (1 + r)) are synthetic."""
    if not n_synthetic:
        return batch_size, 0
    ratio = n_synthetic / n_real
    if mixing == "add":
        return batch_size, max(1, round(ratio * batch_size))
    synthetic = min(batch_size - 1, max(1, round(batch_size * ratio / (1 + ratio))))
    return batch_size - synthetic, synthetic


def train(model: nn.Module, recipe: Recipe, data: TrainingData, val: ImageSet, *, steps: int,
          num_classes: int, device: torch.device, order_seed: int, augment_seed: int, mixing: str = "add",
          fresh_synthetic: bool = False, eval_points: int = 10, on_eval: EvalHook | None = None) -> TrainResult:
    """Train ``model`` for ``steps`` optimizer steps; evaluate on ``val`` at ``eval_points`` points.

    Real batches come from a stream seeded by ``order_seed`` alone, so every strategy of a cell
    sees the same real images in the same order (common random numbers); synthetic batches and
    the batch transform draw from ``augment_seed``. ``mixing`` is ``add`` or ``replace`` (see
    ``batch_split``); with ``fresh_synthetic`` the synthetic pool is sampled anew from the
    strategy's generator every synthetic epoch. Raises CellFailed when the loss stops being finite
    (checked at each evaluation point, so that no step waits on the device).
    """
    real_images, real_labels = data.real.images.to(device), data.real.labels.to(device)
    pool = {"images": None, "labels": None}
    augment_generator = torch.Generator(device=device).manual_seed(augment_seed)
    n_synthetic = 0 if data.synthetic is None else len(data.synthetic)

    def load_synthetic(images: ImageSet) -> None:
        pool["images"], pool["labels"] = images.images.to(device), images.labels.to(device)

    def refresh_synthetic() -> None:
        load_synthetic(data.sampler(n_synthetic, augment_generator))

    if n_synthetic:
        load_synthetic(data.synthetic)
    real_per_step, synthetic_per_step = batch_split(recipe.batch_size, len(real_labels), n_synthetic, mixing)
    real_stream = IndexStream(len(real_labels), torch.Generator(device=device).manual_seed(order_seed), device)
    synthetic_stream = IndexStream(n_synthetic, augment_generator, device,
                                   refresh_synthetic if fresh_synthetic and data.sampler is not None else None)
    model.to(device, memory_format=torch.channels_last).train()  # faster convs on CPU and GPU alike
    optimizer = _optimizer(model, recipe)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, _warmup_cosine(steps))
    eval_at = {max(1, round(steps * (k + 1) / eval_points)) for k in range(eval_points)}
    curve: list[dict] = []
    running_loss, seen_in_window = 0.0, 0

    for step in range(1, steps + 1):
        index = real_stream.take(real_per_step)
        images, labels = real_images[index], real_labels[index]
        if synthetic_per_step:
            extra = synthetic_stream.take(synthetic_per_step)
            images = torch.cat([images, pool["images"][extra]])
            labels = torch.cat([labels, pool["labels"][extra]])
        x = to_input(images)
        y = F.one_hot(labels, num_classes).float()
        if data.batch_transform is not None:
            x, y = data.batch_transform(x, y, augment_generator)
        if recipe.label_smoothing:
            y = y * (1 - recipe.label_smoothing) + recipe.label_smoothing / num_classes
        with _autocast(device):
            logits = model(normalize(x).contiguous(memory_format=torch.channels_last))
        loss = -(y * F.log_softmax(logits.float(), dim=1)).sum(1).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        running_loss = running_loss + loss.detach()  # no host sync per step
        seen_in_window += 1

        if step in eval_at:
            window_loss = (running_loss / seen_in_window).item()
            if not math.isfinite(window_loss):
                raise CellFailed(f"training diverged: loss is {window_loss} before step {step}")
            val_accuracy = (predict(model, val.images, device).argmax(1) == val.labels).float().mean().item()
            curve.append({"step": step, "epoch": step * real_per_step / len(real_labels),
                          "train_loss": window_loss, "val_accuracy": val_accuracy})
            running_loss, seen_in_window = 0.0, 0
            if on_eval is not None:
                on_eval(len(curve) - 1, val_accuracy)
    return TrainResult(curve=curve, steps=steps, real_per_step=real_per_step, synthetic_per_step=synthetic_per_step)


def train_suite_classifier(name: str, images: ImageSet, val: ImageSet, num_classes: int, budget_scale: float,
                           device: torch.device, seed: int) -> nn.Module:
    """A classifier of the suite trained by its own recipe on ``images`` alone, seeded by ``seed``
    (``val`` only feeds the learning curve): the quality evaluator, CAS and pseudo-label's teacher."""
    recipe = CLASSIFIERS.get(name).recipe
    with seeded(seed, device):
        model = build_classifier(name, tuple(images.images.shape[1:]), num_classes)
        train(model, recipe, TrainingData(real=images), val, steps=recipe.steps(len(images), budget_scale),
              num_classes=num_classes, device=device, order_seed=seed, augment_seed=seed, eval_points=1)
    return model
