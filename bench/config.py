"""Benchmark protocols: YAML validated into frozen dataclasses, with ``--set key=value`` overrides."""
from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bench.data import DATASETS, DatasetSpec
from bench.errors import UserError
from bench.models import CLASSIFIERS
from bench.splits import SplitSpec

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
DEFAULT_CONFIG = "quick"
TOP_LEVEL_KEYS = {"name", "datasets", "regimes", "split", "strategies", "classifiers", "seeds",
                  "budget", "device", "workers", "eval_points", "quality", "tune"}


@dataclass(frozen=True)
class StrategyEntry:
    """One strategy column of the grid: a registered strategy with resolved params and a label."""

    name: str
    label: str
    params: dict[str, Any]


@dataclass(frozen=True)
class QualitySpec:
    """Synthetic-data quality settings (see bench/quality.py)."""

    enabled: bool = True
    samples: int = 500  # images per side for FID/KID/IS/PR (capped by the test set's size)
    inception_weights: str | None = None  # torch-fidelity `inception-v3-compat` state dict file


@dataclass(frozen=True)
class TuneSpec:
    """`augbench tune` settings: the trial budget of every study and the seeds per trial."""

    trials: int = 8
    seeds: int = 1


@dataclass(frozen=True)
class BenchConfig:
    name: str
    datasets: tuple[DatasetSpec, ...]
    regimes: tuple[int | None, ...]  # images per class; None means all
    split: SplitSpec
    strategies: tuple[StrategyEntry, ...]
    classifiers: tuple[str, ...]
    seeds: int
    budget_scale: float
    eval_points: int
    device: str  # auto, cpu or cuda
    workers: int  # 0 = automatic
    quality: QualitySpec
    tune: TuneSpec
    raw: dict  # the resolved config as plain data, saved with every run

    @property
    def fingerprint(self) -> str:
        """Hash of the resolved config (less ``workers`` and ``tune``, which change no run result):
        a run folder holds results of exactly one config."""
        protocol = {k: v for k, v in self.raw.items() if k not in ("workers", "tune")}
        return hashlib.sha256(canonical_json(protocol).encode()).hexdigest()[:16]


def canonical_json(data: Any) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)


