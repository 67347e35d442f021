"""FixMatch (Sohn et al. 2020): the model's prediction on a weakly augmented unlabelled image, where it
is at least ``threshold`` sure, is the label its strongly augmented view is trained to."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from bench.core.strategy import Param
from bench.training.objectives import Objective, register_objective, view, view_policy, view_versions


@register_objective("fixmatch")
class FixMatch(Objective):
    """Pseudo-labels from the weak view where confident, cross-entropy on the strong view."""

    params = {
        "threshold": Param(
            0.95, low=0.0, high=1.0, tune=True, help="the confidence the weak view needs to give a label"
        ),
        "mu": Param(
            3,
            low=1,
            high=16,
            tune=True,
            help="unlabelled images per labelled image in a step (FixMatch's paper: 7; each costs a "
            "trained strong view and an inferred weak one)",
        ),
        "lambda_u": Param(
            1.0,
            low=0.0,
            high=10.0,
            tune=True,
            help="weight of the unlabelled loss (0: none; trains as without it)",
        ),
        "weak": Param("basic", check=view_policy, help="the weak view's policy names joined by '+'"),
        "weak_magnitude": Param(0.5, low=0.0, high=1.0, help="strength of the weak view's policies"),
        "strong": Param(
            "trivialaugment+random-erasing",
            check=view_policy,
            help="the strong view's policy names joined by '+'",
        ),
        "strong_magnitude": Param(1.0, low=0.0, high=1.0, help="strength of the strong view's policies"),
    }

    @classmethod
    def versions(cls, params):
        return {**super().versions(params), **view_versions(params["weak"], params["strong"])}

    @property
    def active(self) -> bool:
        return self.values["lambda_u"] > 0

    def unlabelled_per_step(self, batch_size: int) -> int:
        return self.values["mu"] * batch_size

    def loss(self, forward, images, generator):
        values = self.values
        weak = view(values["weak"], values["weak_magnitude"], self.hflip)(images, generator)
        strong = view(values["strong"], values["strong_magnitude"], self.hflip)(images, generator)
        with torch.no_grad():  # the weak view only labels
            confidence, labels = F.softmax(forward(weak), dim=1).max(1)
            mask = (confidence >= values["threshold"]).float()
        per_image = F.cross_entropy(forward(strong), labels, reduction="none")
        return values["lambda_u"] * (per_image * mask).mean(), mask.mean()

    def passes(self, batch_size):
        n, values = self.unlabelled_per_step(batch_size), self.values
        views = [
            (values["weak"], values["weak_magnitude"], n),
            (values["strong"], values["strong_magnitude"], n),
        ]
        return n, n, views
