"""Fault injection: kill a run's main process, or one of its workers, at random moments, and check
that the run folder stays exactly right.

    python tests/faults/inject.py --trials 20 --seed 0 [--work DIR]

First a small grid runs uninterrupted (the reference). Then each trial starts the same grid in a
fresh folder and, after a random delay, kills with SIGKILL one of three ways, or plants a bug, in
turn:
- the main process; the run is then started again to finish;
- one busy worker; the run must go on by itself, retrying the cell once (and saying so);
- one busy worker and then the fresh worker that retries its cell; the run must finish with that
  cell failed by the machine, and a rerun must try it again;
- a bug: the strategies' fit raises a KeyError for the cells of one fit seed, chosen at random
  (tests/faults/fault_plugin.py); the run must finish with exactly those cells failed with an
  error and their tracebacks, the rest as the reference, exit code 1; a rerun without the bug must
  run those cells again.
After each trial it checks that
- every cell of the grid has exactly one file and one row, and no other file is in cells/;
- every result column that is not a time, a memory figure or a cache flag is identical to the
  reference (bit-identical floats, and the same validation curves);
- no process of the run is left behind;
- no temporary file is left behind.
A kill counts only where it lands on work in flight: each trial waits until its run has written a
first cell (its workers are past their start), then a random moment, then until a worker is busy,
and kills there; a kill that found no cell in flight (the busy worker was on shared work, or between
cells) is tried again in a fresh folder, up to 3 times. The summary says how many trials' kills
landed with a cell in flight (a killed worker's cell retried or failed by the machine; a killed
main process with a worker busy on one), and in how many kills; at least 80% must, or the script
fails as if a check had.

It prints one line per trial and a summary, and exits 1 if any check failed.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[2]
GRID = {
    "name": "faults",
    "datasets": ["digits"],
    "regimes": [5],
    "split": {"seed": 0, "val_per_class": 10},
    "strategies": [
        "none",
        {"name": "classical", "label": "classical-basic", "params": {"policy": "basic"}},
        {"name": "vae", "params": {"steps": 150}},
    ],
    "classifiers": ["mlp", "cnn"],
    "seeds": 2,
    "budget": {"scale": 0.05, "check": "off"},
    "eval_points": 2,
    "quality": {"enabled": True, "samples": 50},
    "workers": 2,
    "plugins": ["fault_plugin"],
}
KINDS = 4
VOLATILE = ("started", "finished", "revision", "generator_cache_hit")
KILL_ATTEMPTS = 3  # kills a trial may take to land one with a cell in flight
ORPHAN_WAIT = 60.0  # seconds a worker may take to notice its dead parent (tests/test_signals.py's wait)
LANDED = 0.8  # the share of kills that must land with a cell in flight


def children(pid: int) -> list[int]:
    """The pids of a process's children."""
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return found


