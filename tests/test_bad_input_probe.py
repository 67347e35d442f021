"""The bad-input probe: each kind of bad input (a config, a data file, a flag, an executor, a
storage, a folder) ends with exit code 2, one `augbench: error:` line naming the field or file,
no traceback, and the output folder absent, or byte-identical where it existed."""

import os

import numpy as np
import pytest
from PIL import Image
from tests_support import tiny_config_with

SMALL = {
    "strategies": ["none", {"name": "classical", "params": {"policy": "basic"}}],
    "classifiers": ["mlp"],
    "seeds": 1,
}


def _folder(root, classes: int, size: int = 8, per_class: int = 12):
    for c in range(classes):
        (root / str(c)).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(np.full((size, size), 20 * i + c, np.uint8)).save(root / str(c) / f"{i}.png")
    return str(root)


def _config(tmp_path, **change) -> str:
    return tiny_config_with(tmp_path, {**SMALL, **change})


def _synthetic(tmp_path, path) -> str:
    return _config(tmp_path, strategies=["none", {"name": "synthetic-images", "params": {"path": str(path)}}])


def _npz(path, **arrays) -> str:
    np.savez(path, **arrays)
    return str(path)


# name -> (tmp_path -> argv with OUT standing for the output folder, what the error line must name)
CASES = {
    "config of random bytes": (
        lambda t: ["run", _write(t / "random.yaml", os.urandom(300)), "--out", "OUT"],
        "random.yaml",
    ),
    "config path that is a folder": (lambda t: ["run", str(t), "--out", "OUT"], "is a folder"),
    "imagefolder size 0": (
        lambda t: [
            "run",
            _config(t, datasets=[{"name": "imagefolder", "root": _folder(t / "f", 2), "size": 0}]),
            "--out",
            "OUT",
        ],
        "`size`",
    ),
    "imagefolder size -3": (
        lambda t: [
            "run",
            _config(t, datasets=[{"name": "imagefolder", "root": _folder(t / "f", 2), "size": -3}]),
            "--out",
            "OUT",
        ],
        "`size`",
    ),
    "imagefolder of one class": (
        lambda t: [
            "run",
            _config(t, datasets=[{"name": "imagefolder", "root": _folder(t / "f", 1)}]),
            "--out",
            "OUT",
        ],
        "1 class",
    ),
    "data root that is a file": (
        lambda t: [
            "run",
            _config(t, datasets=[{"name": "imagefolder", "root": _write(t / "file", b"x")}]),
            "--out",
            "OUT",
        ],
        "is a file",
    ),
    "npz of object arrays": (
        lambda t: [
            "run",
            _config(
                t,
                datasets=[
                    {
                        "name": "npz",
                        "path": _npz(
                            t / "obj.npz",
                            x=np.array([np.zeros((8, 8)), None], dtype=object),
                            y=np.array([0, 1]),
                        ),
                    }
                ],
            ),
            "--out",
            "OUT",
        ],
        "obj.npz",
    ),
    "npz with NaN pixels": (
        lambda t: [
            "run",
            _config(
                t,
                datasets=[
                    {
                        "name": "npz",
                        "path": _npz(
                            t / "nan.npz",
                            x=np.where(np.arange(64 * 200).reshape(200, 8, 8) == 5, np.nan, 0.5).astype(
                                np.float32
                            ),
                            y=np.arange(200) % 10,
                        ),
                    }
                ],
            ),
            "--out",
            "OUT",
        ],
        "NaN",
    ),
    "a regime twice": (lambda t: ["run", _config(t, regimes=[5, 5]), "--out", "OUT"], "regimes"),
    "unknown executor": (
        lambda t: ["run", _config(t, executor={"name": "nonsense"}), "--out", "OUT"],
        "executor.name",
    ),
    "address without ray": (
        lambda t: ["run", _config(t), "--address", "127.0.0.1:1", "--out", "OUT"],
        "executor.address",
    ),
    "unreachable ray address": (
        lambda t: ["run", _config(t), "--executor", "ray", "--address", "127.0.0.1:1", "--out", "OUT"],
        "executor.address",
    ),
    "unreachable ray:// address": (
        lambda t: ["run", _config(t), "--executor", "ray", "--address", "ray://127.0.0.1:1", "--out", "OUT"],
        "executor.address",
    ),
    "GPUs per cell on a cluster without": (
        lambda t: [
            "run",
            _config(t),
            "--executor",
            "ray",
            "--set",
            "executor.gpus_per_cell=1",
            "--out",
            "OUT",
        ],
        "executor.gpus_per_cell",
    ),
    "synthetic images of other classes": (
        lambda t: ["run", _synthetic(t, _folder(t / "made", 2)), "--out", "OUT"],
        "differ from the data set's",
    ),
    "synthetic images of another size": (
        lambda t: [
            "run",
            _synthetic(t, _npz(t / "big.npz", x=np.zeros((100, 16, 16), np.uint8), y=np.arange(100) % 10)),
            "--out",
            "OUT",
        ],
        "params.path",
    ),
    "too few synthetic images for the ratio": (
        lambda t: [
            "run",
            _synthetic(t, _npz(t / "few.npz", x=np.zeros((20, 8, 8), np.uint8), y=np.arange(20) % 10)),
            "--out",
            "OUT",
        ],
        "params.path",
    ),
    "synthetic labels beyond the classes": (
        lambda t: [
            "run",
            _synthetic(t, _npz(t / "labels.npz", x=np.zeros((100, 8, 8), np.uint8), y=np.arange(100) % 12)),
            "--out",
            "OUT",
        ],
        "labels go up to",
    ),
    "tune storage of no known kind": (
        lambda t: ["tune", _config(t), "--trials", "1", "--storage", "bogus://x", "--out", "OUT"],
        "--storage",
    ),
    "tune storage under a file": (
        lambda t: [
            "tune",
            _config(t),
            "--trials",
            "1",
            "--storage",
            f"sqlite:///{_write(t / 'file', b'x')}/optuna.db",
            "--out",
            "OUT",
        ],
        "--storage",
    ),
    "tune empty study name": (lambda t: ["tune", _config(t), "--study", "", "--out", "OUT"], "--study"),
    "tune worker index -1": (
        lambda t: ["tune", _config(t), "--worker-index", "-1", "--out", "OUT"],
        "--worker-index",
    ),
    "tune trials 0": (lambda t: ["tune", _config(t), "--trials", "0", "--out", "OUT"], "--trials"),
    "an unknown command": (lambda t: ["runn", _config(t)], "runn"),
    "plan --json under a file": (
        lambda t: ["plan", _config(t), "--out", "OUT", "--json", f"{_write(t / 'file', b'x')}/plan.json"],
        "--json",
    ),
    "unknown data set": (lambda t: ["run", _config(t, datasets=["cifar99"]), "--out", "OUT"], "cifar99"),
    "unknown strategy": (lambda t: ["run", _config(t, strategies=["gann"]), "--out", "OUT"], "gann"),
    "a bad value": (lambda t: ["run", _config(t, seeds=0), "--out", "OUT"], "seeds"),
}


