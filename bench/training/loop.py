"""The one training loop, shared by every classifier and strategy.

Data lives on the device as uint8 tensors; batches are index slices of ``randperm`` streams (no
DataLoader); the strategy's batch transform runs on the device; AMP (bf16) on CUDA. Real batches
depend only on the order seed, so strategies compare on common random numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from bench.core.errors import CellFailed
from bench.core.images import ImageSet
from bench.core.seeding import derive_seed, seeded
from bench.core.strategy import TrainingData
from bench.models.suite import CLASSIFIERS, GROUPABLE, OPTIMIZERS, Recipe, build_classifier
from bench.training.cohort import Grouped, Solo, per_member, side_by_side, trained_together

# called after each evaluation with (point index, validation accuracy); may raise to stop early
EvalHook = Callable[[int, float], None]


@dataclass
class TrainResult:
    """What a classifier's training recorded: its validation curve and what each step trained on."""

    curve: list[dict]  # one entry per evaluation point: step, epoch (real passes), train_loss, val_accuracy
    steps: int
    real_per_step: int
    synthetic_per_step: int
    unlabelled_per_step: int = 0  # unlabelled images per step of its objective (0: none)
    mask_rate: float | None = None  # the share of them its objective used, over the last evaluation window


def to_input(images_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 images -> float in [0, 1], the space batch transforms work in."""
    return images_uint8.float().div_(255.0)


def normalize(x: torch.Tensor) -> torch.Tensor:
    """The classifier's input normalization, applied after augmentation."""
    return (x - 0.5) / 0.5


def _optimizer(model: nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    groups = [
        {"params": decay, "weight_decay": recipe.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return OPTIMIZERS[recipe.optimizer](groups, recipe.lr)


def _warmup_cosine(steps: int) -> Callable[[int], float]:
    warmup = max(1, steps // 20)
    return lambda step: (
        (step + 1) / warmup
        if step < warmup
        else 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))
    )


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bf16 natively: CUDA, or a CPU with AVX-512 BF16 or AMX."""
    if device.type == "cuda":
        return True
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def device_precision(device: torch.device) -> str:
    """The precision a device trains in when nothing else is asked: bf16 autocast on CUDA, fp32 on the CPU."""
    return "bf16" if device.type == "cuda" else "fp32"


def _autocast(device: torch.device, precision: str | None = None):
    """bf16 autocast where ``precision`` (default: the device's) is bf16."""
    return torch.autocast(
        device.type, dtype=torch.bfloat16, enabled=(precision or device_precision(device)) == "bf16"
    )


@torch.no_grad()
def predict(
    model: nn.Module,
    images: torch.Tensor,
    device: torch.device,
    batch_size: int = 1024,
    precision: str | None = None,
) -> torch.Tensor:
    """Logits (float32, on the CPU) for uint8 images, in eval mode (in ``precision``, default the
    device's)."""
    return predict_members(model, [images], device, precision, batch_size)[0]


class IndexStream:
    """Endless batches of indices into ``n`` items: successive random permutations cut into
    batches that run across epoch boundaries, so every batch has the same size even when ``n`` is
    smaller than the batch. ``on_epoch`` is called as each new permutation starts."""

    def __init__(
        self,
        n: int,
        generator: torch.Generator,
        device: torch.device,
        on_epoch: Callable[[], None] | None = None,
    ):
        self.n, self.generator, self.device, self.on_epoch = n, generator, device, on_epoch
        self.order, self.cursor = torch.empty(0, dtype=torch.long, device=device), n

    def take(self, k: int) -> torch.Tensor:
        parts = []
        while k > 0:
            if self.cursor >= self.n:
                if self.on_epoch is not None and len(self.order):
                    self.on_epoch()
                self.order, self.cursor = (
                    torch.randperm(self.n, generator=self.generator, device=self.device),
                    0,
                )
            chunk = self.order[self.cursor : self.cursor + k]
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


@dataclass
class Member:
    """One model of a cohort with what it trains on: its data, its seeds and its evaluation hook."""

    model: nn.Module
    data: TrainingData
    val: ImageSet  # its validation images (the members' sets are of one size)
    order_seed: int
    augment_seed: int
    on_eval: EvalHook | None = None


class _Feed:
    """One member's batches: real ones from a stream seeded by its order seed alone (common random
    numbers), synthetic ones and the batch transform from its augment seed, and where its data has
    an active objective, unlabelled ones (and their views) from a stream of their own seed, derived
    from the order seed, so that strategies with one objective draw the same unlabelled batches."""

    def __init__(
        self,
        member: Member,
        recipe: Recipe,
        num_classes: int,
        device: torch.device,
        mixing: str,
        fresh_synthetic: bool,
    ):
        data = member.data
        self.data, self.recipe, self.num_classes = data, recipe, num_classes
        self.real_images, self.real_labels = data.real.images.to(device), data.real.labels.to(device)
        self.pool = {"images": None, "labels": None}
        self.augment_generator = torch.Generator(device=device).manual_seed(member.augment_seed)
        self.n_synthetic = data.n_synthetic
        if self.n_synthetic:
            self._load_synthetic(data.synthetic)
        self.real_per_step, self.synthetic_per_step = batch_split(
            recipe.batch_size, len(self.real_labels), self.n_synthetic, mixing
        )
        self.real_stream = IndexStream(
            len(self.real_labels), torch.Generator(device=device).manual_seed(member.order_seed), device
        )
        self.synthetic_stream = IndexStream(
            self.n_synthetic,
            self.augment_generator,
            device,
            self._refresh_synthetic if fresh_synthetic and data.sampler is not None else None,
        )
        active = data.objective is not None and data.objective.active
        self.objective = data.objective if active else None
        self.unlabelled_per_step = self.objective.unlabelled_per_step(recipe.batch_size) if active else 0
        if active:
            self.unlabelled_images = data.unlabelled.images.to(device)
            seed = derive_seed("unlabelled", member.order_seed)
            self.unlabelled_generator = torch.Generator(device=device).manual_seed(seed)
            self.unlabelled_stream = IndexStream(
                len(self.unlabelled_images), self.unlabelled_generator, device
            )

    def _load_synthetic(self, images: ImageSet) -> None:
        self.pool["images"], self.pool["labels"] = (
            images.images.to(self.real_images.device),
            images.labels.to(self.real_images.device),
        )

    def _refresh_synthetic(self) -> None:
        self._load_synthetic(self.data.sampler(self.n_synthetic, self.augment_generator))

    def batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The next training batch: images in [0, 1] (transformed) and soft labels."""
        index = self.real_stream.take(self.real_per_step)
        images, labels = self.real_images[index], self.real_labels[index]
        if self.synthetic_per_step:
            extra = self.synthetic_stream.take(self.synthetic_per_step)
            images = torch.cat([images, self.pool["images"][extra]])
            labels = torch.cat([labels, self.pool["labels"][extra]])
        x = to_input(images)
        y = F.one_hot(labels, self.num_classes).float()
        if self.data.batch_transform is not None:
            x, y = self.data.batch_transform(x, y, self.augment_generator)
        if self.recipe.label_smoothing:
            y = y * (1 - self.recipe.label_smoothing) + self.recipe.label_smoothing / self.num_classes
        return x, y

    def idle_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """A batch of zeros of its shape, with no label: what a member whose own batches failed trains
        on, so that the others of its cohort compute as they would with it (its result is discarded)."""
        n = self.real_per_step + self.synthetic_per_step
        x = torch.zeros((n, *self.real_images.shape[1:]), device=self.real_images.device)
        return x, torch.zeros((n, self.num_classes), device=self.real_images.device)

    def unlabelled_loss(self, forward) -> tuple[torch.Tensor, torch.Tensor]:
        """The objective's loss on the next unlabelled batch, and the share of it the loss used."""
        index = self.unlabelled_stream.take(self.unlabelled_per_step)
        return self.objective.loss(
            forward, to_input(self.unlabelled_images[index]), self.unlabelled_generator
        )


def train(
    model: nn.Module,
    recipe: Recipe,
    data: TrainingData,
    val: ImageSet,
    *,
    steps: int,
    num_classes: int,
    device: torch.device,
    order_seed: int,
    augment_seed: int,
    mixing: str = "add",
    fresh_synthetic: bool = False,
    eval_points: int = 10,
    on_eval: EvalHook | None = None,
    precision: str | None = None,
) -> TrainResult:
    """Train ``model`` for ``steps`` optimizer steps; evaluate on ``val`` at ``eval_points`` points.

    Real batches come from a stream seeded by ``order_seed`` alone, so every strategy of a cell
    sees the same real images in the same order (common random numbers); synthetic batches and
    the batch transform draw from ``augment_seed``. ``mixing`` is ``add`` or ``replace`` (see
    ``batch_split``); with ``fresh_synthetic`` the synthetic pool is sampled anew from the
    strategy's generator every synthetic epoch. Raises CellFailed when the loss stops being finite
    (checked at each evaluation point, so that no step waits on the device).
    """
    (result,) = train_cohort(
        [Member(model, data, val, order_seed, augment_seed, on_eval)],
        recipe,
        steps=steps,
        num_classes=num_classes,
        device=device,
        mixing=mixing,
        fresh_synthetic=fresh_synthetic,
        eval_points=eval_points,
        precision=precision,
    )
    if isinstance(result, Exception):
        raise result
    return result


class _Progress:
    """What a cohort's training has recorded: each member's validation curve, and what stopped a
    member (``group.stop``: in a cohort it stops alone, and trains on idle batches from then on)."""

    def __init__(self, members: list[Member], feeds: list[_Feed], group: Solo | Grouped):
        self.members, self.feeds, self.group = members, feeds, group
        self.curves: list[list[dict]] = [[] for _ in members]
        self.stopped: dict[int, Exception] = {}

    def _stop(self, i: int, exc: Exception) -> None:
        self.group.stop(exc)
        self.stopped[i] = exc

    @property
    def all_stopped(self) -> bool:
        return len(self.stopped) == len(self.members)

    def batch(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Member ``i``'s next batch; what its batch transform or sampler raises (a bug in a strategy's
        code) stops it."""
        if i not in self.stopped:
            try:
                return self.feeds[i].batch()
            except Exception as exc:  # noqa: BLE001 - recorded as this member's error
                self._stop(i, exc)
        return self.feeds[i].idle_batch()

    def record(self, step: int, window_losses: list[float], val_accuracies: list[float]) -> None:
        """An evaluation point of each member still training: its curve grows, or it stops (its loss
        no longer finite, or its ``on_eval`` raised)."""
        for i, (member, window_loss, val_accuracy) in enumerate(
            zip(self.members, window_losses, val_accuracies)
        ):
            if i in self.stopped:
                continue
            if not math.isfinite(window_loss):
                self.stopped[i] = CellFailed(f"training diverged: loss is {window_loss} before step {step}")
                continue
            self.curves[i].append(
                {
                    "step": step,
                    "epoch": step * self.feeds[i].real_per_step / len(self.feeds[i].real_labels),
                    "train_loss": window_loss,
                    "val_accuracy": val_accuracy,
                }
            )
            if member.on_eval is not None:
                try:
                    member.on_eval(len(self.curves[i]) - 1, val_accuracy)
                except Exception as exc:  # noqa: BLE001 - it stops this member (tune's pruning)
                    self._stop(i, exc)

    def results(self, steps: int, mask_rate: float | None) -> list[TrainResult | Exception]:
        return [
            self.stopped.get(i)
            or TrainResult(
                curve=self.curves[i],
                steps=steps,
                real_per_step=feed.real_per_step,
                synthetic_per_step=feed.synthetic_per_step,
                unlabelled_per_step=feed.unlabelled_per_step,
                mask_rate=mask_rate,
            )
            for i, feed in enumerate(self.feeds)
        ]


def train_cohort(
    members: list[Member],
    recipe: Recipe,
    *,
    steps: int,
    num_classes: int,
    device: torch.device,
    mixing: str = "add",
    fresh_synthetic: bool = False,
    eval_points: int = 10,
    precision: str | None = None,
) -> list[TrainResult | Exception]:
    """The one training loop: train the members' models (one architecture, equal batch shapes) as
    ``train`` trains one, several as one grouped network (``bench.training.cohort``); each
    member's trained weights end in its own model. Returns per member its TrainResult, or what
    stopped it (CellFailed when its loss stopped being finite, or what its ``on_eval`` raised; the
    other members go on). One member runs exactly the operations of a model trained alone. ``precision``
    (fp32, bf16; default the device's, ``device_precision``) is the autocast of its passes. A member
    whose data has an active objective trains alone: its loss adds passes on unlabelled images."""
    k = len(members)
    feeds = [_Feed(m, recipe, num_classes, device, mixing, fresh_synthetic) for m in members]
    if len({(f.real_per_step, f.synthetic_per_step) for f in feeds}) != 1:
        raise ValueError("a cohort's members need equal batch shapes")
    group = trained_together(
        [m.model for m in members],
        [derive_seed("dropout", m.order_seed) for m in members],
        GROUPABLE,
        alone_only=any(f.objective is not None for f in feeds),
    )
    net = group.start(device)
    optimizer = _optimizer(net, recipe)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, _warmup_cosine(steps))
    eval_at = {max(1, round(steps * (i + 1) / eval_points)) for i in range(eval_points)}
    progress = _Progress(members, feeds, group)
    running_loss, seen_in_window = 0.0, 0
    objective = feeds[0].objective  # only a member alone has one
    used_in_window, mask_rate = 0.0, None

    def forward(x: torch.Tensor) -> torch.Tensor:
        with _autocast(device, precision):
            return net(normalize(x).contiguous(memory_format=torch.channels_last)).float()

    for step in range(1, steps + 1):
        batches = [progress.batch(i) for i in range(k)]
        logits = forward(side_by_side([x for x, _ in batches]))
        outputs = per_member(logits, k)
        losses = torch.stack(
            [-(y * F.log_softmax(out, dim=1)).sum(1).mean() for out, (_, y) in zip(outputs, batches)]
        )
        loss = losses.sum()  # a sum: each member gets its own gradient
        if objective is not None:  # train_loss stays the supervised loss, comparable with `none`'s
            unlabelled, used = feeds[0].unlabelled_loss(forward)
            loss = loss + unlabelled
            used_in_window = used_in_window + used.detach()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        running_loss = running_loss + losses.detach()  # no sync
        seen_in_window += 1

        if step in eval_at:
            if objective is not None:
                mask_rate = float(used_in_window / seen_in_window)
            val_logits = predict_members(net, [m.val.images for m in members], device, precision)
            val_labels = torch.stack([m.val.labels for m in members])
            progress.record(
                step,
                (running_loss / seen_in_window).reshape(-1).tolist(),
                (val_logits.argmax(2) == val_labels).float().mean(1).tolist(),
            )
            running_loss, seen_in_window, used_in_window = 0.0, 0, 0.0
            if progress.all_stopped:  # nothing left to train
                break
    group.finish([m.model for m in members], device)
    return progress.results(steps, mask_rate)


@torch.no_grad()
def predict_members(
    net: nn.Module,
    images: list[torch.Tensor],
    device: torch.device,
    precision: str | None = None,
    batch_size: int = 1024,
) -> torch.Tensor:
    """Logits (K x N x classes, float32 on the CPU, in eval mode) of each of a cohort's K members
    for its own images (K sets of N uint8 images; K = 1: a model alone)."""
    k = len(images)
    was_training = net.training
    net.eval()
    outputs = []
    for start in range(0, len(images[0]), batch_size):
        chunks = [
            normalize(to_input(part[start : start + batch_size].to(device, non_blocking=True)))
            for part in images
        ]
        with _autocast(device, precision):
            logits = per_member(net(side_by_side(chunks)), k)
        outputs.append(logits.float().cpu())
    net.train(was_training)
    return torch.cat(outputs, dim=1)


def train_suite_classifier(
    name: str,
    images: ImageSet,
    val: ImageSet,
    num_classes: int,
    budget_scale: float,
    device: torch.device,
    seed: int,
    steps: int | None = None,
) -> nn.Module:
    """A classifier of the suite trained by its own recipe on ``images`` alone (for ``steps``, else the
    recipe's times ``budget_scale``), seeded by ``seed`` (``val`` only feeds the learning curve): the
    quality evaluator, CAS and pseudo-label's teacher."""
    recipe = CLASSIFIERS.get(name).recipe
    with seeded(seed, device):
        model = build_classifier(name, tuple(images.images.shape[1:]), num_classes)
        train(
            model,
            recipe,
            TrainingData(real=images),
            val,
            steps=steps or recipe.steps(len(images), budget_scale),
            num_classes=num_classes,
            device=device,
            order_seed=seed,
            augment_seed=seed,
            eval_points=1,
        )
    return model
