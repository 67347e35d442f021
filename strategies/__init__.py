"""Augmentation strategies, registered by name. A new strategy is one new module in this package."""
import importlib
import pkgutil

from strategies.base import (STRATEGIES, BatchTransform, FitContext, Param, Strategy, TrainingData,
                             register_strategy)

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "base":
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["STRATEGIES", "BatchTransform", "FitContext", "Param", "Strategy", "TrainingData",
           "register_strategy"]
