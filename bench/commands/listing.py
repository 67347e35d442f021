"""`augbench list`: what is registered (configs, data sets, strategies with their params, policies,
classifiers, executors), every config field, and with ``--columns`` the result row's columns."""

from __future__ import annotations

import configs
from bench.core.errors import UserError
from bench.core.executor import EXECUTORS
from bench.core.plugins import origin
from bench.core.schema import describe
from bench.core.strategy import STRATEGIES
from bench.data.sets import DATASETS
from bench.models.suite import CLASSIFIERS, SUITE_VERSION
from bench.protocol import columns
from bench.protocol.config import BenchConfig, load_config
from bench.protocol.registries import load_registries
from bench.run.cell import cached_dataset
from bench.run.resolution import resolution_note, validation_sizes
from bench.training.augment import POLICIES
from bench.training.objectives import OBJECTIVES


def _check_note(name: str) -> str:
    """What a bundled config's budget check can resolve, or why that cannot be said here."""
    config = load_config(name, [])
    try:
        datasets = {spec.title: cached_dataset(spec) for spec in config.datasets}
    except UserError:
        return "(its data is not on this machine)"
    return resolution_note(config, validation_sizes(config, datasets))


def print_columns() -> None:
    """The data dictionary of results.csv."""
    print("\n".join(columns.describe()))


def print_registries(plugins: tuple[str, ...] = ()) -> None:
    """Everything a config can name, with the plugins' registrations marked."""
    load_registries(plugins)

    print(
        "bundled configs (what each one's budget check can resolve at best; a run's report says what it did):"
    )
    for name in sorted(configs.bundled()):
        print(f"  {name:<22} {_check_note(name)}")
    print("data sets:   " + ", ".join(name + origin(DATASETS.get(name)) for name in DATASETS.names()))
    print("strategies:")
    for name in STRATEGIES.names():
        cls = STRATEGIES.get(name)
        needs = (
            f" [needs pip install 'augbench[{','.join(sorted(set(cls.requires.values())))}]']"
            if cls.requires
            else ""
        )
        print(f"  {name:<12} {(cls.__doc__ or '').strip().splitlines()[0]}{origin(cls)}{needs}")
        _print_params(cls.params)
    print("policies:    " + ", ".join(POLICIES.names()) + "  (compose with '+', e.g. basic+random-erasing)")
    print("objectives (losses on unlabelled images; `fixmatch`, or a hybrid's `objective`):")
    for name in OBJECTIVES.names():
        cls = OBJECTIVES.get(name)
        print(f"  {name:<12} {(cls.__doc__ or '').strip().splitlines()[0]}{origin(cls)}")
        _print_params(cls.params)
    print(f"classifiers (suite v{SUITE_VERSION}):")
    for name in CLASSIFIERS.names():
        entry = CLASSIFIERS.get(name)
        r = entry.recipe
        print(
            f"  {name:<8} {r.optimizer} lr {r.lr} wd {r.weight_decay} batch {r.batch_size}, "
            f"{r.epochs} epochs, at least {r.min_steps} steps{origin(entry.build)}"
        )
        if entry.options:
            given = [f"{o} (required)" if o in entry.required else o for o in entry.options]
            print(f"           options of its config entry ({{name: {name}, ...}}): {', '.join(given)}")
    print("executors:   " + ", ".join(EXECUTORS.names()))
    print("config fields (set in the YAML, or with --set path=value):")
    for path, default, help_text in describe(BenchConfig):
        print(f"  {path:<26} {default}\n      {help_text}")


def _print_params(params: dict) -> None:
    """A strategy's or objective's declared params, one per line."""
    for name, spec in params.items():
        bounds = f"[{spec.low}, {spec.high}]" if spec.low is not None else ", ".join(spec.choices or ())
        print(f"      {name} = {spec.default!r}  ({bounds}) {spec.help}")
