"""The stages of a cell, composed by ``run_cell``: fit (the strategy, on the labelled images) ->
quality (the fitted strategy's synthetic-data quality, bench/quality) -> train (the one training
loop) -> evaluate (metrics on real images). ``train_cell`` is the training path on its own (fit
and train), which reads no test image; tune runs it."""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from bench.core.cache import FileCache, cache_key
from bench.core.errors import UserError
from bench.core.images import ImageSet
from bench.core.keys import canonical_json, stable_hash
from bench.core.seeding import derive_seed, seeded
from bench.core.strategy import FitContext, TrainingData
from bench.data.sets import Dataset
from bench.data.splits import Split
from bench.models.suite import SUITE_VERSION
from bench.protocol.columns import written_by
from bench.quality.assess import assess_quality
from bench.quality.settings import quality_versions
from bench.run import provenance
from bench.run.cell import Cell, data_of, granted_unlabelled, make_strategy
from bench.run.failures import STAGE_FAILURES, code_error, failed, stage_failure, succeeded
from bench.run.resources import measure
from bench.training.loop import Member, batch_split, device_precision, predict, train_cohort
from bench.training.metrics import class_recall, classification_metrics, correct_bits, smallest_third


def fit_context(
    cell: Cell, dataset: Dataset, split: Split, device: torch.device, cache_dir: Path | None
) -> FitContext:
    """What the cell's strategy may use besides its labelled images: the unlabelled images only where
    the protocol grants them and the strategy learns from them; the fits stacked with its own."""

    def stacked_fits() -> list[tuple[ImageSet, FitContext]]:
        fits = []
        for peer in cell.stacked_peers():
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
        stacked_parts=tuple(peer.fit_data_parts for peer in cell.stacked_peers()),
        stacked_fits=stacked_fits if cell.stacked_replicates else None,
    )


def fit_strategy(
    cell: Cell, dataset: Dataset, split: Split, device: torch.device, cache_dir: Path | None
) -> tuple[TrainingData | None, dict]:
    """The fit stage: the cell's strategy fitted on its labelled images (seeded by everything but
    the classifier). Returns its training data and its columns (memory, time, the strategy's own),
    or None and the columns of its failure."""
    failure = None
    with seeded(cell.fit_seed, device), measure(device) as usage:
        try:
            data = make_strategy(cell.strategy).fit(
                split.labelled, fit_context(cell, dataset, split, device, cache_dir)
            )
        except STAGE_FAILURES as exc:
            data, failure = None, exc
    columns = {"fit_peak_mem_mb": usage.peak_mb, "fit_seconds": usage.seconds}
    if data is None:
        return None, {**written_by("fit", columns), **stage_failure(failure)}
    return data, written_by("fit", {**columns, **data.info})


def cell_record(cell: Cell, revision: str) -> dict:
    """The columns that identify a cell's result row (the cell stage's, before its data is read)."""
    identity = {
        "key": cell.key,
        "dataset": cell.dataset.title,
        "data_hash": cell.data_hash,
        "regime": cell.regime_label,
        "strategy": cell.strategy.label,
        "strategy_name": cell.strategy.name,
        "strategy_params": canonical_json(cell.strategy.params),
        "fit_data": cell.fit_data,
        "control": cell.is_control,
        "classifier": cell.classifier,
        "replicate": cell.replicate,
        "seed": cell.train_seed,
        "suite_version": SUITE_VERSION,
        "versions": canonical_json(cell.versions),
        "split_seed": cell.split.seed,
        "budget_scale": cell.budget_scale,
        "revision": revision,
    }
    return written_by("cell", identity)


