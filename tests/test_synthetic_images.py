"""`synthetic-images`: images a built-in generator wrote out reproduce that generator's quality
numbers and, given one seed for their batch order, its training exactly; a mismatched folder is one
clear error."""

import numpy as np
import pandas as pd
import torch
from PIL import Image
from tests_support import tiny_config_with

from bench.core.seeding import derive_seed
from bench.data.splits import make_split
from bench.protocol.config import load_config
from bench.run.cell import Cell, cached_dataset, expand_grid
from bench.run.stages import fit_strategy

VAE = {"name": "vae", "params": {"steps": 150}}
BASE = {"classifiers": ["mlp"], "seeds": 1, "quality": {"samples": 100}}


def test_a_generators_pool_written_out_scores_and_trains_as_the_generator(tmp_path, cli, monkeypatch):
    config = load_config(tiny_config_with(tmp_path, {**BASE, "strategies": [VAE]}, name="vae-only"))
    cell = expand_grid(config, {"digits": cached_dataset(config.datasets[0]).content_hash})[0]
    dataset = cached_dataset(cell.dataset)
    split = make_split(dataset, cell.regime, cell.split, cell.replicate)
    data, _ = fit_strategy(cell, dataset, split, torch.device("cpu"), None)
    np.savez(tmp_path / "vae-pool.npz", x=data.synthetic.images.numpy(), y=data.synthetic.labels.numpy())

    both = tiny_config_with(
        tmp_path,
        {
            **BASE,
            "strategies": [
                "none",
                VAE,
                {"name": "synthetic-images", "params": {"path": str(tmp_path / "vae-pool.npz")}},
            ],
        },
    )
    # Both hand the trainer the same images, real batches and initial weights; a strategy's own seed
    # orders its synthetic batches (Cell.augment_seed: each strategy has its own). Given one seed, the
    # written-out pool must train exactly as the generator's.
    monkeypatch.setattr(Cell, "augment_seed", property(lambda cell: derive_seed("augment", cell.replicate)))
    code, _, err = cli("run", both, "--out", tmp_path / "run")
    assert code == 0, err
    rows = pd.read_csv(tmp_path / "run" / "results.csv").set_index("strategy")
    for column in (
        "quality_n",
        "fid_evaluator",
        "kid_evaluator",
        "precision_evaluator",
        "recall_evaluator",
        "evaluator_label_agreement",
        "cas_accuracy",
        "mem_near_copy_fraction",
    ):
        assert rows.loc["synthetic-images", column] == rows.loc["vae", column], column
    assert rows.loc["synthetic-images", "quality_kind"] == "generated"
    for column in ("test_accuracy", "test_nll", "n_synthetic", "synthetic_per_step"):
        assert rows.loc["synthetic-images", column] == rows.loc["vae", column], column
    # it trained on them
    assert rows.loc["synthetic-images", "test_accuracy"] != rows.loc["none", "test_accuracy"]


def test_a_folder_with_other_classes_is_a_clear_error(tmp_path, cli):
    folder = tmp_path / "made"
    for name in ("cat", "dog"):
        (folder / name).mkdir(parents=True)
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(folder / name / "0.png")
    config = tiny_config_with(
        tmp_path, {**BASE, "strategies": [{"name": "synthetic-images", "params": {"path": str(folder)}}]}
    )
    code, _, err = cli("run", config, "--out", tmp_path / "run")
    assert code == 2 and "its classes ['cat', 'dog'] differ from the data set's" in err
    config = tiny_config_with(
        tmp_path,
        {**BASE, "strategies": [{"name": "synthetic-images", "params": {"path": str(tmp_path / "nope")}}]},
    )
    code, _, err = cli("run", config, "--out", tmp_path / "run2")
    assert code == 2 and "does not exist" in err
