"""Tidy comparison tables from a results table: one row per (data, regime, classifier, strategy),
and the per-seed units of the analyses that pool across them."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd

from bench.protocol.columns import in_report
from reports.stats import holm, holm_levels, mean_ci, minimum_detectable_effect, paired_test, seeds_for_effect

BASELINE = "none"
GROUP = ["dataset", "regime", "classifier"]
ALPHA = 0.05
METRIC_COLUMNS = in_report("metric")
QUALITY_COLUMNS = in_report("quality")
COST_COLUMNS = in_report("cost")


CONTROL = "pseudo-label"  # the control of runs from before rows said which strategies are (`control`)
LABELLED_ONLY = "labelled"  # fit_data of a strategy whose fit saw the labelled images alone
SAW_MORE = "†"  # marks a strategy whose fit saw unlabelled images too


def marked(strategy: str, fit_data: str) -> str:
    """A strategy's label with the mark of a fit that saw more than the labelled images."""
    return strategy if fit_data in (LABELLED_ONLY, None) or pd.isna(fit_data) else f"{strategy} {SAW_MORE}"


def regime_order(regime: str) -> float:
    """Balanced regimes by size, then `all`, then long-tailed ones (``lt<imbalance>x<n_max>``)."""
    text = str(regime)
    return math.inf if text == "all" or is_long_tail(text) else float(text)


def successful(results: pd.DataFrame) -> pd.DataFrame:
    return results[results["status"] == "ok"]


def comparison_table(results: pd.DataFrame) -> pd.DataFrame:
    """Per (dataset, regime, classifier, strategy): mean test accuracy with a 95% t-CI over seeds;
    the paired change against `none` (same seeds) with its plain 95% t-CI and its CI at the level at
    which Holm's procedure over the whole table decided it (``delta_hci_*``: it excludes 0 exactly
    when the verdict is better or worse); the paired t-test p-value and its Holm adjustment;
    other metrics, train-test gaps, quality and cost means."""
    ok = successful(results)
    failed = results[results["status"] != "ok"].groupby(GROUP + ["strategy"]).size()
    rows = []
    for (dataset, regime, classifier), group in ok.groupby(GROUP, sort=False):
        baseline = group[group["strategy"] == BASELINE].set_index("replicate")["test_accuracy"]
        outcome = budget_outcomes(group)
        for strategy, cells in group.groupby("strategy", sort=False):
            accuracy = cells.set_index("replicate")["test_accuracy"]
            mean, low, high = mean_ci(accuracy)
            row = {
                "dataset": dataset,
                "regime": str(regime),
                "classifier": classifier,
                "strategy": strategy,
                "budget_check": outcome.get(strategy),
                "budget_check_other": outcome.get(BASELINE),
                "generator_check": generator_outcome(cells),
                "seeds": len(accuracy),
                "failed": int(failed.get((dataset, regime, classifier, strategy), 0)),
                "acc_mean": mean,
                "acc_ci_low": low,
                "acc_ci_high": high,
                "delta_mean": math.nan,
                "delta_ci_low": math.nan,
                "delta_ci_high": math.nan,
                "p_value": math.nan,
                "paired_seeds": 0,
                "deltas": np.array([]),
            }
            if strategy != BASELINE and len(accuracy.index.intersection(baseline.index)):
                row.update(paired_change(accuracy, baseline))
            row["gap_mean"] = cells["gap_accuracy"].mean()
            row["loss_gap_mean"] = cells["gap_loss"].mean()
            for column in METRIC_COLUMNS + QUALITY_COLUMNS + COST_COLUMNS:
                row[column] = cells[column].mean() if column in cells else math.nan
            row["quality_kind"] = cells["quality_kind"].iloc[0] if "quality_kind" in cells else None
            row["fit_data"] = cells["fit_data"].iloc[0] if "fit_data" in cells else LABELLED_ONLY
            row["evaluator_overlaps_fit"] = (
                bool(cells["evaluator_overlaps_fit"].fillna(False).any())
                if "evaluator_overlaps_fit" in cells
                else False
            )
            row["chance"] = 1.0 / cells["num_classes"].iloc[0] if "num_classes" in cells else math.nan
            rows.append(row)
    if not rows:  # no cell succeeded: a table of no rows, with the columns a report reads
        return pd.DataFrame(
            columns=[*GROUP, "strategy", "seeds", "failed", "acc_mean", "delta_mean", "verdict"]
        )
    return decided(pd.DataFrame(rows))


