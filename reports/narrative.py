"""'What this run says': sentences written from the comparison table, claiming only what the
paired tests (Holm-corrected) support."""

from __future__ import annotations

import math

import pandas as pd

from bench.run.budget import CheckFacts, describe_groups, undertrained
from bench.run.resolution import CONVERGED, UNCHECKED
from reports.stats import blocked_rank_correlation
from reports.tables import ALPHA, BASELINE, quality_gain_points


def _pct(value: float) -> str:
    return f"{100 * value:+.1f} pp"


def _effect(row) -> str:
    ci = (
        ""
        if math.isnan(row.delta_hci_low)
        else f", Holm-adjusted CI {_pct(row.delta_hci_low)} to {_pct(row.delta_hci_high)}"
    )
    return f"{row.strategy} ({_pct(row.delta_mean)}{ci}, Holm p = {row.p_holm:.3g})"


def quality_vs_gain(results: pd.DataFrame) -> str | None:
    """The association of generated-data quality (KID) with gain, one point per (data, regime,
    generative strategy, seed), ranks within each seed (one evaluator, one N)."""
    points = quality_gain_points(results)
    if points.empty:
        return None
    rho, p, n = blocked_rank_correlation(points["kid"], points["gain"], points["block"], seed=0)
    if math.isnan(rho):
        return None
    claim = ("a significant" if p < ALPHA else "no significant") + " association"
    return (
        f"Generated-data quality vs. gain: {claim} between KID (evaluator features, lower is better) and "
        f"the change in accuracy (rank correlation within seeds ρ = {rho:.2f}, permutation p = {p:.3g}, "
        f"n = {n} points: one per generative strategy and seed, gain averaged over "
        f"{int(points['classifiers'].max())} classifier(s); classical strategies are left out, their KID "
        "measures distortion, not realism)."
    )


def against_control(controls: pd.DataFrame) -> list[str]:
    """What the semi-supervised comparison decides: each pool-trained strategy against the control
    that used the same unlabelled images (Holm over those comparisons)."""
    if controls.empty:
        return []
    lines = []
    for (dataset, regime, classifier), group in controls.groupby(
        ["dataset", "regime", "classifier"], sort=False
    ):
        where = f"{dataset}, {regime} per class, {classifier}"
        if "strongest" in group and group["strongest"].any():
            strongest = group.loc[group["strongest"].astype(bool), "control"].iloc[0]
            every = ", ".join(dict.fromkeys(group["control"]))
            lines.append(f"{where}: the strongest control is {strongest} (controls in this run: {every}).")
        for strategy, rows in group.groupby("strategy", sort=False):
            verdicts = ", ".join(
                f"{r.verdict} than {r.control} ({_pct(r.delta_mean)}, Holm p = {r.p_holm:.3g})"
                if r.verdict in ("better", "worse")
                else f"{r.verdict} from {r.control} ({_pct(r.delta_mean)}; {_could_see(r.mde)})"
                for r in rows.itertuples()
            )
            credited = (rows["verdict"] == "better").all()
            lines.append(
                f"{where}: {strategy} saw the unlabelled pool; {verdicts}: "
                + (
                    "a gain from generation beyond the pool itself."
                    if credited
                    else "no gain can be credited to generation over the pool's images themselves."
                )
            )
    return lines


def _generators_still_improving(results: pd.DataFrame) -> list[str]:
    """The generators whose own validation signal was still improving at the end of their fit."""
    if "generator_converged" not in results:
        return []
    fits = results.dropna(subset=["generator_converged"]).drop_duplicates(
        ["strategy", "dataset", "regime", "replicate"]
    )
    rising = fits[~fits["generator_converged"].astype(bool)]
    if fits.empty:
        return []
    if rising.empty:
        return [
            f"Generators: all {len(fits)} fit(s) had stopped improving on their own validation signal "
            "(KID of their samples against the validation images) by the end of their fit."
        ]
    fitted = fits.groupby("strategy", sort=False).size()
    named = [
        f"{strategy} ({n} of {fitted[strategy]} fits)"
        for strategy, n in rising.groupby("strategy", sort=False).size().items()
    ]
    return [
        f"Generators still improving at the end of their fit (their KID against the validation images was "
        f"still falling): {', '.join(named)}. Their verdicts understate what the generator could give with a "
        "longer fit."
    ]


def _unseen(undecided: pd.DataFrame) -> list[str]:
    """What the comparisons without a verdict could not see: their minimum detectable effects."""
    mde = undecided["mde"].dropna() if "mde" in undecided else pd.Series(dtype=float)
    if mde.empty:
        return []
    span = _size(mde.min()) if mde.min() == mde.max() else f"{_size(mde.min())} to {_size(mde.max())}"
    return [
        f"'Not distinguishable' is not evidence of no effect: those {len(mde)} comparison(s) had 80% power "
        f"only for changes of {span} or more (their minimum detectable effects at their Holm levels, from "
        "their paired spread); a smaller change could not be seen. `augbench plan CONFIG --mde PP` says how "
        "many seeds a smaller one needs."
    ]


