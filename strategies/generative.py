"""Shared machinery of generative strategies: the synthetic:real ratio, class-balanced sampling,
the generator cache, and divergence / mode-collapse checks.

A subclass declares its params, a ``family`` (strategies of one family with equal generator params
share one fitted generator, e.g. ``vae`` and ``vae-perturb``), and implements ``build``,
``train_generator`` (or, to fit several seeds' generators as one, ``train_generators`` with
``fits_stacked``) and ``sample``.
"""

from __future__ import annotations

import math
import time
from typing import Callable, ClassVar

import torch
from torch import nn
from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN as KID_MEAN
from torch_fidelity.metric_kid import KEY_METRIC_KID_STD as KID_STD
from torch_fidelity.metric_kid import kid_features_to_metric

from bench.core.cache import FileCache, cache_key
from bench.core.errors import CellFailed, UserError
from bench.core.images import ImageSet
from bench.core.keys import canonical_json
from bench.core.seeding import derive_seed, seeded
from bench.core.strategy import FitContext, Param, Strategy, TrainingData
from bench.training.stacked import Stacked
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
PROBE_PER_CLASS = 50  # samples per class that the collapse check judges after every fit
COLLAPSE_THRESHOLD = 0.1  # per-class sample diversity below this share of the real diversity = collapse


def balanced_labels(n: int, num_classes: int) -> torch.Tensor:
    """n labels cycling through the classes (counts differ by at most one)."""
    return torch.arange(n) % num_classes


