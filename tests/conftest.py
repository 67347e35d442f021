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


def _poisoned(dataset, spec):
    """``dataset`` with every test image replaced by noise: the official test split's (whose labels
    are shuffled too), or those of the training pool that the split holds out (whose labels stay in
    the data set: they decide which images are held out; ``poisoned_data`` shuffles them in the split)."""
    import dataclasses

    from bench.core.images import ImageSet
    from bench.data.splits import held_out

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
    """Every route to the test images and labels poisoned: the data set as every stage fetches it
    (``cached_dataset``, which ``data_of``, the fit stage, the budget check and the steps: auto search
    use) with noise for its test images, and every split made from it with its test labels shuffled."""
    import dataclasses

    import bench.run.cell as cell_module
    from bench.core.images import ImageSet
    from bench.protocol.config import parse_config

    load, split_of = cell_module.load_dataset, cell_module.make_split
    held_out_by = parse_config(TINY_CONFIG).split  # the tests' split seed and test fraction

    def poisoned_split(dataset, regime, spec, replicate):
        split = split_of(dataset, regime, spec, replicate)
        order = torch.randperm(len(split.test), generator=torch.Generator().manual_seed(1))
        return dataclasses.replace(split, test=ImageSet(split.test.images, split.test.labels[order]))

    cell_module.cached_dataset.cache_clear()
    monkeypatch.setattr(cell_module, "load_dataset", lambda entry: _poisoned(load(entry), held_out_by))
    monkeypatch.setattr(cell_module, "make_split", poisoned_split)
    yield
    cell_module.cached_dataset.cache_clear()