def resolve_config_path(name_or_path: str | None) -> Path:
    """A path, or the name of a bundled config in configs/ (``quick``, ``fashion-mnist``)."""
    text = name_or_path or DEFAULT_CONFIG
    path = Path(text)
    if path.is_file():
        return path
    bundled = CONFIG_DIR / f"{text}.yaml"
    if bundled.is_file():
        return bundled
    known = ", ".join(sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")))
    raise UserError(f"config {text!r} not found: give a YAML file path or a bundled config ({known})")


def read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise UserError(f"config {path} is not valid YAML: {exc}") from None
    except OSError as exc:
        raise UserError(f"config {path} cannot be read: {exc.strerror}") from None
    if not isinstance(data, dict):
        raise UserError(f"config {path} must be a YAML mapping of fields (name, datasets, ...)")
    return data


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply ``key.sub=value`` overrides (values parsed as YAML) to a copy of ``data``."""
    data = copy.deepcopy(data)
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise UserError(f"--set {item!r}: expected key=value, e.g. --set seeds=1")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise UserError(f"--set {item!r}: value is not valid YAML ({exc})") from None
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
    path = resolve_config_path(name_or_path)
    return parse_config(apply_overrides(read_yaml(path), list(overrides)), default_name=path.stem)


# ------------------------------------------------------------------ field validation
def _int(value: Any, field: str, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise UserError(f"config field {field}: expected an integer, got {value!r}")
    if value < low or (high is not None and value > high):
        bound = f"[{low}, {high}]" if high is not None else f">= {low}"
        raise UserError(f"config field {field}: {value} is out of range (must be {bound})")
    return value


def _float(value: Any, field: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UserError(f"config field {field}: expected a number, got {value!r}")
    if not (low <= value <= high):
        raise UserError(f"config field {field}: {value} is out of range [{low}, {high}]")
    return float(value)


def _list(value: Any, field: str) -> list:
    if isinstance(value, (str, int, dict)):
        value = [value]
    if not isinstance(value, list) or not value:
        raise UserError(f"config field {field}: expected a non-empty list")
    return value


def _dataset(item: Any, field: str) -> DatasetSpec:
    if isinstance(item, str):
        item = {"name": item}
    if not isinstance(item, dict) or "name" not in item:
        raise UserError(f"config field {field}: expected a data set name or {{name: ..., root: ...}}")
    unknown = set(item) - {"name", "root", "download"}
    if unknown:
        raise UserError(f"config field {field}: unknown key(s) {', '.join(sorted(unknown))} "
                        "(known: name, root, download)")
    DATASETS.get(item["name"], field=f"config field {field}")
    return DatasetSpec(item["name"], item.get("root"), bool(item.get("download", False)))


def _regime(value: Any, field: str) -> int | None:
    if value == "all":
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(f"config field {field}: expected a positive number of images per class or 'all', "
                        f"got {value!r}")
    return value


def _strategy(item: Any, field: str) -> StrategyEntry:
    from strategies import STRATEGIES

    if isinstance(item, str):
        item = {"name": item}
    if not isinstance(item, dict) or "name" not in item:
        raise UserError(f"config field {field}: expected a strategy name or {{name: ..., params: {{...}}}}")
    unknown = set(item) - {"name", "label", "params"}
    if unknown:
        raise UserError(f"config field {field}: unknown key(s) {', '.join(sorted(unknown))} "
                        "(known: name, label, params)")
    cls = STRATEGIES.get(item["name"], field=f"config field {field}")
    given = item.get("params") or {}
    if not isinstance(given, dict):
        raise UserError(f"config field {field}.params: expected a mapping of parameter: value")
    params = cls.resolve_params(given, f"config field {field}.params")
    label = item.get("label") or item["name"]
    return StrategyEntry(item["name"], str(label), params)


def _quality(data: Any) -> QualitySpec:
    if not isinstance(data, dict) or set(data) - {"enabled", "samples", "inception_weights"}:
        raise UserError("config field quality: expected a mapping with enabled, samples, inception_weights")
    weights = data.get("inception_weights")
    if weights is not None and not Path(str(weights)).is_file():
        raise UserError(f"config field quality.inception_weights: {weights} does not exist; give the path of "
                        "torch-fidelity `inception-v3-compat` weights, or leave it out")
    return QualitySpec(enabled=bool(data.get("enabled", True)),
                       samples=_int(data.get("samples", 500), "quality.samples", 20, 100_000),
                       inception_weights=None if weights is None else str(weights))


def _tune(data: Any) -> TuneSpec:
    if not isinstance(data, dict) or set(data) - {"trials", "seeds"}:
        raise UserError("config field tune: expected a mapping with trials, seeds")
    return TuneSpec(trials=_int(data.get("trials", 8), "tune.trials", 1, 100_000),
                    seeds=_int(data.get("seeds", 1), "tune.seeds", 1, 100))


def parse_config(data: dict, default_name: str = "custom") -> BenchConfig:
    """Validate plain config data into a BenchConfig."""
    unknown = set(data) - TOP_LEVEL_KEYS
    if unknown:
        raise UserError(f"config: unknown field(s) {', '.join(sorted(unknown))}; "
                        f"known: {', '.join(sorted(TOP_LEVEL_KEYS))}")
    for required in ("datasets", "strategies", "classifiers"):
        if required not in data:
            raise UserError(f"config: missing field {required}")
    datasets = tuple(_dataset(d, f"datasets[{i}]") for i, d in enumerate(_list(data["datasets"], "datasets")))
    regimes = tuple(_regime(r, f"regimes[{i}]") for i, r in enumerate(_list(data.get("regimes", ["all"]), "regimes")))
    split_data = data.get("split") or {}
    if not isinstance(split_data, dict) or set(split_data) - {"seed", "val_per_class", "test_fraction"}:
        raise UserError("config field split: expected a mapping with seed, val_per_class, test_fraction")
    split = SplitSpec(
        seed=_int(split_data.get("seed", 0), "split.seed", 0),
        val_per_class=_int(split_data.get("val_per_class", 50), "split.val_per_class", 1),
        test_fraction=_float(split_data.get("test_fraction", 0.3), "split.test_fraction", 0.05, 0.9),
    )
    strategies = tuple(_strategy(s, f"strategies[{i}]") for i, s in enumerate(_list(data["strategies"], "strategies")))
    labels = [s.label for s in strategies]
    duplicated = sorted({lab for lab in labels if labels.count(lab) > 1})
    if duplicated:
        raise UserError(f"config field strategies: label(s) {', '.join(duplicated)} used twice; give each "
                        "entry its own `label`")
    classifiers = tuple(str(c) for c in _list(data["classifiers"], "classifiers"))
    for i, name in enumerate(classifiers):
        CLASSIFIERS.get(name, field=f"config field classifiers[{i}]")
    budget = data.get("budget") or {}
    if not isinstance(budget, dict) or set(budget) - {"scale"}:
        raise UserError("config field budget: expected a mapping with `scale` (a multiplier of each recipe's steps)")
    quality = _quality(data.get("quality") or {})
    device = data.get("device", "auto")
    if device not in ("auto", "cpu", "cuda"):
        raise UserError(f"config field device: {device!r} is not one of auto, cpu, cuda")
    config = BenchConfig(
        name=str(data.get("name", default_name)),
        datasets=datasets,
        regimes=regimes,
        split=split,
        strategies=strategies,
        classifiers=classifiers,
        seeds=_int(data.get("seeds", 3), "seeds", 1, 100),
        budget_scale=_float(budget.get("scale", 1.0), "budget.scale", 0.001, 100.0),
        eval_points=_int(data.get("eval_points", 10), "eval_points", 1, 1000),
        device=device,
        workers=_int(data.get("workers", 0), "workers", 0, 256),
        quality=quality,
        tune=_tune(data.get("tune") or {}),
        raw={},
    )
    raw = {
        "name": config.name,
        "datasets": [vars(d) for d in datasets],
        "regimes": ["all" if r is None else r for r in regimes],
        "split": vars(split),
        "strategies": [{"name": s.name, "label": s.label, "params": s.params} for s in strategies],
        "classifiers": list(classifiers),
        "seeds": config.seeds,
        "budget": {"scale": config.budget_scale},
        "eval_points": config.eval_points,
        "device": device,
        "workers": config.workers,
        "quality": vars(quality),
        "tune": vars(config.tune),
    }
    object.__setattr__(config, "raw", raw)
    return config