def alive(pid: int) -> bool:
    """Whether a process exists and is not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (OSError, IndexError):
        return False


def _start(config: Path, out: Path, fault_fit_seed: int | None = None) -> subprocess.Popen:
    """The grid's run into ``out``; with ``fault_fit_seed`` the fits of that seed raise (a bug)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), str(ROOT)])}
    env.pop("AUGBENCH_FAULT_FIT_SEED", None)
    if fault_fit_seed is not None:
        env["AUGBENCH_FAULT_FIT_SEED"] = str(fault_fit_seed)
    return subprocess.Popen(
        [sys.executable, "-m", "bench.cli", "run", str(config), "--out", str(out)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def fit_seeds(config: Path) -> dict[str, int]:
    """Each grid cell's fit seed, by key as the run makes it (the cells of one strategy and replicate
    share one)."""
    from bench.commands.checks import load_checked
    from bench.protocol.config import cohort_size, key_precision
    from bench.run.cell import expand_grid

    checked = load_checked(str(config), [])
    cells = expand_grid(
        checked.config,
        checked.hashes,
        cohort_size(checked.config, checked.device),
        precision=key_precision(checked.config, checked.device),
    )
    return {cell.key: cell.fit_seed for cell in cells}


def bug_trial(rng: random.Random, config: Path, out: Path, reference: Path) -> tuple[str, list[str]]:
    """A bug in the fits of one random fit seed: only its cells fail (with an error), the run goes on
    and exits 1; fixed, a rerun runs them again and the folder equals the reference."""
    seeds = fit_seeds(config)
    seed = rng.choice(sorted(set(seeds.values())))
    expected = sorted(key for key, fit_seed in seeds.items() if fit_seed == seed)
    process = _start(config, out, seed)
    _, err = process.communicate()
    what = f"a bug in the fit of seed {seed} ({len(expected)} cells); fixed and rerun"
    if process.returncode != 1 or f"{len(expected)} cell(s) raised an error" not in err:
        return what, [
            f"expected exit code 1 naming {len(expected)} errored cells, got {process.returncode}: "
            f"{err.strip()[-300:]}"
        ]
    results = pd.read_parquet(out / "results.parquet").set_index("key").sort_index()
    errored = sorted(results.index[results["failure_kind"] == "error"])
    if errored != expected:
        return what, [f"errored cells {errored} are not those of the bug {expected}"]
    if any(not (out / results.loc[key, "failure_traceback"]).is_file() for key in errored):
        return what, ["an errored cell has no traceback file"]
    rest, expected_rest = (
        _comparable(out)[0].drop(index=errored),
        _comparable(reference)[0].drop(index=errored),
    )
    shared = [c for c in expected_rest.columns if c in rest.columns]
    if not rest[shared].equals(expected_rest[shared]):
        return what, ["the cells without the bug differ from the reference"]
    rerun = _start(config, out)
    _, err = rerun.communicate()
    if rerun.returncode != 0 or f"{len(expected)} failed one(s) to try again" not in err:
        return what, [f"the rerun did not run the errored cells again (exit {rerun.returncode})"]
    return what, []


def _comparable(out: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    results = pd.read_parquet(out / "results.parquet").set_index("key").sort_index()
    keep = [c for c in results.columns if c not in VOLATILE and not c.endswith(("_seconds", "_mem_mb"))]
    curves = pd.read_csv(out / "curves.csv").sort_values(["key", "step"]).reset_index(drop=True)
    return results[keep], curves


def _problems(out: Path, reference: Path, run_pids: list[int]) -> list[str]:
    found = []
    keys = set(pd.read_parquet(reference / "results.parquet")["key"])
    files = sorted(p.name for p in (out / "cells").iterdir())
    if sorted(files) != sorted(f"{k}.json" for k in keys):
        found.append(f"cells/ holds {len(files)} files for {len(keys)} cells")
    results, curves = _comparable(out)
    expected, expected_curves = _comparable(reference)
    if not results.equals(expected):
        differing = [c for c in expected.columns if not results[c].equals(expected[c])]
        found.append(f"results differ from the reference in {differing or 'their rows'}")
    if not curves.equals(expected_curves):
        found.append("validation curves differ from the reference")
    left = [pid for pid in run_pids if alive(pid)]
    if left:
        found.append(f"processes left behind: {left}")
    temporary = [str(p.relative_to(out)) for p in out.rglob("*.tmp")]
    if temporary:
        found.append(f"temporary files left behind: {temporary}")
    return found


class Progress:
    """A run's standard error, read as it comes (by a thread of its own), so that a trial sees what
    the progress bar says is in flight."""

    def __init__(self, process: subprocess.Popen):
        self.chunks: list[str] = []
        self.thread = threading.Thread(target=self._read, args=(process.stderr.fileno(),), daemon=True)
        self.thread.start()

    def _read(self, fd: int) -> None:
        for chunk in iter(lambda: os.read(fd, 4096), b""):
            self.chunks.append(chunk.decode(errors="replace"))

    def text(self) -> str:
        """All the run wrote (once it has ended)."""
        self.thread.join(timeout=60)
        return "".join(self.chunks)

    def cells_only(self) -> bool:
        """Whether the progress bar last named only cells in flight (none of them on shared work: a
        generator fit, a quality row, say "CELL: vae fit 25/150")."""
        lines = "".join(self.chunks[-20:]).replace("\r", "\n").splitlines()
        last = next((line for line in reversed(lines) if "cell/s, " in line), "")
        in_flight = last.partition("cell/s, ")[2].rstrip().removesuffix("]").split(" | ")
        return bool(last) and all(entry and ": " not in entry for entry in in_flight)


def _wait_for_work(
    process: subprocess.Popen,
    progress: Progress,
    out: Path,
    rng: random.Random,
    duration: float,
    pids: set[int],
) -> tuple[float, list[int]]:
    """Wait until the run has written its first cell (its workers are warm), then a random moment
    within the first half of what is left, then until a worker is busy while only cells are in
    flight (at most 10 s); returns the seconds since the start and the busy workers (none where the
    run ended first, or no such moment came)."""
    start = time.monotonic()

    def waiting(until) -> None:
        while not until() and process.poll() is None:
            pids.update(children(process.pid))
            time.sleep(0.1)

    waiting(lambda: any((out / "cells").glob("*.json")) if (out / "cells").is_dir() else False)
    moment = time.monotonic() + rng.uniform(0.0, 0.5 * max(0.0, duration - (time.monotonic() - start)))
    waiting(lambda: time.monotonic() >= moment)
    end, workers = time.monotonic() + 10.0, []
    while process.poll() is None and not workers and time.monotonic() < end:
        pids.update(children(process.pid))
        workers = busy(sorted(pid for pid in children(process.pid) if alive(pid)))
        workers = workers if progress.cells_only() else []
    return time.monotonic() - start, workers


def trial(
    index: int, rng: random.Random, config: Path, work: Path, reference: Path, duration: float
) -> tuple[str, list[str], bool | None, int]:
    """One trial of a run that takes ``duration`` seconds, and its checks; a kill that found no cell
    in flight (a busy worker can be on shared work, or between cells) is tried again in a fresh
    folder, up to KILL_ATTEMPTS times. Returns (what was done, problems, whether the kill landed with
    a cell in flight: None for the bug trial, which kills nothing, and the kills it took)."""
    out = work / f"trial-{index}"
    kind = index % KINDS
    if kind == 3:
        what, problems = bug_trial(rng, config, out, reference)
        return what, problems or _problems(out, reference, []), None, 0
    for attempt in range(1, KILL_ATTEMPTS + 1):
        shutil.rmtree(out, ignore_errors=True)
        what, problems, landed = kill_trial(kind, rng, config, out, reference, duration)
        if landed or problems:
            break
    return what + (f" (kill {attempt} of {KILL_ATTEMPTS})" if attempt > 1 else ""), problems, landed, attempt


def kill_trial(
    kind: int, rng: random.Random, config: Path, out: Path, reference: Path, duration: float
) -> tuple[str, list[str], bool]:
    """One kill of ``kind`` (0: the main process, 1: a worker, 2: a worker and the one retrying its
    cell) while a worker is busy, and its checks: (what was done, problems, whether it landed with a
    cell in flight)."""
    process = _start(config, out)
    progress = Progress(process)
    pids: set[int] = set()
    delay, workers = _wait_for_work(process, progress, out, rng, duration, pids)
    running = {pid for pid in children(process.pid) if alive(pid)}  # the workers, multiprocessing's helper
    if process.poll() is not None or not workers:
        process.wait()
        progress.text()
        return "no moment with only cells in flight: no kill", _problems(out, reference, sorted(pids)), False
    if kind == 0:
        process.kill()
        process.wait()
        # a worker notices its dead parent within 0.5 s once it runs; one still starting (importing
        # torch) notices when it gets there, which took up to 60 s on a loaded machine
        deadline = time.monotonic() + ORPHAN_WAIT
        while (orphans := [pid for pid in pids if alive(pid)]) and time.monotonic() < deadline:
            time.sleep(0.2)
        rerun = _start(config, out)
        rerun.communicate()
        what = f"killed the main process after {delay:.1f} s, {len(workers)} worker(s) busy; resumed"
        if orphans:
            return what, [f"workers outlived the killed main process: {orphans}"], True
        if rerun.returncode != 0:
            return what, [f"the resumed run failed with exit code {rerun.returncode}"], True
        landed = True
    else:
        _kill(rng.choice(workers))
        retry_worker = _new_child(process, running, pids) if kind == 2 else None
        if retry_worker is not None:
            _kill(retry_worker)
        process.wait()
        err = progress.text()
        if process.returncode != 0:
            return (
                "killed a worker",
                [f"the run failed with exit code {process.returncode}: {err.strip()[-300:]}"],
                True,
            )
        landed = "retrying once" in err
        if retry_worker is None:
            # a worker killed between two cells has none to retry (it used CPU time a moment before)
            said = "saying it retried the cell" if landed else "no cell was in flight"
            what = f"killed a worker after {delay:.1f} s; the run went on, {said}"
        else:
            what = f"killed a worker after {delay:.1f} s and the one retrying its cell; rerun"
            results = pd.read_parquet(out / "results.parquet")
            kinds = (
                list(results.loc[results["status"] == "failed", "failure_kind"])
                if "failure_kind" in results
                else []
            )
            landed = bool(kinds)
            if not kinds:  # the first worker was between two cells: nothing was in flight, nothing lost
                what = f"killed a worker after {delay:.1f} s (no cell in flight) and the one after it"
                pids.update(children(process.pid))
                return what, _problems(out, reference, sorted(pids)), False
            if kinds != ["machine"]:
                return what, [f"expected one cell failed by the machine, found {kinds}"], True
            rerun = _start(config, out)
            _, err = rerun.communicate()
            if rerun.returncode != 0 or "1 failed one(s) to try again" not in err:
                return what, [f"the rerun did not try the failed cell again (exit {rerun.returncode})"], True
    pids.update(children(process.pid))
    return what, _problems(out, reference, sorted(pids)), landed


def busy(pids: list[int], interval: float = 0.3) -> list[int]:
    """Those of ``pids`` that used CPU time within ``interval`` seconds (a worker on a cell; an idle
    one waits for its next cell without any)."""

    def cpu(pid: int) -> int:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().split(") ")[1].split()
            return int(fields[11]) + int(fields[12])  # utime + stime
        except (OSError, IndexError):
            return -1

    before = {pid: cpu(pid) for pid in pids}
    time.sleep(interval)
    return [pid for pid in pids if cpu(pid) > before[pid] >= 0]


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _new_child(process: subprocess.Popen, known: set[int], pids: set[int], wait: float = 10.0) -> int | None:
    """The first child of ``process`` that is not in ``known`` (the worker that replaces a dead one
    and gets its cell first), or None when none starts within ``wait`` seconds (the dead worker was
    idle, or the run ended)."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline and process.poll() is None:
        fresh = [pid for pid in children(process.pid) if pid not in known and alive(pid)]
        pids.update(fresh)
        if fresh:
            time.sleep(0.5)  # it has its cell once it is started
            return fresh[0]
        time.sleep(0.05)
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--work", type=Path, default=None, help="folder for the runs (default: a temporary one)"
    )
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="augbench-faults-"))
    work.mkdir(parents=True, exist_ok=True)
    config = work / "faults.yaml"
    config.write_text(yaml.safe_dump(GRID))
    reference = work / "reference"
    shutil.rmtree(reference, ignore_errors=True)
    start = time.perf_counter()
    if _start(config, reference).wait() != 0:
        print("the uninterrupted reference run failed", file=sys.stderr)
        return 1
    duration = time.perf_counter() - start
    print(
        f"reference: {len(pd.read_parquet(reference / 'results.parquet'))} cells in {duration:.0f} s",
        flush=True,
    )
    rng = random.Random(args.seed)
    failed, kills, tries = 0, [], 0
    for index in range(args.trials):
        shutil.rmtree(work / f"trial-{index}", ignore_errors=True)
        what, problems, landed, attempts = trial(index, rng, config, work, reference, duration)
        tries += attempts
        failed += bool(problems)
        kills += [] if landed is None else [landed]
        print(
            f"trial {index:2d}: {what}: " + ("ok" if not problems else "FAILED: " + "; ".join(problems)),
            flush=True,
        )
    print(f"{args.trials - failed} of {args.trials} trials passed every check ({work})")
    print(
        f"{sum(kills)} of {len(kills)} trials' kills landed with a cell in flight (at least {LANDED:.0%} "
        f"must), in {tries} kills"
    )
    return 1 if failed or sum(kills) < LANDED * len(kills) else 0


if __name__ == "__main__":
    sys.exit(main())