def generator_outcome(cells: pd.DataFrame) -> str | None:
    """A strategy's generator check in one group (None where it fits no generator, or the run
    predates the check)."""
    if "generator_check" not in cells:
        return None
    found = cells["generator_check"].dropna()
    return str(found.iloc[0]) if len(found) else None


def budget_outcomes(group: pd.DataFrame) -> dict[str, str]:
    """Strategy -> its budget check's outcome (converged, rising, unresolved, unchecked) in one (data
    set, regime, classifier); unchecked for a run that predates the check."""
    if "budget_check" not in group:
        return {strategy: "unchecked" for strategy in group["strategy"].unique()}
    return {
        strategy: str(outcome) if isinstance(outcome, str) else "unchecked"
        for strategy, outcome in group.groupby("strategy", sort=False)["budget_check"].first().items()
    }


NOT_CONVERGED = {"rising": "still rising", "unresolved": "unresolved", "unchecked": "unchecked"}


def undertrained_verdict(own: str | None, other: str | None, other_name: str = BASELINE) -> str | None:
    """The verdict of a comparison in which a side was not shown converged at its budget (still
    rising, unresolved or unchecked), naming the side (``own``: the strategy's check, ``other``:
    that of ``other_name``, the baseline or the control); None where both were converged."""
    sides = [
        f"{name} {NOT_CONVERGED[outcome]}"
        for name, outcome in (("strategy", own), (other_name, other))
        if outcome in NOT_CONVERGED
    ]
    return None if not sides else f"undertrained ({'; '.join(sides)})"


def paired_change(accuracy: pd.Series, baseline: pd.Series) -> dict:
    """The change of ``accuracy`` against ``baseline`` (both by replicate) on their common seeds:
    mean with a 95% t-CI, the paired t-test's p-value, the seeds and the per-seed changes."""
    paired = accuracy.index.intersection(baseline.index)
    delta = accuracy[paired] - baseline[paired]
    mean, low, high = mean_ci(delta)
    return {
        "delta_mean": mean,
        "delta_ci_low": low,
        "delta_ci_high": high,
        "p_value": paired_test(accuracy[paired], baseline[paired]),
        "paired_seeds": len(paired),
        "deltas": delta.to_numpy(),
    }


def decided(table: pd.DataFrame) -> pd.DataFrame:
    """A table of paired changes with Holm's procedure over all of its rows: the adjusted p-value,
    the level each row was decided at, the change's interval at that level, the verdict, and the
    minimum detectable effect (``mde``: the change its test had 80 % power to see at that level,
    from its paired spread)."""
    if table.empty:
        return table
    table["p_holm"] = holm(table["p_value"].to_numpy())
    table["holm_level"] = holm_levels(table["p_value"].to_numpy(), ALPHA)
    table["delta_hci_low"], table["delta_hci_high"] = zip(*map(_holm_interval, table.itertuples()))
    table["verdict"] = [verdict(d, p) for d, p in zip(table["delta_mean"], table["p_holm"])]
    if "budget_check" in table:  # a side not shown converged at its budget: neither better nor worse
        others = table["control"] if "control" in table else [BASELINE] * len(table)
        table["verdict"] = [
            v if v == "baseline" else undertrained_verdict(own, other, name) or v
            for v, own, other, name in zip(
                table["verdict"], table["budget_check"], table["budget_check_other"], others
            )
        ]
    if "generator_check" in table:  # a generator not shown converged: its verdict measures its budget
        table["verdict"] = [
            f"undertrained generator ({NOT_CONVERGED[g]})"
            if g in NOT_CONVERGED and not (v == "baseline" or v.startswith("undertrained"))
            else v
            for v, g in zip(table["verdict"], table["generator_check"])
        ]
    table["mde"] = [
        minimum_detectable_effect(np.std(deltas, ddof=1) if len(deltas) > 1 else math.nan, len(deltas), level)
        for deltas, level in zip(table["deltas"], table["holm_level"])
    ]
    table = table.drop(columns=["deltas"], errors="ignore")
    return table.sort_values(["dataset", "regime"], key=_sort_key, kind="stable").reset_index(drop=True)


