"""Raised budgets and the rounds of a run. Where a group's check still rises, ``run`` doubles the
budget of its whole (data set, regime, classifier), every strategy alike so that common random
numbers hold, up to ``budget.max_steps`` (``raise_budgets``). ``next_round`` decides what the run
trains next: more check seeds first (bench/run/check_seeds.py), else the raise."""

from __future__ import annotations

from typing import NamedTuple

import pandas as pd

from bench.core.errors import UserError
from bench.data.sets import Dataset
from bench.data.splits import make_split
from bench.protocol.config import BenchConfig
from bench.run.cell import Cell, data_of
from bench.run.check_seeds import CheckSeeds, more_check_seeds
from bench.run.resolution import RISING, TRIPLE, first_check_seeds

RAISE_AUTO = 4  # budget.max_steps: auto raises a budget to at most this multiple of where it started
Budgets = dict[tuple[str, str, str], tuple[int, int]]  # (data set, regime, classifier) -> (start, steps)


def max_steps(config: BenchConfig, start: int) -> int:
    """The most steps a budget that started at ``start`` is raised to (budget.max_steps)."""
    asked = config.budget.max_steps
    return start * RAISE_AUTO if asked == "auto" else int(asked)


def raise_budgets(config: BenchConfig, table: pd.DataFrame, raised: Budgets) -> tuple[Budgets, list[str]]:
    """One more raise: every (data set, regime, classifier) with a rising group gets twice its budget,
    every strategy alike (so that common random numbers hold), unless that passes budget.max_steps.
    Returns the budgets raised so far (``raised`` where nothing more can rise) and a line per
    triple saying what happened."""
    raised, said = dict(raised), []
    rising = table[table["outcome"] == RISING] if len(table) else table
    for (dataset, regime, classifier), groups in rising.groupby(TRIPLE, sort=False):
        steps = int(groups["budget_steps"].iloc[0])
        start = raised.get((dataset, regime, classifier), (steps, steps))[0]
        where = f"{dataset}/{regime} {classifier}"
        names = ", ".join(groups["strategy"])
        if 2 * steps > max_steps(config, start):
            said.append(
                f"augbench: {where}: {names} still rising at {steps} steps, and budget.max_steps "
                f"({max_steps(config, start)}) stops a raise to {2 * steps}: they stay rising"
            )
            continue
        raised[(dataset, regime, classifier)] = (start, 2 * steps)
        said.append(
            f"augbench: {where}: {names} still rising at {steps} steps: every strategy of it trains "
            f"again at {2 * steps} (and is checked at {4 * steps})"
        )
    return raised, said


class Round(NamedTuple):
    """What a run trains next: its raised budgets and the seeds added to its groups' checks."""

    raised: Budgets
    seeds: CheckSeeds


def next_round(
    config: BenchConfig,
    n_val: dict[str, int],
    budget: pd.DataFrame,
    generators: pd.DataFrame,
    now: Round,
) -> tuple[Round | None, list[str]]:
    """After a round of the run (its budget.csv and generator.csv): first more seeds for the checks
    that did not resolve the plateau (``more_check_seeds``), else the budgets still rising raised
    (``raise_budgets``); None where neither is left. Also the lines that say so. The checks of a
    raised (data set, regime, classifier) start again at their first seeds: the spread at the new
    budget, not the one read at the old, decides the seeds they add, and a budget that keeps rising
    is raised again without reading the old budget's seed count first. ``n_val``: each data set's
    validation images."""
    starts = {title: first_check_seeds(config, n) for title, n in n_val.items()}
    seeds, said = more_check_seeds(config, budget, generators, now.seeds, starts)
    if seeds != now.seeds:
        return Round(now.raised, seeds), said
    raised, said = raise_budgets(config, budget, now.raised)
    if raised == now.raised:
        return None, said
    moved = {tuple(map(str, triple)) for triple, steps in raised.items() if now.raised.get(triple) != steps}
    return Round(raised, {check: n for check, n in now.seeds.items() if check[1][:3] not in moved}), said


def worst_case_raises(config: BenchConfig, grid: list[Cell]) -> list[Budgets]:
    """The raised budgets of the worst case, one per round of the run: every (data set, regime,
    classifier) of ``grid`` still rising after each raise, doubled until budget.max_steps stops it."""
    if config.budget.check == "off":
        return []
    starts: dict[tuple[str, str, str], int] = {}
    for cell in grid:
        triple = cell.triple
        if triple not in starts:
            starts[triple] = cell.budget_steps(len(data_of(cell)[1].labelled))
    rounds: list[Budgets] = []
    raised: Budgets = {}
    while True:
        more = {
            triple: (start, 2 * raised.get(triple, (start, start))[1])
            for triple, start in starts.items()
            if 2 * raised.get(triple, (start, start))[1] <= max_steps(config, start)
        }
        if not more:
            return rounds
        raised = {**raised, **more}
        rounds.append(raised)


def with_raised(
    auto: dict[tuple[str, str], tuple[tuple[str, int], ...]], raised: Budgets
) -> dict[tuple[str, str], tuple[tuple[str, int], ...]]:
    """The steps per (data set, regime) and classifier that the grid trains at: ``auto``'s, with the
    raised budgets in their place."""
    steps = {where: dict(found) for where, found in auto.items()}
    for (dataset, regime, classifier), (_, now) in raised.items():
        steps.setdefault((dataset, regime), {})[classifier] = now
    return {where: tuple(sorted(found.items())) for where, found in steps.items()}


def check_max_steps(config: BenchConfig, datasets: dict[str, Dataset]) -> None:
    """Refuse a budget.max_steps below a classifier's budget before any raise (its recipe's steps
    times budget.scale on the largest labelled set of the protocol; with steps: auto, the floor)."""
    if config.budget.max_steps == "auto":
        return
    starts: dict[str, int] = {}
    for dataset in datasets.values():
        for regime in config.regimes:
            n_real = len(make_split(dataset, regime, config.split, 0).labelled)
            for entry in config.classifiers:
                steps = (
                    config.budget.floor
                    if config.budget.steps == "auto"
                    else entry.training_recipe.steps(n_real, config.budget.scale)
                )
                starts[entry.label] = max(starts.get(entry.label, 0), steps)
    for classifier, steps in starts.items():
        if int(config.budget.max_steps) < steps:
            raise UserError(
                f"config field budget.max_steps: {config.budget.max_steps} is below the budget of "
                f"{classifier} ({steps} steps); give at least {steps} (that budget itself never raises)"
            )
