"""`augbench tune`: tune every strategy of a protocol (resuming its studies), then write the trials, the
tuned configs and the tuning report."""

from __future__ import annotations

import sys
import time
from functools import partial
from pathlib import Path

from bench.commands.checks import load_checked
from bench.core.errors import UserError
from bench.core.executor import Callbacks
from bench.core.files import atomic_write
from bench.core.secrets import masked, refuse_masked
from bench.run import provenance
from bench.run.store import RunStore
from bench.run.tasks import default_workers, make_executor
from bench.tuning.studies import open_study, run_study, studies_of, trials_table, tuned_configs
from reports.tuning import build_tuning_report


def tune_experiment(
    config_name: str | None,
    overrides: list[str],
    trials: int | None,
    storage: str | None,
    study_prefix: str | None,
    out: Path | None,
    workers: int | None = None,
    worker_index: int = 0,
) -> Path:
    """Tune every strategy of a protocol (resuming its studies), write the trials, the tuned configs
    and the tuning report; return the output folder."""
    checked = load_checked(config_name, overrides, budget_check=False)
    config, device = checked.config, checked.device
    specs = studies_of(config, checked.hashes)
    if not specs:
        raise UserError("config: no strategy with a search space to tune (none has no knobs)")
    n_trials = trials or config.tune.trials
    out = out or Path("runs") / f"tune-{config.name}-{config.fingerprint[:8]}"
    store = RunStore(out)
    store.check_claim(config)
    prefix = study_prefix or f"{config.name}-{config.fingerprint[:8]}"
    workers = workers or config.workers or default_workers(device, config.workers_per_gpu)
    executor = make_executor(device, workers, config.executor)
    tuning = out / "tuning"

    def open_studies() -> None:  # the storage's tables and the studies, before workers race to create them
        for spec in specs:
            open_study(spec.name(prefix), storage)

    if storage:  # a storage of the user's: it has to open before the folder is claimed
        refuse_masked(storage, "--storage", "give the URL with its password")
        open_studies()
    with executor.session():
        # a folder tunes one config; several workers of its studies may share it (no lock)
        store.claim(config, checked.hashes)
        tuning.mkdir(parents=True, exist_ok=True)
        if not storage:
            storage = f"sqlite:///{(tuning / 'optuna.db').resolve()}"
            open_studies()
        print(
            f"augbench tune: {len(specs)} studies x {n_trials} trials ({config.tune.seeds} seed(s) each), "
            f"storage {masked(storage)}, {workers} worker(s) -> {out}",
            file=sys.stderr,
        )
        task = partial(
            run_study,
            config=config,
            n_trials=n_trials,
            storage_url=storage,
            prefix=prefix,
            device_type=device.type,
            cache_dir=str(out / "cache"),
            revision=provenance.git_revision(),
            worker_index=worker_index,
        )
        start = time.perf_counter()
        executor.map_unordered(
            task, specs, Callbacks(on_done=lambda spec, name: print(f"  done: {name}", file=sys.stderr))
        )
    studies = {s.name(prefix): open_study(s.name(prefix), storage) for s in specs}
    table = trials_table(specs, studies, prefix)
    atomic_write(tuning / "trials.csv", table.to_csv(index=False))
    configs = tuned_configs(config, specs, studies, prefix, tuning)
    report = build_tuning_report(tuning, table, studies)
    print(f"tuned in {time.perf_counter() - start:.0f} s; trials: {tuning / 'trials.csv'}; report: {report}")
    for path in configs:
        print(f"evaluate on fresh seeds: augbench run {path}")
    return out
