"""The executor interface: every registered executor runs each item once, reports starts and
results, and gives a cell the same result as any other executor."""

import math

import pytest
import torch

import bench.execution.local  # noqa: F401 - registers serial and process
from bench.core.executor import EXECUTORS, Callbacks
from bench.protocol.config import load_config
from bench.run.cell import cached_dataset, expand_grid
from bench.run.tasks import CellTask


@pytest.mark.parametrize("name", ["serial", "process"])
def test_each_item_runs_once_with_start_and_done(name):
    started, done = [], {}
    EXECUTORS.get(name)(workers=2, threads=1).map_unordered(
        math.sqrt, [1.0, 4.0, 9.0, 16.0], Callbacks(on_start=started.append, on_done=done.__setitem__)
    )
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
    task = CellTask("cpu", tmp_path, "test")
    results = {}
    for name in ("serial", "process"):
        found = {}
        EXECUTORS.get(name)(workers=2, threads=1).map_unordered(
            task, cells, Callbacks(on_done=lambda c, r: found.__setitem__(c.key, r))
        )
        results[name] = found
    for key, record in results["serial"].items():
        other = results["process"][key]
        assert (record["test_accuracy"], record["curve"]) == (other["test_accuracy"], other["curve"])


def _die_on_three(value):
    """Dies (as the OOM killer would kill it) on 3; on 2 only the first time (a marker file says)."""
    import os
    import signal
    from pathlib import Path

    marker = Path(os.environ["AUGBENCH_TEST_MARKER"])
    if value == 3 or (value == 2 and not marker.exists()):
        marker.touch()
        os.kill(os.getpid(), signal.SIGKILL)
    return value * 10


def test_a_dead_worker_is_retried_once_then_reported_and_the_rest_goes_on(tmp_path, monkeypatch):
    monkeypatch.setenv("AUGBENCH_TEST_MARKER", str(tmp_path / "died-once"))
    done, lost, retried = {}, {}, {}
    EXECUTORS.get("process")(workers=2, threads=1).map_unordered(
        _die_on_three,
        [1, 2, 3, 4, 5],
        Callbacks(on_done=done.__setitem__, on_lost=lost.__setitem__, on_retry=retried.__setitem__),
    )
    assert done == {1: 10, 2: 20, 4: 40, 5: 50}  # 2 died once and succeeded on its retry
    assert list(lost) == [3] and lost[3].startswith("worker died: signal 9 (SIGKILL)")
    assert (
        3 in retried and set(retried) <= {2, 3} and retried[3].startswith("worker died: signal 9 (SIGKILL)")
    )


def test_without_on_lost_a_dead_worker_is_a_clean_error(tmp_path, monkeypatch):
    from bench.core.executor import WorkerDied

    monkeypatch.setenv("AUGBENCH_TEST_MARKER", str(tmp_path / "died-once"))
    with pytest.raises(WorkerDied, match="signal 9"):
        EXECUTORS.get("process")(workers=1, threads=1).map_unordered(_die_on_three, [3])


def test_a_lost_cell_is_recorded_failed_and_the_grid_goes_on(tiny_config, tmp_path):
    from bench.core.executor import Executor
    from bench.run.store import RunStore
    from bench.run.tasks import execute

    class LosesTheFirst(Executor):
        def run_items(self, fn, items, callbacks):
            callbacks.lost(items[0], "worker died: signal 9 (SIGKILL), peak memory 900 MB")
            for item in items[1:]:
                callbacks.finished(item, fn(item))

    config = load_config(str(tiny_config))
    cells = expand_grid(config, {"digits": cached_dataset(config.datasets[0]).content_hash})[:2]
    store = RunStore(tmp_path / "run")
    execute(cells, store, torch.device("cpu"), LosesTheFirst(), "test", Callbacks())
    results = store.write_tables([c.key for c in cells])
    assert list(results["status"]) == ["failed", "ok"]
    assert results["failure_reason"].iloc[0] == "worker died: signal 9 (SIGKILL), peak memory 900 MB"
    assert results["failure_kind"].iloc[0] == "machine"
    assert results["strategy"].iloc[0] == cells[0].strategy.label
    assert store.done_keys() == {cells[1].key}  # not a result: a rerun tries it again


class _RetriesTheFirst:
    """An executor whose first item's worker "dies" once and is tried again (as the process
    executor does), saying so through on_retry."""

    def __init__(self, inner):
        self.inner = inner

    def session(self):
        return self.inner.session()

    def map_unordered(self, fn, items, callbacks):
        items = list(items)
        callbacks.retried(items[0], "worker died: signal 9 (SIGKILL), peak memory 873 MB")
        self.inner.map_unordered(fn, items, callbacks)


def test_a_retried_cell_says_so_on_a_line_of_its_own(tmp_path, cli, monkeypatch):
    from tests_support import tiny_config_with

    import bench.commands.run as run_command

    real = run_command.make_executor
    monkeypatch.setattr(run_command, "make_executor", lambda *args: _RetriesTheFirst(real(*args)))
    config = tiny_config_with(tmp_path, {"strategies": ["none"], "classifiers": ["mlp"], "seeds": 1})
    code, _, err = cli("run", config, "--out", tmp_path / "run")
    assert code == 0, err
    line = next(line for line in err.splitlines() if "retrying once" in line)
    assert line == (
        "augbench: worker died on digits/5 none mlp seed 0 (signal 9 (SIGKILL), peak memory 873 MB): "
        "retrying once"
    )


def _record_as(path, **fields):
    import json

    record = json.loads(path.read_text())
    record.update(fields)
    path.write_text(json.dumps(record))


def test_a_rerun_retries_cells_the_machine_failed_and_keeps_method_failures_unless_asked(tmp_path, cli):
    import pandas as pd
    from tests_support import tiny_config_with

    config = tiny_config_with(tmp_path, {"strategies": ["none"], "classifiers": ["mlp"], "seeds": 3})
    out = tmp_path / "run"
    assert cli("run", config, "--out", out)[0] == 0
    first, second, third = sorted((out / "cells").glob("*.json"))
    _record_as(
        first, status="failed", failure_reason="worker died: signal 9 (SIGKILL)", failure_kind="machine"
    )
    # written before kinds
    _record_as(second, status="failed", failure_reason="worker died: signal 9 (SIGKILL)")
    _record_as(third, status="failed", failure_reason="generator training diverged", failure_kind="method")
    code, _, err = cli("run", config, "--out", out)
    assert code == 0 and "(1 already done, 2 failed one(s) to try again)" in err, err
    table = pd.read_csv(out / "results.csv").set_index("key")
    assert table.loc[first.stem, "status"] == table.loc[second.stem, "status"] == "ok"
    assert table.loc[third.stem, "status"] == "failed"  # a result of the method: kept
    assert "to do: 0 of 3 cells" in cli("plan", config, "--out", out)[1]
    assert "to do: 1 of 3 cells" in cli("plan", config, "--out", out, "--retry-failed")[1]  # as the run below
    code, _, err = cli("run", config, "--out", out, "--retry-failed")
    assert code == 0 and "1 failed one(s) to try again" in err, err
    assert (pd.read_csv(out / "results.csv")["status"] == "ok").all()
