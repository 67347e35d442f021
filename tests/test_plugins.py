"""Plugins: a module named in a config, or an installed entry point, registers a data set and a
strategy that a run then uses; a plugin that does not import is one clear error."""

import os
import textwrap

import pandas as pd
import pytest
from conftest import ROOT, run_subprocess
from tests_support import tiny_config_with

PLUGIN = '''
from bench.core.strategy import Param, Strategy, TrainingData, register_strategy
from bench.data.sets import load_dataset, DatasetEntry, make_dataset, register_dataset
from bench.core.images import ImageSet


@register_strategy("{prefix}dim")
class Dim(Strategy):
    """Every training image dimmed by a tunable factor (a plugin's strategy with a search space)."""

    params = {"factor": Param(0.9, low=0.5, high=1.0, tune=True)}

    def fit(self, labelled, ctx):
        dimmed = (labelled.images.float() * self.values["factor"]).round().to(labelled.images.dtype)
        return TrainingData(real=ImageSet(dimmed, labelled.labels))


@register_strategy("{prefix}flip")
class Flip(Strategy):
    """Every training image flipped left-right (a plugin's strategy)."""

    def fit(self, labelled, ctx):
        return TrainingData(real=ImageSet(labelled.images.flip(-1), labelled.labels))


@register_dataset("{prefix}digits-half")
def half(spec):
    """The first half of the digits (a plugin's data set)."""
    full = load_dataset(DatasetEntry("digits")).train
    keep = slice(0, len(full) // 2)
    return make_dataset(spec.title, ImageSet(full.images[keep], full.labels[keep]), None,
                        [str(c) for c in range(10)], False)
'''


def _write_plugin(folder, module, prefix):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{module}.py").write_text(PLUGIN.replace("{prefix}", prefix))


def test_a_plugin_named_in_the_config_registers_what_a_run_uses(tmp_path, cli, monkeypatch):
    _write_plugin(tmp_path / "plugins", "myplug", "my-")
    monkeypatch.syspath_prepend(str(tmp_path / "plugins"))
    config = tiny_config_with(
        tmp_path,
        {
            "plugins": ["myplug"],
            "datasets": ["my-digits-half"],
            "strategies": ["none", "my-flip"],
            "classifiers": ["mlp"],
            "seeds": 1,
            "quality": {"enabled": False},
        },
    )
    code, _, err = cli("run", config, "--out", tmp_path / "run")
    assert code == 0, err
    results = pd.read_csv(tmp_path / "run" / "results.csv")
    assert set(results["strategy"]) == {"none", "my-flip"} and set(results["dataset"]) == {"my-digits-half"}
    code, out, _ = cli("list", "--plugins", "myplug")
    assert "my-flip" in out and "(from myplug)" in out


def test_an_installed_entry_point_registers_too(tmp_path, cli, monkeypatch):
    import bench.core.plugins as plugins

    site = tmp_path / "site"
    _write_plugin(site, "epplug", "ep-")
    info = site / "epplug-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: epplug\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[augbench.plugins]\nepplug = epplug\n")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setattr(plugins, "_entry_points_loaded", False)
    code, out, _ = cli("list")
    assert code == 0 and "ep-flip" in out and "(from epplug)" in out


def test_a_plugin_that_does_not_import_is_a_clear_error(tmp_path, cli, monkeypatch):
    (tmp_path / "broken.py").write_text(
        textwrap.dedent("""
        import no_such_package_anywhere
    """)
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    config = tiny_config_with(tmp_path, {"plugins": ["broken"]})
    code, _, err = cli("run", config, "--out", tmp_path / "run")
    assert code == 2 and "plugin broken does not import: ModuleNotFoundError" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "run").exists()


def test_a_plugin_strategy_is_known_in_tune_worker_processes(tmp_path, cli, monkeypatch):
    _write_plugin(tmp_path / "plugins", "tuneplug", "tp-")
    monkeypatch.syspath_prepend(str(tmp_path / "plugins"))  # spawned workers inherit sys.path
    config = tiny_config_with(
        tmp_path,
        {
            "plugins": ["tuneplug"],
            "strategies": ["none", "tp-dim"],
            "classifiers": ["mlp", "cnn"],
            "seeds": 1,
        },
    )
    code, out, err = cli("tune", config, "--trials", "1", "--workers", "2", "--out", tmp_path / "tune")
    assert code == 0, err
    trials = pd.read_csv(tmp_path / "tune" / "tuning" / "trials.csv")
    assert len(trials) == 2 and set(trials["state"]) == {"COMPLETE"}, trials