def cell_columns(cell: Cell, dataset: Dataset, split: Split, device: torch.device, revision: str) -> dict:
    """The cell stage: ``cell_record`` and what the cell runs on (its data's sizes, its budget, the
    device and precision), as it starts."""
    link = "budget_check_of" if cell.is_budget_check else "generator_check_of"
    check = {link: cell.check_of} if cell.check_of else {}
    seed = {"check_seed": True} if cell.check_seed else {}
    stacked = {"stacked_fit": cell.generator_group} if cell.stacked_replicates else {}
    runs_on = {
        "num_classes": dataset.num_classes,
        "budget_steps": cell.budget_steps(len(split.labelled)),
        "batch_size": cell.classifier_entry.training_recipe.batch_size,
        "n_real": len(split.labelled),
        "n_val": len(split.val),
        "device": provenance.device_name(device),
        "precision": cell.precision or device_precision(device),
        "started": provenance.now(),
        **check,
        **seed,
        **stacked,
    }
    return {**cell_record(cell, revision), **written_by("cell", runs_on)}


def lost_record(cell: Cell, reason: str, revision: str) -> dict:
    """The row of a cell whose worker died on every try (killed, out of memory)."""
    return {**cell_record(cell, revision), **failed(reason, "machine")}


def error_records(cells: tuple[Cell, ...], exc: Exception, revision: str) -> list[dict]:
    """The rows of cells whose code raised ``exc`` (a bug in a strategy, say): failed with
    failure_kind ``error``, the exception as the reason, and its traceback (``traceback``, which
    the store writes to a file beside the cell's record). A rerun tries them again."""
    return [{**cell_record(cell, revision), **code_error(exc)} for cell in cells]


@dataclass
class Trainee:
    """A cell whose strategy is fitted (and its quality measured), on its way to a trained
    classifier of ``steps`` steps; ``columns``: its row so far."""

    cell: Cell
    split: Split
    data: TrainingData
    columns: dict
    image_shape: tuple[int, ...]
    num_classes: int
    steps: int
    on_eval: Callable | None = None


def prepare(
    cell: Cell,
    dataset: Dataset,
    split: Split,
    device: torch.device,
    cache_dir: Path | None,
    revision: str,
    quality: bool = False,
    on_eval=None,
) -> Trainee | dict:
    """The cell, fit and (with ``quality``) quality stages of a cell, in that order: a Trainee, or
    the row of the stage that failed."""
    columns = cell_columns(cell, dataset, split, device, revision)
    data, fit_columns = fit_strategy(cell, dataset, split, device, cache_dir)
    columns = {**columns, **fit_columns}
    if data is None:
        return columns
    if quality:
        try:
            columns = {**columns, **quality_stage(cell, dataset, split, device, cache_dir, data)}
        except STAGE_FAILURES as exc:
            return {**columns, **stage_failure(exc, "quality")}
    steps = cell.budget_steps(len(split.labelled))
    return Trainee(cell, split, data, columns, dataset.image_shape, dataset.num_classes, steps, on_eval)


def train_cell(
    cell: Cell,
    device: torch.device,
    cache_dir: Path | None,
    dataset: Dataset,
    split: Split,
    revision: str,
    on_eval=None,
) -> tuple[dict, torch.nn.Module | None]:
    """The training path: fit the cell's strategy, then train its classifier. It reads the labelled
    and validation images of ``split`` and never its test images (tune runs it as it is).
    Returns (row, model); on divergence the row says ``failed`` and the model is None."""
    trainee = prepare(cell, dataset, split, device, cache_dir, revision, on_eval=on_eval)
    if isinstance(trainee, dict):
        return trainee, None
    model, train_columns = train_classifiers([trainee], device)[0]
    return {**trainee.columns, **train_columns, **(succeeded() if model is not None else {})}, model


