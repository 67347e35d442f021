"""Protocol v2: a comparison differs only in the strategy. An identity strategy, and classical
augmentation at magnitude 0, score exactly like `none` on every seed; real data exposure under
`mixing: add` is that of `none`."""

import pytest
import torch
from conftest import TINY_CONFIG
from tests_support import fast_params

from bench.protocol.config import parse_config
from bench.run.cell import cached_dataset, expand_grid
from bench.run.stages import run_cell
from bench.training.loop import IndexStream, batch_split

IDENTICAL = ("test_accuracy", "test_nll", "test_ece", "train_accuracy", "train_nll", "val_accuracy", "curve")


def _records(strategies, **changes) -> dict:
    config = parse_config({**TINY_CONFIG, "strategies": strategies, "quality": {"enabled": False}, **changes})
    cells = expand_grid(config, {"digits": cached_dataset(config.datasets[0]).content_hash})
    return {(c.strategy.label, c.classifier, c.replicate): run_cell(c, torch.device("cpu")) for c in cells}


def test_identity_and_magnitude_zero_score_exactly_like_none():
    records = _records(
        [
            "none",
            "identity",
            {"name": "classical", "label": "basic-0", "params": {"policy": "basic", "magnitude": 0.0}},
            {
                "name": "classical",
                "label": "trivial-0",
                "params": {"policy": "trivialaugment+mixup", "magnitude": 0.0},
            },
        ]
    )
    for (label, classifier, replicate), record in records.items():
        baseline = records[("none", classifier, replicate)]
        assert record["seed"] == baseline["seed"]
        for column in IDENTICAL:
            assert record[column] == baseline[column], (label, classifier, replicate, column)


def test_a_real_strategy_differs_from_none():
    records = _records(["none", {"name": "classical", "label": "basic", "params": {"policy": "basic"}}])
    assert any(
        records[("basic", c, k)]["curve"] != records[("none", c, k)]["curve"]
        for c in ("mlp", "cnn")
        for k in (0, 1)
    )


def test_add_keeps_the_real_batch_of_none_and_replace_shrinks_it():
    records = _records(
        ["none", {"name": "gan", "label": "gan-add", "params": fast_params("gan")}],
        classifiers=["mlp"],
        seeds=1,
    )
    none, gan = records[("none", "mlp", 0)], records[("gan-add", "mlp", 0)]
    assert none["real_per_step"] == gan["real_per_step"] == 128  # 50 real images, batch 128: wraps around
    assert gan["synthetic_per_step"] == 128 and none["synthetic_per_step"] == 0  # ratio 1
    assert gan["budget_epochs"] == none["budget_epochs"]
    assert gan["train_images_processed"] == 2 * none["train_images_processed"]
    replaced = _records(
        [{"name": "gan", "label": "gan-replace", "params": fast_params("gan")}],
        classifiers=["mlp"],
        seeds=1,
        mixing={"mode": "replace"},
    )[("gan-replace", "mlp", 0)]
    assert (replaced["real_per_step"], replaced["synthetic_per_step"]) == (64, 64)


@pytest.mark.parametrize(
    "n_real, n_synthetic, mixing, expected",
    [
        (100, 0, "add", (128, 0)),
        (100, 100, "add", (128, 128)),
        (100, 1000, "add", (128, 1280)),
        (100, 100, "replace", (64, 64)),
        (100, 1000, "replace", (12, 116)),
        (100, 10, "replace", (116, 12)),
    ],
)
def test_batch_split(n_real, n_synthetic, mixing, expected):
    assert batch_split(128, n_real, n_synthetic, mixing) == expected


def test_index_stream_batches_have_one_size_and_cover_every_epoch():
    stream = IndexStream(10, torch.Generator().manual_seed(0), torch.device("cpu"))
    taken = torch.cat([stream.take(4) for _ in range(5)])  # 20 indices: two whole epochs
    assert torch.equal(taken[:10].sort().values, torch.arange(10))
    assert torch.equal(taken[10:].sort().values, torch.arange(10))


def test_a_fresh_synthetic_pool_is_resampled_during_training():
    gan = {"name": "gan", "params": {**fast_params("gan"), "ratio": 0.2}}
    fixed = _records([gan], classifiers=["mlp"], seeds=1)[("gan", "mlp", 0)]
    fresh = _records([gan], classifiers=["mlp"], seeds=1, mixing={"synthetic_pool": "fresh"})[
        ("gan", "mlp", 0)
    ]
    assert fixed["status"] == fresh["status"] == "ok" and fresh["synthetic_pool"] == "fresh"
    assert fresh["curve"] != fixed["curve"]  # 10 synthetic images, 26 per step: new samples every epoch
