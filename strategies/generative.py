"""The generative contract: the synthetic:real ratio, class-balanced sampling and the params of the
semi-supervised protocol, and the base class of generative strategies.

A subclass declares its params, a ``family`` (strategies of one family with equal generator params
share one fitted generator, e.g. ``vae`` and ``vae-perturb``), and implements ``build``,
``train_generator`` (or, to fit several seeds' generators as one, ``train_generators`` with
``fits_stacked``) and ``sample``. Fitting, caching and stacking live in strategies/generator_fits.py,
the collapse and divergence checks in strategies/generator_checks.py, the validation signal in
strategies/signal.py.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from bench.core.cache import cache_key
from bench.core.errors import CellFailed, UserError
from bench.core.images import ImageSet
from bench.core.seeding import derive_seed
from bench.core.strategy import FitContext, Param, Strategy, TrainingData
from strategies.generator_checks import PROBE_PER_CLASS
from strategies.generator_fits import fitted_generator
from strategies.sampling import synthetic_labels
from strategies.signal import NoSignal, ValidationSignal
from strategies.teacher import pseudo_labelled, teacher_versions, threshold_value

RATIO = Param(1.0, low=0.0, high=10.0, help="synthetic images per real image, class-balanced", tune=True)
BALANCE = Param(
    False,
    help="spend the synthetic images on filling the smaller classes up to the largest first "
    "(class-conditional oversampling of an imbalanced regime); else every class gets as many",
)
GENERATOR_DATA = Param(
    "labelled",
    choices=("labelled", "pool", "pseudo-labelled"),
    omit_default=True,
    help="what the generator learns from: the labelled images; with the protocol's "
    "unlabelled images too (`pool`: see the strategy for how it uses them); or with "
    "the pool images the teacher of `pseudo-label` labels with confidence, as if labelled",
)
PSEUDO_THRESHOLD = Param(
    0.95,
    low=0.0,
    high=1.0,
    omit_default=True,
    check=threshold_value,
    help="with generator_data: pseudo-labelled, the teacher's confidence a pool image needs "
    "(auto: the lowest at which its labels of the validation images are 95% right)",
)
# the params every generator takes for the semi-supervised protocol
POOL_PARAMS = {"generator_data": GENERATOR_DATA, "pseudo_threshold": PSEUDO_THRESHOLD}


class GenerativeStrategy(Strategy):
    """Base of class-conditional generative strategies: fit (cached), then sample at the ratio.
    Its training loop calls ``self.signal.at(step)`` after each step (``ValidationSignal``)."""

    signal: ValidationSignal | NoSignal = NoSignal()

    family: ClassVar[str] = ""
    generator_version: ClassVar[str] = "2"  # bump when the generator's architecture or training changes
    # 2: initial weights seeded by the generator's key (1 took them from the caller's random state)
    # params that leave the generator as is
    sampling_params: ClassVar[frozenset[str]] = frozenset({"ratio", "balance"})
    # its train_generators trains several generators as one (a stacked fit)
    fits_stacked: ClassVar[bool] = False

    @classmethod
    def versions(cls, params):
        teacher = teacher_versions() if params.get("generator_data") == "pseudo-labelled" else {}
        return {**super().versions(params), f"generator:{cls.family}": cls.generator_version, **teacher}

    @classmethod
    def sees_unlabelled(cls, params):
        return params.get("generator_data", GENERATOR_DATA.default) != "labelled"

    @classmethod
    def doubled_generator(cls, params):
        steps = params.get("steps", 0)  # 0: a pretrained generator, not fitted here
        return {**params, "steps": 2 * steps} if steps else None

    # a param that only applies with one generator_data (left out of the resolved params at its default)
    pool_use_params: ClassVar[dict[str, str]] = {"pseudo_threshold": "pseudo-labelled"}

    @classmethod
    def resolve_params(cls, given, where):
        resolved = super().resolve_params(given, where)
        for name, needed in cls.pool_use_params.items():
            if name in resolved and resolved.get("generator_data") != needed:
                raise UserError(f"{where}.{name}: applies only with generator_data: {needed}")
        return resolved

    def unlabelled_for_training(self, ctx: FitContext) -> torch.Tensor | None:
        """The unlabelled images the generator trains on as such (uint8, on the device), or None
        unless ``generator_data: pool``."""
        if self.value("generator_data") != "pool":
            return None
        if ctx.unlabelled is None or not len(ctx.unlabelled):
            raise CellFailed("generator_data: pool, but the protocol grants no unlabelled images")
        return ctx.unlabelled.images.to(ctx.device)

    def generator_training_set(self, labelled: ImageSet, ctx: FitContext) -> tuple[ImageSet, dict]:
        """The labelled images the generator learns from, and result columns on them: the cell's,
        joined with ``generator_data: pseudo-labelled`` by every pool image the teacher is
        ``pseudo_threshold`` sure of, with its label."""
        if not self.trains_teacher():
            return labelled, {}
        pseudo, _, _ = pseudo_labelled(labelled, ctx, self.value("pseudo_threshold"))
        joined = ImageSet(
            torch.cat([labelled.images, pseudo.images]), torch.cat([labelled.labels, pseudo.labels])
        )
        return joined, {"pseudo_labelled": len(pseudo)}

    def generator_params(self) -> dict:
        return {k: v for k, v in self.values.items() if k not in self.sampling_params}

    def step_cost_params(self) -> dict:
        """What a step of its fit and a sampled image cost depend on (``augbench plan``): its params
        but the step count and how many images it adds (a diffusion's sampling steps stay)."""
        common = GenerativeStrategy.sampling_params | {"steps"}
        return {k: v for k, v in self.values.items() if k not in common}

    # -- to implement -------------------------------------------------------------------------
    def build(self, shape: tuple[int, int, int], num_classes: int) -> nn.Module:
        raise NotImplementedError

    def train_generator(
        self, model: nn.Module, labelled: ImageSet, ctx: FitContext, steps: int, rng: torch.Generator
    ) -> None:
        """Train one generator (raise CellFailed where it diverges); a ``fits_stacked`` strategy
        implements ``train_generators`` instead."""
        raise NotImplementedError

    def sample(
        self,
        model: nn.Module,
        labels: torch.Tensor,
        labelled: ImageSet,
        ctx: FitContext,
        rng: torch.Generator,
    ) -> torch.Tensor:
        """uint8 images (on the CPU) of the given classes."""
        raise NotImplementedError

    # -- shared ---------------------------------------------------------------------------------
    def generative_part(self) -> "GenerativeStrategy":
        return self

    def synthetic_count(self, n_real: int) -> int:
        return round(self.values["ratio"] * n_real)

    def trains_teacher(self) -> bool:
        return self.value("generator_data") == "pseudo-labelled"

    def generator_key(self, cache_key_parts: tuple, stacked: int = 1) -> str:
        """The cache key of the fitted generator: family, code version, params, the fit's data, and
        the size of the stacked fit it trains in where it has one (``stacked`` > 1)."""
        return cache_key(
            self.family,
            self.generator_version,
            self.generator_params(),
            cache_key_parts,
            self.values["steps"],
            # "cohort": the key's word for the stacked fit's size since before the rename (keys stay)
            *((("cohort", stacked),) if stacked > 1 else ()),
        )

    def train_generators(
        self,
        models: list[nn.Module],
        labelled_sets: list[ImageSet],
        ctxs: list[FitContext],
        steps: int,
        rngs: list[torch.Generator],
    ) -> list[CellFailed | None]:
        """Train several generators at once (``fits_stacked`` strategies; the others train one, by
        ``train_generator``): per member its failure or None."""
        if len(models) != 1:
            raise ValueError(f"{self.name} fits its generators one at a time")
        try:
            self.train_generator(models[0], labelled_sets[0], ctxs[0], steps, rngs[0])
        except CellFailed as exc:
            return [exc]
        return [None]

    def fitted_generator(self, labelled: ImageSet, ctx: FitContext) -> tuple[nn.Module, dict]:
        """The fitted generator, from the cache when it holds one (strategies/generator_fits.py)."""
        return fitted_generator(self, labelled, ctx)

    def fit_work(self, n_synthetic: int, num_classes: int) -> tuple[int, int]:
        """What one fit costs, for `augbench plan`: (its training steps, the images it samples: the
        collapse check's probes, then the synthetic pool)."""
        return self.values["steps"], PROBE_PER_CLASS * num_classes + n_synthetic

    def fit_generator(self, labelled: ImageSet, ctx: FitContext) -> tuple[nn.Module, ImageSet, dict]:
        """The fitted generator for a cell's labelled images, the labelled images it learnt from
        (``generator_training_set``) and result columns on its fit."""
        seen, seen_info = self.generator_training_set(labelled, ctx)
        model, info = self.fitted_generator(seen, ctx)
        return model, seen, {**info, **seen_info}

    def fit(self, labelled: ImageSet, ctx: FitContext) -> TrainingData:
        model, seen, info = self.fit_generator(labelled, ctx)

        @torch.no_grad()
        def sampler(n: int, rng: torch.Generator) -> ImageSet:
            labels = synthetic_labels(n, labelled.labels, ctx.num_classes, self.values.get("balance", False))
            return ImageSet(self.sample(model, labels, seen, ctx, rng), labels)

        n_synthetic = self.synthetic_count(len(labelled))
        generator = torch.Generator(device=ctx.device).manual_seed(derive_seed("synthetic", ctx.seed))
        synthetic = sampler(n_synthetic, generator) if n_synthetic else None
        return TrainingData(real=labelled, synthetic=synthetic, info=info, sampler=sampler)
