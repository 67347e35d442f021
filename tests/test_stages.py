"""A cell's stages: the training path reads no test image, and every column a stage writes is
declared in the row schema (bench/protocol/columns.py)."""

import dataclasses
import json

import numpy as np
import pytest
import torch
from conftest import TINY_CONFIG
from tests_support import fast_params, without_times

from bench.core.images import UnlabelledImages
from bench.data.splits import make_split, train_pool
from bench.protocol.columns import BY_NAME, COLUMNS
from bench.protocol.config import parse_config
from bench.run.cell import cached_dataset, data_of, expand_grid, make_strategy
from bench.run.stages import run_cell, train_cell
from strategies import STRATEGIES

CPU = torch.device("cpu")


def _cell(strategy: dict, classifier: str = "mlp", **change):
    config = parse_config(
        {
            **TINY_CONFIG,
            "regimes": [10],
            "unlabelled": "pool",
            "strategies": [strategy],
            "classifiers": [classifier],
            "seeds": 1,
            **change,
        }
    )
    hashes = {d.title: cached_dataset(d).content_hash for d in config.datasets}
    return expand_grid(config, hashes)[0]


def _trained(cell, cache):
    """The record and model of the cell's training path, on the split as the fit stage derives it."""
    dataset, split = data_of(cell)
    return train_cell(cell, CPU, cache, dataset, split, "r")


# every registered strategy at its quick params, and the ways of using the unlabelled pool; the default
# run takes one of each kind of route (a policy, a generator on the pool, a teacher, an objective, a
# generator with an objective), the slow run every strategy
EVERY_ROUTE = [(name, {}) for name in STRATEGIES.names()] + [
    ("vae", {"generator_data": "pool"}),
    ("gan", {"generator_data": "pseudo-labelled", "pseudo_threshold": "auto"}),
    ("pseudo-label", {"threshold": "auto"}),
    ("hybrid", {"objective": "fixmatch", "objective_params": {"mu": 1, "threshold": 0.15}}),
]
ONE_OF_EACH = {"classical", "fixmatch"}  # with the three pool routes above
UNDER_POISON = [
    case if case[1] or case[0] in ONE_OF_EACH else pytest.param(*case, marks=pytest.mark.slow)
    for case in EVERY_ROUTE
]
ONLY_THERE = {"fixmatch": {"threshold": 0.15}}  # 15 steps: a threshold some unlabelled images reach


def _npz_with_a_test_split(folder) -> dict:
    """The digits as an .npz data set with an official test split (x_test, y_test)."""
    from bench.data.sets import DatasetEntry, load_dataset

    digits = load_dataset(DatasetEntry("digits")).train
    path = folder / "digits-split.npz"
    np.savez(
        path,
        x_train=digits.images[:1400].numpy(),
        y_train=digits.labels[:1400].numpy(),
        x_test=digits.images[1400:].numpy(),
        y_test=digits.labels[1400:].numpy(),
    )
    return {"name": "npz", "path": str(path)}


def _clean_split(cell):
    """The clean split of the cell (read past the poison, from the loader itself)."""
    from bench.data.sets import load_dataset

    return make_split(load_dataset(cell.dataset), cell.regime, cell.split, cell.replicate)


def _poison_changes_nothing(cell, tmp_path, request) -> None:
    """``cell``'s training path gives the same record and weights with every test image and label
    poisoned (``poisoned_data``)."""
    clean_record, clean_model = _trained(cell, tmp_path / "clean")
    request.getfixturevalue("poisoned_data")
    assert not torch.equal(data_of(cell)[1].test.images, _clean_split(cell).test.images)  # in place
    assert not torch.equal(data_of(cell)[1].test.labels, _clean_split(cell).test.labels)
    poisoned_record, poisoned_model = _trained(cell, tmp_path / "poisoned")
    assert clean_record["status"] == poisoned_record["status"] == "ok", poisoned_record.get("failure_reason")
    assert without_times(poisoned_record) == without_times(clean_record)
    for (name, clean), (_, found) in zip(
        clean_model.state_dict().items(), poisoned_model.state_dict().items()
    ):
        assert torch.equal(clean, found), name


@pytest.mark.parametrize("name, params", UNDER_POISON)
def test_the_training_path_reads_no_test_image_or_label(name, params, tmp_path, request, monkeypatch):
    monkeypatch.setattr(
        "strategies.generator_checks.COLLAPSE_THRESHOLD", 0.0
    )  # quick fits are not judged here
    strategy = {"name": name, "params": {**fast_params(name), **ONLY_THERE.get(name, {}), **params}}
    _poison_changes_nothing(_cell(strategy), tmp_path, request)


@pytest.mark.parametrize("name", ["none", "pseudo-label", "fixmatch"])
def test_a_data_set_with_its_own_test_split_is_poisoned_and_never_read(name, tmp_path, request):
    strategy = {"name": name, "params": {**fast_params(name), **ONLY_THERE.get(name, {})}}
    cell = _cell(strategy, datasets=[_npz_with_a_test_split(tmp_path)])
    assert cached_dataset(cell.dataset).test is not None  # the branch for an official test split runs
    _poison_changes_nothing(cell, tmp_path, request)


