"""A cell's stages: the training path reads no test image, and every column a stage writes is
declared in the row schema (bench/protocol/columns.py)."""
import dataclasses

import pytest
import torch

from bench.core.images import ImageSet
from bench.protocol.columns import BY_NAME, COLUMNS, undeclared
from bench.protocol.config import parse_config
from bench.run.cell import cached_dataset, data_of, expand_grid
from bench.run.stages import run_cell, train_cell
from conftest import TINY_CONFIG
from strategies import STRATEGIES
from tests_support import fast_params

CPU = torch.device("cpu")
TIMES = ("started", "finished", "fit_seconds", "train_seconds", "fit_peak_mem_mb", "train_peak_mem_mb",
         "generator_fit_seconds")


def _cell(strategy: dict, classifier: str = "mlp"):
    config = parse_config({**TINY_CONFIG, "regimes": [10], "unlabelled": "pool", "strategies": [strategy],
                           "classifiers": [classifier], "seeds": 1})
    hashes = {d.title: cached_dataset(d).content_hash for d in config.datasets}
    return expand_grid(config, hashes)[0]


def _without_times(record: dict) -> dict:
    return {k: v for k, v in record.items() if k not in TIMES}


@pytest.mark.parametrize("strategy", [{"name": "classical", "params": {"policy": "basic"}},
                                      {"name": "vae", "params": {"steps": 100}}])
def test_the_training_path_reads_no_test_image(strategy, tmp_path):
    cell = _cell(strategy)
    _, split = data_of(cell)
    poisoned = dataclasses.replace(split, test=ImageSet(torch.full(split.test.images.shape, float("nan")),
                                                        split.test.labels))
    clean_record, clean_model = train_cell(cell, CPU, tmp_path / "a", split, "r")
    nan_record, nan_model = train_cell(cell, CPU, tmp_path / "b", poisoned, "r")
    assert clean_record["status"] == nan_record["status"] == "ok"
    assert _without_times(nan_record) == _without_times(clean_record)
    for (name, clean), (_, found) in zip(clean_model.state_dict().items(), nan_model.state_dict().items()):
        assert torch.equal(clean, found), name


@pytest.mark.parametrize("name", STRATEGIES.names())
def test_every_column_a_stage_writes_is_declared(name, tmp_path):
    record = run_cell(_cell({"name": name, "params": fast_params(name)}, "cnn"), CPU, tmp_path / "cache", "r")
    assert record["status"] == "ok" or "collapse" in record["failure_reason"], record["failure_reason"]
    assert undeclared(record) == []
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
