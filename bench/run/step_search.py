"""``budget.steps: auto``: per (data set, regime, classifier), a budget whose doubling is converged
by the check's rule (bench/run/resolution.py), searched down or up from the recipe's budget
(``search_steps``); cached in the run folder."""

from __future__ import annotations

import math
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from bench.core.cache import FileCache, cache_key
from bench.core.strategy import StrategyEntry
from bench.models.suite import SUITE_VERSION
from bench.protocol.config import BenchConfig
from bench.run.cell import Cell, data_of
from bench.run.resolution import (
    CONVERGED,
    RISING,
    UNRESOLVED,
    first_check_seeds,
    outcome,
    read_doubling,
    resolution_pp,
)
from bench.run.stages import train_cell, validation_accuracy

AUTO_DOUBLINGS = 8  # steps: auto compares at most this many doublings upwards, then says it found no plateau
SEARCH_VERSION = "2"  # 2: read by the check's rule (paired, resolved), from the recipe's budget down or up


def search_key(cell: Cell, budget, searched: dict[str, list[Cell]]) -> str:
    """What the search of a (data set, regime, classifier) depends on: the data, split, regime, the
    classifier and its versions, the suite, the floor, the plateau, the seeds it reads, the precision
    it trains in and, where it reads more than `none`, the strategies it reads (their cells' keys)."""
    seeds = len(next(iter(searched.values())))
    strategies = sorted(replace(cells[0], cohort_size=1).key for cells in searched.values())
    return cache_key(
        "steps-auto",
        SEARCH_VERSION,
        cell.data_hash,
        cell.split,
        cell.regime_label,
        cell.classifier,
        cell.classifier_entry.versions(),
        SUITE_VERSION,
        budget.floor,
        budget.plateau,
        seeds,
        cell.protocol.eval_points,
        *([cell.precision] if cell.precision else []),
        *(strategies if len(searched) > 1 else []),
    )


def searched_cells(cell: Cell, grid: list[Cell]) -> dict[str, list[Cell]]:
    """The cells the search of ``cell``'s (data set, regime, classifier) trains, by strategy label:
    the budget check's seeds of `none` and, with budget.search: grid, those of every strategy the
    grid has there."""
    seeds = _search_seeds(cell)
    none = replace(cell, strategy=StrategyEntry("none", "none", {}), stacked_replicates=())
    found = {"none": [replace(none, replicate=r) for r in range(seeds)]}
    if cell.protocol.budget.search == "grid":
        for other in grid:
            if other.strategy.label != "none" and other.replicate < seeds and other.triple == cell.triple:
                found.setdefault(other.strategy.label, []).append(other)
    return found


def _validation_read(cell: Cell, steps: int, device: torch.device, cache_dir: Path) -> dict:
    """``cell`` trained at ``steps`` (the run's own cell there): its validation accuracy, which
    validation images it got right, and how many there are."""
    dataset, split = data_of(cell)
    probe = replace(cell, auto_steps=((cell.classifier, steps),), cohort_size=1)
    record, model = train_cell(probe, device, cache_dir, dataset, split, "search")
    if model is None:
        return {"val_accuracy": math.nan, "val_correct": "", "n_val": len(split.val)}
    return {**validation_accuracy(model, split, device, cell.precision or None), "n_val": len(split.val)}


# a doubling's outcome for the whole triple: its least converged strategy's
_SEVERITY = {CONVERGED: 0, UNRESOLVED: 1, RISING: 2}


