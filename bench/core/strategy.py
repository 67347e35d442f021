"""The strategy contract: declared hyperparameters, a fit on a cell's labelled images, and the
training data it hands the trainer. Strategies register by name in ``STRATEGIES``."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar

import torch

from bench.core.errors import UserError
from bench.core.images import ImageSet, UnlabelledImages
from bench.core.registry import Registry
from bench.core.schema import as_list, check_plain, named_entry

# (images float (N,C,H,W) in [0,1], soft labels (N,K), generator) -> (images, soft labels)
BatchTransform = Callable[[torch.Tensor, torch.Tensor, torch.Generator], tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class Param:
    """A strategy hyperparameter: its default, valid range or choices, and the tuning space.

    ``low``/``high`` bound numbers (inclusive); ``choices`` lists valid strings, unless ``check``
    validates them (e.g. composed policies), in which case ``choices`` is only the tuning space.
    Params with ``tune=True`` form the strategy's search space.
    """

    default: Any
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] | None = None
    log: bool = False
    check: Callable[[Any, str], Any] | None = None
    help: str = ""
    tune: bool = False  # part of the strategy's search space for `augbench tune`
    names_files: bool = False  # the value is a path to images (the tests hand it a file of theirs)
    omit_default: bool = False  # at its default it is left out of the resolved params, so that the keys
    # of configs written before the param existed stay as they were

    def validate(self, value: Any, where: str) -> Any:
        if self.check is not None:
            return self.check(value, where)
        return check_plain(value, where, self.default, self.choices, self.low, self.high)


def resolve_declared(specs: dict[str, Param], given: dict[str, Any], where: str, what: str) -> dict[str, Any]:
    """``given`` against the declared ``specs`` of ``what`` (a strategy, an objective): defaults
    filled in, every value validated, those at an ``omit_default`` default left out; an unknown
    name raises UserError."""
    unknown = sorted(set(given) - set(specs))
    if unknown:
        known = ", ".join(sorted(specs)) or "(none)"
        raise UserError(f"{where}: unknown parameter(s) {', '.join(unknown)} for {what}; known: {known}")
    resolved = {
        name: spec.validate(given.get(name, spec.default), f"{where}.{name}") for name, spec in specs.items()
    }
    return {
        name: value
        for name, value in resolved.items()
        if not (specs[name].omit_default and value == specs[name].default)
    }


@dataclass(frozen=True)
class FitContext:
    """Everything a strategy's fit may use besides the labelled images."""

    device: torch.device
    seed: int
    num_classes: int
    hflip: bool  # the data set allows horizontal flips
    cache_dir: Path | None = None
    cache_key_parts: tuple = ()  # data content hash, split, regime, replicate (and the unlabelled images
    # where granted): what the fit depends on
    class_names: tuple[str, ...] = ()  # the data set's, where known
    unlabelled: UnlabelledImages | None = None  # granted only to a strategy that sees_unlabelled
    budget_scale: float = 1.0  # the protocol's budget.scale (for a model a fit trains by a suite recipe)
    teacher_steps: int | None = None  # with budget.steps: auto, the steps found for the teacher's `cnn`
    val: ImageSet | None = None  # the validation images, labelled: for choices made on validation data only
    # a stacked fit (strategies/generative.py): the cache_key_parts of the fits whose generators
    # train with this one's as one stacked model (this one's among them; empty: alone), and what
    # loads their (labelled images, context)
    stacked_parts: tuple[tuple, ...] = ()
    stacked_fits: Callable[[], list[tuple[ImageSet, "FitContext"]]] | None = None

    @property
    def stacked_size(self) -> int:
        """The fits in its stacked fit (1: alone)."""
        return len(self.stacked_parts) or 1


@dataclass
class TrainingData:
    """What a strategy hands the trainer: real images, synthetic labelled images, a batch transform,
    and unlabelled images with an objective on them (``bench.training.objectives``) that the one
    training loop adds to the supervised loss."""

    real: ImageSet
    synthetic: ImageSet | None = None
    batch_transform: BatchTransform | None = None
    unlabelled: UnlabelledImages | None = None
    objective: Any = None  # an Objective (bench.training.objectives) on ``unlabelled``, or None
    info: dict[str, Any] = field(default_factory=dict)  # extra result columns (generator steps, ...)
    synthetic_kind: str = "generated"  # what the synthetic images are: generated, or pseudo-labelled (real)
    # draws n class-balanced labelled images from the strategy's generator (generative strategies)
    sampler: Callable[[int, torch.Generator], ImageSet] | None = None

    @property
    def n_synthetic(self) -> int:
        """How many synthetic images join the real ones."""
        return 0 if self.synthetic is None else len(self.synthetic)


