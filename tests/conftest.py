"""Shared fixtures: a tiny protocol on the embedded digits data, and a CLI runner."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch
import yaml

from bench.cli import main
from bench.core import Strategy, TrainingData, register_strategy

ROOT = Path(__file__).resolve().parent.parent
# calibrations of `augbench plan` go to one folder per test session, not the user's home; the
# session removes the folder it made when it ends
if "AUGBENCH_CACHE" not in os.environ:
    os.environ["AUGBENCH_CACHE"] = SESSION_CACHE = tempfile.mkdtemp(prefix="augbench-tests-cache-")
else:
    SESSION_CACHE = None


def pytest_sessionfinish(session, exitstatus):
    if SESSION_CACHE is not None:
        shutil.rmtree(SESSION_CACHE, ignore_errors=True)


TINY_CONFIG = {
    "name": "tiny",
    "datasets": ["digits"],
    "regimes": [5],
    "split": {"seed": 0, "val_per_class": 10},
    "strategies": ["none", {"name": "classical", "label": "classical-basic", "params": {"policy": "basic"}}],
    "classifiers": ["mlp", "cnn"],
    "seeds": 2,
    "budget": {"scale": 0.05, "check": "off"},  # the budget check has tests of its own (test_budget.py)
    "eval_points": 2,
    "workers": 1,
    "precision": "fp32",  # the tests' numbers on any CPU; tests/test_budget.py runs bf16 too
}


@register_strategy("identity")
class Identity(Strategy):
    """Hands the real images over unchanged: registered in the tests only, it must score exactly
    like `none` (tests/test_common_random_numbers.py)."""

    def fit(self, labelled, ctx):
        return TrainingData(real=labelled)


@pytest.fixture(autouse=True)
def _single_thread():
    torch.set_num_threads(1)


@pytest.fixture
def tiny_config(tmp_path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY_CONFIG))
    return path


@pytest.fixture
def cli(capsys):
    """Run ``augbench ARGS`` in-process; returns (exit code, stdout, stderr)."""

    def run(*args: str):
        code = main([str(a) for a in args])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


def run_subprocess(*args: str, **kwargs) -> subprocess.CompletedProcess:
    """Run ``python -m bench.cli ARGS`` as a separate process (as a user would)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **kwargs.pop("env_extra", {})}
    return subprocess.run(
        [sys.executable, "-m", "bench.cli", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        cwd=kwargs.pop("cwd", ROOT),
        **kwargs,
    )
