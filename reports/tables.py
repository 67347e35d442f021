"""Tidy comparison tables from a results table: one row per (data, regime, classifier, strategy)."""
from __future__ import annotations

import math

import pandas as pd
from scipy import stats

from reports.stats import holm, mean_ci, paired_test

BASELINE = "none"
GROUP = ["dataset", "regime", "classifier"]
ALPHA = 0.05
QUALITY_COLUMNS = ["fid_evaluator", "kid_evaluator", "is_evaluator", "precision_evaluator", "recall_evaluator",
                   "evaluator_label_agreement", "cas_accuracy", "mem_nn_ratio", "mem_near_copy_fraction",
                   "fid_inception", "kid_inception"]
COST_COLUMNS = ["fit_seconds", "generator_fit_seconds", "train_seconds", "fit_peak_mem_mb", "train_peak_mem_mb"]


def regime_order(regime: str) -> float:
    return math.inf if str(regime) == "all" else float(regime)


def successful(results: pd.DataFrame) -> pd.DataFrame:
    return results[results["status"] == "ok"]


def comparison_table(results: pd.DataFrame) -> pd.DataFrame:
    """Per (dataset, regime, classifier, strategy): mean test accuracy with a 95% t-CI over seeds;
    the paired change against `none` (same seeds), its CI, paired t-test p-value and Holm-adjusted
    p-value over every comparison in the table; train-test gaps; quality and cost means."""
    ok = successful(results)
    failed = results[results["status"] != "ok"].groupby(GROUP + ["strategy"]).size()
    rows = []
    for (dataset, regime, classifier), group in ok.groupby(GROUP, sort=False):
        baseline = group[group["strategy"] == BASELINE].set_index("replicate")["test_accuracy"]
        for strategy, cells in group.groupby("strategy", sort=False):
            accuracy = cells.set_index("replicate")["test_accuracy"]
            mean, low, high = mean_ci(accuracy)
            row = {"dataset": dataset, "regime": str(regime), "classifier": classifier, "strategy": strategy,
                   "seeds": len(accuracy), "failed": int(failed.get((dataset, regime, classifier, strategy), 0)),
                   "acc_mean": mean, "acc_ci_low": low, "acc_ci_high": high,
                   "delta_mean": math.nan, "delta_ci_low": math.nan, "delta_ci_high": math.nan,
                   "p_value": math.nan, "paired_seeds": 0}
            paired = accuracy.index.intersection(baseline.index)
            if strategy != BASELINE and len(paired):
                delta = accuracy[paired] - baseline[paired]
                row["delta_mean"], row["delta_ci_low"], row["delta_ci_high"] = mean_ci(delta)
                row["p_value"] = paired_test(accuracy[paired], baseline[paired])
                row["paired_seeds"] = len(paired)
            row["gap_mean"] = cells["gap_accuracy"].mean()
            row["loss_gap_mean"] = cells["gap_loss"].mean()
            for column in QUALITY_COLUMNS + COST_COLUMNS:
                row[column] = cells[column].mean() if column in cells else math.nan
            rows.append(row)
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    table["p_holm"] = holm(table["p_value"].to_numpy())
    table["verdict"] = [verdict(d, p) for d, p in zip(table["delta_mean"], table["p_holm"])]
    return table.sort_values(["dataset", "regime"], key=_sort_key, kind="stable").reset_index(drop=True)


def verdict(delta: float, p_holm: float) -> str:
    if math.isnan(p_holm):
        return "baseline" if math.isnan(delta) else "untestable (fewer than 2 seeds or no spread)"
    if p_holm < ALPHA:
        return "better" if delta > 0 else "worse"
    return "no significant difference"


def _sort_key(column: pd.Series) -> pd.Series:
    return column.map(regime_order) if column.name == "regime" else column


def failures(results: pd.DataFrame) -> pd.DataFrame:
    failed = results[results["status"] != "ok"]
    return failed[["dataset", "regime", "strategy", "classifier", "replicate", "failure_reason"]].reset_index(drop=True)


def per_seed_deltas(results: pd.DataFrame) -> pd.DataFrame:
    """Test accuracy minus `none`'s for each cell with a paired `none` cell."""
    ok = successful(results)
    base = ok[ok["strategy"] == BASELINE][GROUP + ["replicate", "test_accuracy"]].rename(
        columns={"test_accuracy": "baseline_accuracy"})
    merged = ok[ok["strategy"] != BASELINE].merge(base, on=GROUP + ["replicate"])
    merged["delta"] = merged["test_accuracy"] - merged["baseline_accuracy"]
    return merged


def spearman(x: pd.Series, y: pd.Series) -> tuple[float, float, int]:
    """(rho, p, n) over the rows where both are present; NaNs when fewer than 3."""
    both = pd.DataFrame({"x": x, "y": y}).dropna()
    if len(both) < 3 or both["x"].nunique() < 2 or both["y"].nunique() < 2:
        return math.nan, math.nan, len(both)
    result = stats.spearmanr(both["x"], both["y"])
    return float(result.statistic), float(result.pvalue), len(both)
