"""`hybrid`: a generative strategy composed with a classical policy, and optionally an objective on
the unlabelled pool. The generator's synthetic images join the real ones, the policy transforms
every training batch (synthetic images too), and an ``objective`` (``bench.training.objectives``)
adds its loss on the pool images beside them. Any generator x any policy (x any objective) is a
config entry, e.g. ``{name: hybrid, params: {generator: gan, policy: basic, ratio: 1}}``, or
generation on top of FixMatch, one paired comparison against `fixmatch` with the same params:
``{name: hybrid, params: {generator: vae, generator_params: {generator_data: pool}, objective:
fixmatch}}``."""

from __future__ import annotations

from bench.core.errors import UserError
from bench.core.strategy import STRATEGIES, Param, Strategy, register_strategy
from bench.training.objectives import OBJECTIVES, make_objective, objective_versions
from strategies.classical import Classical, policy_of
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
        "objective": Param(
            "",
            check=lambda value, where: value and OBJECTIVES.get(value, field=where).name,
            omit_default=True,
            help="a registered objective on the unlabelled pool (e.g. fixmatch), or '' for none",
        ),
        "objective_params": Param(
            {},
            check=lambda value, where: value,
            omit_default=True,
            help="the objective's own params (validated against it; fixmatch's as `fixmatch` names them)",
        ),
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
        objective = resolved.get("objective", "")
        given_objective = resolved.get("objective_params", {})
        if not isinstance(given_objective, dict):
            raise UserError(f"{where}.objective_params: expected a mapping of parameter: value")
        if given_objective and not objective:
            raise UserError(
                f"{where}.objective_params: given without an `objective`; name one or leave them out"
            )
        if objective:
            resolved["objective_params"] = OBJECTIVES.get(objective).resolve_params(
                given_objective, f"{where}.objective_params"
            )
        return resolved

    @classmethod
    def sees_unlabelled(cls, params):
        generator = STRATEGIES.get(params["generator"])
        return bool(params.get("objective")) or generator.sees_unlabelled(params["generator_params"])

    @classmethod
    def doubled_generator(cls, params):
        inner = STRATEGIES.get(params["generator"]).doubled_generator(params["generator_params"])
        return None if inner is None else {**params, "generator_params": inner}

    @classmethod
    def versions(cls, params):
        generator = STRATEGIES.get(params["generator"]).versions(
            {**params["generator_params"], "ratio": params["ratio"]}
        )
        objective = (
            objective_versions(params["objective"], params["objective_params"])
            if params.get("objective")
            else {}
        )
        return {**super().versions(params), **generator, **Classical.versions(params), **objective}

    quick = {"generator_params": {"steps": 20}}

    def generative_part(self) -> GenerativeStrategy:
        generator_cls = STRATEGIES.get(self.values["generator"])
        return generator_cls(**self.values["generator_params"], ratio=self.values["ratio"])

    def batch_policy(self):
        return policy_of(self.values)

    def objective_part(self, hflip: bool = False):
        objective = self.values.get("objective")
        return make_objective(objective, self.values["objective_params"], hflip) if objective else None

    def fit(self, labelled, ctx):
        data = self.generative_part().fit(labelled, ctx)
        classical = Classical(policy=self.values["policy"], magnitude=self.values["magnitude"])
        data.batch_transform = classical.batch_transform(ctx.hflip)
        data.objective = self.objective_part(ctx.hflip)
        data.unlabelled = ctx.unlabelled if data.objective is not None else None
        return data
