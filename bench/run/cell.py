"""A cell of the grid (data x regime x strategy x classifier x seed): its identity, key and seeds,
and the data it runs on."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from functools import cached_property, lru_cache

from bench.core.images import UnlabelledImages
from bench.core.keys import canonical_json, stable_hash
from bench.core.schema import identity
from bench.core.seeding import derive_seed
from bench.core.strategy import STRATEGIES, StrategyEntry
from bench.data.sets import Dataset, DatasetEntry, load_dataset
from bench.data.splits import Regime, Split, SplitSpec, make_split, regime_label
from bench.data.unlabelled import unlabelled_images, unlabelled_plain
from bench.models.suite import ClassifierEntry
from bench.protocol.config import BenchConfig
from bench.protocol.registries import load_registries
from bench.quality.settings import QualitySpec, quality_versions

CHECK_FACTOR = 2  # a budget check trains its cell at this multiple of the budget


@dataclass(frozen=True, kw_only=True)
class Cell:
    """One point of the grid. Its key hashes its coordinates and the protocol's cell-identity
    fields (see bench/core/schema.py). Build it with ``from_config``."""

    dataset: DatasetEntry
    data_hash: str
    regime: Regime
    strategy: StrategyEntry
    classifier: str
    replicate: int
    protocol: BenchConfig  # the protocol the cell belongs to
    cohort_size: int = 1  # the cells its classifier trains with as one network (bench/training/cohort.py)
    stacked_replicates: tuple[int, ...] = ()  # the replicates whose generators fit with its own as one
    # stacked model: a stacked fit (strategies/generative.py); empty: it fits alone
    auto_steps: tuple[tuple[str, int], ...] = ()  # with budget.steps: auto, the steps found per classifier of
    # its data set and regime (bench/run/step_search.py); empty: each recipe's steps times budget.scale
    budget_factor: int = 1  # CHECK_FACTOR: a budget check, its cell trained at twice the budget
    generator_factor: int = 1  # CHECK_FACTOR: a generator check, its generator fitted at twice its steps
    check_of: str = ""  # a check's (never a result): the key of the cell it doubles
    check_seed: bool = False  # a seed beyond the protocol's that a check added (``as_check_seed``)
    # the classifier's autocast where it is not its device's former default (config.key_precision)
    precision: str = ""

    @classmethod
    def from_config(
        cls,
        config: BenchConfig,
        *,
        dataset: DatasetEntry,
        data_hash: str,
        regime: Regime,
        strategy: StrategyEntry,
        classifier: str,
        replicate: int,
        cohort_size: int = 1,
    ) -> "Cell":
        """The cell; with ``cohort_size`` above 1 its classifier trains in a cohort where it groups,
        and its generator in a stacked fit of consecutive replicates where the strategy's
        generator fits so."""
        cell = cls(
            dataset=dataset,
            data_hash=data_hash,
            regime=regime,
            strategy=strategy,
            classifier=classifier,
            replicate=replicate,
            protocol=config,
        )
        generative = make_strategy(strategy).generative_part()
        first = replicate - replicate % cohort_size
        replicates = tuple(range(first, min(first + cohort_size, config.seeds)))
        return replace(
            cell,
            cohort_size=cohort_size if cell.classifier_entry.groupable else 1,
            stacked_replicates=replicates
            if len(replicates) > 1 and generative is not None and generative.fits_stacked
            else (),
        )

    @property
    def split(self) -> SplitSpec:
        return self.protocol.split

    @property
    def quality(self) -> QualitySpec:
        return self.protocol.quality

    @property
    def budget_scale(self) -> float:
        return self.protocol.budget.scale

    @property
    def eval_points(self) -> int:
        return self.protocol.eval_points

    @property
    def steps(self) -> int | None:
        """The steps ``budget.steps: auto`` found for its classifier (None: the recipe's times the scale)."""
        return dict(self.auto_steps).get(self.classifier)

    @property
    def teacher_steps(self) -> int | None:
        """The steps ``auto`` found for the `cnn` of its data set and regime, which a pseudo-label
        teacher trains for (None: the recipe's times the scale)."""
        return dict(self.auto_steps).get("cnn")

    def budget_steps(self, n_real: int) -> int:
        """The optimizer steps its classifier trains for (twice the budget in a budget check)."""
        steps = self.steps or self.classifier_entry.training_recipe.steps(n_real, self.budget_scale)
        return steps * self.budget_factor

    @property
    def triple(self) -> tuple[str, str, str]:
        """Its (data set, regime, classifier): the cells whose budget moves together, and that a
        cohort groups."""
        return self.dataset.title, self.regime_label, self.classifier

    @property
    def is_budget_check(self) -> bool:
        return self.budget_factor != 1

    @property
    def is_generator_check(self) -> bool:
        return self.generator_factor != 1

    @property
    def is_check(self) -> bool:
        """A check (of the budget or the generator) or a check seed: scored on validation images only,
        never a result, no quality stage, trained alone (``cohorts`` puts no check in a cohort)."""
        return self.is_budget_check or self.is_generator_check or self.check_seed

    def as_check_seed(self, replicate: int) -> "Cell":
        """This cell at a seed beyond the protocol's, which a check adds where its first seeds could
        not resolve the plateau: trained for the checks alone (at the budget here, doubled by a check
        of its own), its generator fitted alone; never a result."""
        return replace(self, replicate=replicate, stacked_replicates=(), check_seed=True)

    def budget_check(self) -> "Cell":
        """Its budget check: the same cell (same fit, initial weights and real batches) trained at twice
        the budget."""
        return replace(self, budget_factor=CHECK_FACTOR, check_of=self.key)

    def generator_check(self) -> "Cell | None":
        """Its generator check: the same cell (same initial weights and real batches, budget and
        classifier) with its strategy's generator fitted at twice its steps; None where the strategy
        fits no generator."""
        doubled = STRATEGIES.get(self.strategy.name).doubled_generator(self.strategy.params)
        if doubled is None:
            return None
        strategy = replace(self.strategy, params=doubled)
        return replace(self, strategy=strategy, generator_factor=CHECK_FACTOR, check_of=self.key)

    def canonical(self) -> dict:
        unlabelled = (
            {"unlabelled": unlabelled_plain(self.protocol.unlabelled)} if self.sees_unlabelled else {}
        )
        teacher = self.teacher_steps is not None and make_strategy(self.strategy).trains_teacher()
        return {
            "dataset": self.dataset.title,
            "data_hash": self.data_hash,
            "regime": self.regime_label,
            "strategy": self.strategy.name,
            "params": self.strategy.params,
            "classifier": self.classifier,
            "versions": self.versions,
            "replicate": self.replicate,
            **identity(self.protocol, "cell"),
            **unlabelled,
            **({"cohort": self.cohort_size} if self.cohort_size > 1 else {}),
            # "generator_cohort": the key's name for the stacked fit's size since before the rename
            **({"generator_cohort": len(self.stacked_replicates)} if self.stacked_replicates else {}),
            **({"steps": self.steps} if self.steps is not None else {}),
            **({"teacher_steps": self.teacher_steps} if teacher else {}),
            **({"budget_check": self.budget_factor} if self.is_budget_check else {}),
            **({"generator_check": self.generator_factor} if self.is_generator_check else {}),
            **({"check_seed": True} if self.check_seed else {}),
            **({"precision": self.precision} if self.precision else {}),
        }

    @property
    def sees_unlabelled(self) -> bool:
        """Whether the strategy's fit learns from the protocol's unlabelled images."""
        return self.protocol.unlabelled.enabled and STRATEGIES.get(self.strategy.name).sees_unlabelled(
            self.strategy.params
        )

    @property
    def is_control(self) -> bool:
        """Whether its strategy is a control of the semi-supervised protocol (``Strategy.is_control``)."""
        return self.sees_unlabelled and STRATEGIES.get(self.strategy.name).is_control(self.strategy.params)

    @property
    def fit_data(self) -> str:
        """What the strategy's fit saw: ``labelled``, or ``labelled+pool`` (``+pool:N``, ``+folder:NAME``)."""
        return f"labelled+{self.protocol.unlabelled.label}" if self.sees_unlabelled else "labelled"

    @property
    def strategy_versions(self) -> dict[str, str]:
        """Code versions the strategy's output depends on (strategy, generator, policies)."""
        return STRATEGIES.get(self.strategy.name).versions(self.strategy.params)

    @property
    def classifier_entry(self) -> ClassifierEntry:
        """The config's entry for this cell's classifier (its build, recipe and versions)."""
        return next(e for e in self.protocol.classifiers if e.label == self.classifier)

    @property
    def versions(self) -> dict[str, str]:
        """Every code version the cell's result depends on, its quality columns' too where it
        measures quality; a bump of one recomputes exactly the cells (and quality rows) that use
        that component."""
        return {
            **self.strategy_versions,
            **self.classifier_entry.versions(),
            **(quality_versions() if self.quality.enabled else {}),
        }

    @cached_property
    def key(self) -> str:
        """The hash of ``canonical()``, computed once per cell (a resume asks it of every cell often)."""
        return stable_hash(self.canonical(), 20)

    @property
    def train_seed(self) -> int:
        """Seed of the classifier's initialization, dropout and real batch order. It depends on
        neither the strategy nor quality settings nor eval points, so `none` and every strategy
        of a cell start from the same weights and see the same real batches."""
        budget = (self.budget_scale,) if self.steps is None else (self.budget_scale, self.steps)
        return derive_seed(
            "train",
            *self.fit_key_parts,
            self.classifier,
            canonical_json(self.classifier_entry.versions()),
            *budget,
        )

    @property
    def augment_seed(self) -> int:
        """Seed of the strategy's randomness during training (synthetic batches, batch transforms)."""
        return derive_seed("augment", self.fit_seed, self.classifier)

    @property
    def regime_label(self) -> str:
        return regime_label(self.regime)

    @property
    def fit_seed(self) -> int:
        """Seed of the strategy's fit and quality: the same for every classifier of the cell."""
        return derive_seed(
            "fit", *self.fit_key_parts, self.strategy.name, canonical_json(self.strategy.params)
        )

    @property
    def fit_key_parts(self) -> tuple:
        """What a strategy's fit depends on: data, split, regime, replicate (not the classifier)."""
        return (self.data_hash, canonical_json(asdict(self.split)), self.regime_label, self.replicate)

    @property
    def fit_data_parts(self) -> tuple:
        """What the fitted strategy (its generator, its quality row) depends on: ``fit_key_parts``,
        and the unlabelled images where the fit sees them."""
        return self.fit_key_parts + (
            (unlabelled_plain(self.protocol.unlabelled),) if self.sees_unlabelled else ()
        )

    @property
    def evaluator_group(self) -> tuple | None:
        """What the replicate's quality evaluator and references depend on (None without quality, and
        for a check, which measures none)."""
        return self.fit_key_parts if self.quality.enabled and not self.is_check else None

    @property
    def generator_key(self) -> str | None:
        """The cache key of the generator the strategy fits (None for a strategy without one)."""
        generative = make_strategy(self.strategy).generative_part()
        return (
            None if generative is None else generative.generator_key(self.fit_data_parts, self.stacked_size)
        )

    @property
    def generator_group(self) -> str | None:
        """What the generator stage fits once for this cell: its generator, or its stacked fit
        (named by its members' keys). None for a strategy without a generator."""
        key = self.generator_key
        if key is None or not self.stacked_replicates:
            return key
        return stable_hash([peer.generator_key for peer in self.stacked_peers()], 20)

    @property
    def stacked_size(self) -> int:
        """The generator fits that train as one with this cell's (1: alone)."""
        return len(self.stacked_replicates) or 1

    def stacked_peers(self) -> list["Cell"]:
        """The cells of the other replicates of its stacked fit, and itself, in replicate order."""
        return [replace(self, replicate=r) for r in self.stacked_replicates]

    @property
    def quality_group(self) -> tuple | None:
        """What the strategy's quality row depends on: every classifier of the cell shares it (None
        without quality, and for a check)."""
        return (
            (self.fit_data_parts, self.strategy.name, canonical_json(self.strategy.params))
            if self.quality.enabled and not self.is_check
            else None
        )

    def describe(self) -> str:
        check = (
            f" (budget check at {self.budget_factor}x)"
            if self.is_budget_check
            else f" (generator check at {self.generator_factor}x)"
            if self.is_generator_check
            else ""
        ) + (" (check seed)" if self.check_seed else "")
        return (
            f"{self.dataset.title}/{self.regime_label} {self.strategy.label} {self.classifier} "
            f"seed {self.replicate}{check}"
        )


def expand_grid(
    config: BenchConfig,
    data_hashes: dict[str, str],
    cohort_size: int = 1,
    auto_steps: dict[tuple[str, str], tuple[tuple[str, int], ...]] | None = None,
    precision: str = "",
) -> list[Cell]:
    """Every cell of the config, in a stable order, in cohorts of ``cohort_size`` where its
    classifier groups (``cohorts``); with ``auto_steps`` ((data set, regime) -> steps per classifier)
    each trains for the steps found for its own; ``precision`` from ``key_precision``."""
    return [
        replace(
            Cell.from_config(
                config,
                dataset=d,
                data_hash=data_hashes[d.title],
                regime=r,
                strategy=s,
                classifier=c,
                replicate=k,
                cohort_size=cohort_size,
            ),
            auto_steps=(auto_steps or {}).get((d.title, regime_label(r)), ()),
            precision=precision,
        )
        for d in config.datasets
        for r in config.regimes
        for s in config.strategies
        for c in config.classifier_labels
        for k in range(config.seeds)
    ]


@dataclass(frozen=True)
class Cohort:
    """Cells whose classifiers train as one grouped network (one data set, regime and classifier).
    The shared work it needs is its cells' (``CellTask.work_units``)."""

    cells: tuple[Cell, ...]

    @property
    def key(self) -> str:
        return stable_hash([cell.key for cell in self.cells], 20)

    def describe(self) -> str:
        first = self.cells[0]
        return f"{first.dataset.title}/{first.regime_label} {first.classifier} cohort of {len(self.cells)}"


def cohorts(cells: list[Cell]) -> list[Cell | Cohort]:
    """The grid's cells as work items: the cells of one data set, regime and classifier with a
    cohort size above 1 in consecutive cohorts of that size (in grid order, so a function of the
    grid alone; each at the place of its first cell), every other cell alone."""
    items: list[Cell | Cohort] = []
    filling: dict[tuple, int] = {}  # (data set, regime, classifier) -> index of its cohort being filled
    for cell in cells:
        if cell.cohort_size == 1 or cell.is_check:
            items.append(cell)
            continue
        group = cell.triple
        if group not in filling:
            filling[group] = len(items)
            items.append(Cohort(()))
        index = filling[group]
        items[index] = Cohort(items[index].cells + (cell,))
        if len(items[index].cells) == cell.cohort_size:
            del filling[group]
    return items


def cells_of(item: Cell | Cohort) -> tuple[Cell, ...]:
    """The cells of a work item: a cohort's, or the cell itself."""
    return item.cells if isinstance(item, Cohort) else (item,)


def work_items(grid: list[Cell], todo: set[str]) -> list[Cell | Cohort]:
    """The work items of ``grid`` (``cohorts``) that hold a cell whose key is in ``todo``: a cohort
    with a finished cell runs whole again, so that its members are those of the grid."""
    return [item for item in cohorts(grid) if any(cell.key in todo for cell in cells_of(item))]


def check_grid(config: BenchConfig, datasets: dict[str, Dataset]) -> None:
    """Raise UserError where a regime, the validation size or the unlabelled images ask more of a
    data set than it has (or do not fit it), or a strategy's params do not fit it, before any
    folder is written or any cell runs (the sizes are the same for every replicate)."""
    for dataset in datasets.values():
        for regime in config.regimes:
            split = make_split(dataset, regime, config.split, 0)
            unlabelled_images(config.unlabelled, dataset, split, 0)
            for i, entry in enumerate(config.strategies):
                STRATEGIES.get(entry.name).check_data(
                    entry.params,
                    split.labelled,
                    dataset.class_names,
                    f"config field strategies[{i}] ({entry.label})",
                )


@lru_cache(maxsize=4)
def cached_dataset(spec: DatasetEntry) -> Dataset:
    """The data set a spec names, loaded once per process (a worker runs many cells of it)."""
    return load_dataset(spec)


def make_strategy(entry: StrategyEntry):
    """The strategy object of a config entry, with its resolved params."""
    return STRATEGIES.get(entry.name)(**entry.params)


def granted_unlabelled(cell: Cell, dataset: Dataset, split: Split) -> UnlabelledImages | None:
    """The unlabelled images the protocol grants the cell's strategy: None unless it learns from them."""
    return (
        unlabelled_images(cell.protocol.unlabelled, dataset, split, cell.replicate)
        if cell.sees_unlabelled
        else None
    )


def data_of(cell: Cell) -> tuple[Dataset, Split]:
    """The cell's data set and split, after registering what the config's plugins provide (a worker
    process starts without them)."""
    load_registries(cell.protocol.plugins)
    dataset = cached_dataset(cell.dataset)
    return dataset, make_split(dataset, cell.regime, cell.split, cell.replicate)
