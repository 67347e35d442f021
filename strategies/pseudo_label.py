"""`pseudo-label`: the control of the semi-supervised protocol (self-training, Lee 2013).

The teacher (``strategies.teacher``: the suite's `cnn` on the labelled images alone) labels the
unlabelled pool; the images it is at least ``threshold`` sure of join the training data with its
labels, class-balanced up to ``ratio`` per real image, the most confident first. A generator that
saw the same pool has to beat this before a gain is credited to generation rather than to the
pool. With a classical ``policy`` at a ``magnitude`` above 0 every training batch is augmented
too, so the strongest simple semi-supervised baseline is one config entry.
"""

from __future__ import annotations

from bench.core.strategy import Param, TrainingData, register_strategy
from strategies.classical import Classical
from strategies.controls import PoolControl
from strategies.generative import RATIO
from strategies.teacher import pseudo_labelled, teacher_versions, threshold_value


@register_strategy("pseudo-label")
class PseudoLabel(PoolControl):
    """Self-training control: the pool's images that a cnn teacher labels with confidence."""

    params = {
        "threshold": Param(
            0.95,
            low=0.0,
            high=1.0,
            tune=True,
            check=threshold_value,
            help="the teacher's confidence an image needs to join the training data, or auto: "
            "the lowest at which its labels of the validation images are 95% right",
        ),
        "ratio": Param(
            RATIO.default,
            low=RATIO.low,
            high=RATIO.high,
            tune=True,
            help="pool images (with the teacher's labels) per labelled image, class-balanced",
        ),
        "policy": Classical.params["policy"],
        "magnitude": Param(
            0.0,
            low=0.0,
            high=1.0,
            tune=True,
            help="strength of the classical policy on every batch (0: none)",
        ),
    }

    @classmethod
    def versions(cls, params):
        return {**super().versions(params), **teacher_versions()}

    def synthetic_count(self, n_real: int) -> int:
        return round(self.values["ratio"] * n_real)

    def trains_teacher(self) -> bool:
        return True

    def fit(self, labelled, ctx):
        pseudo, confidence, threshold = pseudo_labelled(
            labelled, ctx, self.values["threshold"], self.synthetic_count(len(labelled))
        )
        return TrainingData(
            real=labelled,
            synthetic=pseudo if len(pseudo) else None,
            batch_transform=self.batch_transform(ctx.hflip),
            synthetic_kind="pseudo-labelled",
            info={
                "pseudo_labelled": len(pseudo),
                "pseudo_label_threshold": threshold,
                "pseudo_label_confidence": confidence.mean().item() if len(pseudo) else float("nan"),
            },
        )
