"""Local executors: ``serial`` (in this process) and ``process`` (spawned worker processes).

Both give every item the same torch thread count, so a result does not depend on which executor
ran it or on how many items were left. The process executor survives a worker's death (the item
is retried once, then reported lost) and its workers never outlive it.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.connection import wait
from typing import Any, Callable

import torch

from bench.core import progress
from bench.core.executor import Callbacks, Executor, register_executor
from bench.core.memory import peak_rss_mb


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


@register_executor("serial")
class SerialExecutor(Executor):
    """One item after another in the calling process (``workers`` is ignored)."""

    def run_items(self, fn: Callable[[Any], Any], items: list, callbacks: Callbacks) -> None:
        with torch_threads(self.threads):
            for item in items:
                callbacks.started(item)
                progress.reporting_to(lambda text, it=item: callbacks.reported(it, text))
                try:
                    result = fn(item)
                finally:
                    progress.reporting_to(None)
                callbacks.finished(item, result)


def _watch_parent(parent: int) -> None:
    """Kill this worker as soon as its parent is gone (killed with -9, say): no orphan keeps working."""
    while os.getppid() == parent:
        time.sleep(0.5)
    os.kill(os.getpid(), signal.SIGKILL)


def _worker_main(connection, fn: Callable[[Any], Any], threads: int | None, parent: int, slot: int) -> None:
    """A worker: items in, results out, until told to stop. Ctrl-C goes to the parent, which stops
    the workers itself; an exception in ``fn`` is sent back to be raised there. On a machine with
    several GPUs, worker ``slot`` works on GPU ``slot % count`` (its ``cuda`` device)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    if threads is not None:
        torch.set_num_threads(threads)
    if torch.cuda.device_count() > 1:
        torch.cuda.set_device(slot % torch.cuda.device_count())
    progress.reporting_to(lambda text: connection.send(("progress", text)))
    progress.warning_to(lambda line: connection.send(("say", line)))  # printed by the parent, above its bar
    while (item := connection.recv()) is not None:  # None: stop
        try:
            connection.send(("done", fn(item)))
        except Exception as exc:  # noqa: BLE001 - raised again in the parent
            connection.send(("error", exc))


def death_reason(exitcode: int | None, peak_mb: float | None) -> str:
    """'worker died: signal 9 (SIGKILL), peak memory 912 MB' and the like."""
    if exitcode is not None and exitcode < 0:
        what = f"signal {-exitcode} ({signal.Signals(-exitcode).name})"
    else:
        what = f"exit code {exitcode}"
    return f"worker died: {what}" + (f", peak memory {peak_mb:.0f} MB" if peak_mb else "")


@dataclass
class _Worker:
    process: multiprocessing.process.BaseProcess
    connection: Any
    slot: int  # which of the executor's places it fills (a replacement takes over the dead one's)
    item: tuple | None = None  # (item, retries so far) while busy
    peak_mb: float | None = None

    def receive(self) -> tuple | None:
        """The worker's message, or None when it has died without sending one."""
        try:
            return self.connection.recv() if self.connection.poll() else None
        except (EOFError, OSError):
            return None


@register_executor("process")
class ProcessExecutor(Executor):
    """``workers`` spawned processes, one item each at a time, handed out as others finish.

    A worker that dies (killed, out of memory) is replaced; its item is retried once in a fresh
    worker, and if that worker dies too, ``on_lost(item, reason)`` reports it and the rest goes on.
    Workers die with this process, also when it is killed with -9.
    """

    retries = 1

    def run_items(self, fn: Callable[[Any], Any], items: list, callbacks: Callbacks) -> None:
        queue = deque((item, 0) for item in items)
        context = multiprocessing.get_context("spawn")
        workers: list[_Worker] = []

        def start_worker(slot: int) -> _Worker:
            mine, theirs = context.Pipe()
            process = context.Process(
                target=_worker_main, args=(theirs, fn, self.threads, os.getpid(), slot), daemon=True
            )
            process.start()
            theirs.close()
            workers.append(_Worker(process, mine, slot))
            return workers[-1]

        def hand_out(worker: _Worker) -> None:
            if not worker.process.is_alive():
                workers.remove(worker)
                worker = start_worker(worker.slot)
            worker.item = queue.popleft()
            worker.connection.send(worker.item[0])
            if worker.item[1] == 0:
                callbacks.started(worker.item[0])

        try:
            for slot in range(min(self.workers, len(queue))):
                hand_out(start_worker(slot))
            while busy := [w for w in workers if w.item is not None]:
                ready = set(
                    wait([w.connection for w in busy] + [w.process.sentinel for w in busy], timeout=1.0)
                )
                for worker in busy:
                    worker.peak_mb = peak_rss_mb(worker.process.pid) or worker.peak_mb
                    if worker.connection not in ready and worker.process.sentinel not in ready:
                        continue
                    (item, tries), message = worker.item, worker.receive()
                    if message is not None and message[0] == "progress":
                        callbacks.reported(item, message[1])
                        continue
                    if message is not None and message[0] == "say":
                        progress.say(message[1])
                        continue
                    worker.item = None
                    if message is None:
                        self._give_up_or_retry(worker, item, tries, workers, queue, callbacks)
                    elif message[0] == "error":
                        raise message[1]
                    else:
                        callbacks.finished(item, message[1])
                    if queue:
                        hand_out(worker if worker in workers else start_worker(worker.slot))
        finally:
            self._stop(workers)

    def _give_up_or_retry(
        self,
        worker: _Worker,
        item: Any,
        tries: int,
        workers: list[_Worker],
        queue: deque,
        callbacks: Callbacks,
    ) -> None:
        """A busy worker died: its item goes first to a fresh worker, or is given up after the retry."""
        worker.process.join()
        workers.remove(worker)
        reason = death_reason(worker.process.exitcode, worker.peak_mb)
        if tries < self.retries:
            queue.appendleft((item, tries + 1))
            callbacks.retried(item, reason)
        else:
            callbacks.lost(item, reason)

    @staticmethod
    def _stop(workers: list[_Worker]) -> None:
        """Idle workers exit; busy ones (an interrupted run) are killed."""
        for worker in workers:
            if worker.item is None and worker.process.is_alive():
                try:
                    worker.connection.send(None)
                except OSError:
                    pass
        for worker in workers:
            worker.process.join(timeout=10 if worker.item is None else 0)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join()
