"""The result row: every column a cell's row can hold, declared once.

Each column has a name, a type, a unit, one line of meaning and the stage that writes it. The
store gives every column its declared type when it builds the tables (so a CSV round trip gives
back exactly what parquet holds), the reports read their metric, quality and cost columns from
here, tracking logs the numeric ones, and `augbench list --columns` prints this table as the data
dictionary of ``results.csv``, in the order of the tables. Every stage hands its columns through
``written_by``, which refuses a column that is not declared, not of its declared type or declared
by another stage: each column is checked once, as it is written.

Stages: ``cell`` (the grid point and its provenance), ``end`` (how the row ended: ok or failed, and
when), ``fit`` (the strategy's fit), ``quality`` (the quality stage), ``train`` (the training loop),
``evaluate`` (metrics on real images), ``store`` (added by the run folder: a traceback's file, the
checks' outcomes, the params' columns).
"""

from __future__ import annotations

from dataclasses import dataclass

# each declared type and the Python values a stage may write for it
PYTHON_TYPES = {"text": str, "int": int, "float": (int, float), "bool": bool, "time": str, "json": list}
STAGES = ("cell", "end", "fit", "quality", "train", "evaluate", "store")


@dataclass(frozen=True)
class Column:
    """One column of the result row; ``report`` names the report table that shows it (metric,
    quality, cost), if any."""

    name: str
    type: str
    unit: str
    meaning: str
    stage: str
    report: str = ""

    def __post_init__(self) -> None:
        if self.type not in PYTHON_TYPES or self.stage not in STAGES:
            raise ValueError(f"column {self.name}: type {self.type!r} or stage {self.stage!r} is not known")


def _columns(stage: str, *rows: tuple) -> list[Column]:
    return [Column(name, type_, unit, meaning, stage, *rest) for name, type_, unit, meaning, *rest in rows]


