"""Converged, or it does not count: the budget check, budget.steps: auto, the report and leaderboard
that say and refuse, and pseudo-label's threshold: auto, all decided on validation data."""

import json
from dataclasses import replace

import pandas as pd
import pytest
import torch
from conftest import TINY_CONFIG
from tests_support import tiny_config_with

from bench.core.images import ImageSet
from bench.core.strategy import FitContext
from bench.protocol.config import parse_config
from bench.run.budget import CheckFacts, describe_groups, generator_outcomes, outcomes, read_budget
from bench.run.cell import cached_dataset, data_of, expand_grid, make_strategy
from bench.run.check_seeds import budget_checks, more_check_seeds
from bench.run.resolution import best_resolution_pp, check_replicates, outcome, read_doubling, resolution_pp
from bench.run.rounds import Round, next_round
from bench.run.stages import fit_context
from bench.run.step_search import search_steps
from bench.training.metrics import correct_bits
from reports.tables import comparison_table
from strategies.teacher import auto_threshold

CPU = torch.device("cpu")
# 100 validation images, 2 checked seeds to start with: too few to resolve a 4-pp plateau here
UNRESOLVED = {
    "split": {"seed": 0, "val_per_class": 10},
    "budget": {"scale": 0.05, "check": "on", "plateau": 4, "check_seeds": 2, "max_steps": 15},
}
HASHES = {"digits": cached_dataset(parse_config(TINY_CONFIG).datasets[0]).content_hash}
SEVERITY = {"converged": 0, "unresolved": 1, "rising": 2}
# 400 validation images: a check of two seeds can resolve 1 pp (at best 0.87 pp)
CHECKED = {
    "budget": {"scale": 0.05, "check": "on", "max_steps": 15},  # 15: the budget, never raised
    "split": {"seed": 0, "val_per_class": 40},
    "classifiers": ["mlp"],
    "strategies": ["none"],
}


def test_a_tiny_budget_is_reported_unconverged_and_the_leaderboard_refuses_it(tmp_path, cli):
    code, out, _ = cli("run", tiny_config_with(tmp_path, CHECKED), "--out", tmp_path / "run")
    assert code == 0
    budget = read_budget(tmp_path / "run")
    # rising, read on more seeds than the first 2 where those did not resolve the plateau
    assert list(budget["outcome"]) == ["rising"] and budget["checked_seeds"].iloc[0] >= 2
    assert budget["check_steps"].iloc[0] == 2 * budget["budget_steps"].iloc[0]
    results = pd.read_parquet(tmp_path / "run" / "results.parquet")
    assert len(results) == 2 and (results["budget_check"] == "rising").all()  # the checks are no result rows
    assert "budget check: 0 of 1 group(s) converged" in out
    said = (tmp_path / "run" / "report" / "report.md").read_text().split("## What this run says")[1]
    assert said.lstrip().startswith("- Budget check: 0 of 1 groups") and "digits/5 mlp none" in said
    code, _, err = cli("leaderboard", tmp_path / "run", "--out", tmp_path / "board")
    assert code == 2 and "leaderboard refused" in err and "digits/5 mlp none" in err and "try at least" in err
    assert not (tmp_path / "board").exists()
    code, _, _ = cli("leaderboard", tmp_path / "run", "--out", tmp_path / "board", "--allow-undertrained")
    assert code == 0 and "Warning: undertrained" in (tmp_path / "board" / "leaderboard.md").read_text()


def test_a_rising_strategy_raises_its_triples_budget_inside_the_run_and_a_rerun_does_nothing(tmp_path, cli):
    change = {
        **CHECKED,
        "budget": {"scale": 0.05, "check": "on", "max_steps": 60},
        "strategies": ["none", "identity"],
    }
    config = tiny_config_with(tmp_path, change)
    code, out, err = cli("run", config, "--out", tmp_path / "run")
    assert code == 0, err
    assert "still rising at 15 steps: every strategy of it trains again at 30" in err
    budget = read_budget(tmp_path / "run")
    results = pd.read_parquet(tmp_path / "run" / "results.parquet")
    assert (budget["start_steps"] == 15).all() and budget["budget_steps"].nunique() == 1
    final = int(budget["budget_steps"].iloc[0])
    assert final in (30, 60) and (results["budget_steps"] == final).all() and len(results) == 4
    assert final == 60 or not (budget["outcome"] == "rising").any()  # raised until none rose, or the cap
    by = results.set_index(["strategy", "replicate"])["test_accuracy"]
    assert by["none"].tolist() == by["identity"].tolist()  # common random numbers at the raised budget
    said = (tmp_path / "run" / "report" / "report.md").read_text()
    assert f"digits/5 mlp from 15 to {final} steps" in said
    cells = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "run" / "cells").glob("*.json")}
    assert len(cells) > 4 + 4  # the cells at 15 steps stay in the folder, out of the tables
    code, _, err = cli("run", config, "--out", tmp_path / "run")
    assert code == 0 and "(0 already done" not in err
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "run" / "cells").glob("*.json")} == cells
    assert pd.read_parquet(tmp_path / "run" / "results.parquet").equals(results)


