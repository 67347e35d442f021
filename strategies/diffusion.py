"""`diffusion`: a class-conditional denoising diffusion model with classifier-free guidance.

Built on the `diffusers` library (an optional extra: ``pip install 'augbench[diffusion]'``): its
``UNet2DModel`` with class embeddings (one extra class index is the "no label" of classifier-free
guidance, learnt by dropping labels in training), its DDPM noise schedule for training (the UNet
predicts the clean image by default) and its DDIM sampler. Samples come from an exponential
moving average of the weights. With ``pretrained: DIR`` it loads a user's class-conditional UNet
(or a pipeline folder with ``unet/`` and ``scheduler/``) saved with ``save_pretrained``, skips
training and samples it the same way.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from bench.core.errors import CellFailed, UserError
from bench.core.files import files_hash
from bench.core.progress import counted, report
from bench.core.strategy import Param, register_strategy
from strategies.generative import BALANCE, POOL_PARAMS, RATIO, GenerativeStrategy
from strategies.generator_checks import check_finite

BATCH = 64
TRAIN_TIMESTEPS = 1000
SAMPLE_CHUNK = 512
TARGETS = {  # what the UNet is trained to output, by the scheduler's prediction_type
    "epsilon": lambda schedule, clean, noise, t: noise,
    "sample": lambda schedule, clean, noise, t: clean,
    "v_prediction": lambda schedule, clean, noise, t: schedule.get_velocity(clean, noise, t),
}


def _unet_folder(value, where: str) -> str:
    """'' (train a model), or a folder saved with save_pretrained: a UNet, or a pipeline with unet/."""
    if value == "":
        return value
    folder = Path(str(value))
    if not ((folder / "config.json").is_file() or (folder / "unet" / "config.json").is_file()):
        raise UserError(
            f"{where}: {value!r} is not a folder saved with save_pretrained (no config.json or "
            "unet/config.json); give a diffusers UNet2DModel or pipeline folder, or leave it out"
        )
    return str(folder)


class GuidedUNet(nn.Module):
    """The UNet, its EMA copy (used for sampling) and the facts sampling needs."""

    def __init__(
        self,
        unet: nn.Module,
        num_classes: int,
        shape: tuple[int, int, int],
        null_class: int | None,
        scheduler_config: dict,
    ):
        super().__init__()
        self.unet, self.ema = unet, copy.deepcopy(unet).requires_grad_(False)
        self.num_classes, self.shape, self.null_class = num_classes, shape, null_class
        self.scheduler_config = scheduler_config
        self.size = (
            unet.config.sample_size
            if isinstance(unet.config.sample_size, int)
            else unet.config.sample_size[0]
        )


def _blocks(shape: tuple[int, int, int]) -> int:
    return 2 if min(shape[1:]) <= 16 else 3


def _padded(size: int, blocks: int) -> int:
    step = 2 ** (blocks - 1)
    return -(-size // step) * step


@register_strategy("diffusion")
class Diffusion(GenerativeStrategy):
    """Class-conditional DDPM (diffusers UNet2DModel) with classifier-free guidance, sampled by DDIM."""

    family = "diffusion"
    quick = {"steps": 20, "sampling_steps": 2}
    requires = {"diffusers": "diffusion"}
    params = {
        "ratio": RATIO,
        "balance": BALANCE,
        **POOL_PARAMS,
        "steps": Param(2000, low=0, high=1_000_000, help="training steps (batch 64); 0 with `pretrained`"),
        "lr": Param(1e-3, low=1e-6, high=1.0, log=True, help="AdamW learning rate (cosine decay to 0)"),
        "width": Param(32, low=8, high=512, help="channels of the UNet's first block (then 2x per block)"),
        "label_dropout": Param(
            0.1,
            low=0.0,
            high=0.9,
            help="share of training labels replaced by 'no label' (what classifier-free guidance needs)",
        ),
        "ema": Param(
            0.995, low=0.0, high=0.99999, help="decay of the weights' moving average used to sample"
        ),
        "guidance": Param(
            2.0,
            low=0.0,
            high=20.0,
            tune=True,
            help="classifier-free guidance scale (1: conditional model alone; higher: more "
            "class-typical, less diverse)",
        ),
        "prediction": Param(
            "sample",
            choices=("epsilon", "sample", "v_prediction"),
            help="what the UNet learns to predict: the clean image (default: at CPU budgets "
            "it gives clean backgrounds where the noise target leaves them noisy), the "
            "noise (DDPM) or v; a pretrained pipeline's scheduler says its own",
        ),
        "sampling_steps": Param(
            20, low=1, high=1000, help="DDIM steps per sample (each costs two UNet passes with guidance)"
        ),
        "pretrained": Param(
            "",
            check=_unet_folder,
            help="a folder saved with save_pretrained (UNet2DModel with "
            "class embeddings, or a pipeline with unet/): sample it, "
            "no training",
        ),
        "pretrained_hash": Param(
            "",
            check=lambda value, where: value,
            help="set by augbench: the content hash of `pretrained`'s files",
        ),
    }
    sampling_params = GenerativeStrategy.sampling_params | {"guidance", "sampling_steps"}

    @classmethod
    def resolve_params(cls, given, where):
        resolved = super().resolve_params(given, where)
        resolved["pretrained_hash"] = (
            files_hash(Path(resolved["pretrained"])) if resolved["pretrained"] else ""
        )
        return resolved

    # -- the model ------------------------------------------------------------------------------
    def build(self, shape, num_classes):
        if self.values["pretrained"]:
            return self._load_pretrained(shape, num_classes)
        from diffusers import DDPMScheduler, UNet2DModel

        blocks, width = _blocks(shape), self.values["width"]
        unet = UNet2DModel(
            sample_size=_padded(max(shape[1:]), blocks),
            in_channels=shape[0],
            out_channels=shape[0],
            block_out_channels=tuple(width * 2 ** min(i, 1) for i in range(blocks)),
            layers_per_block=1,
            down_block_types=("DownBlock2D",) * blocks,
            up_block_types=("UpBlock2D",) * blocks,
            num_class_embeds=num_classes + 1,
            norm_num_groups=min(8, width),
        )
        schedule = DDPMScheduler(
            num_train_timesteps=TRAIN_TIMESTEPS,
            beta_schedule="squaredcos_cap_v2",
            prediction_type=self.values["prediction"],
        )
        return GuidedUNet(unet, num_classes, shape, num_classes, dict(schedule.config))

    def _load_pretrained(self, shape, num_classes) -> GuidedUNet:
        from diffusers import DDPMScheduler, UNet2DModel

        folder = Path(self.values["pretrained"])
        where = f"strategy diffusion: pretrained {folder}"
        nested = (folder / "unet" / "config.json").is_file()
        try:
            unet = UNet2DModel.from_pretrained(folder, subfolder="unet" if nested else None)
            # a bare UNet: our schedule, its stated target
            scheduler = (
                DDPMScheduler.from_pretrained(folder, subfolder="scheduler")
                if (folder / "scheduler").is_dir()
                else DDPMScheduler(
                    num_train_timesteps=TRAIN_TIMESTEPS,
                    beta_schedule="squaredcos_cap_v2",
                    prediction_type=self.values["prediction"],
                )
            )
        except (OSError, ValueError, json.JSONDecodeError) as exc:
            raise UserError(f"{where}: cannot be loaded ({' '.join(str(exc).split())[:200]})") from None
        classes = unet.config.num_class_embeds
        if classes not in (num_classes, num_classes + 1):
            raise UserError(
                f"{where}: the UNet has {classes} class embeddings; the data set has {num_classes} "
                f"classes (give a model with {num_classes}, or {num_classes + 1} where the last is "
                "the 'no label' of classifier-free guidance)"
            )
        size = (
            unet.config.sample_size
            if isinstance(unet.config.sample_size, int)
            else unet.config.sample_size[0]
        )
        if unet.config.in_channels != shape[0] or size < max(shape[1:]):
            raise UserError(
                f"{where}: the UNet takes {unet.config.in_channels} channel(s) at {size} px; the data "
                f"set's images are {shape[0]} channel(s) at {shape[1]}x{shape[2]}"
            )
        null_class = num_classes if classes == num_classes + 1 else None
        return GuidedUNet(unet, num_classes, shape, null_class, dict(scheduler.config))

    # -- training -------------------------------------------------------------------------------
    def train_generator(self, model, labelled, ctx, steps, rng):
        """The denoising objective with classifier-free guidance's label dropout; with
        ``generator_data: pool`` each step adds as many unlabelled images, which train the "no
        label" path alone (labelled images train both)."""
        if self.values["pretrained"]:
            return
        from diffusers import DDPMScheduler

        dev = ctx.device
        schedule = DDPMScheduler.from_config(model.scheduler_config)
        images = _pad(labelled.images.to(dev).float().div(127.5).sub(1.0), model.size)
        labels = labelled.labels.to(dev)
        pool = self.unlabelled_for_training(ctx)
        optimizer = torch.optim.AdamW(model.unet.parameters(), lr=self.values["lr"], weight_decay=0.0)
        decay = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(1, steps))
        trained, averaged = list(model.unet.parameters()), list(model.ema.parameters())
        for step in counted(steps, f"{self.family} fit"):
            index = torch.randint(0, len(labels), (BATCH,), generator=rng, device=dev)
            dropped = torch.rand(BATCH, generator=rng, device=dev) < self.values["label_dropout"]
            y = torch.where(dropped, torch.full_like(labels[index], model.null_class), labels[index])
            clean = images[index]
            if pool is not None:
                unlabelled = pool[torch.randint(0, len(pool), (BATCH,), generator=rng, device=dev)]
                clean = torch.cat([clean, _pad(unlabelled.float().div(127.5).sub(1.0), model.size)])
                y = torch.cat([y, torch.full_like(y, model.null_class)])
            noise = torch.randn(clean.shape, generator=rng, device=dev)
            t = torch.randint(
                0, schedule.config.num_train_timesteps, (len(clean),), generator=rng, device=dev
            )
            target = TARGETS[schedule.config.prediction_type](schedule, clean, noise, t)
            loss = F.mse_loss(
                model.unet(schedule.add_noise(clean, noise, t), t, class_labels=y).sample, target
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            decay.step()
            with torch.no_grad():
                torch._foreach_lerp_(averaged, trained, 1.0 - self.values["ema"])
            if step % 50 == 0 or step == steps:
                check_finite(step, diffusion=loss)
            self.signal.at(step)

    # -- sampling -------------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, model, labels, labelled, ctx, rng):
        out = []
        for chunk in labels.split(SAMPLE_CHUNK):
            out.append(self._sample_chunk(model, chunk.to(ctx.device), ctx.device, rng))
            report(f"{self.family} sampling {sum(map(len, out))}/{len(labels)}")
        return torch.cat(out)

    def _sample_chunk(
        self, model: GuidedUNet, y: torch.Tensor, dev: torch.device, rng: torch.Generator
    ) -> torch.Tensor:
        from diffusers import DDIMScheduler

        sampler = DDIMScheduler.from_config(model.scheduler_config)
        sampler.set_timesteps(self.values["sampling_steps"], device=dev)
        channels, height, width = model.shape
        x = torch.randn((len(y), channels, model.size, model.size), generator=rng, device=dev)
        guided = model.null_class is not None and self.values["guidance"] != 1.0
        labels = torch.cat([y, torch.full_like(y, model.null_class)]) if guided else y
        for t in sampler.timesteps:
            noise = model.ema(torch.cat([x, x]) if guided else x, t, class_labels=labels).sample
            if guided:
                conditional, unconditional = noise.chunk(2)
                noise = unconditional + self.values["guidance"] * (conditional - unconditional)
            x = sampler.step(noise, t, x, generator=rng).prev_sample
        if not torch.isfinite(x).all():
            raise CellFailed("diffusion sampling diverged: a sample holds NaN or inf")
        x = x[:, :, :height, :width].clamp(-1.0, 1.0)
        return x.add(1.0).mul(127.5).round().to(torch.uint8).cpu()


def _pad(images: torch.Tensor, size: int) -> torch.Tensor:
    """Images padded with black (-1) at the bottom and right to the UNet's square size."""
    return F.pad(images, (0, size - images.shape[3], 0, size - images.shape[2]), value=-1.0)
