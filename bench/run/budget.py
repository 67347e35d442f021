"""Converged, or it does not count: the budget check and ``budget.steps: auto``, both on validation data.

- The check: each (data set, regime, classifier, strategy) group of a run also trains the cells of
  its first seeds (``check_replicates``) at twice the budget, as cells of their own (same fit,
  initial weights and real batches; never in the tables as results). Each seed's 1x and 2x models
  are paired image by image on the validation images (``read_doubling``); the group's gain is the
  mean over its checked seeds and its *resolution* the gain the check had 80 % power to see
  (``resolution_pp``). Converged: gain below ``budget.plateau`` and resolution at most the plateau;
  rising: gain at or above it; unresolved: neither. Every row carries its group's outcome.
- Added seeds: where a group's check reads its gain less sharply than the plateau (resolution above
  it), ``run`` adds the seeds its measured spread asks for, up to ``budget.max_check_seeds``, and
  reads it again (``more_check_seeds``); seeds beyond the protocol's are *check seeds*, trained for
  the checks alone (``Cell.as_check_seed``). The seeds a check adds follow the spread it measured;
  a gain clearly above the plateau is raised without more.
- Raised budgets: where a group still rises, ``run`` doubles its triple's budget (``raise_budgets``).
- The generator check: the same seeds' cells with the generator fitted at twice its steps (its
  seeds added by the same rule).
- ``auto``: per (data set, regime, classifier), a budget whose doubling is converged by the same
  rule, searched down or up from the recipe's budget (``search_steps``); cached in the run folder.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from statistics import NormalDist
from typing import NamedTuple

import pandas as pd
import torch

from bench.core.cache import FileCache, cache_key
from bench.core.errors import UserError
from bench.core.strategy import StrategyEntry
from bench.data.sets import Dataset
from bench.data.splits import make_split
from bench.models.suite import SUITE_VERSION
from bench.protocol.config import MOST_CHECK_SEEDS, BenchConfig
from bench.run.cell import Cell, data_of
from bench.run.stages import train_cell, validation_accuracy
from bench.training.metrics import read_correct_bits

TRIPLE = ["dataset", "regime", "classifier"]  # the cells whose budget moves together
GROUP = [*TRIPLE, "strategy"]
AUTO_DOUBLINGS = 8  # steps: auto compares at most this many doublings upwards, then says it found no plateau
CONVERGED, RISING, UNRESOLVED, UNCHECKED = "converged", "rising", "unresolved", "unchecked"
SEARCH_VERSION = "2"  # 2: read by the check's rule (paired, resolved), from the recipe's budget down or up
# a check's resolution: the gain a one-sided test at 5 % would see with 80 % power
Z_RESOLUTION = NormalDist().inv_cdf(0.95) + NormalDist().inv_cdf(0.80)
Z_RISING = NormalDist().inv_cdf(0.95)  # a gain this many standard errors above the plateau: clearly rising


# ----------------------------------------------------------------------------- resolution
@dataclass(frozen=True)
class Doubling:
    """What one seed's check read: the gain in validation accuracy from doubling (a fraction), the
    per-image variance of that gain, the validation images, and whether the two models were paired
    image by image (else the variance is that of two independent accuracies)."""

    gain: float
    variance: float
    n: int
    paired: bool


def read_doubling(base: dict, check: dict) -> Doubling:
    """The doubling of one seed, from its row and its check's row: paired on the same validation
    images where both carry ``val_correct`` (the per-image difference, McNemar-style), else unpaired."""
    n = int(base.get("n_val") or check.get("n_val") or 0)
    bits = base.get("val_correct"), check.get("val_correct")
    if n and all(isinstance(b, str) and b for b in bits):
        diff = read_correct_bits(bits[1], n).astype(float) - read_correct_bits(bits[0], n).astype(float)
        return Doubling(float(diff.mean()), float(diff.var(ddof=1)) if n > 1 else math.inf, n, True)
    p1, p2 = float(base["val_accuracy"]), float(check["val_accuracy"])
    variance = p1 * (1 - p1) + p2 * (1 - p2)
    return Doubling(p2 - p1, variance, max(n, 1), False)


def resolution_pp(doublings: list[Doubling], plateau: float) -> float:
    """The smallest mean gain (pp) the check had 80 % power to see with a one-sided test at 5 %,
    from the seeds' doublings pooled (their mean gain's standard error). Each seed's variance is at
    least that of a gain of ``plateau`` made by images turning right alone, p(1-p): a check whose
    two models happened to agree on every image still had to see a plateau-sized gain on n images."""
    if not doublings:
        return math.nan
    floor = _binary_variance(plateau / 100)
    total = sum(max(d.variance, floor) / d.n for d in doublings)
    return 100 * Z_RESOLUTION * math.sqrt(total) / len(doublings)


def best_resolution_pp(n_val: int, seeds: int, plateau: float) -> float:
    """The resolution of a check of ``seeds`` seeds on ``n_val`` images at its best: the two models
    of each seed differing only where the doubled one gained (no check of that size resolves finer)."""
    return resolution_pp([Doubling(0.0, 0.0, max(n_val, 1), True)] * seeds, plateau)


def _binary_variance(p: float) -> float:
    return p * (1 - p)


def outcome(gain_pp: float, resolution: float, plateau: float | None) -> str:
    """converged (gain below the plateau, read by a check that resolves the plateau), rising (gain at
    or above it), unresolved (neither: the check could not tell), unchecked (no check)."""
    if plateau is None or math.isnan(gain_pp):
        return UNCHECKED
    if gain_pp >= plateau:
        return RISING
    return CONVERGED if resolution <= plateau else UNRESOLVED


AUTO_CHECK_SEEDS = 16  # budget.max_check_seeds: auto; a check adds seeds up to this many
CheckSeeds = dict[tuple[str, tuple[str, ...]], int]  # (budget|generator, group) -> the seeds its check reads


def check_replicates(n_val: int, plateau: float, seeds: int, asked: str = "auto") -> int:
    """How many first seeds a group's check trains at twice the budget (at most the protocol's):
    ``asked`` (budget.check_seeds), or with auto the fewest, at least 2, whose best resolution
    (``best_resolution_pp``) is at most the plateau."""
    if asked != "auto":
        return min(seeds, int(asked))
    wanted = 2
    while wanted < seeds and best_resolution_pp(n_val, wanted, plateau) > plateau:
        wanted += 1
    return min(seeds, wanted)


def first_check_seeds(config: BenchConfig, n_val: int) -> int:
    """The seeds each group's check starts with on a data set of ``n_val`` validation images."""
    budget = config.budget
    return check_replicates(n_val, budget.plateau, config.seeds, budget.check_seeds)


