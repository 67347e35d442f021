"""`augbench plan`: what a protocol still has to do in its run folder (read, not written) and its cost."""
from __future__ import annotations

import json
from pathlib import Path

from bench.commands.checks import default_out, load_checked
from bench.core.files import atomic_write
from bench.costs.plan import Plan, make_plan
from bench.run.cell import expand_grid
from bench.run.store import RunStore
from bench.run.tasks import workers_for


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
