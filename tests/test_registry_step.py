"""Every registered strategy x classifier trains for a step; registries refuse duplicates."""

import pytest
import torch
from tests_support import fast_params

from bench.core import FitContext
from bench.core.images import UnlabelledImages
from bench.core.registry import Registry
from bench.data.sets import DatasetEntry, load_dataset
from bench.data.splits import SplitSpec, make_split, train_pool
from bench.models.suite import CLASSIFIERS, ClassifierEntry
from bench.training.loop import train
from strategies import STRATEGIES

CONFIGURED = {"timm": (("input_size", 16), ("model", "resnet10t"))}  # classifiers that need options


@pytest.fixture(scope="module")
def digits_split():
    dataset = load_dataset(DatasetEntry("digits"))
    return dataset, make_split(dataset, 5, SplitSpec(val_per_class=5), replicate=0)


@pytest.mark.parametrize("classifier", CLASSIFIERS.names())
@pytest.mark.parametrize("strategy", STRATEGIES.names())
def test_every_strategy_and_classifier_trains_a_step(
    strategy, classifier, digits_split, tmp_path, monkeypatch
):
    # 20 generator steps are too few to judge
    monkeypatch.setattr("strategies.generator_checks.COLLAPSE_THRESHOLD", 0.0)
    dataset, split = digits_split
    cls = STRATEGIES.get(strategy)
    # granted to all
    pool = UnlabelledImages(train_pool(dataset, split.spec)[0].images[split.unlabelled_index])
    ctx = FitContext(
        device=torch.device("cpu"),
        seed=1,
        num_classes=10,
        hflip=False,
        cache_dir=tmp_path,
        cache_key_parts=("test",),
        unlabelled=pool,
        budget_scale=0.05,
    )
    data = cls(**cls.resolve_params(fast_params(strategy), "test")).fit(split.labelled, ctx)
    entry = ClassifierEntry(classifier, classifier, CONFIGURED.get(classifier, ()))
    if classifier == "timm":
        pytest.importorskip("timm")
    model = entry.build(dataset.image_shape, dataset.num_classes)
    before = [p.detach().clone() for p in model.parameters()]
    result = train(
        model,
        entry.training_recipe,
        data,
        split.val,
        steps=1,
        num_classes=10,
        device=torch.device("cpu"),
        order_seed=0,
        augment_seed=0,
        eval_points=1,
    )
    assert len(result.curve) == 1 and 0.0 <= result.curve[0]["val_accuracy"] <= 1.0
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters()))
    logits = model.eval()(torch.zeros(2, *dataset.image_shape))
    assert logits.shape == (2, 10)


def test_registry_refuses_duplicate_names():
    registry = Registry("thing")
    registry.register("a")(object())
    with pytest.raises(ValueError, match="already registered"):
        registry.register("a")(object())
