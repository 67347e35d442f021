"""The executor interface: every registered executor runs each item once, reports starts and
results, and gives a cell the same result as any other executor."""
import math

import pytest
import torch

import bench.executors  # noqa: F401 - registers serial and process
from bench.config import load_config
from bench.core.executor import EXECUTORS
from bench.runner import CellTask, cached_dataset, expand_grid


@pytest.mark.parametrize("name", ["serial", "process"])
def test_each_item_runs_once_with_start_and_done(name):
    started, done = [], {}
    EXECUTORS.get(name)(workers=2, threads=1).map_unordered(
        math.sqrt, [1.0, 4.0, 9.0, 16.0], on_start=started.append, on_done=done.__setitem__)
    assert sorted(started) == [1.0, 4.0, 9.0, 16.0]
    assert done == {1.0: 1.0, 4.0: 2.0, 9.0: 3.0, 16.0: 4.0}


def test_serial_restores_the_thread_count():
    before = torch.get_num_threads()
    seen = []
    EXECUTORS.get("serial")(threads=1).map_unordered(lambda _: seen.append(torch.get_num_threads()), [0])
    assert seen == [1] and torch.get_num_threads() == before


def test_serial_and_process_give_identical_cells(tiny_config, tmp_path):
    config = load_config(str(tiny_config))
    cells = expand_grid(config, {"digits": cached_dataset(config.datasets[0]).content_hash})[:2]
    task = CellTask("cpu", str(tmp_path / "cache"), "test")
    results = {}
    for name in ("serial", "process"):
        found = {}
        EXECUTORS.get(name)(workers=2, threads=1).map_unordered(task, cells, on_done=lambda c, r: found.__setitem__(c.key, r))
        results[name] = found
    for key, record in results["serial"].items():
        other = results["process"][key]
        assert (record["test_accuracy"], record["curve"]) == (other["test_accuracy"], other["curve"])
