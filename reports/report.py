"""``augbench report RUN_DIR``: a self-contained HTML report and a Markdown report of a run."""

from __future__ import annotations

import base64
import html
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

from bench.core.errors import UserError
from bench.core.files import atomic_write
from bench.run.budget import CheckFacts, read_budget, read_generators
from reports import figures
from reports.narrative import findings
from reports.tables import (
    class_gain_table,
    comparison_table,
    control_table,
    failures,
    marked,
    per_seed_deltas,
    quality_gain_points,
)

NA = "–"


@dataclass
class Figure:
    name: str
    title: str
    png: bytes


def _fmt(value, spec: str, scale: float = 1.0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return NA
    return format(value * scale, spec)


def _pct(value, spec: str = ".1f") -> str:
    return _fmt(value, spec, 100)


def _interval(mean, low, high, spec: str) -> str:
    return (
        NA
        if _is_missing(mean)
        else f"{_fmt(mean, spec, 100)} [{_fmt(low, spec, 100)}, {_fmt(high, spec, 100)}]"
    )


def _is_missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


QUALITY_KINDS = {
    "real": "real (the floor)",
    "augmented": "augmented real: distortion",
    "generated": "generated",
    "generated+augmented": "generated, augmented",
    "pseudo-labelled": "pool images, teacher's labels",
    "pseudo-labelled+augmented": "pool images, teacher's labels, augmented",
}


def accuracy_table(part: pd.DataFrame) -> pd.DataFrame:
    """The accuracy rows of one (dataset, regime, classifier), as strings for reading."""
    return pd.DataFrame(
        {
            "strategy": [marked(s, d) for s, d in zip(part["strategy"], part["fit_data"])],
            "fit saw": part["fit_data"],
            "seeds": part["seeds"].astype(str) + part["failed"].map(lambda f: f" ({f} failed)" if f else ""),
            "test acc % [95% t-CI]": [
                _interval(m, lo, hi, ".1f")
                for m, lo, hi in zip(part["acc_mean"], part["acc_ci_low"], part["acc_ci_high"])
            ],
            "Δ vs none pp [Holm-adjusted CI]": [
                _interval(d, lo, hi, "+.1f")
                for d, lo, hi in zip(part["delta_mean"], part["delta_hci_low"], part["delta_hci_high"])
            ],
            "p (Holm)": part["p_holm"].map(lambda p: _fmt(p, ".3g")),
            "verdict": part["verdict"],
            "MDE pp": part["mde"].map(lambda v: _fmt(v, ".1f", 100)),
            "balanced acc %": part["test_balanced_accuracy"].map(_pct),
            "macro-F1 %": part["test_macro_f1"].map(_pct),
            "NLL": part["test_nll"].map(lambda v: _fmt(v, ".3f")),
            "ECE %": part["test_ece"].map(_pct),
            "train−test gap pp": part["gap_mean"].map(lambda v: _fmt(v, "+.1f", 100)),
            "fit s": part["generator_fit_seconds"].fillna(part["fit_seconds"]).map(lambda v: _fmt(v, ".1f")),
            "train s": part["train_seconds"].map(lambda v: _fmt(v, ".1f")),
        }
    )


def quality_table(part: pd.DataFrame) -> pd.DataFrame:
    """The quality rows of one (dataset, regime): what was scored, at which N, against which floor."""
    part = part.drop_duplicates("strategy")
    chance = part["chance"].dropna()
    near_chance = part["mem_near_copy_chance"].dropna() if "mem_near_copy_chance" in part else pd.Series()
    agreement = (
        f"label agreement % (chance {_pct(chance.iloc[0], '.0f')})" if len(chance) else "label agreement %"
    )
    near = (
        f"near-copies % (chance {_pct(near_chance.iloc[0], '.0f')})" if len(near_chance) else "near-copies %"
    )
    return pd.DataFrame(
        {
            "strategy": [marked(s, d) for s, d in zip(part["strategy"], part["fit_data"])],
            "evaluator saw the fit's images": part["evaluator_overlaps_fit"].map({True: "yes", False: "no"}),
            "scored images": part["quality_kind"].map(
                lambda k: QUALITY_KINDS.get(k, NA) if isinstance(k, str) else NA
            ),
            "N": part["quality_n"].map(lambda v: _fmt(v, ".0f")),
            "KID ×10³ (real-vs-real at N)": [
                NA if _is_missing(k) else f"{_fmt(k, '.1f', 1e3)} ({_fmt(r, '.1f', 1e3)})"
                for k, r in zip(part["kid_evaluator"], part["kid_evaluator_ref_real"])
            ],
            "FID (real-vs-real at N)": [
                NA if _is_missing(f) else f"{_fmt(f, '.2f')} ({_fmt(r, '.2f')})"
                for f, r in zip(part["fid_evaluator"], part["fid_evaluator_ref_real"])
            ],
            "IS": part["is_evaluator"].map(lambda v: _fmt(v, ".2f")),
            "precision %": part["precision_evaluator"].map(_pct),
            "recall %": part["recall_evaluator"].map(_pct),
            agreement: part["evaluator_label_agreement"].map(_pct),
            "CAS %": part["cas_accuracy"].map(_pct),
            "NN ratio": part["mem_nn_ratio"].map(lambda v: _fmt(v, ".2f")),
            near: part["mem_near_copy_fraction"].map(_pct),
        }
    )


def _render(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    figures.plt.close(fig)
    return buffer.getvalue()


def make_figures(results, curves, table, trials) -> list[Figure]:
    """The run's figures (those it has something to show for; none where no cell succeeded, which
    leaves ``table`` without a row)."""
    if table.empty:
        return []
    specs = [
        ("accuracy", "Test accuracy (%) with 95% t-CIs over seeds", lambda: figures.accuracy_with_ci(table)),
        (
            "gain_heatmap",
            "Mean change in test accuracy against none (pp), strategy x classifier",
            lambda: figures.gain_heatmap(table),
        ),
        (
            "gain_per_seed",
            "Change against none (pp), per paired seed",
            lambda: figures.gain_distribution(results),
        ),
        (
            "gain_vs_quality",
            "Gain (pp, mean over classifiers) against KID: one point per generative strategy and seed",
            lambda: figures.gain_vs_quality(quality_gain_points(results)),
        ),
        (
            "gap",
            "Train − test accuracy gap (pp), mean and sd over seeds",
            lambda: figures.train_test_gap(results),
        ),
        (
            "learning_curves",
            "Validation accuracy (%) during training, mean over seeds",
            lambda: figures.learning_curves(results, curves),
        ),
        (
            "accuracy_vs_regime",
            "Test accuracy (%) against labelled images per class, 95% CI",
            lambda: figures.accuracy_vs_regime(results),
        ),
        (
            "accuracy_vs_ratio",
            "Tuning: validation accuracy (%) against the synthetic:real ratio",
            lambda: figures.accuracy_vs_ratio(trials),
        ),
    ]
    return [Figure(name, title, _render(fig)) for name, title, draw in specs if (fig := draw()) is not None]


def sample_figures(run_dir: Path, results: pd.DataFrame) -> list[Figure]:
    """A labelled grid per strategy (its first seed): real images, then what the classifier trains on."""
    if "sample_grid" not in results:
        return []
    rows = results.dropna(subset=["sample_grid"]).sort_values("replicate").drop_duplicates("strategy")
    made = []
    for row in rows.itertuples():
        path = run_dir / row.sample_grid
        if path.suffix == ".npz" and path.is_file():  # runs before protocol v2 saved bare PNGs
            title = f"{row.strategy} ({row.dataset}, {row.regime} per class, seed {row.replicate})"
            made.append(Figure(f"samples-{path.stem}", title, _render(figures.sample_grid(path, title))))
    return made


def read_run(run_dir: Path):
    """A run folder's results, curves, tuning trials, config and provenance (UserError where it has none)."""
    results_path = run_dir / "results.parquet"
    interrupted = (
        f"{run_dir} holds no finished tables: its run was interrupted; rerun `augbench run` with the "
        "same config and --out to finish and build the tables"
    )
    if not results_path.is_file():
        if (run_dir / "cells").is_dir():
            raise UserError(interrupted)
        raise UserError(f"{run_dir} holds no results.parquet; give the folder of an `augbench run`")
    results = pd.read_parquet(results_path)
    if results.empty:
        raise UserError(
            interrupted
            if (run_dir / "config.yaml").is_file()
            else f"{run_dir}/results.parquet has no rows; run the protocol first"
        )
    results["regime"] = results["regime"].astype(str)
    curves_path = run_dir / "curves.csv"
    curves = (
        pd.read_csv(curves_path)
        if curves_path.is_file() and curves_path.stat().st_size > 1
        else pd.DataFrame()
    )
    trials_path = run_dir / "tuning" / "trials.csv"
    trials = pd.read_csv(trials_path) if trials_path.is_file() else pd.DataFrame()
    config = (
        yaml.safe_load((run_dir / "config.yaml").read_text()) if (run_dir / "config.yaml").is_file() else {}
    )
    provenance = (
        json.loads((run_dir / "provenance.json").read_text())
        if (run_dir / "provenance.json").is_file()
        else {}
    )
    return results, curves, trials, config, provenance


def build_report(run_dir: Path) -> Path:
    """Write RUN_DIR/report/{index.html, report.md, figures/, tables/}; return the HTML path."""
    run_dir = Path(run_dir)
    results, curves, trials, config, provenance = read_run(run_dir)
    table = comparison_table(results)
    controls = control_table(results)
    out = run_dir / "report"
    tables = {
        "budget_check": read_budget(run_dir),
        "generator_check": read_generators(run_dir),
        "comparison": table,
        "failures": failures(results),
        "per_seed_deltas": per_seed_deltas(results),
        "quality_vs_gain": quality_gain_points(results),
        "class_gains": class_gain_table(results),
        "against_control": controls,
    }
    for name, frame in tables.items():
        atomic_write(out / "tables" / f"{name}.csv", frame.to_csv(index=False))
    made = make_figures(results, curves, table, trials)
    samples = sample_figures(run_dir, results)
    for figure in made + samples:
        atomic_write(out / "figures" / f"{figure.name}.png", figure.png)
    context = {
        "name": (config.get("config") or {}).get("name", run_dir.name),
        "provenance": provenance,
        "fingerprint": config.get("fingerprint", "?"),
        "cells": len(results),
    }
    notes = {group: _evaluator_note(part, results) for group, part in _groups(table)}
    facts = CheckFacts.of(config.get("config"))
    said = findings(table, results, controls, read_budget(run_dir), facts, read_generators(run_dir))
    sections = Sections(
        said,
        table,
        made,
        samples,
        list(tables),
        notes,
        tables["class_gains"],
        controls,
        tables["budget_check"],
        tables["generator_check"],
    )
    atomic_write(out / "index.html", render_html(context, sections))
    atomic_write(out / "report.md", render_markdown(context, sections))
    return out / "index.html"


@dataclass
class Sections:
    said: list[str]
    table: pd.DataFrame
    figures: list[Figure]
    samples: list[Figure]
    table_names: list[str]
    evaluator_notes: dict  # (dataset, regime) -> how the evaluator relates to the labelled images
    class_gains: pd.DataFrame  # long-tailed regimes: per-class change in recall against `none`
    controls: pd.DataFrame  # the semi-supervised protocol: pool-trained strategies against every control
    budget: pd.DataFrame  # the budget check of each group (bench/run/budget.py)
    generators: pd.DataFrame  # the generator check of each generative group

    def class_gains_of(self, dataset, regime) -> pd.DataFrame:
        gains = self.class_gains
        if gains.empty:
            return gains
        return gains[(gains["dataset"] == dataset) & (gains["regime"] == regime)].drop(
            columns=["dataset", "regime"]
        )


CLASS_GAINS = (
    "Per class (0 has the most labelled images), the mean change in test recall against `none` on the "
    "same seeds, in pp; 'smallest third' averages the third of the classes with the fewest labelled "
    "images."
)


LEGEND = (
    "Accuracies in %, changes in percentage points (pp) against `none` on the same seeds (same labelled "
    "images, initial weights and real batches). Intervals: test accuracy with a 95% Student-t interval over "
    "seeds; the change with a paired t-interval at the level at which Holm's procedure over every "
    "comparison of the run decided it, so it excludes 0 exactly when the verdict is better or worse "
    "(plain 95% intervals are in tables/comparison.csv). MDE: the minimum detectable effect, the change that "
    "the comparison's test had 80% power to see at its Holm level, from its paired per-seed spread; a "
    "smaller change could not be seen (`augbench plan CONFIG --mde PP` says how many seeds it would take). "
    "Quality in the evaluator network's features, at "
    "N distinct images per side, next to the real-vs-real floor at the same N; KID (unbiased) is the "
    "headline, FID is biased upward at small N and compares only at equal N. For augmented real images it "
    "measures distortion, not realism. † marks a strategy whose fit saw the unlabelled pool too (the "
    "semi-supervised protocol): credit a gain to generation only where it beats every control (pseudo-label, "
    "fixmatch), which use the same images without generating any."
)


CONTROLS = (
    "Each strategy whose fit saw the unlabelled pool against every control in the run, which use the "
    "same images without generating (pseudo-label, fixmatch), on the same seeds; changes in pp with the "
    "paired t-interval at the level at which Holm's procedure over this table decided them; ★ marks the "
    "strongest control (highest mean test accuracy). A gain is credited to generation only where it is "
    "better than every control."
)


BUDGET = (
    "Per data set, regime, classifier and strategy: the cells of its first seed(s) trained again at twice "
    "the budget (the run's final one: where a check still rose, the run doubled the budget from where it "
    "started, every strategy alike), on the validation images only; the mean gain in validation accuracy "
    "(pp) and the check's resolution (pp: the gain it had 80% power to see, one-sided at 5%, from the "
    "seeds' paired per-image differences). Converged: the gain is below budget.plateau and the "
    "resolution at most the plateau; "
    "rising: the gain reached the plateau; unresolved: the check could not tell (more checked seeds, more "
    "validation images or a larger plateau would); unchecked: no check (it was off, or failed)."
)


GENERATOR = (
    "Per data set, regime, classifier and strategy that fits a generator: the cells of the budget check's "
    "seeds trained again, at the same budget, with the generator fitted for twice its steps (a fit of its "
    "own), on the validation images only; the mean gain in validation accuracy (pp), the resolution and "
    "the outcome as for the budget check. Not converged: the verdict is 'undertrained generator'. The run "
    "never raises a generator's steps itself; the last column is what one doubled fit took."
)


def _check_rows(
    table: pd.DataFrame, steps: list[tuple[str, str]], extra: list[tuple[str, str, str]]
) -> pd.DataFrame:
    """A check's table (budget.csv, generator.csv) for reading: the group, the seeds checked, its
    ``steps`` columns (label, column) as whole numbers, gain, resolution, outcome and ``extra``
    (label, column, format). A column an older run lacks reads as a gap."""

    def column(name: str, form: str) -> pd.Series:
        return table.get(name, pd.Series(math.nan, index=table.index)).map(lambda v: _fmt(v, form))

    return pd.DataFrame(
        {
            "data set": table["dataset"],
            "regime": table["regime"],
            "classifier": table["classifier"],
            "strategy": table["strategy"],
            "seeds checked": table["checked_seeds"],
            **{label: column(name, ".0f") for label, name in steps},
            "val gain pp": column("val_gain_pp", "+.2f"),
            "resolution pp": column("resolution_pp", ".2f"),
            "outcome": table["outcome"],
            **{label: column(name, form) for label, name, form in extra},
        }
    )


def generator_rows(generators: pd.DataFrame) -> pd.DataFrame:
    """The generator check's table, for reading."""
    steps = [("generator steps", "generator_steps"), ("doubled", "check_generator_steps")]
    return _check_rows(generators, steps, [("doubled fit s", "fit_seconds_doubled", ".0f")])


def budget_rows(budget: pd.DataFrame) -> pd.DataFrame:
    """The budget check's table, for reading."""
    if "start_steps" not in budget:  # a run from before budgets were raised: it started where it ended
        budget = budget.assign(start_steps=budget["budget_steps"])
    steps = [("started at", "start_steps"), ("steps", "budget_steps"), ("doubled", "check_steps")]
    return _check_rows(budget, steps, [])


def control_rows(part: pd.DataFrame) -> pd.DataFrame:
    """The control comparisons of one (dataset, regime), as strings for reading."""
    return pd.DataFrame(
        {
            "classifier": part["classifier"],
            "strategy": part["strategy"],
            "control": [
                f"{c} ★" if strongest else c for c, strongest in zip(part["control"], part["strongest"])
            ],
            "seeds": part["paired_seeds"],
            "Δ vs control pp [Holm-adjusted CI]": [
                _interval(d, lo, hi, "+.1f")
                for d, lo, hi in zip(part["delta_mean"], part["delta_hci_low"], part["delta_hci_high"])
            ],
            "p (Holm)": part["p_holm"].map(lambda p: _fmt(p, ".3g")),
            "verdict": part["verdict"],
            "MDE pp": part["mde"].map(lambda v: _fmt(v, ".1f", 100)),
        }
    )


def _controls_of(sections, dataset, regime) -> pd.DataFrame:
    controls = sections.controls
    if controls.empty:
        return controls
    return controls[(controls["dataset"] == dataset) & (controls["regime"] == regime)]


def _groups(table: pd.DataFrame):
    return table.groupby(["dataset", "regime"], sort=False)


def _evaluator_note(part: pd.DataFrame, results: pd.DataFrame) -> str:
    rows = results[
        (results["dataset"] == part["dataset"].iloc[0]) & (results["regime"] == part["regime"].iloc[0])
    ]
    disjoint = rows["evaluator_disjoint"].dropna() if "evaluator_disjoint" in rows else pd.Series(dtype=bool)
    if len(disjoint) and disjoint.astype(bool).all():
        return "The evaluator was trained without any labelled image of the seed it scores."
    return (
        "The evaluator was trained on the whole training pool, labelled images included (the regime leaves "
        "too few others), so label agreement favours the real images here."
    )


def _provenance_lines(context) -> list[str]:
    p = context["provenance"]
    versions = ", ".join(f"{k} {v}" for k, v in (p.get("versions") or {}).items())
    return [
        f"config `{context['name']}` (fingerprint {context['fingerprint']}), {context['cells']} cells",
        f"revision {p.get('revision', '?')}, device {p.get('device', '?')}",
        f"started {p.get('started', '?')}, finished {p.get('finished', '?')}",
        f"versions: {versions}",
    ]


def _has_quality(part: pd.DataFrame) -> bool:
    return part["kid_evaluator"].notna().any()


def check_tables(sections: Sections) -> list[tuple[str, str, pd.DataFrame]]:
    """The checks' sections of the report (title, legend, table), those the run has."""
    found = [
        ("Budget check", BUDGET, sections.budget, budget_rows),
        ("Generator check", GENERATOR, sections.generators, generator_rows),
    ]
    return [(title, legend, rows(table)) for title, legend, table, rows in found if not table.empty]


def render_markdown(context, sections: Sections) -> str:
    lines = [f"# augbench report: {context['name']}", ""]
    lines += [f"- {line}" for line in _provenance_lines(context)] + ["", "## What this run says", ""]
    lines += [f"- {line}" for line in sections.said] + [""]
    for title, legend, rows in check_tables(sections):
        lines += [f"## {title}", "", legend, "", rows.to_markdown(index=False), ""]
    lines += ["## Results", "", LEGEND, ""]
    for (dataset, regime), part in _groups(sections.table):
        for classifier, rows in part.groupby("classifier", sort=False):
            lines += [
                f"### {dataset}, {regime} per class, {classifier}",
                "",
                accuracy_table(rows).to_markdown(index=False),
                "",
            ]
        if _has_quality(part):
            lines += [
                f"### {dataset}, {regime} per class: quality of what the classifier trains on",
                "",
                sections.evaluator_notes[(dataset, regime)],
                "",
                quality_table(part).to_markdown(index=False),
                "",
            ]
        controls = _controls_of(sections, dataset, regime)
        if not controls.empty:
            lines += [
                f"### {dataset}, {regime} per class: generation against the same unlabelled images",
                "",
                CONTROLS,
                "",
                control_rows(controls).to_markdown(index=False),
                "",
            ]
        gains = sections.class_gains_of(dataset, regime)
        if not gains.empty:
            lines += [
                f"### {dataset}, {regime}: per-class change in test recall",
                "",
                CLASS_GAINS,
                "",
                gains.to_markdown(index=False),
                "",
            ]
    lines += ["## Figures", ""]
    lines += [f"### {f.title}\n\n![{f.title}](figures/{f.name}.png)\n" for f in sections.figures]
    if sections.samples:
        lines += [
            "## Samples: what the classifier trains on",
            "",
            "One row per class; left of the divider real labelled images, right of it the images the "
            "classifier trains on (one view each).",
            "",
        ]
        lines += [f"### {f.title}\n\n![{f.title}](figures/{f.name}.png)\n" for f in sections.samples]
    lines += ["## Tables (CSV)", ""] + [f"- [tables/{n}.csv](tables/{n}.csv)" for n in sections.table_names]
    return "\n".join(lines) + "\n"


STYLE = """
body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;font-size:13px;margin:.5em 0 1.5em}
th,td{border:1px solid #ccc;padding:3px 6px;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
img{max-width:100%;border:1px solid #eee}
.meta{color:#555;font-size:13px}li{margin:.3em 0}
"""


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def render_html(context, sections: Sections) -> str:
    e = html.escape
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>augbench report: "
        f"{e(context['name'])}</title>",
        f"<style>{STYLE}</style></head><body>",
        f"<h1>augbench report: {e(context['name'])}</h1>",
        "<ul class='meta'>" + "".join(f"<li>{e(line)}</li>" for line in _provenance_lines(context)) + "</ul>",
        "<h2>What this run says</h2><ul>"
        + "".join(f"<li>{e(line)}</li>" for line in sections.said)
        + "</ul>",
    ]
    for title, legend, rows in check_tables(sections):
        parts += [
            f"<h2>{title}</h2><p class='meta'>{e(legend)}</p>",
            rows.to_html(index=False, border=0, escape=True),
        ]
    parts += [f"<h2>Results</h2><p class='meta'>{e(LEGEND)}</p>"]
    for (dataset, regime), part in _groups(sections.table):
        for classifier, rows in part.groupby("classifier", sort=False):
            parts.append(f"<h3>{e(str(dataset))}, {e(str(regime))} per class, {e(str(classifier))}</h3>")
            parts.append(accuracy_table(rows).to_html(index=False, border=0, escape=True))
        if _has_quality(part):
            parts.append(
                f"<h3>{e(str(dataset))}, {e(str(regime))} per class: quality of what the classifier "
                f"trains on</h3><p class='meta'>{e(sections.evaluator_notes[(dataset, regime)])}</p>"
            )
            parts.append(quality_table(part).to_html(index=False, border=0, escape=True))
        controls = _controls_of(sections, dataset, regime)
        if not controls.empty:
            parts.append(
                f"<h3>{e(str(dataset))}, {e(str(regime))} per class: generation against the same "
                f"unlabelled images</h3><p class='meta'>{e(CONTROLS)}</p>"
            )
            parts.append(control_rows(controls).to_html(index=False, border=0, escape=True))
        gains = sections.class_gains_of(dataset, regime)
        if not gains.empty:
            parts.append(
                f"<h3>{e(str(dataset))}, {e(str(regime))}: per-class change in test recall</h3>"
                f"<p class='meta'>{e(CLASS_GAINS)}</p>" + gains.to_html(index=False, border=0, escape=True)
            )
    parts.append("<h2>Figures</h2>")
    parts += [f"<h3>{e(f.title)}</h3>{_img(f.png, f.title)}" for f in sections.figures]
    if sections.samples:
        parts.append(
            "<h2>Samples: what the classifier trains on</h2><p class='meta'>One row per class; left of the "
            "divider real labelled images, right of it the images the classifier trains on.</p>"
        )
        parts += [f"<h3>{e(f.title)}</h3>{_img(f.png, f.title)}" for f in sections.samples]
    parts.append(
        "<h2>Tables (CSV)</h2><ul>"
        + "".join(f"<li><a href='tables/{n}.csv'>tables/{n}.csv</a></li>" for n in sections.table_names)
        + "</ul></body></html>"
    )
    return "\n".join(parts)
