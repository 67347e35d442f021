"""The stages of a cell, composed by ``run_cell``: fit (the strategy, on the labelled images) ->
quality (the fitted strategy's synthetic-data quality, bench/quality) -> train (the one training
loop) -> evaluate (metrics on real images). ``train_cell`` is the training path on its own (fit
and train), which reads no test image; tune runs it."""

from __future__ import annotations

import contextlib
import traceback
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from bench.core.cache import FileCache, cache_key
from bench.core.errors import CellFailed
from bench.core.images import ImageSet
from bench.core.keys import canonical_json, stable_hash
from bench.core.seeding import derive_seed, seeded
from bench.core.strategy import FitContext, TrainingData
from bench.data.sets import Dataset
from bench.data.splits import Split
from bench.models.suite import SUITE_VERSION
from bench.quality.assess import assess_quality
from bench.quality.settings import quality_versions
from bench.run import provenance
from bench.run.cell import Cell, cached_dataset, data_of, granted_unlabelled, make_strategy
from bench.run.resources import measure
from bench.training.loop import Member, batch_split, device_precision, predict, train_cohort
from bench.training.metrics import class_recall, classification_metrics, smallest_third


def fit_context(
    cell: Cell, dataset: Dataset, split: Split, device: torch.device, cache_dir: Path | None
) -> FitContext:
    """What the cell's strategy may use besides its labelled images: the unlabelled images only where
    the protocol grants them and the strategy learns from them; the fits of its generator cohort."""

    def cohort_fits() -> list[tuple[ImageSet, FitContext]]:
        fits = []
        for peer in cell.generator_peers():
            peer_dataset, peer_split = data_of(peer)
            fits.append((peer_split.labelled, fit_context(peer, peer_dataset, peer_split, device, cache_dir)))
        return fits

    return FitContext(
        device=device,
        seed=cell.fit_seed,
        num_classes=dataset.num_classes,
        hflip=dataset.hflip,
        class_names=dataset.class_names,
        cache_dir=cache_dir,
        cache_key_parts=cell.fit_data_parts,
        unlabelled=granted_unlabelled(cell, dataset, split),
        budget_scale=cell.budget_scale,
        teacher_steps=cell.teacher_steps,
        val=split.val,
        cohort_parts=tuple(peer.fit_data_parts for peer in cell.generator_peers()),
        cohort_fits=cohort_fits if cell.generator_replicates else None,
    )


def fit_strategy(
    cell: Cell, dataset: Dataset, split: Split, device: torch.device, cache_dir: Path | None, timings: dict
):
    """Fit the cell's strategy on its labelled images; seeded by everything but the classifier."""
    with seeded(cell.fit_seed, device):
        with measure(device, timings, "fit"):
            return make_strategy(cell.strategy).fit(
                split.labelled, fit_context(cell, dataset, split, device, cache_dir)
            )


def cell_record(cell: Cell, revision: str) -> dict:
    """The columns that identify a cell's result row, with status ``ok`` until something fails."""
    return {
        "key": cell.key,
        "dataset": cell.dataset.title,
        "data_hash": cell.data_hash,
        "regime": cell.regime_label,
        "strategy": cell.strategy.label,
        "strategy_name": cell.strategy.name,
        "strategy_params": canonical_json(cell.strategy.params),
        "fit_data": cell.fit_data,
        "classifier": cell.classifier,
        "replicate": cell.replicate,
        "seed": cell.train_seed,
        "suite_version": SUITE_VERSION,
        "versions": canonical_json(cell.versions),
        "split_seed": cell.split.seed,
        "budget_scale": cell.budget_scale,
        "revision": revision,
        "status": "ok",
        "failure_reason": "",
        "curve": [],
    }


def lost_record(cell: Cell, reason: str, revision: str) -> dict:
    """The row of a cell whose worker died on every try (killed, out of memory)."""
    return {
        **cell_record(cell, revision),
        "status": "failed",
        "failure_reason": reason,
        "failure_kind": "machine",
        "finished": provenance.now(),
    }


