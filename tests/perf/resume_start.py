"""How long a resume of a large grid whose cells are all done takes: the time from `augbench run`
to its exit when there is nothing left to run (reading the folder, the tables and the report).

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
    from bench.protocol.config import cohort_size, key_precision
    from bench.run.budget import grid_and_checks
    from bench.run.cell import expand_grid
    from bench.run.store import RunStore

    checked = load_checked("quick", [f"seeds={seeds}"])
    cohort, precision = cohort_size(checked.config, checked.device), key_precision(checked.config, checked.device)
    store = RunStore(work)
    store.claim(checked.config, checked.hashes)
    records = [json.loads(p.read_text()) for p in (template / "cells").glob("*.json")]
    by_cell = {(r["strategy"], r["classifier"], "budget_check_of" in r, r["replicate"]): r for r in records}
    template_seeds = 1 + max(r["replicate"] for r in records)
    cells = expand_grid(checked.config, checked.hashes, cohort, precision=precision)
    grid, checks = grid_and_checks(checked.config, checked.hashes, cohort, checked.n_val, None, precision)
    for cell in grid + checks:
        record = dict(by_cell[cell.strategy.label, cell.classifier, cell.is_budget_check,
                              cell.replicate % template_seeds])
        record.update(key=cell.key, replicate=cell.replicate, seed=cell.train_seed)
        if cell.is_budget_check:
            record["budget_check_of"] = next(c.key for c in cells if c.strategy == cell.strategy
                                             and c.classifier == cell.classifier and c.replicate == cell.replicate)
        store.write_cell(record)
    return len(grid) + len(checks)


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
    command = [sys.executable, "-m", "bench.cli", "plan", "quick", "--set", f"seeds={args.seeds}", "--out",
               str(args.work)]
    planned = subprocess.run(command, capture_output=True, text=True).stdout
    if f"to do: 0 of {files} cells" not in planned:  # the keys must be the run's, or the "resume" would run it all
        sys.exit(f"the folder is not finished for this revision: {planned[-1000:]}")
    times = []
    for _ in range(args.repeats):
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "bench.cli", "run", "quick", "--set", f"seeds={args.seeds}",
                               "--out", str(args.work)], capture_output=True, text=True)
        times.append(time.perf_counter() - started)
        if done.returncode != 0 or "already done" not in done.stderr:
            sys.exit(f"the resume failed: {done.stderr[-2000:]}")
        line = next(line for line in done.stderr.splitlines() if "already done" in line)
    print(line)
    print(f"resume of {files} finished cells: {', '.join(f'{t:.1f}' for t in times)} s "
          f"(median {statistics.median(times):.1f} s)")


if __name__ == "__main__":
    main()
