"""Local executors: ``serial`` (in this process) and ``process`` (spawned worker processes).

Both give every item the same torch thread count, so a result does not depend on which executor
ran it or on how many items were left.
"""
from __future__ import annotations

import multiprocessing
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from contextlib import contextmanager
from typing import Any, Callable, Iterable

import torch

from bench.core.executor import Executor, OnDone, OnStart, register_executor


@contextmanager
def torch_threads(threads: int | None):
    """Run a block with ``threads`` torch threads (None: as they are), restoring the count after."""
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _init_worker(threads: int | None) -> None:
    if threads is not None:
        torch.set_num_threads(threads)


@register_executor("serial")
class SerialExecutor(Executor):
    """One item after another in the calling process (``workers`` is ignored)."""

    def map_unordered(self, fn: Callable[[Any], Any], items: Iterable[Any],
                      on_start: OnStart | None = None, on_done: OnDone | None = None) -> None:
        with torch_threads(self.threads):
            for item in items:
                if on_start:
                    on_start(item)
                result = fn(item)
                if on_done:
                    on_done(item, result)


@register_executor("process")
class ProcessExecutor(Executor):
    """``workers`` spawned processes; at most ``workers`` items in flight, handed out as others finish."""

    def map_unordered(self, fn: Callable[[Any], Any], items: Iterable[Any],
                      on_start: OnStart | None = None, on_done: OnDone | None = None) -> None:
        queue = iter(items)
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(self.workers, mp_context=context, initializer=_init_worker,
                                 initargs=(self.threads,)) as pool:
            pending: dict[Future, Any] = {}

            def submit_next() -> None:
                item = next(queue, _END)
                if item is not _END:
                    pending[pool.submit(fn, item)] = item
                    if on_start:
                        on_start(item)

            for _ in range(self.workers):
                submit_next()
            while pending:
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    item = pending.pop(future)
                    result = future.result()
                    if on_done:
                        on_done(item, result)
                    submit_next()


_END = object()