def test_the_default_budget_is_converged(tmp_path, cli):
    change = {**CHECKED, "budget": {"scale": 1.0, "check": "on", "plateau": 3}, "regimes": [10]}
    code, out, _ = cli("run", tiny_config_with(tmp_path, change), "--out", tmp_path / "run")
    assert code == 0
    budget = read_budget(tmp_path / "run")
    assert list(budget["outcome"]) == ["converged"], budget.to_dict("records")
    code, _, _ = cli("leaderboard", tmp_path / "run", "--out", tmp_path / "board")
    assert code == 0


def test_budget_check_off_runs_no_check_and_the_leaderboard_calls_it_unchecked(tmp_path, cli):
    code, out, _ = cli(
        "run",
        tiny_config_with(tmp_path, CHECKED),
        "--set",
        "budget.check=off",  # YAML's false
        "--out",
        tmp_path / "run",
    )
    assert code == 0 and list(read_budget(tmp_path / "run")["outcome"]) == ["unchecked"]
    assert len(list((tmp_path / "run" / "cells").glob("*.json"))) == 2
    code, _, err = cli("leaderboard", tmp_path / "run", "--out", tmp_path / "board")
    assert code == 2 and "unchecked" in err


N_VAL = 400


def _bits(right: int, first: int = 0) -> str:
    """val_correct of a model that got ``right`` of N_VAL validation images right, from ``first`` on."""
    wrong = (torch.arange(N_VAL) < first) | (torch.arange(N_VAL) >= first + right)
    return correct_bits(torch.eye(2)[wrong.long()], torch.zeros(N_VAL).long())


def _rows(strategy: str) -> list[dict]:
    return [
        {
            "key": f"{strategy}{r}",
            "dataset": "d",
            "regime": "10",
            "classifier": "cnn",
            "strategy": strategy,
            "replicate": r,
            "status": "ok",
            "budget_steps": 100,
            "n_val": N_VAL,
            "val_accuracy": 0.8,
            "val_correct": _bits(320),
            "gap_accuracy": 0.1,
            "gap_loss": 0.1,
            "test_accuracy": 0.8 + 0.01 * r + (0.05 if strategy != "none" else 0),
        }
        for r in range(4)
    ]


def _check(of: str, right: int, n: int = N_VAL) -> dict:
    return {
        "status": "ok",
        "budget_check_of": of,
        "budget_steps": 200,
        "n_val": n,
        "val_accuracy": right / n,
        "val_correct": _bits(right),
    }


def test_a_strategy_still_rising_is_flagged_on_its_side():
    rows = pd.DataFrame(_rows("none") + _rows("heavy"))
    checks = [_check(f"{s}{r}", 336 if s == "heavy" else 321) for s in ("none", "heavy") for r in (0, 1)]
    table = outcomes(rows, checks, plateau=1.0)
    assert dict(zip(table["strategy"], table["outcome"])) == {"none": "converged", "heavy": "rising"}
    assert table.set_index("strategy").loc["heavy", "val_gain_pp"] == pytest.approx(4.0)
    assert table["paired"].all()
    results = rows.merge(table.rename(columns={"outcome": "budget_check"})[["strategy", "budget_check"]])
    verdict = comparison_table(results).set_index("strategy").loc["heavy", "verdict"]
    assert verdict == "undertrained (strategy still rising)"  # +5 pp on every seed, yet not counted better


def test_the_generator_check_reports_what_the_doubled_fit_took_also_where_a_check_loaded_it():
    """A check cell that loads its doubled fit from the cache spends a fraction of a second on it
    (its ``fit_seconds``); the table shows what the fit itself took (``generator_fit_seconds``)."""
    rows = pd.DataFrame(_rows("vae")).assign(generator_steps=1000)
    fits = {0: (290.0, 289.7), 1: (0.06, 291.4)}  # seed 1's check found seed 1's doubled fit cached
    checks = [
        {**_check(f"vae{r}", 321), "generator_check_of": f"vae{r}", "budget_check_of": None}
        | {"budget_steps": 100, "generator_steps": 2000, "fit_seconds": cell, "generator_fit_seconds": fit}
        for r, (cell, fit) in fits.items()
    ]
    table = generator_outcomes(rows, checks, plateau=1.0)
    assert table["check_generator_steps"].iloc[0] == 2000 and table["checked_seeds"].iloc[0] == 2
    assert table["fit_seconds_doubled"].iloc[0] == pytest.approx(291.4)