def train_classifiers(
    trainees: list[Trainee], device: torch.device
) -> list[tuple[torch.nn.Module | None, dict]]:
    """The train stage: the cells' classifiers trained by the one loop on their strategies' data,
    each from its cell's initial weights, several (of equal batch shapes) as one grouped network.
    Returns each one's model and columns (a failed one: None and its failure)."""
    first = trainees[0].cell
    recipe = first.classifier_entry.training_recipe
    steps, num_classes = trainees[0].steps, trainees[0].num_classes
    mixing = first.protocol.mixing
    members = []
    # a model alone draws its dropout masks on from its initial weights
    with seeded(first.train_seed, device):
        for trainee in trainees:
            with seeded(trainee.cell.train_seed, device) if len(trainees) > 1 else contextlib.nullcontext():
                model = trainee.cell.classifier_entry.build(trainee.image_shape, num_classes)
            member = Member(
                model,
                trainee.data,
                trainee.split.val,
                trainee.cell.train_seed,
                trainee.cell.augment_seed,
                trainee.on_eval,
            )
            members.append(member)
        with measure(device) as usage:
            try:
                results = train_cohort(
                    members,
                    recipe,
                    steps=steps,
                    num_classes=num_classes,
                    device=device,
                    mixing=mixing.mode,
                    fresh_synthetic=mixing.synthetic_pool == "fresh",
                    eval_points=first.eval_points,
                    precision=first.precision or None,
                )
            except (torch.cuda.OutOfMemoryError, MemoryError) as exc:
                results = [exc] * len(members)
    shared = {"train_peak_mem_mb": usage.peak_mb, "train_seconds": usage.seconds / len(trainees)}
    if len(trainees) > 1:  # each member's share of the cohort's training, and the cohort it trained in
        shared.update(cohort=stable_hash([t.cell.key for t in trainees], 20), cohort_size=len(trainees))
    trained = []
    for trainee, member, result in zip(trainees, members, results):
        columns = {"n_synthetic": trainee.data.n_synthetic, **shared}
        if isinstance(result, Exception):
            if len(trainees) == 1 and not isinstance(result, STAGE_FAILURES):
                raise result  # what a hook raised (tune's pruning), or a bug: the caller records it
            failed = stage_failure(result) if isinstance(result, STAGE_FAILURES) else code_error(result)
            trained.append((None, {**written_by("train", columns), **failed}))
            continue
        columns.update(
            mixing=mixing.mode,
            synthetic_pool=mixing.synthetic_pool,
            real_per_step=result.real_per_step,
            synthetic_per_step=result.synthetic_per_step,
            train_images_processed=steps * (result.real_per_step + result.synthetic_per_step),
            **(
                {"unlabelled_per_step": result.unlabelled_per_step, "mask_rate": result.mask_rate}
                if trainee.data.objective is not None
                else {}
            ),
            budget_epochs=steps * result.real_per_step / len(trainee.split.labelled),
            curve=result.curve,
        )
        trained.append((member.model, written_by("train", columns)))
    return trained


def run_cell(
    cell: Cell, device: torch.device, cache_dir: Path | None = None, revision: str = "unknown"
) -> dict:
    """Run one cell: cell -> fit -> quality (with a cache folder, where the protocol measures it)
    -> train -> evaluate. Returns its row (status ``failed`` with a reason on divergence)."""
    return run_cohort((cell,), device, cache_dir, revision)[0]


def training_group(cell: Cell, n_real: int, n_synthetic: int, n_val: int, objective) -> tuple:
    """What a cohort's members that train as one grouped network share: the batch shape (real, synthetic
    images per step) and the validation size; a cell with an objective on unlabelled images trains
    alone (bench/training/loop.py). `run_cohort` and `augbench plan` group by it."""
    recipe = cell.classifier_entry.training_recipe
    shape = batch_split(recipe.batch_size, n_real, n_synthetic, cell.protocol.mixing.mode)
    return shape, n_val, cell.key if objective is not None else ""