def _write(path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


def _snapshot(folder) -> dict:
    return {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()} if folder.exists() else {}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_error_line_and_writes_nothing(case, tmp_path, cli):
    make, names = CASES[case]
    out = tmp_path / "out"
    argv = [str(out) if a == "OUT" else a for a in make(tmp_path)]
    code, stdout, err = cli(*argv)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("augbench: error:"), err
    assert names in lines[0] and "Traceback" not in err + stdout
    assert not out.exists()


def test_a_refused_run_leaves_the_folder_it_refuses_byte_identical(tmp_path, cli):
    out = tmp_path / "run"
    code, _, err = cli("run", _config(tmp_path), "--out", out)
    assert code == 0, err
    assert not (out / ".lock").exists()  # a finished run leaves no lock behind
    before = _snapshot(out)
    for argv in (
        ["run", tiny_config_with(tmp_path, {**SMALL, "seeds": 2}, name="other"), "--out", out],
        ["tune", tiny_config_with(tmp_path, {**SMALL, "seeds": 2}, name="other"), "--out", out],
        ["run", _config(tmp_path), "--executor", "ray", "--address", "127.0.0.1:1", "--out", out],
    ):
        code, _, err = cli(*argv)
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        assert _snapshot(out) == before, argv


def test_list_names_the_executors_the_error_names(tmp_path, cli):
    code, listing, _ = cli("list")
    shown = next(line for line in listing.splitlines() if line.startswith("executors:")).split(":", 1)[1]
    code, _, err = cli("run", _config(tmp_path, executor={"name": "nonsense"}), "--out", tmp_path / "out")
    assert code == 2 and err.strip().endswith("known executors: " + shown.strip())
