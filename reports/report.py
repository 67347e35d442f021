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
from reports import figures
from reports.narrative import findings
from reports.tables import comparison_table, failures, per_seed_deltas

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


def display_table(part: pd.DataFrame) -> pd.DataFrame:
    """The comparison rows of one (dataset, regime, classifier) as strings for reading."""
    return pd.DataFrame({
        "strategy": part["strategy"],
        "seeds": part["seeds"].astype(str) + part["failed"].map(lambda f: f" ({f} failed)" if f else ""),
        "test acc % [95% CI]": [f"{_fmt(m, '.1f', 100)} [{_fmt(lo, '.1f', 100)}, {_fmt(hi, '.1f', 100)}]"
                                for m, lo, hi in zip(part["acc_mean"], part["acc_ci_low"], part["acc_ci_high"])],
        "Δ vs none pp [95% CI]": [NA if math.isnan(d) else
                                  f"{_fmt(d, '+.1f', 100)} [{_fmt(lo, '+.1f', 100)}, {_fmt(hi, '+.1f', 100)}]"
                                  for d, lo, hi in zip(part["delta_mean"], part["delta_ci_low"], part["delta_ci_high"])],
        "p (Holm)": part["p_holm"].map(lambda p: _fmt(p, ".3g")),
        "verdict": part["verdict"],
        "gap pp": part["gap_mean"].map(lambda v: _fmt(v, "+.1f", 100)),
        "FID": part["fid_evaluator"].map(lambda v: _fmt(v, ".2f")),
        "KID": part["kid_evaluator"].map(lambda v: _fmt(v, ".3f")),
        "IS": part["is_evaluator"].map(lambda v: _fmt(v, ".2f")),
        "prec.": part["precision_evaluator"].map(lambda v: _fmt(v, ".2f")),
        "recall": part["recall_evaluator"].map(lambda v: _fmt(v, ".2f")),
        "CAS %": part["cas_accuracy"].map(lambda v: _fmt(v, ".1f", 100)),
        "NN ratio": part["mem_nn_ratio"].map(lambda v: _fmt(v, ".2f")),
        "near-copies %": part["mem_near_copy_fraction"].map(lambda v: _fmt(v, ".1f", 100)),
        "fit s": part["generator_fit_seconds"].fillna(part["fit_seconds"]).map(lambda v: _fmt(v, ".1f")),
        "train s": part["train_seconds"].map(lambda v: _fmt(v, ".1f")),
    })


