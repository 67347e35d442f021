"""Config entries of the data layer: the `datasets` list and the `regimes` list."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.core.errors import UserError
from bench.core.schema import as_list, check_number, named_entry, refuse_repeats
from bench.data.sets import DATASETS, DatasetEntry
from bench.data.splits import LongTail, Regime


def _dataset(item: Any, where: str) -> DatasetEntry:
    name = item.get("name") if isinstance(item, dict) else item
    load = DATASETS.get(str(name), field=f"config field {where}")
    item = named_entry(item, where, "data set", ("name", "root", "download", "label", *load.options))
    options = tuple(sorted((key, item[key]) for key in load.options if key in item))
    source = item.get("root") or dict(options).get("path")
    default = f"{name}:{Path(str(source)).stem}" if source and load.options else str(name)
    if dict(options).get("flag"):
        default = f"{name}:{dict(options)['flag']}"
    label = item.get("label") or default
    if not isinstance(label, str):
        raise UserError(f"config field {where}.label: expected text, got {label!r}")
    return DatasetEntry(str(name), item.get("root"), bool(item.get("download", False)), options, label)


def datasets_plain(specs: tuple[DatasetEntry, ...]) -> list[dict]:
    """Each data set as plain data; options and a label only where given, so that the fingerprints
    of configs naming built-in data sets stay what they were."""
    plain = []
    for spec in specs:
        entry = {"name": spec.name, "root": spec.root, "download": spec.download, **dict(spec.options)}
        plain.append(entry | ({"label": spec.label} if spec.label != spec.name else {}))
    return plain


def parse_datasets(value: Any, where: str) -> tuple[DatasetEntry, ...]:
    """The `datasets` field: registered names or configured entries, each title once."""
    specs = tuple(_dataset(d, f"{where}[{i}]") for i, d in enumerate(as_list(value, where)))
    refuse_repeats([s.title for s in specs], where, "data set(s)")
    return specs


def _long_tail(value: dict, where: str) -> LongTail:
    unknown = sorted(set(value) - {"long_tail", "n_max"})
    if unknown or "n_max" not in value:
        raise UserError(
            f"config field {where}: a long-tailed regime is {{long_tail: IMBALANCE, n_max: N}} "
            f"(class i gets N * IMBALANCE^(-i/(K-1)) images), got {value!r}"
        )
    imbalance, n_max = value["long_tail"], value["n_max"]
    return LongTail(
        check_number(imbalance, f"config field {where}.long_tail", float, 1),
        check_number(n_max, f"config field {where}.n_max", int, 1),
    )


def _regime(value: Any, where: str) -> Regime:
    if value in ("all", "as-is"):  # every pool image, so a data set imbalanced on disk stays as it is
        return None
    if isinstance(value, dict):
        return _long_tail(value, where)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(
            f"config field {where}: expected a positive number of images per class, 'all' ('as-is'), "
            f"or {{long_tail: IMBALANCE, n_max: N}}, got {value!r}"
        )
    return value


def parse_regimes(value: Any, where: str) -> tuple[Regime, ...]:
    """The `regimes` field: labelled images per class, `all`, or a long tail, each once."""
    regimes = tuple(_regime(r, f"{where}[{i}]") for i, r in enumerate(as_list(value, where)))
    refuse_repeats([str(r) for r in regimes_plain(regimes)], where, "regime(s)")
    return regimes


def regimes_plain(regimes: tuple[Regime, ...]) -> list:
    """Each regime as the config writes it."""
    return [
        "all" if r is None else {"long_tail": r.imbalance, "n_max": r.n_max} if isinstance(r, LongTail) else r
        for r in regimes
    ]
