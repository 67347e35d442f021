"""`classical`: composable per-sample policies (basic, randaugment, trivialaugment, random-erasing,
mixup, cutmix), applied to each training batch on the device."""

from bench.core.errors import UserError
from bench.core.strategy import Param, Strategy, TrainingData, register_strategy
from bench.training.augment import POLICIES, make_batch_transform, parse_policy, policy_versions


def _check_policy(value, where: str) -> str:
    if not isinstance(value, str):
        raise UserError(f"{where}: expected policy names joined by '+', got {value!r}")
    return "+".join(parse_policy(value, field=where))


def policy_of(values: dict) -> tuple[str, float] | None:
    """The (policy, magnitude) of a strategy with a classical ``policy`` param; None at magnitude 0."""
    return (values["policy"], values["magnitude"]) if values["magnitude"] else None


@register_strategy("classical")
class Classical(Strategy):
    """Classical augmentation: one or more policies joined with '+', at one magnitude in [0, 1]."""

    params = {
        "policy": Param(
            "basic",
            choices=tuple(POLICIES.names()),
            check=_check_policy,
            help="policy names joined by '+', applied in order",
            tune=True,
        ),
        "magnitude": Param(0.5, low=0.0, high=1.0, help="strength of every policy", tune=True),
    }

    @classmethod
    def versions(cls, params):
        return {**super().versions(params), **policy_versions(parse_policy(params["policy"]))}

    def batch_policy(self):
        return policy_of(self.values)

    def batch_transform(self, hflip: bool):
        return make_batch_transform(parse_policy(self.values["policy"]), self.values["magnitude"], hflip)

    def fit(self, labelled, ctx):
        return TrainingData(real=labelled, batch_transform=self.batch_transform(ctx.hflip))
