"""A generator fit's own convergence signal: KID between its samples and the validation images at a
few points of the fit (the cheap second opinion beside the generator check of bench/run/check_seeds.py)."""

from __future__ import annotations

import torch
from torch import nn
from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN as KID_MEAN
from torch_fidelity.metric_kid import KEY_METRIC_KID_STD as KID_STD
from torch_fidelity.metric_kid import kid_features_to_metric

from bench.core.images import ImageSet
from bench.core.keys import canonical_json
from bench.core.seeding import derive_seed
from bench.core.strategy import FitContext
from strategies.sampling import balanced_labels

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
        strategy,
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


class NoSignal:
    """The signal of a fit that measures none (outside ``_fit_many``)."""

    def at(self, step: int) -> None:
        pass

    def columns(self) -> dict:
        return {}
