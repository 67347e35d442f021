"""`vae` and `vae-perturb`: a class-conditional convolutional VAE.

β-VAE loss (Bernoulli reconstruction + β·KL) with a linear KL warm-up. `vae` decodes samples of a
per-class Gaussian matched to the aggregate posterior of the labelled images (ex-post density
estimation, after Ghosh et al. 2020; or of the standard normal prior); `vae-perturb` encodes real
images, perturbs their latent and decodes with the same label.
Both share one fitted VAE when their VAE params are equal.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bench.core.progress import counted
from bench.core.strategy import Param, register_strategy
from bench.training.stacked import Members, stack_draws
from strategies.generative import BALANCE, POOL_PARAMS, RATIO, GenerativeStrategy

LATENT = 16
BATCH = 64


class ConditionalVAE(nn.Module):
    """Encoder (image + one-hot label planes) -> (mu, logvar); decoder (z + one-hot) -> logits.
    Two stride-2 stages each way, so 8x8, 28x28 and 32x32 images all fit."""

    def __init__(self, shape: tuple[int, int, int], num_classes: int, no_label: bool = False):
        super().__init__()
        channels, height, width = shape
        self.shape = shape
        self.num_classes = num_classes + int(no_label)  # with no_label, index K stands for "no label"
        self.small = (height // 4, width // 4)
        flat = 64 * self.small[0] * self.small[1]
        self.encoder = nn.Sequential(
            nn.Conv2d(channels + self.num_classes, 32, 4, stride=2, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(32, 64, 4, stride=2, padding=1),
            nn.ReLU(inplace=True),
            nn.Flatten(),
            nn.Linear(flat, 256),
            nn.ReLU(inplace=True),
            nn.Linear(256, 2 * LATENT),
        )
        self.decode_input = nn.Sequential(
            nn.Linear(LATENT + self.num_classes, 256),
            nn.ReLU(inplace=True),
            nn.Linear(256, flat),
            nn.ReLU(inplace=True),
        )
        self.decoder = nn.Sequential(
            nn.ConvTranspose2d(64, 32, 4, stride=2, padding=1),
            nn.ReLU(inplace=True),
            nn.ConvTranspose2d(32, channels, 4, stride=2, padding=1),
        )

    def encode(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        planes = F.one_hot(y, self.num_classes).float().view(-1, self.num_classes, 1, 1)
        stats = self.encoder(torch.cat([x, planes.expand(-1, -1, *x.shape[2:])], 1))
        return stats[:, :LATENT], stats[:, LATENT:].clamp(-10, 10)

    def decode(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = self.decode_input(torch.cat([z, F.one_hot(y, self.num_classes).float()], 1))
        return self.decoder(h.view(-1, 64, *self.small))


class M2VAE(ConditionalVAE):
    """The semi-supervised VAE M2 of Kingma et al. (2014): the conditional VAE and a classifier
    q(y|x) that stands in for the label of an unlabelled image."""

    def __init__(self, shape: tuple[int, int, int], num_classes: int):
        super().__init__(shape, num_classes)
        flat = 64 * self.small[0] * self.small[1]
        self.classifier = nn.Sequential(
            nn.Conv2d(shape[0], 32, 4, stride=2, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(32, 64, 4, stride=2, padding=1),
            nn.ReLU(inplace=True),
            nn.Flatten(),
            nn.Linear(flat, num_classes),
        )


def negative_elbo(
    model: ConditionalVAE, x: torch.Tensor, y: torch.Tensor, kl_weight: float, noise: torch.Tensor
) -> torch.Tensor:
    """Per image, the Bernoulli reconstruction loss plus kl_weight times the KL term (``noise``:
    the reparametrization's standard normal draws, one row per image)."""
    mu, logvar = model.encode(x, y)
    z = mu + noise * torch.exp(0.5 * logvar)
    recon = F.binary_cross_entropy_with_logits(model.decode(z, y), x, reduction="none").flatten(1).sum(1)
    return recon + kl_weight * (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(1))


def elbo_loss(
    model: ConditionalVAE, x: torch.Tensor, y: torch.Tensor, noise: torch.Tensor, kl_weight: float
) -> torch.Tensor:
    """The β-VAE loss of a batch: its reconstruction and kl_weight times its KL term, per image."""
    mu, logvar = model.encode(x, y)
    z = mu + noise * torch.exp(0.5 * logvar)
    recon = F.binary_cross_entropy_with_logits(model.decode(z, y), x, reduction="sum") / len(x)
    kl = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum() / len(x)
    return recon + kl_weight * kl


def m2_loss(
    model: M2VAE,
    x: torch.Tensor,
    y: torch.Tensor,
    unlabelled: torch.Tensor,
    noise: torch.Tensor,
    unlabelled_noise: torch.Tensor,
    alpha: torch.Tensor,
    kl_weight: float,
) -> torch.Tensor:
    """Kingma et al.'s J^alpha on a labelled and an unlabelled batch, per image of the two: the
    labelled images' negative ELBO and alpha times their classification loss, and for each
    unlabelled image the negative ELBO under every label weighted by q(y|x), minus the entropy of
    q(y|x) (``unlabelled_noise``: a row per unlabelled image and label)."""
    classes = model.classifier[-1].out_features
    labelled = negative_elbo(model, x, y, kl_weight, noise).sum() + alpha * F.cross_entropy(
        model.classifier(x), y, reduction="sum"
    )
    log_q = model.classifier(unlabelled).log_softmax(1)
    every = torch.arange(classes, device=x.device).repeat(len(unlabelled))
    per_label = negative_elbo(
        model, unlabelled.repeat_interleave(classes, 0), every, kl_weight, unlabelled_noise
    )
    unlabelled_loss = (log_q.exp() * (per_label.view(-1, classes) + log_q)).sum()
    return (labelled + unlabelled_loss) / (len(x) + len(unlabelled))


def _to_uint8(logits: torch.Tensor) -> torch.Tensor:
    return (torch.sigmoid(logits) * 255).round().to(torch.uint8).cpu()


class _VAEBase(GenerativeStrategy):
    family = "vae"
    quick = {"steps": 20}
    params = {
        "ratio": RATIO,
        "balance": BALANCE,
        **POOL_PARAMS,
        "steps": Param(3000, low=1, high=1_000_000, help="VAE training steps"),
        "lr": Param(1e-3, low=1e-6, high=10.0, log=True, help="Adam learning rate"),
        "beta": Param(1.0, low=0.0, high=100.0, help="weight of the KL term"),
        "kl_warmup": Param(
            0.3, low=0.0, high=1.0, help="share of the steps over which the KL weight ramps up"
        ),
        "pool_model": Param(
            "no-label",
            choices=("no-label", "m2"),
            omit_default=True,
            help="with generator_data: pool, how the VAE learns from unlabelled images: "
            'under an extra "no label" condition, or as M2 (Kingma et al. 2014: '
            "a classifier q(y|x) stands in for their label)",
        ),
    }

    pool_use_params = GenerativeStrategy.pool_use_params | {"pool_model": "pool"}

    def build(self, shape, num_classes):
        if self.value("pool_model") == "m2":
            return M2VAE(shape, num_classes)
        return ConditionalVAE(shape, num_classes, no_label=self.value("generator_data") == "pool")

    fits_stacked = True

    def train_generators(self, models, labelled_sets, ctxs, steps, rngs):
        """The ELBO on labelled batches; with ``generator_data: pool`` each step adds as many
        unlabelled images, encoded and decoded under the extra "no label" condition, so that the
        encoder and decoder learn the images' manifold from the pool while the class conditions
        and the class priors (from the labelled posteriors) stay those of the labelled images; or,
        with ``pool_model: m2``, in M2's loss (``m2_loss``, alpha = 0.1 x pool / labelled images,
        as in Kingma et al.'s alpha = 0.1 N). Each member draws its batches and noise from its
        own generator, in the order a fit alone draws them."""
        dev = ctxs[0].device
        members = Members(models)
        pools = [self.unlabelled_for_training(ctx) for ctx in ctxs]
        images = [labelled.images.to(dev).float().div(255.0) for labelled in labelled_sets]
        labels = [labelled.labels.to(dev) for labelled in labelled_sets]
        optimizer = torch.optim.Adam(members.parameters(), lr=self.values["lr"])
        warmup = max(1, round(self.values["kl_warmup"] * steps))
        m2 = self.value("pool_model") == "m2"
        alphas = (
            torch.tensor([0.1 * len(pool) / len(y) for pool, y in zip(pools, labels)], device=dev)
            if m2
            else None
        )
        for step in counted(steps, f"{self.family} fit"):
            kl_weight = self.values["beta"] * min(1.0, step / warmup)
            draws = stack_draws(
                [
                    self._draws(x, y, pool, rng, ctxs[0].num_classes, m2)
                    for x, y, pool, rng in zip(images, labels, pools, rngs)
                ]
            )
            losses = (
                members.map(m2_loss, *draws, alphas, shared=(kl_weight,))
                if m2
                else members.map(elbo_loss, *draws, shared=(kl_weight,))
            )
            optimizer.zero_grad(set_to_none=True)
            losses.sum().backward()
            optimizer.step()
            if (step % 50 == 0 or step == steps) and members.diverged(step, vae=losses):
                break
            self.signal.at(step)
        return members.finish()

    @staticmethod
    def _draws(images, labels, pool, rng, num_classes: int, m2: bool) -> tuple[torch.Tensor, ...]:
        """One member's batch of a step: labelled images and labels, the unlabelled images (with
        a pool), and the reparametrization noise."""
        dev = images.device
        index = torch.randint(0, len(labels), (BATCH,), generator=rng, device=dev)
        x, y = images[index], labels[index]
        unlabelled = (
            None
            if pool is None
            else pool[torch.randint(0, len(pool), (BATCH,), generator=rng, device=dev)]
            .to(images.dtype)
            .div(255.0)
        )
        if m2:
            noise = torch.randn(len(x), LATENT, generator=rng, device=dev)
            return (
                x,
                y,
                unlabelled,
                noise,
                torch.randn(len(unlabelled) * num_classes, LATENT, generator=rng, device=dev),
            )
        if unlabelled is not None:
            x, y = torch.cat([x, unlabelled]), torch.cat([y, torch.full_like(y, num_classes)])
        return x, y, torch.randn(len(x), LATENT, generator=rng, device=dev)


def class_priors(
    model: ConditionalVAE, labelled, num_classes: int, device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per class, the mean and a Cholesky factor of the covariance of the Gaussian closest to the
    aggregate posterior of that class's labelled images (the mixture of their q(z|x)): covariance of
    the posterior means plus the mean posterior variance. A standard normal for a class with fewer
    than two images."""
    x = labelled.images.to(device).float().div(255.0)
    y = labelled.labels.to(device)
    mu, logvar = model.encode(x, y)
    means, factors = (
        torch.zeros(num_classes, LATENT, device=device),
        torch.eye(LATENT, device=device).repeat(num_classes, 1, 1),
    )
    for cls in range(num_classes):
        encoded, variance = mu[y == cls], logvar[y == cls].exp()
        if len(encoded) >= 2:
            means[cls] = encoded.mean(0)
            factors[cls] = torch.linalg.cholesky(torch.cov(encoded.T) + torch.diag(variance.mean(0)))
    return means, factors


@register_strategy("vae")
class VAE(_VAEBase):
    """Class-conditional VAE; synthetic images are decoded samples of each class's latent prior."""

    version = "2"  # 2: the per-class prior matched to the labelled images by default (1: standard normal)
    params = {
        **_VAEBase.params,
        "prior": Param(
            "class",
            choices=("class", "standard"),
            help="where latent samples come from: per class, the Gaussian closest to the "
            "posteriors of its labelled images (avoids the regions of N(0, I) the "
            "decoder never learnt), or the standard normal the VAE was trained towards",
        ),
    }
    sampling_params = GenerativeStrategy.sampling_params | {"prior"}

    @torch.no_grad()
    def sample(self, model, labels, labelled, ctx, rng):
        if self.values["prior"] == "class":
            means, factors = class_priors(model, labelled, ctx.num_classes, ctx.device)
        out = []
        for chunk in labels.split(512):
            chunk = chunk.to(ctx.device)
            z = torch.randn(len(chunk), LATENT, generator=rng, device=ctx.device)
            if self.values["prior"] == "class":
                z = means[chunk] + (factors[chunk] @ z.unsqueeze(2)).squeeze(2)
            out.append(_to_uint8(model.decode(z, chunk)))
        return torch.cat(out)


@register_strategy("vae-perturb")
class VAEPerturb(_VAEBase):
    """Class-conditional VAE; synthetic images are real images of the class with a perturbed latent."""

    params = {
        **_VAEBase.params,
        "perturb": Param(0.5, low=0.0, high=5.0, help="latent noise, in units of the prior's std"),
    }
    sampling_params = GenerativeStrategy.sampling_params | {"perturb"}

    @torch.no_grad()
    def sample(self, model, labels, labelled, ctx, rng):
        out = []
        for chunk in labels.split(512):
            # for each wanted label, a random real image of that class
            weights = (labelled.labels.view(1, -1) == chunk.view(-1, 1)).float().to(ctx.device)
            source = torch.multinomial(weights, 1, generator=rng).squeeze(1).cpu()
            x = labelled.images[source].to(ctx.device).float().div(255.0)
            y = chunk.to(ctx.device)
            mu, _ = model.encode(x, y)
            z = mu + self.values["perturb"] * torch.randn(mu.shape, generator=rng, device=ctx.device)
            out.append(_to_uint8(model.decode(z, y)))
        return torch.cat(out)
