"""Imbalanced regimes: long-tailed labelled draws, `as-is`, class-filling synthetic images
(`balance: true`), per-class recall and the smallest third, and the report's per-class table."""

import json

import pandas as pd
import pytest
import torch
from conftest import TINY_CONFIG
from tests_support import digits_images_npz, fast_params, tiny_config_with

from bench.core import FitContext
from bench.data.sets import DatasetEntry, load_dataset
from bench.data.splits import LongTail, SplitSpec, make_split
from bench.protocol.config import load_config, parse_config
from bench.training.metrics import class_recall, smallest_third
from strategies import STRATEGIES
from strategies.sampling import filling_labels


def test_long_tail_counts_follow_the_cifar_lt_convention():
    assert LongTail(10, 100).counts(10) == [100, 77, 60, 46, 36, 28, 22, 17, 13, 10]
    assert str(LongTail(10, 100)) == "lt10x100"
    split = make_split(load_dataset(DatasetEntry("digits")), LongTail(10, 50), SplitSpec(val_per_class=10), 0)
    assert torch.bincount(split.labelled.labels).tolist() == LongTail(10, 50).counts(10)


def test_regime_config_forms_and_their_errors():
    config = parse_config({**TINY_CONFIG, "regimes": [5, "all", {"long_tail": 10, "n_max": 40}]})
    assert config.regimes == (5, None, LongTail(10.0, 40))
    assert parse_config({**TINY_CONFIG, "regimes": ["as-is"]}).regimes == (None,)  # an alias of all
    with pytest.raises(Exception, match="regime.s. all given twice"):
        parse_config({**TINY_CONFIG, "regimes": ["all", "as-is"]})  # one regime, so the same cells twice
    for bad, message in [
        ({"long_tail": 10}, "n_max"),
        ({"long_tail": 0.5, "n_max": 4}, r"long_tail: 0.5 is out of range \(must be >= 1\)"),
        ({"long_tail": 10, "n_max": 4, "x": 1}, "long-tailed regime"),
    ]:
        with pytest.raises(Exception, match=message):
            parse_config({**TINY_CONFIG, "regimes": [bad]})


def test_a_long_tail_asking_more_than_a_class_has_is_refused(cli, tmp_path):
    config = tiny_config_with(tmp_path, {"regimes": [{"long_tail": 10, "n_max": 1000}]})
    code, _, err = cli("run", config, "--out", tmp_path / "run")
    assert code == 2 and "regimes=lt10x1000 asks for 1000 images of class 0" in err
    assert not (tmp_path / "run").exists()


def test_filling_labels_fill_the_small_classes_first():
    real = torch.tensor([0] * 10 + [1] * 6 + [2] * 2)  # shortfalls 0, 4, 8
    assert torch.bincount(filling_labels(12, real, 3), minlength=3).tolist() == [0, 4, 8]
    assert torch.bincount(filling_labels(6, real, 3), minlength=3).tolist() == [0, 2, 4]  # in proportion
    assert torch.bincount(filling_labels(18, real, 3), minlength=3).tolist() == [2, 6, 10]  # then every class
    assert torch.bincount(filling_labels(9, torch.arange(9) % 3, 3)).tolist() == [3, 3, 3]  # balanced: cycle


def test_smallest_third_and_class_recall():
    assert smallest_third([100, 77, 60, 46, 36, 28, 22, 17, 13, 10]) == [6, 7, 8, 9]
    logits = torch.eye(3)[[0, 1, 1, 2]]
    assert class_recall(logits, torch.tensor([0, 1, 2, 2])) == [1.0, 1.0, 0.5]


def test_a_long_tailed_run_reports_per_class_gains(cli, tmp_path):
    gan = {"name": "gan", "label": "gan-balance", "params": {**fast_params("gan"), "balance": True}}
    config = tiny_config_with(
        tmp_path,
        {
            "regimes": [{"long_tail": 5, "n_max": 15}],
            "classifiers": ["mlp"],
            "strategies": ["none", gan],
            "quality": {"enabled": False},
        },
    )
    code, _, err = cli("run", config, "--out", tmp_path / "run")
    assert code == 0, err
    results = pd.read_csv(tmp_path / "run" / "results.csv")
    assert set(results["regime"]) == {"lt5x15"}
    gan_rows = results[results["strategy"] == "gan-balance"]
    assert (gan_rows["n_synthetic"] == gan_rows["n_real"]).all()
    recall = json.loads(results["test_class_recall"].iloc[0])
    assert len(recall) == 10 and 0 <= results["test_recall_smallest_third"].iloc[0] <= 1
    gains = pd.read_csv(tmp_path / "run" / "report" / "tables" / "class_gains.csv")
    assert gains["strategy"].tolist() == ["gan-balance"] and gains["seeds"].tolist() == [2]
    assert "smallest third (pp)" in gains and "class 9 (pp)" in gains
    assert "per-class change in test recall" in (tmp_path / "run" / "report" / "report.md").read_text()


def test_pre_generated_images_can_fill_the_small_classes_too():
    labelled = make_split(
        load_dataset(DatasetEntry("digits")), LongTail(4, 8), SplitSpec(val_per_class=10), 0
    ).labelled
    cls = STRATEGIES.get("synthetic-images")
    ctx = FitContext(device=torch.device("cpu"), seed=0, num_classes=10, hflip=False)
    for balance, expected in ((False, None), (True, [8 - c for c in LongTail(4, 8).counts(10)])):
        data = cls(**cls.resolve_params({"path": digits_images_npz(), "balance": balance}, "test")).fit(
            labelled, ctx
        )
        counts = torch.bincount(data.synthetic.labels, minlength=10).tolist()
        assert sum(counts) == len(labelled)
        if expected is None:
            assert max(counts) - min(counts) <= 1
        else:  # the shortfalls first (they add up to fewer than the budget), then every class evenly
            rest = len(labelled) - sum(expected)
            assert [c - e for c, e in zip(counts, expected)] == torch.bincount(
                torch.arange(rest) % 10, minlength=10
            ).tolist()


def test_a_tuned_long_tailed_regime_is_written_back_as_a_config(tmp_path, cli):
    config = tiny_config_with(
        tmp_path,
        {
            "regimes": [{"long_tail": 5, "n_max": 15}],
            "classifiers": ["mlp"],
            "strategies": ["none", {"name": "classical", "params": {"policy": "basic"}}],
            "quality": {"enabled": False},
            "tune": {"trials": 2, "seeds": 1},
        },
    )
    code, _, err = cli("tune", config, "--out", tmp_path / "tune", "--workers", "1")
    assert code == 0, err
    tuned = next((tmp_path / "tune" / "tuning").glob("*-tuned-*.yaml"))
    assert load_config(str(tuned)).regimes == (LongTail(5.0, 15),)