def checked_plateau(config: BenchConfig) -> float | None:
    """The plateau the checks read against (None: budget.check is off)."""
    return config.budget.plateau if config.budget.check == "on" else None


def max_check_seeds(config: BenchConfig, start: int) -> int:
    """The most seeds a group's check reads (budget.max_check_seeds), never fewer than it starts with."""
    asked = config.budget.max_check_seeds
    return max(start, AUTO_CHECK_SEEDS if asked == "auto" else int(asked))


def check_resolvable(config: BenchConfig, n_val: dict[str, int]) -> None:
    """Refuse a plateau that the check can never resolve on a data set's validation images, even with
    the most seeds it may read (budget.max_check_seeds) and two models that differ only where one
    gained, and a budget.max_check_seeds below the seeds a check starts with (UserError naming the
    field and what would do)."""
    budget = config.budget
    if budget.check == "off":
        return
    plateau = budget.plateau
    for title, n in n_val.items():
        start = first_check_seeds(config, n)
        if budget.max_check_seeds != "auto" and int(budget.max_check_seeds) < start:
            raise UserError(
                f"config field budget.max_check_seeds: {budget.max_check_seeds} is below the {start} seed(s) "
                f"each check starts with on {title} (budget.check_seeds: {budget.check_seeds}); give at "
                f"least {start} (as many: never add seeds)"
            )
        seeds = max_check_seeds(config, start)
        best = best_resolution_pp(n, seeds, plateau)
        if best > plateau:
            raise UserError(
                f"config field budget.plateau: {plateau:g} pp cannot be resolved on {title}'s {n} validation "
                f"images with {seeds} checked seed(s): at best the check sees gains of {best:.1f} pp. Raise "
                f"budget.plateau to at least {math.ceil(10 * best) / 10:g}, split.val_per_class to at least "
                f"{_val_per_class_for(n, seeds, plateau, config)}, or the seeds checked "
                "(budget.max_check_seeds), or set budget.check: off (the leaderboard refuses unchecked runs)"
            )


