"""`tracking: {mlflow: URI}`: one MLflow run per cell under a parent run, read back from a real
local store; without it, nothing of MLflow is imported; a bad store is one clear error."""

import subprocess
import sys

import pandas as pd
import pytest
from conftest import ROOT
from tests_support import tiny_config_with

GENERATOR = {"name": "vae", "params": {"steps": 150}}


def test_each_cell_is_a_nested_mlflow_run_with_its_params_metrics_curve_and_grid(tmp_path, cli):
    mlflow = pytest.importorskip("mlflow")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    config = tiny_config_with(
        tmp_path,
        {
            "strategies": ["none", GENERATOR],
            "classifiers": ["mlp"],
            "seeds": 1,
            "quality": {"samples": 40},
            "eval_points": 3,
            "tracking": {"mlflow": uri, "experiment": "tiny-test"},
        },
    )
    code, _, err = cli("run", config, "--out", tmp_path / "run")
    assert code == 0, err
    results = pd.read_csv(tmp_path / "run" / "results.csv").set_index("key")
    curves = pd.read_csv(tmp_path / "run" / "curves.csv")

    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name("tiny-test")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    parent = parents[0]
    assert parent.data.params["name"] == "tiny" and parent.data.params["seeds"] == "1"
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} >= {
        "index.html",
        "report.md",
        "results.csv",
    }
    assert sorted(r.data.tags["augbench.key"] for r in children) == sorted(results.index)
    for run in children:
        row = results.loc[run.data.tags["augbench.key"]]
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.info.status == "FINISHED", run.data.tags.get("augbench.failure_reason")
        assert run.data.params["strategy"] == row["strategy_name"] and run.data.params["classifier"] == "mlp"
        assert run.data.metrics["test_accuracy"] == pytest.approx(row["test_accuracy"])
        history = sorted(
            (m.step, m.value) for m in client.get_metric_history(run.info.run_id, "curve_val_accuracy")
        )
        curve = curves[curves.key == run.data.tags["augbench.key"]]
        assert [step for step, _ in history] == list(curve.step) and len(history) >= 3
        assert [value for _, value in history] == pytest.approx(list(curve.val_accuracy))
        artifacts = [a.path for a in client.list_artifacts(run.info.run_id)]
        assert (len(artifacts) == 1 and artifacts[0].endswith(".png")) == (row["strategy_name"] == "vae")
        if row["strategy_name"] == "vae":
            assert run.data.metrics["fid_evaluator"] == pytest.approx(row["fid_evaluator"])
            assert run.data.params["params.ratio"] == "1.0"
    assert not (tmp_path / "mlruns").exists()  # artifacts sit next to the database, not in the cwd


def test_a_run_without_tracking_imports_nothing_of_mlflow(tmp_path):
    config = tiny_config_with(tmp_path, {"strategies": ["none"], "classifiers": ["mlp"], "seeds": 1})
    script = (
        "import sys; from bench.cli import main; code = main(['run', sys.argv[1], '--out', sys.argv[2]]); "
        "print('mlflow imported' if any(m.split('.')[0] == 'mlflow' for m in sys.modules) else 'clean'); "
        "sys.exit(code)"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, config, str(tmp_path / "run")],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "clean"


def test_tracking_without_mlflow_installed_is_a_clear_error(tmp_path, monkeypatch, cli):
    import bench.protocol.config as config_module

    real_find_spec = config_module.importlib.util.find_spec
    monkeypatch.setattr(
        config_module.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "mlflow" else real_find_spec(name, *a),
    )
    config = tiny_config_with(tmp_path, {"tracking": {"mlflow": "sqlite:///x.db"}})
    code, _, err = cli("run", config, "--out", tmp_path / "run")
    assert code == 2 and "tracking.mlflow" in err and "pip install 'augbench[mlflow]'" in err
    assert not (tmp_path / "run").exists()


def test_a_store_mlflow_cannot_use_is_a_clear_error_before_any_cell(tmp_path, cli):
    pytest.importorskip("mlflow")
    (tmp_path / "not-a-db").write_text("garbage")
    for uri in (f"sqlite:///{tmp_path / 'not-a-db'}", "http://127.0.0.1:9"):  # a corrupt store; no server
        config = tiny_config_with(tmp_path, {"tracking": {"mlflow": uri}})
        code, _, err = cli("run", config, "--out", tmp_path / "run")
        assert code == 2 and err.strip().splitlines()[-1].startswith(
            "augbench: error: config field tracking.mlflow"
        )
        assert not list((tmp_path / "run" / "cells").glob("*.json"))


def test_a_store_that_fails_mid_run_is_reported_once_and_the_run_goes_on(tmp_path, capsys):
    pytest.importorskip("mlflow")
    from bench.protocol.config import load_config
    from bench.run.cell import cached_dataset, expand_grid
    from bench.tracking.mlflow_runs import tracking

    config = load_config(
        tiny_config_with(tmp_path, {"tracking": {"mlflow": f"sqlite:///{tmp_path / 'm.db'}"}})
    )
    cells = expand_grid(config, {"digits": cached_dataset(config.datasets[0]).content_hash})
    with tracking(config, tmp_path, "test") as tracker:

        def refuse(*args, **kwargs):
            raise OSError("disk full")

        tracker.client.create_run = refuse
        for cell in cells[:2]:
            tracker.log_cell(cell, {"status": "ok", "test_accuracy": 0.5})
    warnings = [line for line in capsys.readouterr().err.splitlines() if "MLflow logging stopped" in line]
    assert len(warnings) == 1 and "disk full" in warnings[0]
