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

from bench.training.augment import AugContext, blend, boxes, gray, affine_matrices, warp
from strategies.generative import BALANCE, POOL_PARAMS, RATIO, GenerativeStrategy, check_finite
from bench.core.progress import counted
from bench.core.strategy import Param, register_strategy

Z_DIM = 64
BATCH = 64


class Generator(nn.Module):
    def __init__(self, shape: tuple[int, int, int], num_classes: int, width: int = 128):
        super().__init__()
        channels, height, _ = shape
        self.start = height // 4
        self.width = width
        self.embed = nn.Embedding(num_classes, Z_DIM)
        self.project = nn.Sequential(nn.Linear(2 * Z_DIM, width * self.start ** 2), nn.BatchNorm1d(width * self.start ** 2),
                                     nn.ReLU(inplace=True))
        self.body = nn.Sequential(
            nn.Upsample(scale_factor=2), nn.Conv2d(width, width // 2, 3, padding=1), nn.BatchNorm2d(width // 2),
            nn.ReLU(inplace=True),
            nn.Upsample(scale_factor=2), nn.Conv2d(width // 2, width // 4, 3, padding=1), nn.BatchNorm2d(width // 4),
            nn.ReLU(inplace=True),
            nn.Conv2d(width // 4, channels, 3, padding=1), nn.Tanh(),
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
            spectral_norm(nn.Conv2d(channels, width // 4, 3, padding=1)), act,
            spectral_norm(nn.Conv2d(width // 4, width // 2, 4, stride=2, padding=1)), act,
            spectral_norm(nn.Conv2d(width // 2, width // 2, 3, padding=1)), act,
            spectral_norm(nn.Conv2d(width // 2, width, 4, stride=2, padding=1)), act,
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


def diff_augment(x: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
    """DiffAugment (colour, translation by up to 1/8, cutout of 1/4 of the area), per sample and
    differentiable, on images in [-1, 1]."""
    n, _, h, w = x.shape
    dev = x.device
    u = lambda: torch.rand(n, generator=rng, device=dev)  # noqa: E731
    x01 = (x + 1) / 2
    x01 = x01 + (u() - 0.5).view(-1, 1, 1, 1) * 0.5                      # brightness
    x01 = blend(x01, gray(x01).expand_as(x01), u() * 2)                 # saturation
    x01 = blend(x01, x01.mean(dim=(1, 2, 3), keepdim=True).expand_as(x01), u() + 0.5)  # contrast
    shift = lambda size: (torch.randint(-(size // 8), size // 8 + 1, (n,), generator=rng, device=dev)  # noqa: E731
                          / size)
    x01 = warp(x01, affine_matrices(n, dev, translate_x=shift(w), translate_y=shift(h)))
    holes = boxes(n, h, w, torch.full((n,), 0.25, device=dev), torch.ones(n, device=dev),
                   AugContext(1.0, False, rng), dev)
    return x01.masked_fill(holes, 0.0) * 2 - 1


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
        "ema": Param(0.999, low=0.0, high=0.9999, help="EMA decay of the generator weights used for sampling"),
        "diffaugment": Param("on", choices=("on", "off"), help="differentiable augmentation of D's inputs"),
        "mode_seeking": Param(0.05, low=0.0, high=10.0,
                              help="weight of the mode-seeking term (against collapse inside a class; 0: off)"),
        "class_loss": Param(1.0, low=0.0, high=10.0,
                            help="weight of the class head's cross-entropy (trained on real images; the "
                                 "generator's images must be classified as their label; 0: off)"),
    }

    def build(self, shape, num_classes):
        return ConditionalGAN(shape, num_classes)

    def train_generator(self, model, labelled, ctx, steps, rng):
        """Hinge loss on the labelled images through the projection discriminator; with
        ``generator_data: pool`` also on the unlabelled images through its unconditional term alone
        (real pool images against the same fakes), which the generator is trained against too."""
        dev = ctx.device
        pool = self.unlabelled_for_training(ctx)
        real_images = labelled.images.to(dev).float().div(127.5).sub(1.0)
        real_labels = labelled.labels.to(dev)
        g_opt = torch.optim.Adam(model.generator.parameters(), lr=self.values["lr"], betas=(0.0, 0.9))
        d_opt = torch.optim.Adam(model.discriminator.parameters(), lr=self.values["lr"], betas=(0.0, 0.9))
        augment = diff_augment if self.values["diffaugment"] == "on" else (lambda x, g: x)
        class_weight = self.values["class_loss"]
        decay = min(self.values["ema"], 1.0 - 10.0 / steps) if steps > 10 else 0.0
        for step in counted(steps, f"{self.family} fit"):
            index = torch.randint(0, len(real_labels), (BATCH,), generator=rng, device=dev)
            real, y_real = real_images[index], real_labels[index]
            z = torch.randn(BATCH, Z_DIM, generator=rng, device=dev)
            y_fake = torch.randint(0, ctx.num_classes, (BATCH // 2,), generator=rng, device=dev).repeat(2)
            fake = model.generator(z, y_fake)  # image i and image i + BATCH/2 share a class: a mode-seeking pair

            real_score, real_logits = model.discriminator(augment(real, rng), y_real)
            fake_score, _ = model.discriminator(augment(fake.detach(), rng), y_fake)
            d_loss = (F.relu(1 - real_score).mean() + F.relu(1 + fake_score).mean()
                      + class_weight * F.cross_entropy(real_logits, y_real))
            if pool is not None:
                unlabelled = pool[torch.randint(0, len(pool), (BATCH,), generator=rng, device=dev)]
                unlabelled = unlabelled.float().div(127.5).sub(1.0)
                d_loss = d_loss + (F.relu(1 - model.discriminator.unconditional(augment(unlabelled, rng))).mean()
                                   + F.relu(1 + model.discriminator.unconditional(augment(fake.detach(), rng))).mean())
            d_opt.zero_grad(set_to_none=True)
            d_loss.backward()
            d_opt.step()

            score, logits = model.discriminator(augment(fake, rng), y_fake)
            g_loss = (-score.mean() + class_weight * F.cross_entropy(logits, y_fake)
                      + self.values["mode_seeking"] / (mode_distance(fake, z) + 1e-5))
            if pool is not None:
                g_loss = g_loss - model.discriminator.unconditional(augment(fake, rng)).mean()
            g_opt.zero_grad(set_to_none=True)
            g_loss.backward()
            g_opt.step()

            with torch.no_grad():
                for ema_p, p in zip(model.ema.parameters(), model.generator.parameters()):
                    ema_p.lerp_(p, 1.0 - decay)
                for ema_b, b in zip(model.ema.buffers(), model.generator.buffers()):
                    ema_b.copy_(b)
            if step % 50 == 0 or step == steps:
                check_finite(step, discriminator=d_loss, generator=g_loss)

    @torch.no_grad()
    def sample(self, model, labels, labelled, ctx, rng):
        out = []
        for chunk in labels.split(512):
            z = torch.randn(len(chunk), Z_DIM, generator=rng, device=ctx.device)
            images = model.ema(z, chunk.to(ctx.device))
            out.append(((images + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).cpu())
        return torch.cat(out) if out else torch.empty(0, *labelled.images.shape[1:], dtype=torch.uint8)