def control_labels(results: pd.DataFrame) -> list[str]:
    """The strategies (labels) of ``results`` that are controls of the semi-supervised protocol: they
    learn from the unlabelled images without generating any (pseudo-label, fixmatch; the rows'
    ``control``), the strongest (highest mean test accuracy) first."""
    ok = successful(results)
    if "fit_data" not in ok or ok.empty:
        return []
    by_name = ok["strategy_name"] == CONTROL  # rows written before `control` was a column
    is_control = ok["control"].astype("boolean").fillna(by_name).astype(bool) if "control" in ok else by_name
    means = ok[is_control].groupby("strategy")["test_accuracy"].mean()
    return list(means.sort_values(ascending=False, kind="stable").index)


def control_table(results: pd.DataFrame) -> pd.DataFrame:
    """The semi-supervised protocol's question: per (dataset, regime, classifier), every strategy
    whose fit saw unlabelled images and is no control (a generator with ``generator_data: pool``,
    generation on top of fixmatch) against every control in the run (``control_labels``: the same
    images, nothing generated) on the same seeds, decided by Holm over this table; ``strongest`` marks
    the rows against the group's strongest control (highest mean test accuracy). A gain is credited to
    generation only where the verdict is ``better`` against every control. Empty without a control."""
    ok = successful(results)
    every_control = control_labels(results)
    if not every_control:
        return pd.DataFrame()
    rows = []
    for (dataset, regime, classifier), group in ok.groupby(GROUP, sort=False):
        names = group.groupby("strategy", sort=False)["fit_data"].first()
        means = group.groupby("strategy")["test_accuracy"].mean()
        controls = [c for c in names.index if c in every_control]
        strongest = max(controls, key=means.get) if controls else None
        contenders = [s for s in names.index if s not in every_control and names[s] != LABELLED_ONLY]
        by_seed = {s: cells.set_index("replicate")["test_accuracy"] for s, cells in group.groupby("strategy")}
        outcome = budget_outcomes(group)
        for control in controls:
            for strategy in contenders:
                if len(by_seed[strategy].index.intersection(by_seed[control].index)):
                    rows.append(
                        {
                            "dataset": dataset,
                            "regime": str(regime),
                            "classifier": classifier,
                            "strategy": strategy,
                            "control": control,
                            "strongest": control == strongest,
                            "budget_check": outcome.get(strategy),
                            "budget_check_other": outcome.get(control),
                            "generator_check": generator_outcome(group[group["strategy"] == strategy]),
                            **paired_change(by_seed[strategy], by_seed[control]),
                        }
                    )
    return decided(pd.DataFrame(rows))


def _holm_interval(row) -> tuple[float, float]:
    """The paired change's t-interval at the level Holm decided it (the plain one if untestable)."""
    if math.isnan(row.holm_level):
        return row.delta_ci_low, row.delta_ci_high
    return mean_ci(row.deltas, 1 - row.holm_level)[1:]


def verdict(delta: float, p_holm: float) -> str:
    if math.isnan(p_holm):
        return "baseline" if math.isnan(delta) else "untestable (fewer than 2 seeds or no spread)"
    if p_holm < ALPHA:
        return "better" if delta > 0 else "worse"
    return "no significant difference"


def _sort_key(column: pd.Series) -> pd.Series:
    return column.map(regime_order) if column.name == "regime" else column


FAILURE_COLUMNS = [
    "dataset",
    "regime",
    "strategy",
    "classifier",
    "replicate",
    "failure_kind",
    "failure_reason",
    "failure_traceback",
]


def failures(results: pd.DataFrame) -> pd.DataFrame:
    """The failed cells with what failed (method, machine, error), why, and an error's traceback file."""
    failed = results[results["status"] != "ok"]
    return failed.reindex(columns=FAILURE_COLUMNS).reset_index(drop=True)


