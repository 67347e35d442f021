"""`fixmatch`: the strongest simple control of the semi-supervised protocol (Sohn et al. 2020).

The labelled batches are `none`'s, with a classical ``policy`` on them (FixMatch's weak view:
`basic`); beside them the one training loop adds the FixMatch objective on the unlabelled pool
(``bench.training.objectives.fixmatch``): the model's label for a weak view where it is at least
``threshold`` sure, trained on the strong view. Nothing is generated: a generator that saw the same
pool is credited only where it beats this, and "generation on top" is a `hybrid` with
``objective: fixmatch``, one paired comparison against this strategy.
"""

from __future__ import annotations

from bench.core.strategy import Param, TrainingData, register_strategy
from bench.training.objectives import make_objective, objective_versions
from bench.training.objectives.fixmatch import FixMatch
from strategies.classical import Classical
from strategies.controls import PoolControl


@register_strategy("fixmatch")
class FixMatchStrategy(PoolControl):
    """FixMatch: a classical policy on the labelled batches, the FixMatch objective on the pool."""

    params = {
        "policy": Classical.params["policy"],
        "magnitude": Param(
            0.5, low=0.0, high=1.0, tune=True, help="strength of the policy on the labelled batches (0: none)"
        ),
        **FixMatch.params,
    }
    quick = {"mu": 1}

    @classmethod
    def versions(cls, params):
        return {**super().versions(params), **objective_versions("fixmatch", _objective_params(params))}

    def objective_part(self, hflip: bool = False):
        return make_objective("fixmatch", _objective_params(self.values), hflip)

    def fit(self, labelled, ctx):
        return TrainingData(
            real=labelled,
            batch_transform=self.batch_transform(ctx.hflip),
            unlabelled=ctx.unlabelled,
            objective=self.objective_part(ctx.hflip),
        )


def _objective_params(params: dict) -> dict:
    return {name: params[name] for name in FixMatch.params}
