"""The runner: resume after a kill, one row per cell, determinism, provenance."""

import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import torch
from conftest import ROOT
from tests_support import tiny_config_with

from bench.protocol.config import load_config
from bench.run.cell import expand_grid
from bench.run.stages import run_cell


def _cells(out):
    return sorted(p.name for p in (out / "cells").glob("*.json"))


def test_killed_run_resumes_with_each_cell_exactly_once(tmp_path):
    # a check of 2 seeds and no more; 90 steps: the budget, never raised
    budget = {"scale": 0.3, "plateau": 4, "check_seeds": 2, "max_check_seeds": 2, "max_steps": 90}
    config = tiny_config_with(tmp_path, {"seeds": 3, "budget": budget, "workers": 2})
    out = tmp_path / "run"
    command = [sys.executable, "-m", "bench.cli", "run", config, "--out", str(out)]
    process = subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.time() + 120
    while time.time() < deadline and (not (out / "cells").exists() or len(_cells(out)) < 2):
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)  # the whole group: the runner and its workers
    process.wait()
    done_before = _cells(out)
    assert 2 <= len(done_before) < 20, "the kill should land mid-run"
    for name in done_before:  # every file left behind is whole
        json.loads((out / "cells" / name).read_text())

    rerun = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert f"({len(done_before)} already done)" in rerun.stderr
    results = pd.read_csv(out / "results.csv")
    assert len(results) == 12 and results["key"].is_unique
    checks = 4 * 2  # the budget check: 4 groups, their first 2 seeds at twice the budget (cells of their own)
    assert set(done_before) <= set(_cells(out)) and len(_cells(out)) == 12 + checks
    assert not list(out.rglob("*.tmp"))


def test_same_config_and_seed_give_identical_results_on_the_cpu(tiny_config):
    config = load_config(str(tiny_config))
    from bench.run.cell import cached_dataset

    data_hash = cached_dataset(config.datasets[0]).content_hash
    cell = [c for c in expand_grid(config, {"digits": data_hash}) if c.strategy.name == "classical"][0]
    first = run_cell(cell, torch.device("cpu"))
    second = run_cell(cell, torch.device("cpu"))
    for key in ("test_accuracy", "test_nll", "train_accuracy", "val_accuracy", "curve"):
        assert first[key] == second[key]
    assert first["status"] == "ok"


def test_run_writes_one_row_per_cell_with_provenance(tiny_config, tmp_path, cli):
    out = tmp_path / "run"
    code, stdout, _ = cli("run", tiny_config, "--out", out, "--set", "seeds=1")
    assert code == 0
    results = pd.read_parquet(out / "results.parquet")
    assert len(results) == 4  # 2 strategies x 2 classifiers x 1 seed
    assert results["key"].is_unique and (results["status"] == "ok").all()
    for column in (
        "test_accuracy",
        "test_macro_f1",
        "test_nll",
        "test_ece",
        "train_accuracy",
        "gap_accuracy",
        "gap_loss",
        "fit_seconds",
        "train_seconds",
        "train_peak_mem_mb",
        "budget_steps",
        "device",
    ):
        assert results[column].notna().all(), column
    assert (
        (results["gap_accuracy"] - (results["train_accuracy"] - results["test_accuracy"])).abs() < 1e-9
    ).all()
    curves = pd.read_csv(out / "curves.csv")
    assert set(curves["key"]) == set(results["key"]) and len(curves) == 4 * 2
    provenance = json.loads((out / "provenance.json").read_text())
    assert {"versions", "revision", "device", "started", "finished"} <= set(provenance)
    assert "mlp" in stdout and "classical-basic" in stdout and str(out) in stdout
