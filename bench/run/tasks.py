"""Running cells through an executor: the task a worker runs (with the work that cells share),
the number of workers, and the executor a config asks for."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from operator import attrgetter
from pathlib import Path
from typing import Callable, Iterable

import torch

from bench.core.cache import FileCache
from bench.core.errors import UserError
from bench.core.executor import EXECUTORS, Callbacks, Executor, FolderTask, SharedWork
from bench.protocol.config import BenchConfig, ExecutorSpec
from bench.quality.evaluator import evaluator
from bench.run.cell import Cell, Cohort, cells_of, data_of, make_strategy, work_items
from bench.run.stages import (
    cached_quality,
    error_records,
    fit_context,
    fit_strategy,
    lost_record,
    run_cohort,
)
from bench.run.store import RunStore


@dataclass(frozen=True)
class CellTask(FolderTask):
    """What a worker needs to run cells of one run: the device, the run folder (whose cache/ and
    samples/ hold the work cells share), the revision. Its ``shared_work`` is that work: an
    executor without a shared file system runs each piece once, before the cells that need it."""

    device_type: str
    root: Path
    revision: str

    @property
    def device(self) -> torch.device:
        return torch.device(self.device_type)

    @property
    def shared_work(self) -> tuple[SharedWork, ...]:
        return (
            SharedWork("evaluator", attrgetter("evaluator_group"), self.fit_evaluator),
            SharedWork("generator", attrgetter("generator_group"), self.fit_generator),
            SharedWork("quality", attrgetter("quality_group"), self.assess),
        )

    def work_units(self, item: Cell | Cohort) -> tuple[Cell, ...]:
        return cells_of(item)

    def run_in(self, item: Cell | Cohort, root: Path) -> dict | list[dict]:
        """A cell's record, or a cohort's records. What a cell's code raises (a bug in a strategy,
        or columns that a stage writes against their declarations: ``written_by``) costs that cell
        only (in a cohort too: ``run_cohort``): its record says ``error`` (``error_records``); bad
        input (UserError) still ends the run."""
        cells = cells_of(item)
        try:
            rows = run_cohort(cells, self.device, root / "cache", self.revision)
        except UserError:
            raise
        except Exception as exc:  # noqa: BLE001 - recorded as the cells' failure, with its traceback
            rows = error_records(cells, exc, self.revision)
        return rows if isinstance(item, Cohort) else rows[0]

    def fit_evaluator(self, cell: Cell, root: Path) -> None:
        """The replicate's quality evaluator, into ``root``'s cache."""
        with _left_to_the_cell():
            dataset, split = data_of(cell)
            evaluator(dataset, split, self.device, FileCache(root / "cache"), cell.budget_scale)

    def fit_generator(self, cell: Cell, root: Path) -> None:
        """The strategy's generator, or its stacked fit's, into ``root``'s cache (a failed fit
        is cached as failed, and recorded by the cells that need it)."""
        with _left_to_the_cell():
            dataset, split = data_of(cell)
            ctx = fit_context(cell, dataset, split, self.device, root / "cache")
            make_strategy(cell.strategy).generative_part().fit_generator(split.labelled, ctx)

    def assess(self, cell: Cell, root: Path) -> None:
        """The strategy's quality row and sample grid, into ``root``'s cache and samples."""
        with _left_to_the_cell():
            dataset, split = data_of(cell)
            data, _ = fit_strategy(cell, dataset, split, self.device, root / "cache")
            if data is not None:
                cached_quality(cell, dataset, split, data, self.device, root / "cache")


@contextlib.contextmanager
def _left_to_the_cell():
    """Shared work that fails is left undone: the cells that need it do it themselves and
    record the failure (a method's, or an error with its traceback). Bad input still ends the run."""
    try:
        yield
    except UserError:
        raise
    except Exception:  # noqa: BLE001 - the cell meets it again and records it
        pass


def default_workers(device: torch.device, per_gpu: int = 1) -> int:
    """On the CPU one single-threaded worker per core (at most 2); on CUDA ``per_gpu`` workers on
    each visible GPU (the process executor spreads them over the GPUs), at most one per core."""
    cores = os.cpu_count() or 1
    if device.type == "cuda":
        return max(1, min(per_gpu * torch.cuda.device_count(), cores))
    return max(1, min(2, cores))


def workers_for(config: BenchConfig, device: torch.device, items: int) -> int:
    """The config's workers (0: ``default_workers``), never more than the items to run."""
    return min(config.workers or default_workers(device, config.workers_per_gpu), max(1, items))


def make_executor(device: torch.device, workers: int, settings: ExecutorSpec | None = None) -> Executor:
    """The config's executor (``auto``: ``process`` for several workers, else ``serial``) with the
    run's thread policy: one torch thread per CPU worker, always."""
    settings = settings or ExecutorSpec()
    name = settings.name if settings.name != "auto" else ("process" if workers > 1 else "serial")
    return EXECUTORS.get(name, field="executor.name").configured(
        settings, workers=workers, threads=1 if device.type == "cpu" else None
    )


def execute(
    cells: Iterable[Cell],
    store: RunStore,
    device: torch.device,
    executor: Executor,
    revision: str,
    callbacks: Callbacks,
    grid: list[Cell] | None = None,
) -> None:
    """Run cells, in the cohorts that their cohort size forms in ``grid`` (default: the cells;
    ``cohorts``), writing each record as its work item finishes; ``callbacks`` hear of each cell
    (a lost cell's record is written and reported done). A cohort with a finished cell runs whole
    again, so that its members are those of the grid, and only its unfinished cells are written."""
    cells = list(cells)
    todo = {cell.key for cell in cells}
    items = work_items(grid or cells, todo)

    def each(call: Callable[..., None]) -> Callable[..., None]:
        """``call(cell, ...)`` made a call for a work item: once for each of its unfinished cells."""

        def for_item(item, *args) -> None:
            for cell in cells_of(item):
                if cell.key in todo:
                    call(cell, *args)

        return for_item

    def finished(item, result) -> None:
        records = result if isinstance(item, Cohort) else [result]
        for cell, record in zip(cells_of(item), records):
            if cell.key in todo:
                store.write_cell(record)
                callbacks.finished(cell, record)

    def lost(cell: Cell, reason: str) -> None:
        record = lost_record(cell, reason, revision)
        store.write_cell(record)
        callbacks.finished(cell, record)

    executor.map_unordered(
        CellTask(device.type, store.root, revision),
        items,
        Callbacks(
            on_start=each(callbacks.started),
            on_done=finished,
            on_progress=each(callbacks.reported),
            on_retry=each(callbacks.retried),
            on_lost=each(lost),
        ),
    )
