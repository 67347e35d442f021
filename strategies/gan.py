"""`gan`: a class-conditional GAN for limited data.

Projection discriminator with spectral norm, hinge loss, an EMA of the generator weights used for
sampling, and differentiable augmentation (colour, translation, cutout) of real and fake images
before the discriminator. Against the collapse inside each class that a conditional GAN shows on
little data, two terms join the generator's loss: mode seeking (Mao et al. 2019: two noise vectors
of one class must give images as far apart as the vectors are) and the cross-entropy of a class
head on the discriminator's features, trained on real images only (keeps the diverse images of
their class). Sized to the image (8x8, 28x28 gray, 32x32 RGB: the generator starts at
a quarter of the image size and doubles twice).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import spectral_norm
from torch.nn.utils.spectral_norm import SpectralNorm

from bench.core.progress import counted
from bench.core.strategy import Param, register_strategy
from bench.training.augment import affine_matrices, blend, gray, placed_boxes, warp
from bench.training.stacked import Members, stack_draws
from strategies.generative import BALANCE, POOL_PARAMS, RATIO, GenerativeStrategy

Z_DIM = 64
BATCH = 64


class Generator(nn.Module):
    def __init__(self, shape: tuple[int, int, int], num_classes: int, width: int = 128):
        super().__init__()
        channels, height, _ = shape
        self.start = height // 4
        self.width = width
        self.embed = nn.Embedding(num_classes, Z_DIM)
        self.project = nn.Sequential(
            nn.Linear(2 * Z_DIM, width * self.start**2),
            nn.BatchNorm1d(width * self.start**2),
            nn.ReLU(inplace=True),
        )
        self.body = nn.Sequential(
            nn.Upsample(scale_factor=2),
            nn.Conv2d(width, width // 2, 3, padding=1),
            nn.BatchNorm2d(width // 2),
            nn.ReLU(inplace=True),
            nn.Upsample(scale_factor=2),
            nn.Conv2d(width // 2, width // 4, 3, padding=1),
            nn.BatchNorm2d(width // 4),
            nn.ReLU(inplace=True),
            nn.Conv2d(width // 4, channels, 3, padding=1),
            nn.Tanh(),
        )

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = self.project(torch.cat([z, self.embed(y)], 1)).view(-1, self.width, self.start, self.start)
        return self.body(h)


class Discriminator(nn.Module):
    """Spectral-norm convs to a pooled feature h; score = linear(h) + <embed(y), h> (projection),
    and a class head on h."""

    def __init__(self, shape: tuple[int, int, int], num_classes: int, width: int = 128):
        super().__init__()
        channels = shape[0]
        act = nn.LeakyReLU(0.2, inplace=True)
        self.body = nn.Sequential(
            spectral_norm(nn.Conv2d(channels, width // 4, 3, padding=1)),
            act,
            spectral_norm(nn.Conv2d(width // 4, width // 2, 4, stride=2, padding=1)),
            act,
            spectral_norm(nn.Conv2d(width // 2, width // 2, 3, padding=1)),
            act,
            spectral_norm(nn.Conv2d(width // 2, width, 4, stride=2, padding=1)),
            act,
        )
        self.linear = spectral_norm(nn.Linear(width, 1))
        self.embed = spectral_norm(nn.Embedding(num_classes, width))
        self.classify = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(the real/fake score, the class head's logits)"""
        h = self.body(x).sum(dim=(2, 3))
        return self.linear(h).squeeze(1) + (self.embed(y) * h).sum(1), self.classify(h)

    def unconditional(self, x: torch.Tensor) -> torch.Tensor:
        """The real/fake score without a label: the projection's unconditional term alone."""
        return self.linear(self.body(x).sum(dim=(2, 3))).squeeze(1)


class ConditionalGAN(nn.Module):
    """Generator, discriminator and the generator's EMA in one module (one state dict to cache).
    Width 64 for gray images (8x8, 28x28), 128 for colour ones."""

    def __init__(self, shape, num_classes):
        super().__init__()
        width = 64 if shape[0] == 1 else 128
        self.generator = Generator(shape, num_classes, width)
        self.discriminator = Discriminator(shape, num_classes, width)
        self.ema = copy.deepcopy(self.generator)
        self.ema.requires_grad_(False)