def test_a_check_that_could_not_see_the_plateau_is_unresolved_and_refused(tmp_path, cli):
    """The same +0.25 pp gain is converged where the paired check resolves 1 pp, and unresolved where
    the two models also disagree on many images both ways (the same gain, read far less sharply)."""
    rows = pd.DataFrame(_rows("none"))
    sharp = outcomes(rows, [_check(f"none{r}", 321) for r in (0, 1)], plateau=1.0)
    assert sharp["outcome"].iloc[0] == "converged" and sharp["resolution_pp"].iloc[0] <= 1.0
    # right on images 40-360 where the base was right on 0-319: 81 images differ, 1 net gain
    noisy = [{**_check(f"none{r}", 321), "val_correct": _bits(321, first=40)} for r in (0, 1)]
    blunt = outcomes(rows, noisy, plateau=1.0)
    assert blunt["outcome"].iloc[0] == "unresolved" and blunt["resolution_pp"].iloc[0] > 1.0
    results = pd.DataFrame(_rows("none") + _rows("heavy"))
    results["budget_check"] = results["strategy"].map({"none": "unresolved", "heavy": "converged"})
    verdict = comparison_table(results).set_index("strategy").loc["heavy", "verdict"]
    assert verdict == "undertrained (none unresolved)"  # +5 pp on every seed, yet not counted better
    facts = CheckFacts(plateau=1.0, val_per_class=40)
    said = describe_groups(blunt, facts)
    assert "unresolved" in said and "budget.max_check_seeds:" in said and "split.val_per_class:" in said
    # a spread that no seed count the config takes could resolve: no seed count is suggested
    hopeless = describe_groups(blunt.assign(resolution_pp=20.0), facts)
    assert "budget.max_check_seeds" not in hopeless and "split.val_per_class:" in hopeless


def test_a_run_whose_check_is_unresolved_says_what_would_resolve_it_and_the_leaderboard_refuses_it(
    tmp_path, cli
):
    """100 validation images, 2 checked seeds and no more: the check can resolve 4 pp only where the
    two models disagree on almost nothing; trained models disagree on more, so it reads the gain too
    coarsely."""
    change = {**CHECKED, **UNRESOLVED, "budget": {**UNRESOLVED["budget"], "max_check_seeds": 2}}
    code, out, _ = cli("run", tiny_config_with(tmp_path, change), "--out", tmp_path / "run")
    assert code == 0
    budget = read_budget(tmp_path / "run")
    assert list(budget["outcome"]) == ["unresolved"] and budget["resolution_pp"].iloc[0] > 4
    assert "unresolved" in out and "split.val_per_class:" in out
    said = (tmp_path / "run" / "report" / "report.md").read_text().split("## What this run says")[1]
    assert "would resolve it" in said
    code, _, err = cli("leaderboard", tmp_path / "run", "--out", tmp_path / "board")
    assert code == 2 and "unresolved" in err and not (tmp_path / "board").exists()


def test_an_unresolved_check_reads_more_seeds_inside_the_run_beyond_the_protocols(tmp_path, cli):
    """The same check as above with budget.max_check_seeds at 8: the run adds the seeds the first
    read's spread asks for. The protocol has 2 seeds, so the added ones are check seeds: trained at
    the budget and doubled for the check alone, never rows of the tables."""
    change = {**CHECKED, **UNRESOLVED, "budget": {**UNRESOLVED["budget"], "max_check_seeds": 8}}
    config = tiny_config_with(tmp_path, change)
    code, out, err = cli("run", config, "--out", tmp_path / "run")
    assert code == 0, err
    assert "its budget check read 2 seed(s) to within" in err and "read again on" in err
    budget = read_budget(tmp_path / "run")
    row = budget.iloc[0]
    assert 2 < row["checked_seeds"] <= 8 and row["resolution_pp"] < 4.3  # 4.3 pp on 2 seeds
    assert row["outcome"] != "unresolved" or row["checked_seeds"] == 8
    records = [json.loads(p.read_text()) for p in (tmp_path / "run" / "cells").glob("*.json")]
    seeds = [r for r in records if r.get("check_seed") and "budget_check_of" not in r]
    doubled = {r["budget_check_of"] for r in records if "budget_check_of" in r}
    assert sorted(r["replicate"] for r in seeds) == list(range(2, row["checked_seeds"]))
    assert {r["key"] for r in seeds} <= doubled  # each check seed is doubled by a check of its own
    assert all("test_accuracy" not in r for r in seeds)  # scored on validation images only
    results = pd.read_parquet(tmp_path / "run" / "results.parquet")
    assert sorted(results["replicate"]) == [0, 1]  # the protocol's seeds alone are results
    cells = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "run" / "cells").glob("*.json")}
    code, _, err = cli("run", config, "--out", tmp_path / "run", "--set", "workers=0")
    assert code == 0 and " 1 worker(s)" in err  # the rounds replayed: nothing left, nothing trained
    assert "cell file(s) in" not in err  # no cell of its rounds is called foreign
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "run" / "cells").glob("*.json")} == cells
    assert read_budget(tmp_path / "run").equals(budget)
    # plan replays the finished rounds too: a check seed's lost cell file is the one cell to do
    next(p for p in (tmp_path / "run" / "cells").glob("*.json") if '"check_seed"' in p.read_text()).unlink()
    code, text, err = cli("plan", config, "--out", tmp_path / "run")
    assert code == 0 and f"to do: 1 of {len(cells)} cells" in text, text + err
    assert "budget.max_check_seeds seeds" in text


