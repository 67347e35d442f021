"""``augbench leaderboard``: rank strategies across runs of one protocol."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import yaml

from bench import provenance
from bench.config import BenchConfig, protocol_view
from bench.core.errors import UserError
from bench.core.files import atomic_write
from reports.stats import mean_ci
from reports.tables import BASELINE, GROUP, comparison_table, per_seed_deltas, successful


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
            raise UserError(f"runs {first_dir} and {run_dir} are of different protocols ({details}); a leaderboard "
                            "ranks runs of one protocol only (same splits, suite version, budgets)")


def combine(runs: list[tuple[Path, dict, pd.DataFrame]]) -> pd.DataFrame:
    """All rows, each cell once; a label that names different params in two runs is refused."""
    results = pd.concat([r for _, _, r in runs], ignore_index=True).drop_duplicates("key")
    meanings = results.groupby("strategy")["strategy_params"].nunique()
    clash = meanings[meanings > 1]
    if len(clash):
        raise UserError(f"strategy label(s) {', '.join(clash.index)} name different params in different runs; "
                        "give each its own `label` in the config")
    return results


def leaderboard(results: pd.DataFrame) -> pd.DataFrame:
    """One row per strategy: mean rank over (data, regime, classifier), mean gain over `none` with a
    95% CI over all paired (group, seed) changes, and wins/ties/losses against `none`."""
    table = comparison_table(results)
    ranks = table.assign(rank=table.groupby(GROUP)["acc_mean"].rank(ascending=False, method="average"))
    deltas = per_seed_deltas(results)
    rows = []
    for strategy, part in ranks.groupby("strategy", sort=False):
        gain, low, high = mean_ci(deltas.loc[deltas["strategy"] == strategy, "delta"]) if strategy != BASELINE \
            else (float("nan"),) * 3
        rows.append({"strategy": strategy, "mean_rank": part["rank"].mean(), "groups": len(part),
                     "mean_test_accuracy": part["acc_mean"].mean(), "mean_gain": gain, "gain_ci_low": low,
                     "gain_ci_high": high, "wins": int((part["verdict"] == "better").sum()),
                     "losses": int((part["verdict"] == "worse").sum()),
                     "ties": int(part["verdict"].isin(["no significant difference"]).sum()
                                 + part["verdict"].str.startswith("untestable").sum()),
                     "seeds": int(successful(results).loc[lambda d: d["strategy"] == strategy, "replicate"].nunique())})
    return pd.DataFrame(rows).sort_values("mean_rank", kind="stable").reset_index(drop=True)


def _markdown(board: pd.DataFrame, run_dirs: list[Path], protocol: dict) -> str:
    shown = pd.DataFrame({
        "rank": range(1, len(board) + 1), "strategy": board["strategy"],
        "mean rank": board["mean_rank"].map("{:.2f}".format),
        "mean test acc %": (board["mean_test_accuracy"] * 100).map("{:.1f}".format),
        "gain vs none pp [95% CI]": [("–" if pd.isna(g) else f"{100 * g:+.2f} [{100 * lo:+.2f}, {100 * hi:+.2f}]")
                                     for g, lo, hi in zip(board["mean_gain"], board["gain_ci_low"], board["gain_ci_high"])],
        "W/T/L vs none": [f"{w}/{t}/{loss}" for w, t, loss in zip(board["wins"], board["ties"], board["losses"])],
        "groups": board["groups"], "seeds": board["seeds"]})
    lines = ["# augbench leaderboard", "",
             f"Generated by `augbench leaderboard` on {provenance.now()} from: " + ", ".join(f"`{d}`" for d in run_dirs),
             "", "Protocol: " + "; ".join(f"{k} = {v}" for k, v in protocol.items()), "",
             "Mean rank of mean test accuracy within each (data set, regime, classifier) group (1 = best); gain is "
             "the change in test accuracy against `none` on the same seeds, with a 95% t-interval over all paired "
             "(group, seed) changes; W/T/L count groups where a paired t-test (Holm-corrected over the whole table, "
             "α = 0.05) finds the strategy better / not distinguishable / worse than `none`.", "",
             shown.to_markdown(index=False), ""]
    return "\n".join(lines)


def write_leaderboard(run_dirs: list[Path], out: Path) -> list[Path]:
    runs = [(d, *_load(d)) for d in run_dirs]
    check_same_protocol(runs)
    results = combine(runs)
    board = leaderboard(results)
    protocol = protocol_of(runs[0][1], runs[0][2])
    paths = [out / "leaderboard.md", out / "leaderboard.csv"]
    atomic_write(paths[0], _markdown(board, run_dirs, protocol))
    atomic_write(paths[1], board.to_csv(index=False))
    return paths
