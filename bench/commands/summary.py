"""The compact end-of-run table: test accuracy and train-test gap, mean ± std over seeds."""

from __future__ import annotations

import pandas as pd


def summary_table(results: pd.DataFrame) -> pd.DataFrame:
    """One row per (dataset, regime, strategy), one column per classifier: 'acc ± std (gap g)' in %.
    Rows and columns keep the order in which they first appear in ``results``."""
    ok = results[results["status"] == "ok"] if "status" in results else results
    if ok.empty:
        return pd.DataFrame()
    stats = ok.groupby(["dataset", "regime", "strategy", "classifier"], sort=False).agg(
        acc_mean=("test_accuracy", "mean"),
        acc_std=("test_accuracy", "std"),
        gap_mean=("gap_accuracy", "mean"),
        seeds=("test_accuracy", "size"),
    )
    stats = stats.fillna({"acc_std": 0.0})
    cells = stats.apply(
        lambda r: f"{100 * r.acc_mean:5.1f} ± {100 * r.acc_std:4.1f} (gap {100 * r.gap_mean:+5.1f})", axis=1
    )
    table = cells.unstack("classifier").reindex(
        index=cells.index.droplevel("classifier").unique(), columns=ok["classifier"].unique()
    )
    table.columns.name = None
    return table


def format_summary(results: pd.DataFrame) -> str:
    """The table `run` prints at its end: test accuracy and gap per strategy x classifier, and the
    cells that failed."""
    table = summary_table(results)
    failed = int((results["status"] != "ok").sum()) if "status" in results else 0
    errored = int((results["failure_kind"] == "error").sum()) if "failure_kind" in results else 0
    lines = [
        "test accuracy % (mean ± std over seeds) and train-test accuracy gap, per strategy x classifier:"
    ]
    lines.append(table.to_string() if not table.empty else "(no successful cells)")
    if failed:
        raised = f" ({errored} raised an error: see failure_traceback)" if errored else ""
        lines.append(f"{failed} cell(s) failed{raised}; see the failure_reason column")
    return "\n".join(lines)
