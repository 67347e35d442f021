"""The `run`, `plan` and `tune` commands: load and check a protocol, execute its missing work with progress,
then write tables and reports. This is the top layer below the CLI: it may use everything."""
from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable

import torch
from tqdm import tqdm

from bench.run import provenance
from bench.protocol.config import BenchConfig, load_config
from bench.core.errors import UserError
from bench.core.files import atomic_write
from bench.costs.plan import Plan, cached_estimate, make_plan
from bench.run.cell import Cell, cached_dataset, check_grid, expand_grid
from bench.run.tasks import default_workers, execute, make_executor, workers_for
from bench.run.store import RunStore
from bench.commands.summary import format_summary
from bench.tracking.mlflow_runs import tracking
from bench.tuning.studies import open_study, run_study, studies_of, trials_table, tuned_configs
from reports.report import build_report
from reports.tuning import build_tuning_report


@dataclass(frozen=True)
class Checked:
    """A protocol whose data loaded and whose regimes the data can fill."""

    config: BenchConfig
    device: torch.device
    hashes: dict[str, str]  # data set title -> content hash
    data_seconds: float  # how long loading the data took


def load_checked(config_name: str | None, overrides: list[str]) -> Checked:
    """Load and check a protocol: bad input fails here, before any folder is touched."""
    config = load_config(config_name, overrides)
    device = provenance.resolve_device(config.device)
    start = time.perf_counter()
    datasets = {spec.title: cached_dataset(spec) for spec in config.datasets}
    data_seconds = time.perf_counter() - start
    check_grid(config, datasets)
    return Checked(config, device, {name: ds.content_hash for name, ds in datasets.items()}, data_seconds)


def default_out(config) -> Path:
    return Path("runs") / f"{config.name}-{config.fingerprint[:8]}"


def plan_experiment(config_name: str | None, overrides: list[str], out: Path | None,
                    json_path: Path | None = None) -> Plan:
    """Print what a protocol still has to do in its run folder (read, not written) and its cost."""
    checked = load_checked(config_name, overrides)
    config, device = checked.config, checked.device
    out = out or default_out(config)
    cells = expand_grid(config, checked.hashes)
    done = RunStore(out).done_keys()
    workers = workers_for(config, device, len([c for c in cells if c.key not in done]))
    found = make_plan(config, cells, done, out / "cache", device, workers, checked.data_seconds)
    print(found.describe())
    if json_path is not None:
        atomic_write(json_path, json.dumps(found.to_dict(), indent=2))
    return found


def run_experiment(config_name: str | None, overrides: list[str], out: Path | None) -> Path:
    """Run a protocol into a run folder (resuming it) and return the folder."""
    checked = load_checked(config_name, overrides)
    config, device, hashes = checked.config, checked.device, checked.hashes
    out = out or default_out(config)
    store = RunStore(out)
    revision = provenance.git_revision()
    with store.lock():
        store.claim(config, hashes)
        store.heal_cells()
        with tracking(config, out, revision) as tracker:
            _run_grid(config, store, device, expand_grid(config, hashes), checked.data_seconds, revision,
                      tracker.log_cell)
            report = build_report(out)
            tracker.log_files([report, report.parent / "report.md", out / "results.csv", out / "config.yaml"])
    print(f"\nresults: {out}/results.csv (and .parquet, curves.csv, provenance.json)")
    print(f"report:  {report} (and report.md)")
    return out


