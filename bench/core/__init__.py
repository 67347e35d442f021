"""The core every layer shares: image sets, the strategy contract (params, fit context, training
data), registries, errors, seeding, keys, atomic files, config metadata and the executor
interface. It imports nothing of augbench above it.

Plugin authors import from here, e.g. ``from bench.core import Param, Strategy, TrainingData,
register_strategy``. The names load on first use (PEP 562), so that importing a light module such
as ``bench.core.errors`` does not import torch: the CLI's --help and --version stay fast.
"""

import importlib

_EXPORTS = {
    "CellFailed": "errors",
    "UserError": "errors",
    "EXECUTORS": "executor",
    "Executor": "executor",
    "register_executor": "executor",
    "ImageSet": "images",
    "content_hash": "images",
    "Registry": "registry",
    "derive_seed": "seeding",
    "seeded": "seeding",
    "STRATEGIES": "strategy",
    "BatchTransform": "strategy",
    "FitContext": "strategy",
    "Param": "strategy",
    "Strategy": "strategy",
    "TrainingData": "strategy",
    "register_strategy": "strategy",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