def augment_draws(n: int, h: int, w: int, rng: torch.Generator, dev) -> tuple[torch.Tensor, ...]:
    """The random numbers of one DiffAugment of n images of h x w, in the order it draws them:
    brightness, saturation, contrast, translation x and y (fractions of the size), cutout top and
    left (shares of the room left)."""

    def u() -> torch.Tensor:
        return torch.rand(n, generator=rng, device=dev)

    def shift(size: int) -> torch.Tensor:
        return torch.randint(-(size // 8), size // 8 + 1, (n,), generator=rng, device=dev) / size

    return u(), u(), u(), shift(w), shift(h), u(), u()


def apply_augment(x: torch.Tensor, draws: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """DiffAugment (colour, translation by up to 1/8, cutout of 1/4 of the area), per sample and
    differentiable, on images in [-1, 1] with the random numbers of ``augment_draws``."""
    brightness, saturation, contrast, translate_x, translate_y, top, left = draws
    n, _, h, w = x.shape
    dev = x.device
    x01 = (x + 1) / 2
    x01 = x01 + (brightness - 0.5).view(-1, 1, 1, 1) * 0.5
    x01 = blend(x01, gray(x01).expand_as(x01), saturation * 2)
    x01 = blend(x01, x01.mean(dim=(1, 2, 3), keepdim=True).expand_as(x01), contrast + 0.5)
    x01 = warp(x01, affine_matrices(n, dev, translate_x=translate_x, translate_y=translate_y))
    holes = placed_boxes(h, w, torch.full((n,), 0.25, device=dev), torch.ones(n, device=dev), top, left)
    return x01.masked_fill(holes, 0.0) * 2 - 1


def _augmented(x: torch.Tensor, draws: tuple[torch.Tensor, ...] | None) -> torch.Tensor:
    """The members' batches (K x N x C x H x W) augmented by their draws (each K x N) in one pass
    over all K x N images (augmentation acts on each image alone); as they are without draws."""
    if draws is None:
        return x
    return apply_augment(x.flatten(0, 1), tuple(d.flatten(0, 1) for d in draws)).view_as(x)


class _StackableSpectralNorm(SpectralNorm):
    """torch's spectral norm with its power iteration written without ``out=`` (which vmap cannot
    batch): the same arithmetic, for stacked fits (bench/training/stacked.py)."""

    def compute_weight(self, module: nn.Module, do_power_iteration: bool) -> torch.Tensor:
        weight = getattr(module, self.name + "_orig")
        u, v = getattr(module, self.name + "_u"), getattr(module, self.name + "_v")
        weight_mat = self.reshape_weight_to_matrix(weight)
        if do_power_iteration:
            with torch.no_grad():
                for _ in range(self.n_power_iterations):
                    v.copy_(F.normalize(torch.mv(weight_mat.t(), u), dim=0, eps=self.eps))
                    u.copy_(F.normalize(torch.mv(weight_mat, v), dim=0, eps=self.eps))
                u, v = u.clone(), v.clone()  # as torch's: a later forward must not change this one's
        return weight / torch.dot(u, torch.mv(weight_mat, v))


def stackable(model: nn.Module) -> None:
    """Make ``model``'s spectral norms ones that vmap can batch."""
    for module in model.modules():
        for hook_id, hook in list(module._forward_pre_hooks.items()):
            if isinstance(hook, SpectralNorm):
                module._forward_pre_hooks[hook_id] = _StackableSpectralNorm(
                    hook.name, hook.n_power_iterations, hook.dim, hook.eps
                )


def _generate(model: ConditionalGAN, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return model.generator(z, y)


def _discriminator_loss(
    model: ConditionalGAN, real, y_real, fake, y_fake, unlabelled, fake_unconditional, class_weight: float
) -> torch.Tensor:
    """The discriminator's hinge loss on (augmented) real and fake images and its class head's
    cross-entropy on the real ones; with a pool, the unconditional term's hinge loss on the pool
    images against the fakes."""
    real_score, real_logits = model.discriminator(real, y_real)
    fake_score, _ = model.discriminator(fake, y_fake)
    loss = (
        F.relu(1 - real_score).mean()
        + F.relu(1 + fake_score).mean()
        + class_weight * F.cross_entropy(real_logits, y_real)
    )
    if unlabelled is not None:
        loss = loss + (
            F.relu(1 - model.discriminator.unconditional(unlabelled)).mean()
            + F.relu(1 + model.discriminator.unconditional(fake_unconditional)).mean()
        )
    return loss


def _generator_loss(
    model: ConditionalGAN,
    augmented_fake,
    y_fake,
    fake,
    z,
    fake_unconditional,
    class_weight: float,
    mode_seeking: float,
) -> torch.Tensor:
    """The generator's loss: the discriminator's score and class head on its (augmented) images,
    the mode-seeking term, and with a pool the unconditional score."""
    score, logits = model.discriminator(augmented_fake, y_fake)
    loss = (
        -score.mean()
        + class_weight * F.cross_entropy(logits, y_fake)
        + mode_seeking / (mode_distance(fake, z) + 1e-5)
    )
    if fake_unconditional is not None:
        loss = loss - model.discriminator.unconditional(fake_unconditional).mean()
    return loss


def mode_distance(images: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Mean over the pairs (i, i + n/2) of |image_i - image_j| / |z_i - z_j| (mean absolute values)."""
    first, second = images.flatten(1).chunk(2)
    z_first, z_second = z.chunk(2)
    return ((first - second).abs().mean(1) / (z_first - z_second).abs().mean(1)).mean()


@register_strategy("gan")
class GAN(GenerativeStrategy):
    """Class-conditional GAN (projection D, spectral norm, hinge loss, EMA, DiffAugment, mode seeking,
    a class head)."""

    family = "gan"
    quick = {"steps": 20}
    generator_version = "3"  # 3: mode seeking and the class head (2: projection and hinge loss alone)
    params = {
        "ratio": RATIO,
        "balance": BALANCE,
        **POOL_PARAMS,
        "steps": Param(3000, low=1, high=1_000_000, help="generator training steps"),
        "lr": Param(2e-4, low=1e-6, high=10.0, log=True, help="Adam learning rate of G and D"),
        "ema": Param(
            0.999, low=0.0, high=0.9999, help="EMA decay of the generator weights used for sampling"
        ),
        "diffaugment": Param("on", choices=("on", "off"), help="differentiable augmentation of D's inputs"),
        "mode_seeking": Param(
            0.05,
            low=0.0,
            high=10.0,
            help="weight of the mode-seeking term (against collapse inside a class; 0: off)",
        ),
        "class_loss": Param(
            1.0,
            low=0.0,
            high=10.0,
            help="weight of the class head's cross-entropy (trained on real images; the "
            "generator's images must be classified as their label; 0: off)",
        ),
    }

    def build(self, shape, num_classes):
        return ConditionalGAN(shape, num_classes)

    fits_stacked = True

    def train_generators(self, models, labelled_sets, ctxs, steps, rngs):
        """Hinge loss on the labelled images through the projection discriminator; with
        ``generator_data: pool`` also on the unlabelled images through its unconditional term alone
        (real pool images against the same fakes), which the generator is trained against too.
        Each member draws its batches, noise and augmentations from its own generator, in the
        order a fit alone draws them."""
        dev, num_classes = ctxs[0].device, ctxs[0].num_classes
        members = Members(models, adapt=stackable)
        pools = [self.unlabelled_for_training(ctx) for ctx in ctxs]
        reals = [labelled.images.to(dev).float().div(127.5).sub(1.0) for labelled in labelled_sets]
        labels = [labelled.labels.to(dev) for labelled in labelled_sets]
        g_opt = torch.optim.Adam(members.parameters("generator."), lr=self.values["lr"], betas=(0.0, 0.9))
        d_opt = torch.optim.Adam(members.parameters("discriminator."), lr=self.values["lr"], betas=(0.0, 0.9))
        augmenting = self.values["diffaugment"] == "on"
        weights = (self.values["class_loss"], self.values["mode_seeking"])
        decay = min(self.values["ema"], 1.0 - 10.0 / steps) if steps > 10 else 0.0
        for step in counted(steps, f"{self.family} fit"):
            (
                real,
                y_real,
                z,
                y_fake,
                unlabelled,
                on_real,
                on_fake,
                on_unlabelled,
                on_fake_unconditional,
                on_fake_g,
                on_fake_g_unconditional,
            ) = stack_draws(
                [
                    self._draws(x, y, pool, rng, num_classes, augmenting)
                    for x, y, pool, rng in zip(reals, labels, pools, rngs)
                ]
            )
            # image i and image i + BATCH/2 share a class: a mode-seeking pair
            fake = members.map(_generate, z, y_fake)
            detached = fake.detach()
            d_loss = members.map(
                _discriminator_loss,
                _augmented(real, on_real),
                y_real,
                _augmented(detached, on_fake),
                y_fake,
                None if unlabelled is None else _augmented(unlabelled, on_unlabelled),
                None if unlabelled is None else _augmented(detached, on_fake_unconditional),
                shared=weights[:1],
            )
            d_opt.zero_grad(set_to_none=True)
            d_loss.sum().backward()
            d_opt.step()

            g_loss = members.map(
                _generator_loss,
                _augmented(fake, on_fake_g),
                y_fake,
                fake,
                z,
                None if unlabelled is None else _augmented(fake, on_fake_g_unconditional),
                shared=weights,
            )
            g_opt.zero_grad(set_to_none=True)
            g_loss.sum().backward()
            g_opt.step()

            with torch.no_grad():
                for ema_p, p in zip(members.parameters("ema."), members.parameters("generator.")):
                    ema_p.lerp_(p, 1.0 - decay)
                for ema_b, b in zip(members.buffers("ema."), members.buffers("generator.")):
                    ema_b.copy_(b)
            if (step % 50 == 0 or step == steps) and members.diverged(
                step, discriminator=d_loss, generator=g_loss
            ):
                break
            self.signal.at(step)
        return members.finish()

    @staticmethod
    def _draws(real_images, real_labels, pool, rng, num_classes: int, augmenting: bool) -> tuple:
        """One member's random numbers of a step, in the order a fit alone draws them: its real
        batch, noise, fake labels, and the augmentations of each discriminator input (None
        without DiffAugment or without a pool)."""
        dev = real_images.device
        _, _, h, w = real_images.shape
        augment = (lambda: augment_draws(BATCH, h, w, rng, dev)) if augmenting else (lambda: None)
        index = torch.randint(0, len(real_labels), (BATCH,), generator=rng, device=dev)
        z = torch.randn(BATCH, Z_DIM, generator=rng, device=dev)
        y_fake = torch.randint(0, num_classes, (BATCH // 2,), generator=rng, device=dev).repeat(2)
        on_real, on_fake = augment(), augment()
        unlabelled = on_unlabelled = on_fake_unconditional = on_fake_g_unconditional = None
        if pool is not None:
            unlabelled = pool[torch.randint(0, len(pool), (BATCH,), generator=rng, device=dev)]
            unlabelled = unlabelled.to(real_images.dtype).div(127.5).sub(1.0)
            on_unlabelled, on_fake_unconditional = augment(), augment()
        on_fake_g = augment()
        if pool is not None:
            on_fake_g_unconditional = augment()
        return (
            real_images[index],
            real_labels[index],
            z,
            y_fake,
            unlabelled,
            on_real,
            on_fake,
            on_unlabelled,
            on_fake_unconditional,
            on_fake_g,
            on_fake_g_unconditional,
        )

    @torch.no_grad()
    def sample(self, model, labels, labelled, ctx, rng):
        out = []
        for chunk in labels.split(512):
            z = torch.randn(len(chunk), Z_DIM, generator=rng, device=ctx.device)
            images = model.ema(z, chunk.to(ctx.device))
            out.append(((images + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).cpu())
        return torch.cat(out) if out else torch.empty(0, *labelled.images.shape[1:], dtype=torch.uint8)
