"""The ray executor: the same cells and numbers as the process executor, every cell exactly once
when a Ray worker or the driver is killed, and clear errors for bad settings. Each test starts
its own local Ray cluster; they skip without Ray."""

import builtins
import json
import os
import signal
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
from conftest import ROOT
from tests_support import tiny_config_with, wait_until

import bench.protocol.registries  # noqa: F401 - registers the executors
from bench.core.executor import EXECUTORS, Callbacks, FolderTask, SharedWork

ray = pytest.importorskip("ray")

ONE_SEED_MORE = {"workers": 2, "seeds": 3}  # 12 cells: long enough to kill something in the middle


def _run(cli, config, out, *extra):
    code, _, err = cli("run", config, "--out", out, *extra)
    assert code == 0, err
    return pd.read_csv(out / "results.csv").sort_values("key").reset_index(drop=True)


def test_ray_gives_every_cell_once_with_the_numbers_of_the_process_executor(cli, tmp_path):
    config = tiny_config_with(
        tmp_path,
        {
            "workers": 2,
            "seeds": 1,
            "quality": {"samples": 40},
            "strategies": [
                "none",
                {"name": "classical", "params": {"policy": "basic"}},
                {"name": "vae", "params": {"steps": 150}},
            ],
        },
    )
    by_process = _run(cli, config, tmp_path / "process", "--executor", "process")
    by_ray = _run(cli, config, tmp_path / "ray", "--executor", "ray")
    assert len(by_ray) == len(by_process) == 6 and by_ray["key"].is_unique
    assert (by_ray["status"] == "ok").all(), by_ray["failure_reason"].tolist()
    assert by_ray["key"].tolist() == by_process["key"].tolist()
    for column in (
        "test_accuracy",
        "fid_evaluator",
        "kid_evaluator",
        "fid_evaluator_ref_real",
        "cas_accuracy",
        "evaluator_label_agreement",
        "sample_grid",
    ):
        pd.testing.assert_series_equal(by_ray[column], by_process[column], check_exact=True, obj=column)
    assert len(list((tmp_path / "ray" / "cells").glob("*.json"))) == 6
    # the shared work came back through the object store into the run folder: a resumed run or a
    # report finds it
    made = {
        p.relative_to(tmp_path / "process").as_posix()
        for p in (tmp_path / "process").glob("[cs]a*/*")
        if p.suffix in (".pt", ".json", ".npz") and "cells" not in p.parts
    }
    assert made and made == {
        p.relative_to(tmp_path / "ray").as_posix()
        for p in (tmp_path / "ray").glob("[cs]a*/*")
        if p.suffix in (".pt", ".json", ".npz") and "cells" not in p.parts
    }


@pytest.mark.slow
def test_ray_fits_a_generator_cohort_once_with_the_numbers_of_the_process_executor(cli, tmp_path):
    config = tiny_config_with(
        tmp_path,
        {
            "workers": 2,
            "seeds": 2,
            "cohort": 2,
            "classifiers": ["mlp"],
            "quality": {"enabled": False},
            "strategies": ["none", {"name": "vae", "params": {"steps": 150}}],
        },
    )
    by_process = _run(cli, config, tmp_path / "process", "--executor", "process")
    by_ray = _run(cli, config, tmp_path / "ray", "--executor", "ray")
    assert (by_ray["status"] == "ok").all(), by_ray["failure_reason"].tolist()
    assert by_ray["key"].tolist() == by_process["key"].tolist()
    pd.testing.assert_series_equal(by_ray["test_accuracy"], by_process["test_accuracy"], check_exact=True)
    vae = by_ray[by_ray["strategy"] == "vae"]
    assert vae["stacked_fit_size"].tolist() == [2, 2] and vae["stacked_fit"].nunique() == 1
    # one shared-work task fitted the stacked fit: one fit, two shares
    assert vae["generator_fit_seconds"].nunique() == 1
    assert len(list((tmp_path / "ray" / "cache").glob("generator-*.pt"))) == 2


@dataclass(frozen=True)
class CountingTask(FolderTask):
    """Items 0..7; shared work `a` per pair of items, `b` per four, each writing a uniquely named file."""

    root: Path

    @property
    def shared_work(self):
        return (
            SharedWork("a", lambda item: item // 2, self.write),
            SharedWork("b", lambda item: item // 4, self.write_b),
        )

    def write(self, item, root, stage="a", size=2):
        (root / stage).mkdir(exist_ok=True)
        (root / stage / f"{item // size}-{uuid.uuid4().hex}").write_text(str(os.getpid()))

    def write_b(self, item, root):
        assert len(list((root / "a").glob(f"{item // 2}-*"))) == 1  # the earlier shared work's files
        self.write(item, root, "b", 4)

    def run_in(self, item, root):
        return str(root), sorted(
            p.relative_to(root).as_posix().split("-")[0] for p in root.rglob("*") if p.is_file()
        )


def test_each_piece_of_shared_work_runs_once_per_group_and_its_files_travel_to_the_items(tmp_path):
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    results = {}
    EXECUTORS.get("ray")(workers=2).map_unordered(
        CountingTask(tmp_path), range(8), Callbacks(on_done=results.__setitem__)
    )
    assert sorted(results) == list(range(8))
    for item, (root, files) in results.items():
        assert root != str(tmp_path) and files == [f"a/{item // 2}", f"b/{item // 4}"]
    written = sorted(
        p.relative_to(tmp_path).as_posix().split("-")[0] for p in tmp_path.rglob("*") if p.is_file()
    )
    assert written == ["a/0", "a/1", "a/2", "a/3", "b/0", "b/1"]  # one run per group, all back on the driver


def _start_run(config, out) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "bench.cli", "run", config, "--out", str(out), "--executor", "ray"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        start_new_session=True,
    )


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
    code, _, err = cli(
        "run", config, "--out", tmp_path / "a", "--executor", "ray", "--address", "127.0.0.1:9"
    )
    assert code == 2 and "executor.address" in err and "no Ray cluster answers" in err
    code, _, err = cli(
        "run", config, "--out", tmp_path / "b", "--executor", "ray", "--set", "executor.gpus_per_cell=1"
    )
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
