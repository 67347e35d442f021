"""Plugins: modules that register data sets, strategies, classifiers or policies with the usual
decorators, named in a config (``plugins: [my_package.augmentations]``) or installed under the
entry-point group ``augbench.plugins``. Loading is idempotent, so every worker process can load
what the config names before it runs a cell."""

from __future__ import annotations

import importlib
from importlib import metadata

from bench.core.errors import UserError

ENTRY_POINT_GROUP = "augbench.plugins"
_entry_points_loaded = False


def load_plugins(modules: tuple[str, ...] | list[str] = ()) -> None:
    """Import the installed entry-point plugins (once) and the named modules; a module that does
    not import is a UserError showing its error."""
    global _entry_points_loaded
    if not _entry_points_loaded:
        _entry_points_loaded = True
        for entry in metadata.entry_points(group=ENTRY_POINT_GROUP):
            _import(entry.value.split(":")[0], f"entry point {entry.name} ({entry.value})")
    for module in modules:
        _import(module, f"plugin {module}")


def _import(module: str, what: str) -> None:
    try:
        importlib.import_module(module)
    except Exception as exc:  # noqa: BLE001 - any failure of a user's module is reported, not raised
        raise UserError(
            f"{what} does not import: {type(exc).__name__}: {exc}; fix the module or leave it out "
            "of `plugins`"
        ) from None


def origin(obj: object) -> str:
    """'' for augbench's own registrations, else ' (from <module>)'."""
    module = getattr(obj, "__module__", "") or ""
    return "" if module.split(".")[0] in ("bench", "strategies", "reports") else f"  (from {module})"
