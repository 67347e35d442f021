"""`augbench run`: load and check a protocol, run its missing cells with progress, then write the
tables and the report."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable, NamedTuple

from tqdm import tqdm

from bench.commands.checks import default_out, load_checked
from bench.commands.summary import format_summary
from bench.core import progress
from bench.core.executor import Callbacks
from bench.costs.plan import cached_estimate
from bench.run import provenance
from bench.run.budget import CheckFacts, budget_summary, generator_summary, read_budget, read_generators
from bench.run.cell import Cell
from bench.run.failures import failure_kind, runs_again
from bench.run.grid import resolve_grid
from bench.run.resolution import checked_plateau
from bench.run.rounds import Budgets, Round, next_round
from bench.run.store import RunStore
from bench.run.tasks import execute, make_executor, workers_for
from bench.tracking.mlflow_runs import check_reachable, tracking
from reports.report import build_report


class RunOutcome(NamedTuple):
    """Where a run wrote its files, and how many of its cells raised an error (a bug in their code)."""

    out: Path
    errored: int


def _quiet(line: str) -> None:
    """Says nothing (the search's lines, said once when the run resolves its grid)."""


def run_experiment(
    config_name: str | None, overrides: list[str], out: Path | None, retry_failed: bool = False
) -> RunOutcome:
    """Run a protocol into a run folder (resuming it: cells the machine failed or whose code raised
    an error run again, and with ``retry_failed`` every failed cell)."""
    checked = load_checked(config_name, overrides)
    config, device, hashes = checked.config, checked.device, checked.hashes
    out = out or default_out(config)
    store = RunStore(out)
    store.check_claim(config)
    check_reachable(config.tracking.mlflow)
    revision = provenance.git_revision()
    done = store.done_keys(retry_failed)
    # the cells and checks left to run at the steps `auto` found, where the folder's cache holds its search
    known = resolve_grid(config, hashes, checked.n_val, device, store.root / "cache", False, _quiet)
    workers = workers_for(config, device, len([c for c in known.replayed(store) if c.key not in done]))
    executor = make_executor(device, workers, config.executor)
    with (
        executor.session(),
        store.lock(),
    ):  # a cluster that cannot run a cell refuses before the folder is claimed
        store.claim(config, hashes)
        store.heal_cells()
        resolved = resolve_grid(config, hashes, checked.n_val, device, store.root / "cache")
        _say_foreign(store, resolved.replayed(store))
        with tracking(config, out, revision) as tracker:
            now: Round | None = Round({}, {})
            errors: set[str] = set()
            while now is not None:  # each round adds check seeds or raises budgets, until neither is left
                raised = now.raised
                grid, checks = resolved.cells_and_checks(raised, now.seeds)
                errors |= set(
                    _run_grid(
                        config,
                        store,
                        device,
                        grid,
                        checks,
                        checked.data_seconds,
                        revision,
                        executor,
                        workers,
                        tracker.log_cell,
                        done,
                        raised,
                    )
                )
                done |= {cell.key for cell in grid + checks}  # a later round runs none of them again
                tables = read_budget(store.root), read_generators(store.root)
                now, said = next_round(config, checked.n_val, *tables, now)
                for line in said:
                    print(line, file=sys.stderr)
            errored = sorted(errors & {cell.key for cell in grid + checks})  # those of the final grid
            report = build_report(out)
            tracker.log_files([report, report.parent / "report.md", out / "results.csv", out / "config.yaml"])
    print(f"\nresults: {out}/results.csv (and .parquet, curves.csv, provenance.json)")
    print(f"report:  {report} (and report.md)")
    if errored:
        print(
            f"augbench: {len(errored)} cell(s) raised an error (a bug in their code, not a result): "
            f"tracebacks in {store.cells_dir}/<key>.traceback.txt "
            f"({', '.join(sorted(errored)[:3])}{', ...' if len(errored) > 3 else ''}); a rerun tries them "
            "again",
            file=sys.stderr,
        )
    return RunOutcome(out, len(errored))


def _say_foreign(store: RunStore, rounds: list[Cell]) -> None:
    """One line on the cell files in the folder that no round of this run holds: left alone."""
    foreign = store.foreign_keys([c.key for c in rounds])
    if foreign:
        print(
            f"augbench: {len(foreign)} cell file(s) in {store.cells_dir} are in no round of this run "
            "(another code version, data or config, or a round the run no longer decides so): left "
            "alone and kept out of the tables",
            file=sys.stderr,
        )


def _run_grid(
    config,
    store: RunStore,
    device,
    grid: list,
    checks: list,
    data_seconds: float,
    revision: str,
    executor,
    workers: int,
    log_cell: Callable[[Cell, dict], None],
    done: set[str],
    raised: Budgets,
) -> list[str]:
    """Run the grid's cells and budget checks not in ``done`` with a progress bar, handing each grid
    record to ``log_cell`` (tracking); write the tables and the provenance entry also when
    interrupted. Returns the keys of the cells (and checks) whose code raised an error."""
    started = provenance.now()
    cells = grid + checks
    todo = [c for c in cells if c.key not in done]
    again = len((store.cell_keys() - done) & {c.key for c in cells})  # failed cells that run again
    estimate = cached_estimate(config, cells, done, store.root / "cache", device, workers, data_seconds)
    retried = f", {again} failed one(s) to try again" if again else ""
    counts = {
        "budget checks at 2x": sum(c.is_budget_check for c in checks),
        "generator checks at 2x": sum(c.is_generator_check for c in checks),
        "check seeds at the budget": sum(c.is_check and not c.check_of for c in checks),
    }
    checks_line = "".join(f" and {n} {what}" for what, n in counts.items() if n)
    print(
        f"augbench: {config.name}: {len(grid)} cells{checks_line} ({len(cells) - len(todo)} already "
        f"done{retried}){'' if checks else ', no budget check'}, device {provenance.device_name(device)}, "
        f"{workers} worker(s), {estimate} -> {store.root}",
        file=sys.stderr,
    )

    bar = tqdm(
        total=len(cells), initial=len(cells) - len(todo), unit="cell", file=sys.stderr, dynamic_ncols=True
    )
    running: dict[str, str] = {}  # cell -> what it reports doing

    def show() -> None:
        bar.set_postfix_str(
            " | ".join(
                f"{name}: {doing}" if doing else name for name, doing in list(running.items())[-workers:]
            ),
            refresh=True,
        )

    def on_start(cell):
        running[cell.describe()] = ""
        show()

    def on_progress(cell, text):
        if cell.describe() in running:
            running[cell.describe()] = text
            show()

    errored: list[str] = []

    def on_done(cell, record):
        running.pop(cell.describe(), None)
        if record["status"] != "ok":
            again = "; a rerun tries it again" if runs_again(record) else ""
            what = "raised an error" if failure_kind(record) == "error" else "failed"
            say(f"{what}: {cell.describe()}: {record['failure_reason']}{again}")
            if failure_kind(record) == "error":
                errored.append(cell.key)
        bar.update(1)
        if not cell.is_check:
            log_cell(cell, record)

    def on_retry(cell, reason):
        say(
            f"augbench: worker died on {cell.describe()} ({reason.removeprefix('worker died: ')}): retrying "
            "once"
        )

    def say(line: str) -> None:  # a line above the bar, never inside it
        tqdm.write(line, file=sys.stderr)

    finished = False
    progress.warning_to(say)  # warnings of the cells (a cache file moved aside) go above the bar too
    try:
        callbacks = Callbacks(on_start=on_start, on_done=on_done, on_progress=on_progress, on_retry=on_retry)
        execute(todo, store, device, executor, revision, callbacks, grid=cells)
        finished = True
    finally:
        progress.warning_to(None)
        bar.close()
        results = store.write_tables(
            [c.key for c in grid],
            [c.key for c in checks],
            checked_plateau(config),
            raised,
        )
        store.add_provenance(
            {
                "config_fingerprint": config.fingerprint,
                "started": started,
                "finished": provenance.now(),
                "completed": finished,
                "cells_run": bar.n - (len(cells) - len(todo)),
                "versions": provenance.versions(),
                "revision": revision,
                "device": provenance.device_name(device),
                "workers": workers,
            }
        )
    print(format_summary(results))
    print(budget_summary(read_budget(store.root), CheckFacts.of(config)))
    generators = generator_summary(read_generators(store.root), CheckFacts.of(config))
    if generators:
        print(generators)
    return errored