class Strategy:
    """Base class: subclasses set ``params`` and implement ``fit``; register with ``register_strategy``."""

    name: ClassVar[str] = ""
    version: ClassVar[str] = "1"  # bump when the strategy's code changes what it produces
    params: ClassVar[dict[str, Param]] = {}
    requires: ClassVar[
        dict[str, str]
    ] = {}  # optional module it imports -> the augbench extra that installs it
    quick: ClassVar[dict[str, Any]] = {}  # params that make a fit take a moment (the test suite's runs)

    def __init__(self, **params: Any):
        self.values = params  # the resolved param values

    def value(self, name: str) -> Any:
        """A param's value, its default where the resolved params leave it out (``omit_default``)."""
        return self.values.get(name, self.params[name].default)

    @classmethod
    def sees_unlabelled(cls, params: dict[str, Any]) -> bool:
        """Whether a fit with these params learns from the protocol's unlabelled images (only then
        are they granted, in ``FitContext.unlabelled``, and only then are they part of its keys)."""
        return False

    @classmethod
    def check_data(
        cls, params: dict[str, Any], labelled: ImageSet, class_names: tuple[str, ...], where: str
    ) -> None:
        """Raise UserError where these params cannot work with a data set whose labelled images
        (of one regime) are ``labelled`` (e.g. files that do not fit it). Called for every data set
        and regime before any folder is written or any cell runs."""

    @classmethod
    def missing_modules(cls) -> list[str]:
        """The optional modules in ``requires`` that are not installed."""
        return [module for module in cls.requires if importlib.util.find_spec(module) is None]

    @classmethod
    def resolve_params(cls, given: dict[str, Any], where: str) -> dict[str, Any]:
        """Defaults filled in, every value validated; unknown names or a missing optional module raise
        UserError."""
        missing = cls.missing_modules()
        if missing:
            extras = ",".join(sorted({cls.requires[m] for m in missing}))
            raise UserError(
                f"{where}: strategy {cls.name!r} needs {', '.join(missing)}; install it with "
                f"pip install 'augbench[{extras}]' (or pip install {' '.join(missing)})"
            )
        return resolve_declared(cls.params, given, where, f"strategy {cls.name!r}")

    @classmethod
    def versions(cls, params: dict[str, Any]) -> dict[str, str]:
        """The code versions the strategy's output depends on, by component (``kind:name``).
        Subclasses that use other versioned components (a generator, a policy) add them."""
        return {f"strategy:{cls.name}": cls.version}

    @classmethod
    def search_space(cls) -> dict[str, Param]:
        return {name: spec for name, spec in cls.params.items() if spec.tune}

    def fit(self, labelled: ImageSet, ctx: FitContext) -> TrainingData:
        raise NotImplementedError

    @classmethod
    def doubled_generator(cls, params: dict[str, Any]) -> dict[str, Any] | None:
        """Its params with its generator fitted for twice the steps (the generator check of
        bench/run/check_seeds.py), or None where it fits no generator."""
        return None

    @classmethod
    def is_control(cls, params: dict[str, Any]) -> bool:
        """Whether it is a control of the semi-supervised protocol: it learns from the unlabelled
        images without generating any (pseudo-label, fixmatch); a generator that saw the same images
        is credited with a gain only where it beats every control."""
        return False

    def objective_part(self, hflip: bool = False) -> Any:
        """The objective on unlabelled images its training adds (bench.training.objectives), if any,
        for a data set with(out) horizontal flips (`augbench plan` costs it)."""
        return None

    def batch_policy(self) -> tuple[str, float] | None:
        """The classical policy (names joined by '+', magnitude) its training applies to every batch,
        if any (for `augbench plan`)."""
        return None

    def generative_part(self) -> "Strategy | None":
        """The generative strategy whose fitted generator this one uses, if any (for `augbench plan`)."""
        return None

    def synthetic_count(self, n_real: int) -> int:
        """The images its fit adds to the ``n_real`` labelled ones (generated, or pool images with a
        teacher's labels: at most this many where the teacher is sure of fewer). Its fit makes them
        by this method, and `augbench plan` costs them by it; 0: none."""
        generative = self.generative_part()
        return 0 if generative is None else generative.synthetic_count(n_real)

    def trains_teacher(self) -> bool:
        """Whether its fit needs the pseudo-label teacher of its data (strategies/teacher.py)."""
        generative = self.generative_part()
        return generative is not None and generative.trains_teacher()


STRATEGIES: Registry = Registry("strategy", "strategies")


def register_strategy(name: str):
    """Class decorator: registers a Strategy subclass under ``name``."""
    return STRATEGIES.register_class(name)


@dataclass(frozen=True)
class StrategyEntry:
    """One strategy column of the grid: a registered strategy with resolved params and a label."""

    name: str
    label: str
    params: dict[str, Any]


def _strategy(item: Any, where: str) -> StrategyEntry:
    item = named_entry(item, where, "strategy", ("name", "params", "label"))
    cls = STRATEGIES.get(item["name"], field=f"config field {where}")
    given = item.get("params") or {}
    if not isinstance(given, dict):
        raise UserError(f"config field {where}.params: expected a mapping of parameter: value")
    params = cls.resolve_params(given, f"config field {where}.params")
    return StrategyEntry(item["name"], str(item.get("label") or item["name"]), params)


def parse_strategies(value: Any, where: str) -> tuple[StrategyEntry, ...]:
    """The `strategies` field: names or entries with params and a label; a label used twice is
    refused (the same strategy at other params needs its own label)."""
    entries = tuple(_strategy(s, f"{where}[{i}]") for i, s in enumerate(as_list(value, where)))
    labels = [s.label for s in entries]
    duplicated = sorted({label for label in labels if labels.count(label) > 1})
    if duplicated:
        raise UserError(
            f"config field {where}: label(s) {', '.join(duplicated)} used twice; give each "
            "entry its own `label`"
        )
    return entries
