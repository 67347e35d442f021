"""Seaborn figures of a run; each function returns a matplotlib Figure, or None when the run has
nothing to show for it."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from reports.tables import per_seed_deltas, regime_order, successful  # noqa: E402

sns.set_theme(style="whitegrid", context="notebook")


def _panels(table: pd.DataFrame):
    return list(table.groupby(["dataset", "regime"], sort=False))


def accuracy_with_ci(table: pd.DataFrame):
    """Mean test accuracy and its 95% CI, per strategy and classifier."""
    panels = _panels(table)
    fig, axes = plt.subplots(1, len(panels), figsize=(1.2 + 5.5 * len(panels), 4.2), squeeze=False)
    for ax, ((dataset, regime), part) in zip(axes[0], panels):
        strategies = list(dict.fromkeys(part["strategy"]))
        classifiers = list(dict.fromkeys(part["classifier"]))
        palette = sns.color_palette(n_colors=len(classifiers))
        for i, classifier in enumerate(classifiers):
            rows = part[part["classifier"] == classifier].set_index("strategy").reindex(strategies)
            x = [j + (i - (len(classifiers) - 1) / 2) * 0.18 for j in range(len(strategies))]
            err = [
                (rows["acc_mean"] - rows["acc_ci_low"]).fillna(0) * 100,
                (rows["acc_ci_high"] - rows["acc_mean"]).fillna(0) * 100,
            ]
            ax.errorbar(
                x, rows["acc_mean"] * 100, yerr=err, fmt="o", capsize=3, color=palette[i], label=classifier
            )
        ax.set_xticks(range(len(strategies)), strategies, rotation=35, ha="right")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(f"{dataset}, {regime} per class")
        ax.legend(title="classifier", fontsize=8)
    fig.tight_layout()
    return fig


def gain_heatmap(table: pd.DataFrame):
    """Mean change in test accuracy against `none` (pp), strategy x classifier."""
    compared = table[table["delta_mean"].notna()]
    if compared.empty:
        return None
    panels = _panels(compared)
    fig, axes = plt.subplots(
        1,
        len(panels),
        figsize=(1.5 + 4.5 * len(panels), 0.9 + 0.45 * compared["strategy"].nunique()),
        squeeze=False,
    )
    for ax, ((dataset, regime), part) in zip(axes[0], panels):
        grid = (part.pivot(index="strategy", columns="classifier", values="delta_mean") * 100).reindex(
            list(dict.fromkeys(part["strategy"]))
        )
        limit = max(1.0, float(grid.abs().max().max()))
        sns.heatmap(
            grid,
            annot=True,
            fmt="+.1f",
            cmap="RdBu",
            vmin=-limit,
            vmax=limit,
            ax=ax,
            cbar_kws={"label": "Δ accuracy vs none (pp)"},
        )
        ax.set_title(f"{dataset}, {regime} per class")
        ax.set_ylabel("")
    fig.tight_layout()
    return fig


def gain_vs_quality(points: pd.DataFrame):
    """Change in accuracy (mean over classifiers) against KID: one point per generative strategy and seed."""
    if points.empty or points["kid"].isna().all():
        return None
    data = points.assign(
        **{
            "Δ accuracy (pp)": points["gain"] * 100,
            "KID ×10³ (evaluator)": points["kid"] * 1e3,
            "seed": points["replicate"].astype(str),
        }
    )
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    sns.scatterplot(
        data=data, x="KID ×10³ (evaluator)", y="Δ accuracy (pp)", hue="strategy", style="seed", s=70, ax=ax
    )
    ax.axhline(0, color="grey", lw=1)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def train_test_gap(results: pd.DataFrame):
    """Train accuracy minus test accuracy, mean and sd over seeds."""
    ok = successful(results).assign(gap=lambda d: d["gap_accuracy"] * 100)
    grid = sns.catplot(
        data=ok,
        kind="bar",
        x="strategy",
        y="gap",
        hue="classifier",
        col="regime",
        row="dataset",
        errorbar="sd",
        height=3.8,
        aspect=1.5,
        sharey=False,
    )
    grid.set_axis_labels("", "train − test accuracy (pp)")
    for ax in grid.axes.flat:
        ax.tick_params(axis="x", rotation=35)
    return grid.figure


def learning_curves(results: pd.DataFrame, curves: pd.DataFrame):
    """Validation accuracy during training, mean over seeds."""
    if curves.empty:
        return None
    data = curves.merge(successful(results)[["key", "dataset", "regime", "strategy", "classifier"]], on="key")
    data["val_accuracy"] = data["val_accuracy"] * 100
    grid = sns.relplot(
        data=data,
        kind="line",
        x="step",
        y="val_accuracy",
        hue="strategy",
        col="classifier",
        row="regime",
        errorbar=None,
        height=3.5,
        aspect=1.3,
        facet_kws={"sharex": False},
    )
    grid.set_axis_labels("optimizer step", "validation accuracy (%)")
    return grid.figure


def accuracy_vs_regime(results: pd.DataFrame):
    """Test accuracy against labelled images per class (needs two regimes or more)."""
    ok = successful(results)
    if ok["regime"].nunique() < 2:
        return None
    data = ok.assign(regime_order=ok["regime"].map(regime_order)).sort_values("regime_order")
    data["regime"] = data["regime"].astype(str)
    data["test_accuracy"] = data["test_accuracy"] * 100
    grid = sns.relplot(
        data=data,
        kind="line",
        x="regime",
        y="test_accuracy",
        hue="strategy",
        col="classifier",
        marker="o",
        errorbar=("ci", 95),
        height=3.5,
        aspect=1.3,
        sort=False,
    )
    grid.set_axis_labels("labelled images per class", "test accuracy (%)")
    return grid.figure


def gain_distribution(results: pd.DataFrame):
    """Per-seed change against `none`: every paired seed as a point."""
    deltas = per_seed_deltas(results)
    if deltas.empty:
        return None
    deltas["Δ accuracy (pp)"] = deltas["delta"] * 100
    grid = sns.catplot(
        data=deltas,
        kind="strip",
        x="strategy",
        y="Δ accuracy (pp)",
        hue="classifier",
        col="regime",
        row="dataset",
        dodge=True,
        height=3.5,
        aspect=1.5,
    )
    for ax in grid.axes.flat:
        ax.axhline(0, color="grey", lw=1)
        ax.tick_params(axis="x", rotation=35)
    return grid.figure


def accuracy_vs_ratio(trials: pd.DataFrame):
    """Validation accuracy of finished tuning trials against the synthetic:real ratio (a pruned
    trial's value is only where it stopped, so it is left out)."""
    if trials.empty or "params_ratio" not in trials:
        return None
    data = trials[trials["params_ratio"].notna() & (trials["state"] == "COMPLETE")]
    if data.empty:
        return None
    data = data.assign(value=data["value"] * 100)
    grid = sns.relplot(
        data=data, x="params_ratio", y="value", hue="strategy", col="classifier", height=3.5, aspect=1.3
    )
    grid.set_axis_labels("synthetic : real ratio", "validation accuracy (%)")
    return grid.figure


def sample_grid(path, title: str):
    """One row per class (named), real labelled images left of a divider, the images the classifier
    trains on right of it; from the .npz the quality step saved."""
    saved = np.load(path)
    names = [str(n) for n in saved["class_names"]]
    per_class = max(
        1,
        max(
            int((saved[f"{side}_labels"] == c).sum()) for side in ("real", "shown") for c in range(len(names))
        ),
    )
    channels, height, width = saved["real_images"].shape[1:]
    gap = max(1, width // 4)
    canvas = np.full((len(names) * (height + 1), (2 * per_class) * (width + 1) + gap, channels), 1.0)

    def place(side: str, offset: int) -> None:
        images, labels = saved[f"{side}_images"], saved[f"{side}_labels"]
        for c in range(len(names)):
            for j, image in enumerate(images[labels == c][:per_class]):
                top, left = c * (height + 1), offset + j * (width + 1)
                canvas[top : top + height, left : left + width] = image.transpose(1, 2, 0) / 255.0

    place("real", 0)
    place("shown", per_class * (width + 1) + gap)
    fig, ax = plt.subplots(figsize=(min(16, 1.2 + 0.5 * 2 * per_class), 0.6 + 0.5 * len(names)))
    ax.imshow(
        canvas.squeeze(-1) if channels == 1 else canvas, cmap="gray", vmin=0, vmax=1, interpolation="nearest"
    )
    ax.axvline(per_class * (width + 1) + gap / 2 - 0.5, color="crimson", lw=2)
    ax.set_yticks([c * (height + 1) + height / 2 for c in range(len(names))], names)
    ax.set_xticks(
        [per_class * (width + 1) / 2, per_class * (width + 1) * 1.5 + gap],
        ["real (labelled)", f"trained on ({saved['kind']})"],
    )
    ax.tick_params(length=0)
    ax.grid(False)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig
