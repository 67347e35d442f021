"""Augmentation strategies, registered by name in ``bench.core.STRATEGIES``. A new strategy is one
new module in this package: importing the package imports (and so registers) every module."""

import importlib
import pkgutil

from bench.core.strategy import STRATEGIES

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["STRATEGIES"]
