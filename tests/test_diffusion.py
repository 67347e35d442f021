"""`diffusion`: a tiny fit on 8x8 digits gives class-consistent samples; a user's saved UNet is
sampled without training; a NaN fails the cell, not the run; one fit serves every classifier and
hybrid. They skip without diffusers."""

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from tests_support import tiny_config_with

from bench.core import FitContext
from bench.core.errors import UserError
from bench.data.sets import DatasetEntry, load_dataset
from bench.data.splits import SplitSpec, make_split
from strategies import STRATEGIES

diffusers = pytest.importorskip("diffusers")


TINY_STEPS = 400


@pytest.fixture(scope="module")
def digits():
    dataset = load_dataset(DatasetEntry("digits"))
    return dataset, make_split(dataset, 10, SplitSpec(val_per_class=10), replicate=0)


def _fit(labelled, tmp_path, **params):
    cls = STRATEGIES.get("diffusion")
    ctx = FitContext(
        device=torch.device("cpu"),
        seed=1,
        num_classes=10,
        hflip=False,
        cache_dir=tmp_path,
        cache_key_parts=("digits-test",),
    )
    return cls(**cls.resolve_params(params, "test")).fit(labelled, ctx)


def test_a_tiny_fit_gives_samples_a_classifier_of_real_digits_labels_far_better_than_chance(digits, tmp_path):
    dataset, split = digits
    judge = LogisticRegression(max_iter=2000).fit(
        dataset.train.images.flatten(1).numpy() / 255.0, dataset.train.labels.numpy()
    )
    data = _fit(split.labelled, tmp_path, steps=TINY_STEPS, ratio=3.0, sampling_steps=10, guidance=1.0)
    agreement = np.mean(
        judge.predict(data.synthetic.images.flatten(1).numpy() / 255.0) == data.synthetic.labels.numpy()
    )
    assert agreement > 0.5, agreement  # chance: 0.1


def _save_unet(folder, classes: int, size: int = 8, pipeline: bool = False):
    unet = diffusers.UNet2DModel(
        sample_size=size,
        in_channels=1,
        out_channels=1,
        block_out_channels=(8, 16),
        layers_per_block=1,
        down_block_types=("DownBlock2D",) * 2,
        up_block_types=("UpBlock2D",) * 2,
        num_class_embeds=classes,
        norm_num_groups=8,
    )
    if pipeline:
        diffusers.DDPMPipeline(
            unet=unet, scheduler=diffusers.DDPMScheduler(num_train_timesteps=100)
        ).save_pretrained(folder)
    else:
        unet.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("pipeline", [False, True])
def test_a_users_saved_model_is_sampled_without_training(digits, tmp_path, monkeypatch, pipeline):
    monkeypatch.setattr(
        "strategies.generator_checks.COLLAPSE_THRESHOLD", 0.0
    )  # an untrained net: judge nothing
    _, split = digits
    folder = _save_unet(tmp_path / "model", classes=11, pipeline=pipeline)
    data = _fit(split.labelled, tmp_path / "cache", pretrained=str(folder), steps=0, sampling_steps=3)
    assert data.synthetic.images.shape == (100, 1, 8, 8) and data.synthetic.images.dtype == torch.uint8
    assert data.info["generator_fit_seconds"] < 1.0  # loaded, not trained
    # the folder's content is part of the params: a changed model is a new generator
    first = STRATEGIES.get("diffusion").resolve_params({"pretrained": str(folder)}, "test")
    _save_unet(tmp_path / "model", classes=11, pipeline=pipeline)
    assert STRATEGIES.get("diffusion").resolve_params({"pretrained": str(folder)}, "test") != first


def test_a_saved_model_that_does_not_fit_the_data_is_a_clear_error(digits, tmp_path):
    _, split = digits
    with pytest.raises(UserError, match="has 5 class embeddings; the data set has 10"):
        _fit(split.labelled, tmp_path, pretrained=str(_save_unet(tmp_path / "five", classes=5)), steps=0)
    with pytest.raises(UserError, match="takes 1 channel"):
        _fit(
            split.labelled,
            tmp_path,
            pretrained=str(_save_unet(tmp_path / "small", classes=10, size=4)),
            steps=0,
        )
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="not a folder saved with save_pretrained"):
        STRATEGIES.get("diffusion").resolve_params({"pretrained": str(tmp_path / "empty")}, "test")


def test_a_nan_fails_the_cell_with_a_reason_and_the_grid_goes_on(tmp_path, cli, monkeypatch):
    monkeypatch.setattr(
        "strategies.diffusion.F.mse_loss", lambda *a, **k: torch.tensor(float("nan"), requires_grad=True)
    )
    config = tiny_config_with(
        tmp_path,
        {
            "strategies": ["none", {"name": "diffusion", "params": {"steps": 60}}],
            "classifiers": ["mlp"],
            "seeds": 1,
            "quality": {"enabled": False},
        },
    )
    code, _, err = cli("run", config, "--out", tmp_path / "run")
    assert code == 0, err
    rows = pd.read_csv(tmp_path / "run" / "results.csv").set_index("strategy")
    assert rows.loc["diffusion", "status"] == "failed"
    assert "diverged: diffusion loss is nan at step 50" in rows.loc["diffusion", "failure_reason"]
    assert rows.loc["none", "status"] == "ok"


def test_one_cached_fit_serves_every_classifier_and_hybrid(tmp_path, cli, monkeypatch):
    monkeypatch.setattr("strategies.generator_checks.COLLAPSE_THRESHOLD", 0.0)
    fast = {"steps": 30, "sampling_steps": 2}
    config = tiny_config_with(
        tmp_path,
        {
            "strategies": [
                {"name": "diffusion", "params": fast},
                {
                    "name": "hybrid",
                    "params": {"generator": "diffusion", "generator_params": fast, "policy": "basic"},
                },
            ],
            "classifiers": ["mlp", "cnn"],
            "seeds": 1,
            "quality": {"enabled": False},
            "workers": 1,
        },
    )
    code, _, err = cli("run", config, "--out", tmp_path / "run")
    assert code == 0, err
    rows = pd.read_csv(tmp_path / "run" / "results.csv")
    assert (rows["status"] == "ok").all() and rows["generator_key"].nunique() == 1
    assert sorted(rows["generator_cache_hit"].tolist()) == [False, True, True, True]


def test_diffusion_fails_loudly_without_diffusers(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "diffusers" else real(name, *a)
    )
    with pytest.raises(
        UserError, match=r"needs diffusers; install it with pip install 'augbench\[diffusion\]'"
    ):
        STRATEGIES.get("diffusion").resolve_params({}, "config field strategies[0].params")


@pytest.mark.parametrize("prediction", ["epsilon", "sample", "v_prediction"])
def test_every_prediction_target_trains_and_samples(prediction, digits, tmp_path, monkeypatch):
    monkeypatch.setattr("strategies.generator_checks.COLLAPSE_THRESHOLD", 0.0)
    _, split = digits
    data = _fit(split.labelled, tmp_path, steps=20, sampling_steps=2, prediction=prediction)
    assert data.synthetic.images.shape == (100, 1, 8, 8) and data.synthetic.images.dtype == torch.uint8