def test_a_check_adds_the_seeds_its_spread_asks_for_unless_it_clearly_rises():
    config = parse_config({**TINY_CONFIG, **CHECKED, "budget": {"check": "on", "max_check_seeds": 10}})
    group = {"dataset": "digits", "regime": "5", "classifier": "mlp"}

    def table(*rows):
        return pd.DataFrame([{**group, "checked_seeds": 2, **row} for row in rows])

    budget = table(
        {"strategy": "up", "val_gain_pp": 1.5, "resolution_pp": 2.0, "outcome": "rising"},
        # 4 pp with a standard error of 0.8 pp: above the plateau by a one-sided test, raised as it is
        # (and its triple with it: another classifier here)
        {
            "strategy": "steep",
            "classifier": "cnn",
            "val_gain_pp": 4.0,
            "resolution_pp": 2.0,
            "outcome": "rising",
        },
        {"strategy": "down", "val_gain_pp": -3.0, "resolution_pp": 2.0, "outcome": "unresolved"},
        {"strategy": "sharp", "val_gain_pp": 0.2, "resolution_pp": 0.9, "outcome": "converged"},
        {"strategy": "blunt", "val_gain_pp": 0.0, "resolution_pp": 5.0, "outcome": "unresolved"},
    )
    generators = table({"strategy": "gan", "val_gain_pp": 0.0, "resolution_pp": 1.5, "outcome": "unresolved"})
    seeds, said = more_check_seeds(config, budget, generators, {}, {"digits": 2})
    key = ("digits", "5", "mlp")
    assert seeds == {
        ("budget", (*key, "up")): 8,  # 2 x (2.0 / 1)^2, whichever way an unclear gain went
        ("budget", (*key, "down")): 8,
        ("budget", (*key, "blunt")): 10,  # 50 asked, budget.max_check_seeds allows 10
    }  # the generator check waits for its triple's budget to settle
    assert len(said) == 3
    settled = budget[budget["strategy"].isin(["sharp", "steep"])]
    assert more_check_seeds(config, settled, generators, {}, {"digits": 2})[0] == {
        ("generator", (*key, "gan")): 5  # ceil(2 x 1.5^2)
    }
    # read again on 8 seeds, one of whose cells failed: 7 read to within 1.1 pp need 9 read, 2 more
    again = table({"strategy": "up", "val_gain_pp": 0.0, "resolution_pp": 1.1, "outcome": "unresolved"})
    again["checked_seeds"] = 7
    assert more_check_seeds(config, again, table(), seeds, {"digits": 2})[0] == {
        **seeds,
        ("budget", (*key, "up")): 10,
    }
    # a strategy of the same triple rising by a resolved check: the budget doubles anyway, no seeds
    raised = pd.concat(
        [budget, table({"strategy": "sure", "val_gain_pp": 2.0, "resolution_pp": 0.8, "outcome": "rising"})]
    )
    assert more_check_seeds(config, raised, generators, {}, {"digits": 2})[0] == {}
    # the seeds a group's check reads: its first ones, then check seeds beyond the protocol's 2
    grid = expand_grid(parse_config({**TINY_CONFIG, "classifiers": ["mlp"], "strategies": ["none"]}), HASHES)
    wanted = {("budget", ("digits", "5", "mlp", "none")): 4}
    checks = budget_checks(config, grid, {"digits": 100}, wanted)
    assert [(c.replicate, c.check_seed, c.is_budget_check) for c in checks] == [
        (2, True, False),
        (3, True, False),
        (0, False, True),
        (1, False, True),
        (2, True, True),
        (3, True, True),
    ]
    assert checks[4].check_of == checks[0].key and len({c.key for c in checks + grid}) == 8


