"""The grid runner: data x regime x strategy x classifier x seed, one cell at a time or in workers."""
from __future__ import annotations

import contextlib
import os
from dataclasses import asdict, dataclass
from functools import lru_cache
from operator import attrgetter
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch

import bench.executor_ray  # noqa: F401 - registers the ray executor (ray itself is imported when used)
import bench.executors  # noqa: F401 - registers the serial and process executors
from bench import provenance
from bench.cache import FileCache, cache_key
from bench.config import BenchConfig, ExecutorSpec, QualitySpec, StrategyEntry
from bench.core.errors import CellFailed
from bench.core.executor import EXECUTORS, Executor, FolderTask, Stage
from bench.core.keys import canonical_json, stable_hash
from bench.core.plugins import load_plugins
from bench.core.schema import identity
from bench.core.seeding import derive_seed, seeded
from bench.core.strategy import STRATEGIES, FitContext
from bench.data import Dataset, DatasetSpec, load_dataset
from bench.metrics import class_recall, classification_metrics, smallest_third
from bench.models import SUITE_VERSION, ClassifierEntry, classifier_versions
from bench.quality import EVALUATOR_VERSION, assess_quality, evaluator
from bench.resources import measure
from bench.splits import Regime, Split, SplitSpec, make_split, regime_label
from bench.store import RunStore
from bench.train import predict, train


@dataclass(frozen=True, kw_only=True)
class Cell:
    """One point of the grid. Its key hashes its coordinates and the protocol's cell-identity
    fields (see bench/core/schema.py). Build it with ``from_config``."""

    dataset: DatasetSpec
    data_hash: str
    regime: Regime
    strategy: StrategyEntry
    classifier: str
    replicate: int
    config: BenchConfig  # the protocol the cell belongs to

    @classmethod
    def from_config(cls, config: BenchConfig, *, dataset: DatasetSpec, data_hash: str, regime: Regime,
                    strategy: StrategyEntry, classifier: str, replicate: int) -> "Cell":
        return cls(dataset=dataset, data_hash=data_hash, regime=regime, strategy=strategy, classifier=classifier,
                   replicate=replicate, config=config)

    @property
    def split(self) -> SplitSpec:
        return self.config.split

    @property
    def quality(self) -> QualitySpec:
        return self.config.quality

    @property
    def budget_scale(self) -> float:
        return self.config.budget.scale

    @property
    def eval_points(self) -> int:
        return self.config.eval_points

    def canonical(self) -> dict:
        return {"dataset": self.dataset.title, "data_hash": self.data_hash, "regime": self.regime_label,
                "strategy": self.strategy.name, "params": self.strategy.params, "classifier": self.classifier,
                "versions": self.versions, "replicate": self.replicate, **identity(self.config, "cell")}

    @property
    def strategy_versions(self) -> dict[str, str]:
        """Code versions the strategy's output depends on (strategy, generator, policies)."""
        return STRATEGIES.get(self.strategy.name).versions(self.strategy.params)

    @property
    def classifier_entry(self) -> ClassifierEntry:
        """The config's entry for this cell's classifier (its build, recipe and versions)."""
        return next(e for e in self.config.classifiers if e.label == self.classifier)

    @property
    def versions(self) -> dict[str, str]:
        """Every code version the cell's result depends on; a bump of one recomputes exactly the
        cells (and quality rows) that use that component."""
        return {**self.strategy_versions, **self.classifier_entry.versions()}

    @property
    def key(self) -> str:
        return stable_hash(self.canonical(), 20)

    @property
    def train_seed(self) -> int:
        """Seed of the classifier's initialization, dropout and real batch order. It depends on
        neither the strategy nor quality settings nor eval points, so `none` and every strategy
        of a cell start from the same weights and see the same real batches."""
        return derive_seed("train", *self.fit_key_parts, self.classifier,
                           canonical_json(self.classifier_entry.versions()), self.budget_scale)

    @property
    def augment_seed(self) -> int:
        """Seed of the strategy's randomness during training (synthetic batches, batch transforms)."""
        return derive_seed("augment", self.fit_seed, self.classifier)

    @property
    def regime_label(self) -> str:
        return regime_label(self.regime)

    @property
    def fit_seed(self) -> int:
        """Seed of the strategy's fit and quality: the same for every classifier of the cell."""
        return derive_seed("fit", *self.fit_key_parts, self.strategy.name, canonical_json(self.strategy.params))

    @property
    def fit_key_parts(self) -> tuple:
        """What a strategy's fit depends on: data, split, regime, replicate (not the classifier)."""
        return (self.data_hash, canonical_json(asdict(self.split)), self.regime_label, self.replicate)

    @property
    def evaluator_group(self) -> tuple | None:
        """What the replicate's quality evaluator and references depend on (None without quality)."""
        return self.fit_key_parts if self.quality.enabled else None

    @property
    def generator_key(self) -> str | None:
        """The cache key of the generator the strategy fits (None for a strategy without one)."""
        generative = make_strategy(self.strategy).generative_part()
        return None if generative is None else generative.generator_key(self.fit_key_parts)

    @property
    def quality_group(self) -> tuple | None:
        """What the strategy's quality row depends on: every classifier of the cell shares it."""
        return (self.fit_key_parts, self.strategy.name, canonical_json(self.strategy.params)) \
            if self.quality.enabled else None

    def describe(self) -> str:
        return (f"{self.dataset.title}/{self.regime_label} {self.strategy.label} {self.classifier} "
                f"seed {self.replicate}")


