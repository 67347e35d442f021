"""The one training loop, shared by every classifier and strategy.

Data lives on the device as uint8 tensors; batches are index slices of a per-epoch ``randperm``
(no DataLoader); the strategy's batch transform runs on the device; AMP (bf16) on CUDA.
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
from bench.models import Recipe
from bench.core.strategy import TrainingData

# called after each evaluation with (point index, validation accuracy); may raise to stop early
EvalHook = Callable[[int, float], None]


@dataclass
class TrainResult:
    curve: list[dict]  # one entry per evaluation point: step, epoch, train_loss, val_accuracy
    steps: int


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


def _training_tensors(data: TrainingData, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    parts = [data.real] + ([data.synthetic] if data.synthetic is not None and len(data.synthetic) else [])
    images = torch.cat([p.images for p in parts]).to(device)
    labels = torch.cat([p.labels for p in parts]).to(device)
    return images, labels


def train(model: nn.Module, recipe: Recipe, data: TrainingData, val: ImageSet, *, steps: int,
          num_classes: int, device: torch.device, generator: torch.Generator, eval_points: int = 10,
          on_eval: EvalHook | None = None) -> TrainResult:
    """Train ``model`` for ``steps`` optimizer steps; evaluate on ``val`` at ``eval_points`` points.

    Raises CellFailed when the loss stops being finite (checked at each evaluation point, so
    that no step waits on the device).
    """
    images, labels = _training_tensors(data, device)
    n = len(labels)
    model.to(device).train()
    optimizer = _optimizer(model, recipe)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, _warmup_cosine(steps))
    eval_at = {max(1, round(steps * (k + 1) / eval_points)) for k in range(eval_points)}
    curve: list[dict] = []
    order, cursor, running_loss, seen_in_window = torch.empty(0, dtype=torch.long, device=device), n, 0.0, 0

    for step in range(1, steps + 1):
        if cursor + recipe.batch_size > n:  # new epoch over the training tensors
            order, cursor = torch.randperm(n, generator=generator, device=device), 0
        index = order[cursor:cursor + recipe.batch_size]
        cursor += len(index)
        x = to_input(images[index])
        y = F.one_hot(labels[index], num_classes).float()
        if data.batch_transform is not None:
            x, y = data.batch_transform(x, y, generator)
        if recipe.label_smoothing:
            y = y * (1 - recipe.label_smoothing) + recipe.label_smoothing / num_classes
        with _autocast(device):
            logits = model(normalize(x))
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
            curve.append({"step": step, "epoch": step * recipe.batch_size / n,
                          "train_loss": window_loss, "val_accuracy": val_accuracy})
            running_loss, seen_in_window = 0.0, 0
            if on_eval is not None:
                on_eval(len(curve) - 1, val_accuracy)
    return TrainResult(curve=curve, steps=steps)
