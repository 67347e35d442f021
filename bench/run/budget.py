"""Converged, or it does not count: the check tables. ``outcomes`` (budget.csv) and
``generator_outcomes`` (generator.csv) read each group's checks from the run's rows and check cells
by the rule of bench/run/resolution.py; every result row carries its group's outcomes
(``with_outcomes``); ``describe_groups`` and the summaries say them in words.

The checks: which cells they train and the seeds they add, bench/run/check_seeds.py; raised budgets
and the run's rounds, bench/run/rounds.py; ``budget.steps: auto``, bench/run/step_search.py.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import NamedTuple

import pandas as pd

from bench.protocol.config import MOST_CHECK_SEEDS, BenchConfig
from bench.run.resolution import CONVERGED, GROUP, RISING, UNRESOLVED, outcome, read_doubling, resolution_pp
from bench.run.rounds import Budgets

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