def filling_labels(n: int, real_labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """n labels that first fill each class up to the largest class of ``real_labels`` (in
    proportion to its shortfall when n is smaller than the total), then cycle through all classes."""
    deficit = torch.bincount(real_labels.cpu(), minlength=num_classes)
    deficit = deficit.max() - deficit
    total = int(deficit.sum())
    if total == 0 or n == 0:
        return balanced_labels(n, num_classes)
    share = deficit.double() * min(n, total) / total
    counts = share.floor().long()
    remainder = min(n, total) - int(counts.sum())  # largest remainders get the last ones
    counts[torch.argsort(share - counts, descending=True, stable=True)[:remainder]] += 1
    fill = torch.repeat_interleave(torch.arange(num_classes), counts)
    return torch.cat([fill, balanced_labels(n - len(fill), num_classes)])


def synthetic_labels(n: int, real_labels: torch.Tensor, num_classes: int, balance: bool) -> torch.Tensor:
    """The labels of n synthetic images: filling the small classes first with ``balance``, else
    class-balanced."""
    return filling_labels(n, real_labels, num_classes) if balance else balanced_labels(n, num_classes)


def diversity(images: torch.Tensor) -> float:
    """Mean pairwise L2 distance between images (as floats in [0, 1])."""
    flat = images.flatten(1).float() / 255.0
    if len(flat) < 2:
        return 0.0
    distances = torch.cdist(flat, flat)
    return (distances.sum() / (len(flat) * (len(flat) - 1))).item()


def check_not_collapsed(samples: ImageSet, real: ImageSet, num_classes: int) -> float:
    """Raise CellFailed if, for some class, samples are far less diverse than the real images.

    Returns the smallest per-class ratio of sample diversity to real diversity.
    """
    ratios = []
    for cls in range(num_classes):
        real_div = diversity(real.images[real.labels == cls])
        if real_div > 0:
            ratios.append(diversity(samples.images[samples.labels == cls]) / real_div)
    worst = min(ratios) if ratios else 1.0
    if worst < COLLAPSE_THRESHOLD:
        raise CellFailed(
            f"mode collapse: samples of one class are {100 * worst:.1f}% as diverse as its real "
            f"images (threshold {100 * COLLAPSE_THRESHOLD:.0f}%)"
        )
    return worst


def _diverged(name: str, number: float, step: int) -> CellFailed:
    return CellFailed(f"generator training diverged: {name} loss is {number} at step {step}")


def check_finite(step: int, **losses: torch.Tensor) -> None:
    """Raise CellFailed when a loss is NaN or infinite (call every few steps: it syncs the device)."""
    for name, value in losses.items():
        number = value.item()
        if not math.isfinite(number):
            raise _diverged(name, number, step)


def stack_draws(draws: list[tuple]) -> tuple:
    """The members' random draws of a step (each a tuple of tensors, tuples of tensors, or None),
    stacked member by member."""

    def stacked(parts):
        if parts[0] is None:
            return None
        return stacked_tuple(parts) if isinstance(parts[0], tuple) else torch.stack(parts)

    def stacked_tuple(tuples):
        return tuple(stacked(parts) for parts in zip(*tuples))

    return stacked_tuple(draws)


class Members:
    """The K generators of one architecture that a fit trains at once: one model as it is (the
    operations of a fit alone), several as stacked models under vmap (bench/training/stacked.py),
    each with its own parameters, buffers and optimizer state. It keeps which ones diverged."""

    def __init__(self, models: list[nn.Module], adapt: Callable[[nn.Module], None] | None = None):
        self.models = models
        self.stacked = Stacked(models, adapt) if len(models) > 1 else None
        self.failures: list[CellFailed | None] = [None] * len(models)

    def parameters(self, prefix: str = "") -> list[torch.Tensor]:
        """The parameters (stacked, for several) whose names start with ``prefix``."""
        if self.stacked is None:
            return [p for name, p in self.models[0].named_parameters() if name.startswith(prefix)]
        return self.stacked.parameters(prefix)

    def buffers(self, prefix: str = "") -> list[torch.Tensor]:
        """The buffers (stacked, for several) whose names start with ``prefix``."""
        if self.stacked is None:
            return [b for name, b in self.models[0].named_buffers() if name.startswith(prefix)]
        return [value for name, value in self.stacked.buffers.items() if name.startswith(prefix)]

    def map(self, fn, *per_member, shared: tuple = ()):
        """``fn(model, *args, *shared)`` for every member, results stacked along a leading K; each of
        ``per_member`` has a leading K (one slice per member) or is None."""
        if self.stacked is None:
            out = fn(self.models[0], *(None if a is None else a[0] for a in per_member), *shared)
            return tuple(t.unsqueeze(0) for t in out) if isinstance(out, tuple) else out.unsqueeze(0)
        return self.stacked.map(fn, *per_member, shared=shared)

    def diverged(self, step: int, **losses: torch.Tensor) -> bool:
        """Mark each member whose loss (a K-vector each) is NaN or infinite as failed (one device
        sync); True when all have failed."""
        for name, values in losses.items():
            for index, number in enumerate(values.detach().float().tolist()):
                if self.failures[index] is None and not math.isfinite(number):
                    self.failures[index] = _diverged(name, number, step)
        return all(failure is not None for failure in self.failures)

    def finish(self) -> list[CellFailed | None]:
        """Each member's trained weights into its own model; per member its failure, or None."""
        if self.stacked is not None:
            self.stacked.copy_into(self.models)
        return self.failures


SIGNAL_POINTS = 4  # a fit alone measures its validation signal at this many evenly spaced steps
SIGNAL_SAMPLES = 200  # class-balanced samples per point (a fixed draw: the same noise at every point)
SIGNAL_PIXELS = 16  # images are average-pooled to at most this many pixels a side for the signal's KID


def _signal_features(images: torch.Tensor) -> torch.Tensor:
    """Pooled pixels in [0, 1], flattened: the features of the generator's validation signal (its
    own, computed during the fit; the quality stage's evaluator comes later)."""
    x = images.float().div(255.0)
    size = min(SIGNAL_PIXELS, x.shape[-1])
    return nn.functional.adaptive_avg_pool2d(x, size).flatten(1).double()


class ValidationSignal:
    """A generator fit's own convergence signal: KID between class-balanced samples and the
    validation images, in pooled pixels, at ``SIGNAL_POINTS`` evenly spaced steps of a fit alone.
    The fit was still improving at its end where the last KID is below the one before by more than
    twice its subsets' standard deviation; ``generator_converged`` says it was not. A stacked fit (several
    seeds' generators as one model) or a fit without validation images records none. Its samples draw from a
    generator of their own, so the fit's weights are those of a fit that records nothing."""

    def __init__(
        self,
        strategy: "GenerativeStrategy",
        model: nn.Module | None,
        labelled: ImageSet,
        ctx: FitContext | None,
        steps: int,
    ):
        self.strategy, self.model, self.labelled, self.ctx = strategy, model, labelled, ctx
        on = model is not None and ctx is not None and ctx.val is not None and len(ctx.val) >= 2
        self.points = (
            {max(1, round(steps * (i + 1) / SIGNAL_POINTS)) for i in range(SIGNAL_POINTS)} if on else set()
        )
        self.trace: list[dict] = []
        if on:
            self.reference = _signal_features(ctx.val.images)
            self.labels = balanced_labels(SIGNAL_SAMPLES, ctx.num_classes)

    @torch.no_grad()
    def at(self, step: int) -> None:
        """Measure the signal where ``step`` is one of its points."""
        if step not in self.points:
            return
        was_training = self.model.training
        rng = torch.Generator(device=self.ctx.device).manual_seed(derive_seed("signal", self.ctx.seed))
        samples = self.strategy.sample(self.model.eval(), self.labels, self.labelled, self.ctx, rng)
        self.model.train(was_training)
        features = _signal_features(samples)
        subset = min(100, len(features), len(self.reference))
        kid = kid_features_to_metric(
            features, self.reference, kid_subsets=10, kid_subset_size=subset, verbose=False, rng_seed=0
        )
        self.trace.append({"step": step, "kid": float(kid[KID_MEAN]), "kid_std": float(kid[KID_STD])})

    def columns(self) -> dict:
        """``generator_converged`` (None where nothing was measured) and the trace as JSON text."""
        if len(self.trace) < 2:
            return {}
        before, last = self.trace[-2], self.trace[-1]
        improving = before["kid"] - last["kid"] > 2 * last["kid_std"]
        return {
            "generator_converged": not improving,
            "generator_val_kid": last["kid"],
            "generator_signal": canonical_json(self.trace),
        }


class _NoSignal:
    """The signal of a fit that measures none (outside ``_fit_many``)."""

    def at(self, step: int) -> None:
        pass

    def columns(self) -> dict:
        return {}


class GenerativeStrategy(Strategy):
    """Base of class-conditional generative strategies: fit (cached), then sample at the ratio.
    Its training loop calls ``self.signal.at(step)`` after each step (``ValidationSignal``)."""

    signal: ValidationSignal | _NoSignal = _NoSignal()

    family: ClassVar[str] = ""
    generator_version: ClassVar[str] = "2"  # bump when the generator's architecture or training changes
    # 2: initial weights seeded by the generator's key (1 took them from the caller's random state)
    sampling_params: ClassVar[frozenset[str]] = frozenset(
        {"ratio", "balance"}
    )  # params that leave the generator as is
    fits_stacked: ClassVar[bool] = (
        False  # its train_generators trains several generators as one (a stacked fit)
    )

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

    def generator_key(self, cache_key_parts: tuple, cohort: int = 1) -> str:
        """The cache key of the fitted generator: family, code version, params, the fit's data, and
        the size of the stacked fit it trains in where it has one (``cohort`` > 1)."""
        return cache_key(
            self.family,
            self.generator_version,
            self.generator_params(),
            cache_key_parts,
            self.values["steps"],
            *((("cohort", cohort),) if cohort > 1 else ()),
        )

    def _init_seed_key(self, ctx: FitContext) -> str:
        """The key that seeds a generator's initial weights and draws: that of its fit alone, so
        that a member of a stacked fit starts and draws as it would alone."""
        return self.generator_key(ctx.cache_key_parts)

    def fitted_generator(self, labelled: ImageSet, ctx: FitContext) -> tuple[nn.Module, dict]:
        """The fitted generator, from the cache when it holds one; a failed fit is cached as failed.
        In a stacked fit (``ctx.stacked_fits``) a miss fits every member not yet cached, as one."""
        cache = FileCache(ctx.cache_dir) if ctx.cache_dir is not None else None
        cohort = ctx.stacked_size if ctx.stacked_fits is not None and self.fits_stacked else 1
        key = self.generator_key(ctx.cache_key_parts, cohort)
        info = {"generator_steps": self.values["steps"], "generator_key": key}
        if cohort > 1:
            info["stacked_fit_size"] = cohort
        if cache is None:  # nothing to keep the other members in: fit them all, take this one
            fits = self._learnt_from(ctx.stacked_fits()) if cohort > 1 else [(labelled, ctx)]
            own = [peer.cache_key_parts for _, peer in fits].index(ctx.cache_key_parts)
            fitted = self._fit_many(fits)[own]
            if isinstance(fitted, CellFailed):
                raise fitted
            model, seconds, signal = fitted
            return model.to(ctx.device).eval(), {
                **info,
                "generator_cache_hit": False,
                "generator_fit_seconds": seconds,
                **signal,
            }
        fitted_now = self._fit_cohort(ctx, cache) if cohort > 1 else set()
        with cache.lock("generator", key):
            failure = cache.load_json("generator-failed", key)
            if failure is not None:
                raise CellFailed(failure["reason"])
            state, meta = cache.load_tensors("generator", key), cache.load_json("generator", key)
            cached = state is not None and meta is not None
            if cached:
                model = self._built(labelled, ctx)
                model.load_state_dict(state)
                seconds, signal = meta["fit_seconds"], {k: v for k, v in meta.items() if k != "fit_seconds"}
            else:
                fitted = self._fit_many([(labelled, ctx)])[0]
                self._save(cache, key, fitted)
                if isinstance(fitted, CellFailed):
                    raise fitted
                model, seconds, signal = fitted
        hit = cached and key not in fitted_now  # not a hit where this call fitted it, with its cohort
        # the time and convergence signal of the original fit, also on a cache hit, so that costs compare
        return model.to(ctx.device).eval(), {
            **info,
            "generator_cache_hit": hit,
            "generator_fit_seconds": seconds,
            **signal,
        }

    def _built(self, labelled: ImageSet, ctx: FitContext) -> nn.Module:
        """A new generator for ``labelled``'s images, its weights seeded by the fit's key alone (not
        by whichever strategy, gan or hybrid, fits it first)."""
        with seeded(derive_seed("generator-init", self._init_seed_key(ctx)), ctx.device):
            return self.build(tuple(labelled.images.shape[1:]), ctx.num_classes)

    @staticmethod
    def _save(cache: FileCache, key: str, fitted) -> None:
        if isinstance(fitted, CellFailed):
            cache.save_json("generator-failed", key, {"reason": str(fitted)})
            return
        model, seconds, signal = fitted
        cache.save_json("generator", key, {"fit_seconds": seconds, **signal})
        cache.save_tensors("generator", key, {k: v.cpu() for k, v in model.state_dict().items()})

    def _fit_cohort(self, ctx: FitContext, cache: FileCache) -> set[str]:
        """Fit the members of ``ctx``'s stacked fit that the cache holds neither fitted nor
        failed, as one stacked model, and cache each (under one lock for the cohort); return the
        keys it fitted."""
        keys = [self.generator_key(parts, ctx.stacked_size) for parts in ctx.stacked_parts]
        with cache.lock("generator-cohort", cache_key(*sorted(keys))):
            missing = [
                key
                for key in keys
                if cache.load_json("generator", key) is None
                and cache.load_json("generator-failed", key) is None
            ]
            if not missing:
                return set()
            peers = ctx.stacked_fits()  # loads their data: only on a miss
            fits = self._learnt_from([peer for peer, key in zip(peers, keys) if key in missing])
            for key, result in zip(missing, self._fit_many(fits)):
                self._save(cache, key, result)
        return set(missing)

    def _learnt_from(self, fits: list[tuple[ImageSet, FitContext]]) -> list[tuple[ImageSet, FitContext]]:
        """Each fit's (labelled images, context) as (the images its generator learns from, context)."""
        return [(self.generator_training_set(labelled, ctx)[0], ctx) for labelled, ctx in fits]

    def _fit_many(
        self, fits: list[tuple[ImageSet, FitContext]]
    ) -> list[tuple[nn.Module, float] | CellFailed]:
        """Train and check the generators of ``fits`` (several as one stacked model): per fit its
        model and the seconds of its training (a cohort's shared equally), or why it failed."""
        steps, device = self.values["steps"], fits[0][1].device
        models = [self._built(labelled, ctx) for labelled, ctx in fits]
        rngs = [
            torch.Generator(device=device).manual_seed(derive_seed("generator", self._init_seed_key(ctx)))
            for _, ctx in fits
        ]
        start = time.perf_counter()
        alone = len(fits) == 1
        self.signal = ValidationSignal(
            self, models[0] if alone else None, fits[0][0], fits[0][1] if alone else None, steps
        )
        with seeded(derive_seed("generator-train", self._init_seed_key(fits[0][1])), device):
            for model in models:
                model.to(device).train()
            failures = self.train_generators(
                models, [labelled for labelled, _ in fits], [ctx for _, ctx in fits], steps, rngs
            )
        seconds = (time.perf_counter() - start) / len(fits)
        results = []
        for model, (labelled, ctx), failure in zip(models, fits, failures):
            try:
                if failure is not None:
                    raise failure
                self._check(model.eval(), labelled, ctx)
                results.append((model, seconds, self.signal.columns()))
            except CellFailed as exc:
                results.append(exc)
        return results

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

    def _check(self, model: nn.Module, labelled: ImageSet, ctx: FitContext) -> None:
        """Raise CellFailed where a fitted generator's samples collapse."""
        probe_labels = balanced_labels(PROBE_PER_CLASS * ctx.num_classes, ctx.num_classes)
        rng = torch.Generator(device=ctx.device).manual_seed(derive_seed("probe", self._init_seed_key(ctx)))
        probe = self.sample(model, probe_labels, labelled, ctx, rng)
        check_not_collapsed(ImageSet(probe, probe_labels), labelled, ctx.num_classes)

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
