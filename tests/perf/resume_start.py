"""How long a resume of a large grid whose cells are all done takes: the time from `augbench run`
to the line that says how many cells are done (the start: reading the folder, expanding the grid,
the estimate), and to its exit (the tables and the report too).

    python tests/perf/resume_start.py --template runs/quick-timing --work /tmp/resume [--seeds 100]

It makes a run folder of the `quick` protocol at ``--seeds`` seeds whose cells are all finished
(each cell's record copied from the template run's record of the same strategy, classifier and
budget check, under the cell's own key and replicate), then times `augbench run` on it ``--repeats``
times. Keys come from the code on the Python path, so run it once per revision (a git worktree
each) to compare revisions side by side.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path


def make_folder(template: Path, work: Path, seeds: int) -> int:
    """The finished run folder at ``work``; returns its number of cell files."""
    from bench.commands.checks import load_checked
    from bench.protocol.config import cohort_size
    from bench.run.cell import expand_grid
    from bench.run.store import RunStore

    checked = load_checked("quick", [f"seeds={seeds}"])
    cohort, precision = cohort_size(checked.config, checked.device), _key_precision(checked)
    store = RunStore(work)
    store.claim(checked.config, checked.hashes)
    records = [json.loads(p.read_text()) for p in (template / "cells").glob("*.json")]
    by_cell = {(r["strategy"], r["classifier"], "budget_check_of" in r, r["replicate"]): r for r in records}
    template_seeds = 1 + max(r["replicate"] for r in records)
    cells = expand_grid(
        checked.config, checked.hashes, cohort, **({"precision": precision} if precision else {})
    )
    grid, checks = _grid_and_checks(checked, cohort, precision, cells)
    for cell in grid + checks:
        record = dict(
            by_cell[
                cell.strategy.label,
                cell.classifier,
                getattr(cell, "is_budget_check", False),
                cell.replicate % template_seeds,
            ]
        )
        record.update(key=cell.key, replicate=cell.replicate, seed=cell.train_seed)
        if getattr(cell, "is_budget_check", False):
            record["budget_check_of"] = next(
                c.key
                for c in cells
                if c.strategy == cell.strategy
                and c.classifier == cell.classifier
                and c.replicate == cell.replicate
            )
        store.write_cell(record)
    return len(grid) + len(checks)


def _key_precision(checked) -> str:
    """The precision in the run's keys ("" at revisions before ``precision``)."""
    try:
        from bench.protocol.config import key_precision
    except ImportError:
        return ""
    return key_precision(checked.config, checked.device)


def _grid_and_checks(checked, cohort: int, precision: str, cells: list) -> tuple[list, list]:
    """The grid and its budget checks (none at revisions before the budget check)."""
    try:
        from bench.run.grid import Grid
    except ImportError:  # revisions before bench/run/grid.py, and before the budget check
        try:
            from bench.run.budget import grid_and_checks
        except ImportError:
            return cells, []
        return grid_and_checks(checked.config, checked.hashes, cohort, checked.n_val, None, precision)
    return Grid(checked.config, checked.hashes, checked.n_val, cohort, precision, {}).cells_and_checks()


def timed_resume(command: list[str]) -> tuple[float, float, str]:
    """(seconds to the line that counts the done cells, seconds to the exit, that line)."""
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    start, line = None, ""
    for text in process.stderr:
        if start is None and "already done" in text:
            start, line = time.perf_counter() - started, text.strip()
    process.wait()
    if process.returncode != 0 or start is None:
        sys.exit(f"the resume failed (exit {process.returncode})")
    return start, time.perf_counter() - started, line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--template", type=Path, required=True, help="a finished run of the quick protocol")
    parser.add_argument("--work", type=Path, required=True, help="the folder to make (removed first)")
    parser.add_argument("--seeds", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    shutil.rmtree(args.work, ignore_errors=True)
    started = time.perf_counter()
    files = make_folder(args.template, args.work, args.seeds)
    print(f"made {files} finished cell files in {time.perf_counter() - started:.1f} s", flush=True)
    command = [
        sys.executable,
        "-m",
        "bench.cli",
        "plan",
        "quick",
        "--set",
        f"seeds={args.seeds}",
        "--out",
        str(args.work),
    ]
    planned = subprocess.run(command, capture_output=True, text=True).stdout
    if (
        f"to do: 0 of {files} cells" not in planned
    ):  # the keys must be the run's, or the "resume" would run it all
        sys.exit(f"the folder is not finished for this revision: {planned[-1000:]}")
    starts, totals = [], []
    for _ in range(args.repeats):
        start, total, line = timed_resume(
            [
                sys.executable,
                "-m",
                "bench.cli",
                "run",
                "quick",
                "--set",
                f"seeds={args.seeds}",
                "--out",
                str(args.work),
            ]
        )
        starts.append(start)
        totals.append(total)
    print(line)
    print(
        f"resume of {files} finished cells: start {', '.join(f'{t:.2f}' for t in starts)} s (median "
        f"{statistics.median(starts):.2f} s); whole run {', '.join(f'{t:.1f}' for t in totals)} s (median "
        f"{statistics.median(totals):.1f} s)"
    )


if __name__ == "__main__":
    main()
