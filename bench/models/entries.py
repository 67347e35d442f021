"""Config entries of the classifier suite: the `classifiers` list (suite names, or configured
entries such as a timm model with its own recipe)."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Any

from bench.core.errors import UserError
from bench.core.schema import as_list, check_number, named_entry, refuse_repeats
from bench.models.suite import CLASSIFIERS, OPTIMIZERS, ClassifierEntry, Recipe

RECIPE_FIELDS = {f.name: f.type for f in dataclasses.fields(Recipe)}
# (low, high) of a recipe's numbers
RECIPE_BOUNDS = {
    "lr": (1e-12, None),
    "weight_decay": (0, None),
    "batch_size": (1, None),
    "epochs": (0, None),
    "min_steps": (1, None),
    "label_smoothing": (0, 1),
}


def _recipe(value: Any, base: Recipe, where: str) -> Recipe:
    """A recipe from a mapping of Recipe fields over ``base``; unknown fields or bad values refused."""
    if not isinstance(value, dict):
        raise UserError(f"config field {where}: expected a mapping of {', '.join(RECIPE_FIELDS)}")
    unknown = sorted(set(value) - set(RECIPE_FIELDS))
    if unknown:
        raise UserError(
            f"config field {where}: unknown field(s) {', '.join(unknown)} (known: {', '.join(RECIPE_FIELDS)})"
        )
    if value.get("optimizer", base.optimizer) not in OPTIMIZERS:
        raise UserError(
            f"config field {where}.optimizer: {value['optimizer']!r} is not one of {', '.join(OPTIMIZERS)}"
        )
    checked = {
        name: check_number(v, f"config field {where}.{name}", type(getattr(base, name)), *RECIPE_BOUNDS[name])
        for name, v in value.items()
        if name in RECIPE_BOUNDS
    }
    return dataclasses.replace(base, **{**value, **checked})


def _refuse_missing(missing: list[str] | tuple[str, ...], name: str, where: str) -> None:
    """Refuse a classifier entry without the options its classifier requires (``missing``)."""
    if missing:
        given = ", ".join(f"{k}: ..." for k in missing)
        raise UserError(f"config field {where}: the {name} classifier needs {{name: {name}, {given}}}")


def _classifier(item: Any, where: str) -> ClassifierEntry:
    if isinstance(item, str):
        _refuse_missing(CLASSIFIERS.get(item, field=f"config field {where}").required, item, where)
        return ClassifierEntry(item, item)
    name = item.get("name") if isinstance(item, dict) else None
    options = CLASSIFIERS.get(name).options if name in CLASSIFIERS.names() else ()
    item = named_entry(item, where, "classifier", ("name", "label", "recipe", *options))
    spec = CLASSIFIERS.get(str(name), field=f"config field {where}")
    chosen = tuple(sorted((k, item[k]) for k in options if k in item))
    _refuse_missing([k for k in spec.required if k not in item], name, where)
    weights = dict(chosen).get("pretrained")
    if weights is not None and not Path(str(weights)).is_file():
        raise UserError(
            f"config field {where}.pretrained: {weights} does not exist; give a local weights file"
        )
    recipe = _recipe(item["recipe"], spec.recipe, f"{where}.recipe") if "recipe" in item else None
    label = str(item.get("label") or (f"{name}-{item['model']}" if "model" in item else name))
    entry = ClassifierEntry(
        label,
        str(name),
        chosen,
        recipe,
        hashlib.sha256(Path(weights).read_bytes()).hexdigest() if weights else "",
    )
    if spec.built_at_load:
        entry.build((1, 8, 8), 2)  # a missing library or an unknown model fails here, not in a cell
    return entry


def parse_classifiers(value: Any, where: str) -> tuple[ClassifierEntry, ...]:
    """The `classifiers` field: suite names or configured entries, each label once."""
    entries = tuple(_classifier(c, f"{where}[{i}]") for i, c in enumerate(as_list(value, where)))
    refuse_repeats([e.label for e in entries], where, "classifier(s)")
    return entries


def classifiers_plain(entries: tuple[ClassifierEntry, ...]) -> list:
    """Suite classifiers as their names (so existing fingerprints stay), configured ones as mappings."""
    return [
        e.name
        if e.label == e.name and not e.options and e.recipe is None
        else {
            "name": e.name,
            "label": e.label,
            **dict(e.options),
            **({"recipe": dataclasses.asdict(e.recipe)} if e.recipe else {}),
        }
        for e in entries
    ]