def _run_grid(config, store: RunStore, device, cells: list, data_seconds: float, revision: str,
              log_cell: Callable[[Cell, dict], None]) -> None:
    """Run the grid's missing cells with a progress bar, handing each record to ``log_cell`` (tracking);
    write the tables and the provenance entry also when interrupted."""
    started = provenance.now()
    done = store.done_keys()
    todo = [c for c in cells if c.key not in done]
    workers = workers_for(config, device, len(todo))
    estimate = cached_estimate(config, cells, done, store.root / "cache", device, workers, data_seconds)
    print(f"augbench: {config.name}: {len(cells)} cells ({len(cells) - len(todo)} already done), "
          f"device {provenance.device_name(device)}, {workers} worker(s), {estimate} -> {store.root}",
          file=sys.stderr)
    foreign = store.foreign_keys([c.key for c in cells])
    if foreign:
        print(f"augbench: {len(foreign)} cell file(s) in {store.cells_dir} are not in this grid (another code "
              "version, data or config): left alone and kept out of the tables", file=sys.stderr)

    bar = tqdm(total=len(cells), initial=len(cells) - len(todo), unit="cell", file=sys.stderr, dynamic_ncols=True)
    running: dict[str, str] = {}  # cell -> what it reports doing

    def show() -> None:
        bar.set_postfix_str(" | ".join(f"{name}: {doing}" if doing else name
                                       for name, doing in list(running.items())[-workers:]), refresh=True)

    def on_start(cell):
        running[cell.describe()] = ""
        show()

    def on_progress(cell, text):
        if cell.describe() in running:
            running[cell.describe()] = text
            show()

    def on_done(cell, record):
        running.pop(cell.describe(), None)
        if record["status"] != "ok":
            tqdm.write(f"failed: {cell.describe()}: {record['failure_reason']}", file=sys.stderr)
        bar.update(1)
        log_cell(cell, record)

    finished = False
    try:
        execute(todo, store, device, make_executor(device, workers, config.executor), revision, on_start, on_done,
                on_progress)
        finished = True
    finally:
        bar.close()
        results = store.write_tables([c.key for c in cells])
        store.add_provenance({"config_fingerprint": config.fingerprint, "started": started,
                              "finished": provenance.now(), "completed": finished, "cells_run": bar.n - (
                                  len(cells) - len(todo)), "versions": provenance.versions(),
                              "revision": revision, "device": provenance.device_name(device), "workers": workers})
    print(format_summary(results))


def tune_experiment(config_name: str | None, overrides: list[str], trials: int | None, storage: str | None,
                    study_prefix: str | None, out: Path | None, workers: int | None = None,
                    worker_index: int = 0) -> Path:
    """Tune every strategy of a protocol (resuming its studies), write the trials, the tuned configs
    and the tuning report; return the output folder."""
    checked = load_checked(config_name, overrides)
    config, device = checked.config, checked.device
    specs = studies_of(config, checked.hashes)
    if not specs:
        raise UserError("config: no strategy with a search space to tune (none has no knobs)")
    n_trials = trials or config.tune.trials
    out = out or Path("runs") / f"tune-{config.name}-{config.fingerprint[:8]}"
    # a folder tunes one config; several workers of its studies may share it (no lock)
    RunStore(out).claim(config, checked.hashes)
    tuning = out / "tuning"
    tuning.mkdir(parents=True, exist_ok=True)
    storage = storage or f"sqlite:///{(tuning / 'optuna.db').resolve()}"
    prefix = study_prefix or f"{config.name}-{config.fingerprint[:8]}"
    workers = workers or config.workers or default_workers(device, config.workers_per_gpu)
    print(f"augbench tune: {len(specs)} studies x {n_trials} trials ({config.tune.seeds} seed(s) each), "
          f"storage {storage}, {workers} worker(s) -> {out}", file=sys.stderr)
    for spec in specs:  # create the storage's tables and the studies before workers race to
        open_study(spec.name(prefix), storage)
    task = partial(run_study, config=config, n_trials=n_trials, storage_url=storage, prefix=prefix,
                   device_type=device.type, cache_dir=str(out / "cache"), revision=provenance.git_revision(),
                   worker_index=worker_index)
    start = time.perf_counter()
    executor = make_executor(device, workers, config.executor)
    executor.map_unordered(task, specs, on_done=lambda spec, name: print(f"  done: {name}", file=sys.stderr))
    studies = {s.name(prefix): open_study(s.name(prefix), storage) for s in specs}
    table = trials_table(specs, studies, prefix)
    atomic_write(tuning / "trials.csv", table.to_csv(index=False))
    configs = tuned_configs(config, specs, studies, prefix, tuning)
    report = build_tuning_report(tuning, table, studies)
    print(f"tuned in {time.perf_counter() - start:.0f} s; trials: {tuning / 'trials.csv'}; report: {report}")
    for path in configs:
        print(f"evaluate on fresh seeds: augbench run {path}")
    return out
