"""`augbench run`: load and check a protocol, run its missing cells with progress, then write the
tables and the report."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable, NamedTuple

import torch
from tqdm import tqdm

from bench.commands.checks import default_out, load_checked
from bench.commands.summary import format_summary
from bench.core import progress
from bench.core.executor import Callbacks, Executor
from bench.costs.plan import cached_estimate
from bench.protocol.config import BenchConfig
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
            ctx = RoundContext(
                config, store, device, executor, workers, revision, checked.data_seconds, tracker.log_cell
            )
            now: Round | None = Round({}, {})
            errors: set[str] = set()
            while now is not None:  # each round adds check seeds or raises budgets, until neither is left
                grid, checks = resolved.cells_and_checks(now.raised, now.seeds)
                errors |= set(_run_round(ctx, grid, checks, done, now.raised))
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
    """One line on the cell files in the folder that no round of this run decided so far holds
    (those of a later round are used once the replay reaches it): left alone."""
    foreign = store.foreign_keys([c.key for c in rounds])
    if foreign:
        print(
            f"augbench: {len(foreign)} cell file(s) in {store.cells_dir} are in no round of this run "
            "decided so far (another code version, data or config, a round the run no longer decides "
            "so, or one its replay has not reached yet): left alone and kept out of the tables",
            file=sys.stderr,
        )


class RoundContext(NamedTuple):
    """What every round of a run shares: the protocol, the folder, where and how cells run, and what
    a finished cell is handed to (tracking)."""

    config: BenchConfig
    store: RunStore
    device: torch.device
    executor: Executor
    workers: int
    revision: str
    data_seconds: float
    log_cell: Callable[[Cell, dict], None]


class CellProgress:
    """The progress bar of a round: the cells in flight and what they report doing, a line above
    the bar for each failure and retry, and the keys of the cells whose code raised an error."""

    def __init__(self, total: int, done: int, workers: int, log_cell: Callable[[Cell, dict], None]):
        self.bar = tqdm(total=total, initial=done, unit="cell", file=sys.stderr, dynamic_ncols=True)
        self.workers, self.log_cell = workers, log_cell
        self.running: dict[str, str] = {}  # cell -> what it reports doing
        self.errored: list[str] = []

    def callbacks(self) -> Callbacks:
        return Callbacks(
            on_start=self.on_start, on_done=self.on_done, on_progress=self.on_progress, on_retry=self.on_retry
        )

    def say(self, line: str) -> None:
        """A line above the bar, never inside it."""
        tqdm.write(line, file=sys.stderr)

    def _show(self) -> None:
        shown = list(self.running.items())[-self.workers :]
        self.bar.set_postfix_str(
            " | ".join(f"{name}: {doing}" if doing else name for name, doing in shown), refresh=True
        )

    def on_start(self, cell: Cell) -> None:
        self.running[cell.describe()] = ""
        self._show()

    def on_progress(self, cell: Cell, text: str) -> None:
        if cell.describe() in self.running:
            self.running[cell.describe()] = text
            self._show()

    def on_done(self, cell: Cell, record: dict) -> None:
        self.running.pop(cell.describe(), None)
        if record["status"] != "ok":
            again = "; a rerun tries it again" if runs_again(record) else ""
            what = "raised an error" if failure_kind(record) == "error" else "failed"
            self.say(f"{what}: {cell.describe()}: {record['failure_reason']}{again}")
            if failure_kind(record) == "error":
                self.errored.append(cell.key)
        self.bar.update(1)
        if not cell.is_check:
            self.log_cell(cell, record)

    def on_retry(self, cell: Cell, reason: str) -> None:
        self.say(
            f"augbench: worker died on {cell.describe()} ({reason.removeprefix('worker died: ')}): retrying "
            "once"
        )


def _say_round(
    ctx: RoundContext, grid: list[Cell], checks: list[Cell], todo: list[Cell], done: set[str]
) -> None:
    """The round's first line: its cells and checks, those already done, the device, the estimate."""
    config, store, cells = ctx.config, ctx.store, grid + checks
    again = len((store.cell_keys() - done) & {c.key for c in cells})  # failed cells that run again
    estimate = cached_estimate(
        config, cells, done, store.root / "cache", ctx.device, ctx.workers, ctx.data_seconds
    )
    retried = f", {again} failed one(s) to try again" if again else ""
    counts = {
        "budget checks at 2x": sum(c.is_budget_check for c in checks),
        "generator checks at 2x": sum(c.is_generator_check for c in checks),
        "check seeds at the budget": sum(c.is_check and not c.check_of for c in checks),
    }
    checks_line = "".join(f" and {n} {what}" for what, n in counts.items() if n)
    print(
        f"augbench: {config.name}: {len(grid)} cells{checks_line} ({len(cells) - len(todo)} already "
        f"done{retried}){'' if checks else ', no budget check'}, device "
        f"{provenance.device_name(ctx.device)}, {ctx.workers} worker(s), {estimate} -> {store.root}",
        file=sys.stderr,
    )


def _run_round(
    ctx: RoundContext, grid: list[Cell], checks: list[Cell], done: set[str], raised: Budgets
) -> list[str]:
    """Run the round's cells and checks not in ``done`` with a progress bar, handing each grid
    record to ``ctx.log_cell`` (tracking); write the tables and the provenance entry also when
    interrupted. Returns the keys of the cells (and checks) whose code raised an error."""
    started = provenance.now()
    cells = grid + checks
    todo = [c for c in cells if c.key not in done]
    _say_round(ctx, grid, checks, todo, done)
    shown = CellProgress(len(cells), len(cells) - len(todo), ctx.workers, ctx.log_cell)
    finished = False
    progress.warning_to(shown.say)  # warnings of the cells (a cache file moved aside) go above the bar too
    try:
        execute(todo, ctx.store, ctx.device, ctx.executor, ctx.revision, shown.callbacks(), grid=cells)
        finished = True
    finally:
        progress.warning_to(None)
        shown.bar.close()
        results = ctx.store.write_tables(
            [c.key for c in grid], [c.key for c in checks], checked_plateau(ctx.config), raised
        )
        ctx.store.add_provenance(
            {
                "config_fingerprint": ctx.config.fingerprint,
                "started": started,
                "finished": provenance.now(),
                "completed": finished,
                "cells_run": shown.bar.n - (len(cells) - len(todo)),
                "versions": provenance.versions(),
                "revision": ctx.revision,
                "device": provenance.device_name(ctx.device),
                "workers": ctx.workers,
            }
        )
    facts = CheckFacts.of(ctx.config)
    print(format_summary(results))
    print(budget_summary(read_budget(ctx.store.root), facts))
    generators = generator_summary(read_generators(ctx.store.root), facts)
    if generators:
        print(generators)
    return shown.errored
