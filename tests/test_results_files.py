"""Result files: the process umask decides their mode, parquet and CSV hold the same types, each
strategy param has its own column, and the git revision is read once per run."""

import os

import pandas as pd
import pytest
from tests_support import fast_params, tiny_config_with

from bench.core.files import atomic_write
from bench.run import provenance
from bench.run.store import read_results


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_files_follow_the_umask(tmp_path, umask, mode):
    before = os.umask(umask)
    try:
        atomic_write(tmp_path / "file.txt", "text")
    finally:
        os.umask(before)
    assert (tmp_path / "file.txt").stat().st_mode & 0o777 == mode


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    from bench.cli import main

    tmp = tmp_path_factory.mktemp("files")
    calls = []
    real = provenance.git_revision
    provenance.git_revision = lambda: calls.append(1) or real()
    try:
        strategies = [
            "none",
            {"name": "classical", "label": "classical-basic", "params": {"policy": "basic"}},
            {"name": "gan", "params": fast_params("gan")},
        ]
        config = tiny_config_with(tmp, {"strategies": strategies, "classifiers": ["mlp"], "seeds": 1})
        assert main(["run", config, "--out", str(tmp / "run")]) == 0
    finally:
        provenance.git_revision = real
    return tmp / "run", len(calls)


def test_parquet_and_csv_hold_the_same_types(small_run):
    run, _ = small_run
    from_parquet, from_csv = read_results(run / "results.parquet"), read_results(run / "results.csv")
    pd.testing.assert_frame_equal(from_parquet, from_csv)
    plain = pd.read_parquet(run / "results.parquet")  # what a user reading the file directly gets
    pd.testing.assert_frame_equal(plain, from_parquet)
    assert str(plain["regime"].dtype) == "str" and (plain["regime"] == "5").all()
    assert str(plain["started"].dtype) == "datetime64[ns, UTC]" and str(plain["finished"].dtype) == str(
        plain["started"].dtype
    )
    assert str(plain["generator_cache_hit"].dtype) == "boolean"
    assert plain["generator_cache_hit"].isna().sum() == 2  # none and classical fit no generator


def test_each_strategy_param_has_its_own_column(small_run):
    run, _ = small_run
    results = read_results(run / "results.csv").set_index("strategy")
    assert results.loc["gan", "param_ratio"] == 1.0 and results.loc["gan", "param_steps"] == 20
    assert results.loc["classical-basic", "param_policy"] == "basic"
    assert pd.isna(results.loc["none", "param_ratio"]) and pd.isna(results.loc["gan", "param_policy"])


def test_files_are_readable_by_others_under_umask_022(small_run):
    run, _ = small_run
    for name in (
        "results.csv",
        "results.parquet",
        "curves.csv",
        "config.yaml",
        "provenance.json",
        "report/index.html",
    ):
        assert (run / name).stat().st_mode & 0o044 == 0o044, name  # the test process runs under umask 022


def test_the_revision_is_read_once_per_run(small_run):
    _, calls = small_run
    assert calls == 1


DTYPES = {"int": "Int64", "float": "float64", "bool": "boolean", "text": "str", "time": "datetime64[ns, UTC]"}
EXAMPLES = {"int": 7, "float": 0.25, "bool": True, "text": "a", "time": "2026-12-03T10:00:00+00:00"}


def test_every_declared_type_comes_back_from_parquet_and_csv_with_gaps(tmp_path):
    """Each declared column holds a value in one row and nothing in the other (a `none` row has no
    generator_steps, a failed row no budget_steps): it reads back with its declared type, the
    nullable one for whole numbers and flags, from both files."""
    from bench.protocol.columns import CELL_FILES_ONLY, COLUMNS
    from bench.run.store import RunStore

    tabled = [
        c
        for c in COLUMNS
        if c.type != "json" and c.stage != "store" and c.name != "key" and c.name not in CELL_FILES_ONLY
    ]
    full = {c.name: EXAMPLES[c.type] for c in tabled}  # the key is the index below
    identity = {
        "key": "k1",
        "dataset": "digits",
        "regime": "5",
        "classifier": "mlp",
        "strategy": "none",
        "status": "ok",
        "strategy_params": "{}",
        "replicate": 0,
    }
    gaps = {**identity, "key": "k2", "replicate": 1, "status": "failed"}
    store = RunStore(tmp_path)
    for record in ({**full, **identity}, gaps):
        store.write_cell(record)
    store.write_tables(["k1", "k2"])
    for name in ("results.parquet", "results.csv"):
        table = read_results(tmp_path / name).set_index("key")
        for column in tabled:
            assert str(table[column.name].dtype) == DTYPES[column.type], (
                name,
                column.name,
                table[column.name].dtype,
            )
            if column.name not in gaps:
                assert table.loc["k2", column.name] is pd.NA or pd.isna(table.loc["k2", column.name]), (
                    column.name
                )
        assert table.loc["k1", "generator_steps"] == 7 and pd.isna(table.loc["k2", "budget_steps"])
    plain = pd.read_parquet(tmp_path / "results.parquet")  # a user reading the file directly
    assert (
        str(plain["generator_steps"].dtype) == "Int64" and str(plain["budget_check_steps"].dtype) == "Int64"
    )
