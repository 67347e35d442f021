"""The leaderboard's aggregates on a constructed results table, against hand-computed values."""

import numpy as np
import pandas as pd
import pytest

from reports.leaderboard import friedman, leaderboard, unit_scores, write_leaderboard
from reports.stats import iqm, probability_of_improvement

# test accuracy per seed (rows) for two classifiers; `better` beats `none` by 2 pp on mlp and 4 pp on cnn
NONE = {"mlp": [0.80, 0.82, 0.78, 0.81, 0.79, 0.83], "cnn": [0.90, 0.88, 0.91, 0.89, 0.92, 0.90]}


def _results() -> pd.DataFrame:
    rows = []
    for strategy, shift in (
        ("none", {"mlp": 0.0, "cnn": 0.0}),
        ("better", {"mlp": 0.02, "cnn": 0.04}),
        ("worse", {"mlp": -0.05, "cnn": -0.01}),
    ):
        for classifier, accuracies in NONE.items():
            for seed, accuracy in enumerate(accuracies):
                jitter = 0.001 * ((seed * 7 + len(strategy)) % 5) if strategy != "none" else 0.0
                rows.append(
                    {
                        "key": f"{strategy}-{classifier}-{seed}",
                        "dataset": "digits",
                        "regime": "10",
                        "classifier": classifier,
                        "strategy": strategy,
                        "replicate": seed,
                        "status": "ok",
                        "test_accuracy": accuracy + shift[classifier] + jitter,
                        "gap_accuracy": 0.0,
                        "gap_loss": 0.0,
                        "strategy_params": "{}",
                        "budget_check": "converged",
                    }
                )
    return pd.DataFrame(rows)


def test_units_average_the_classifiers_of_a_seed():
    scores = unit_scores(_results())
    assert len(scores) == 3 * 6  # one unit per strategy and seed, not per classifier
    none = scores[scores["strategy"] == "none"].sort_values("replicate")["accuracy"].to_numpy()
    assert none == pytest.approx((np.array(NONE["mlp"]) + np.array(NONE["cnn"])) / 2)


def test_aggregates_match_hand_computed_values():
    results = _results()
    board, ranks = leaderboard(results)
    scores = unit_scores(results)
    row = board.set_index("strategy").loc["better"]
    mine = scores[scores["strategy"] == "better"].sort_values("replicate")["accuracy"].to_numpy()
    base = scores[scores["strategy"] == "none"].sort_values("replicate")["accuracy"].to_numpy()
    assert row["iqm_accuracy"] == pytest.approx(iqm(mine))
    assert row["iqm_gain"] == pytest.approx(iqm(mine - base))
    assert row["poi"] == pytest.approx(probability_of_improvement(mine, base))
    assert row["iqm_gain_low"] <= row["iqm_gain"] <= row["iqm_gain_high"]
    assert row["units"] == 6
    # a seed's two classifiers are one unit: W/T/L still count per classifier group
    assert row["wins"] + row["ties"] + row["losses"] == 2
    # Friedman over 6 units: better always first, worse always last
    assert ranks is not None
    assert ranks.rankdf.loc["better", "meanrank"] == pytest.approx(1.0)
    assert ranks.rankdf.loc["worse", "meanrank"] == pytest.approx(3.0)
    assert list(board["strategy"]) == ["better", "none", "worse"]


def test_friedman_needs_five_units():
    results = _results()
    assert friedman(unit_scores(results[results["replicate"] < 4])) is None
    board, ranks = leaderboard(results[results["replicate"] < 4])
    assert ranks is None and board["mean_rank"].isna().all()
    assert board["iqm_accuracy"].is_monotonic_decreasing


def test_written_leaderboard_has_the_cd_diagram(tmp_path, monkeypatch):
    import reports.leaderboard as lb

    monkeypatch.setattr(lb, "_load", lambda d: ({}, _results()))
    monkeypatch.setattr(lb, "protocol_of", lambda config, results, schema=None: {"seeds": 6})
    paths = write_leaderboard([tmp_path / "run"], tmp_path, allow_undertrained=True)  # a run at a test budget
    assert {p.name for p in paths} == {"leaderboard.md", "leaderboard.csv", "leaderboard-cd.png"}
    text = (tmp_path / "leaderboard.md").read_text()
    assert "critical difference CD" in text and "leaderboard-cd.png" in text
    assert (tmp_path / "leaderboard-cd.png").read_bytes()[:4] == b"\x89PNG"


def test_runs_whose_rows_differ_in_code_version_are_not_pooled():
    from bench.core.errors import UserError
    from reports.leaderboard import combine

    first = _results().assign(versions='{"strategy:none": "1"}')
    second = first.assign(key=first["key"] + "-b", versions='{"strategy:none": "2"}')
    assert len(combine([("a", {}, first), ("a2", {}, first.assign(key=first["key"] + "-c"))])) == 72
    with pytest.raises(UserError, match="different params or code versions"):
        combine([("a", {}, first), ("b", {}, second)])