def _size(value: float) -> str:
    return f"{100 * value:.1f} pp"


def _could_see(mde: float) -> str:
    """What an undecided comparison's test could have seen (its minimum detectable effect)."""
    return "its test could not be run" if pd.isna(mde) else f"its test could see {_size(mde)} or more"


def budget_lines(budget: pd.DataFrame, facts: CheckFacts) -> list[str]:
    """What the budget check says, first of all: which groups were converged, by a check that could
    have seen otherwise, and for the others why their comparisons may measure the budget and what
    would resolve an unresolved check."""
    if budget.empty or (budget["outcome"] == UNCHECKED).all():
        return [
            "Budget check: none (the run was made with budget.check: off, or before augbench checked "
            "budgets): nothing shows that the classifiers reached their plateau, so every comparison below "
            "may measure the training budget rather than the strategy, and none is counted better or worse."
        ]
    converged = budget[budget["outcome"] == CONVERGED]
    seeds = sorted(budget.loc[budget["checked_seeds"] > 0, "checked_seeds"].unique())
    resolution = budget["resolution_pp"].dropna() if "resolution_pp" in budget else pd.Series(dtype=float)
    read = (
        f"; the checks read the gain to within {resolution.min():.1f}-{resolution.max():.1f} pp (the gain "
        "each had 80% power to see, from its seeds' paired per-image differences)"
        if len(resolution)
        else ""
    )
    added = (
        " (the run added seeds where a group's first ones did not resolve the plateau, those beyond the "
        "protocol's trained for the check alone)"
        if len(seeds) > 1
        else ""
    )
    head = (
        f"Budget check: {len(converged)} of {len(budget)} groups (data set, regime, classifier, strategy) "
        f"converged (a group converged where training its first {' or '.join(map(str, seeds))} seed(s) at "
        f"twice the budget{added} gained less than {facts.plateau:g} pp of validation accuracy, by a check "
        f"that could see a {facts.plateau:g}-pp gain{read})."
    )
    head += raised_sentence(budget)
    rest = undertrained(budget)
    if rest.empty:
        return [head + " The comparisons below are between converged classifiers."]
    return [
        head,
        f"Not converged: {describe_groups(rest, facts)}. Their comparisons may measure the budget, not the "
        "strategy: a comparison with a side that was still rising, unresolved or unchecked is shown as "
        "undertrained and counted neither better nor worse.",
    ]


def raised_sentence(budget: pd.DataFrame) -> str:
    """The budgets the run raised because a group's check still rose (empty where it raised none)."""
    if "start_steps" not in budget:
        return ""
    raised = budget[budget["start_steps"].notna() & (budget["start_steps"] != budget["budget_steps"])]
    triples = raised.drop_duplicates(["dataset", "regime", "classifier"])
    if triples.empty:
        return ""
    said = "; ".join(
        f"{row.dataset}/{row.regime} {row.classifier} from {int(row.start_steps)} to {int(row.budget_steps)}"
        for row in triples.itertuples()
    )
    return (
        f" The run raised budgets where a check still rose, every strategy of the data set, regime and "
        f"classifier alike: {said} steps."
    )


def generator_lines(generators: pd.DataFrame, results: pd.DataFrame, facts: CheckFacts) -> list[str]:
    """What the generator check says: which generators were converged (their cells' validation
    accuracy with the generator fitted at twice its steps), what a doubling of the others costs, and
    where the check and the fits' own KID signal (``generator_converged``) disagree."""
    if generators.empty:
        return []
    converged = generators[generators["outcome"] == CONVERGED]
    line = (
        f"Generator check: {len(converged)} of {len(generators)} generative groups converged (the cells of "
        "the checked seeds trained again with the generator fitted for twice its steps gained less than "
        f"{facts.plateau:g} pp of validation accuracy, by a check that could see it)."
    )
    rest = undertrained(generators)
    if len(rest):
        cost = rest["fit_seconds_doubled"].dropna() if "fit_seconds_doubled" in rest else pd.Series()
        line += (
            f" Not converged: {describe_groups(rest, facts, 'generator')}; their verdicts are 'undertrained "
            "generator', neither better nor worse"
            + (f" (a fit at the doubled steps took up to {cost.max():.0f} s here)" if len(cost) else "")
            + ". Generators' budgets are not raised by the run: give them more `steps`."
        )
    return [line] + _signal_disagreements(generators, results)