def test_a_raised_budget_checks_from_its_first_seeds_again():
    """Seeds added at 100 steps do not carry to the raised 200: the spread there decides them. The
    checks of a triple that was not raised keep theirs (their cells are the same)."""
    config = parse_config({**TINY_CONFIG, **CHECKED, "budget": {"check": "on", "max_check_seeds": 10}})
    columns = ["classifier", "strategy", "val_gain_pp", "resolution_pp", "outcome"]
    rows = [("mlp", "up", 2.0, 0.8, "rising"), ("cnn", "flat", 0.1, 0.9, "converged")]
    budget = pd.DataFrame(
        [
            {
                "dataset": "digits",
                "regime": 5,
                "checked_seeds": 6,
                "budget_steps": 100,
                **dict(zip(columns, row)),
            }
            for row in rows
        ]
    )
    added = {
        ("budget", ("digits", "5", "mlp", "up")): 6,
        ("generator", ("digits", "5", "mlp", "gan")): 6,
        ("budget", ("digits", "5", "cnn", "flat")): 6,
    }
    after, said = next_round(config, {"digits": 100}, budget, pd.DataFrame(), Round({}, added))
    assert after.raised == {("digits", 5, "mlp"): (100, 200)} and "again at 200" in said[0]
    assert after.seeds == {("budget", ("digits", "5", "cnn", "flat")): 6}


