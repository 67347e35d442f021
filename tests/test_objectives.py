"""Strategies that add a loss on unlabelled images: fixmatch, and generation on top of it (a hybrid
with an objective). Common random numbers with `none`, no pool label and no held-out image
reaching the objective, cells with an objective training alone in a cohort, an objective from a
plugin, and bad input."""

import json
from dataclasses import replace

import pandas as pd
import pytest
import torch
from tests_support import SEMI, lie_about_pool_labels, tiny_config_with, without_times

from bench.protocol.config import parse_config
from bench.run.cell import cached_dataset, expand_grid
from bench.run.stages import run_cell, run_cohort
from bench.training.objectives.fixmatch import FixMatch

CPU = torch.device("cpu")
FIXMATCH = {"name": "fixmatch", "params": {"mu": 1, "threshold": 0.15}}  # 15 steps: 0.15 keeps some
ON_TOP = {  # generation on top of fixmatch: one paired comparison against FIXMATCH
    "name": "hybrid",
    "label": "vae+fixmatch",
    "params": {
        "generator": "vae",
        "generator_params": {"steps": 30},
        "objective": "fixmatch",
        "objective_params": {"mu": 1, "threshold": 0.15},
    },
}


def _cells(strategies: list, cohort: int = 1, **change) -> list:
    config = parse_config({**SEMI, "strategies": strategies, **change})
    return expand_grid(config, {d.title: cached_dataset(d).content_hash for d in config.datasets}, cohort)


def test_fixmatch_without_its_loss_trains_exactly_like_none_and_with_it_does_not(tmp_path):
    silent = {"name": "fixmatch", "label": "silent", "params": {"lambda_u": 0.0, "magnitude": 0.0}}
    every = {"name": "fixmatch", "label": "every", "params": {"mu": 1, "magnitude": 0.0, "threshold": 0.0}}
    none, quiet, loud = (run_cell(c, CPU, tmp_path, "r") for c in _cells(["none", silent, every]))
    assert none["status"] == quiet["status"] == loud["status"] == "ok"
    for column in ("test_accuracy", "val_correct", "curve", "seed"):  # the identity: nothing added
        assert quiet[column] == none[column], column
    assert quiet["unlabelled_per_step"] == 0
    # the same labelled batches and weights, plus a loss on every unlabelled image: it trains otherwise
    assert loud["seed"] == none["seed"] and loud["mask_rate"] == 1.0
    assert loud["unlabelled_per_step"] == loud["real_per_step"]  # mu = 1
    assert [p["train_loss"] for p in loud["curve"]] != [p["train_loss"] for p in none["curve"]]


def test_random_pool_labels_change_nothing_for_fixmatch_or_generation_on_top(tmp_path, monkeypatch):
    cells = _cells(["none", FIXMATCH, ON_TOP])
    honest = [run_cell(c, CPU, tmp_path / "honest", "r") for c in cells]
    lie_about_pool_labels(monkeypatch)
    lied_to = [run_cell(c, CPU, tmp_path / "lied-to", "r") for c in cells]
    assert [r["status"] for r in honest] == ["ok"] * 3 and honest[1]["mask_rate"] > 0
    for before, after in zip(honest, lied_to):
        assert without_times(after) == without_times(before), before["strategy"]


def test_the_objective_sees_pool_images_only(tmp_path, monkeypatch):
    from bench.run.cell import data_of, granted_unlabelled

    cell = _cells([FIXMATCH])[0]
    dataset, split = data_of(cell)
    pool = {bytes(image.flatten().tolist()) for image in granted_unlabelled(cell, dataset, split).images}
    held_out = {bytes(image.flatten().tolist()) for image in torch.cat([split.val.images, split.test.images])}
    seen: list[torch.Tensor] = []
    loss = FixMatch.loss

    def recording(self, forward, images, generator):
        seen.append(images.detach().clone())
        return loss(self, forward, images, generator)

    monkeypatch.setattr(FixMatch, "loss", recording)
    assert run_cell(cell, CPU, tmp_path, "r")["status"] == "ok"
    drawn = {bytes(image.flatten().tolist()) for image in (torch.cat(seen) * 255).round().to(torch.uint8)}
    assert len(seen) == cell.budget_steps(len(split.labelled)) and drawn <= pool
    assert len(drawn & held_out) <= len(pool & held_out)  # only pool images equal to a held-out one by chance