def test_a_plugin_strategy_runs_in_ray_tasks(tmp_path):
    pytest.importorskip("ray")
    _write_plugin(tmp_path / "plugins", "rayplug", "rp-")
    config = tiny_config_with(
        tmp_path,
        {"plugins": ["rayplug"], "strategies": ["none", "rp-flip"], "classifiers": ["mlp"], "seeds": 1},
    )
    env = {"PYTHONPATH": f"{tmp_path / 'plugins'}{os.pathsep}{ROOT}"}  # as a user makes a plugin importable
    done = run_subprocess(
        "run", config, "--out", tmp_path / "run", "--executor", "ray", env_extra=env, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = pd.read_csv(tmp_path / "run" / "results.csv")
    assert sorted(results["strategy"]) == ["none", "rp-flip"] and (results["status"] == "ok").all()


CLASSIFIER_PLUGIN = """
import math
import os
from pathlib import Path

from torch import nn

from bench.models.suite import Recipe, classifier


@classifier("cw-wide", Recipe("adamw", lr=1e-3, weight_decay=0.0, batch_size=64, epochs=1, min_steps=5),
            groupable=False, options=("width",), required=("width",))
def wide(shape, num_classes, width):
    \"\"\"A one-hidden-layer net of a configured width (a plugin's classifier with an option).\"\"\"
    (Path(os.environ["CW_BUILT"]) / f"width-{width}").touch()  # what the build was given
    hidden = nn.Linear(math.prod(shape), width)
    return nn.Sequential(nn.Flatten(), hidden, nn.ReLU(), nn.Linear(width, num_classes))
"""


def test_a_plugin_classifier_takes_the_options_it_declares_and_requires_them(tmp_path, cli, monkeypatch):
    (tmp_path / "cwplug.py").write_text(CLASSIFIER_PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("CW_BUILT", str(tmp_path / "built"))
    (tmp_path / "built").mkdir()
    base = {"plugins": ["cwplug"], "strategies": ["none"], "seeds": 1, "quality": {"enabled": False}}
    widths = [
        {"name": "cw-wide", "width": 4, "label": "w4"},
        {"name": "cw-wide", "width": 32, "label": "w32"},
    ]
    code, _, err = cli(
        "run", tiny_config_with(tmp_path, {**base, "classifiers": widths}), "--out", tmp_path / "run"
    )
    assert code == 0, err
    assert set(pd.read_csv(tmp_path / "run" / "results.csv")["classifier"]) == {"w4", "w32"}
    assert {p.name for p in (tmp_path / "built").iterdir()} == {"width-4", "width-32"}
    code, out, _ = cli("list", "--plugins", "cwplug")
    assert "options of its config entry ({name: cw-wide, ...}): width (required)" in out
    for entry in ({"name": "cw-wide"}, "cw-wide"):  # a mapping without it, or the bare name
        missing = tiny_config_with(tmp_path, {**base, "classifiers": [entry]}, name="missing")
        code, _, err = cli("run", missing, "--out", tmp_path / "refused")
        assert (
            code == 2 and "classifiers[0]: the cw-wide classifier needs {name: cw-wide, width: ...}" in err
        ), err
        assert not (tmp_path / "refused").exists()


BROKEN_CLASSIFIER = """
from bench.models.suite import Recipe, classifier


@classifier("cb-broken", Recipe("adamw", lr=1e-3, weight_decay=0.0, batch_size=64, epochs=1, min_steps=5),
            groupable=False)
def broken(shape, num_classes):
    \"\"\"A classifier whose build raises (a plugin's bug).\"\"\"
    raise RuntimeError("the plugin's bug")
"""


def test_a_run_whose_every_cell_raised_an_error_still_writes_its_tables_and_report(
    tmp_path, cli, monkeypatch
):
    """A bug costs its cells, also when it costs every cell: the run ends with the line naming them
    and exit code 1, not a traceback from a table without a successful row."""
    (tmp_path / "cbplug.py").write_text(BROKEN_CLASSIFIER)
    monkeypatch.syspath_prepend(str(tmp_path))
    change = {"plugins": ["cbplug"], "classifiers": ["cb-broken"], "seeds": 2, "quality": {"enabled": False}}
    code, out, err = cli("run", tiny_config_with(tmp_path, change), "--out", tmp_path / "run")
    assert code == 1 and "cell(s) raised an error" in err and "Traceback" not in err, err
    results = pd.read_csv(tmp_path / "run" / "results.csv")
    assert set(results["status"]) == {"failed"} and (results["failure_kind"] == "error").all()
    assert (tmp_path / "run" / "report" / "index.html").is_file() and "(no successful cells)" in out
