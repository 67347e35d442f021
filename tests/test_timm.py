"""A timm model as a configured classifier: its own recipe, local weights, resized inputs, and
options in the cell key. Skips where the optional extra is not installed."""

import pandas as pd
import pytest
import torch
from tests_support import tiny_config_with

timm = pytest.importorskip("timm")
MODEL = "resnet10t"
BASE = {"strategies": ["none"], "seeds": 1, "quality": {"enabled": False}}
ENTRY = {
    "name": "timm",
    "model": MODEL,
    "input_size": 32,
    "recipe": {"batch_size": 32, "min_steps": 4, "epochs": 1},
}


def test_a_timm_classifier_runs_with_its_recipe_and_weights(tmp_path, cli):
    weights = tmp_path / "weights.pt"
    torch.save(timm.create_model(MODEL, num_classes=1000, in_chans=1).state_dict(), weights)
    config = tiny_config_with(
        tmp_path,
        {**BASE, "classifiers": ["mlp", ENTRY, {**ENTRY, "label": "timm-warm", "pretrained": str(weights)}]},
    )
    code, _, err = cli("run", config, "--out", tmp_path / "run")
    assert code == 0, err
    rows = pd.read_csv(tmp_path / "run" / "results.csv").set_index("classifier")
    assert set(rows.index) == {"mlp", f"timm-{MODEL}", "timm-warm"}
    assert rows.loc[f"timm-{MODEL}", "batch_size"] == 32 and rows.loc["timm-warm", "status"] == "ok"
    assert rows.loc[f"timm-{MODEL}", "key"] != rows.loc["timm-warm", "key"]  # the weights are part of the key


def test_an_unknown_timm_model_is_a_clear_error(tmp_path, cli):
    config = tiny_config_with(
        tmp_path, {**BASE, "classifiers": [{"name": "timm", "model": "resnet-does-not-exist"}]}
    )
    code, _, err = cli("run", config, "--out", tmp_path / "run")
    assert code == 2 and "unknown model 'resnet-does-not-exist'" in err and not (tmp_path / "run").exists()