COLUMNS: tuple[Column, ...] = tuple(
    [
        *_columns(
            "cell",
            (
                "key",
                "text",
                "",
                "hash of the cell's canonical config (its identity: coordinates, params, versions)",
            ),
            ("dataset", "text", "", "data set label"),
            ("data_hash", "text", "", "content hash of the data set's images and labels"),
            ("regime", "text", "", "labelled images per class, `all`, or a long tail lt<imbalance>x<n_max>"),
            ("strategy", "text", "", "strategy label (as the config names the column of the grid)"),
            ("strategy_name", "text", "", "registered strategy name"),
            ("strategy_params", "text", "", "the strategy's resolved params as JSON"),
            (
                "fit_data",
                "text",
                "",
                "what the strategy's fit saw: labelled, or labelled+pool (+pool:N, "
                "+folder:NAME) under the semi-supervised protocol",
            ),
            (
                "control",
                "bool",
                "",
                "the strategy learns from the unlabelled images without generating any (pseudo-label, "
                "fixmatch): a control of the semi-supervised protocol",
            ),
            ("classifier", "text", "", "classifier label"),
            ("replicate", "int", "", "seed index: labelled draw, initial weights, batch order"),
            ("seed", "int", "", "the cell's training seed (initial weights, dropout, real batch order)"),
            ("suite_version", "text", "", "version of the classifier suite"),
            ("versions", "text", "", "every code version the result depends on, as JSON"),
            ("split_seed", "int", "", "seed of the test hold-out and the validation set"),
            ("budget_scale", "float", "", "multiplier of the classifiers' training budget"),
            ("revision", "text", "", "git revision of the code that ran the cell"),
            ("num_classes", "int", "", "classes of the data set"),
            ("budget_steps", "int", "steps", "optimizer steps the classifier trained for"),
            (
                "budget_check_of",
                "text",
                "",
                "a budget check's record only (never in the tables): the key of the cell "
                "it trains at twice the budget",
            ),
            (
                "generator_check_of",
                "text",
                "",
                "a generator check's record only (never in the tables): the key of the cell "
                "whose generator it fits at twice its steps",
            ),
            (
                "check_seed",
                "bool",
                "",
                "a check seed's record only (never in the tables): a seed beyond the protocol's that "
                "a check added, trained at the budget for the checks alone",
            ),
            ("batch_size", "int", "images", "real images per step (the recipe's batch size)"),
            ("n_real", "int", "images", "labelled real images"),
            ("n_val", "int", "images", "validation images"),
            ("device", "text", "", "device the cell ran on"),
            ("precision", "text", "", "the classifier's autocast: fp32 or bf16 (config field precision)"),
            ("started", "time", "UTC", "when the cell started"),
            (
                "stacked_fit",
                "text",
                "",
                "the stacked fit: the generators of consecutive seeds that trained as one stacked model with "
                "this cell's (a hash of their generator keys; empty: it trained alone)",
            ),
        ),
        *_columns(
            "end",
            ("status", "text", "", "ok, or failed"),
            ("failure_reason", "text", "", "why the cell failed (divergence, collapse, a dead worker)"),
            (
                "failure_kind",
                "text",
                "",
                "what failed: method (the strategy diverged or collapsed: a result, kept by reruns), machine "
                "(its worker died, out of memory) or error (the cell's code raised an exception, a bug: "
                "failure_reason has its type and message); a rerun tries machine and error failures again",
            ),
            ("finished", "time", "UTC", "when the cell finished"),
        ),
        *_columns(
            "fit",
            (
                "fit_seconds",
                "float",
                "s",
                "wall time of the strategy's fit (a cached generator loads fast)",
                "cost",
            ),
            (
                "fit_peak_mem_mb",
                "float",
                "MB",
                "peak memory of the fit (CUDA allocator, else resident set)",
                "cost",
            ),
            ("generator_steps", "int", "steps", "the generator's training steps"),
            ("generator_key", "text", "", "cache key of the fitted generator"),
            ("generator_cache_hit", "bool", "", "the generator came from the run's cache"),
            (
                "generator_fit_seconds",
                "float",
                "s",
                "wall time of the generator's original fit (also on a cache hit; "
                "in a stacked fit its equal share of the stack's fit)",
                "cost",
            ),
            (
                "generator_converged",
                "bool",
                "",
                "the generator's own validation signal (KID of its samples against the validation images, in "
                "pooled pixels) was no longer improving at the end of its fit: the last of its points was "
                "not below the one before by more than twice its spread; empty: not measured (a stacked fit)",
            ),
            ("generator_val_kid", "float", "", "that signal at the end of the fit (lower is closer)"),
            (
                "generator_signal",
                "text",
                "",
                "that signal at each of its points during the fit, as JSON (step, kid, kid_std)",
            ),
            ("stacked_fit_size", "int", "fits", "the seeds' generator fits in that stacked fit"),
            ("synthetic_pool_size", "int", "images", "synthetic-images: images in the given pool"),
            (
                "pseudo_labelled",
                "int",
                "images",
                "pool images that joined with the teacher's labels: pseudo-label's training "
                "data, or a generator's with generator_data: pseudo-labelled",
            ),
            (
                "pseudo_label_confidence",
                "float",
                "fraction",
                "pseudo-label: the teacher's mean confidence on them",
            ),
            (
                "pseudo_label_threshold",
                "float",
                "fraction",
                "pseudo-label: the confidence a pool image needed (with "
                "threshold: auto, chosen on the validation images)",
            ),
            ("synthetic_content_hash", "text", "", "synthetic-images: content hash of the given files"),
        ),
        *_columns(
            "quality",
            (
                "quality_kind",
                "text",
                "",
                "what was scored: generated, pseudo-labelled (pool images with a "
                "teacher's labels), either +augmented, augmented or real",
            ),
            (
                "quality_n",
                "int",
                "images",
                "distinct images per side of FID/KID/IS/PR (compare only at equal N)",
                "quality",
            ),
            ("quality_n_test", "int", "images", "real test images they were compared with"),
            ("quality_extractor", "text", "", "the feature extractor (the replicate's evaluator network)"),
            ("evaluator_disjoint", "bool", "", "the evaluator trained on none of the labelled images"),
            (
                "evaluator_overlaps_fit",
                "bool",
                "",
                "the evaluator trained on images the strategy's fit saw (labelled, "
                "or pool images under the semi-supervised protocol)",
            ),
            ("evaluator_test_accuracy", "float", "fraction", "the evaluator's test accuracy"),
            (
                "fid_evaluator",
                "float",
                "",
                "FID in the evaluator's feature space (biased upward at small N)",
                "quality",
            ),
            ("kid_evaluator", "float", "", "KID in the evaluator's feature space (unbiased)", "quality"),
            (
                "fid_evaluator_ref_real",
                "float",
                "",
                "FID of as many unused real images: the floor at this N",
                "quality",
            ),
            (
                "kid_evaluator_ref_real",
                "float",
                "",
                "KID of as many unused real images: the floor at this N",
                "quality",
            ),
            ("is_evaluator", "float", "", "Inception Score from the evaluator's logits", "quality"),
            (
                "precision_evaluator",
                "float",
                "fraction",
                "improved precision (Kynkaanniemi et al.)",
                "quality",
            ),
            ("recall_evaluator", "float", "fraction", "improved recall (Kynkaanniemi et al.)", "quality"),
            (
                "evaluator_label_agreement",
                "float",
                "fraction",
                "scored images the evaluator assigns their own label",
                "quality",
            ),
            (
                "cas_accuracy",
                "float",
                "fraction",
                "classification accuracy score: a cnn trained on the synthetic "
                "(generated or pseudo-labelled) images alone, tested on real test "
                "images",
                "quality",
            ),
            (
                "mem_nn_ratio",
                "float",
                "",
                "median distance to the nearest image the fit saw (labelled and pool), generated / real test",
                "quality",
            ),
            (
                "mem_near_copy_fraction",
                "float",
                "fraction",
                "generated images nearer a training image than 95% of real test images are",
                "quality",
            ),
            (
                "mem_near_copy_chance",
                "float",
                "fraction",
                "the near-copy fraction of real test images (chance)",
                "quality",
            ),
            ("fid_inception", "float", "", "standard Inception-v3 FID (with inception_weights)", "quality"),
            ("kid_inception", "float", "", "standard Inception-v3 KID (with inception_weights)", "quality"),
            ("quality_ref_n", "int", "images", "real images of the real-vs-real reference"),
            ("fid_evaluator_ref_noise", "float", "", "FID of uniform noise: the ceiling"),
            ("kid_evaluator_ref_noise", "float", "", "KID of uniform noise: the ceiling"),
            (
                "mem_nn_synthetic_median",
                "float",
                "",
                "median nearest-training-image distance of generated images",
            ),
            ("mem_nn_test_median", "float", "", "median nearest-training-image distance of real test images"),
            (
                "sample_grid",
                "text",
                "",
                "the sample file of real and trained-on images, relative to the run folder",
            ),
            ("quality_seconds", "float", "s", "wall time of the quality stage"),
            ("quality_peak_mem_mb", "float", "MB", "peak memory of the quality stage"),
        ),
        *_columns(
            "train",
            ("n_synthetic", "int", "images", "synthetic images in the fixed pool"),
            ("train_seconds", "float", "s", "wall time of the classifier's training", "cost"),
            ("train_peak_mem_mb", "float", "MB", "peak memory of the training", "cost"),
            ("mixing", "text", "", "how synthetic images join the real ones: add or replace"),
            (
                "cohort",
                "text",
                "",
                "the cohort whose classifiers trained as one network with this one (a hash of "
                "its cells' keys; empty: trained alone)",
            ),
            (
                "cohort_size",
                "int",
                "cells",
                "classifiers in that cohort (its train_seconds are this cell's share)",
            ),
            ("synthetic_pool", "text", "", "fixed, or fresh samples every synthetic epoch"),
            ("real_per_step", "int", "images", "real images per step"),
            ("synthetic_per_step", "int", "images", "synthetic images per step"),
            (
                "unlabelled_per_step",
                "int",
                "images",
                "a strategy with an objective on unlabelled images (fixmatch): unlabelled images per step",
            ),
            (
                "mask_rate",
                "float",
                "fraction",
                "a strategy with an objective on unlabelled images: the share of them its loss used "
                "(fixmatch: above the threshold) over the last evaluation window of training",
            ),
            (
                "train_images_processed",
                "int",
                "images",
                "images the classifier saw in training, real and synthetic",
            ),
            ("budget_epochs", "float", "epochs", "passes over the labelled real images"),
            (
                "curve",
                "json",
                "",
                "validation accuracy and training loss during training (written to curves.csv, "
                "not to the results tables)",
            ),
        ),
        *_columns(
            "evaluate",
            ("test_accuracy", "float", "fraction", "accuracy on the real test images"),
            (
                "test_balanced_accuracy",
                "float",
                "fraction",
                "mean per-class recall on the test images",
                "metric",
            ),
            ("test_macro_f1", "float", "fraction", "macro-averaged F1 on the test images", "metric"),
            ("test_nll", "float", "nats", "mean negative log-likelihood on the test images", "metric"),
            (
                "test_ece",
                "float",
                "fraction",
                "expected calibration error on the test images (15 bins)",
                "metric",
            ),
            ("n_test", "int", "images", "test images"),
            ("test_class_recall", "text", "", "per-class test recall as JSON, by class index"),
            (
                "test_recall_smallest_third",
                "float",
                "fraction",
                "mean test recall of the third of classes with the fewest labelled images",
            ),
            ("train_accuracy", "float", "fraction", "accuracy on the labelled real images (clean)"),
            ("train_nll", "float", "nats", "negative log-likelihood on the labelled real images"),
            ("val_accuracy", "float", "fraction", "accuracy on the validation images"),
            (
                "val_correct",
                "text",
                "",
                "which validation images it got right (hex bits, in the split's order), which the budget "
                "check pairs image by image; in the cell files only, not in results.csv",
            ),
            ("gap_accuracy", "float", "fraction", "train accuracy minus test accuracy"),
            ("gap_loss", "float", "nats", "test NLL minus train NLL"),
        ),
        *_columns(
            "store",
            ("failure_traceback", "text", "", "an errored cell's traceback file, relative to the run folder"),
            (
                "budget_check",
                "text",
                "",
                "its group's budget check (data set, regime, classifier, strategy): "
                "converged (doubling the budget gained less than budget.plateau on validation, by a "
                "check whose resolution is at most the plateau), rising (it gained the plateau or "
                "more), unresolved (neither: the check could not tell), or unchecked",
            ),
            (
                "budget_check_resolution",
                "float",
                "pp",
                "the smallest gain its group's check had 80% power to see (one-sided 5%), from its "
                "seeds' paired per-image differences on the validation images",
            ),
            (
                "budget_check_gain",
                "float",
                "pp",
                "its group's mean validation-accuracy gain from doubling the budget",
            ),
            ("budget_check_steps", "int", "steps", "the doubled budget its group's check trained for"),
            (
                "generator_check",
                "text",
                "",
                "its group's generator check (a strategy that fits a generator): its cells' validation "
                "accuracy with the generator fitted at twice its steps; converged, rising, unresolved or "
                "unchecked, as for budget_check",
            ),
            (
                "generator_check_gain",
                "float",
                "pp",
                "its group's mean validation-accuracy gain from doubling the generator's steps",
            ),
            (
                "generator_check_resolution",
                "float",
                "pp",
                "the smallest gain its group's generator check had 80% power to see (one-sided 5%)",
            ),
        ),
    ]
)
BY_NAME: dict[str, Column] = {c.name: c for c in COLUMNS}
CELL_FILES_ONLY = ("val_correct",)  # kept in the cell files for the budget check, left out of the tables
PARAM_PREFIX = "param_"  # the store adds param_<name> for every strategy param (stage `store`)


