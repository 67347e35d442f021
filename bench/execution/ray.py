"""The ``ray`` executor: every item is a Ray task on a Ray cluster (an existing one, or a private
local one), with the CPUs and GPUs per task the config asks for and a cap on tasks in flight.

The driver (this process) gets each result back and hands it to ``on_done``, so ``run`` writes
every cell's file itself, as with the local executors: resume, reports and the leaderboard work
the same. A task whose worker process dies is retried by Ray (``max_retries``), then reported
with ``on_lost``. For a FolderTask (``run``'s cells) the work cells share is a DAG of tasks: each
piece of shared work (a replicate's evaluator, a generator's fit, a strategy's quality row) runs
once per group,
the files it writes travel through Ray's object store to the tasks that need them, and the driver
writes them into the run folder, so no file system is shared with the workers. Ray is an
optional extra (``pip install 'augbench[ray]'``), imported only here and only when this executor
runs.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from bench.core.errors import UserError
from bench.core.executor import Callbacks, Executor, FolderTask, register_executor
from bench.core.files import atomic_write
from bench.core.net import unreachable
from bench.core.schema import check_plain, option
from bench.core.secrets import masked, refuse_masked, scrubbed

RETRIES = 2  # tries after the first, for a task whose worker died


Files = dict[str, bytes]  # path relative to a FolderTask's root -> content


def _run_item(fn: Callable[[Any], Any], item: Any, threads: int | None, *upstream: Files) -> Any:
    """A task: the item with the run's torch thread count (as in every executor). A FolderTask's
    item runs in a folder of its own that holds the files of its shared work (``upstream``)."""
    _set_threads(threads)
    if not isinstance(fn, FolderTask):
        return fn(item)
    with _own_folder(upstream) as (root, _):
        return fn.run_in(item, root)


def _run_shared_work(fn: FolderTask, name: str, item: Any, threads: int | None, *upstream: Files) -> Files:
    """A task: one piece of ``fn``'s shared work for ``item``'s group, in a folder of its own holding
    the files of the earlier pieces; returns the files it wrote."""
    _set_threads(threads)
    with _own_folder(upstream) as (root, given):
        next(work for work in fn.shared_work if work.name == name).run(item, root)
        return {path: data for path, data in _files(root).items() if path not in given}


def _set_threads(threads: int | None) -> None:
    if threads is not None:
        torch.set_num_threads(threads)


@contextmanager
def _own_folder(upstream: tuple[Files, ...]) -> Iterator[tuple[Path, set[str]]]:
    """A temporary folder holding the upstream files; yields it and those files' paths."""
    given = {path: data for files in upstream for path, data in files.items()}
    with tempfile.TemporaryDirectory(prefix="augbench-ray-") as folder:
        root = Path(folder)
        for path, data in given.items():
            (root / path).parent.mkdir(parents=True, exist_ok=True)
            (root / path).write_bytes(data)
        yield root, set(given)


def _files(root: Path) -> Files:
    """Every finished file under ``root`` (not locks, not half-written temporary files)."""
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in root.rglob("*")
        if p.is_file() and p.suffix not in (".lock", ".tmp")
    }


def write_missing(root: Path, files: Files) -> None:
    """Write shared work's files into the driver's folder, leaving any that are already there."""
    for path, data in files.items():
        if not (root / path).exists():
            atomic_write(root / path, data)


def _import_ray():
    try:
        import ray
    except ImportError:
        raise UserError(
            "config field executor.name: ray is not installed; install it with "
            "pip install 'augbench[ray]' (or pip install ray)"
        ) from None
    return ray


def check_reachable(address: str) -> None:
    """Refuse an address with nothing listening before Ray waits minutes for it."""
    if address in ("", "auto", "local"):
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    host = host.rpartition("@")[2]  # past any user info
    why = unreachable(host, int(port)) if port.isdigit() else f"no port in {masked(address)!r}"
    if why:
        raise UserError(
            f"config field executor.address: no Ray cluster answers at {masked(address)!r} ({why}); give "
            "auto, HOST:PORT of a running head node (ray start --head), or ray://HOST:PORT"
        )


def _address(value: Any, where: str) -> str:
    """A Ray address as text, refused where its password is the saved mask."""
    address = check_plain(value, f"config field {where}", "")
    how = f"give the address with its password again (--set {where}=ADDR or --address ADDR)"
    return refuse_masked(address, f"config field {where}", how)


@dataclass(frozen=True, kw_only=True)
class RaySettings:
    """The ray executor's settings in the config's `executor` section."""

    address: str = option(
        "",
        parse=_address,
        plain=masked,  # saved and shown with any password masked
        help="ray: the cluster to join: auto (a running cluster on this machine), HOST:PORT "
        "or ray://HOST:PORT; empty starts a private local cluster",
    )
    cpus_per_cell: float = option(1.0, low=0.01, high=1024, help="ray: CPUs each cell reserves")
    gpus_per_cell: float = option(
        0.0,
        low=0,
        high=64,
        help="ray: GPUs each cell reserves; fractions share a GPU (0.25: four cells per GPU)",
    )
    max_in_flight: int = option(
        0,
        low=0,
        high=100000,
        help="ray: cells submitted at once (0: as many as the cluster's resources run side by side)",
    )