def expand_grid(config: BenchConfig, data_hashes: dict[str, str]) -> list[Cell]:
    """Every cell of the config, in a stable order."""
    return [Cell.from_config(config, dataset=d, data_hash=data_hashes[d.title], regime=r, strategy=s, classifier=c,
                             replicate=k)
            for d in config.datasets for r in config.regimes for s in config.strategies
            for c in config.classifier_labels for k in range(config.seeds)]


def check_grid(config: BenchConfig, datasets: dict[str, Dataset]) -> None:
    """Raise UserError where a regime or the validation size asks more of a data set than it has,
    before any folder is written or any cell runs (the sizes are the same for every replicate)."""
    for dataset in datasets.values():
        for regime in config.regimes:
            make_split(dataset, regime, config.split, 0)


@lru_cache(maxsize=4)
def cached_dataset(spec: DatasetSpec) -> Dataset:
    return load_dataset(spec)


def make_strategy(entry: StrategyEntry):
    return STRATEGIES.get(entry.name)(**entry.params)


def fit_context(cell: Cell, dataset: Dataset, device: torch.device, cache_dir: Path | None) -> FitContext:
    return FitContext(device=device, seed=cell.fit_seed, num_classes=dataset.num_classes, hflip=dataset.hflip,
                      class_names=dataset.class_names, cache_dir=cache_dir, cache_key_parts=cell.fit_key_parts)


def fit_strategy(cell: Cell, dataset: Dataset, split: Split, device: torch.device,
                 cache_dir: Path | None, timings: dict):
    """Fit the cell's strategy on its labelled images; seeded by everything but the classifier."""
    with seeded(cell.fit_seed, device):
        with measure(device, timings, "fit"):
            return make_strategy(cell.strategy).fit(split.labelled, fit_context(cell, dataset, device, cache_dir))


def cell_record(cell: Cell, revision: str) -> dict:
    """The columns that identify a cell's result row, with status ``ok`` until something fails."""
    return {"key": cell.key, "dataset": cell.dataset.title, "data_hash": cell.data_hash, "regime": cell.regime_label,
            "strategy": cell.strategy.label, "strategy_name": cell.strategy.name,
            "strategy_params": canonical_json(cell.strategy.params), "classifier": cell.classifier,
            "replicate": cell.replicate, "seed": cell.train_seed, "suite_version": SUITE_VERSION,
            "versions": canonical_json(cell.versions), "split_seed": cell.split.seed,
            "budget_scale": cell.budget_scale, "revision": revision, "status": "ok", "failure_reason": "",
            "curve": []}


def lost_record(cell: Cell, reason: str, revision: str) -> dict:
    """The row of a cell whose worker died on every try (killed, out of memory)."""
    return {**cell_record(cell, revision), "status": "failed", "failure_reason": reason,
            "finished": provenance.now()}