def error_records(cells: tuple[Cell, ...], exc: Exception, revision: str) -> list[dict]:
    """The rows of cells whose code raised ``exc`` (a bug in a strategy, say): failed with
    failure_kind ``error``, the exception as the reason, and its traceback (``traceback``, which
    the store writes to a file beside the cell's record). A rerun tries them again."""
    reason = (
        f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:300] if str(exc).strip() else 'raised'}"
    )
    text = "".join(traceback.format_exception(exc))
    return [
        {
            **cell_record(cell, revision),
            "status": "failed",
            "failure_reason": reason,
            "failure_kind": "error",
            "traceback": text,
            "finished": provenance.now(),
        }
        for cell in cells
    ]


@dataclass
class Trainee:
    """A cell whose strategy is fitted, on its way to a trained classifier."""

    cell: Cell
    dataset: Dataset
    split: Split
    data: TrainingData
    record: dict
    on_eval: Callable | None = None


def train_cell(
    cell: Cell,
    device: torch.device,
    cache_dir: Path | None,
    split: Split,
    revision: str,
    on_eval=None,
    after_fit: Callable[[TrainingData], dict] | None = None,
) -> tuple[dict, torch.nn.Module | None]:
    """The training path: fit the cell's strategy, then train its classifier. It reads the labelled
    and validation images of ``split`` and never its test images (tune runs it as it is).

    ``after_fit(data)`` (the runner's quality stage) runs between the two and adds its columns.
    Returns (record, model); on divergence the record says ``failed`` and the model is None.
    """
    trainee = fit_cell(cell, device, cache_dir, split, revision, on_eval, after_fit)
    if isinstance(trainee, dict):
        return trainee, None
    return trainee.record, train_classifiers([trainee], device)[0]


def fit_cell(
    cell: Cell,
    device: torch.device,
    cache_dir: Path | None,
    split: Split,
    revision: str,
    on_eval=None,
    after_fit: Callable[[TrainingData], dict] | None = None,
) -> Trainee | dict:
    """The fit stage (and ``after_fit``) of a cell: a Trainee, or the record of its failure."""
    dataset = cached_dataset(cell.dataset)
    recipe = cell.classifier_entry.training_recipe
    record = {
        **cell_record(cell, revision),
        "num_classes": dataset.num_classes,
        "budget_steps": cell.budget_steps(len(split.labelled)),
        "batch_size": recipe.batch_size,
        "n_real": len(split.labelled),
        "n_val": len(split.val),
        "device": provenance.device_name(device),
        "precision": cell.precision or device_precision(device),
        "started": provenance.now(),
    }
    if cell.is_budget_check:
        record["budget_check_of"] = replace(cell, budget_factor=1).key
    if cell.generator_replicates:
        record["generator_cohort"] = cell.generator_group
    try:
        data = fit_strategy(cell, dataset, split, device, cache_dir, record)
        record.update(data.info)
        if after_fit is not None:
            record.update(after_fit(data))
    except (CellFailed, torch.cuda.OutOfMemoryError, MemoryError) as exc:
        return failed(record, exc)
    return Trainee(cell, dataset, split, data, record, on_eval)


def failed(record: dict, exc: Exception) -> dict:
    """``record`` as failed by ``exc``: the method's failure (CellFailed), or the machine's (out of
    memory)."""
    if isinstance(exc, CellFailed):
        return {
            **record,
            "status": "failed",
            "failure_reason": str(exc),
            "failure_kind": "method",
            "finished": provenance.now(),
        }
    said = str(exc).strip()
    reason = f"out of memory ({said.splitlines()[0][:200] if said else type(exc).__name__})"
    return {
        **record,
        "status": "failed",
        "failure_reason": reason,
        "failure_kind": "machine",
        "finished": provenance.now(),
    }