@register_executor("ray")
class RayExecutor(Executor):
    """Items as Ray tasks; see the module docstring."""

    settings = RaySettings

    def __init__(
        self,
        workers: int = 1,
        threads: int | None = 1,
        address: str = "",
        cpus_per_cell: float = 1.0,
        gpus_per_cell: float = 0.0,
        max_in_flight: int = 0,
    ):
        super().__init__(workers, threads)
        self.address, self.cpus_per_cell, self.gpus_per_cell, self.max_in_flight = (
            address,
            cpus_per_cell,
            gpus_per_cell,
            max_in_flight,
        )

    @classmethod
    def configured(cls, settings, workers, threads):
        return cls(
            workers=workers,
            threads=threads,
            address=settings.address,
            cpus_per_cell=settings.cpus_per_cell,
            gpus_per_cell=settings.gpus_per_cell,
            max_in_flight=settings.max_in_flight,
        )

    def _connect(self, ray) -> bool:
        """Join (or start) the cluster; True when this call started Ray and must shut it down."""
        if ray.is_initialized():
            return False
        check_reachable(self.address)
        runtime_env = {
            "env_vars": {
                "PYTHONPATH": os.pathsep.join(p for p in (os.getcwd(), os.environ.get("PYTHONPATH", "")) if p)
            }
        }
        try:
            quiet = {"runtime_env": runtime_env, "log_to_driver": False, "logging_level": "error"}
            if self.address:
                ray.init(address=self.address, **quiet)
            else:
                ray.init(
                    num_cpus=max(int(self.cpus_per_cell), self.workers), include_dashboard=False, **quiet
                )
        except (ConnectionError, RuntimeError) as exc:
            raise UserError(
                f"config field executor.address: cannot join Ray at "
                f"{masked(self.address) or 'a local cluster'!r} ({scrubbed(str(exc), self.address)})"
            ) from None
        return True

    def _slots(self, ray) -> int:
        """Tasks the cluster can run side by side; UserError when not even one fits."""
        resources = ray.cluster_resources()
        cpus, gpus = resources.get("CPU", 0.0), resources.get("GPU", 0.0)
        if self.gpus_per_cell > gpus:
            raise UserError(
                f"config field executor.gpus_per_cell: {self.gpus_per_cell} GPU(s) per cell, but the Ray "
                f"cluster has {gpus:g}; use 0 on a cluster without GPUs"
            )
        if self.cpus_per_cell > cpus:
            raise UserError(
                f"config field executor.cpus_per_cell: {self.cpus_per_cell} CPU(s) per cell, but the Ray "
                f"cluster has {cpus:g}"
            )
        fits = (
            int(cpus // self.cpus_per_cell)
            if not self.gpus_per_cell
            else min(int(cpus // self.cpus_per_cell), int(gpus // self.gpus_per_cell))
        )
        return self.max_in_flight or max(1, fits)

    @contextmanager
    def session(self) -> Iterator[None]:
        """Joined (or started) the cluster, and checked that a cell fits its resources."""
        ray = _import_ray()
        started_here = self._connect(ray)
        try:
            self._slots(ray)
            yield
        finally:
            if started_here:
                ray.shutdown()

    def run_items(self, fn: Callable[[Any], Any], items: list, callbacks: Callbacks) -> None:
        """As the interface says; progress inside a task is not carried back (``on_progress`` unused),
        and Ray retries a task whose worker died without telling (``on_retry`` unused)."""
        with self.session():
            self._map(_import_ray(), fn, items, callbacks)

    def _map(self, ray, fn, items: list, callbacks: Callbacks) -> None:
        slots = self._slots(ray)
        remote = ray.remote(num_cpus=self.cpus_per_cell, num_gpus=self.gpus_per_cell, max_retries=RETRIES)
        task, shared_task = remote(_run_item), remote(_run_shared_work)
        shared_fn = ray.put(fn)
        shared = fn.shared_work if isinstance(fn, FolderTask) else ()
        shared_refs: dict = {}  # (name, group) -> the ref of the files that shared work wrote
        written: set = set()  # shared work refs whose files are in the driver's folder

        def submit(item):
            """The item's task, after those of its shared work not yet submitted (each group once)."""
            upstream = []
            for unit in fn.work_units(item) if shared else ():
                for work in shared:
                    group = work.group(unit)
                    if group is None:
                        continue
                    if (work.name, group) not in shared_refs:
                        shared_refs[work.name, group] = shared_task.remote(
                            shared_fn, work.name, unit, self.threads, *upstream
                        )
                    if shared_refs[work.name, group] not in upstream:
                        upstream.append(shared_refs[work.name, group])
            return task.remote(shared_fn, item, self.threads, *upstream), upstream

        pending: dict = {}
        queue = list(reversed(items))
        try:
            while queue or pending:
                while queue and len(pending) < slots:
                    item = queue.pop()
                    ref, upstream = submit(item)
                    pending[ref] = (item, upstream)
                    callbacks.started(item)
                ready, _ = ray.wait(list(pending), num_returns=1)
                for ref in ready:
                    item, upstream = pending.pop(ref)
                    try:
                        result = ray.get(ref)
                    except ray.exceptions.RayTaskError as exc:  # fn raised: raise it here, as locally
                        raise exc.as_instanceof_cause() from None
                    except (
                        ray.exceptions.WorkerCrashedError,
                        ray.exceptions.NodeDiedError,
                        ray.exceptions.TaskUnschedulableError,
                    ) as exc:
                        reason = f"its Ray worker died on {RETRIES + 1} tries ({type(exc).__name__})"
                        callbacks.lost(item, reason)
                        continue
                    for shared_ref in upstream:  # done, since the item used it: its files join the run folder
                        if shared_ref not in written:
                            write_missing(Path(fn.root), ray.get(shared_ref))
                            written.add(shared_ref)
                    callbacks.finished(item, result)
        finally:
            for ref in [*pending, *(r for r in shared_refs.values() if r not in written)]:
                ray.cancel(ref, force=True)