def _render(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    figures.plt.close(fig)
    return buffer.getvalue()


def make_figures(results, curves, table, trials) -> list[Figure]:
    specs = [
        ("accuracy", "Test accuracy with 95% CI", lambda: figures.accuracy_with_ci(table)),
        ("gain_heatmap", "Gain over none (pp), strategy x classifier", lambda: figures.gain_heatmap(table)),
        ("gain_per_seed", "Change against none, per paired seed", lambda: figures.gain_distribution(results)),
        ("gain_vs_quality", "Gain against FID / KID", lambda: figures.gain_vs_quality(table)),
        ("gap", "Train-test accuracy gap", lambda: figures.train_test_gap(results)),
        ("learning_curves", "Validation accuracy during training", lambda: figures.learning_curves(results, curves)),
        ("accuracy_vs_regime", "Accuracy against labelled images per class", lambda: figures.accuracy_vs_regime(results)),
        ("accuracy_vs_ratio", "Tuning: validation accuracy against the synthetic:real ratio",
         lambda: figures.accuracy_vs_ratio(trials)),
    ]
    made = []
    for name, title, draw in specs:
        fig = draw()
        if fig is not None:
            made.append(Figure(name, title, _render(fig)))
    return made


def _read_run(run_dir: Path):
    results_path = run_dir / "results.parquet"
    if not results_path.is_file():
        raise UserError(f"{run_dir} holds no results.parquet; give the folder of an `augbench run`")
    results = pd.read_parquet(results_path)
    if results.empty:
        raise UserError(f"{run_dir}/results.parquet has no rows yet; run the protocol first")
    results["regime"] = results["regime"].astype(str)
    curves_path = run_dir / "curves.csv"
    curves = pd.read_csv(curves_path) if curves_path.is_file() and curves_path.stat().st_size > 1 else pd.DataFrame()
    trials_path = run_dir / "tuning" / "trials.csv"
    trials = pd.read_csv(trials_path) if trials_path.is_file() else pd.DataFrame()
    config = yaml.safe_load((run_dir / "config.yaml").read_text()) if (run_dir / "config.yaml").is_file() else {}
    provenance = json.loads((run_dir / "provenance.json").read_text()) if (run_dir / "provenance.json").is_file() else {}
    return results, curves, trials, config, provenance


def build_report(run_dir: Path) -> Path:
    """Write RUN_DIR/report/{index.html, report.md, figures/, tables/}; return the HTML path."""
    run_dir = Path(run_dir)
    results, curves, trials, config, provenance = _read_run(run_dir)
    table = comparison_table(results)
    out = run_dir / "report"
    tables = {"comparison": table, "failures": failures(results), "per_seed_deltas": per_seed_deltas(results)}
    for name, frame in tables.items():
        atomic_write(out / "tables" / f"{name}.csv", frame.to_csv(index=False))
    made = make_figures(results, curves, table, trials)
    for figure in made:
        atomic_write(out / "figures" / f"{figure.name}.png", figure.png)
    grids = sorted((run_dir / "samples").glob("*.png")) if (run_dir / "samples").is_dir() else []
    said = findings(table, results)
    context = {"name": (config.get("config") or {}).get("name", run_dir.name), "provenance": provenance,
               "fingerprint": config.get("fingerprint", "?"), "cells": len(results)}
    atomic_write(out / "index.html", render_html(context, said, table, made, grids, list(tables)))
    atomic_write(out / "report.md", render_markdown(context, said, table, made, grids, list(tables)))
    return out / "index.html"


def _groups(table: pd.DataFrame):
    return table.groupby(["dataset", "regime", "classifier"], sort=False)


def _provenance_lines(context) -> list[str]:
    p = context["provenance"]
    versions = ", ".join(f"{k} {v}" for k, v in (p.get("versions") or {}).items())
    return [f"config `{context['name']}` (fingerprint {context['fingerprint']}), {context['cells']} cells",
            f"revision {p.get('revision', '?')}, device {p.get('device', '?')}",
            f"started {p.get('started', '?')}, finished {p.get('finished', '?')}",
            f"versions: {versions}"]


def render_markdown(context, said, table, made, grids, table_names) -> str:
    lines = [f"# augbench report: {context['name']}", ""]
    lines += [f"- {line}" for line in _provenance_lines(context)] + ["", "## What this run says", ""]
    lines += [f"- {line}" for line in said] + [""]
    lines += ["## Results", "", "Accuracy, gap and CAS in %; Δ in percentage points (pp) against `none` with the "
              "same seeds; p from paired t-tests, Holm-corrected over all comparisons; FID/KID/IS/precision/recall "
              "in the evaluator network's feature space.", ""]
    for (dataset, regime, classifier), part in _groups(table):
        lines += [f"### {dataset}, {regime} per class, {classifier}", "",
                  display_table(part).to_markdown(index=False), ""]
    lines += ["## Figures", ""]
    lines += [f"### {f.title}\n\n![{f.title}](figures/{f.name}.png)\n" for f in made]
    if grids:
        lines += ["## Samples (per class: real on the left, generated on the right)", ""]
        lines += [f"![{g.stem}](../samples/{g.name})\n" for g in grids]
    lines += ["## Tables (CSV)", ""] + [f"- [tables/{n}.csv](tables/{n}.csv)" for n in table_names]
    return "\n".join(lines) + "\n"


STYLE = """
body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;font-size:13px;margin:.5em 0 1.5em}
th,td{border:1px solid #ccc;padding:3px 6px;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
img{max-width:100%;border:1px solid #eee}.grid img{image-rendering:pixelated;width:320px}
.meta{color:#555;font-size:13px}li{margin:.3em 0}
"""


def _img(png: bytes, alt: str, klass: str = "") -> str:
    data = base64.b64encode(png).decode()
    return f'<img class="{klass}" alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def render_html(context, said, table, made, grids, table_names) -> str:
    e = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>augbench report: {e(context['name'])}</title>",
             f"<style>{STYLE}</style></head><body>", f"<h1>augbench report: {e(context['name'])}</h1>",
             "<ul class='meta'>" + "".join(f"<li>{e(line)}</li>" for line in _provenance_lines(context)) + "</ul>",
             "<h2>What this run says</h2><ul>" + "".join(f"<li>{e(line)}</li>" for line in said) + "</ul>",
             "<h2>Results</h2><p class='meta'>Accuracy, gap and CAS in %; Δ in percentage points against "
             "<code>none</code> with the same seeds; p from paired t-tests, Holm-corrected over all comparisons; "
             "FID/KID/IS/precision/recall in the evaluator network's feature space.</p>"]
    for (dataset, regime, classifier), part in _groups(table):
        parts.append(f"<h3>{e(str(dataset))}, {e(str(regime))} per class, {e(str(classifier))}</h3>")
        parts.append(display_table(part).to_html(index=False, border=0, escape=True))
    parts.append("<h2>Figures</h2>")
    parts += [f"<h3>{e(f.title)}</h3>{_img(f.png, f.title)}" for f in made]
    if grids:
        parts.append("<h2>Samples</h2><p class='meta'>Per class: real training images on the left, generated on "
                     "the right.</p><div class='grid'>")
        parts += [f"<h4>{e(g.stem)}</h4>{_img(g.read_bytes(), g.stem, 'grid')}" for g in grids]
        parts.append("</div>")
    parts.append("<h2>Tables (CSV)</h2><ul>" + "".join(
        f"<li><a href='tables/{n}.csv'>tables/{n}.csv</a></li>" for n in table_names) + "</ul></body></html>")
    return "\n".join(parts)