def train_classifiers(trainees: list[Trainee], device: torch.device) -> list[torch.nn.Module | None]:
    """The train stage: the cells' classifiers trained by the one loop on their strategies' data,
    each from its cell's initial weights, several (of equal batch shapes) as one grouped network;
    their columns go into the records (a failed one says so and gives None)."""
    first = trainees[0].cell
    recipe = first.classifier_entry.training_recipe
    steps = trainees[0].record["budget_steps"]
    mixing = first.protocol.mixing
    members = []
    timings: dict = {}
    with seeded(
        first.train_seed, device
    ):  # a model alone draws its dropout masks on from its initial weights
        for trainee in trainees:
            with seeded(trainee.cell.train_seed, device) if len(trainees) > 1 else contextlib.nullcontext():
                model = trainee.cell.classifier_entry.build(
                    trainee.dataset.image_shape, trainee.dataset.num_classes
                )
            trainee.record["n_synthetic"] = trainee.data.n_synthetic
            members.append(
                Member(
                    model,
                    trainee.data,
                    trainee.split.val,
                    trainee.cell.train_seed,
                    trainee.cell.augment_seed,
                    trainee.on_eval,
                )
            )
        with measure(device, timings, "train"):
            try:
                results = train_cohort(
                    members,
                    recipe,
                    steps=steps,
                    num_classes=trainees[0].dataset.num_classes,
                    device=device,
                    mixing=mixing.mode,
                    fresh_synthetic=mixing.synthetic_pool == "fresh",
                    eval_points=first.eval_points,
                    precision=first.precision or None,
                )
            except (torch.cuda.OutOfMemoryError, MemoryError) as exc:
                results = [exc] * len(members)
    if len(trainees) > 1:  # each member's share of the cohort's training, and the cohort it trained in
        timings.update(
            train_seconds=timings["train_seconds"] / len(trainees),
            cohort=stable_hash([t.cell.key for t in trainees], 20),
            cohort_size=len(trainees),
        )
    models = []
    for trainee, member, result in zip(trainees, members, results):
        record = trainee.record
        record.update(timings)
        if isinstance(result, Exception):
            if len(trainees) == 1 and not isinstance(
                result, (CellFailed, torch.cuda.OutOfMemoryError, MemoryError)
            ):
                raise result  # what a hook raised (tune's pruning)
            record.update(failed(record, result))
            models.append(None)
            continue
        steps_done = steps * (result.real_per_step + result.synthetic_per_step)
        record.update(
            mixing=mixing.mode,
            synthetic_pool=mixing.synthetic_pool,
            real_per_step=result.real_per_step,
            synthetic_per_step=result.synthetic_per_step,
            train_images_processed=steps_done,
            budget_epochs=steps * result.real_per_step / len(trainee.split.labelled),
            curve=result.curve,
        )
        models.append(member.model)
    return models


def run_cell(
    cell: Cell, device: torch.device, cache_dir: Path | None = None, revision: str = "unknown"
) -> dict:
    """Run one cell: fit -> quality (with a cache folder, where the protocol measures it) -> train ->
    evaluate. Returns its result record (status ``failed`` with a reason on divergence)."""
    return run_cohort((cell,), device, cache_dir, revision)[0]


def run_cohort(
    cells: tuple[Cell, ...], device: torch.device, cache_dir: Path | None = None, revision: str = "unknown"
) -> list[dict]:
    """Run cells whose classifiers train as one network: each one's fit and quality as alone, then
    the classifiers of equal batch shapes trained together, then each one evaluated as alone.
    Returns their records in order."""
    records, trainees = {}, []
    for cell in cells:
        dataset, split = data_of(cell)
        measured = cell.quality.enabled and cache_dir is not None and not cell.is_budget_check
        quality = partial(quality_stage, cell, dataset, split, device, cache_dir) if measured else None
        trainee = fit_cell(cell, device, cache_dir, split, revision, after_fit=quality)
        if isinstance(trainee, dict):
            records[cell.key] = trainee
        else:
            trainees.append(trainee)
    shapes: dict[tuple, list[Trainee]] = {}
    for trainee in trainees:  # members of one cohort share their batches' shape
        shape = batch_split(
            trainee.cell.classifier_entry.training_recipe.batch_size,
            len(trainee.split.labelled),
            trainee.data.n_synthetic,
            trainee.cell.protocol.mixing.mode,
        )
        shapes.setdefault((shape, len(trainee.split.val)), []).append(trainee)
    for group in shapes.values():
        for trainee, model in zip(group, train_classifiers(group, device)):
            if model is not None:
                scores = validation_accuracy if trainee.cell.is_budget_check else evaluate
                trainee.record.update(scores(model, trainee.split, device, trainee.cell.precision or None))
                trainee.record["finished"] = provenance.now()
            records[trainee.cell.key] = trainee.record
    return [records[cell.key] for cell in cells]


