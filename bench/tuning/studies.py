"""``augbench tune``: one Optuna study per (data, regime, strategy, classifier), the same trial
budget for every strategy, objective = validation accuracy (test data is never read).

Trials use replicate seeds from TUNE_REPLICATE_OFFSET on, so the evaluation run of the tuned
config (seeds 0, 1, ...) uses fresh seeds. Storage is any SQLAlchemy URL (default: SQLite in the
output folder); several `augbench tune` processes on one PostgreSQL study share its budget. A
killed worker's trial is failed by its stale heartbeat and retried, so no trial is lost.
"""

from __future__ import annotations

import os
import time
import warnings
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

import optuna
import pandas as pd
import torch
import yaml
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback, fail_stale_trials
from optuna.trial import TrialState

from bench.core.errors import UserError, first_line
from bench.core.files import atomic_write
from bench.core.secrets import masked, scrubbed
from bench.core.seeding import derive_seed
from bench.core.strategy import STRATEGIES, Param
from bench.data.sets import DatasetEntry
from bench.data.splits import Regime, make_split, regime_label
from bench.protocol.config import (
    BenchConfig,
    StrategyEntry,
    classifiers_plain,
    datasets_plain,
    regimes_plain,
    with_changes,
)
from bench.protocol.registries import load_registries
from bench.run import provenance
from bench.run.cell import Cell, cached_dataset
from bench.run.stages import train_cell

TUNE_REPLICATE_OFFSET = 1000
HEARTBEAT_SECONDS = 5
GRACE_SECONDS = 15
COUNTED = (TrialState.COMPLETE, TrialState.PRUNED)

optuna.logging.set_verbosity(optuna.logging.WARNING)
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # heartbeats are documented


class SurplusTrial(Exception):
    """A trial started by a race between workers after the budget was already taken."""


@dataclass(frozen=True)
class StudyTarget:
    """What one Optuna study tunes: a strategy on a (data set, regime, classifier)."""

    dataset: DatasetEntry
    data_hash: str
    regime: Regime
    entry: StrategyEntry
    classifier: str

    @property
    def regime_label(self) -> str:
        return regime_label(self.regime)

    def name(self, prefix: str) -> str:
        return f"{prefix}/{self.dataset.title}/{self.regime_label}/{self.entry.label}/{self.classifier}"


def studies_of(config: BenchConfig, data_hashes: dict[str, str]) -> list[StudyTarget]:
    """A study per (data, regime, strategy, classifier); strategies with no search space are skipped."""
    return [
        StudyTarget(d, data_hashes[d.title], r, s, c)
        for d in config.datasets
        for r in config.regimes
        for s in config.strategies
        if STRATEGIES.get(s.name).search_space()
        for c in config.classifier_labels
    ]


def suggest(trial: optuna.Trial, space: dict[str, Param]) -> dict:
    """The trial's values for a strategy's search space: categorical, int or float, log where declared."""
    values = {}
    for name, spec in space.items():
        if spec.choices is not None:
            values[name] = trial.suggest_categorical(name, list(spec.choices))
        elif isinstance(spec.default, int):
            values[name] = trial.suggest_int(name, int(spec.low), int(spec.high), log=spec.log)
        else:
            values[name] = trial.suggest_float(name, spec.low, spec.high, log=spec.log)
    return values


def make_trial_objective(
    spec: StudyTarget, config: BenchConfig, n_trials: int, device, cache_dir: Path, revision: str
):
    """Mean final validation accuracy over ``config.tune.seeds`` replicates; prunes on the curve."""
    cls = STRATEGIES.get(spec.entry.name)
    trial_config = with_changes(config, quality={"enabled": False})

    def objective(trial: optuna.Trial) -> float:
        earlier = [
            t
            for t in trial.study.get_trials(deepcopy=False, states=COUNTED + (TrialState.RUNNING,))
            if t.number < trial.number and not t.user_attrs.get("surplus")
        ]
        if len(earlier) >= n_trials:
            trial.set_user_attr("surplus", True)
            raise SurplusTrial(f"trial {trial.number} is beyond the budget of {n_trials}")
        trial.set_user_attr("worker", _worker_id())
        params = cls.resolve_params(
            {**spec.entry.params, **suggest(trial, cls.search_space())}, "tuned params"
        )
        entry = replace(spec.entry, params=params)
        dataset = cached_dataset(spec.dataset)
        accuracies = []
        for k in range(config.tune.seeds):
            cell = Cell.from_config(
                trial_config,
                dataset=spec.dataset,
                data_hash=spec.data_hash,
                regime=spec.regime,
                strategy=entry,
                classifier=spec.classifier,
                replicate=TUNE_REPLICATE_OFFSET + k,
            )
            split = make_split(dataset, spec.regime, config.split, cell.replicate)

            def on_eval(point: int, accuracy: float, seed_index: int = k) -> None:
                trial.report(accuracy, step=seed_index * config.eval_points + point)
                if trial.should_prune():
                    raise optuna.TrialPruned(
                        f"pruned at evaluation point {point} (validation {accuracy:.3f})"
                    )

            record, _ = train_cell(cell, device, cache_dir, dataset, split, revision, on_eval)
            if record["status"] != "ok":
                trial.set_user_attr("failure", record["failure_reason"])
                raise optuna.TrialPruned(record["failure_reason"])
            accuracies.append(record["curve"][-1]["val_accuracy"])
        return sum(accuracies) / len(accuracies)

    return objective


def _worker_id() -> str:
    return f"{os.uname().nodename}:{os.getpid()}"


