"""Config sections as frozen dataclasses whose fields carry their own default, range, help text and
identity. Parsing, ``--set`` paths, ``augbench list``, cell keys, run fingerprints and the
leaderboard's protocol check are all derived from this metadata, so a new field is one line.

Identity roles of a field (top-level fields of the protocol):
- ``cell``: it changes a cell's result, so it enters every cell's key;
- ``fingerprint``: it enters the run folder's fingerprint (a folder holds one config);
- ``protocol``: runs ranked together on one leaderboard must agree on it.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterator

from bench.core.errors import UserError

MISSING = dataclasses.MISSING
ROLES = ("cell", "fingerprint", "protocol")


def option(
    default: Any = MISSING,
    *,
    help: str,
    low: float | None = None,
    high: float | None = None,
    choices: tuple[str, ...] | None = None,
    parse: Callable[[Any, str], Any] | None = None,
    plain: Callable[[Any], Any] | None = None,
    cell: bool = False,
    fingerprint: bool = True,
    protocol: bool = False,
    flatten: bool = False,
    quiet: bool = False,
    result: bool = True,
) -> Any:
    """A config field: its default (MISSING = required), inclusive ``low``/``high`` for numbers,
    ``choices`` for strings, or ``parse(value, where)`` for composite values with ``plain(value)``
    turning the parsed value back into plain data; its identity roles (see the module docstring);
    ``flatten`` puts a section's fields into a cell key as ``<section>_<field>``; a ``quiet`` field is
    left out of every identity while it holds its default (a field added later leaves the keys,
    fingerprints and protocols of earlier configs as they were). Inside a section, ``result=False``
    keeps a field that changes no cell's result (how results are checked or read) out of the cell
    keys that the section enters."""
    metadata = dict(
        help=help,
        low=low,
        high=high,
        choices=choices,
        parse=parse,
        plain=plain,
        cell=cell,
        fingerprint=fingerprint,
        protocol=protocol,
        flatten=flatten,
        quiet=quiet,
        result=result,
    )
    return dataclasses.field(default=default, metadata=metadata)


def section(cls: type, *, help: str, **roles: bool) -> Any:
    """A nested config section (a dataclass of ``option`` fields), all defaults when absent."""
    metadata = dict(help=help, section=cls, cell=False, fingerprint=True, protocol=False, flatten=False)
    metadata.update(roles)
    return dataclasses.field(default_factory=cls, metadata=metadata)


def _has_default(f: dataclasses.Field) -> bool:
    return f.default is not MISSING or f.default_factory is not MISSING


def _default(f: dataclasses.Field) -> Any:
    return f.default if f.default is not MISSING else f.default_factory()


def check_number(
    value: Any, where: str, kind: type = float, low: float | None = None, high: float | None = None
) -> Any:
    """The one check of a configured number: ``kind`` (int or float, never a bool) within the
    inclusive bounds; returns it as ``kind``. ``where`` names the field in the error."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or (kind is int and value != int(value))
    ):
        raise UserError(f"{where}: expected {'an integer' if kind is int else 'a number'}, got {value!r}")
    if (low is not None and value < low) or (high is not None and value > high):
        bound = f"[{low}, {high}]" if high is not None else f">= {low}"
        raise UserError(f"{where}: {value!r} is out of range (must be {bound})")
    return kind(value)


def as_list(value: Any, where: str) -> list:
    """A non-empty list field; a single name or mapping stands for a list of one."""
    if isinstance(value, (str, int, dict)):
        value = [value]
    if not isinstance(value, list) or not value:
        raise UserError(f"config field {where}: expected a non-empty list")
    return value


def named_entry(item: Any, where: str, what: str, keys: tuple[str, ...]) -> dict:
    """A list entry given as a name or as a mapping with ``name`` and some of ``keys``."""
    if isinstance(item, str):
        item = {"name": item}
    if not isinstance(item, dict) or "name" not in item:
        raise UserError(f"config field {where}: expected a {what} name or {{name: ..., {keys[1]}: ...}}")
    unknown = set(item) - set(keys)
    if unknown:
        raise UserError(
            f"config field {where}: unknown key(s) {', '.join(sorted(unknown))} (known: {', '.join(keys)})"
        )
    return item


def refuse_repeats(names: list[str], where: str, what: str) -> None:
    """Refuse a list that names one thing twice."""
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise UserError(f"config field {where}: {what} {', '.join(repeated)} given twice; list each once")


def parse_value(f: dataclasses.Field, value: Any, where: str) -> Any:
    """Validate one field's plain value into its typed value; bad input raises UserError."""
    meta = f.metadata
    if "section" in meta:
        return parse_section(meta["section"], value, where)
    if meta["parse"] is not None:
        return meta["parse"](value, where)
    return check_plain(
        value, f"config field {where}", _default(f), meta["choices"], meta["low"], meta["high"]
    )


