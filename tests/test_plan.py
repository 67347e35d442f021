"""`augbench plan`: the work left after resume and a calibrated estimate, before anything runs.
(How close the estimate comes to the measured time is a benchmark in the closing note; these
tests check the plan's structure and bookkeeping.)"""

import json

import pytest
from tests_support import fast_params, tiny_config_with


def _plan(cli, config, out, tmp_path):
    code, text, err = cli("plan", config, "--out", out, "--json", tmp_path / "plan.json")
    assert code == 0, err
    return json.loads((tmp_path / "plan.json").read_text()), text


def test_plan_counts_the_work_left_and_estimates_it(cli, tmp_path):
    gan = {"name": "gan", "params": {**fast_params("gan"), "ratio": 1.0}}
    config = tiny_config_with(
        tmp_path, {"strategies": ["none", gan], "seeds": 2, "quality": {"enabled": True, "samples": 50}}
    )
    out = tmp_path / "run"
    plan, text = _plan(cli, config, out, tmp_path)
    assert (plan["cells"], plan["cells_todo"]) == (8, 8)  # 2 strategies x 2 classifiers x 2 seeds
    assert plan["generator_fits"] == 2  # one per seed, shared by both classifiers
    assert plan["quality_jobs"] == 4 and plan["evaluators"] == 2  # per (strategy, seed); per seed
    assert set(plan["seconds"]) == {"training", "generator fits", "quality"}
    assert all(seconds > 0 for seconds in plan["seconds"].values())
    assert plan["startup_seconds"] > 0
    assert plan["wall_seconds"] == pytest.approx(
        plan["startup_seconds"] + sum(plan["seconds"].values()) / plan["workers"]
    )
    assert plan["peak_mem_mb"] > 0
    assert "to do: 8 of 8 cells, 2 generator fit(s), 4 quality job(s)" in text
    assert "doubling every generator's steps (the run never does it itself): 2 fit(s)" in text
    assert not out.exists()  # planning writes nothing into the run folder

    code, _, err = cli("run", config, "--out", out)
    assert code == 0, err
    assert "estimated" in err.splitlines()[0]
    plan, text = _plan(cli, config, out, tmp_path)
    assert (plan["cells_todo"], plan["generator_fits"], plan["wall_seconds"]) == (0, 0, 0)