def resolution_note(config: BenchConfig, n_val: dict[str, int]) -> str:
    """What a protocol's budget check can resolve at best, per data set (``n_val``: its validation
    images), in words: checked seeds, images, best resolution and the plateau."""
    if config.budget.check == "off":
        return "budget check off"
    plateau, parts = config.budget.plateau, []
    for title, n in n_val.items():
        seeds = first_check_seeds(config, n)
        best = best_resolution_pp(n, seeds, plateau)
        most = max_check_seeds(config, seeds)
        added = f" (up to {most} where that first read does not resolve it)" if most > seeds else ""
        parts.append(
            f"{title}: {seeds} checked seed(s) on {n} validation images resolve {best:.1f} pp at best{added}"
        )
    return f"plateau {plateau:g} pp; " + "; ".join(parts)


def _val_per_class_for(n: int, seeds: int, plateau: float, config: BenchConfig) -> int:
    """The validation images per class at which the best check of ``seeds`` seeds resolves ``plateau``."""
    per_class = config.split.val_per_class
    classes = max(1, n // max(1, per_class))
    while best_resolution_pp(per_class * classes, seeds, plateau) > plateau:
        per_class += 1
    return per_class


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
    config: BenchConfig, budget: pd.DataFrame, generators: pd.DataFrame, now: "Round", starts: dict[str, int]
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
    converged, so the seeds added can err towards more training alone. Returns the seeds per check
    (``now.seeds`` where none is added) and a line per check that gets more."""
    plateau, more, said = config.budget.plateau, dict(now.seeds), []
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
            asked = now.seeds.get((kind, group), starts[row.dataset])
            most = max_check_seeds(config, asked)
            needed = math.ceil(checked * (row.resolution_pp / plateau) ** 2)
            wanted = min(most, asked + max(1, needed - checked))
            if wanted <= asked:
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


def validation_sizes(config: BenchConfig, datasets: dict[str, Dataset]) -> dict[str, int]:
    """The validation images of each data set (the same for every regime and seed)."""
    return {title: config.split.val_per_class * dataset.num_classes for title, dataset in datasets.items()}


BUDGET_COLUMNS = GROUP + [
    "checked_seeds",
    "start_steps",
    "budget_steps",
    "check_steps",
    "val_gain_pp",
    "resolution_pp",
    "paired",
    "outcome",
]


def _read_checks(rows: pd.DataFrame, checks: list[dict], link: str) -> dict[tuple, list]:
    """Group -> [(row, check, Doubling)] for each finished check whose ``link`` names a finished row
    (of the grid, or a check seed's)."""
    links = ("budget_check_of", "generator_check_of")
    seeds = pd.DataFrame([c for c in checks if c.get("check_seed") and not any(c.get(k) for k in links)])
    base = pd.concat([rows, seeds]) if len(seeds) else rows
    base = base.set_index("key") if len(base) else pd.DataFrame()
    found: dict[tuple, list] = {}
    for check in checks:
        if check.get("status") != "ok" or check.get(link) not in base.index:
            continue
        row = base.loc[check[link]]
        if row["status"] != "ok":
            continue
        group = tuple(row[c] for c in GROUP)
        found.setdefault(group, []).append((row, check, read_doubling(row.to_dict(), check)))
    return found


def _decided(read: list, plateau: float | None) -> dict:
    """A group's checked seeds, mean gain (pp), resolution (pp), pairing and outcome."""
    doublings = [d for _, _, d in read]
    gain = 100 * sum(d.gain for d in doublings) / len(doublings) if doublings else math.nan
    resolution = resolution_pp(doublings, plateau) if doublings and plateau else math.nan
    return {
        "checked_seeds": len({row["replicate"] for row, _, _ in read}),
        "val_gain_pp": gain,
        "resolution_pp": resolution,
        "paired": bool(doublings) and all(d.paired for d in doublings),
        "outcome": outcome(gain, resolution, plateau),
    }


def _typed(table: list[dict], columns: list[str], steps: list[str]) -> pd.DataFrame:
    frame = pd.DataFrame(table, columns=columns)
    frame[steps] = frame[steps].astype(float).astype("Int64")
    frame[["val_gain_pp", "resolution_pp"]] = frame[["val_gain_pp", "resolution_pp"]].astype(float)
    frame["checked_seeds"] = frame["checked_seeds"].astype(int)
    return frame


def outcomes(
    rows: pd.DataFrame, checks: list[dict], plateau: float | None, raised: "Budgets | None" = None
) -> pd.DataFrame:
    """Per group: the checked seeds, the budget (and ``start_steps``, where the run started it before
    raising it: ``raised``) and the checked budget, the mean validation gain from doubling (pp), the
    check's resolution (pp, ``resolution_pp``), whether its seeds were read paired, and the outcome
    (``outcome``; ``plateau`` None: the check was off)."""
    found = _read_checks(rows, checks, "budget_check_of")
    groups = rows[GROUP].drop_duplicates() if len(rows) else pd.DataFrame(columns=GROUP)
    table = []
    for group in groups.itertuples(index=False):
        read = found.get(tuple(group), [])
        steps = read[0][0]["budget_steps"] if read else None
        decided = _decided(read, plateau)
        table.append(
            {
                **dict(zip(GROUP, group)),
                **decided,
                "start_steps": (raised or {}).get(tuple(group)[:3], (steps,))[0],
                "budget_steps": steps,
                "check_steps": read[0][1]["budget_steps"] if read else None,
            }
        )
    return _typed(table, BUDGET_COLUMNS, ["start_steps", "budget_steps", "check_steps"])


GENERATOR_COLUMNS = GROUP + [
    "checked_seeds",
    "generator_steps",
    "check_generator_steps",
    "val_gain_pp",
    "resolution_pp",
    "paired",
    "outcome",
    "fit_seconds_doubled",
]


def generator_outcomes(rows: pd.DataFrame, checks: list[dict], plateau: float | None) -> pd.DataFrame:
    """Per group whose strategy fits a generator (its rows carry ``generator_steps``): the generator
    check's checked seeds, the generator's steps and the doubled ones, the mean validation gain of
    the classifier from doubling them (pp), the resolution, the outcome (as for the budget check)
    and what a doubled fit took (``fit_seconds_doubled``: the longest, as the fit recorded it, also
    where a check cell loaded it from the cache)."""
    found = _read_checks(rows, checks, "generator_check_of")
    if rows.empty or "generator_steps" not in rows:
        return _typed([], GENERATOR_COLUMNS, ["generator_steps", "check_generator_steps"])
    generative = rows[rows["generator_steps"].notna()]
    table = []
    for group in generative[GROUP].drop_duplicates().itertuples(index=False):
        read = found.get(tuple(group), [])
        fits = [c.get("generator_fit_seconds") for _, c, _ in read if c.get("generator_fit_seconds")]
        steps = generative[(generative[GROUP] == pd.Series(dict(zip(GROUP, group)))).all(axis=1)]
        table.append(
            {
                **dict(zip(GROUP, group)),
                **_decided(read, plateau),
                "generator_steps": steps["generator_steps"].iloc[0],
                "check_generator_steps": read[0][1].get("generator_steps") if read else None,
                "fit_seconds_doubled": max(fits) if fits else math.nan,
            }
        )
    return _typed(table, GENERATOR_COLUMNS, ["generator_steps", "check_generator_steps"])


def with_outcomes(results: pd.DataFrame, table: pd.DataFrame, generators: pd.DataFrame) -> pd.DataFrame:
    """Every row with its group's budget check (``budget_check``: the outcome, ``_gain`` and
    ``_resolution`` in pp, ``_steps``: the doubled budget) and, where its strategy fits a generator,
    its generator check (``generator_check``, ``_gain``, ``_resolution``)."""
    if results.empty:
        return results
    for frame, prefix, extra in (
        (table, "budget_check", {"check_steps": "budget_check_steps"}),
        (generators, "generator_check", {}),
    ):
        names = {"outcome": prefix, "val_gain_pp": f"{prefix}_gain", "resolution_pp": f"{prefix}_resolution"}
        joined = frame.rename(columns={**names, **extra})[GROUP + list(names.values()) + list(extra.values())]
        results = results.drop(columns=[c for c in joined.columns if c not in GROUP and c in results])
        results = results.merge(joined, on=GROUP, how="left")
    return results


def undertrained(table: pd.DataFrame) -> pd.DataFrame:
    """The groups that were not converged (rising, unresolved or unchecked)."""
    return table[table["outcome"] != CONVERGED] if len(table) else table


class CheckFacts(NamedTuple):
    """What the words on a check need of its protocol: the plateau (pp) and the validation images
    per class."""

    plateau: float = 1.0
    val_per_class: int = 0

    @classmethod
    def of(cls, config: dict | BenchConfig | None) -> "CheckFacts":
        """From a config, or a run folder's resolved config.yaml (a dict); defaults without one."""
        if config is None:
            return cls()
        if isinstance(config, BenchConfig):
            return cls(config.budget.plateau, config.split.val_per_class)
        budget, split = config.get("budget") or {}, config.get("split") or {}
        return cls(float(budget.get("plateau", cls().plateau)), int(split.get("val_per_class", 0)))


def what_resolves(row, facts: CheckFacts) -> str:
    """What would resolve an unresolved group's check at the plateau, from the spread it measured:
    more checked seeds (the run adds them up to budget.max_check_seeds), a larger validation set,
    or a larger plateau (the resolution falls as the square root of either count)."""
    factor = (row.resolution_pp / facts.plateau) ** 2
    seeds = math.ceil(row.checked_seeds * factor)
    more = f"budget.max_check_seeds: {seeds}, or " if seeds <= MOST_CHECK_SEEDS else ""
    return (
        f"{more}split.val_per_class: {math.ceil(facts.val_per_class * factor)}, or budget.plateau: "
        f"{math.ceil(10 * row.resolution_pp) / 10:g}"
    )


def describe_groups(table: pd.DataFrame, facts: CheckFacts | None = None, what: str = "budget") -> str:
    """The groups of ``table`` (budget.csv, or generator.csv with ``what`` "generator") in words: for
    the rising ones what the check suggests, for the unresolved ones their resolution and (given
    ``facts``) what would resolve it."""
    parts = []
    for row in table.itertuples():
        where = f"{row.dataset}/{row.regime} {row.classifier} {row.strategy}"
        if row.outcome == RISING and what == "generator":
            parts.append(
                f"{where} (+{row.val_gain_pp:.1f} pp from a generator fitted for {int(row.generator_steps)} "
                f"to {int(row.check_generator_steps)} steps: give it at least that many)"
            )
        elif row.outcome == RISING:
            parts.append(
                f"{where} (+{row.val_gain_pp:.1f} pp from {int(row.budget_steps)} to "
                f"{int(row.check_steps)} steps: try at least {int(row.check_steps)})"
            )
        elif row.outcome == UNRESOLVED:
            fix = f": {what_resolves(row, facts)} would resolve it" if facts and facts.val_per_class else ""
            parts.append(
                f"{where} (unresolved: {row.val_gain_pp:+.1f} pp from doubling, read to within "
                f"{row.resolution_pp:.1f} pp{fix})"
            )
        else:
            parts.append(f"{where} (unchecked)")
    return "; ".join(parts)


# ----------------------------------------------------------------------------- raised budgets
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
    seeds, said = more_check_seeds(config, budget, generators, now, starts)
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


# ----------------------------------------------------------------------------- steps: auto
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


def read_budget(run_dir: Path, name: str = "budget.csv") -> pd.DataFrame:
    """A run folder's budget.csv, or with ``name`` generator.csv (empty where the run predates it)."""
    path = Path(run_dir) / name
    if not path.is_file() or path.stat().st_size <= 1:
        return pd.DataFrame(columns=GROUP + ["outcome"])
    return pd.read_csv(path, dtype=dict.fromkeys(GROUP, str))


def read_generators(run_dir: Path) -> pd.DataFrame:
    """A run folder's generator.csv: the generator check of each generative group."""
    return read_budget(run_dir, "generator.csv")


def generator_summary(table: pd.DataFrame, facts: CheckFacts | None = None) -> str:
    """One line on the generator check (empty without a generative group)."""
    if table.empty:
        return ""
    converged = (table["outcome"] == CONVERGED).sum()
    rest = undertrained(table)
    line = f"generator check: {converged} of {len(table)} generative group(s) converged"
    return line + (
        f"; not converged (their verdicts are 'undertrained generator'): "
        f"{describe_groups(rest, facts, 'generator')}"
        if len(rest)
        else ""
    )


def budget_summary(table: pd.DataFrame, facts: CheckFacts | None = None) -> str:
    """One line on the budget check: how many groups were converged, and which were not."""
    if table.empty:
        return "budget check: no group"
    converged = (table["outcome"] == CONVERGED).sum()
    line = (
        f"budget check: {converged} of {len(table)} group(s) converged (validation gain from doubling "
        "below the plateau, by a check that resolves it)"
    )
    rest = undertrained(table)
    return line + (f"; not converged: {describe_groups(rest, facts)}" if len(rest) else "")
