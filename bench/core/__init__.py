"""The core every layer shares: image sets, the strategy contract (params, fit context, training
data), registries, errors, seeding, keys, atomic files, config metadata and the executor
interface. It imports nothing of augbench above it.

Plugin authors import from here, e.g. ``from bench.core import Param, Strategy, TrainingData,
register_strategy``.
"""
from bench.core.errors import CellFailed, UserError
from bench.core.executor import EXECUTORS, Executor, register_executor
from bench.core.images import ImageSet, content_hash
from bench.core.registry import Registry
from bench.core.seeding import derive_seed, seeded
from bench.core.strategy import (STRATEGIES, BatchTransform, FitContext, Param, Strategy, TrainingData,
                                 register_strategy)

__all__ = ["CellFailed", "UserError", "EXECUTORS", "Executor", "register_executor", "ImageSet", "content_hash",
           "Registry", "derive_seed", "seeded", "STRATEGIES", "BatchTransform", "FitContext", "Param", "Strategy",
           "TrainingData", "register_strategy"]
