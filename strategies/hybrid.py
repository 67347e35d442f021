"""`hybrid`: a generative strategy composed with a classical policy. The generator's synthetic
images join the real ones, and the policy transforms every training batch (synthetic images too).
Any generator x any policy is a config entry, e.g.
``{name: hybrid, params: {generator: gan, policy: basic, ratio: 1}}``."""

from __future__ import annotations

from bench.core.errors import UserError
from bench.core.strategy import STRATEGIES, Param, Strategy, register_strategy
from strategies.classical import Classical
from strategies.generative import RATIO, GenerativeStrategy


def _check_generator(value, where: str) -> str:
    cls = STRATEGIES.get(value, field=where) if isinstance(value, str) else None
    if cls is None or not issubclass(cls, GenerativeStrategy):
        generative = [n for n in STRATEGIES.names() if issubclass(STRATEGIES.get(n), GenerativeStrategy)]
        raise UserError(
            f"{where}: {value!r} is not a generative strategy; use one of {', '.join(generative)}"
        )
    return value


@register_strategy("hybrid")
class Hybrid(Strategy):
    """A generative strategy plus a classical policy on every batch (real and synthetic images)."""

    params = {
        "generator": Param("gan", check=_check_generator, help="a registered generative strategy"),
        "generator_params": Param(
            {}, check=lambda value, where: value, help="the generator's own params (validated against it)"
        ),
        "ratio": RATIO,
        **Classical.params,
    }

    @classmethod
    def resolve_params(cls, given, where):
        resolved = super().resolve_params(given, where)
        if not isinstance(resolved["generator_params"], dict):
            raise UserError(f"{where}.generator_params: expected a mapping of parameter: value")
        if "ratio" in resolved["generator_params"]:
            raise UserError(f"{where}.generator_params: set the ratio with hybrid's own `ratio`")
        generator_cls = STRATEGIES.get(resolved["generator"])
        resolved["generator_params"] = generator_cls.resolve_params(
            {**resolved["generator_params"], "ratio": resolved["ratio"]}, f"{where}.generator_params"
        )
        resolved["generator_params"].pop("ratio")
        return resolved

    @classmethod
    def sees_unlabelled(cls, params):
        return STRATEGIES.get(params["generator"]).sees_unlabelled(params["generator_params"])

    @classmethod
    def doubled_generator(cls, params):
        inner = STRATEGIES.get(params["generator"]).doubled_generator(params["generator_params"])
        return None if inner is None else {**params, "generator_params": inner}

    @classmethod
    def versions(cls, params):
        generator = STRATEGIES.get(params["generator"]).versions(
            {**params["generator_params"], "ratio": params["ratio"]}
        )
        return {**super().versions(params), **generator, **Classical.versions(params)}

    quick = {"generator_params": {"steps": 20}}

    def generative_part(self) -> GenerativeStrategy:
        generator_cls = STRATEGIES.get(self.values["generator"])
        return generator_cls(**self.values["generator_params"], ratio=self.values["ratio"])

    def fit(self, labelled, ctx):
        data = self.generative_part().fit(labelled, ctx)
        classical = Classical(policy=self.values["policy"], magnitude=self.values["magnitude"])
        data.batch_transform = classical.batch_transform(ctx.hflip)
        return data