def test_the_budget_check_and_the_steps_search_read_no_test_image(tmp_path, request):
    from bench.run.stages import validation_accuracy
    from bench.run.step_search import search_steps

    cell = _cell({"name": "classical", "params": {"policy": "basic"}}, budget={"steps": "auto", "floor": 40})
    check = dataclasses.replace(cell.budget_check(), auto_steps=((cell.classifier, 40),))
    runs = iter(range(2))

    def scored() -> tuple[dict, dict]:
        folder = tmp_path / str(next(runs))
        _, model = _trained(check, folder / "check")
        search = search_steps(cell, CPU, folder / "search", lambda line: None)
        return validation_accuracy(model, data_of(check)[1], CPU), {**search, "seconds": 0}

    clean = scored()
    request.getfixturevalue("poisoned_data")
    assert scored() == clean


def test_the_poison_catches_a_training_path_that_reads_test_images(tmp_path, monkeypatch, request):
    """The check above can fail: a fit that is handed the test images (here pseudo-label's pool
    swapped for the test hold-out of the data set the fit stage fetched) trains differently."""
    import bench.run.stages as stages

    def leaky(cell, dataset, split):
        return UnlabelledImages(train_pool(dataset, split.spec)[1].images)

    monkeypatch.setattr(stages, "granted_unlabelled", leaky)
    cell = _cell({"name": "pseudo-label", "params": {"threshold": "auto"}})
    clean_record, _ = _trained(cell, tmp_path / "a")
    request.getfixturevalue("poisoned_data")
    poisoned_record, _ = _trained(cell, tmp_path / "b")
    assert without_times(poisoned_record) != without_times(clean_record)


@pytest.mark.parametrize("name", STRATEGIES.names())
def test_every_column_a_stage_writes_is_declared(name, tmp_path):
    record = run_cell(_cell({"name": name, "params": fast_params(name)}, "cnn"), CPU, tmp_path / "cache", "r")
    assert record["status"] == "ok" or "collapse" in record["failure_reason"], record["failure_reason"]
    assert set(record) <= set(BY_NAME)  # each stage checked its own columns (written_by) as it wrote them
    strategy = make_strategy(_cell({"name": name, "params": fast_params(name)}).strategy)
    if record["status"] == "ok":  # the plan's count of the images its fit adds is the fit's (at most)
        assert record["n_synthetic"] <= strategy.synthetic_count(record["n_real"])
        if strategy.generative_part() is not None:
            assert record["n_synthetic"] == strategy.synthetic_count(record["n_real"])
    assert strategy.trains_teacher() == any(v.startswith("teacher:") for v in json.loads(record["versions"]))
    kinds = {"text": str, "int": int, "float": (int, float), "bool": bool, "time": str, "json": list}
    for column, value in record.items():
        if value is not None:
            assert isinstance(value, kinds[BY_NAME[column].type]), (column, value)


def test_the_schema_names_each_column_once_with_a_known_type_and_stage():
    from bench.protocol.columns import Column

    assert len({c.name for c in COLUMNS}) == len(COLUMNS)
    assert all(c.meaning for c in COLUMNS)
    with pytest.raises(ValueError, match="type 'number'"):  # a declaration of an unknown type fails at import
        Column("x", "number", "", "a column", "train")
    with pytest.raises(ValueError, match="stage 'later'"):
        Column("x", "float", "", "a column", "later")


def test_list_columns_prints_the_data_dictionary(cli):
    code, out, _ = cli("list", "--columns")
    assert code == 0
    printed = {line.split()[0] for line in out.splitlines()[1:] if line.strip()}
    assert {c.name for c in COLUMNS} <= printed and "param_<name>" in printed


@pytest.mark.parametrize(
    "stage, column, value, problem",
    [
        ("fit", "made_up", 1, "made_up is not a declared column"),
        ("cell", "n_real", "ten", "n_real is declared int, got str"),
        ("cell", "n_real", True, "n_real is declared int, got bool"),
        ("fit", "generator_cache_hit", "yes", "generator_cache_hit is declared bool"),
        ("fit", "test_accuracy", 1.0, "test_accuracy is a column of the evaluate stage"),
        ("train", "param_policy", "basic", "param_policy is not a declared column"),
    ],
)
def test_a_stage_may_write_only_its_own_declared_columns(stage, column, value, problem):
    from bench.protocol.columns import written_by

    with pytest.raises(ValueError, match=f"the {stage} stage wrote columns against the schema: .*{problem}"):
        written_by(stage, {column: value})
    assert written_by("cell", {"n_real": 10, "stacked_fit": None}) == {"n_real": 10, "stacked_fit": None}
    assert written_by("store", {"param_policy": "basic"}) == {"param_policy": "basic"}  # the store's


def test_a_strategy_that_writes_another_stages_column_costs_its_cell(tmp_path, monkeypatch):
    """A strategy's ``info`` that claims a test accuracy is refused as the fit stage writes it: the
    cell's row is an error (a bug in that strategy), and the evaluate stage's columns are not forged."""
    import bench.run.stages as stages
    from bench.run.tasks import CellTask

    real = stages.make_strategy

    class Boasting:
        def __init__(self, entry):
            self.inner = real(entry)

        def fit(self, labelled, ctx):
            data = self.inner.fit(labelled, ctx)
            return dataclasses.replace(data, info={**data.info, "test_accuracy": 1.0})

    monkeypatch.setattr(stages, "make_strategy", Boasting)
    cell = _cell({"name": "none"})
    record = CellTask("cpu", tmp_path, "r").run_in(cell, tmp_path)
    assert record["status"] == "failed" and record["failure_kind"] == "error", record
    assert "test_accuracy is a column of the evaluate stage" in record["failure_reason"]
    assert "test_accuracy" not in record and "traceback" in record
