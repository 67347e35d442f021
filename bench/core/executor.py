"""The executor interface: how ``run`` and ``tune`` hand out independent pieces of work.

An executor calls ``fn(item)`` for every item, in any order, and reports each start and each
result to the caller, who writes results as they arrive. Implementations register by name
(``serial``, ``process``: bench/executors.py; ``ray``: bench/executor_ray.py) and are chosen by ``EXECUTORS.get(name)``.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Callable, Iterable

from bench.core.errors import UserError
from bench.core.registry import Registry

OnStart = Callable[[Any], None]
OnDone = Callable[[Any, Any], None]
OnLost = Callable[[Any, str], None]  # (item, reason) for an item whose worker died on every try


class WorkerDied(UserError):
    """A worker process died (killed, out of memory) on every try of an item, and nobody asked
    to be told (no ``on_lost``)."""


class Executor(ABC):
    """Runs ``fn`` over items with ``workers`` workers of ``threads`` torch threads each
    (``threads`` None leaves torch's default). Every item runs with the same thread setting,
    whatever the executor, so that results do not depend on how the work was spread."""

    def __init__(self, workers: int = 1, threads: int | None = 1):
        self.workers = max(1, workers)
        self.threads = threads

    @classmethod
    def configured(cls, settings: Any, workers: int, threads: int | None) -> "Executor":
        """The executor for a config's ``executor`` section (local executors need only the counts)."""
        return cls(workers=workers, threads=threads)

    @abstractmethod
    def map_unordered(self, fn: Callable[[Any], Any], items: Iterable[Any],
                      on_start: OnStart | None = None, on_done: OnDone | None = None,
                      on_lost: OnLost | None = None) -> None:
        """Call ``fn`` on each item; ``on_start(item)`` as it starts, ``on_done(item, result)`` as
        it finishes (in the calling process). Executors that run items in other processes retry
        an item whose worker died, then report it with ``on_lost(item, reason)`` (raising
        WorkerDied without one) and go on. ``fn`` and the items must pickle for those executors."""


EXECUTORS: Registry = Registry("executor")


def register_executor(name: str):
    """Class decorator: registers an Executor subclass under ``name``."""
    return EXECUTORS.register(name)
