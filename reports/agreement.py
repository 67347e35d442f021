"""How closely two runs of one protocol agree, cell by cell: cohorts against cells trained alone
(a run with ``--set cohort=K`` beside one with ``cohort: off``), or one device against another.
Cells pair by their coordinates (data set, regime, strategy, classifier, seed); each pair is one
independent training, so the paired t-test has one point per cell.

    augbench agreement RUN_A RUN_B [--out FILE.md]
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pandas as pd

from bench.core.errors import UserError
from reports.report import read_run
from reports.stats import paired_test

COORDINATES = ["dataset", "regime", "strategy", "classifier", "replicate"]


def paired_cells(a: pd.DataFrame, b: pd.DataFrame, column: str = "test_accuracy") -> pd.DataFrame:
    """The cells finished in both runs, with ``column`` of each (``a``, ``b``) and the change b - a."""
    ok = lambda rows: rows.loc[rows["status"] == "ok", COORDINATES + [column]]  # noqa: E731
    pairs = ok(a).merge(ok(b), on=COORDINATES, suffixes=("_a", "_b"))
    return pairs.rename(columns={f"{column}_a": "a", f"{column}_b": "b"}).assign(
        change=lambda t: t["b"] - t["a"]
    )


def summary(pairs: pd.DataFrame) -> dict:
    """Cells, mean |change|, mean change and the largest |change| (in points of a percentage), and
    the paired t-test's p-value."""
    return {
        "cells": len(pairs),
        "mean_abs_change_pp": 100 * pairs["change"].abs().mean(),
        "mean_change_pp": 100 * pairs["change"].mean(),
        "largest_abs_change_pp": 100 * pairs["change"].abs().max(),
        "p": paired_test(pairs["b"], pairs["a"]),
    }


def _wall_seconds(provenance: dict) -> float | None:
    try:
        return (
            datetime.fromisoformat(provenance["finished"]) - datetime.fromisoformat(provenance["started"])
        ).total_seconds()
    except (KeyError, TypeError, ValueError):
        return None


def render(run_a: Path, run_b: Path) -> str:
    """The agreement of two run folders as markdown: the test accuracy of every cell both
    finished, in all and per strategy and classifier, with each run's training and wall time."""
    (a, *_, provenance_a), (b, *_, provenance_b) = read_run(run_a), read_run(run_b)
    pairs = paired_cells(a, b)
    if pairs.empty:
        raise UserError(f"{run_a} and {run_b} share no finished cell; compare two runs of one protocol")
    total = summary(pairs)
    lines = [
        f"# Agreement: {run_b} against {run_a}",
        "",
        f"Test accuracy of the {total['cells']} cells finished in both: mean |change| "
        f"{total['mean_abs_change_pp']:.2f} pp, mean change {total['mean_change_pp']:+.2f} pp (paired t-test "
        f"p = {total['p']:.2f}), largest |change| {total['largest_abs_change_pp']:.2f} pp.",
        "",
        "| strategy | classifier | cells | mean change pp | mean abs change pp |",
        "|---|---|---|---|---|",
    ]
    for (strategy, classifier), part in pairs.groupby(["strategy", "classifier"], sort=False):
        lines.append(
            f"| {strategy} | {classifier} | {len(part)} | {100 * part['change'].mean():+.2f} | "
            f"{100 * part['change'].abs().mean():.2f} |"
        )
    lines += [
        "",
        "| run | revision | device, workers | training s (sum of cells) | generator fits s (sum of "
        "cells' shares) | wall s |",
        "|---|---|---|---|---|---|",
    ]
    for run, rows, provenance in ((run_a, a, provenance_a), (run_b, b, provenance_b)):
        fits = (
            rows.drop_duplicates("generator_key")["generator_fit_seconds"].sum()
            if "generator_key" in rows
            else 0.0
        )
        wall = _wall_seconds(provenance)
        lines.append(
            f"| {run} | {provenance.get('revision', '')} | {provenance.get('device', '')}, "
            f"{provenance.get('workers', '')} | {rows['train_seconds'].sum():.1f} | {fits:.1f} | "
            f"{'' if wall is None else f'{wall:.1f}'} |"
        )
    return "\n".join(lines) + "\n"
