"""The tuning report: optimization history, parameter importance and accuracy against ratio."""

from __future__ import annotations

import html
from pathlib import Path

import optuna
import pandas as pd

from bench.core.files import atomic_write
from reports import figures
from reports.report import STYLE, _img, _render


def importance_table(studies: dict[str, optuna.Study]) -> pd.DataFrame:
    """fANOVA importance of each param, per study with two or more params and finished trials."""
    rows = []
    for name, study in studies.items():
        complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        if len(complete) < 2 or len(complete[0].params) < 2:
            continue
        try:
            found = optuna.importance.get_param_importances(study)
        except (RuntimeError, ValueError):  # e.g. every trial with one value: nothing to attribute
            continue
        rows += [{"study": name, "param": param, "importance": value} for param, value in found.items()]
    return pd.DataFrame(rows, columns=["study", "param", "importance"])


def history_figure(trials: pd.DataFrame):
    done = trials[trials["state"] == "COMPLETE"].sort_values("number").copy()
    if done.empty:
        return None
    done["best so far"] = done.groupby("study")["value"].cummax()
    grid = figures.sns.relplot(
        data=done,
        kind="line",
        x="number",
        y="best so far",
        hue="strategy",
        col="classifier",
        marker="o",
        height=3.5,
        aspect=1.3,
    )
    grid.set_axis_labels("trial", "best validation accuracy so far")
    return grid.figure


def importance_figure(importance: pd.DataFrame):
    if importance.empty:
        return None
    grid = figures.sns.catplot(
        data=importance,
        kind="bar",
        x="importance",
        y="param",
        col="study",
        col_wrap=2,
        height=2.5,
        aspect=1.8,
    )
    grid.set_titles("{col_name}")
    return grid.figure


def build_tuning_report(folder: Path, trials: pd.DataFrame, studies: dict[str, optuna.Study]) -> Path:
    """Write report.html / report.md and the figures and tables into the tuning folder."""
    importance = importance_table(studies)
    atomic_write(folder / "importance.csv", importance.to_csv(index=False))
    best = (
        trials[trials["state"] == "COMPLETE"]
        .sort_values("value", ascending=False)
        .groupby("study", sort=False)
        .head(1)
    )
    best_cols = ["study", "value"] + [c for c in best.columns if c.startswith("params_")]
    made = [
        (name, title, fig)
        for name, title, fig in (
            ("history", "Optimization history (validation accuracy)", history_figure(trials)),
            ("importance", "Parameter importance (fANOVA)", importance_figure(importance)),
            (
                "accuracy_vs_ratio",
                "Validation accuracy against the synthetic:real ratio",
                figures.accuracy_vs_ratio(trials),
            ),
        )
        if fig is not None
    ]
    pngs = [(name, title, _render(fig)) for name, title, fig in made]
    for name, _, png in pngs:
        atomic_write(folder / "figures" / f"{name}.png", png)
    counts = trials.groupby("study")["state"].value_counts().unstack(fill_value=0)
    md = [
        "# augbench tuning report",
        "",
        "Objective: validation accuracy (test data is not read). Every study has the same trial budget.",
        "",
        "## Trials per study",
        "",
        counts.to_markdown(),
        "",
        "## Best params per study",
        "",
        best[best_cols].to_markdown(index=False),
        "",
    ]
    md += [f"## {title}\n\n![{title}](figures/{name}.png)\n" for name, title, _ in pngs]
    atomic_write(folder / "report.md", "\n".join(md) + "\n")
    page = [
        "<!doctype html><html><head><meta charset='utf-8'><title>augbench "
        f"tuning</title><style>{STYLE}</style></head><body><h1>augbench tuning report</h1><p "
        "class='meta'>Objective: validation accuracy (test data is not read). Every study has the same trial "
        "budget.</p>",
        "<h2>Trials per study</h2>",
        counts.to_html(border=0),
        "<h2>Best params per study</h2>",
        best[best_cols].to_html(index=False, border=0),
    ]
    page += [f"<h2>{html.escape(title)}</h2>{_img(png, title)}" for _, title, png in pngs]
    atomic_write(folder / "report.html", "\n".join(page + ["</body></html>"]))
    return folder / "report.html"
