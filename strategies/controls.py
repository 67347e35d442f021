"""The base of the semi-supervised protocol's controls (`pseudo-label`, `fixmatch`): strategies that
learn from the unlabelled pool without generating any, with an optional classical policy on every
training batch. A generator that saw the same pool is credited with a gain only where it beats them."""

from __future__ import annotations

from bench.core.strategy import Strategy
from strategies.classical import Classical, policy_of


class PoolControl(Strategy):
    """A control: it sees the unlabelled pool, generates nothing, and puts the classical ``policy`` at
    ``magnitude`` (0: none) on every batch (its subclasses declare both params)."""

    @classmethod
    def sees_unlabelled(cls, params):
        return True

    @classmethod
    def is_control(cls, params):
        return True

    @classmethod
    def versions(cls, params):
        return {**super().versions(params), **(Classical.versions(params) if params["magnitude"] else {})}

    def batch_policy(self):
        return policy_of(self.values)

    def batch_transform(self, hflip: bool):
        """The classical policy's batch transform (None at magnitude 0)."""
        policy = Classical(policy=self.values["policy"], magnitude=self.values["magnitude"])
        return policy.batch_transform(hflip)