def fit_and_train(cell: Cell, device: torch.device, cache_dir: Path | None, split: Split, revision: str,
                  on_eval=None) -> tuple[dict, torch.nn.Module | None]:
    """Fit the cell's strategy and train its classifier, reading no test data.

    Returns (record, model); on divergence the record says ``failed`` and the model
    is None. The quality step (which compares with test images) runs only where asked by the cell.
    """
    dataset = cached_dataset(cell.dataset)
    recipe = cell.classifier_entry.training_recipe
    steps = recipe.steps(len(split.labelled), cell.budget_scale)
    record = {**cell_record(cell, revision), "num_classes": dataset.num_classes, "budget_steps": steps,
              "batch_size": recipe.batch_size, "n_real": len(split.labelled), "n_val": len(split.val),
              "device": provenance.device_name(device), "started": provenance.now()}
    try:
        data = fit_strategy(cell, dataset, split, device, cache_dir, record)
        record.update(data.info)
        if cell.quality.enabled and cache_dir is not None:
            with measure(device, record, "quality"):
                record.update(cached_quality(cell, dataset, split, data, device, cache_dir))
        record["n_synthetic"] = 0 if data.synthetic is None else len(data.synthetic)
        mixing = cell.config.mixing
        with seeded(cell.train_seed, device):
            model = cell.classifier_entry.build(dataset.image_shape, dataset.num_classes)
            with measure(device, record, "train"):
                result = train(model, recipe, data, split.val, steps=steps, num_classes=dataset.num_classes,
                               device=device, order_seed=cell.train_seed, augment_seed=cell.augment_seed,
                               mixing=mixing.mode, fresh_synthetic=mixing.synthetic_pool == "fresh",
                               eval_points=cell.eval_points, on_eval=on_eval)
        record.update(mixing=mixing.mode, synthetic_pool=mixing.synthetic_pool, real_per_step=result.real_per_step,
                      synthetic_per_step=result.synthetic_per_step,
                      train_images_processed=steps * (result.real_per_step + result.synthetic_per_step),
                      budget_epochs=steps * result.real_per_step / len(split.labelled))
    except CellFailed as exc:
        record.update(status="failed", failure_reason=str(exc), finished=provenance.now())
        return record, None
    record["curve"] = result.curve
    return record, model


def data_of(cell: Cell) -> tuple[Dataset, Split]:
    """The cell's data set and split, after registering what the config's plugins provide (a worker
    process starts without them)."""
    load_plugins(cell.config.plugins)
    dataset = cached_dataset(cell.dataset)
    return dataset, make_split(dataset, cell.regime, cell.split, cell.replicate)


def run_cell(cell: Cell, device: torch.device, cache_dir: Path | None = None, revision: str = "unknown") -> dict:
    """Run one cell and return its result record (status ``failed`` with a reason on divergence)."""
    dataset, split = data_of(cell)
    record, model = fit_and_train(cell, device, cache_dir, split, revision)
    if model is not None:
        record.update(_evaluate(model, split, device))
        record["finished"] = provenance.now()
    return record


def cached_quality(cell: Cell, dataset: Dataset, split: Split, data, device: torch.device, cache_dir: Path) -> dict:
    """Quality columns of the cell's fitted strategy, computed once for all its classifiers."""
    cache = FileCache(cache_dir)
    key = cache_key(cell.fit_key_parts, cell.strategy.name, cell.strategy.params, cell.strategy_versions,
                    asdict(cell.quality), cell.budget_scale, EVALUATOR_VERSION, classifier_versions("cnn"))
    samples = (cache_dir.parent / "samples" /
               f"{cell.dataset.title.replace(':', '-')}-{cell.regime_label}-{cell.strategy.label}-seed{cell.replicate}"
               f"-{key[:8]}.npz")
    # one seed per (data, split, regime, replicate): every strategy meets the same test images
    seed = derive_seed("quality", *cell.fit_key_parts) % 2**62
    return cache.json_once("quality", key, lambda: assess_quality(data, dataset, split, cell.quality, device, cache,
                                                                  cell.budget_scale, seed, samples))


