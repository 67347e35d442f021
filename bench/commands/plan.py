"""`augbench plan`: what a protocol still has to do in its run folder (read, not written) and its
cost; with ``--mde`` also the seeds a verdict needs to see a change of that size, and their cost."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from bench.commands.checks import Checked, default_out, load_checked
from bench.core.errors import UserError
from bench.core.files import atomic_write, check_writable
from bench.costs.plan import Plan, format_duration, make_plan
from bench.run.grid import resolve_grid
from bench.run.store import RunStore, read_results
from bench.run.tasks import workers_for
from reports.tables import seeds_needed


def plan_experiment(
    config_name: str | None,
    overrides: list[str],
    out: Path | None,
    json_path: Path | None = None,
    mde: float | None = None,
    retry_failed: bool = False,
) -> Plan:
    """Print what a protocol still has to do in its run folder (read, not written) and its cost
    (with ``retry_failed``, as ``run --retry-failed`` would do it); with ``mde`` (pp) the seeds each
    comparison needs for that minimum detectable effect, from the paired spread of the folder's
    earlier run, and what a run with that many seeds costs."""
    if json_path is not None:
        check_writable(json_path, "--json")
    checked = load_checked(config_name, overrides)
    out = out or default_out(checked.config)
    spread = _earlier_results(out) if mde is not None else None
    found = _plan(checked, out, retry_failed)
    print(found.describe())
    extra = {}
    if spread is not None:
        extra = _seeds_for(config_name, overrides, spread, mde, out)
    if json_path is not None:
        atomic_write(json_path, json.dumps({**found.to_dict(), **extra}, indent=2, default=str))
    return found


def _plan(checked: Checked, out: Path, retry_failed: bool = False) -> Plan:
    """The plan of the grid and its budget checks (at the steps ``auto`` found where the folder's cache
    holds its search; else at the recipe's, and the search, which ``plan`` does not run, is said)."""
    config, device = checked.config, checked.device
    resolved = resolve_grid(config, checked.hashes, checked.n_val, device, out / "cache", search=False)
    store = RunStore(out)
    done = store.done_keys(retry_failed)
    cells = resolved.replayed(store)
    grid = resolved.cells()
    if config.budget.steps == "auto" and not resolved.auto:
        print(
            f"augbench: budget.steps: auto is not searched yet in {out}: `run` searches first "
            f"({'every strategy' if config.budget.search == 'grid' else '`none`'} on the budget "
            "check's seeds per data set, regime and classifier, from the larger of "
            f"{config.budget.floor} steps and the recipe's budget, down or up until a doubling is converged "
            "by a resolved check); the estimate below is at the recipes' steps"
        )
    workers = workers_for(config, device, len([c for c in cells if c.key not in done]))
    found = make_plan(config, cells, done, out / "cache", device, workers, checked.data_seconds)
    if config.budget.check == "on":
        every = list({cell.key: cell for cell in cells + resolved.worst_case()}.values())
        worst = make_plan(config, every, done, out / "cache", device, workers, checked.data_seconds)
        found.worst_case = (
            f"worst case, if every check read budget.max_check_seeds seeds and every group kept rising "
            f"until budget.max_steps stops the raises: {worst.cells_todo} cells to run, {worst.headline()}"
        )
    doubled = [cell for cell in (c.generator_check() for c in grid) if cell is not None]
    if doubled:  # every generator at twice its steps: the fits alone, as if none were cached
        fits = make_plan(config, doubled, set(), out / "cache", device, workers, checked.data_seconds)
        found.generator_doubling = (
            f"doubling every generator's steps (the run never does it itself): {fits.generator_fits} "
            f"fit(s) at twice their steps, about {format_duration(fits.seconds.get('generator fits', 0.0))} "
            "of fitting, serial"
        )
    return found


def _earlier_results(out: Path) -> pd.DataFrame:
    """The results of the run in ``out``, whose paired spread --mde plans from."""
    path = out / "results.parquet"
    if not path.is_file():
        raise UserError(
            f"--mde: no earlier run of this protocol in {out} to take the paired spread from; run it "
            "first with a few seeds (augbench run CONFIG --set seeds=3), or give its folder with --out"
        )
    return read_results(path)


def _seeds_for(
    config_name: str | None,
    overrides: list[str],
    results: pd.DataFrame,
    mde: float,
    out: Path,
) -> dict:
    """Print, per comparison, the seeds its MDE needs to reach ``mde`` pp, and plan a run with the
    most of them; return both for the JSON."""
    table = seeds_needed(results, mde / 100)
    if table.empty:
        raise UserError(
            f"--mde: the run in {out} has no comparison against none with paired seeds to plan from"
        )
    level = table["level"].iloc[0]
    print(
        f"\nseeds for a minimum detectable effect of {mde:g} pp (80% power at Holm's strictest level "
        f"{level:.2g} = 0.05 / {len(table)} comparisons, from the paired spread of the run in {out}):"
    )
    for row in table.itertuples():
        needs = (
            "untestable (no spread)"
            if pd.isna(row.seeds_needed) and not row.sd > 0
            else "more than 1,000"
            if pd.isna(row.seeds_needed)
            else str(row.seeds_needed)
        )
        print(
            f"  {row.dataset}/{row.regime} {row.classifier} {row.strategy}: sd {100 * row.sd:.2f} pp over "
            f"{row.paired_seeds} seeds, MDE now {_pp(row.mde)}, seeds needed {needs}"
        )
    needed = table["seeds_needed"].dropna()
    extra = {"mde_pp": mde, "seeds_for_mde": table.to_dict(orient="records")}
    if needed.empty:
        print("  no comparison reaches it within 1,000 seeds")
        return extra
    most = int(needed.max())
    if most > 100:
        print(f"  the hardest needs {most} seeds, more than a config takes (seeds <= 100)")
        return extra
    bigger = load_checked(config_name, [*overrides, f"seeds={most}"])
    planned = _plan(bigger, default_out(bigger.config))
    print(
        f"  with {most} seeds (every comparison above): {planned.cells_todo} cells to run, "
        f"{planned.headline()} (augbench run CONFIG --set seeds={most})"
    )
    return {**extra, "seeds": most, "plan_at_those_seeds": planned.to_dict()}


def _pp(value: float) -> str:
    return "–" if math.isnan(value) else f"{100 * value:.1f} pp"
