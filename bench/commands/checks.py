"""What every command that runs a protocol does first: load it and check it against its data, before
any folder is touched."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch

from bench.protocol.config import BenchConfig, load_config
from bench.run import provenance
from bench.run.cell import cached_dataset, check_grid
from bench.run.resolution import check_resolvable, validation_sizes
from bench.run.rounds import check_max_steps


@dataclass(frozen=True)
class Checked:
    """A protocol whose data loaded and whose regimes the data can fill."""

    config: BenchConfig
    device: torch.device
    hashes: dict[str, str]  # data set title -> content hash
    data_seconds: float  # how long loading the data took
    n_val: dict[str, int]  # data set title -> validation images


def load_checked(config_name: str | None, overrides: list[str], budget_check: bool = True) -> Checked:
    """Load and check a protocol: bad input fails here, before any folder is touched; with
    ``budget_check`` (run, plan) also the check's settings (tune trains no check)."""
    config = load_config(config_name, overrides)
    device = provenance.resolve_device(config.device)
    start = time.perf_counter()
    datasets = {spec.title: cached_dataset(spec) for spec in config.datasets}
    data_seconds = time.perf_counter() - start
    check_grid(config, datasets)
    n_val = validation_sizes(config, datasets)
    if budget_check:
        check_resolvable(config, n_val)
        check_max_steps(config, datasets)
    return Checked(
        config, device, {name: ds.content_hash for name, ds in datasets.items()}, data_seconds, n_val
    )


def default_out(config) -> Path:
    """The run folder a config writes to without --out: runs/<name>-<fingerprint prefix>."""
    return Path("runs") / f"{config.name}-{config.fingerprint[:8]}"
