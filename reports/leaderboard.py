"""``augbench leaderboard``: rank strategies across runs of one protocol."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from autorank import autorank, plot_stats
from autorank.autorank import RankResult

from bench.core.errors import UserError
from bench.core.files import atomic_write
from bench.protocol.config import BenchConfig, protocol_view
from bench.run import provenance
from bench.run.budget import CheckFacts, describe_groups, read_budget, read_generators, undertrained
from reports.figures import plt
from reports.stats import iqm, probability_of_improvement, stratified_bootstrap_ci
from reports.tables import (
    ALPHA,
    BASELINE,
    LABELLED_ONLY,
    SAW_MORE,
    comparison_table,
    control_labels,
    marked,
    successful,
)


def _load(run_dir: Path) -> tuple[dict, pd.DataFrame]:
    config_path, results_path = run_dir / "config.yaml", run_dir / "results.parquet"
    if not config_path.is_file() or not results_path.is_file():
        raise UserError(f"{run_dir} is not a finished augbench run (no config.yaml or results.parquet)")
    config = (yaml.safe_load(config_path.read_text()) or {}).get("config", {})
    return config, pd.read_parquet(results_path).assign(run=str(run_dir))


def protocol_of(config: dict, results: pd.DataFrame, schema: type = BenchConfig) -> dict:
    """What runs ranked together must share: the config's protocol fields (strategies may differ:
    that is the point), the suite version and the data."""
    protocol = protocol_view(config, schema)
    protocol["suite_version"] = sorted(results["suite_version"].astype(str).unique())
    protocol["data_hashes"] = sorted(results["data_hash"].unique())
    return protocol


def check_same_protocol(runs: list[tuple[Path, dict, pd.DataFrame]], schema: type = BenchConfig) -> None:
    """Refuse runs whose protocols differ, naming the fields that differ."""
    first_dir, first_config, first_results = runs[0]
    reference = protocol_of(first_config, first_results, schema)
    for run_dir, config, results in runs[1:]:
        other = protocol_of(config, results, schema)
        differing = [f for f in reference if reference[f] != other[f]]
        if differing:
            details = "; ".join(f"{f}: {reference[f]!r} vs {other[f]!r}" for f in differing)
            raise UserError(
                f"runs {first_dir} and {run_dir} are of different protocols ({details}); a leaderboard "
                "ranks runs of one protocol only (same splits, suite version, budgets)"
            )


def combine(runs: list[tuple[Path, dict, pd.DataFrame]]) -> pd.DataFrame:
    """All rows, each cell once; a label that names different params or code versions in two runs
    is refused (a table never pools rows of different versions)."""
    results = pd.concat([r for _, _, r in runs], ignore_index=True).drop_duplicates("key")
    identity = [c for c in ("strategy_params", "versions") if c in results]
    meanings = results.groupby(["strategy", "classifier"])[identity].nunique().max(axis=1)
    clash = sorted({strategy for strategy, _ in meanings[meanings > 1].index})
    if clash:
        raise UserError(
            f"strategy label(s) {', '.join(clash)} name different params or code versions in "
            "different runs; give each its own `label` in the config, or rerun the older run"
        )
    return results


UNIT = ["dataset", "regime", "replicate"]  # one independent unit: a seed's labelled draw in one task
TASK = ["dataset", "regime"]
MIN_FRIEDMAN_BLOCKS = 5  # autorank's minimum


def unit_scores(results: pd.DataFrame) -> pd.DataFrame:
    """Test accuracy per (dataset, regime, seed) and strategy, averaged over the classifiers (which
    share the seed's labelled images, so they are one unit, not several). Units where a strategy
    lacks a classifier (a failed cell) are left out for that strategy."""
    ok = successful(results)
    classifiers = ok["classifier"].nunique()
    scores = (
        ok.groupby(UNIT + ["strategy"], sort=False)
        .agg(accuracy=("test_accuracy", "mean"), classifiers=("classifier", "nunique"))
        .reset_index()
    )
    return scores[scores["classifiers"] == classifiers].drop(columns="classifiers")


def _by_task(frame: pd.DataFrame, column: str) -> list[np.ndarray]:
    return [part[column].to_numpy() for _, part in frame.groupby(TASK, sort=False)]


def _gains(scores: pd.DataFrame, strategy: str) -> pd.DataFrame:
    base = scores[scores["strategy"] == BASELINE][UNIT + ["accuracy"]].rename(
        columns={"accuracy": "baseline"}
    )
    mine = scores[scores["strategy"] == strategy].merge(base, on=UNIT)
    return mine.assign(gain=mine["accuracy"] - mine["baseline"])


def _iqm_pooled(*samples) -> float:
    return iqm(np.concatenate(samples))


def _mean_poi(*samples) -> float:
    """Mean over tasks of P(strategy > none); samples alternate strategy, none per task."""
    return float(np.mean([probability_of_improvement(x, y) for x, y in zip(samples[::2], samples[1::2])]))


def aggregate(scores: pd.DataFrame, strategy: str) -> dict:
    """rliable's aggregates of one strategy over every (task, seed) unit, with stratified-bootstrap
    95% intervals: IQM of test accuracy, IQM of the paired gain over `none`, P(better than none)."""
    mine = scores[scores["strategy"] == strategy]
    accuracy = _by_task(mine, "accuracy")
    row = {"strategy": strategy, "units": len(mine), "iqm_accuracy": iqm(mine["accuracy"])}
    row["iqm_accuracy_low"], row["iqm_accuracy_high"] = stratified_bootstrap_ci(accuracy, _iqm_pooled, seed=0)
    row.update(
        iqm_gain=np.nan,
        iqm_gain_low=np.nan,
        iqm_gain_high=np.nan,
        poi=np.nan,
        poi_low=np.nan,
        poi_high=np.nan,
    )
    if strategy == BASELINE:
        return row
    gains = _gains(scores, strategy)
    if len(gains):
        row["iqm_gain"] = iqm(gains["gain"])
        row["iqm_gain_low"], row["iqm_gain_high"] = stratified_bootstrap_ci(
            _by_task(gains, "gain"), _iqm_pooled, seed=0
        )
        pairs = [
            array
            for _, part in gains.groupby(TASK, sort=False)
            for array in (part["accuracy"].to_numpy(), part["baseline"].to_numpy())
        ]
        row["poi"] = _mean_poi(*pairs)
        row["poi_low"], row["poi_high"] = stratified_bootstrap_ci(pairs, _mean_poi, seed=0)
    return row


def friedman(scores: pd.DataFrame) -> RankResult | None:
    """Friedman test and Nemenyi critical difference (autorank) over the units where every strategy
    has a score; None with fewer than MIN_FRIEDMAN_BLOCKS such units or fewer than 2 strategies."""
    wide = scores.pivot_table(index=UNIT, columns="strategy", values="accuracy").dropna()
    if len(wide) < MIN_FRIEDMAN_BLOCKS or wide.shape[1] < 2:
        return None
    with contextlib.redirect_stdout(io.StringIO()):  # autorank prints its test choice
        return autorank(wide, alpha=ALPHA, verbose=False, force_mode="nonparametric")


def leaderboard(results: pd.DataFrame) -> tuple[pd.DataFrame, RankResult | None]:
    """One row per strategy: IQM accuracy, IQM gain and P(better than none) with stratified-bootstrap
    CIs over (task, seed) units; Friedman mean rank over the same units; wins/ties/losses against
    `none` from the per-classifier paired tests (Holm over the whole table). Also the Friedman result."""
    scores = unit_scores(results)
    table = comparison_table(results)
    controls = control_labels(results)
    ranks = friedman(scores)
    rows = []
    for strategy in dict.fromkeys(scores["strategy"]):
        verdicts = table.loc[table["strategy"] == strategy, "verdict"]
        tied = table.loc[
            (table["strategy"] == strategy) & (table["verdict"] == "no significant difference"), "mde"
        ]
        fit_data = table.loc[table["strategy"] == strategy, "fit_data"]
        rows.append(
            {
                **aggregate(scores, strategy),
                "fit_data": fit_data.iloc[0] if len(fit_data) else LABELLED_ONLY,
                "control": strategy in controls,
                "mean_rank": ranks.rankdf.loc[strategy, "meanrank"] if ranks is not None else np.nan,
                "wins": int((verdicts == "better").sum()),
                "losses": int((verdicts == "worse").sum()),
                "ties": int(
                    (verdicts == "no significant difference").sum()
                    + verdicts.str.startswith("untestable").sum()
                ),
                "undertrained": int(verdicts.str.startswith("undertrained").sum()),
                "tie_mde": tied.max() if len(tied) else np.nan,
            }
        )
    board = pd.DataFrame(rows).sort_values(
        ["mean_rank", "iqm_accuracy"], ascending=[True, False], kind="stable"
    )
    return board.reset_index(drop=True), ranks


def _ci(value: float, low: float, high: float, spec: str, scale: float = 100.0) -> str:
    if pd.isna(value):
        return "–"
    bounds = "" if pd.isna(low) else f" [{format(low * scale, spec)}, {format(high * scale, spec)}]"
    return format(value * scale, spec) + bounds


def _markdown(
    board: pd.DataFrame, ranks: RankResult | None, run_dirs: list[Path], protocol: dict, cd_figure: str | None
) -> str:
    shown = pd.DataFrame(
        {
            "rank": range(1, len(board) + 1),
            "strategy": [marked(s, d) for s, d in zip(board["strategy"], board["fit_data"])],
            "fit saw": board["fit_data"],
            "mean rank (Friedman)": board["mean_rank"].map(lambda v: "–" if pd.isna(v) else f"{v:.2f}"),
            "IQM test acc % [95% bootstrap CI]": [
                _ci(v, lo, hi, ".1f")
                for v, lo, hi in zip(
                    board["iqm_accuracy"], board["iqm_accuracy_low"], board["iqm_accuracy_high"]
                )
            ],
            "IQM gain vs none pp [95% bootstrap CI]": [
                _ci(v, lo, hi, "+.2f")
                for v, lo, hi in zip(board["iqm_gain"], board["iqm_gain_low"], board["iqm_gain_high"])
            ],
            "P(better than none) [95% bootstrap CI]": [
                _ci(v, lo, hi, ".2f", 1.0)
                for v, lo, hi in zip(board["poi"], board["poi_low"], board["poi_high"])
            ],
            "W/T/L vs none (Holm)": [
                f"{w}/{t}/{loss}" + (f" ({u} undertrained)" if u else "")
                for w, t, loss, u in zip(board["wins"], board["ties"], board["losses"], board["undertrained"])
            ],
            "a tie could miss pp": board["tie_mde"].map(lambda v: "–" if pd.isna(v) else f"{100 * v:.1f}"),
            "units": board["units"],
        }
    )
    if ranks is None:
        friedman_line = (
            f"No Friedman test: it needs at least {MIN_FRIEDMAN_BLOCKS} (data set, regime, seed) units "
            "in which every strategy has a result; strategies are ordered by IQM accuracy."
        )
    else:
        friedman_line = (
            f"Friedman test over the units where every strategy has a result: p = {ranks.pvalue:.3g}; "
            f"Nemenyi critical difference CD = {ranks.cd:.2f} at α = {ALPHA}: strategies whose mean ranks "
            "differ by less than CD are not distinguishable (rank 1 = best)."
        )
    lines = [
        "# augbench leaderboard",
        "",
        f"Generated by `augbench leaderboard` on {provenance.now()} from: "
        + ", ".join(f"`{d}`" for d in run_dirs),
        "",
        "Protocol: " + "; ".join(f"{k} = {v}" for k, v in protocol.items()),
        "",
        "Unit: one (data set, regime, seed), its test accuracy averaged over the classifiers, which share "
        "the seed's labelled images. IQM is the mean of the middle 50% of units; the gain is paired with "
        "`none` on the same unit; P(better than none) is the Mann-Whitney probability that a unit of the "
        "strategy beats one of `none`, averaged over (data set, regime) tasks; intervals are 95% percentile "
        "intervals of a stratified bootstrap (seeds resampled within each task, 2000 resamples; Agarwal et "
        "al. 2021). W/T/L count (data set, regime, classifier) groups where a paired t-test, Holm-corrected "
        "over the whole table at α = 0.05, finds the strategy better / not distinguishable / worse than "
        "`none`: they are the decisions; a tie could miss a change below the largest minimum detectable "
        "effect of its tied comparisons (80% power at its Holm level). The bootstrap intervals are "
        "descriptive (95% each, not adjusted for the number of strategies, and percentile intervals are too "
        "narrow with few seeds), so an interval may exclude 0 where the Holm-corrected tests do not decide.",
        "",
        friedman_line,
        "",
        shown.to_markdown(index=False),
        "",
    ]
    if (board["fit_data"] != LABELLED_ONLY).any():
        controls = board.loc[board["control"], "strategy"].tolist() if "control" in board else []
        beat = (
            f"every control of these runs, {', '.join(controls)} (in the board's order), "
            "which use the same images without generating any"
            if controls
            else "a control that uses the same images without generating any (pseudo-label, fixmatch); "
            "these runs have none"
        )
        lines += [
            f"{SAW_MORE}: the strategy's fit saw the unlabelled pool too (the semi-supervised protocol); a "
            f"gain is credited to generation only where it beats {beat}.",
            "",
        ]
    if cd_figure:
        lines += [f"![Critical-difference diagram]({cd_figure})", ""]
    return "\n".join(lines)


def check_converged(runs: list[tuple[Path, dict, pd.DataFrame]], allow_undertrained: bool) -> list[str]:
    """Refuse runs with a group that was not converged (rising, unresolved) or not checked (UserError
    naming them, the budget the check suggests and what would resolve a check), unless
    ``allow_undertrained``; then the warning lines for the page."""
    problems = []
    for run_dir, config, _ in runs:
        rest = undertrained(read_budget(run_dir))
        generators = undertrained(read_generators(run_dir))
        if len(generators):
            problems.append(
                f"{run_dir}: generators {describe_groups(generators, CheckFacts.of(config), 'generator')}"
            )
        if (run_dir / "budget.csv").is_file() and rest.empty:
            continue
        groups = (
            describe_groups(rest, CheckFacts.of(config))
            if len(rest)
            else "every group (the run has no budget check)"
        )
        problems.append(f"{run_dir}: {groups}")
    if problems and not allow_undertrained:
        raise UserError(
            "leaderboard refused: runs with groups that were not converged on validation data ("
            + "; ".join(problems)
            + "); rerun them at the suggested budget (budget.scale, or budget.steps: "
            "auto) or with a check that resolves the plateau, with budget.check: on, or pass "
            "--allow-undertrained to rank them with a warning"
        )
    return [
        "**Warning: undertrained.** Ranked with --allow-undertrained although these groups were not "
        f"converged on validation data, so their ranks may measure the budget rather than the strategy: {p}."
        for p in problems
    ]


def check_no_errors(runs: list[tuple[Path, dict, pd.DataFrame]]) -> None:
    """Refuse runs with cells whose code raised an error (a bug, not a result: ranking without them
    would rank what survived the bug), naming them."""
    problems = []
    for run_dir, _, results in runs:
        if "failure_kind" not in results:
            continue
        errored = results[results["failure_kind"] == "error"]
        if len(errored):
            cells = ", ".join(
                f"{r.strategy} {r.classifier} seed {r.replicate} ({r.dataset}/{r.regime})"
                for r in errored.head(3).itertuples()
            )
            problems.append(
                f"{run_dir}: {len(errored)} cell(s), {cells}{', ...' if len(errored) > 3 else ''}"
            )
    if problems:
        raise UserError(
            "leaderboard refused: runs with cells whose code raised an error ("
            + "; ".join(problems)
            + "); fix the error (its traceback is in the run's cells/<key>.traceback.txt, named by the "
            "failure_traceback column) and rerun the same command, which runs those cells again"
        )


def write_leaderboard(run_dirs: list[Path], out: Path, allow_undertrained: bool = False) -> list[Path]:
    runs = [(d, *_load(d)) for d in run_dirs]
    check_same_protocol(runs)
    check_no_errors(runs)
    warnings = check_converged(runs, allow_undertrained)
    results = combine(runs)
    board, ranks = leaderboard(results)
    protocol = protocol_of(runs[0][1], runs[0][2])
    paths = [out / "leaderboard.md", out / "leaderboard.csv"]
    cd_figure = None
    if ranks is not None:
        axes = plot_stats(ranks, allow_insignificant=True)
        buffer = io.BytesIO()
        axes.figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
        plt.close(axes.figure)
        paths.append(out / "leaderboard-cd.png")
        atomic_write(paths[-1], buffer.getvalue())
        cd_figure = paths[-1].name
    page = _markdown(board, ranks, run_dirs, protocol, cd_figure)
    if warnings:
        title, rest = page.split("\n", 1)
        page = "\n".join([title, "", *warnings, rest])
    atomic_write(paths[0], page)
    atomic_write(paths[1], board.to_csv(index=False))
    return paths
