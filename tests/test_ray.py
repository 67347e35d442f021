"""The ray executor: the same cells and numbers as the process executor, every cell exactly once
when a Ray worker or the driver is killed, and clear errors for bad settings. Each test starts
its own local Ray cluster; they skip without Ray."""
import builtins
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from conftest import ROOT
from tests_support import tiny_config_with, wait_until

ray = pytest.importorskip("ray")

ONE_SEED_MORE = {"workers": 2, "seeds": 3}  # 12 cells: long enough to kill something in the middle


def _run(cli, config, out, *extra):
    code, _, err = cli("run", config, "--out", out, *extra)
    assert code == 0, err
    return pd.read_csv(out / "results.csv").sort_values("key").reset_index(drop=True)


def test_ray_gives_every_cell_once_with_the_numbers_of_the_process_executor(cli, tmp_path):
    config = tiny_config_with(tmp_path, {"workers": 2})
    by_process = _run(cli, config, tmp_path / "process", "--executor", "process")
    by_ray = _run(cli, config, tmp_path / "ray", "--executor", "ray")
    assert len(by_ray) == len(by_process) == 8 and by_ray["key"].is_unique
    assert (by_ray["status"] == "ok").all()
    assert by_ray["key"].tolist() == by_process["key"].tolist()
    assert by_ray["test_accuracy"].tolist() == by_process["test_accuracy"].tolist()
    assert len(list((tmp_path / "ray" / "cells").glob("*.json"))) == 8


def _start_run(config, out) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "bench.cli", "run", config, "--out", str(out), "--executor", "ray"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True)


def _ray_task_pids() -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and b"ray::_run_item" in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:
            pass
    return found


def test_a_killed_ray_worker_is_retried_and_no_cell_is_lost_or_doubled(tmp_path):
    config = tiny_config_with(tmp_path, ONE_SEED_MORE)
    out = tmp_path / "run"
    run = _start_run(config, out)
    assert wait_until(_ray_task_pids, 120), "no Ray task started"
    os.kill(_ray_task_pids()[0], signal.SIGKILL)
    output, _ = run.communicate(timeout=300)
    assert run.returncode == 0, output
    table = pd.read_csv(out / "results.csv")
    assert len(table) == 12 and table["key"].is_unique and (table["status"] == "ok").all()


def test_a_killed_driver_resumes_without_recomputing_finished_cells(tmp_path):
    config = tiny_config_with(tmp_path, ONE_SEED_MORE)
    out = tmp_path / "run"
    run = _start_run(config, out)
    assert wait_until(lambda: len(list((out / "cells").glob("*.json"))) >= 2, 120), "no cell finished"
    os.killpg(run.pid, signal.SIGKILL)  # the driver and the local cluster it started
    run.wait()
    finished = {p.name: p.stat().st_mtime_ns for p in (out / "cells").glob("*.json")}
    again = _start_run(config, out)
    output, _ = again.communicate(timeout=300)
    assert again.returncode == 0, output
    assert f"({len(finished)} already done)" in output
    for name, mtime in finished.items():
        assert (out / "cells" / name).stat().st_mtime_ns == mtime  # not recomputed
    table = pd.read_csv(out / "results.csv")
    assert len(table) == 12 and table["key"].is_unique


def test_ray_errors_name_the_field(cli, tmp_path, monkeypatch):
    config = tiny_config_with(tmp_path, {"workers": 2})
    code, _, err = cli("run", config, "--out", tmp_path / "a", "--executor", "ray", "--address", "127.0.0.1:9")
    assert code == 2 and "executor.address" in err and "no Ray cluster answers" in err
    code, _, err = cli("run", config, "--out", tmp_path / "b", "--executor", "ray", "--set",
                       "executor.gpus_per_cell=1")
    assert code == 2 and "executor.gpus_per_cell" in err and "has 0" in err
    code, _, err = cli("run", config, "--out", tmp_path / "c", "--executor", "dask")
    assert code == 2 and "executor.name" in err
    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray":
            raise ImportError("no ray here")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    code, _, err = cli("run", config, "--out", tmp_path / "d", "--executor", "ray")
    assert code == 2 and "pip install 'augbench[ray]'" in err
    assert not any(json.loads(p.read_text()) for p in (tmp_path / "d").glob("cells/*.json"))
