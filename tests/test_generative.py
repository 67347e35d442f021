"""Generative strategies: labelled uint8 samples, the generator cache, divergence handling."""
import pandas as pd
import pytest
import torch

from bench.data import DatasetSpec, load_dataset
from bench.core.errors import CellFailed
from strategies.generative import GenerativeStrategy
from bench.splits import SplitSpec, make_split
from strategies import STRATEGIES
from bench.core import FitContext
from tests_support import fast_params, tiny_config_with

GENERATIVE = [n for n in STRATEGIES.names() if issubclass(STRATEGIES.get(n), GenerativeStrategy)
              or n == "hybrid"]


@pytest.fixture(scope="module")
def labelled():
    dataset = load_dataset(DatasetSpec("digits"))
    return make_split(dataset, 6, SplitSpec(val_per_class=5), replicate=0).labelled


def _ctx(tmp_path, parts=("data-a",), seed=3):
    return FitContext(device=torch.device("cpu"), seed=seed, num_classes=10, hflip=False, cache_dir=tmp_path,
                      cache_key_parts=parts)


def _make(name, **params):
    cls = STRATEGIES.get(name)
    extra = {"generator": "vae"} if name == "hybrid" else {}
    return cls(**cls.resolve_params({**fast_params(name), **extra, **params}, "test"))


@pytest.mark.parametrize("name", GENERATIVE)
def test_samples_are_labelled_uint8_images_at_the_ratio(name, labelled, tmp_path, monkeypatch):
    monkeypatch.setattr("strategies.generative.COLLAPSE_THRESHOLD", 0.0)  # 20 steps is too few to judge
    data = _make(name, ratio=2.0).fit(labelled, _ctx(tmp_path))
    synthetic = data.synthetic
    assert synthetic.images.dtype == torch.uint8 and synthetic.images.shape == (120, 1, 8, 8)
    assert synthetic.labels.dtype == torch.int64
    assert torch.bincount(synthetic.labels, minlength=10).tolist() == [12] * 10
    drawn = data.sampler(30, torch.Generator().manual_seed(0))
    assert drawn.images.shape == (30, 1, 8, 8) and torch.bincount(drawn.labels).tolist() == [3] * 10


def test_generator_cache_hits_on_rerun_and_misses_on_changed_input(labelled, tmp_path, monkeypatch):
    monkeypatch.setattr("strategies.generative.COLLAPSE_THRESHOLD", 0.0)
    first = _make("vae").fit(labelled, _ctx(tmp_path))
    again = _make("vae").fit(labelled, _ctx(tmp_path))
    assert first.info["generator_cache_hit"] is False and again.info["generator_cache_hit"] is True
    assert torch.equal(first.synthetic.images, again.synthetic.images)
    assert _make("vae", ratio=3.0).fit(labelled, _ctx(tmp_path)).info["generator_cache_hit"] is True
    assert _make("vae-perturb").fit(labelled, _ctx(tmp_path)).info["generator_cache_hit"] is True  # one VAE
    assert _make("vae", lr=3e-3).fit(labelled, _ctx(tmp_path)).info["generator_cache_hit"] is False
    assert _make("vae").fit(labelled, _ctx(tmp_path, parts=("data-b",))).info["generator_cache_hit"] is False
    changed = labelled.subset(torch.arange(len(labelled) - 10))
    from bench.core.images import content_hash
    assert _make("vae").fit(changed, _ctx(tmp_path, parts=(content_hash(changed),))).info["generator_cache_hit"] is False
    for path in tmp_path.glob("generator-*.pt"):  # safe deserialization
        torch.load(path, weights_only=True)


@pytest.mark.parametrize("name", [n for n in GENERATIVE if n != "hybrid"])
def test_a_fitted_generator_depends_on_its_key_alone_not_on_who_fits_it_first(name, labelled, tmp_path,
                                                                               monkeypatch):
    """gan and hybrid share a generator through the cache: whichever fits it, with whatever random
    state before, it must come out the same (else results depend on the order cells ran in)."""
    monkeypatch.setattr("strategies.generative.COLLAPSE_THRESHOLD", 0.0)
    weights = []
    for global_seed, folder, fit_seed in ((0, "one", 3), (1, "two", 4)):
        torch.manual_seed(global_seed)
        model, _ = _make(name).fitted_generator(labelled, _ctx(tmp_path / folder, seed=fit_seed))
        weights.append(model.state_dict())
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_collapsed_samples_fail_the_fit(labelled, tmp_path, monkeypatch):
    strategy = _make("vae")
    monkeypatch.setattr(type(strategy), "sample",
                        lambda self, model, labels, lab, ctx, gen: torch.full((len(labels), 1, 8, 8), 7, dtype=torch.uint8))
    with pytest.raises(CellFailed, match="mode collapse"):
        strategy.fit(labelled, _ctx(tmp_path))


def test_a_divergent_gan_gives_a_failed_cell_not_a_crashed_run(tmp_path, cli):
    config = tiny_config_with(tmp_path, {
        "strategies": ["none", {"name": "gan", "params": {"lr": 10.0, "steps": 150}}],
        "classifiers": ["mlp", "cnn"], "seeds": 1, "quality": {"enabled": False}})
    code, out, err = cli("run", config, "--out", tmp_path / "run")
    assert code == 0, err
    results = pd.read_csv(tmp_path / "run" / "results.csv")
    gan = results[results["strategy"] == "gan"]
    assert len(gan) == 2 and (gan["status"] == "failed").all()
    assert gan["failure_reason"].str.contains("diverged|collapse").all()
    assert (results[results["strategy"] == "none"]["status"] == "ok").all()
    assert "failed" in err