def test_the_calibration_is_measured_once_per_device(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("AUGBENCH_CACHE", str(tmp_path / "cache"))
    config = tiny_config_with(tmp_path, {})
    _plan(cli, config, tmp_path / "run", tmp_path)
    calibration = tmp_path / "cache" / "calibration.json"
    first = calibration.read_text()
    assert {entry["what"][0] for entry in json.loads(first).values()} >= {
        "classifier",
        "transform",
        "quality",
    }
    _plan(cli, config, tmp_path / "run", tmp_path)
    assert calibration.read_text() == first


def test_run_never_calibrates_and_says_how_to_get_an_estimate(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("AUGBENCH_CACHE", str(tmp_path / "cache"))  # no calibration cached yet
    config = tiny_config_with(tmp_path, {"strategies": ["none"], "classifiers": ["mlp"], "seeds": 1})
    code, _, err = cli("run", config, "--out", tmp_path / "run")
    assert code == 0, err
    assert "run `augbench plan` for an estimate" in err.splitlines()[0]
    assert not (tmp_path / "cache" / "calibration.json").exists()


def test_a_broken_calibration_file_never_stops_a_run(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("AUGBENCH_CACHE", str(tmp_path / "cache"))
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "calibration.json").write_text('{"x": {"what": 1')  # cut off mid-write
    config = tiny_config_with(tmp_path, {"strategies": ["none"], "classifiers": ["mlp"], "seeds": 1})
    code, _, err = cli("run", config, "--out", tmp_path / "run")
    assert code == 0 and "for an estimate" in err.splitlines()[0], err


def test_plan_mde_says_the_seeds_each_comparison_needs_from_the_run_s_spread(cli, tmp_path):
    from bench.run.store import read_results
    from reports.stats import seeds_for_effect
    from reports.tables import per_seed_deltas

    config = tiny_config_with(tmp_path, {"classifiers": ["mlp"], "seeds": 3})
    out = tmp_path / "run"
    code, _, err = cli("plan", config, "--out", out, "--mde", "2")
    assert code == 2 and "--mde: no earlier run" in err and not out.exists()
    assert cli("run", config, "--out", out)[0] == 0
    code, text, err = cli("plan", config, "--out", out, "--mde", "2", "--json", tmp_path / "plan.json")
    assert code == 0, err
    deltas = per_seed_deltas(read_results(out / "results.parquet"))["delta"]
    needed = seeds_for_effect(0.02, deltas.std(ddof=1), 0.05)  # one comparison: Holm's level is 0.05
    assert f"seeds needed {needed}" in text and "0.05 / 1 comparisons" in text
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert plan["seeds"] == needed and plan["plan_at_those_seeds"]["cells"] == 2 * needed
    assert f"--set seeds={needed}" in text


def test_the_schedule_follows_the_critical_path():
    from bench.costs.plan import CellWork, schedule_seconds

    # one long generator fit that three cells need: the second worker waits for it, not 30 s of work shared
    shared = [
        CellWork(1.0, [("generator:g", 20.0)]),
        CellWork(1.0, [("generator:g", 0.0)]),
        CellWork(1.0, [("generator:g", 0.0)]),
        CellWork(1.0),
    ]
    # the other worker waits for the fit: not 24 / 2 = 12 s
    assert schedule_seconds(shared, workers=2) == 22.0
    assert schedule_seconds(shared, workers=1) == 24.0  # one worker: everything in turn
    # a long cell at the end of the grid ends the run after the others
    assert schedule_seconds([CellWork(1.0)] * 4 + [CellWork(10.0)], workers=2) == 12.0
    assert schedule_seconds([], workers=2) == 0.0


class _Costs:
    """A calibration with fixed costs that records what it is asked."""

    device = __import__("torch").device("cpu")

    def __init__(self):
        self.asked = []

    def classifier(self, entry, shape, num_classes, synthetic):
        return {"step_s": 1.0, "peak_mem_mb": 1.0, "predict_s_per_image": 0.0}

    def cohort(self, entry, shape, num_classes, synthetic, size):
        self.asked.append(("cohort", size))
        return {"step_s": 1.5, "peak_mem_mb": 2.0}

    def transform(self, *args):
        return {"step_s": 0.0}

    def generator(self, strategy, shape, num_classes, stacked=1):
        self.asked.append(("generator", stacked))
        return {"step_s": 10.0 * stacked**0.5, "peak_mem_mb": 3.0, "sample_s_per_image": 0.0}


def test_the_plan_costs_cohorts_and_stacked_fits_as_the_run_forms_them(tmp_path):
    from conftest import TINY_CONFIG

    from bench.costs.plan import _make_plan
    from bench.protocol.config import parse_config
    from bench.run.cell import cached_dataset, expand_grid

    vae = {"name": "vae", "params": {"steps": 7}}
    config = parse_config(
        {
            **TINY_CONFIG,
            "strategies": ["none", vae],
            "classifiers": ["mlp"],
            "seeds": 3,
            "quality": {"enabled": False},
        }
    )
    hashes = {"digits": cached_dataset(config.datasets[0]).content_hash}
    costs = _Costs()
    plan = _make_plan(config, expand_grid(config, hashes, 2), set(), tmp_path, costs, workers=1)
    steps = expand_grid(config, hashes, 1)[0].classifier_entry.training_recipe.steps(50, config.budget.scale)
    # items: none seeds 0+1 (a cohort), none 2 with vae 0 (a cohort of two batch shapes), vae 1+2 (a cohort);
    # the vae's generators: seeds 0+1 as one stacked fit, seed 2 alone
    assert sorted(costs.asked) == [("cohort", 2)] * 2 + [("generator", 1), ("generator", 2)]
    assert plan.generator_fits == 3
    assert plan.seconds["generator fits"] == pytest.approx(7 * (10.0 * 2**0.5 + 10.0))
    assert plan.seconds["training"] == pytest.approx(steps * (1.5 + 1.0 + 1.0 + 1.5))
    assert plan.schedule_seconds == pytest.approx(sum(plan.seconds.values()))  # one worker


def test_the_plan_trains_a_pseudo_label_teacher_once_per_fit_data(tmp_path):
    from conftest import TINY_CONFIG

    from bench.costs.plan import TEACHER_NET, _make_plan
    from bench.protocol.config import parse_config
    from bench.run.cell import cached_dataset, expand_grid

    gan = {"name": "gan", "params": {"steps": 7, "generator_data": "pseudo-labelled"}}
    config = parse_config(
        {
            **TINY_CONFIG,
            "regimes": [10],
            "unlabelled": "pool",
            "classifiers": ["mlp"],
            "seeds": 2,
            "strategies": ["none", "pseudo-label", gan],
            "quality": {"enabled": False},
        }
    )
    cells = expand_grid(config, {"digits": cached_dataset(config.datasets[0]).content_hash})
    plan = _make_plan(config, cells, set(), tmp_path, _Costs(), workers=1)
    steps = TEACHER_NET.training_recipe.steps(100, config.budget.scale)  # 10 labelled images a class
    # one per seed, shared by both
    assert plan.seconds["pseudo-label teachers"] == pytest.approx(2 * steps * 1.0)
    assert plan.schedule_seconds == pytest.approx(sum(plan.seconds.values()))


class _SyntheticCosts(_Costs):
    """Fixed costs where a step with synthetic images costs twice a plain one."""

    def classifier(self, entry, shape, num_classes, synthetic):
        return {"step_s": 2.0 if synthetic else 1.0, "peak_mem_mb": 1.0, "predict_s_per_image": 0.0}


def test_the_plan_costs_the_images_each_strategy_says_its_fit_adds(tmp_path):
    """pseudo-label's pool images join its training batches: the plan asks the strategy how many
    (the method its fit uses), so they are costed as a generator's images are."""
    from conftest import TINY_CONFIG

    from bench.costs.plan import _make_plan
    from bench.protocol.config import parse_config
    from bench.run.cell import cached_dataset, expand_grid, make_strategy
    from bench.training.loop import batch_split

    config = parse_config(
        {
            **TINY_CONFIG,
            "regimes": [10],
            "unlabelled": "pool",
            "classifiers": ["mlp"],
            "seeds": 1,
            "strategies": ["pseudo-label"],
            "quality": {"enabled": False},
        }
    )
    cell = expand_grid(config, {"digits": cached_dataset(config.datasets[0]).content_hash})[0]
    plan = _make_plan(config, [cell], set(), tmp_path, _SyntheticCosts(), workers=1)
    recipe = cell.classifier_entry.training_recipe
    added = make_strategy(cell.strategy).synthetic_count(100)  # 10 labelled images a class
    _, synthetic_per_step = batch_split(recipe.batch_size, 100, added, "add")
    assert added == 100 and synthetic_per_step > 0
    expected = cell.budget_steps(100) * (1.0 + synthetic_per_step / recipe.batch_size)
    assert plan.seconds["training"] == pytest.approx(expected)
