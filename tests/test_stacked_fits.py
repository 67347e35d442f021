"""Generator cohorts: the seeds' fits of one generator trained as one stacked model give each
member what fitting it alone gives (within float tolerance at the first step), each member keeps
its own key, cache entry and divergence and collapse checks, and a run in cohorts finishes every
cell with its own generator."""

import copy
import dataclasses
import json

import pytest
import torch
from tests_support import fast_params, tiny_config_with

from bench.core.images import ImageSet, UnlabelledImages
from bench.core.strategy import STRATEGIES, FitContext
from bench.training.stacked import Members, stack_draws
from strategies import gan, generator_fits, vae

CPU = torch.device("cpu")
DESIGNS = {
    "vae": {},
    "vae-pool": {"generator_data": "pool"},
    "vae-m2": {"generator_data": "pool", "pool_model": "m2"},
    "gan": {},
    "gan-pool": {"generator_data": "pool"},
    "gan-no-diffaugment": {"diffaugment": "off"},
}


def _strategy(design: str):
    name = design.split("-")[0]
    cls = STRATEGIES.get(name)
    return cls(**cls.resolve_params({**fast_params(name), **DESIGNS[design]}, "test"))


def _vae(**params):
    cls = STRATEGIES.get("vae")
    return cls(**cls.resolve_params({**fast_params("vae"), **params}, "test"))


def _labelled(seed: int) -> ImageSet:
    generator = torch.Generator().manual_seed(seed)
    return ImageSet(
        torch.randint(0, 256, (40, 1, 8, 8), generator=generator, dtype=torch.uint8), torch.arange(40) % 10
    )


POOL = UnlabelledImages(
    torch.randint(0, 256, (120, 1, 8, 8), generator=torch.Generator().manual_seed(9), dtype=torch.uint8)
)


def _ctx(tmp_path, part: str, fits=None, parts: str = "") -> FitContext:
    """A fit's context; with ``fits`` one of a stacked fit whose members' key parts are ``parts``."""
    return FitContext(
        device=CPU,
        seed=1,
        num_classes=10,
        hflip=False,
        cache_dir=tmp_path,
        cache_key_parts=(part,),
        unlabelled=POOL,
        stacked_parts=tuple((p,) for p in parts),
        stacked_fits=fits,
    )


def _first_step(strategy, models, sets, ctx, first_seed: int = 10):
    """The members' losses at a first step and the gradients of their sum, member i on the draws of
    a generator seeded first_seed + i (the GAN's: its discriminator's loss and gradients)."""
    members = Members(models, adapt=gan.stackable if strategy.family == "gan" else None)
    pool = strategy.unlabelled_for_training(ctx)
    rngs = [torch.Generator().manual_seed(first_seed + i) for i in range(len(sets))]
    if strategy.family == "gan":
        draws = stack_draws(
            [
                strategy._draws(
                    s.images.double() / 127.5 - 1,
                    s.labels,
                    pool,
                    rng,
                    10,
                    strategy.values["diffaugment"] == "on",
                )
                for s, rng in zip(sets, rngs)
            ]
        )
        real, y_real, z, y_fake, unlabelled, on_real, on_fake, on_unlabelled, on_fake_unconditional = draws[
            :9
        ]
        fake = members.map(gan._generate, z, y_fake).detach()
        losses = members.map(
            gan._discriminator_loss,
            gan._augmented(real, on_real),
            y_real,
            gan._augmented(fake, on_fake),
            y_fake,
            None if unlabelled is None else gan._augmented(unlabelled, on_unlabelled),
            None if unlabelled is None else gan._augmented(fake, on_fake_unconditional),
            shared=(1.0,),
        )
        prefix = "discriminator."
    else:
        m2 = strategy.value("pool_model") == "m2"
        draws = stack_draws(
            [
                strategy._draws(s.images.double() / 255, s.labels, pool, rng, 10, m2)
                for s, rng in zip(sets, rngs)
            ]
        )
        alphas = torch.full((len(models),), 0.1 * len(POOL) / 40)
        losses = (
            members.map(vae.m2_loss, *draws, alphas, shared=(0.5,))
            if m2
            else members.map(vae.elbo_loss, *draws, shared=(0.5,))
        )
        prefix = ""
    names = [name for name, _ in models[0].named_parameters() if name.startswith(prefix)]
    grads = torch.autograd.grad(losses.sum(), members.parameters(prefix))
    return losses.detach(), dict(zip(names, grads))


