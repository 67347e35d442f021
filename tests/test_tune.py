"""Tuning: test data is never read, a killed tune resumes with no lost trials, workers share a
PostgreSQL study without duplicates."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import optuna
import pandas as pd
import pytest
import yaml
from conftest import ROOT
from tests_support import tiny_config_with

TUNE_CONFIG = {
    "strategies": ["none", {"name": "classical", "params": {"policy": "basic"}}],
    "classifiers": ["mlp"],
    "budget": {"scale": 0.1},
    "eval_points": 3,
    "quality": {"enabled": False},
    "tune": {"trials": 4, "seeds": 1},
    "workers": 1,
}


class SealedTestSet:
    """Stands in for the test split: any use of it fails the run."""

    def __getattr__(self, name):
        raise AssertionError(f"test data was read during tuning (.{name})")

    def __len__(self):
        raise AssertionError("test data was read during tuning (len)")


def _finished(storage: str) -> dict[str, list]:
    out = {}
    for summary in optuna.get_all_study_summaries(storage):
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        out[summary.study_name] = [
            t
            for t in study.get_trials(deepcopy=False)
            if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
        ]
    return out


def test_tuning_never_reads_test_data(tmp_path, monkeypatch, capsys):
    import bench.data.splits
    from bench.commands.tune import tune_experiment
    from bench.run.stages import run_cell

    real_pool = bench.data.splits.train_pool
    monkeypatch.setattr(
        bench.data.splits, "train_pool", lambda ds, spec: (real_pool(ds, spec)[0], SealedTestSet())
    )
    config = tiny_config_with(tmp_path, TUNE_CONFIG)
    out = tune_experiment(config, [], 3, None, None, tmp_path / "tune", workers=1)
    trials = _finished(f"sqlite:///{out / 'tuning' / 'optuna.db'}")
    assert len(trials) == 1 and len(next(iter(trials.values()))) == 3
    tuned = yaml.safe_load(next((out / "tuning").glob("*-tuned-*.yaml")).read_text())
    assert [s["label"] for s in tuned["strategies"]] == ["none", "classical", "classical-tuned"]
    # the sentinel does catch a reader: an evaluation run touches the test split and fails
    from bench.protocol.config import load_config
    from bench.run.cell import cached_dataset, expand_grid

    cfg = load_config(config)
    cell = expand_grid(cfg, {"digits": cached_dataset(cfg.datasets[0]).content_hash})[0]
    with pytest.raises(AssertionError, match="test data was read"):
        run_cell(cell, __import__("torch").device("cpu"))


def test_killed_tune_resumes_with_no_lost_trials(tmp_path):
    config = tiny_config_with(tmp_path, {**TUNE_CONFIG, "budget": {"scale": 0.3}})
    out = tmp_path / "tune"
    command = [
        sys.executable,
        "-m",
        "bench.cli",
        "tune",
        config,
        "--trials",
        "5",
        "--out",
        str(out),
        "--workers",
        "1",
    ]
    process = subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    storage = f"sqlite:///{out / 'tuning' / 'optuna.db'}"
    deadline = time.time() + 120
    while time.time() < deadline:
        time.sleep(0.2)
        try:
            if any(len(t) >= 1 for t in _finished(storage).values()):
                break
        except Exception:  # the database is not there yet
            continue
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    before = sum(len(t) for t in _finished(storage).values())
    assert 1 <= before < 5, "the kill should land mid-tuning"
    rerun = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    finished = _finished(storage)
    assert [len(t) for t in finished.values()] == [5]
    study = optuna.load_study(study_name=next(iter(finished)), storage=storage)
    states = Counter(t.state for t in study.get_trials(deepcopy=False))
    assert states[optuna.trial.TrialState.RUNNING] == 0 and states[optuna.trial.TrialState.WAITING] == 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pg_bin() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return found[-1].parent if found else None


@pytest.fixture
def postgres():
    """A throw-away PostgreSQL server on loopback (Debian's postgresql package)."""
    bin_dir = _pg_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql)")
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []  # the server refuses root
    home = Path(tempfile.mkdtemp(prefix="augbench-pg-"))  # outside pytest's private (0700) folders
    os.chmod(home, 0o755)
    data = home / "data"
    data.mkdir()
    if as_user:
        shutil.chown(data, "postgres")
    port = _free_port()
    user = "postgres" if as_user else os.environ.get("USER", "postgres")
    subprocess.run(
        as_user + [str(bin_dir / "initdb"), "-D", str(data), "-U", user, "--auth=trust"],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        as_user
        + [
            str(bin_dir / "pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(data / "log"),
            "-w",
            "-o",
            f"-p {port} -k {data} -c listen_addresses=127.0.0.1",
            "start",
        ],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        as_user + [str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", user, "augbench"],
        check=True,
        capture_output=True,
    )
    try:
        yield f"postgresql://{user}@127.0.0.1:{port}/augbench"
    finally:
        subprocess.run(
            as_user + [str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
            capture_output=True,
        )
        shutil.rmtree(home, ignore_errors=True)


def test_two_workers_share_a_postgresql_study(postgres, tmp_path):
    config = tiny_config_with(tmp_path, {**TUNE_CONFIG, "budget": {"scale": 0.3}})
    command = [
        sys.executable,
        "-m",
        "bench.cli",
        "tune",
        config,
        "--trials",
        "6",
        "--storage",
        postgres,
        "--study",
        "shared",
        "--workers",
        "1",
    ]
    workers = [
        subprocess.Popen(
            command + ["--out", str(tmp_path / f"w{i}"), "--worker-index", str(i)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    outputs = [w.communicate(timeout=600) for w in workers]
    assert all(w.returncode == 0 for w in workers), [o[1][-2000:] for o in outputs]
    finished = _finished(postgres)
    assert list(finished) == ["shared/digits/5/classical/mlp"]
    trials = finished["shared/digits/5/classical/mlp"]
    assert len(trials) == 6  # exactly the budget, together
    assert len({t.number for t in trials}) == 6
    assert len({tuple(sorted(t.params.items())) for t in trials}) == 6  # no trial evaluated twice
    assert len({t.user_attrs["worker"] for t in trials}) == 2  # both workers took part


def test_one_worker_tuning_is_reproducible(tmp_path):
    from bench.commands.tune import tune_experiment

    config = tiny_config_with(tmp_path, TUNE_CONFIG)
    runs = [tune_experiment(config, [], 3, None, None, tmp_path / f"tune{i}", workers=1) for i in range(2)]
    tables = [pd.read_csv(out / "tuning" / "trials.csv") for out in runs]
    params = [sorted(c for c in t.columns if c.startswith("params_")) for t in tables]
    assert params[0] == params[1] and params[0]
    for column in params[0] + ["value", "state"]:
        assert tables[0][column].tolist() == tables[1][column].tolist(), column
    tuned = [next((out / "tuning").glob("*-tuned-*.yaml")).read_text().split("\n", 1)[1] for out in runs]
    assert tuned[0] == tuned[1]  # the same tuned config, less its dated comment line
