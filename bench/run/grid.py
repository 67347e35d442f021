"""The grid to run, resolved in one place: a checked config becomes its cells at their budgets (the
recipe's, or what `steps: auto` found, with the budgets a run raised) and their checks. `run` and
`plan` both ask ``resolve_grid``; `tune` trains cells of its own per trial (bench/tuning)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from bench.protocol.config import BenchConfig, cohort_size, key_precision
from bench.run.cell import Cell, expand_grid
from bench.run.check_seeds import CheckSeeds, budget_checks, every_seed_added, generator_checks
from bench.run.resolution import checked_plateau
from bench.run.rounds import Budgets, Round, next_round, with_raised, worst_case_raises
from bench.run.step_search import auto_steps
from bench.run.store import RunStore

AutoSteps = dict[tuple[str, str], tuple[tuple[str, int], ...]]  # (data set, regime) -> steps per classifier


@dataclass(frozen=True)
class Grid:
    """A config's grid on one device: what its cells share (data hashes, validation sizes, the cohort
    size and key precision of the device) and the steps `auto` found (empty: the recipes')."""

    config: BenchConfig
    hashes: dict[str, str]
    n_val: dict[str, int]
    cohort: int
    precision: str
    auto: AutoSteps

    def cells(self, raised: Budgets | None = None) -> list[Cell]:
        """Every cell of the grid at its budget (with ``raised``, a run's raised budgets in place)."""
        steps = with_raised(self.auto, raised or {})
        return expand_grid(self.config, self.hashes, self.cohort, steps, self.precision)

    def cells_and_checks(
        self, raised: Budgets | None = None, seeds: CheckSeeds | None = None
    ) -> tuple[list[Cell], list[Cell]]:
        """The grid's cells and their check cells (budget checks, then generator checks, each after
        the check seeds it reads; ``seeds``: the seeds a run added to a group's check)."""
        grid, n_val = self.cells(raised), self.n_val
        checks = budget_checks(self.config, grid, n_val, seeds) + generator_checks(
            self.config, grid, n_val, seeds
        )
        return grid, list({cell.key: cell for cell in checks}.values())  # a check seed both checks read, once

    def replayed(self, store: RunStore) -> list[Cell]:
        """Every cell and check of a run's rounds (raised budgets, seeds added to checks) up to the
        first one that the folder's cell files do not hold whole (every round where they hold all),
        each once; the rounds before it replayed from those files as ``run`` would decide them."""
        config, recorded = self.config, store.cell_keys()
        plateau = checked_plateau(config)
        now: Round | None = Round({}, {})
        found: dict[str, Cell] = {}
        while now is not None:
            cells, checks = self.cells_and_checks(now.raised, now.seeds)
            found.update({cell.key: cell for cell in cells + checks})
            if any(cell.key not in recorded for cell in cells + checks):
                break
            tables = store.check_tables([c.key for c in cells], [c.key for c in checks], plateau, now.raised)
            now = next_round(config, self.n_val, *tables, now)[0]
        return list(found.values())

    def worst_case(self) -> list[Cell]:
        """Every cell and check of the run's worst case: each check reading budget.max_check_seeds
        seeds, at every budget the raises reach while every group keeps rising (each cell once)."""
        grid = self.cells()
        seeds = every_seed_added(self.config, grid, self.n_val)
        rounds = [{}, *worst_case_raises(self.config, grid)]
        cells = [cell for raised in rounds for part in self.cells_and_checks(raised, seeds) for cell in part]
        return list({cell.key: cell for cell in cells}.values())


def resolve_grid(
    config: BenchConfig,
    hashes: dict[str, str],
    n_val: dict[str, int],
    device: torch.device,
    cache_dir: Path,
    search: bool = True,
    say=None,
) -> Grid:
    """The grid of a checked config on ``device``: with `steps: auto` the steps found per data set,
    regime and classifier, searched now and cached in ``cache_dir`` (with ``search`` False only those
    already there: `plan`, and a run counting its work before it claims its folder)."""
    cohort, precision = cohort_size(config, device), key_precision(config, device)
    recipes = expand_grid(config, hashes, cohort, precision=precision)
    auto = auto_steps(config, recipes, device, cache_dir, say, search=search)
    return Grid(config, hashes, n_val, cohort, precision, auto)
