"""Converged, or it does not count: the budget check and ``budget.steps: auto``, both on validation data.

- The check: each (data set, regime, classifier, strategy) group of a run also trains the cell of its
  first seed (or first two, see ``check_replicates``) at twice the budget, as cells of their own
  (same fit, initial weights and real batches; never in the tables as results). A group is
  *converged* when doubling gains less than ``budget.plateau`` percentage points of validation
  accuracy (mean over its checked seeds); every row carries its group's outcome.
- ``auto``: per (data set, regime, classifier), the smallest budget, doubling from ``budget.floor``,
  at which `none`'s validation accuracy (mean of the first two seeds) gains less than the plateau
  from one more doubling; searched once and cached in the run folder.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd
import torch

from bench.core.cache import FileCache, cache_key
from bench.core.strategy import StrategyEntry
from bench.data.sets import Dataset
from bench.models.suite import SUITE_VERSION
from bench.protocol.config import BenchConfig
from bench.run.cell import Cell, data_of, expand_grid
from bench.run.stages import train_cell

GROUP = ["dataset", "regime", "classifier", "strategy"]
AUTO_SEEDS = 2  # steps: auto averages `none` over this many first seeds
AUTO_DOUBLINGS = 8  # steps: auto stops at floor * 2**8 and says the budget did not plateau there
CONVERGED, RISING, UNCHECKED = "converged", "rising", "unchecked"
SEARCH_VERSION = "1"


def check_replicates(n_val: int, plateau: float, seeds: int) -> int:
    """How many first seeds a group's check trains at twice the budget: one where a validation
    accuracy's binomial standard error (at 90 % accuracy) is at most half the plateau (n_val >= 3,600
    images at 1 pp), so that one doubling's gain is read to within the plateau; else the first two,
    which halve the variance of the mean gain (capped at the protocol's seeds)."""
    se_pp = 100 * math.sqrt(0.9 * 0.1 / max(1, n_val))
    return min(seeds, 1 if se_pp <= plateau / 2 else 2)


def budget_checks(config: BenchConfig, grid: list[Cell], n_val: dict[str, int]) -> list[Cell]:
    """The check cells of a grid (none with ``budget.check: off``): for each group, its first seeds'
    cells at twice the budget. ``n_val`` gives each data set's validation images."""
    if config.budget.check == "off":
        return []
    return [
        cell.budget_check()
        for cell in grid
        if cell.replicate < check_replicates(n_val[cell.dataset.title], config.budget.plateau, config.seeds)
    ]


def validation_sizes(config: BenchConfig, datasets: dict[str, Dataset]) -> dict[str, int]:
    """The validation images of each data set (the same for every regime and seed)."""
    return {title: config.split.val_per_class * dataset.num_classes for title, dataset in datasets.items()}


def outcomes(rows: pd.DataFrame, checks: list[dict], plateau: float | None) -> pd.DataFrame:
    """Per group: the checked seeds, the budget and the checked budget, the mean validation gain from
    doubling (pp) and the outcome: converged, rising (the gain reached ``plateau``), or unchecked (no
    check ran, or one failed; ``plateau`` None: the check was off)."""
    base = rows.set_index("key") if len(rows) else pd.DataFrame()
    found = []
    for check in checks:
        if check.get("status") != "ok" or check.get("budget_check_of") not in base.index:
            continue
        row = base.loc[check["budget_check_of"]]
        if row["status"] != "ok":
            continue
        found.append(
            {
                **{c: row[c] for c in GROUP},
                "replicate": row["replicate"],
                "steps": row["budget_steps"],
                "check_steps": check["budget_steps"],
                "gain_pp": 100 * (check["val_accuracy"] - row["val_accuracy"]),
            }
        )
    columns = GROUP + ["checked_seeds", "budget_steps", "check_steps", "val_gain_pp", "outcome"]
    groups = rows[GROUP].drop_duplicates() if len(rows) else pd.DataFrame(columns=GROUP)
    gains = pd.DataFrame(found, columns=GROUP + ["replicate", "steps", "check_steps", "gain_pp"])
    summary = (
        gains.groupby(GROUP, sort=False)
        .agg(
            checked_seeds=("replicate", "nunique"),
            budget_steps=("steps", "first"),
            check_steps=("check_steps", "first"),
            val_gain_pp=("gain_pp", "mean"),
        )
        .reset_index()
    )
    table = groups.merge(summary, on=GROUP, how="left")
    table["checked_seeds"] = table["checked_seeds"].fillna(0).astype(int)
    table[["budget_steps", "check_steps"]] = (
        table[["budget_steps", "check_steps"]].astype(float).astype("Int64")
    )
    table["val_gain_pp"] = table["val_gain_pp"].astype(float)
    table["outcome"] = [
        UNCHECKED if plateau is None or math.isnan(g) else (CONVERGED if g < plateau else RISING)
        for g in table["val_gain_pp"].astype(float)
    ]
    return table[columns].reset_index(drop=True)


def with_outcomes(results: pd.DataFrame, table: pd.DataFrame) -> pd.DataFrame:
    """Every row with its group's outcome (``budget_check``), validation gain from doubling
    (``budget_check_gain``, pp) and checked budget (``budget_check_steps``)."""
    if results.empty:
        return results
    joined = table.rename(
        columns={
            "outcome": "budget_check",
            "val_gain_pp": "budget_check_gain",
            "check_steps": "budget_check_steps",
        }
    )
    joined = joined[GROUP + ["budget_check", "budget_check_gain", "budget_check_steps"]]
    results = results.drop(columns=[c for c in joined.columns if c not in GROUP and c in results])
    return results.merge(joined, on=GROUP, how="left")


def undertrained(table: pd.DataFrame) -> pd.DataFrame:
    """The groups that were not converged (rising or unchecked)."""
    return table[table["outcome"] != CONVERGED] if len(table) else table


def describe_groups(table: pd.DataFrame) -> str:
    """The groups of ``table`` in words, with the budget the check suggests for the rising ones."""
    parts = []
    for row in table.itertuples():
        where = f"{row.dataset}/{row.regime} {row.classifier} {row.strategy}"
        if row.outcome == RISING:
            parts.append(
                f"{where} (+{row.val_gain_pp:.1f} pp from {int(row.budget_steps)} to "
                f"{int(row.check_steps)} steps: try at least {int(row.check_steps)})"
            )
        else:
            parts.append(f"{where} (unchecked)")
    return "; ".join(parts)


# ----------------------------------------------------------------------------- steps: auto
def search_key(cell: Cell, floor: int, plateau: float) -> str:
    """What the search of a (data set, regime, classifier) depends on: the data, split, regime, the
    classifier and its versions, the suite, the floor, the plateau and the precision it trains in."""
    return cache_key(
        "steps-auto",
        SEARCH_VERSION,
        cell.data_hash,
        cell.split,
        cell.regime_label,
        cell.classifier,
        cell.classifier_entry.versions(),
        SUITE_VERSION,
        floor,
        plateau,
        cell.protocol.eval_points,
        *([cell.precision] if cell.precision else []),
    )


def _none_accuracy(cell: Cell, steps: int, device: torch.device, cache_dir: Path) -> float:
    """Validation accuracy of `none` on ``cell``'s data at ``steps`` (the run's own `none` cell there)."""
    dataset, split = data_of(cell)
    probe = replace(cell, auto_steps=((cell.classifier, steps),), cohort_size=1)
    record, _ = train_cell(probe, device, cache_dir, dataset, split, "search")
    return record["curve"][-1]["val_accuracy"] if record["status"] == "ok" else float("nan")


def search_steps(cell: Cell, device: torch.device, cache_dir: Path, say=print) -> dict:
    """The steps ``auto`` picks for ``cell``'s (data set, regime, classifier), cached in ``cache_dir``:
    the smallest budget, doubling from the floor, whose doubling gains `none` less than the plateau
    (mean over its first two seeds). Returns {steps, plateaued, trials: [{steps, val_accuracy}],
    seconds}."""
    budget = cell.protocol.budget
    none = replace(cell, strategy=StrategyEntry("none", "none", {}), stacked_replicates=())
    seeds = [replace(none, replicate=r) for r in range(min(AUTO_SEEDS, cell.protocol.seeds))]
    cache = FileCache(cache_dir)

    def trial(steps: int) -> dict:
        return {
            "steps": steps,
            "val_accuracy": _mean([_none_accuracy(s, steps, device, cache_dir) for s in seeds]),
        }

    def search() -> dict:
        t0 = time.perf_counter()
        trials = [trial(budget.floor)]
        for _ in range(AUTO_DOUBLINGS):
            before, after = trials[-1], trial(2 * trials[-1]["steps"])
            trials.append(after)
            say(
                f"augbench: steps: auto for {cell.dataset.title}/{cell.regime_label} {cell.classifier}: "
                f"none at {before['steps']} steps {100 * before['val_accuracy']:.1f}%, at {after['steps']} "
                f"{100 * after['val_accuracy']:.1f}%"
            )
            if 100 * (after["val_accuracy"] - before["val_accuracy"]) < budget.plateau:
                return {
                    "steps": before["steps"],
                    "plateaued": True,
                    "trials": trials,
                    "seconds": time.perf_counter() - t0,
                }
        return {
            "steps": trials[-1]["steps"],
            "plateaued": False,
            "trials": trials,
            "seconds": time.perf_counter() - t0,
        }

    return cache.json_once("steps-auto", search_key(cell, budget.floor, budget.plateau), search)


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def auto_steps(
    config: BenchConfig,
    grid: list[Cell],
    device: torch.device,
    cache_dir: Path,
    say=None,
    search: bool = True,
) -> dict[tuple[str, str], tuple[tuple[str, int], ...]]:
    """(data set, regime) -> the steps ``auto`` picks per classifier (empty with steps: recipe); with
    ``search`` False only those already in the cache (``plan`` reads, it does not search)."""
    if config.budget.steps != "auto":
        return {}
    say = say or (lambda line: print(line, file=sys.stderr))
    found: dict[tuple[str, str], dict[str, int]] = {}
    for cell in grid:
        where = (cell.dataset.title, cell.regime_label)
        if cell.replicate or cell.classifier in found.get(where, {}):
            continue
        key = search_key(cell, config.budget.floor, config.budget.plateau)
        result = (
            search_steps(cell, device, cache_dir, say)
            if search
            else FileCache(cache_dir).load_json("steps-auto", key)
        )
        if result is None:
            continue
        found.setdefault(where, {})[cell.classifier] = result["steps"]
        note = "" if result["plateaued"] else " (no plateau up to there: the budget check will say)"
        say(
            f"augbench: steps: auto: {where[0]}/{where[1]} {cell.classifier}: {result['steps']} steps, "
            f"searched in {result['seconds']:.0f} s{note}"
        )
    return {where: tuple(sorted(steps.items())) for where, steps in found.items()}


def grid_and_checks(
    config: BenchConfig,
    hashes: dict[str, str],
    cohort: int,
    n_val: dict[str, int],
    auto: dict | None = None,
    precision: str = "",
) -> tuple[list[Cell], list[Cell]]:
    """The grid (each cell at its budget: the recipe's, or what ``auto`` found) and its check cells."""
    grid = expand_grid(config, hashes, cohort, auto, precision)
    return grid, budget_checks(config, grid, n_val)


def read_budget(run_dir: Path) -> pd.DataFrame:
    """A run folder's budget.csv (empty where the run predates the check)."""
    path = Path(run_dir) / "budget.csv"
    if not path.is_file() or path.stat().st_size <= 1:
        return pd.DataFrame(columns=GROUP + ["outcome"])
    return pd.read_csv(path, dtype={"regime": str})


def budget_summary(table: pd.DataFrame) -> str:
    """One line on the budget check: how many groups were converged, and which were not."""
    if table.empty:
        return "budget check: no group"
    converged = (table["outcome"] == CONVERGED).sum()
    line = (
        f"budget check: {converged} of {len(table)} group(s) converged (validation gain from doubling "
        "below plateau)"
    )
    rest = undertrained(table)
    return line + (f"; not converged: {describe_groups(rest)}" if len(rest) else "")