def open_study(name: str, storage_url: str, worker_index: int = 0) -> optuna.Study:
    """Open (or create) a study. Its TPE seed derives from the study name and the worker index
    alone, so one worker with the same config proposes the same trials every time; workers that
    share a study need distinct indices (`augbench tune --worker-index`), or they propose alike."""
    # workers share the file
    engine = {"connect_args": {"timeout": 60}} if storage_url.startswith("sqlite") else None
    for attempt in range(3):  # workers starting together race to create the tables: the loser retries
        try:
            storage = RDBStorage(
                storage_url,
                engine_kwargs=engine,
                heartbeat_interval=HEARTBEAT_SECONDS,
                grace_period=GRACE_SECONDS,
                heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=3),
            )
            break
        except Exception as exc:  # SQLAlchemy raises many kinds for a bad URL or an unreachable server
            if attempt == 2:
                raise UserError(  # the first line of the message, not SQLAlchemy's pages of it
                    f"--storage {masked(storage_url)}: cannot open ({type(exc).__name__}: "
                    f"{scrubbed(first_line(exc), storage_url)}); give "
                    "an SQLAlchemy URL that this machine can open, e.g. sqlite:///PATH/optuna.db"
                ) from None
            time.sleep(1.0 + attempt)
    return optuna.create_study(
        storage=storage,
        study_name=name,
        direction="maximize",
        load_if_exists=True,
        sampler=optuna.samplers.TPESampler(seed=derive_seed("sampler", name, worker_index) % 2**32),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=2),
    )


def _counts(study: optuna.Study) -> Counter:
    return Counter(t.state for t in study.get_trials(deepcopy=False) if not t.user_attrs.get("surplus"))


def run_study(
    spec: StudyTarget,
    config: BenchConfig,
    n_trials: int,
    storage_url: str,
    prefix: str,
    device_type: str,
    cache_dir: str,
    revision: str,
    worker_index: int = 0,
) -> str:
    """Run trials until the study holds ``n_trials`` finished ones (with any other workers)."""
    load_registries(config.plugins)  # a worker process starts without the config's plugins
    name = spec.name(prefix)
    study = open_study(name, storage_url, worker_index)
    objective = make_trial_objective(
        spec, config, n_trials, torch.device(device_type), Path(cache_dir), revision
    )
    while True:
        counts = _counts(study)
        finished = sum(counts[s] for s in COUNTED)
        if finished >= n_trials:
            return name
        if not counts[TrialState.WAITING] and finished + counts[TrialState.RUNNING] >= n_trials:
            time.sleep(HEARTBEAT_SECONDS)  # other workers hold the rest, or a dead one's trial turns stale
            fail_stale_trials(study)  # ... and is then queued again (WAITING) by the retry callback
            continue
        study.optimize(objective, n_trials=1, catch=(SurplusTrial,))  # takes a queued trial first


def trials_table(specs: list[StudyTarget], studies: dict[str, optuna.Study], prefix: str) -> pd.DataFrame:
    """Every study's trials in one table, with their study, data set, regime, classifier and strategy
    (the surplus trials of several workers left out)."""
    frames = []
    for spec in specs:
        frame = studies[spec.name(prefix)].trials_dataframe(
            attrs=("number", "value", "state", "params", "user_attrs", "duration")
        )
        frames.append(
            frame.assign(
                study=spec.name(prefix),
                dataset=spec.dataset.title,
                regime=spec.regime_label,
                strategy=spec.entry.label,
                strategy_name=spec.entry.name,
                classifier=spec.classifier,
            )
        )
    table = pd.concat(frames, ignore_index=True)
    if "user_attrs_surplus" in table:
        table = table[table["user_attrs_surplus"] != True]  # noqa: E712 - NaN for the others
    return table


def best_params(study: optuna.Study) -> dict | None:
    """The params of the study's best complete trial (None before any completes)."""
    complete = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    return max(complete, key=lambda t: t.value).params if complete else None


def tuned_configs(
    config: BenchConfig, specs: list[StudyTarget], studies: dict[str, optuna.Study], prefix: str, out: Path
) -> list[Path]:
    """A config per (data, regime, classifier): `none`, each strategy as the config sets it and
    at its best tuned settings (label `<label>-tuned`), evaluated on fresh seeds by `augbench run`."""
    groups: dict[tuple, list[StudyTarget]] = {}
    for spec in specs:  # specs come in grid order, so the groups do too
        groups.setdefault((spec.dataset, spec.regime, spec.classifier), []).append(spec)
    written = []
    for group in groups.values():
        first = group[0]
        strategies = [dict(name=s.name, label=s.label, params=s.params) for s in config.strategies]
        for spec in group:
            best = best_params(studies[spec.name(prefix)])
            if best is not None:
                strategies.append(
                    dict(
                        name=spec.entry.name,
                        label=f"{spec.entry.label}-tuned",
                        params={**spec.entry.params, **best},
                    )
                )
        raw = {
            **config.raw,
            "name": f"{config.name}-tuned-{first.dataset.title.replace(':', '-')}-"
            f"{first.regime_label}-{first.classifier}",
            "datasets": datasets_plain((first.dataset,)),
            "regimes": regimes_plain((first.regime,)),
            "classifiers": classifiers_plain(
                tuple(e for e in config.classifiers if e.label == first.classifier)
            ),
            "strategies": strategies,
        }
        path = out / f"{raw['name']}.yaml"
        atomic_write(
            path,
            f"# written by `augbench tune` on {provenance.now()}: best validation params of each "
            f"study; evaluate with `augbench run {path}`\n" + yaml.safe_dump(raw, sort_keys=False),
        )
        written.append(path)
    return written
