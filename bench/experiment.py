"""``augbench run``: load and check a protocol, run its missing cells with progress, summarize."""
from __future__ import annotations

import sys
from pathlib import Path

from tqdm import tqdm

from bench import provenance
from bench.config import load_config
from bench.runner import cached_dataset, default_workers, execute, expand_grid
from bench.store import RunStore
from bench.summary import format_summary
from reports.report import build_report


def run_experiment(config_name: str | None, overrides: list[str], out: Path | None) -> Path:
    """Run a protocol into a run folder (resuming it) and return the folder."""
    config = load_config(config_name, overrides)
    device = provenance.resolve_device(config.device)
    datasets = {spec.name: cached_dataset(spec) for spec in config.datasets}  # fail early on bad data
    out = out or Path("runs") / f"{config.name}-{config.fingerprint[:8]}"
    store = RunStore(out)
    store.claim(config)
    started = provenance.now()

    cells = expand_grid(config, {name: ds.content_hash for name, ds in datasets.items()})
    done = store.done_keys()
    todo = [c for c in cells if c.key not in done]
    workers = min(config.workers or default_workers(device), max(1, len(todo)))
    print(f"augbench: {config.name}: {len(cells)} cells ({len(cells) - len(todo)} already done), "
          f"device {provenance.device_name(device)}, {workers} worker(s) -> {out}", file=sys.stderr)

    bar = tqdm(total=len(cells), initial=len(cells) - len(todo), unit="cell", file=sys.stderr,
               dynamic_ncols=True)
    running: list[str] = []

    def on_start(cell):
        running.append(cell.describe())
        bar.set_postfix_str(" | ".join(running[-workers:]), refresh=True)

    def on_done(cell, record):
        running.remove(cell.describe())
        if record["status"] != "ok":
            tqdm.write(f"failed: {cell.describe()}: {record['failure_reason']}", file=sys.stderr)
        bar.update(1)

    grid_order = [c.key for c in cells]
    try:
        execute(todo, store, device, workers, on_start, on_done)
    finally:
        bar.close()
        results = store.write_tables(grid_order) if store.done_keys() else None
    store.write_json("provenance.json", {"config_fingerprint": config.fingerprint, "started": started,
                                         "finished": provenance.now(), "versions": provenance.versions(),
                                         "revision": provenance.git_revision(),
                                         "device": provenance.device_name(device), "workers": workers})
    print(format_summary(results[results["key"].isin(set(grid_order))]))
    report = build_report(out)
    print(f"\nresults: {out}/results.csv (and .parquet, curves.csv, provenance.json)")
    print(f"report:  {report} (and report.md)")
    return out
