"""The executor interface: how ``run`` and ``tune`` hand out independent pieces of work.

An executor calls ``fn(item)`` for every item, in any order, and reports each start and each
result to the caller, who writes results as they arrive. Implementations register by name
(``serial``, ``process``: bench/execution/local.py; ``ray``: bench/execution/ray.py) and are
chosen by ``EXECUTORS.get(name)``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Hashable, Iterable, Iterator

from bench.core.errors import UserError
from bench.core.registry import Registry


class WorkerDied(UserError):
    """A worker process died (killed, out of memory) on every try of an item, and nobody asked
    to be told (no ``on_lost``)."""


@dataclass(frozen=True)
class Callbacks:
    """What the caller of ``map_unordered`` hears of each item, every part optional:
    ``on_start(item)`` as it starts, ``on_done(item, result)`` as it finishes,
    ``on_progress(item, text)`` for a line of progress from inside it (bench.core.progress), where
    the executor carries that, ``on_retry(item, reason)`` when its worker died and it is tried
    again, and ``on_lost(item, reason)`` when its worker died on every try (without one, the
    executor raises WorkerDied)."""

    on_start: Callable[[Any], None] | None = None
    on_done: Callable[[Any, Any], None] | None = None
    on_progress: Callable[[Any, str], None] | None = None
    on_retry: Callable[[Any, str], None] | None = None
    on_lost: Callable[[Any, str], None] | None = None

    def started(self, item: Any) -> None:
        if self.on_start:
            self.on_start(item)

    def finished(self, item: Any, result: Any) -> None:
        if self.on_done:
            self.on_done(item, result)

    def reported(self, item: Any, text: str) -> None:
        if self.on_progress:
            self.on_progress(item, text)

    def retried(self, item: Any, reason: str) -> None:
        if self.on_retry:
            self.on_retry(item, reason)

    def lost(self, item: Any, reason: str) -> None:
        if self.on_lost is None:
            raise WorkerDied(reason)
        self.on_lost(item, reason)


@dataclass(frozen=True)
class SharedWork:
    """Work that several items share (a replicate's evaluator, a generator's fit), done once per
    group before the items that need it. ``group(item)`` names the item's group (None: the item
    needs no such work); ``run(item, root)`` does the group's work inside the folder ``root``,
    which already holds the files of the item's earlier shared work."""

    name: str
    group: Callable[[Any], Hashable | None]
    run: Callable[[Any, Path], None]


class FolderTask(ABC):
    """A task whose shared work lives as files under one folder (a run folder's cache and samples).

    Local executors call it as it is: its items share ``root``, whose file cache does each piece of
    shared work once. An executor without a shared file system (``ray``) runs the ``shared_work``
    as tasks of their own, hands the files each one wrote to the tasks that need them, calls
    ``run_in`` with a folder of the worker's own, and writes the shared work's files into ``root``
    on the driver."""

    root: Path
    shared_work: tuple[SharedWork, ...] = ()

    def __call__(self, item: Any) -> Any:
        return self.run_in(item, Path(self.root))

    def work_units(self, item: Any) -> tuple:
        """What the shared work runs for: the item itself, or the parts of an item made of several
        (a cohort's cells), each with its own groups."""
        return (item,)

    @abstractmethod
    def run_in(self, item: Any, root: Path) -> Any:
        """The item's work with ``root`` as the folder of its files."""


class Executor(ABC):
    """Runs ``fn`` over items with ``workers`` workers of ``threads`` torch threads each
    (``threads`` None leaves torch's default). Every item runs with the same thread setting,
    whatever the executor, so that results do not depend on how the work was spread."""

    settings: ClassVar[type | None] = None  # a frozen dataclass of option() fields: its settings in the
    # config's `executor` section (see bench/execution/ray.py)

    def __init__(self, workers: int = 1, threads: int | None = 1):
        self.workers = max(1, workers)
        self.threads = threads

    @classmethod
    def configured(cls, settings: Any, workers: int, threads: int | None) -> "Executor":
        """The executor for a config's ``executor`` section (local executors need only the counts)."""
        return cls(workers=workers, threads=threads)

    @contextmanager
    def session(self) -> Iterator[None]:
        """Hold what the executor needs (a cluster) and check that it can run an item, raising
        UserError where it cannot; commands enter it before they claim a folder, and
        ``map_unordered`` inside it reuses it. The local executors need nothing."""
        yield

    def map_unordered(
        self, fn: Callable[[Any], Any], items: Iterable[Any], callbacks: Callbacks = Callbacks()
    ) -> None:
        """Call ``fn`` on each item, telling ``callbacks`` of each start, result and progress.
        Executors that run items in other processes retry an item whose worker died, then report
        it lost and go on. ``fn`` and the items must pickle for those executors. A ``fn`` that is a
        FolderTask may have its shared work run first (see FolderTask)."""
        self.run_items(fn, list(items), callbacks)

    @abstractmethod
    def run_items(self, fn: Callable[[Any], Any], items: list, callbacks: Callbacks) -> None:
        """``map_unordered``'s work, as each executor does it."""


EXECUTORS: Registry = Registry("executor")


def register_executor(name: str):
    """Class decorator: registers an Executor subclass under ``name``."""
    return EXECUTORS.register(name)