def quality_stage(
    cell: Cell, dataset: Dataset, split: Split, device: torch.device, cache_dir: Path, data: TrainingData
) -> dict:
    """The quality stage of a cell: its strategy's quality columns with the stage's time and memory."""
    columns: dict = {}
    with measure(device, columns, "quality"):
        columns.update(cached_quality(cell, dataset, split, data, device, cache_dir))
    return columns


def cached_quality(
    cell: Cell, dataset: Dataset, split: Split, data, device: torch.device, cache_dir: Path
) -> dict:
    """The quality stage: the columns of the cell's fitted strategy, computed once for all its
    classifiers (cached in the run folder)."""
    cache = FileCache(cache_dir)
    key = cache_key(
        cell.fit_data_parts,
        cell.strategy.name,
        cell.strategy.params,
        cell.strategy_versions,
        asdict(cell.quality),
        cell.budget_scale,
        quality_versions(),
    )
    name = f"{cell.dataset.title.replace(':', '-')}-{cell.regime_label}-{cell.strategy.label}"
    samples = cache_dir.parent / "samples" / f"{name}-seed{cell.replicate}-{key[:8]}.npz"
    # one seed per (data, split, regime, replicate): every strategy meets the same test images
    seed = derive_seed("quality", *cell.fit_key_parts) % 2**62
    seen = granted_unlabelled(cell, dataset, split)  # memorization is measured against all the fit saw
    in_pool = seen is not None and cell.protocol.unlabelled.source != "path"
    return cache.json_once(
        "quality",
        key,
        lambda: assess_quality(
            data, dataset, split, cell.quality, device, cache, cell.budget_scale, seed, samples, seen, in_pool
        ),
    )


def validation_accuracy(model, split: Split, device: torch.device, precision: str | None = None) -> dict:
    """What a budget check measures: validation accuracy alone (it reads no test image)."""
    val = classification_metrics(
        predict(model, split.val.images, device, precision=precision), split.val.labels
    )
    return {"val_accuracy": val["accuracy"]}


def evaluate(model, split: Split, device: torch.device, precision: str | None = None) -> dict:
    """The evaluate stage: metrics of the trained classifier on the clean labelled, validation and test
    images (in the precision it trained in)."""
    test_logits = predict(model, split.test.images, device, precision=precision)
    test = classification_metrics(test_logits, split.test.labels)
    train_m = classification_metrics(
        predict(model, split.labelled.images, device, precision=precision), split.labelled.labels
    )
    val = classification_metrics(
        predict(model, split.val.images, device, precision=precision), split.val.labels
    )
    recall = class_recall(test_logits, split.test.labels)
    counts = torch.bincount(split.labelled.labels, minlength=len(recall)).tolist()
    return {
        **{f"test_{k}": v for k, v in test.items()},
        "n_test": len(split.test),
        "test_class_recall": canonical_json([round(r, 6) for r in recall]),
        "test_recall_smallest_third": float(np.nanmean([recall[k] for k in smallest_third(counts)])),
        "train_accuracy": train_m["accuracy"],
        "train_nll": train_m["nll"],
        "val_accuracy": val["accuracy"],
        "gap_accuracy": train_m["accuracy"] - test["accuracy"],
        "gap_loss": test["nll"] - train_m["nll"],
    }