def paired_with_none(ok: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Each non-`none` row beside its `none` row of the same seed: ``columns`` of `none` as
    ``<column>_none``."""
    if ok.empty:  # no successful row: a metric column no row wrote is missing altogether
        names = [*ok.columns, *columns, *(f"{c}_none" for c in columns)]
        return pd.DataFrame(columns=list(dict.fromkeys(names)))
    base = ok[ok["strategy"] == BASELINE][GROUP + ["replicate", *columns]]
    return ok[ok["strategy"] != BASELINE].merge(base, on=GROUP + ["replicate"], suffixes=("", "_none"))


def per_seed_deltas(results: pd.DataFrame) -> pd.DataFrame:
    """Test accuracy minus `none`'s for each cell with a paired `none` cell."""
    merged = paired_with_none(successful(results), ["test_accuracy"]).rename(
        columns={"test_accuracy_none": "baseline_accuracy"}
    )
    merged["delta"] = merged["test_accuracy"] - merged["baseline_accuracy"]
    return merged


def seeds_needed(results: pd.DataFrame, effect: float) -> pd.DataFrame:
    """Per comparison against `none`: its paired seeds, the spread of its per-seed changes, its
    minimum detectable effect now and the seeds whose one is at most ``effect`` (NA: untestable, or
    more than 1,000), all at Holm's strictest level alpha / m over the m comparisons (the level the
    first one is tested at: a plan that holds for each)."""
    changes = per_seed_deltas(results).groupby(GROUP + ["strategy"], sort=False)["delta"]
    level = ALPHA / max(1, changes.ngroups)
    rows = []
    for (dataset, regime, classifier, strategy), values in changes:
        sd = float(values.std(ddof=1)) if len(values) > 1 else math.nan
        rows.append(
            {
                "dataset": dataset,
                "regime": str(regime),
                "classifier": classifier,
                "strategy": strategy,
                "paired_seeds": len(values),
                "sd": sd,
                "level": level,
                "mde": minimum_detectable_effect(sd, len(values), level),
                "seeds_needed": seeds_for_effect(effect, sd, level) if sd > 0 else None,
            }
        )
    return pd.DataFrame(rows).astype({"seeds_needed": "Int64"}) if rows else pd.DataFrame()


def is_long_tail(regime) -> bool:
    return str(regime).startswith("lt")


def class_gain_table(results: pd.DataFrame) -> pd.DataFrame:
    """For long-tailed regimes: per class, the mean change in test recall against `none` on the
    same seeds (pp), and that of the third of the classes with the fewest labelled images.
    Empty where the run has no long-tailed regime."""
    ok = successful(results)
    if "test_class_recall" not in ok:
        return pd.DataFrame()
    merged = paired_with_none(
        ok[ok["regime"].map(is_long_tail).astype(bool)], ["test_class_recall", "test_recall_smallest_third"]
    )
    rows = []
    for (dataset, regime, classifier, strategy), group in merged.groupby(GROUP + ["strategy"], sort=False):
        mine = np.array([json.loads(v) for v in group["test_class_recall"]], dtype=float)
        none = np.array([json.loads(v) for v in group["test_class_recall_none"]], dtype=float)
        change = 100 * np.nanmean(mine - none, axis=0)
        third = 100 * (group["test_recall_smallest_third"] - group["test_recall_smallest_third_none"]).mean()
        rows.append(
            {
                "dataset": dataset,
                "regime": regime,
                "classifier": classifier,
                "strategy": strategy,
                "seeds": len(group),
                "smallest third (pp)": round(third, 2),
                **{f"class {k} (pp)": round(v, 2) for k, v in enumerate(change)},
            }
        )
    return pd.DataFrame(rows)


def quality_gain_points(results: pd.DataFrame) -> pd.DataFrame:
    """One point per (data, regime, generative strategy, seed): its quality (the same for every
    classifier of the seed) and its change in test accuracy against `none`, averaged over the
    classifiers (which share the seed's labelled draw, so they are one unit, not several).
    ``block`` names the (data, regime, seed) whose points share an evaluator and N."""
    deltas = per_seed_deltas(results)
    if deltas.empty or "quality_kind" not in deltas:
        return pd.DataFrame()
    generated = deltas[deltas["quality_kind"].fillna("").str.startswith("generated")]
    unit = ["dataset", "regime", "strategy", "replicate"]
    points = (
        generated.groupby(unit, sort=False)
        .agg(
            gain=("delta", "mean"),
            kid=("kid_evaluator", "first"),
            fid=("fid_evaluator", "first"),
            quality_n=("quality_n", "first"),
            classifiers=("classifier", "nunique"),
        )
        .reset_index()
    )
    points["block"] = (
        points["dataset"] + "/" + points["regime"].astype(str) + "/" + points["replicate"].astype(str)
    )
    return points
