"""Registration in one place. Importing this module registers every built-in component (the
strategies, the data sets read from disk, the local and Ray executors; the suite's classifiers,
policies and built-in data sets register where they are defined, below); ``load_registries`` adds
the installed entry-point plugins and the config's plugin modules. Every process of every command
goes through it: the config's parser before it reads a field, and every worker before its first
item (see ``bench.run.tasks``)."""

from __future__ import annotations

import strategies  # noqa: F401 - the built-in strategies (strategies/__init__.py imports each module)
from bench.core.plugins import load_plugins
from bench.data import files  # noqa: F401 - imagefolder, npz, medmnist
from bench.execution import local, ray  # noqa: F401 - serial, process, ray

__all__ = ["load_registries"]


def load_registries(plugins: tuple[str, ...] | list[str] = ()) -> None:
    """Make every built-in and plugin component known in this process (idempotent)."""
    load_plugins(plugins)