def column_problems(stage: str, columns: dict) -> list[str]:
    """What is wrong with the columns that ``stage`` writes: a column no declaration covers, one
    that another stage declares, a value not of its column's declared type (None is a gap, allowed
    everywhere). Empty when they are right."""
    problems = []
    for name, value in columns.items():
        column = BY_NAME.get(name)
        if column is None:
            if not (name.startswith(PARAM_PREFIX) and stage == "store"):
                problems.append(f"{name} is not a declared column (bench/protocol/columns.py)")
            continue
        if column.stage != stage:
            problems.append(f"{name} is a column of the {column.stage} stage")
        wrong_bool = isinstance(value, bool) and column.type in ("int", "float")
        if value is not None and (wrong_bool or not isinstance(value, PYTHON_TYPES[column.type])):
            problems.append(f"{name} is declared {column.type}, got {type(value).__name__} {value!r:.60}")
    return problems


def written_by(stage: str, columns: dict) -> dict:
    """``columns``, as ``stage`` writes them into a row, once they are checked against their
    declarations (``column_problems``); ValueError, a bug in whatever wrote them, otherwise."""
    problems = column_problems(stage, columns)
    if problems:
        raise ValueError(f"the {stage} stage wrote columns against the schema: {'; '.join(problems)}")
    return columns


def of_type(type_: str) -> tuple[str, ...]:
    """Names of the declared columns of one type, in declaration order."""
    return tuple(c.name for c in COLUMNS if c.type == type_)


def in_report(table: str) -> list[str]:
    """Names of the columns that the report's ``table`` (metric, quality, cost) shows, in order."""
    return [c.name for c in COLUMNS if c.report == table]


def describe() -> list[str]:
    """The data dictionary as lines: name, type, unit, stage, meaning."""
    lines = [f"{'column':<27} {'type':<6} {'unit':<9} {'stage':<9} meaning"]
    lines += [f"{c.name:<27} {c.type:<6} {c.unit or '-':<9} {c.stage:<9} {c.meaning}" for c in COLUMNS]
    lines.append(
        f"{PARAM_PREFIX + '<name>':<27} {'any':<6} {'-':<9} {'store':<9} each strategy param, from "
        "strategy_params (mappings as JSON text)"
    )
    return lines
