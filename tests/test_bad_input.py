"""Bad input: one clear message, exit code 2, no traceback, nothing overwritten."""

import gzip

import pytest
from conftest import run_subprocess
from tests_support import tiny_config_with


@pytest.mark.parametrize(
    "change, expected",
    [
        ({"datasets": ["cifar99"]}, "unknown data set 'cifar99'; known data sets: digits"),
        ({"strategies": ["gann"]}, "unknown strategy 'gann'; known strategies:"),
        (
            {"strategies": [{"name": "classical", "params": {"policy": "basic+autoaugment"}}]},
            "unknown policy 'autoaugment'; known policies:",
        ),
        ({"classifiers": ["vit"]}, "unknown classifier 'vit'; known classifiers: cnn, mlp, resnet"),
        (
            {"strategies": [{"name": "classical", "params": {"magnitude": 3}}]},
            "magnitude: 3 is out of range (must be [0.0, 1.0])",
        ),
        ({"strategies": [{"name": "classical", "params": {"strength": 1}}]}, "unknown parameter(s) strength"),
        ({"seeds": 0}, "seeds: 0 is out of range"),
        ({"regimes": [-3]}, "regimes[0]: expected a positive number of images per class, 'all'"),
        ({"budget": {"scale": -1}}, "budget.scale: -1 is out of range"),
        ({"split": {"val_per_class": 0}}, "split.val_per_class: 0 is out of range"),
        ({"regimes": [500]}, "regimes=500 asks for 500 images of class"),
        ({"colour": "red"}, "unknown field(s) colour"),
    ],
)
def test_bad_config_values(tmp_path, cli, change, expected):
    code, out, err = cli("run", tiny_config_with(tmp_path, change), "--out", tmp_path / "run")
    assert code == 2
    assert expected in err
    assert "Traceback" not in err
    assert not (tmp_path / "run").exists()  # checked before the folder is touched


def test_malformed_yaml(tmp_path, cli):
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\ndatasets: [digits\n")
    code, _, err = cli("run", path)
    assert code == 2 and "is not valid YAML" in err and str(path) in err


def test_missing_config_file(cli):
    code, _, err = cli("run", "no-such-config.yaml")
    assert code == 2 and "config 'no-such-config.yaml' not found" in err and "quick" in err


def test_bad_set_override(tiny_config, cli):
    code, _, err = cli("run", tiny_config, "--set", "seeds")
    assert code == 2 and "expected key=value" in err


@pytest.mark.parametrize("value", ["", "null", "~"])
def test_an_empty_run_name_is_refused_and_nothing_is_written(tmp_path, tiny_config, cli, value):
    code, _, err = cli("run", tiny_config, "--set", f"name={value}", "--out", tmp_path / "run")
    assert (
        code == 2 and err.startswith("augbench: error: config field name: empty") and "Traceback" not in err
    )
    assert not (tmp_path / "run").exists()


def _fashion_folder(tmp_path, corrupt: str | None = None, missing: str | None = None):
    """A fake fashion-mnist folder with tiny but valid IDX files, optionally broken."""
    import numpy as np

    folder = tmp_path / "fm"
    folder.mkdir()
    for prefix, n in (("train", 40), ("t10k", 20)):
        images = np.zeros((n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        for name, array in (
            (f"{prefix}-images-idx3-ubyte.gz", images),
            (f"{prefix}-labels-idx1-ubyte.gz", labels),
        ):
            header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
            with gzip.open(folder / name, "wb") as handle:
                handle.write(header + array.tobytes())
    if corrupt:
        (folder / corrupt).write_bytes(b"this is not gzip")
    if missing:
        (folder / missing).unlink()
    return folder


@pytest.mark.parametrize(
    "broken", [{"missing": "train-images-idx3-ubyte.gz"}, {"corrupt": "t10k-labels-idx1-ubyte.gz"}]
)
def test_missing_or_corrupt_data_files(tmp_path, cli, broken):
    folder = _fashion_folder(tmp_path, **broken)
    name = next(iter(broken.values()))
    config = tiny_config_with(tmp_path, {"datasets": [{"name": "fashion-mnist", "root": str(folder)}]})
    code, _, err = cli("run", config, "--out", tmp_path / "run")
    assert code == 2
    assert name in err and ("missing" in err or "corrupt" in err)
    assert "apt-get install dataset-fashion-mnist" in err
    assert "Traceback" not in err


def test_missing_data_folder(tmp_path, cli):
    config = tiny_config_with(
        tmp_path, {"datasets": [{"name": "fashion-mnist", "root": str(tmp_path / "nope")}]}
    )
    code, _, err = cli("run", config)
    assert code == 2 and "does not exist" in err


def test_output_folder_of_another_config_is_refused_and_kept(tmp_path, cli):
    out = tmp_path / "run"
    config = tiny_config_with(tmp_path, {"strategies": ["none"], "classifiers": ["mlp"], "seeds": 1})
    code, _, _ = cli("run", config, "--out", out)
    assert code == 0
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    other = tiny_config_with(
        tmp_path, {"strategies": ["none"], "classifiers": ["mlp"], "seeds": 2}, name="other"
    )
    code, _, err = cli("run", other, "--out", out)
    assert code == 2 and "holds a run of a different config" in err
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_user_errors_print_no_traceback_from_a_real_process(tmp_path):
    config = tiny_config_with(tmp_path, {"classifiers": ["vit"]})
    result = run_subprocess("run", config, "--out", tmp_path / "run")
    assert result.returncode == 2
    assert result.stderr.strip().startswith("augbench: error:") and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "args",
    [
        ["tune", "--trials", "0"],
        ["tune", "--workers", "-1"],
        ["bench-augment", "--steps", "x"],
        ["bench-augment", "--threads", "-2"],
    ],
)
def test_bad_command_line_numbers(args, cli):
    code, _, err = cli(*args)
    assert code == 2 and err.startswith("augbench: error:") and len(err.strip().splitlines()) == 1
    assert "argument --" in err and "Traceback" not in err
