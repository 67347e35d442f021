"""The grid to run, resolved in one place: a checked config becomes its cells at their budgets (the
recipe's, or what `steps: auto` found, with the budgets a run raised) and their checks. `run` and
`plan` both ask ``resolve_grid``; `tune` trains cells of its own per trial (bench/tuning)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from bench.protocol.config import BenchConfig, cohort_size, key_precision
from bench.run.budget import Budgets, auto_steps, budget_checks, generator_checks, with_raised
from bench.run.cell import Cell, expand_grid

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

    def cells_and_checks(self, raised: Budgets | None = None) -> tuple[list[Cell], list[Cell]]:
        """The grid's cells and their check cells (budget checks, then generator checks)."""
        grid, n_val = self.cells(raised), self.n_val
        return grid, budget_checks(self.config, grid, n_val) + generator_checks(self.config, grid, n_val)


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
