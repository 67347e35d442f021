"""Plugins: a module named in a config, or an installed entry point, registers a data set and a
strategy that a run then uses; a plugin that does not import is one clear error."""
import textwrap

import pandas as pd

from tests_support import tiny_config_with

PLUGIN = '''
from bench.core.strategy import Strategy, TrainingData, register_strategy
from bench.data.sets import load_dataset, DatasetSpec, make_dataset, register_dataset
from bench.core.images import ImageSet


@register_strategy("{prefix}flip")
class Flip(Strategy):
    """Every training image flipped left-right (a plugin's strategy)."""

    def fit(self, labelled, ctx):
        return TrainingData(real=ImageSet(labelled.images.flip(-1), labelled.labels))


@register_dataset("{prefix}digits-half")
def half(spec):
    """The first half of the digits (a plugin's data set)."""
    full = load_dataset(DatasetSpec("digits")).train
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
    config = tiny_config_with(tmp_path, {"plugins": ["myplug"], "datasets": ["my-digits-half"],
                                         "strategies": ["none", "my-flip"], "classifiers": ["mlp"], "seeds": 1,
                                         "quality": {"enabled": False}})
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
    (tmp_path / "broken.py").write_text(textwrap.dedent("""
        import no_such_package_anywhere
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    config = tiny_config_with(tmp_path, {"plugins": ["broken"]})
    code, _, err = cli("run", config, "--out", tmp_path / "run")
    assert code == 2 and "plugin broken does not import: ModuleNotFoundError" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "run").exists()