@pytest.fixture
def float64():
    """Arithmetic in float64: in float32 a discriminator's unit that sits at its kink for an
    untrained generator's near-constant images can flip between two ways of adding up."""
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(torch.float32)


@pytest.mark.parametrize("design", list(DESIGNS))
def test_a_member_s_first_step_equals_fitting_it_alone(design, tmp_path, float64):
    strategy = _strategy(design)
    sets = [_labelled(seed) for seed in range(3)]
    ctx = _ctx(tmp_path, "a")
    models = []
    for seed in range(3):
        torch.manual_seed(seed)
        models.append(strategy.build((1, 8, 8), 10).train())
    alone = [copy.deepcopy(model) for model in models]  # spectral norms update their vectors as they run
    losses, grads = _first_step(strategy, models, sets, ctx)
    for index in range(3):  # member i alone, on its own draws (generator seeded 10 + i)
        solo_loss, solo_grads = _first_step(
            strategy, [alone[index]], [sets[index]], ctx, first_seed=10 + index
        )
        assert torch.allclose(losses[index], solo_loss[0], rtol=1e-5, atol=1e-5), design
        for name, grad in grads.items():
            assert torch.allclose(grad[index], solo_grads[name], rtol=1e-5, atol=1e-5), (design, name)


def _poisoned_build(strategy, bad_part: str):
    """``strategy`` whose generator for the fit with cache key part ``bad_part`` starts from NaN weights."""
    built = generator_fits.new_generator

    def build(strategy, labelled, ctx):
        model = built(strategy, labelled, ctx)
        if ctx.cache_key_parts == (bad_part,):
            with torch.no_grad():
                next(model.parameters()).fill_(float("nan"))
        return model

    return build


def test_a_diverging_member_fails_alone_and_each_member_gets_its_own_cache_entry(tmp_path, monkeypatch):
    strategy = _vae()
    monkeypatch.setattr("strategies.generator_checks.COLLAPSE_THRESHOLD", 0.0)  # 20 steps is too few to judge
    monkeypatch.setattr(generator_fits, "new_generator", _poisoned_build(strategy, "b"))
    sets = {part: _labelled(seed) for seed, part in enumerate("abc")}

    def fits():
        return [(sets[part], _ctx(tmp_path, part, fits, "abc")) for part in "abc"]

    model, info = strategy.fitted_generator(sets["a"], _ctx(tmp_path, "a", fits, "abc"))
    assert info["stacked_fit_size"] == 3 and not info["generator_cache_hit"]  # this cell's call fitted it
    assert all(torch.isfinite(p).all() for p in model.parameters())
    from bench.core.cache import FileCache
    from bench.core.errors import CellFailed

    cache = FileCache(tmp_path)
    keys = {part: strategy.generator_key((part,), 3) for part in "abc"}
    # the cohort is in the key
    assert len(set(keys.values())) == 3 and keys["a"] != strategy.generator_key(("a",))
    assert "diverged" in cache.load_json("generator-failed", keys["b"])["reason"]
    assert (
        cache.load_tensors("generator", keys["c"]) is not None
        and cache.load_json("generator-failed", keys["c"]) is None
    )
    with pytest.raises(CellFailed, match="diverged"):
        strategy.fitted_generator(sets["b"], _ctx(tmp_path, "b", fits, "abc"))
    c_model, c_info = strategy.fitted_generator(sets["c"], _ctx(tmp_path, "c", fits, "abc"))
    assert c_info["generator_cache_hit"] and c_info["generator_fit_seconds"] == info["generator_fit_seconds"]