def _evaluate(model, split: Split, device: torch.device) -> dict:
    test_logits = predict(model, split.test.images, device)
    test = classification_metrics(test_logits, split.test.labels)
    train_m = classification_metrics(predict(model, split.labelled.images, device), split.labelled.labels)
    val = classification_metrics(predict(model, split.val.images, device), split.val.labels)
    recall = class_recall(test_logits, split.test.labels)
    counts = torch.bincount(split.labelled.labels, minlength=len(recall)).tolist()
    return {**{f"test_{k}": v for k, v in test.items()}, "n_test": len(split.test),
            "test_class_recall": canonical_json([round(r, 6) for r in recall]),
            "test_recall_smallest_third": float(np.nanmean([recall[k] for k in smallest_third(counts)])),
            "train_accuracy": train_m["accuracy"], "train_nll": train_m["nll"],
            "val_accuracy": val["accuracy"],
            "gap_accuracy": train_m["accuracy"] - test["accuracy"],
            "gap_loss": test["nll"] - train_m["nll"]}


# ----------------------------------------------------------------------------- execution
@dataclass(frozen=True)
class CellTask(FolderTask):
    """What a worker needs to run cells of one run: the device, the run folder (whose cache/ and
    samples/ hold the work cells share), the revision. Its stages are that shared work: an
    executor without a shared file system runs each once, before the cells that need it."""

    device_type: str
    root: Path
    revision: str

    @property
    def device(self) -> torch.device:
        return torch.device(self.device_type)

    @property
    def stages(self) -> tuple[Stage, ...]:
        return (Stage("evaluator", attrgetter("evaluator_group"), self.fit_evaluator),
                Stage("generator", attrgetter("generator_key"), self.fit_generator),
                Stage("quality", attrgetter("quality_group"), self.assess))

    def run_in(self, cell: Cell, root: Path) -> dict:
        return run_cell(cell, self.device, root / "cache", self.revision)

    def fit_evaluator(self, cell: Cell, root: Path) -> None:
        """The replicate's quality evaluator, into ``root``'s cache."""
        dataset, split = data_of(cell)
        evaluator(dataset, split, self.device, FileCache(root / "cache"), cell.budget_scale)

    def fit_generator(self, cell: Cell, root: Path) -> None:
        """The strategy's generator, into ``root``'s cache (a failed fit is cached as failed, and
        recorded by the cells that need it)."""
        dataset, split = data_of(cell)
        ctx = fit_context(cell, dataset, self.device, root / "cache")
        with contextlib.suppress(CellFailed):
            make_strategy(cell.strategy).generative_part().fitted_generator(split.labelled, ctx)

    def assess(self, cell: Cell, root: Path) -> None:
        """The strategy's quality row and sample grid, into ``root``'s cache and samples."""
        dataset, split = data_of(cell)
        with contextlib.suppress(CellFailed):
            data = fit_strategy(cell, dataset, split, self.device, root / "cache", {})
            cached_quality(cell, dataset, split, data, self.device, root / "cache")


def default_workers(device: torch.device, per_gpu: int = 1) -> int:
    """On the CPU one single-threaded worker per core (at most 2); on CUDA ``per_gpu`` workers on
    each visible GPU (the process executor spreads them over the GPUs), at most one per core."""
    cores = os.cpu_count() or 1
    if device.type == "cuda":
        return max(1, min(per_gpu * torch.cuda.device_count(), cores))
    return max(1, min(2, cores))


def workers_for(config: BenchConfig, device: torch.device, items: int) -> int:
    """The config's workers (0: ``default_workers``), never more than the items to run."""
    return min(config.workers or default_workers(device, config.workers_per_gpu), max(1, items))


def make_executor(device: torch.device, workers: int, settings: ExecutorSpec | None = None) -> Executor:
    """The config's executor (``auto``: ``process`` for several workers, else ``serial``) with the
    run's thread policy: one torch thread per CPU worker, always."""
    settings = settings or ExecutorSpec()
    name = settings.name if settings.name != "auto" else ("process" if workers > 1 else "serial")
    return EXECUTORS.get(name, field="executor.name").configured(settings, workers=workers,
                                                                 threads=1 if device.type == "cpu" else None)


def execute(cells: Iterable[Cell], store: RunStore, device: torch.device, executor: Executor, revision: str,
            on_start: Callable[[Cell], None], on_done: Callable[[Cell, dict], None]) -> None:
    """Run cells, writing each record as it finishes."""
    def finished(cell: Cell, record: dict) -> None:
        store.write_cell(record)
        on_done(cell, record)

    task = CellTask(device.type, store.root, revision)
    executor.map_unordered(task, list(cells), on_start=on_start, on_done=finished,
                           on_lost=lambda cell, reason: finished(cell, lost_record(cell, reason, revision)))
