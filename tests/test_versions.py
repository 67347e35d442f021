"""Code versions in every key: a version bump recomputes exactly the cells and quality rows that
depend on the bumped component, and the tables never pool rows of different versions."""

import json

import pandas as pd
from tests_support import tiny_config_with

from strategies.gan import GAN

STRATEGIES = [
    "none",
    {"name": "classical", "label": "classical-basic", "params": {"policy": "basic"}},
    {"name": "gan", "params": {"steps": 20}},
    {"name": "vae", "params": {"steps": 150}},
    {"name": "hybrid", "params": {"generator": "vae", "generator_params": {"steps": 150}}},
]


def _cells(out):
    return {p.stem: p.read_text() for p in (out / "cells").glob("*.json")}


def _quality_entries(out):
    return {p.name for p in (out / "cache").glob("quality-*.json")}


def test_a_generator_version_bump_recomputes_exactly_its_cells(tmp_path, cli, monkeypatch):
    config = tiny_config_with(
        tmp_path, {"strategies": STRATEGIES, "seeds": 1, "classifiers": ["mlp"], "quality": {"samples": 50}}
    )
    out = tmp_path / "run"
    assert cli("run", config, "--out", out)[0] == 0
    cells, quality = _cells(out), _quality_entries(out)
    assert len(cells) == 5 and len(quality) == 5

    monkeypatch.setattr(GAN, "generator_version", GAN.generator_version + "-bumped")
    code, _, err = cli("run", config, "--out", out)
    assert code == 0
    assert "5 cells (4 already done)" in err and "1 cell file(s)" in err and "in no round of this run" in err
    after, quality_after = _cells(out), _quality_entries(out)
    assert {k: v for k, v in after.items() if k in cells} == cells  # every old file left as it was
    new = [json.loads(after[k]) for k in set(after) - set(cells)]
    assert [r["strategy"] for r in new] == ["gan"]
    assert json.loads(new[0]["versions"])["generator:gan"] == GAN.generator_version
    assert len(quality_after - quality) == 1  # only gan's quality row is recomputed

    results = pd.read_csv(out / "results.csv")
    assert len(results) == 5 and results["strategy"].is_unique  # the old gan row is not in the table
    assert (
        json.loads(results.set_index("strategy").loc["gan", "versions"])["generator:gan"]
        == GAN.generator_version
    )


def _files(out, kind):
    return {p.name: p.stat().st_mtime_ns for p in (out / "cache").glob(f"{kind}-*") if p.suffix != ".lock"}


def test_a_quality_version_bump_recomputes_the_quality_rows_and_nothing_else(tmp_path, cli, monkeypatch):
    import bench.quality.settings as settings

    config = tiny_config_with(
        tmp_path,
        {
            "strategies": ["none", {"name": "vae", "params": {"steps": 150}}],
            "seeds": 1,
            "classifiers": ["mlp"],
            "quality": {"samples": 50},
        },
    )
    out = tmp_path / "run"
    assert cli("run", config, "--out", out)[0] == 0
    cells, quality = _cells(out), _quality_entries(out)
    generators, evaluators = _files(out, "generator"), _files(out, "evaluator")
    assert len(quality) == 2 and generators and evaluators

    monkeypatch.setattr(settings, "QUALITY_VERSION", settings.QUALITY_VERSION + "-bumped")
    code, _, err = cli("run", config, "--out", out)
    assert code == 0 and "2 cells (0 already done)" in err, err
    assert len(_quality_entries(out) - quality) == 2  # every quality row computed again
    assert _files(out, "generator") == generators and _files(out, "evaluator") == evaluators  # nothing else
    results = pd.read_csv(out / "results.csv")
    assert (results["generator_cache_hit"].dropna() == True).all()  # noqa: E712 - a column of flags
    assert all(json.loads(v)["quality:metrics"] == settings.QUALITY_VERSION for v in results["versions"])
    assert set(_cells(out)) > set(cells)


def test_a_quality_version_bump_leaves_cells_without_quality_alone(tmp_path, monkeypatch):
    import bench.quality.settings as settings
    from bench.protocol.config import parse_config
    from bench.run.cell import expand_grid

    config = parse_config(
        {
            "name": "v",
            "datasets": ["digits"],
            "strategies": ["none"],
            "classifiers": ["mlp"],
            "quality": {"enabled": False},
        },
        "v",
    )
    before = [c.key for c in expand_grid(config, {"digits": "h"})]
    monkeypatch.setattr(settings, "QUALITY_VERSION", "bumped")
    assert [c.key for c in expand_grid(config, {"digits": "h"})] == before


def test_every_component_is_in_the_versions():
    from bench.protocol.config import parse_config
    from bench.run.cell import expand_grid

    config = parse_config(
        {"name": "v", "datasets": ["digits"], "strategies": STRATEGIES[1:], "classifiers": ["cnn"]}, "v"
    )
    versions = {c.strategy.label: c.versions for c in expand_grid(config, {"digits": "h"})}
    assert set(versions["classical-basic"]) == {
        "strategy:classical",
        "policy:basic",
        "classifier:cnn",
        "suite",
        "quality:metrics",
        "quality:evaluator",
        "quality:classifier:cnn",
        "quality:suite",
    }
    assert {"strategy:gan", "generator:gan"} <= set(versions["gan"])
    assert {"strategy:hybrid", "strategy:vae", "generator:vae", "strategy:classical", "policy:basic"} <= set(
        versions["hybrid"]
    )
