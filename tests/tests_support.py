"""Helpers for tests: configs derived from the tiny protocol, data files, polling."""

import copy
import time
from pathlib import Path

import yaml
from conftest import TINY_CONFIG


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