def run_cohort(
    cells: tuple[Cell, ...], device: torch.device, cache_dir: Path | None = None, revision: str = "unknown"
) -> list[dict]:
    """Run cells whose classifiers train as one network: each one's cell, fit and quality stages as
    alone, then the classifiers of equal batch shapes trained together, then each one evaluated as
    alone. Each row merges its stages' columns in that order. Returns the rows in order."""
    rows, trainees = {}, []
    for cell in cells:
        dataset, split = data_of(cell)
        quality = cell.quality.enabled and cache_dir is not None and not cell.is_check
        try:
            trainee = prepare(cell, dataset, split, device, cache_dir, revision, quality)
        except UserError:
            raise
        except Exception as exc:  # noqa: BLE001 - a bug in its fit or quality stage costs this cell alone
            if len(cells) == 1:
                raise  # the caller records it (CellTask.run_in), as for a cell alone
            trainee = error_records((cell,), exc, revision)[0]
        if isinstance(trainee, dict):
            rows[cell.key] = trainee
        else:
            trainees.append(trainee)
    groups: dict[tuple, list[Trainee]] = {}
    for trainee in trainees:
        data, split = trainee.data, trainee.split
        group = training_group(
            trainee.cell, len(split.labelled), data.n_synthetic, len(split.val), data.objective
        )
        groups.setdefault(group, []).append(trainee)
    for group in groups.values():
        for trainee, (model, train_columns) in zip(group, train_classifiers(group, device)):
            row = {**trainee.columns, **train_columns}
            if model is not None:
                scores = validation_accuracy if trainee.cell.is_check else evaluate
                measured = scores(model, trainee.split, device, trainee.cell.precision or None)
                row.update({**written_by("evaluate", measured), **succeeded()})
            rows[trainee.cell.key] = row
    return [rows[cell.key] for cell in cells]


def quality_stage(
    cell: Cell, dataset: Dataset, split: Split, device: torch.device, cache_dir: Path, data: TrainingData
) -> dict:
    """The quality stage of a cell: its strategy's quality columns with the stage's time and memory."""
    with measure(device) as usage:
        columns = cached_quality(cell, dataset, split, data, device, cache_dir)
    return written_by(
        "quality", {**columns, "quality_peak_mem_mb": usage.peak_mb, "quality_seconds": usage.seconds}
    )


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
    """What a budget check measures: validation accuracy alone, and which validation images were right
    (it reads no test image)."""
    logits = predict(model, split.val.images, device, precision=precision)
    return {
        "val_accuracy": classification_metrics(logits, split.val.labels)["accuracy"],
        "val_correct": correct_bits(logits, split.val.labels),
    }


def evaluate(model, split: Split, device: torch.device, precision: str | None = None) -> dict:
    """The evaluate stage: metrics of the trained classifier on the clean labelled, validation and test
    images (in the precision it trained in)."""
    test_logits = predict(model, split.test.images, device, precision=precision)
    test = classification_metrics(test_logits, split.test.labels)
    train_m = classification_metrics(
        predict(model, split.labelled.images, device, precision=precision), split.labelled.labels
    )
    val_logits = predict(model, split.val.images, device, precision=precision)
    val = classification_metrics(val_logits, split.val.labels)
    recall = class_recall(test_logits, split.test.labels)
    counts = torch.bincount(split.labelled.labels, minlength=len(recall)).tolist()
    return {
        "test_accuracy": test["accuracy"],
        "test_balanced_accuracy": test["balanced_accuracy"],
        "test_macro_f1": test["macro_f1"],
        "test_nll": test["nll"],
        "test_ece": test["ece"],
        "n_test": len(split.test),
        "test_class_recall": canonical_json([round(r, 6) for r in recall]),
        "test_recall_smallest_third": float(np.nanmean([recall[k] for k in smallest_third(counts)])),
        "train_accuracy": train_m["accuracy"],
        "train_nll": train_m["nll"],
        "val_accuracy": val["accuracy"],
        "val_correct": correct_bits(val_logits, split.val.labels),
        "gap_accuracy": train_m["accuracy"] - test["accuracy"],
        "gap_loss": test["nll"] - train_m["nll"],
    }
