"""A run's workers never outlive it, and SIGTERM ends a run as Ctrl-C does: finished cells are
kept, the tables are written, the exit code is not 0."""

import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
from conftest import ROOT
from faults.inject import alive as _alive
from faults.inject import children as _children
from tests_support import tiny_config_with, wait_until


def _start_run(tmp_path) -> tuple[subprocess.Popen, Path]:
    config = tiny_config_with(tmp_path, {"workers": 2, "seeds": 6, "quality": {"enabled": False}})
    out = tmp_path / "run"
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.cli", "run", config, "--out", str(out)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert wait_until(lambda: len(_children(process.pid)) >= 2, 120), "the workers did not start"
    return process, out


def test_workers_die_when_the_run_is_killed(tmp_path):
    process, _ = _start_run(tmp_path)
    workers = _children(process.pid)
    process.kill()
    process.wait()
    # a worker notices within 0.5 s once it runs; one still importing torch (slow on a loaded
    # machine) notices when it gets there
    assert wait_until(lambda: not any(_alive(w) for w in workers), 60), "orphaned workers kept running"


def test_sigterm_keeps_finished_cells_and_stops_the_workers(tmp_path):
    process, out = _start_run(tmp_path)
    workers = _children(process.pid)
    assert wait_until(lambda: len(list((out / "cells").glob("*.json"))) >= 1, 120)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130 and "interrupted" in err and "Traceback" not in err
    done = {p.stem for p in (out / "cells").glob("*.json")}
    assert set(pd.read_csv(out / "results.csv")["key"]) == done
    assert wait_until(lambda: not any(_alive(w) for w in workers), 10)
    assert not [p for p in out.rglob("*") if ".tmp" in p.name]
