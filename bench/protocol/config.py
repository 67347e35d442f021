"""Benchmark protocols: YAML validated into frozen dataclasses, with ``--set key=value`` overrides.

Each field is declared once, below, with its default, range, help and identity roles (see
bench/core/schema.py); everything else about the config is derived from those declarations.
Bundled protocols ship inside the package (``configs``) and are found through importlib.resources.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

import configs
from bench.core.errors import UserError
from bench.core.executor import EXECUTORS
from bench.core.keys import stable_hash
from bench.core.schema import (
    as_list,
    check_number,
    check_path,
    identity,
    option,
    parse_section,
    plain_value,
    role_fields,
    section,
    to_plain,
)
from bench.core.secrets import masked, refuse_masked
from bench.core.strategy import STRATEGIES, StrategyEntry, parse_strategies
from bench.data.entries import datasets_plain, parse_datasets, parse_regimes, regimes_plain
from bench.data.sets import DatasetEntry
from bench.data.splits import Regime, SplitSpec
from bench.data.unlabelled import UnlabelledSpec, parse_unlabelled, unlabelled_plain
from bench.models.entries import classifiers_plain, parse_classifiers
from bench.models.suite import ClassifierEntry
from bench.protocol.registries import load_registries
from bench.quality.settings import QualitySpec
from bench.training.loop import device_precision, native_bf16


# --------------------------------------------------------------------- composite field parsers
def _plugins(value: Any, where: str) -> tuple[str, ...]:
    modules = () if value == [] else tuple(as_list(value, where))  # [] is how a saved config writes none
    if not all(isinstance(m, str) and m for m in modules):
        raise UserError(f"config field {where}: expected module names such as my_package.augmentations")
    load_registries(modules)  # before the fields that name what the plugins register
    return modules


RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


AUTO_COHORT = 16  # cells a cohort holds on CUDA with `cohort: auto`


def _cohort(value: Any, where: str) -> str | int:
    if value in ("auto", "off"):
        return value
    return check_number(value, where, int, 1, 1024)


def cohort_size(config: "BenchConfig", device) -> int:
    """The cells a cohort holds on ``device``: ``auto`` is AUTO_COHORT on CUDA and 1 (every cell
    alone) on the CPU, where grouping does not pay; ``off`` is 1."""
    if config.cohort == "auto":
        return AUTO_COHORT if device.type == "cuda" else 1
    return 1 if config.cohort == "off" else config.cohort


def key_precision(config: "BenchConfig", device) -> str:
    """The classifiers' precision on ``device`` where it differs from the device's former default
    (``device_precision``), and so enters the cell keys; empty where it is that default."""
    wanted = config.precision
    if wanted == "auto":
        wanted = "bf16" if native_bf16(device) else "fp32"
    return "" if wanted == device_precision(device) else wanted


def _run_name(value: Any, where: str) -> str:
    """A run name names a folder under runs/: letters, digits, '.', '_', '-' only (no path)."""
    if not isinstance(value, str) or not RUN_NAME.fullmatch(value):
        raise UserError(
            f"config field {where}: {value!r} is not a run name; use letters, digits, '.', '_' and "
            "'-' (it names a folder under runs/)"
        )
    return value


# --------------------------------------------------------------------------------- sections
def _on_off(value: Any, where: str) -> str:
    """on or off (YAML reads a bare on/off as true/false: both spellings are taken)."""
    value = {True: "on", False: "off"}.get(value, value) if isinstance(value, bool) else value
    if value not in ("on", "off"):
        raise UserError(f"config field {where}: {value!r} is not one of on, off")
    return value


def _plateau(value: Any, where: str) -> float:
    """Percentage points in (0, 100]."""
    value = check_number(value, f"config field {where}", float, 0.0, 100.0)
    if value == 0:
        raise UserError(
            f"config field {where}: 0 is out of range (must be above 0 and at most 100 percentage points)"
        )
    return value


def _max_steps(value: Any, where: str) -> str:
    """auto, or a whole number of optimizer steps (kept as text: the field's one type)."""
    if value == "auto":
        return value
    return str(check_number(value, f"config field {where}", int, 1, 100_000_000))


MOST_CHECK_SEEDS = 100  # budget.check_seeds and budget.max_check_seeds take at most this many


def _check_seeds(value: Any, where: str) -> str:
    """auto, or a whole number of seeds from 1 to MOST_CHECK_SEEDS (kept as text: the field's one type)."""
    if value == "auto":
        return value
    return str(check_number(value, f"config field {where}", int, 1, MOST_CHECK_SEEDS))


@dataclass(frozen=True, kw_only=True)
class BudgetSpec:
    """The `budget` section: how long each classifier trains, and the check that it was long enough."""

    scale: float = option(
        1.0,
        low=0.001,
        high=100.0,
        help="multiplies each classifier recipe's steps (generators have their own `steps`)",
    )
    steps: str = option(
        "recipe",
        choices=("recipe", "auto"),
        quiet=True,
        help="recipe: the recipe's steps times `scale`; auto: per data set, regime and "
        "classifier, the budget at which doubling gains `none` (with `search: grid`, every strategy) "
        "less than `plateau` of validation "
        "accuracy by a check that resolves it (the budget check's seeds and rule), searched from "
        "the larger of `floor` and the recipe's budget, down while halving stays converged, else "
        "up (searched once, cached; needs scale 1)",
    )
    search: str = option(
        "none",
        choices=("none", "grid"),
        quiet=True,
        help="what steps: auto reads: none (the baseline alone) or grid (every strategy of the grid on "
        "that data set, regime and classifier, none included: the budget at which all of them are "
        "converged; dearer per step of the search, cheaper than raising every cell of the run "
        "afterwards where the strategies need more steps than none)",
    )
    floor: int = option(
        100,
        low=1,
        high=1_000_000,
        quiet=True,
        help="steps: auto searches no lower than this (optimizer steps)",
    )
    check: str = option(
        "on",
        parse=_on_off,
        quiet=True,
        result=False,
        help="on: each (data set, regime, classifier, strategy) also trains its first seed(s) at "
        "twice the budget, on validation data, and every row says whether its group was "
        "converged (the gain from doubling below `plateau`); off: unchecked (the leaderboard "
        "refuses unchecked runs)",
    )
    plateau: float = option(
        1.0,
        parse=_plateau,
        quiet=True,
        result=False,
        help="percentage points of validation accuracy: a budget whose doubling gains less, by a "
        "check whose resolution is at most this, is converged. 1 pp: below the smallest changes "
        "the bundled protocols resolve (their minimum detectable effects are 1-5 pp), so a budget "
        "still gaining less cannot turn a verdict",
    )
    max_steps: str = option(
        "auto",
        parse=_max_steps,
        quiet=True,
        result=False,
        help="where a group's check finds it still rising, the run doubles the budget of its data "
        "set, regime and classifier (every strategy alike) and trains and checks them again, up to "
        "this many optimizer steps: auto (4 times the starting budget: two doublings) or a whole "
        "number at least the budget (the budget itself: never raise)",
    )
    check_seeds: str = option(
        "auto",
        parse=_check_seeds,
        quiet=True,
        result=False,
        help="how many first seeds each group's check starts with at twice the budget: auto (the "
        "fewest, at least 2, that could resolve `plateau` on the validation set: bench/run/resolution.py) "
        "or a whole number from 1 to `seeds`",
    )
    max_check_seeds: str = option(
        "auto",
        parse=_check_seeds,
        quiet=True,
        result=False,
        help="where a group's check reads its gain less sharply than `plateau` (its resolution above "
        "it), the run adds the seeds its measured spread asks for and reads it again, up to this "
        "many seeds: auto (16) or a whole number from 1 to 100 (as many as `check_seeds`: never add). Seeds "
        "beyond `seeds` train for the check alone, at the budget and at twice it, and are never "
        "results; the generator check adds seeds by the same rule",
    )


@dataclass(frozen=True, kw_only=True)
class MixingSpec:
    """The `mixing` section: how synthetic images join the real ones (see README, Protocol)."""

    mode: str = option(
        "add",
        choices=("add", "replace"),
        help="add: every step keeps the real batch of `none` and adds round(ratio*B) synthetic "
        "images; replace: a fixed batch B of which ratio/(1+ratio) is synthetic",
    )
    synthetic_pool: str = option(
        "fixed",
        choices=("fixed", "fresh"),
        help="fixed: one set of round(ratio*n) synthetic images; fresh: sampled anew from "
        "the generator every synthetic epoch",
    )


def _executor_section() -> type:
    """The `executor` section: ``name``, then the settings that each registered executor declares in
    its own module (``Executor.settings``), so that a new executor adds its settings without a line
    here. Two executors may not declare one name."""
    fields = [
        (
            "name",
            str,
            option(
                "auto",
                help="auto (process for several workers, else serial), or one of "
                f"{', '.join(EXECUTORS.names())}",
            ),
        )
    ]
    for name in EXECUTORS.names():
        settings = EXECUTORS.get(name).settings
        for f in dataclasses.fields(settings) if settings else ():
            if f.name in {known for known, _, _ in fields}:
                raise TypeError(f"executor {name} declares the setting {f.name}, which another executor has")
            fields.append((f.name, f.type, dataclasses.field(default=f.default, metadata=f.metadata)))
    spec = dataclasses.make_dataclass("ExecutorSpec", fields, frozen=True, kw_only=True)
    spec.__module__ = __name__  # pickles as bench.protocol.config.ExecutorSpec
    spec.__doc__ = "The `executor` section: what runs the cells (none of it changes a result)."
    return spec


ExecutorSpec = _executor_section()


def _tracking_uri(value: Any, where: str) -> str:
    """An MLflow tracking URI; refused at load time (before anything runs) where MLflow is missing."""
    if not isinstance(value, str):
        raise UserError(f"config field {where}: expected an MLflow tracking URI such as sqlite:///mlflow.db")
    refuse_masked(
        value,
        f"config field {where}",
        f"give the URI with its password again (--set {where}=URI), or without one and the "
        "credentials in MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD",
    )
    if value and importlib.util.find_spec("mlflow") is None:
        raise UserError(
            f"config field {where}: experiment tracking needs MLflow; install it with "
            "pip install 'augbench[mlflow]' or leave tracking out"
        )
    return value


@dataclass(frozen=True, kw_only=True)
class TrackingSpec:
    """The `tracking` section: optional experiment tracking (none of it changes a result)."""

    mlflow: str = option(
        "",
        parse=_tracking_uri,
        plain=masked,  # saved, logged and shown with its password masked
        help="MLflow tracking URI (sqlite:///mlflow.db, http://HOST:5000, databricks): one MLflow "
        "run per cell under one parent run per `augbench run`; empty: off, and MLflow is "
        "not imported (pip install 'augbench[mlflow]')",
    )
    experiment: str = option("augbench", help="MLflow experiment the runs go to (created if missing)")


@dataclass(frozen=True, kw_only=True)
class TuneSpec:
    """The `tune` section: `augbench tune` settings."""

    trials: int = option(8, low=1, high=100_000, help="trial budget of every study")
    seeds: int = option(1, low=1, high=100, help="replicates averaged per trial")


@dataclass(frozen=True, kw_only=True)
class BenchConfig:
    """A protocol: data sets x regimes x strategies x classifiers x seeds, and how each cell runs."""

    name: str = option("custom", parse=_run_name, help="run name (default: the config file's name)")
    plugins: tuple[str, ...] = option(
        (),
        parse=_plugins,
        fingerprint=False,
        help="modules to import first: they register data sets, strategies, "
        "classifiers or policies (installed packages can also register "
        "through the entry-point group augbench.plugins)",
    )
    datasets: tuple[DatasetEntry, ...] = option(
        parse=parse_datasets,
        plain=datasets_plain,
        protocol=True,
        help="a list of data set names (one name alone stands for a list "
        "of one, as in every list field), or {name, root, download, label, and the "
        "options of its kind: imagefolder: size, channels, hflip, "
        "max_gb; npz: path, hflip, max_gb; medmnist: flag, size, "
        "hflip, max_gb}",
    )
    regimes: tuple[Regime, ...] = option(
        (None,),
        parse=parse_regimes,
        plain=regimes_plain,
        protocol=True,
        help="labelled images per class, 'all' (alias 'as-is'), or a long tail "
        "{long_tail: IMBALANCE, n_max: N}",
    )
    split: SplitSpec = section(SplitSpec, cell=True, protocol=True, help="test / validation / labelled split")
    unlabelled: UnlabelledSpec = option(
        UnlabelledSpec(),
        parse=parse_unlabelled,
        plain=unlabelled_plain,
        protocol=True,
        quiet=True,
        help="images without labels that strategies may learn from (the "
        "semi-supervised protocol): none, pool (every training-pool image "
        "neither labelled nor validation), a number of those, or {path: "
        "DIR_OR_NPZ} of your own; it enters the keys of the cells whose "
        "strategy uses it",
    )
    strategies: tuple[StrategyEntry, ...] = option(
        parse=parse_strategies, help="strategy names, or {name, label, params}"
    )
    classifiers: tuple[ClassifierEntry, ...] = option(
        parse=parse_classifiers,
        plain=classifiers_plain,
        protocol=True,
        help="classifiers of the suite (mlp, cnn, resnet), or {name: timm, model, "
        "pretrained: FILE, input_size, label, recipe: {optimizer, lr, "
        "weight_decay, batch_size, epochs, min_steps, label_smoothing}}",
    )
    seeds: int = option(
        3, low=1, high=100, protocol=True, help="replicates (labelled draw, init, batch order)"
    )
    budget: BudgetSpec = section(BudgetSpec, cell=True, flatten=True, protocol=True, help="training budget")
    mixing: MixingSpec = section(
        MixingSpec, cell=True, protocol=True, help="how synthetic images are mixed in"
    )
    eval_points: int = option(
        10,
        low=1,
        high=1000,
        cell=True,
        protocol=True,
        help="validation accuracy measured this many times per training run",
    )
    device: str = option("auto", choices=("auto", "cpu", "cuda"), help="where cells run")
    precision: str = option(
        "auto",
        choices=("auto", "fp32", "bf16"),
        fingerprint=False,
        quiet=True,
        help="the classifiers' autocast: auto (bf16 where the device computes it natively: "
        "CUDA, or a CPU with AVX-512 BF16 or AMX; else fp32), fp32 or bf16; a precision "
        "other than the device's former default (CPU fp32, CUDA bf16) enters the cell keys",
    )
    cohort: str | int = option(
        "auto",
        parse=_cohort,
        quiet=True,
        help="cells whose classifiers train as one grouped network, a cohort (same data set, regime "
        "and classifier, in grid order), and seeds whose generators fit as one stacked model, a "
        "stacked fit (gan, vae): auto (16 on CUDA, where small nets leave the GPU waiting on kernel "
        "launches; off on the CPU, where it does not pay), off, or a number; above 1 it enters the "
        "cells' keys",
    )
    workers: int = option(
        0,
        low=0,
        high=256,
        fingerprint=False,
        help="cells side by side (0 = automatic: one per core up to 2 on a CPU; on CUDA "
        "workers_per_gpu on each GPU)",
    )
    workers_per_gpu: int = option(
        8,
        low=1,
        high=64,
        fingerprint=False,
        help="with device cuda and workers 0: processes per GPU (at most one per CPU "
        "core); a small net leaves a GPU mostly idle between its kernel launches",
    )
    executor: ExecutorSpec = section(
        ExecutorSpec, fingerprint=False, help="what runs the cells: local processes or a Ray cluster"
    )
    quality: QualitySpec = section(QualitySpec, cell=True, help="synthetic-data quality")
    tune: TuneSpec = section(TuneSpec, fingerprint=False, help="`augbench tune` settings")
    tracking: TrackingSpec = section(TrackingSpec, fingerprint=False, help="experiment tracking (MLflow)")

    @property
    def raw(self) -> dict:
        """The resolved config as plain data, saved with every run."""
        return to_plain(self)

    @property
    def classifier_labels(self) -> tuple[str, ...]:
        """How rows name the classifiers: the suite name, or a configured classifier's label."""
        return tuple(entry.label for entry in self.classifiers)

    @property
    def fingerprint(self) -> str:
        """Hash of the fields that change results or the grid: a run folder holds exactly one config."""
        return stable_hash(identity(self, "fingerprint"), 16)


def protocol_view(raw: dict, schema: type = BenchConfig) -> dict:
    """The fields of a saved config (plain data) that runs on one leaderboard must share (a quiet
    field only where it is not at its default: configs saved before it existed lack it)."""
    quiet = {f.name: plain_value(f, f.default) for f in dataclasses.fields(schema) if f.metadata.get("quiet")}
    view = {
        name: raw.get(name)
        for name in role_fields(schema, "protocol")
        if not (name in quiet and raw.get(name, quiet[name]) == quiet[name])
    }
    for f in dataclasses.fields(schema):  # a section's quiet fields likewise
        if f.name in view and "section" in f.metadata and isinstance(view[f.name], dict):
            defaults = {
                g.name: plain_value(g, g.default)
                for g in dataclasses.fields(f.metadata["section"])
                if g.metadata.get("quiet")
            }
            view[f.name] = {k: v for k, v in view[f.name].items() if not (k in defaults and v == defaults[k])}
    return view


# ------------------------------------------------------------------------------- loading
class UniqueKeyLoader(yaml.SafeLoader):
    """YAML whose mappings refuse a key given twice (plain YAML lets the last one silently win)."""


def _unique_mapping(loader: UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    first_line: dict = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if isinstance(key, (str, int, float, bool)) and key in first_line:
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"key {key!r} is given twice (first on line {first_line[key]}); keep one",
                key_node.start_mark,
            )
        first_line[key] = key_node.start_mark.line + 1
    return loader.construct_mapping(node, deep=deep)


UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def load_yaml(text: str):
    """Parse YAML text, refusing duplicate keys."""
    return yaml.load(text, Loader=UniqueKeyLoader)


def resolve_config(name_or_path: str | None) -> tuple[str, str]:
    """(text, name) of a config file path or of a bundled config (``quick``, ``fashion-mnist``, ...)."""
    text = name_or_path or configs.DEFAULT
    path = Path(text)
    if path.is_file():
        try:
            return path.read_text(encoding="utf-8"), path.stem
        except OSError as exc:
            raise UserError(f"config {path} cannot be read: {exc.strerror}") from None
        except UnicodeDecodeError as exc:
            raise UserError(
                f"config {path} is not a text (UTF-8) file (byte {exc.start} is not text); give the "
                "path of a YAML config"
            ) from None
    if path.is_dir():
        raise UserError(
            f"config {path} is a folder; give the path of a YAML config file in it (or a bundled config name)"
        )
    bundled = configs.bundled()
    if text in bundled:
        return bundled[text].read_text(), text
    raise UserError(
        f"config {text!r} not found: give a YAML file path or a bundled config ({', '.join(sorted(bundled))})"
    )


def read_yaml(text: str, source: str) -> dict:
    """A config's YAML text as a mapping; malformed YAML or another type is refused naming ``source``."""
    try:
        data = load_yaml(text)
    except yaml.YAMLError as exc:
        raise UserError(f"config {source} is not valid YAML: {' '.join(str(exc).split())}") from None
    if not isinstance(data, dict):
        raise UserError(f"config {source} must be a YAML mapping of fields (name, datasets, ...)")
    return data


def apply_overrides(data: dict, overrides: list[str], schema: type = BenchConfig) -> dict:
    """Apply ``key.sub=value`` overrides (values parsed as YAML) to a copy of ``data``; a key that
    names no field of the schema is refused."""
    data = copy.deepcopy(data)
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise UserError(f"--set {item!r}: expected key=value, e.g. --set seeds=1")
        try:
            check_path(schema, key)
        except UserError as exc:
            raise UserError(f"--set {item!r}: {exc}") from None
        try:
            value = load_yaml(text)
        except yaml.YAMLError as exc:
            raise UserError(
                f"--set {item!r}: value is not valid YAML ({' '.join(str(exc).split())})"
            ) from None
        node = data
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise UserError(f"--set {item!r}: {part} is not a mapping")
        node[leaf] = value
    return data


def load_config(name_or_path: str | None = None, overrides: list[str] = ()) -> BenchConfig:
    """Read, override and validate a config; any problem raises UserError naming the field."""
    text, name = resolve_config(name_or_path)
    source = name_or_path or configs.DEFAULT
    return parse_config(apply_overrides(read_yaml(text, source), list(overrides)), default_name=name)


def parse_config(data: dict, default_name: str = "custom", schema: type = BenchConfig) -> BenchConfig:
    """Validate plain config data into a BenchConfig (or another ``schema`` of the same kind)."""
    if not isinstance(data, dict):
        raise UserError("config must be a mapping of fields (name, datasets, ...)")
    load_registries()  # the built-ins and the installed entry-point plugins
    if "name" in data and data["name"] is None:  # `name:` or `--set name=`: an empty name, not the default
        raise UserError(
            "config field name: empty; give the run a name (letters, digits, '.', '_' and '-') or "
            "leave the field out to use the config file's name"
        )
    if "name" not in data:
        data = {**data, "name": default_name}
    data = {**data, "name": str(data["name"])}
    config = parse_section(schema, data)
    check_budget(config.budget)
    check_unlabelled_use(config)
    check_executor(config.executor)
    return config


def check_budget(budget: BudgetSpec) -> None:
    """Refuse ``steps: auto`` beside a ``scale`` other than 1 (auto chooses the steps itself)."""
    if budget.steps == "auto" and budget.scale != 1:
        raise UserError(
            f"config field budget.scale: {budget.scale:g} together with budget.steps: auto; auto picks "
            "the steps itself, so leave scale at 1 (or set steps: recipe)"
        )


def check_executor(spec: ExecutorSpec) -> None:
    """Refuse an unknown executor, and a setting of another executor than the one named (it would
    be ignored: e.g. an address without executor.name ray)."""
    if spec.name != "auto":
        EXECUTORS.get(spec.name, field="config field executor.name")
    for name in EXECUTORS.names():
        settings = EXECUTORS.get(name).settings
        for f in dataclasses.fields(settings) if settings and name != spec.name else ():
            if getattr(spec, f.name) != f.default:
                raise UserError(
                    f"config field executor.{f.name}: a setting of the {name} executor, but "
                    f"executor.name is {spec.name}; set executor.name: {name} (--executor {name}) or "
                    f"drop it"
                )


def check_unlabelled_use(config: BenchConfig) -> None:
    """Refuse a strategy that learns from unlabelled images in a protocol that grants none."""
    if config.unlabelled.enabled:
        return
    for i, entry in enumerate(config.strategies):
        if STRATEGIES.get(entry.name).sees_unlabelled(entry.params):
            raise UserError(
                f"config field strategies[{i}] ({entry.label}): it learns from unlabelled images "
                "(generator_data: pool or pseudo-labelled, pseudo-label, fixmatch or an objective), but "
                "`unlabelled` is none; "
                "set unlabelled: pool (or a number of pool images, or {path: DIR})"
            )


def with_changes(config: BenchConfig, **sections: dict) -> BenchConfig:
    """A copy of ``config`` with fields of its sections replaced, e.g. ``quality={"enabled": False}``."""
    return dataclasses.replace(
        config,
        **{name: dataclasses.replace(getattr(config, name), **changes) for name, changes in sections.items()},
    )