def test_a_cell_with_an_objective_trains_alone_in_a_cohort_and_as_it_would_alone(tmp_path):
    grouped = _cells(["none", "identity", FIXMATCH], cohort=2)
    assert [c.cohort_size for c in grouped] == [2, 2, 2]
    rows = run_cohort(tuple(grouped), CPU, tmp_path / "cohort", "r")
    assert [r.get("cohort_size") for r in rows] == [2, 2, None]  # none and identity together, fixmatch alone
    alone = run_cell(replace(grouped[2], cohort_size=1), CPU, tmp_path / "alone", "r")
    assert without_times(rows[2], "key") == without_times(alone, "key")


PLUGIN = '''
import torch
from bench.core.strategy import Param
from bench.training.objectives import Objective, register_objective


@register_objective("entropy-min")
class EntropyMinimization(Objective):
    """Entropy minimization (Grandvalet and Bengio 2005): confident predictions on the pool."""

    version = "3"
    params = {"weight": Param(0.1, low=0.0, high=1.0), "mu": Param(1, low=1, high=4)}

    def unlabelled_per_step(self, batch_size):
        return self.values["mu"] * batch_size

    def loss(self, forward, images, generator):
        log_p = forward(images).log_softmax(1)
        return -self.values["weight"] * (log_p.exp() * log_p).sum(1).mean(), torch.ones(())

    def passes(self, batch_size):
        return self.unlabelled_per_step(batch_size), 0, []
'''


def test_an_objective_from_a_plugin_trains_end_to_end(tmp_path, cli, monkeypatch):
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "objplug.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path / "plugins"))
    on_top = {
        **ON_TOP,
        "label": "vae+entmin",
        "params": {**ON_TOP["params"], "objective": "entropy-min", "objective_params": {"weight": 0.5}},
    }
    config = tiny_config_with(tmp_path, {**SEMI, "plugins": ["objplug"], "strategies": ["none", on_top]})
    code, out, err = cli("plan", config, "--out", tmp_path / "run")
    assert code == 0, err
    code, out, err = cli("run", config, "--out", tmp_path / "run")
    assert code == 0, err
    results = pd.read_parquet(tmp_path / "run" / "results.parquet")
    mine = results[results["strategy"] == "vae+entmin"]
    assert (mine["status"] == "ok").all() and (mine["unlabelled_per_step"] == mine["real_per_step"]).all()
    assert (mine["mask_rate"] == 1.0).all() and (mine["fit_data"] == "labelled+pool").all()
    assert all(json.loads(v)["objective:entropy-min"] == "3" for v in mine["versions"])


@pytest.mark.parametrize(
    "strategy, change, field",
    [
        ({"name": "fixmatch", "params": {"mu": 0}}, {}, "mu: 0 is out of range"),
        ({"name": "fixmatch", "params": {"lambda_u": -1}}, {}, "lambda_u: -1 is out of range"),
        ({"name": "fixmatch", "params": {"weak": "basic+nope"}}, {}, "unknown policy 'nope'"),
        ({"name": "fixmatch", "params": {"strong": "mixup"}}, {}, "strong: mixup mixes labels"),
        (FIXMATCH, {"unlabelled": "none"}, "strategies[1] (fixmatch): it learns from unlabelled images"),
        ({**ON_TOP, "params": {**ON_TOP["params"], "objective": "mean-teacher"}}, {}, "unknown objective"),
        (
            {**ON_TOP, "params": {"generator": "vae", "objective_params": {"mu": 2}}},
            {},
            "without an `objective`",
        ),
        (
            {**ON_TOP, "params": {**ON_TOP["params"], "objective_params": {"mu": 99}}},
            {},
            "objective_params.mu: 99 is out of range",
        ),
    ],
)
def test_bad_objective_input_is_one_clear_error_and_writes_nothing(tmp_path, cli, strategy, change, field):
    config = tiny_config_with(tmp_path, {**SEMI, "strategies": ["none", strategy], **change})
    code, _, err = cli("run", config, "--out", tmp_path / "run")
    assert code == 2 and err.startswith("augbench: error:") and len(err.strip().splitlines()) == 1, err
    assert field in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()