def test_a_paired_resolution_is_at_most_the_unpaired_one_on_the_same_models(tmp_path, cli):
    change = {**CHECKED, "seeds": 2, "regimes": [10]}
    code, _, err = cli("run", tiny_config_with(tmp_path, change), "--out", tmp_path / "run")
    assert code == 0, err
    records = [json.loads(p.read_text()) for p in (tmp_path / "run" / "cells").glob("*.json")]
    base = {r["key"]: r for r in records if "budget_check_of" not in r}
    checks = [r for r in records if "budget_check_of" in r]
    assert len(checks) == 2 and all(len(c["val_correct"]) == 2 * -(-400 // 8) for c in checks)
    paired = [read_doubling(base[c["budget_check_of"]], c) for c in checks]
    unpaired = [read_doubling(base[c["budget_check_of"]], {**c, "val_correct": ""}) for c in checks]
    assert all(p.paired for p in paired) and not any(u.paired for u in unpaired)
    assert [p.gain for p in paired] == pytest.approx([u.gain for u in unpaired])  # the same gains
    assert resolution_pp(paired, 1.0) <= resolution_pp(unpaired, 1.0)
    assert resolution_pp(paired, 1.0) < 0.9 * resolution_pp(unpaired, 1.0)  # and far sharper


def test_a_resume_with_only_checks_left_counts_them_for_its_workers(tmp_path, cli):
    change = {**CHECKED, "seeds": 2, "regimes": [10]}
    config = tiny_config_with(tmp_path, change)
    code, _, err = cli("run", config, "--out", tmp_path / "run")
    assert code == 0, err
    for path in (tmp_path / "run" / "cells").glob("*.json"):
        if "budget_check_of" in json.loads(path.read_text()):
            path.unlink()  # every cell of the grid done, its 2 checks not
    # automatic workers (up to one per core: 2 here) for the 2 checks left, where 1 was counted from
    # the grid's cells alone
    code, _, err = cli("run", config, "--out", tmp_path / "run", "--set", "workers=0")
    assert code == 0 and "(2 already done)" in err and " 2 worker(s)" in err, err[-1500:]


def test_check_seeds_follow_the_resolution_the_validation_set_allows():
    assert check_replicates(200, 1.0, 5) == 4  # 200 images: three seeds cannot resolve 1 pp even at best
    assert best_resolution_pp(200, 3, 1.0) > 1.0 >= best_resolution_pp(200, 4, 1.0)
    assert check_replicates(2000, 1.0, 5) == 2  # two seeds can resolve 1 pp at best
    assert check_replicates(200, 3.0, 5) == 2
    assert check_replicates(200, 1.0, 1) == 1
    assert check_replicates(200, 1.0, 5, "3") == 3
    assert best_resolution_pp(400, 4, 1.0) == pytest.approx(best_resolution_pp(800, 2, 1.0))  # images x seeds


def _auto_cell(floor: int):
    config = parse_config(
        {**TINY_CONFIG, **CHECKED, "budget": {"steps": "auto", "floor": floor}, "regimes": [10]}
    )
    return expand_grid(config, {d.title: cached_dataset(d).content_hash for d in config.datasets})[0]


def test_steps_auto_is_deterministic_and_reads_by_the_checks_rule(tmp_path):
    cell = _auto_cell(5)
    first = search_steps(cell, CPU, tmp_path / "a", say=lambda line: None)
    again = search_steps(cell, CPU, tmp_path / "b", say=lambda line: None)
    assert {**first, "seconds": 0} == {**again, "seconds": 0}
    checks = first["checks"]
    assert checks[0]["steps"] == 300  # the recipe's budget (300 steps), not the floor below it
    assert all(c["doubled"] == 2 * c["steps"] for c in checks)
    assert all(c["outcome"] == outcome(c["gain_pp"], c["resolution_pp"], 1.0) for c in checks)
    assert [c for c in checks if c["steps"] == first["steps"]][-1]["outcome"] == first["outcome"]
    if first["outcome"] == "converged" and first["steps"] // 2 >= 5:  # it went down as far as it could
        assert [c["outcome"] for c in checks if c["doubled"] == first["steps"]] not in ([], ["converged"])
    if checks[0]["outcome"] != "converged":  # never below the recipe's budget without a resolved check
        assert first["steps"] >= 300
    above = search_steps(_auto_cell(400), CPU, tmp_path / "c", say=lambda line: None)
    assert above["checks"][0]["steps"] == 400 and above["steps"] >= 400  # the floor bounds it below


@pytest.mark.slow  # two searches of the mlp from 300 steps: about 45 s on 2 cores
def test_steps_auto_on_the_grid_reads_every_strategy_and_a_rising_one_holds_it_up(tmp_path):
    strong = {
        "name": "classical",
        "label": "strong",
        "params": {"policy": "trivialaugment", "magnitude": 1.0},
    }
    change = {"budget": {"steps": "auto", "floor": 20}, "regimes": [10], "strategies": ["none", strong]}
    alone = parse_config({**TINY_CONFIG, **CHECKED, **change})
    on_grid = parse_config(
        {**TINY_CONFIG, **CHECKED, **change, "budget": {**change["budget"], "search": "grid"}}
    )
    hashes = {d.title: cached_dataset(d).content_hash for d in alone.datasets}
    said: list[str] = []
    none_only = search_steps(expand_grid(alone, hashes)[0], CPU, tmp_path / "a", say=said.append)
    assert all(" none " in line for line in said)
    grid = expand_grid(on_grid, hashes)
    said.clear()
    both = search_steps(grid[0], CPU, tmp_path / "b", say=said.append, grid=grid)
    for check in both["checks"]:  # each doubling read on both strategies, decided by the less converged
        lines = [line for line in said if f"from {check['steps']} to {check['doubled']} steps" in line]
        assert sorted(line.split(" mlp: ")[1].split()[0] for line in lines) == ["none", "strong"]
        assert check["outcome"] == max((line.rsplit(": ", 1)[1] for line in lines), key=SEVERITY.get)
    # a strategy can only hold the search up; here trivialaugment at full magnitude still rises from 300
    # to 600 steps (+2.0 pp on 2026-12-07) where none alone stops at 300 (+0.0 pp, unresolved)
    assert both["steps"] > none_only["steps"]


def test_steps_auto_trains_every_strategy_of_the_group_for_the_steps_found(tmp_path, cli):
    change = {
        **CHECKED,
        "budget": {"steps": "auto", "floor": 40},
        "regimes": [10],
        "seeds": 2,
        "strategies": ["none", "identity"],
    }
    config = tiny_config_with(tmp_path, change)
    code, out, err = cli("run", config, "--out", tmp_path / "run")
    assert code == 0 and "steps: auto: digits/10 mlp:" in err, err[-1500:]
    results = pd.read_parquet(tmp_path / "run" / "results.parquet")
    assert results["budget_steps"].nunique() == 1 and results["budget_steps"].iloc[0] >= 40
    by = results.set_index(["strategy", "replicate"])["test_accuracy"]
    assert by["none"].tolist() == by["identity"].tolist()  # common random numbers at the steps found
    # a resume with automatic workers (up to one per core: 2 here) counts the cells left at the steps
    # found (none), not at the keys from before the search (all of them)
    code, out, err = cli("run", config, "--out", tmp_path / "run", "--set", "workers=0")
    assert code == 0 and "(8 already done)" in err and " 1 worker(s)" in err, err[-1500:]


def test_threshold_auto_reads_validation_labels_only():
    val_probabilities = torch.tensor([[0.99, 0.01], [0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [0.6, 0.4]])
    right = torch.tensor([0, 0, 0, 1, 0])  # the 0.7-sure label is wrong
    assert auto_threshold(val_probabilities, right) == pytest.approx(0.8)
    assert auto_threshold(val_probabilities, torch.tensor([0, 0, 0, 0, 0])) == pytest.approx(0.6)
    assert auto_threshold(val_probabilities, torch.tensor([1, 1, 1, 1, 1])) == 1.0


def test_pseudo_label_auto_never_sees_test_images(tmp_path, request):
    """threshold: auto is the same with every test image and label poisoned where any route reads
    them (``poisoned_data``), and moves with the validation labels, which it does read."""
    config = parse_config(
        {
            **TINY_CONFIG,
            "regimes": [10],
            "unlabelled": "pool",
            "classifiers": ["mlp"],
            "seeds": 1,
            "strategies": [{"name": "pseudo-label", "params": {"threshold": "auto"}}],
        }
    )
    cell = expand_grid(config, {d.title: cached_dataset(d).content_hash for d in config.datasets})[0]

    def fitted(folder, relabel=lambda labels: labels) -> dict:
        dataset, split = data_of(cell)
        ctx = fit_context(cell, dataset, split, CPU, tmp_path / folder)
        ctx = FitContext(**{**ctx.__dict__, "val": ImageSet(ctx.val.images, relabel(ctx.val.labels))})
        return make_strategy(cell.strategy).fit(split.labelled, ctx).info

    clean = fitted("clean")
    assert 0.0 < clean["pseudo_label_threshold"] < 1.0  # a threshold it chose, not the all-wrong 1.0
    assert fitted("flipped", lambda labels: (labels + 1) % 10)["pseudo_label_threshold"] == 1.0
    request.getfixturevalue("poisoned_data")
    assert fitted("poisoned") == clean


@pytest.mark.parametrize(
    "change, expected",
    [
        ({"budget": {"plateau": 0}}, "budget.plateau: 0 is out of range"),
        ({"budget": {"plateau": 101}}, "budget.plateau: 101 is out of range"),
        ({"budget": {"steps": "auto", "scale": 0.5}}, "budget.scale: 0.5 together with budget.steps: auto"),
        ({"budget": {"steps": "many"}}, "budget.steps: 'many' is not one of recipe, auto"),
        ({"budget": {"check": "maybe"}}, "budget.check: 'maybe' is not one of on, off"),
        ({"budget": {"check_seeds": 0}}, "budget.check_seeds: 0 is out of range"),
        (
            {"budget": {"max_steps": 10, "plateau": 3}},
            "budget.max_steps: 10 is below the budget of mlp (300 steps)",
        ),
        ({"budget": {"max_steps": 20.5}}, "budget.max_steps: expected an integer, got 20.5"),
        ({"budget": {"check_seeds": "some"}}, "budget.check_seeds: expected an integer, got 'some'"),
        (  # 100 validation images, 2 seeds and no more: 1.7 pp at best
            {"budget": {"check": "on", "plateau": 1, "max_check_seeds": 2}},
            "budget.plateau: 1 pp cannot be resolved on digits's 100 validation images",
        ),
        (  # 16 seeds at most (auto): 0.34 pp at best
            {"budget": {"check": "on", "plateau": 0.3}},
            "budget.plateau: 0.3 pp cannot be resolved on digits's 100 validation images with 16 checked",
        ),
        (
            {"budget": {"check": "on", "check_seeds": 2, "max_check_seeds": 1}},
            "budget.max_check_seeds: 1 is below the 2 seed(s) each check starts with on digits",
        ),
        ({"budget": {"max_check_seeds": 0}}, "budget.max_check_seeds: 0 is out of range"),
        (
            {"strategies": [{"name": "pseudo-label", "params": {"threshold": "auto"}}]},
            "it learns from unlabelled images",
        ),
        (
            {"strategies": [{"name": "pseudo-label", "params": {"threshold": "sure"}}], "unlabelled": "pool"},
            "threshold: expected a number, got 'sure'",
        ),
    ],
)
def test_bad_budget_input(tmp_path, cli, change, expected):
    code, _, err = cli("run", tiny_config_with(tmp_path, change), "--out", tmp_path / "run")
    assert code == 2 and expected in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_bf16_on_the_cpu_keys_its_cells_and_keeps_common_random_numbers(tmp_path, cli):
    """precision: bf16 on the CPU (auto picks it where the CPU computes bf16 natively): the precision
    enters the cells' keys and rows, and an identity strategy still scores exactly like `none`."""
    change = {"strategies": ["none", "identity"], "classifiers": ["cnn"], "precision": "bf16"}
    code, _, err = cli("run", tiny_config_with(tmp_path, change), "--out", tmp_path / "bf16")
    assert code == 0, err
    code, _, err = cli(
        "run", tiny_config_with(tmp_path, {**change, "precision": "fp32"}), "--out", tmp_path / "fp32"
    )
    assert code == 0, err
    bf16, fp32 = (pd.read_parquet(tmp_path / name / "results.parquet") for name in ("bf16", "fp32"))
    assert (bf16["precision"] == "bf16").all() and (fp32["precision"] == "fp32").all()
    assert not set(bf16["key"]) & set(fp32["key"])
    by = bf16.set_index(["strategy", "replicate"])["test_accuracy"]
    assert by["none"].tolist() == by["identity"].tolist()
    assert (bf16["test_accuracy"] > 0.2).all()  # it learns: above chance (10%) at this tiny budget (15 steps)


def test_checks_name_their_cells_and_train_alone_also_in_cohorts():
    from bench.run.cell import cells_of, cohorts
    from bench.run.check_seeds import budget_checks

    config = parse_config({**TINY_CONFIG, "budget": {"scale": 0.05}, "cohort": 2, "seeds": 3})
    grid = expand_grid(
        config, {d.title: cached_dataset(d).content_hash for d in config.datasets}, cohort_size=2
    )
    checks = budget_checks(config, grid, {"digits": 2000})  # two seeds resolve 1 pp on 2000 images
    assert len(checks) == 4 * 2 and {c.replicate for c in checks} == {0, 1}
    assert {c.key for c in checks}.isdisjoint(c.key for c in grid)
    bases = [replace(c, budget_factor=1) for c in checks]
    assert {b.key for b in bases} <= {c.key for c in grid}  # what each check's budget_check_of names
    assert all(c.train_seed == b.train_seed and c.fit_seed == b.fit_seed for c, b in zip(checks, bases))
    items = cohorts(grid + checks)
    assert all(len(cells_of(item)) == 1 for item in items if any(c.is_budget_check for c in cells_of(item)))
    off = parse_config({**TINY_CONFIG, "budget": {"scale": 0.05, "check": "off"}})
    assert budget_checks(off, expand_grid(off, {"digits": "h"}), {"digits": 100}) == []


@pytest.mark.slow  # two GAN fits (300 and 600 steps) and a run: about a minute on 2 cores
def test_a_gan_at_a_tenth_of_its_steps_is_not_called_converged_by_the_generator_check(tmp_path, cli):
    """The generator check fits the GAN again at twice its steps for the checked seed and pairs the
    classifiers on the validation images: at 300 of its 3,000 steps it must not pass as converged,
    its comparison is 'undertrained generator', and the leaderboard refuses the run."""
    change = {
        **CHECKED,
        "regimes": [10],
        "strategies": ["none", {"name": "gan", "params": {"steps": 300, "ratio": 1.0}}],
        "budget": {
            "scale": 0.4,
            "check": "on",
            "plateau": 2,
            "check_seeds": 1,
            "max_check_seeds": 1,
            "max_steps": 120,
        },
    }
    code, out, err = cli("run", tiny_config_with(tmp_path, change), "--out", tmp_path / "run")
    assert code == 0, err
    assert "2 budget checks at 2x and 1 generator checks at 2x" in err
    generators = pd.read_csv(tmp_path / "run" / "generator.csv")
    assert list(generators["strategy"]) == ["gan"] and generators["check_generator_steps"].iloc[0] == 600
    assert generators["outcome"].iloc[0] in ("rising", "unresolved")
    assert "generator check: 0 of 1 generative group(s) converged" in out
    results = pd.read_parquet(tmp_path / "run" / "results.parquet")
    assert len(results) == 4 and results.loc[results["strategy"] == "none", "generator_check"].isna().all()
    verdict = pd.read_csv(tmp_path / "run" / "report" / "tables" / "comparison.csv").set_index("strategy")
    assert verdict.loc["gan", "verdict"].startswith("undertrained generator (")
    records = [json.loads(p.read_text()) for p in (tmp_path / "run" / "cells").glob("*.json")]
    check = next(r for r in records if "generator_check_of" in r)
    base = next(r for r in records if r["key"] == check["generator_check_of"])
    assert check["seed"] == base["seed"] and check["generator_steps"] == 2 * base["generator_steps"]
    assert "test_accuracy" not in check  # a check reads validation images only
    code, _, err = cli("leaderboard", tmp_path / "run", "--out", tmp_path / "board")
    assert code == 2 and "generators digits/10 mlp gan" in err
