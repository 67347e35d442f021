"""'What this run says': sentences written from the comparison table, claiming only what the
paired tests (Holm-corrected) support."""
from __future__ import annotations

import math

import pandas as pd

from reports.tables import ALPHA, BASELINE, spearman


def _pct(value: float) -> str:
    return f"{100 * value:+.1f} pp"


def _effect(row) -> str:
    ci = "" if math.isnan(row.delta_ci_low) else f", 95% CI {_pct(row.delta_ci_low)} to {_pct(row.delta_ci_high)}"
    return f"{row.strategy} ({_pct(row.delta_mean)}{ci}, Holm p = {row.p_holm:.3g})"


def findings(table: pd.DataFrame, results: pd.DataFrame) -> list[str]:
    """Short statements, most general first."""
    compared = table[table["verdict"].isin(["better", "worse", "no significant difference"])]
    if compared.empty:
        return [f"No strategy could be compared with `{BASELINE}`: the run needs `{BASELINE}` and at least "
                "two paired seeds per cell."]
    seeds = int(compared["paired_seeds"].min())
    better, worse = compared[compared["verdict"] == "better"], compared[compared["verdict"] == "worse"]
    untestable = table["verdict"].str.startswith("untestable").sum()
    lines = [f"{len(compared)} comparisons against `{BASELINE}` (paired t-tests over {seeds}+ seeds, "
             f"Holm-corrected at α = {ALPHA}): {len(better)} significantly better, {len(worse)} significantly "
             f"worse, {len(compared) - len(better) - len(worse)} not distinguishable from `{BASELINE}`"
             + (f"; {untestable} could not be tested (fewer than 2 seeds, or the same change on every seed)."
                if untestable else ".")]
    for (dataset, regime, classifier), group in compared.groupby(["dataset", "regime", "classifier"], sort=False):
        where = f"{dataset}, {regime} per class, {classifier}"
        up, down = group[group["verdict"] == "better"], group[group["verdict"] == "worse"]
        if len(up):
            lines.append(f"{where}: better than `{BASELINE}`: " + "; ".join(_effect(r) for r in up.itertuples()) + ".")
        if len(down):
            lines.append(f"{where}: worse than `{BASELINE}`: " + "; ".join(_effect(r) for r in down.itertuples()) + ".")
        if not len(up) and not len(down):
            best = group.loc[group["delta_mean"].idxmax()]
            lines.append(f"{where}: no strategy differs significantly from `{BASELINE}` (largest mean change: "
                         f"{best['strategy']} {_pct(best['delta_mean'])}).")
    if seeds < 5:
        lines.append(f"With {seeds} seeds a paired test detects only large effects: 'not distinguishable' "
                     "is not evidence of no effect.")
    rho, p, n = spearman(table["fid_evaluator"], table["delta_mean"])
    if not math.isnan(rho):
        claim = ("a significant" if p < ALPHA else "no significant") + " rank correlation"
        lines.append(f"Synthetic-data quality vs. gain: {claim} between FID (evaluator features) and the change "
                     f"in accuracy (Spearman ρ = {rho:.2f}, p = {p:.3g}, n = {n} strategy x classifier cells).")
    failed = results[results["status"] != "ok"]
    if len(failed):
        reasons = failed.groupby("strategy")["failure_reason"].first()
        lines.append(f"{len(failed)} cell(s) failed and are left out: " +
                     "; ".join(f"{s}: {r}" for s, r in reasons.items()) + ".")
    return lines