def search_steps(
    cell: Cell, device: torch.device, cache_dir: Path, say=print, grid: list[Cell] | None = None
) -> dict:
    """The steps ``auto`` picks for ``cell``'s (data set, regime, classifier), cached in ``cache_dir``,
    read by the budget check's rule (its seeds, paired per image, converged only where resolved) on
    `none`, or with budget.search: grid on every strategy of ``grid`` there (a doubling is as converged
    as its least converged strategy). It starts at the larger of the floor and the recipe's budget:
    where doubling that is converged, it halves while the halved budget is converged too (never below
    the floor); else it doubles until a doubling is converged, unresolved (then the run's check says
    so) or 8 doublings were tried. Returns {steps, outcome (of doubling those steps), checks: [{steps,
    doubled, strategy, gain_pp, resolution_pp, outcome}], trials: [{steps, val_accuracy}], seconds}."""
    budget = cell.protocol.budget
    searched = searched_cells(cell, grid or [])
    split = data_of(cell)[1]
    reads: dict[tuple[str, int], list[dict]] = {}

    def at(label: str, steps: int) -> list[dict]:
        if (label, steps) not in reads:
            reads[label, steps] = [_validation_read(c, steps, device, cache_dir) for c in searched[label]]
        return reads[label, steps]

    def compare_one(label: str, low: int, high: int) -> dict:
        doublings = [read_doubling(a, b) for a, b in zip(at(label, low), at(label, high))]
        gain = 100 * _mean([d.gain for d in doublings])
        resolution = resolution_pp(doublings, budget.plateau)
        said = outcome(gain, resolution, budget.plateau)
        say(
            f"augbench: steps: auto for {cell.dataset.title}/{cell.regime_label} {cell.classifier}: {label} "
            f"{gain:+.1f} pp from {low} to {high} steps (read to within {resolution:.1f} pp): {said}"
        )
        return {
            "steps": low,
            "doubled": high,
            "strategy": label,
            "gain_pp": gain,
            "resolution_pp": resolution,
            "outcome": said,
        }

    def compare(low: int, high: int) -> dict:
        return max(
            (compare_one(label, low, high) for label in searched), key=lambda c: _SEVERITY[c["outcome"]]
        )

    def search() -> dict:
        t0 = time.perf_counter()
        steps = max(budget.floor, cell.classifier_entry.training_recipe.steps(len(split.labelled)))
        checks = [compare(steps, 2 * steps)]
        if checks[-1]["outcome"] == CONVERGED:
            while steps // 2 >= budget.floor:
                checks.append(compare(steps // 2, steps))
                if checks[-1]["outcome"] != CONVERGED:
                    break
                steps //= 2
        else:
            while checks[-1]["outcome"] == RISING and len(checks) < AUTO_DOUBLINGS:
                steps *= 2
                checks.append(compare(steps, 2 * steps))
        return {
            "steps": steps,
            "outcome": next(c["outcome"] for c in reversed(checks) if c["steps"] == steps),
            "checks": checks,
            "trials": [
                {"steps": s, "strategy": label, "val_accuracy": _mean([r["val_accuracy"] for r in read])}
                for (label, s), read in sorted(reads.items(), key=lambda item: (item[0][1], item[0][0]))
            ],
            "seconds": time.perf_counter() - t0,
        }

    return FileCache(cache_dir).json_once("steps-auto", search_key(cell, budget, searched), search)


def _search_seeds(cell: Cell) -> int:
    """The seeds the search reads: those the budget check checks."""
    return first_check_seeds(cell.protocol, len(data_of(cell)[1].val))


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
        key = search_key(cell, config.budget, searched_cells(cell, grid))
        result = (
            search_steps(cell, device, cache_dir, say, grid)
            if search
            else FileCache(cache_dir).load_json("steps-auto", key)
        )
        if result is None:
            continue
        found.setdefault(where, {})[cell.classifier] = result["steps"]
        note = (
            ""
            if result["outcome"] == CONVERGED
            else f" (doubling it: {result['outcome']}; the budget check will say more)"
        )
        say(
            f"augbench: steps: auto: {where[0]}/{where[1]} {cell.classifier}: {result['steps']} steps, "
            f"searched in {result['seconds']:.0f} s{note}"
        )
    return {where: tuple(sorted(steps.items())) for where, steps in found.items()}
