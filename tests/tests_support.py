"""Helpers for tests: configs derived from the tiny protocol, data files, polling, records compared
without their times, and a pool whose labels lie."""

import copy
import json
import time
from pathlib import Path

import torch
import yaml
from conftest import TINY_CONFIG

import bench.data.unlabelled as unlabelled_module
from bench.core.images import ImageSet

# the semi-supervised protocol at the tests' size: the tiny config with the whole pool, mlp, one seed
SEMI = {
    **TINY_CONFIG,
    "regimes": [10],
    "unlabelled": "pool",
    "classifiers": ["mlp"],
    "seeds": 1,
    "quality": {"enabled": False},
}
# a record's columns that differ between two runs of the same cell
TIMES = (
    "started",
    "finished",
    "fit_seconds",
    "train_seconds",
    "fit_peak_mem_mb",
    "train_peak_mem_mb",
    "generator_fit_seconds",
    "generator_cache_hit",
)


def without_times(record: dict, *also: str) -> str:
    """The record without its times (and the columns ``also``), as comparable text (NaN equals NaN)."""
    return json.dumps({k: v for k, v in record.items() if k not in TIMES + also}, sort_keys=True)


def lie_about_pool_labels(monkeypatch) -> None:
    """From now on the unlabelled pool's labels are random (seeded): a strategy that never reads them
    cannot tell."""
    real_pool = unlabelled_module.train_pool

    def shuffled_labels(dataset, spec):
        pool, test = real_pool(dataset, spec)
        noise = torch.randint(
            0, dataset.num_classes, pool.labels.shape, generator=torch.Generator().manual_seed(7)
        )
        return ImageSet(pool.images, noise), test

    monkeypatch.setattr(unlabelled_module, "train_pool", shuffled_labels)


def wait_until(condition, timeout: float) -> bool:
    """Poll ``condition()`` every 0.2 s; True as soon as it holds, False after ``timeout`` seconds."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.2)
    return False


def tiny_config_with(tmp_path, change: dict, name: str = "tiny") -> str:
    """Write the tiny config with ``change`` applied to its top-level fields; return its path."""
    data = copy.deepcopy(TINY_CONFIG)
    data.update(change)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def digits_images_npz() -> str:
    """An .npz of the digits' images and labels (x, y), as pre-generated images for tests."""
    import tempfile

    import numpy as np

    from bench.data.sets import DatasetEntry, load_dataset

    path = Path(tempfile.gettempdir()) / "augbench-tests-digits-xy.npz"
    if not path.is_file():
        train = load_dataset(DatasetEntry("digits")).train
        np.savez(path, x=train.images.numpy(), y=train.labels.numpy())
    return str(path)


def fast_params(name: str) -> dict:
    """Params that make a strategy fit in a moment (its declared ``quick`` params, and a file of the
    tests' own for a param that names image files). Skips the calling test where the strategy needs
    an optional module that is missing."""
    import pytest

    from strategies import STRATEGIES

    cls = STRATEGIES.get(name)
    missing = cls.missing_modules()
    if missing:
        pytest.skip(f"{name} needs {', '.join(missing)}")
    files = {param: digits_images_npz() for param, spec in cls.params.items() if spec.names_files}
    return {**cls.quick, **files}