def test_a_collapsed_member_fails_alone(tmp_path, monkeypatch):
    strategy = _vae()
    sets = {part: _labelled(seed) for seed, part in enumerate("ab")}
    sets["b"] = ImageSet(sets["b"].images, sets["b"].labels)
    checked = []

    def check(strategy, model, labelled, ctx):  # the collapse check of member b finds collapse
        checked.append(ctx.cache_key_parts)
        if ctx.cache_key_parts == ("b",):
            from bench.core.errors import CellFailed

            raise CellFailed("mode collapse: (test)")

    monkeypatch.setattr(generator_fits, "check_fitted", check)

    def fits():
        return [(sets[part], _ctx(tmp_path, part, fits, "ab")) for part in "ab"]

    strategy.fitted_generator(sets["a"], _ctx(tmp_path, "a", fits, "ab"))
    assert sorted(checked) == [("a",), ("b",)]
    from bench.core.cache import FileCache

    assert (
        "collapse"
        in FileCache(tmp_path).load_json("generator-failed", strategy.generator_key(("b",), 2))["reason"]
    )


def test_cohort_fits_are_deterministic_with_a_cache_or_without(tmp_path, monkeypatch):
    monkeypatch.setattr("strategies.generator_checks.COLLAPSE_THRESHOLD", 0.0)
    strategy = _strategy("gan-pool")
    sets = {part: _labelled(seed) for seed, part in enumerate("ab")}
    states = []
    for folder in ("one", "two", None):  # None: without a cache, the cohort is fitted and this member taken
        root = None if folder is None else tmp_path / folder

        def fits(root=root):
            return [(sets[part], _ctx(root, part, fits, "ab")) for part in "ab"]

        model, _ = strategy.fitted_generator(sets["b"], _ctx(root, "b", fits, "ab"))
        states.append(model.state_dict())
    assert all(torch.equal(states[0][name], other[name]) for other in states[1:] for name in states[0])


def test_a_run_with_generator_cohorts_gives_every_seed_its_own_generator(tmp_path, cli):
    config = tiny_config_with(
        tmp_path,
        {
            "strategies": ["none", {"name": "vae", "params": {"steps": 300}}],
            "classifiers": ["mlp"],
            "seeds": 3,
            "cohort": 2,
            "quality": {"enabled": False},
        },
    )
    out = tmp_path / "run"
    code, _, err = cli("run", config, "--out", out)
    assert code == 0, err
    rows = [json.loads(p.read_text()) for p in sorted((out / "cells").glob("*.json"))]
    vae = sorted((r for r in rows if r["strategy"] == "vae"), key=lambda r: r["replicate"])
    assert all(r["status"] == "ok" for r in rows), [r["failure_reason"] for r in rows]
    assert [r.get("stacked_fit_size") for r in vae] == [2, 2, None]  # seeds 0 and 1 as one, seed 2 alone
    assert vae[0]["stacked_fit"] == vae[1]["stacked_fit"] and not vae[2].get("stacked_fit")
    assert len({r["generator_key"] for r in vae}) == 3
    assert vae[0]["generator_fit_seconds"] == vae[1]["generator_fit_seconds"]  # equal shares
    assert {p.stem.removeprefix("generator-") for p in (out / "cache").glob("generator-*.pt")} == {
        r["generator_key"] for r in vae
    }  # a cache entry each
    code, _, err = cli("run", config, "--out", out)
    assert code == 0 and "(6 already done)" in err, err


def test_generator_cohorts_are_in_the_keys_of_their_cells_only(tmp_path):
    from conftest import TINY_CONFIG

    from bench.protocol.config import parse_config
    from bench.run.cell import cached_dataset, expand_grid

    strategies = [
        "none",
        {"name": "vae", "params": fast_params("vae")},
        {"name": "gan", "params": fast_params("gan")},
        {"name": "diffusion", "params": fast_params("diffusion")},
    ]
    config = parse_config({**TINY_CONFIG, "strategies": strategies, "classifiers": ["mlp"], "seeds": 2})
    hashes = {"digits": cached_dataset(config.datasets[0]).content_hash}
    alone, grouped = expand_grid(config, hashes, 1), expand_grid(config, hashes, 2)
    in_cohorts = [cell for cell in grouped if cell.stacked_replicates]
    assert {cell.strategy.name for cell in in_cohorts} == {"vae", "gan"} and len(
        in_cohorts
    ) == 4  # diffusion: alone
    assert all(dataclasses.replace(cell, stacked_replicates=()).key != cell.key for cell in in_cohorts)
    # a fit alone keeps its key
    assert [dataclasses.replace(cell, stacked_replicates=()).generator_key for cell in grouped] == [
        cell.generator_key for cell in alone
    ]