def check_plain(
    value: Any, where: str, default: Any, choices: tuple | None = None, low=None, high=None
) -> Any:
    """A value of its default's kind (config fields and strategy params alike): one of ``choices``,
    true or false, a number in [low, high], or text; bad input raises UserError naming ``where``."""
    if choices is not None:
        if value not in choices:
            raise UserError(f"{where}: {value!r} is not one of {', '.join(choices)}")
        return value
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise UserError(f"{where}: expected true or false, got {value!r}")
        return value
    if isinstance(default, (int, float)):
        return check_number(value, where, type(default), low, high)
    if not isinstance(value, str):
        raise UserError(f"{where}: expected text, got {value!r}")
    return value


def parse_section(cls: type, data: Any, where: str = "") -> Any:
    """Build section ``cls`` from a mapping: unknown names, missing required fields and bad values
    raise UserError naming the field."""
    names = [f.name for f in dataclasses.fields(cls)]
    label = f"config field {where}" if where else "config"
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserError(f"{label}: expected a mapping with {', '.join(names)}")
    unknown = sorted(set(map(str, data)) - set(names))
    if unknown:
        raise UserError(f"{label}: unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}")
    values = {}
    for f in dataclasses.fields(cls):
        path = f"{where}.{f.name}" if where else f.name
        if f.name in data:
            values[f.name] = parse_value(f, data[f.name], path)
        elif not _has_default(f):
            raise UserError(f"config: missing field {path}")
    return cls(**values)


def plain_value(f: dataclasses.Field, value: Any) -> Any:
    """A field's typed value as plain data (what YAML and keys hold)."""
    if f.metadata.get("plain") is not None:
        return f.metadata["plain"](value)
    return to_plain(value)


def to_plain(obj: Any) -> Any:
    """Sections, specs, tuples and lists as plain dicts and lists, in field order."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: plain_value(f, getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (tuple, list)):
        return [to_plain(item) for item in obj]
    if isinstance(obj, dict):
        return {k: to_plain(v) for k, v in obj.items()}
    return obj


def section_identity(section_value: Any, role: str) -> dict:
    """The plain values of a section's fields as they enter ``role``: a quiet field at its default
    is left out, and so, in cell keys, is a field that changes no result (``result=False``)."""
    found = {}
    for f in dataclasses.fields(section_value):
        value = plain_value(f, getattr(section_value, f.name))
        if f.metadata.get("quiet") and value == plain_value(f, _default(f)):
            continue
        if role == "cell" and not f.metadata.get("result", True):
            continue
        found[f.name] = value
    return found


def identity(obj: Any, role: str) -> dict:
    """The plain values of ``obj``'s fields that play ``role`` (cell, fingerprint or protocol)."""
    assert role in ROLES, role
    found = {}
    for f in dataclasses.fields(obj):
        if not f.metadata.get(role):
            continue
        value = getattr(obj, f.name)
        value = section_identity(value, role) if "section" in f.metadata else plain_value(f, value)
        if f.metadata.get("quiet") and value == plain_value(f, _default(f)):
            continue
        if role == "cell" and f.metadata.get("flatten"):
            found.update({f"{f.name}_{name}": item for name, item in value.items()})
        else:
            found[f.name] = value
    return found


def role_fields(cls: type, role: str) -> tuple[str, ...]:
    """Names of the top-level fields of ``cls`` that play ``role``."""
    return tuple(f.name for f in dataclasses.fields(cls) if f.metadata.get(role))


def check_path(cls: type, path: str) -> None:
    """Raise UserError unless ``path`` (``a.b``) names a field of ``cls`` or of one of its sections."""
    node, done = cls, []
    for part in path.split("."):
        if node is None:
            raise UserError(
                f"config field {'.'.join(done)} has no sub-fields; set it as a whole, "
                f"e.g. --set '{'.'.join(done)}=[...]'"
            )
        known = {f.name: f for f in dataclasses.fields(node)}
        if part not in known:
            where = f"{'.'.join(done)} " if done else ""
            raise UserError(
                f"unknown config field {'.'.join(done + [part])}; {where}fields: {', '.join(sorted(known))}"
            )
        done.append(part)
        node = known[part].metadata.get("section")


def describe(cls: type, prefix: str = "") -> Iterator[tuple[str, str, str]]:
    """(path, default and range, help) for every field, sections expanded."""
    for f in dataclasses.fields(cls):
        path = f"{prefix}{f.name}"
        meta = f.metadata
        if "section" in meta:
            yield from describe(meta["section"], f"{path}.")
            continue
        default = "(required)" if not _has_default(f) else repr(plain_value(f, _default(f)))
        if meta["choices"] is not None:
            default += f"  ({', '.join(meta['choices'])})"
        elif meta["low"] is not None:
            default += f"  [{meta['low']}, {meta['high'] if meta['high'] is not None else '...'}]"
        yield path, default, meta["help"]