def _signal_disagreements(generators: pd.DataFrame, results: pd.DataFrame) -> list[str]:
    """Groups where the generator check and the fits' own KID signal disagree."""
    if "generator_converged" not in results:
        return []
    signal = (
        results.dropna(subset=["generator_converged"])
        .groupby(["dataset", "regime", "classifier", "strategy"], sort=False)["generator_converged"]
        .all()
    )
    disagree = []
    for row in generators.itertuples():
        own = signal.get((row.dataset, str(row.regime), row.classifier, row.strategy))
        if own is None or row.outcome not in (CONVERGED, "rising"):
            continue
        if bool(own) != (row.outcome == CONVERGED):
            said = "still improving" if not own else "converged"
            disagree.append(
                f"{row.dataset}/{row.regime} {row.classifier} {row.strategy} ({row.outcome}; KID {said})"
            )
    if not disagree:
        return []
    return [
        "The generator check and the fits' own validation signal (KID at four points of each fit) disagree "
        f"on: {'; '.join(disagree)}. The check measures what the classifier gains; the signal only the "
        "samples' distance to the validation images."
    ]


def findings(
    table: pd.DataFrame,
    results: pd.DataFrame,
    controls: pd.DataFrame | None = None,
    budget: pd.DataFrame | None = None,
    facts: CheckFacts = CheckFacts(),
    generators: pd.DataFrame | None = None,
) -> list[str]:
    """Short statements, the budget and generator checks first, then most general first."""
    opening = budget_lines(pd.DataFrame(columns=["outcome"]) if budget is None else budget, facts)
    opening += generator_lines(pd.DataFrame() if generators is None else generators, results, facts)
    return opening + _comparisons(table, results, controls)


def _comparisons(table: pd.DataFrame, results: pd.DataFrame, controls: pd.DataFrame | None) -> list[str]:
    compared = table[table["verdict"].isin(["better", "worse", "no significant difference"])]
    undertrained_rows = table["verdict"].str.startswith("undertrained").sum()
    held_back = (
        [
            f"{undertrained_rows} comparison(s) against `{BASELINE}` are undertrained and counted neither "
            "better nor worse."
        ]
        if undertrained_rows
        else []
    )
    controlled = against_control(pd.DataFrame() if controls is None else controls)
    if compared.empty:
        return (
            held_back
            + [
                f"No strategy could be compared with `{BASELINE}`: the run needs `{BASELINE}` and at "
                "least two paired seeds per cell, with both sides converged by a resolved budget check."
            ]
            + controlled
            + _generators_still_improving(results)
            + failure_lines(results)
        )
    seeds = int(compared["paired_seeds"].min())
    better, worse = compared[compared["verdict"] == "better"], compared[compared["verdict"] == "worse"]
    untestable = table["verdict"].str.startswith("untestable").sum()
    lines = [
        f"{len(compared)} comparisons against `{BASELINE}` (paired t-tests over {seeds}+ seeds, "
        f"Holm-corrected at α = {ALPHA}): {len(better)} significantly better, {len(worse)} significantly "
        f"worse, {len(compared) - len(better) - len(worse)} not distinguishable from `{BASELINE}`"
        + (
            f"; {untestable} could not be tested (fewer than 2 seeds, or the same change on every seed)."
            if untestable
            else "."
        )
    ] + held_back
    for (dataset, regime, classifier), group in compared.groupby(
        ["dataset", "regime", "classifier"], sort=False
    ):
        where = f"{dataset}, {regime} per class, {classifier}"
        up, down = group[group["verdict"] == "better"], group[group["verdict"] == "worse"]
        if len(up):
            lines.append(
                f"{where}: better than `{BASELINE}`: " + "; ".join(_effect(r) for r in up.itertuples()) + "."
            )
        if len(down):
            lines.append(
                f"{where}: worse than `{BASELINE}`: " + "; ".join(_effect(r) for r in down.itertuples()) + "."
            )
        if not len(up) and not len(down):
            best = group.loc[group["delta_mean"].idxmax()]
            lines.append(
                f"{where}: no strategy differs significantly from `{BASELINE}` (largest mean change: "
                f"{best['strategy']} {_pct(best['delta_mean'])})."
            )
    lines += _unseen(compared[compared["verdict"] == "no significant difference"])
    lines += controlled
    lines += _generators_still_improving(results)
    association = quality_vs_gain(results)
    if association:
        lines.append(association)
    return lines + failure_lines(results)


def failure_lines(results: pd.DataFrame) -> list[str]:
    """The cells left out: errors (a bug in a cell's code, not a result) apart from the failures of
    the method or the machine."""
    failed = results[results["status"] != "ok"]
    kinds = failed["failure_kind"] if "failure_kind" in failed else pd.Series("method", index=failed.index)
    errored, other = failed[kinds == "error"], failed[kinds != "error"]
    lines = []
    if len(errored):
        reasons = errored.groupby("strategy")["failure_reason"].first()
        lines.append(
            f"{len(errored)} cell(s) raised an error, a bug in their code rather than a result, and are "
            "left out (tracebacks: tables/failures.csv names their files; a rerun tries them again): "
            + "; ".join(f"{s}: {r}" for s, r in reasons.items())
            + "."
        )
    if len(other):
        reasons = other.groupby("strategy")["failure_reason"].first()
        lines.append(
            f"{len(other)} cell(s) failed and are left out: "
            + "; ".join(f"{s}: {r}" for s, r in reasons.items())
            + "."
        )
    return lines
