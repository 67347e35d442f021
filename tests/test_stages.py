"""A cell's stages: the training path reads no test image, and every column a stage writes is
declared in the row schema (bench/protocol/columns.py)."""

import dataclasses
import json

import pytest
import torch
from conftest import TINY_CONFIG
from tests_support import TIMES, fast_params

from bench.core.images import ImageSet, UnlabelledImages
from bench.data.splits import held_out, make_split, train_pool
from bench.protocol.columns import BY_NAME, COLUMNS, undeclared
from bench.protocol.config import parse_config
from bench.run.cell import cached_dataset, data_of, expand_grid, make_strategy
from bench.run.stages import run_cell, train_cell
from strategies import STRATEGIES

CPU = torch.device("cpu")


def _cell(strategy: dict, classifier: str = "mlp"):
    config = parse_config(
        {
            **TINY_CONFIG,
            "regimes": [10],
            "unlabelled": "pool",
            "strategies": [strategy],
            "classifiers": [classifier],
            "seeds": 1,
        }
    )
    hashes = {d.title: cached_dataset(d).content_hash for d in config.datasets}
    return expand_grid(config, hashes)[0]


def _without_times(record: dict) -> dict:
    return {k: v for k, v in record.items() if k not in TIMES}


def _poisoned(dataset, spec):
    """``dataset`` with every test image replaced by noise: the official test split's (whose labels
    are shuffled too), or those of the training pool that the split holds out (whose labels stay:
    they decide which images are held out)."""
    generator = torch.Generator().manual_seed(0)

    def noise(images: torch.Tensor) -> torch.Tensor:
        return torch.randint(0, 256, images.shape, generator=generator, dtype=torch.uint8).to(images.dtype)

    if dataset.test is not None:
        shuffled = dataset.test.labels[torch.randperm(len(dataset.test), generator=generator)]
        return dataclasses.replace(dataset, test=ImageSet(noise(dataset.test.images), shuffled))
    mask = torch.as_tensor(held_out(dataset, spec))
    images = dataset.train.images.clone()
    images[mask] = noise(images[mask])
    return dataclasses.replace(dataset, train=ImageSet(images, dataset.train.labels))


@pytest.fixture
def poisoned_data(monkeypatch):
    """Every route to the data set's test images poisoned: the data set as every stage fetches it
    (``cached_dataset``, which ``data_of`` and the fit stage use) and the split's test set."""
    import bench.run.cell as cell_module

    real = cell_module.load_dataset

    cached_dataset.cache_clear()
    monkeypatch.setattr(cell_module, "load_dataset", lambda entry: _poisoned(real(entry), TINY_SPLIT))
    yield
    cached_dataset.cache_clear()


TINY_SPLIT = parse_config(TINY_CONFIG).split


def _trained(cell, cache):
    """The record and model of the cell's training path, on the split as the fit stage derives it."""
    dataset, split = data_of(cell)
    return train_cell(cell, CPU, cache, dataset, split, "r")


@pytest.mark.parametrize(
    "strategy",
    [
        {"name": "classical", "params": {"policy": "basic"}},
        {"name": "vae", "params": {"steps": 100}},
        {"name": "vae", "params": {"steps": 200, "generator_data": "pool"}},
        {"name": "pseudo-label", "params": {"threshold": "auto"}},
        {"name": "fixmatch", "params": {"mu": 1, "threshold": 0.15}},
    ],
)
def test_the_training_path_reads_no_test_image(strategy, tmp_path, request):
    cell = _cell(strategy)
    clean_record, clean_model = _trained(cell, tmp_path / "a")
    request.getfixturevalue("poisoned_data")
    assert not torch.equal(
        data_of(cell)[1].test.images, _poisoned_split_check(cell)
    )  # the poison is in place
    nan_record, nan_model = _trained(cell, tmp_path / "b")
    assert clean_record["status"] == nan_record["status"] == "ok"
    assert _without_times(nan_record) == _without_times(clean_record)
    for (name, clean), (_, found) in zip(clean_model.state_dict().items(), nan_model.state_dict().items()):
        assert torch.equal(clean, found), name


def _poisoned_split_check(cell):
    """The clean test images of the cell's split (read past the poison, from the loader itself)."""
    from bench.data.sets import load_dataset

    return make_split(load_dataset(cell.dataset), cell.regime, cell.split, cell.replicate).test.images


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
    nan_record, _ = _trained(cell, tmp_path / "b")
    assert _without_times(nan_record) != _without_times(clean_record)


@pytest.mark.parametrize("name", STRATEGIES.names())
def test_every_column_a_stage_writes_is_declared(name, tmp_path):
    record = run_cell(_cell({"name": name, "params": fast_params(name)}, "cnn"), CPU, tmp_path / "cache", "r")
    assert record["status"] == "ok" or "collapse" in record["failure_reason"], record["failure_reason"]
    assert undeclared(record) == []
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
    from bench.protocol.columns import STAGES, TYPES

    assert len({c.name for c in COLUMNS}) == len(COLUMNS)
    assert all(c.type in TYPES and c.stage in STAGES and c.meaning for c in COLUMNS)


def test_list_columns_prints_the_data_dictionary(cli):
    code, out, _ = cli("list", "--columns")
    assert code == 0
    printed = {line.split()[0] for line in out.splitlines()[1:] if line.strip()}
    assert {c.name for c in COLUMNS} <= printed and "param_<name>" in printed


@pytest.mark.parametrize(
    "column, value, problem",
    [
        ("made_up", 1, "made_up is not a declared column"),
        ("n_real", "ten", "n_real is declared int, got str"),
        ("n_real", True, "n_real is declared int, got bool"),
        ("generator_cache_hit", "yes", "generator_cache_hit is declared bool"),
    ],
)
def test_write_cell_refuses_a_row_that_does_not_match_the_schema(tmp_path, column, value, problem):
    from bench.run.store import RunStore

    store = RunStore(tmp_path)
    with pytest.raises(ValueError, match=problem):
        store.write_cell({"key": "k", "status": "ok", column: value})
    assert not (tmp_path / "cells" / "k.json").exists()
    store.write_cell({"key": "k", "status": "ok", "n_real": 10, "generator_steps": None})  # a gap is allowed
