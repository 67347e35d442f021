"""Fitting generators: the cache (a fitted generator, or a failed fit, kept under its key), the
stacked fit (several seeds' generators trained as one stacked model, bench/training/stacked.py), and
the checks after each fit. Functions of a GenerativeStrategy (strategies/generative.py)."""

from __future__ import annotations

import time

import torch
from torch import nn

from bench.core.cache import FileCache, cache_key
from bench.core.errors import CellFailed
from bench.core.images import ImageSet
from bench.core.seeding import derive_seed, seeded
from bench.core.strategy import FitContext
from strategies.generator_checks import PROBE_PER_CLASS, check_not_collapsed
from strategies.sampling import balanced_labels
from strategies.signal import ValidationSignal


def _init_seed_key(strategy, ctx: FitContext) -> str:
    """The key that seeds a generator's initial weights and draws: that of its fit alone, so
    that a member of a stacked fit starts and draws as it would alone."""
    return strategy.generator_key(ctx.cache_key_parts)


def fitted_generator(strategy, labelled: ImageSet, ctx: FitContext) -> tuple[nn.Module, dict]:
    """The fitted generator, from the cache when it holds one; a failed fit is cached as failed.
    In a stacked fit (``ctx.stacked_fits``) a miss fits every member not yet cached, as one."""
    cache = FileCache(ctx.cache_dir) if ctx.cache_dir is not None else None
    stacked = ctx.stacked_size if ctx.stacked_fits is not None and strategy.fits_stacked else 1
    key = strategy.generator_key(ctx.cache_key_parts, stacked)
    info = {"generator_steps": strategy.values["steps"], "generator_key": key}
    if stacked > 1:
        info["stacked_fit_size"] = stacked
    if cache is None:  # nothing to keep the other members in: fit them all, take this one
        fits = _learnt_from(strategy, ctx.stacked_fits()) if stacked > 1 else [(labelled, ctx)]
        own = [peer.cache_key_parts for _, peer in fits].index(ctx.cache_key_parts)
        fitted = _fit_many(strategy, fits)[own]
        if isinstance(fitted, CellFailed):
            raise fitted
        model, seconds, signal = fitted
        return model.to(ctx.device).eval(), {
            **info,
            "generator_cache_hit": False,
            "generator_fit_seconds": seconds,
            **signal,
        }
    fitted_now = _fit_stacked(strategy, ctx, cache) if stacked > 1 else set()
    with cache.lock("generator", key):
        failure = cache.load_json("generator-failed", key)
        if failure is not None:
            raise CellFailed(failure["reason"])
        state, meta = cache.load_tensors("generator", key), cache.load_json("generator", key)
        cached = state is not None and meta is not None
        if cached:
            model = new_generator(strategy, labelled, ctx)
            model.load_state_dict(state)
            seconds, signal = meta["fit_seconds"], {k: v for k, v in meta.items() if k != "fit_seconds"}
        else:
            fitted = _fit_many(strategy, [(labelled, ctx)])[0]
            _save(cache, key, fitted)
            if isinstance(fitted, CellFailed):
                raise fitted
            model, seconds, signal = fitted
    hit = cached and key not in fitted_now  # not a hit where this call fitted it, with its stacked fit
    # the time and convergence signal of the original fit, also on a cache hit, so that costs compare
    return model.to(ctx.device).eval(), {
        **info,
        "generator_cache_hit": hit,
        "generator_fit_seconds": seconds,
        **signal,
    }


def new_generator(strategy, labelled: ImageSet, ctx: FitContext) -> nn.Module:
    """A new generator for ``labelled``'s images, its weights seeded by the fit's key alone (not
    by whichever strategy, gan or hybrid, fits it first)."""
    with seeded(derive_seed("generator-init", _init_seed_key(strategy, ctx)), ctx.device):
        return strategy.build(tuple(labelled.images.shape[1:]), ctx.num_classes)


def _save(cache: FileCache, key: str, fitted) -> None:
    if isinstance(fitted, CellFailed):
        cache.save_json("generator-failed", key, {"reason": str(fitted)})
        return
    model, seconds, signal = fitted
    cache.save_json("generator", key, {"fit_seconds": seconds, **signal})
    cache.save_tensors("generator", key, {k: v.cpu() for k, v in model.state_dict().items()})


def _fit_stacked(strategy, ctx: FitContext, cache: FileCache) -> set[str]:
    """Fit the members of ``ctx``'s stacked fit that the cache holds neither fitted nor
    failed, as one stacked model, and cache each (under one lock for the stacked fit); return the
    keys it fitted."""
    keys = [strategy.generator_key(parts, ctx.stacked_size) for parts in ctx.stacked_parts]
    with cache.lock("generator-stacked", cache_key(*sorted(keys))):
        missing = [
            key
            for key in keys
            if cache.load_json("generator", key) is None and cache.load_json("generator-failed", key) is None
        ]
        if not missing:
            return set()
        peers = ctx.stacked_fits()  # loads their data: only on a miss
        fits = _learnt_from(strategy, [peer for peer, key in zip(peers, keys) if key in missing])
        for key, result in zip(missing, _fit_many(strategy, fits)):
            _save(cache, key, result)
    return set(missing)


def _learnt_from(strategy, fits: list[tuple[ImageSet, FitContext]]) -> list[tuple[ImageSet, FitContext]]:
    """Each fit's (labelled images, context) as (the images its generator learns from, context)."""
    return [(strategy.generator_training_set(labelled, ctx)[0], ctx) for labelled, ctx in fits]


def _fit_many(
    strategy, fits: list[tuple[ImageSet, FitContext]]
) -> list[tuple[nn.Module, float] | CellFailed]:
    """Train and check the generators of ``fits`` (several as one stacked model): per fit its
    model and the seconds of its training (a stacked fit's shared equally), or why it failed."""
    steps, device = strategy.values["steps"], fits[0][1].device
    models = [new_generator(strategy, labelled, ctx) for labelled, ctx in fits]
    rngs = [
        torch.Generator(device=device).manual_seed(derive_seed("generator", _init_seed_key(strategy, ctx)))
        for _, ctx in fits
    ]
    start = time.perf_counter()
    alone = len(fits) == 1
    strategy.signal = ValidationSignal(
        strategy, models[0] if alone else None, fits[0][0], fits[0][1] if alone else None, steps
    )
    with seeded(derive_seed("generator-train", _init_seed_key(strategy, fits[0][1])), device):
        for model in models:
            model.to(device).train()
        failures = strategy.train_generators(
            models, [labelled for labelled, _ in fits], [ctx for _, ctx in fits], steps, rngs
        )
    seconds = (time.perf_counter() - start) / len(fits)
    results = []
    for model, (labelled, ctx), failure in zip(models, fits, failures):
        try:
            if failure is not None:
                raise failure
            check_fitted(strategy, model.eval(), labelled, ctx)
            results.append((model, seconds, strategy.signal.columns()))
        except CellFailed as exc:
            results.append(exc)
    return results


def check_fitted(strategy, model: nn.Module, labelled: ImageSet, ctx: FitContext) -> None:
    """Raise CellFailed where a fitted generator's samples collapse."""
    probe_labels = balanced_labels(PROBE_PER_CLASS * ctx.num_classes, ctx.num_classes)
    rng = torch.Generator(device=ctx.device).manual_seed(derive_seed("probe", _init_seed_key(strategy, ctx)))
    probe = strategy.sample(model, probe_labels, labelled, ctx, rng)
    check_not_collapsed(ImageSet(probe, probe_labels), labelled, ctx.num_classes)
