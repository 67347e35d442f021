"""Which cells the checks train, and the seeds they add. A group's budget check trains its first
seeds' cells at twice the budget (``budget_checks``); its generator check trains the same seeds with
the generator fitted alone at twice its steps (``generator_checks``). Seeds beyond the protocol's are
*check seeds*, trained for the checks alone (``Cell.as_check_seed``). Where a check reads its gain
less sharply than the plateau, ``more_check_seeds`` adds the seeds its measured spread asks for, up
to ``budget.max_check_seeds``; a gain clearly above the plateau is raised without more
(bench/run/rounds.py)."""

from __future__ import annotations

import math
from dataclasses import replace

import pandas as pd

from bench.protocol.config import BenchConfig
from bench.run.cell import Cell
from bench.run.resolution import (
    RISING,
    TRIPLE,
    UNRESOLVED,
    Z_RESOLUTION,
    Z_RISING,
    first_check_seeds,
    max_check_seeds,
)

CheckSeeds = dict[tuple[str, tuple[str, ...]], int]  # (budget|generator, group) -> the seeds its check reads


def group_of(cell: Cell) -> tuple[str, ...]:
    """A cell's (data set, regime, classifier, strategy): the group its check reads (as budget.csv)."""
    return cell.dataset.title, cell.regime_label, cell.classifier, cell.strategy.label


def _checked(
    config: BenchConfig, grid: list[Cell], n_val: dict[str, int], kind: str, seeds: CheckSeeds
) -> list[Cell]:
    """The cells that a check of ``kind`` (budget, generator) doubles: each group's first seeds
    (``check_replicates``, or as many as ``seeds`` gives the group), with the check seeds beyond the
    protocol's seeds after the grid's; none with ``budget.check: off``."""
    if config.budget.check == "off":
        return []

    def wanted(cell: Cell) -> int:
        return seeds.get((kind, group_of(cell)), first_check_seeds(config, n_val[cell.dataset.title]))

    checked = [cell for cell in grid if cell.replicate < wanted(cell)]
    firsts = [cell for cell in grid if cell.replicate == 0]
    return checked + [
        cell.as_check_seed(replicate) for cell in firsts for replicate in range(config.seeds, wanted(cell))
    ]


def budget_checks(
    config: BenchConfig, grid: list[Cell], n_val: dict[str, int], seeds: CheckSeeds | None = None
) -> list[Cell]:
    """The budget checks of a grid: for each group, its first seeds' cells at twice the budget, and
    the check seeds themselves at the budget (``seeds``: the seeds the run added to a group's
    check). ``n_val`` gives each data set's validation images."""
    checked = _checked(config, grid, n_val, "budget", seeds or {})
    return [cell for cell in checked if cell.check_seed] + [cell.budget_check() for cell in checked]


def generator_checks(
    config: BenchConfig, grid: list[Cell], n_val: dict[str, int], seeds: CheckSeeds | None = None
) -> list[Cell]:
    """The generator checks of a grid: for each group whose strategy fits a generator, the cells of
    the seeds its check reads with the generator fitted alone at twice its steps (a cached fit of its
    own, keyed like any fit), and the check seeds themselves at the budget."""
    doubled = [
        (cell, cell.generator_check()) for cell in _checked(config, grid, n_val, "generator", seeds or {})
    ]
    doubled = [(cell, check) for cell, check in doubled if check is not None]
    checks = [replace(check, stacked_replicates=()) for _, check in doubled]
    return [cell for cell, _ in doubled if cell.check_seed] + checks


def every_seed_added(config: BenchConfig, grid: list[Cell], n_val: dict[str, int]) -> CheckSeeds:
    """The worst case of added seeds: every check of every group of ``grid`` at budget.max_check_seeds."""
    return {
        (kind, group_of(cell)): max_check_seeds(config, first_check_seeds(config, n_val[cell.dataset.title]))
        for cell in grid
        for kind in ("budget", "generator")
    }


def clearly_rising(row, plateau: float) -> bool:
    """Whether a check's gain is above the plateau by a one-sided test at 5 % (its standard error from
    its resolution): more seeds could not make it converged, only the raise it calls for."""
    return row.val_gain_pp - Z_RISING * row.resolution_pp / Z_RESOLUTION >= plateau


def more_check_seeds(
    config: BenchConfig,
    budget: pd.DataFrame,
    generators: pd.DataFrame,
    asked: CheckSeeds,
    starts: dict[str, int],
) -> tuple[CheckSeeds, list[str]]:
    """One more round of added seeds: each group whose budget or generator check (budget.csv,
    generator.csv) read its gain less sharply than the plateau, and not clearly rising
    (``clearly_rising``), gets the seeds that its measured spread asks for on top of those it asked
    (the resolution falls as the square root of the seeds; a failed check cell is replaced so),
    at least one more and at most budget.max_check_seeds. A (data set, regime, classifier) whose
    raise is already decided (``decided_rising``) gets none: its budget doubles anyway. A generator
    check gets seeds only where every budget check of its triple is converged: it reads the
    classifier at the budget the run ends at, and seeds read at a budget still moving would be read
    again after a raise. ``starts``: each data set's first check seeds. Only a resolved check is
    converged, so the seeds added can err towards more training alone. ``asked``: the seeds each
    check has asked so far. Returns the seeds per check (``asked``'s where none is added) and a line
    per check that gets more."""
    plateau, more, said = config.budget.plateau, dict(asked), []
    waiting = {"budget": decided_rising(budget, plateau), "generator": _unsettled(budget)}
    for kind, table in (("budget", budget), ("generator", generators)):
        for row in table.itertuples() if len(table) else ():
            checked = int(row.checked_seeds)
            group = (*_triple(row), row.strategy)
            if (
                not checked
                or not row.resolution_pp > plateau
                or clearly_rising(row, plateau)
                or group[:3] in waiting[kind]
            ):
                continue
            before = asked.get((kind, group), starts[row.dataset])
            most = max_check_seeds(config, before)
            needed = math.ceil(checked * (row.resolution_pp / plateau) ** 2)
            wanted = min(most, before + max(1, needed - checked))
            if wanted <= before:
                continue
            more[kind, group] = wanted
            said.append(
                f"augbench: {row.dataset}/{row.regime} {row.classifier} {row.strategy}: its {kind} check "
                f"read {checked} seed(s) to within {row.resolution_pp:.1f} pp, above the {plateau:g}-pp "
                f"plateau: read again on {wanted} seeds"
            )
    return more, said


def decided_rising(budget: pd.DataFrame, plateau: float) -> set[tuple[str, str, str]]:
    """The (data set, regime, classifier) triples with a group whose check is rising by a resolved
    check or clearly (``clearly_rising``): the run raises their budget whatever more seeds would read."""
    if not len(budget):
        return set()
    rising = budget[budget["outcome"] == RISING]
    return {
        _triple(row)
        for row in rising.itertuples()
        if row.resolution_pp <= plateau or clearly_rising(row, plateau)
    }


def _unsettled(budget: pd.DataFrame) -> set[tuple[str, str, str]]:
    """The (data set, regime, classifier) triples with a budget check still rising or unresolved."""
    if not len(budget):
        return set()
    moving = budget[budget["outcome"].isin([RISING, UNRESOLVED])]
    return {_triple(row) for row in moving.itertuples()}


def _triple(row) -> tuple[str, str, str]:
    """A check table row's (data set, regime, classifier), as the added seeds' keys spell it."""
    dataset, regime, classifier = (getattr(row, column) for column in TRIPLE)
    return dataset, str(regime), classifier
