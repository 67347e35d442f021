"""No credential in any log: the password of an Optuna storage, an MLflow tracking URI or a Ray
address is masked in every message, saved file and tracked param; a test greps every file a tune
and a tracked run write, and the captured output, for it."""

import importlib
from pathlib import Path

import pytest
from test_tune import TUNE_CONFIG, postgres  # noqa: F401 - the PostgreSQL fixture
from tests_support import tiny_config_with

from bench.core.secrets import masked, scrubbed

SECRET = "TopSecret-42"


def _leaks(folders: list[Path], *texts: str) -> list[str]:
    """The files under ``folders`` and the ``texts`` that hold SECRET."""
    files = [p for folder in folders for p in folder.rglob("*") if p.is_file()]
    return [str(p) for p in files if SECRET.encode() in p.read_bytes()] + [
        t[:200] for t in texts if SECRET in t
    ]


def test_urls_are_masked_and_messages_scrubbed():
    assert (
        masked(f"postgresql+psycopg://ann:{SECRET}@db:5432/optuna")
        == "postgresql+psycopg://ann:***@db:5432/optuna"
    )
    assert masked(f"http://h:5000/?token={SECRET}&x=1") == "http://h:5000/?token=***&x=1"
    assert masked("sqlite:///runs/optuna.db") == "sqlite:///runs/optuna.db"  # nothing to hide: unchanged
    encoded = "postgresql://ann:Top%40Secret@db/x"  # '@' in a password is written %40
    assert scrubbed("could not parse postgresql://ann:Top@Secret@db/x", encoded) == (
        "could not parse postgresql://ann:***@db/x"
    )


def test_a_tune_with_a_password_in_its_storage_writes_and_prints_it_nowhere(postgres, tmp_path, cli):  # noqa: F811
    storage = postgres.replace("@", f":{SECRET}@", 1)  # the test server trusts loopback: any password
    config = tiny_config_with(tmp_path, {**TUNE_CONFIG, "tune": {"trials": 1, "seeds": 1}})
    code, out, err = cli("tune", config, "--storage", storage, "--out", tmp_path / "tune")
    assert code == 0, err
    assert "storage postgresql://" in err and ":***@" in err
    assert not _leaks([tmp_path / "tune"], out, err)


def test_a_storage_that_cannot_open_is_refused_without_its_password(tmp_path, cli):
    config = tiny_config_with(tmp_path, TUNE_CONFIG)
    storage = f"postgresql+psycopg://ann:{SECRET}@127.0.0.1:1/optuna"  # nothing listens on port 1
    code, out, err = cli("tune", config, "--storage", storage, "--out", tmp_path / "tune")
    assert code == 2 and err.startswith("augbench: error: --storage postgresql+psycopg://ann:***@"), err
    assert not _leaks([], out, err) and not (tmp_path / "tune").exists()


def test_a_tracked_run_with_a_password_in_its_uri_writes_and_logs_it_nowhere(tmp_path, cli, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    store = f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}"
    (tmp_path / "mlflow").mkdir()
    monkeypatch.chdir(tmp_path / "mlflow")  # where MLflow puts the artifacts of a store that names no place
    modules = [importlib.import_module(m) for m in ("bench.commands.run", "bench.tracking.mlflow_runs")]
    for module in modules:  # no server here: a store stands in (imported first: run binds the name)
        monkeypatch.setattr(module, "check_reachable", lambda uri: None)
    monkeypatch.setattr(mlflow, "MlflowClient", lambda uri: mlflow.tracking.MlflowClient(store))
    uri = f"http://ann:{SECRET}@tracking.example:5000"
    change = {"strategies": ["none"], "classifiers": ["mlp"], "seeds": 1, "tracking": {"mlflow": uri}}
    code, out, err = cli("run", tiny_config_with(tmp_path, change), "--out", tmp_path / "run")
    assert code == 0, err
    runs = mlflow.tracking.MlflowClient(store).search_runs(["0", "1"])
    params = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags).data.params
    assert params["tracking.mlflow"] == "http://ann:***@tracking.example:5000"  # the parent's config
    assert not _leaks([tmp_path / "run", tmp_path / "mlflow"], out, err)


@pytest.mark.parametrize(
    "change",
    [
        {"tracking": {"mlflow": f"http://ann:{SECRET}@127.0.0.1:1"}},
        {"executor": {"name": "ray", "address": f"ray://ann:{SECRET}@127.0.0.1:1"}},
    ],
)
def test_an_unreachable_service_is_refused_without_its_password(tmp_path, cli, change):
    pytest.importorskip("mlflow" if "tracking" in change else "ray")
    code, out, err = cli("run", tiny_config_with(tmp_path, change), "--out", tmp_path / "run")
    assert code == 2 and err.startswith("augbench: error:") and ":***@" in err, err
    assert not _leaks([], out, err) and not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"tracking": {"mlflow": "http://ann:***@tracking.example:5000"}}, "tracking.mlflow"),
        ({"executor": {"name": "ray", "address": "ray://ann:***@127.0.0.1:10001"}}, "executor.address"),
    ],
)
def test_a_url_whose_password_is_the_saved_mask_is_refused_naming_its_field(tmp_path, cli, change, field):
    """A tuned config or a run folder's config.yaml holds ``***`` where the password was: running it
    as it is would connect with the password ``***``."""
    code, out, err = cli("run", tiny_config_with(tmp_path, change), "--out", tmp_path / "run")
    assert code == 2 and err.startswith(
        f"augbench: error: config field {field}: a credential in it is ***"
    ), err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "run").exists()


def test_a_storage_whose_password_is_the_printed_mask_is_refused(tmp_path, cli):
    """`tune` prints its storage masked: that line copied back would connect with the password ***."""
    config = tiny_config_with(tmp_path, TUNE_CONFIG)
    storage = "postgresql+psycopg://ann:***@127.0.0.1:5432/optuna"
    code, _, err = cli("tune", config, "--storage", storage, "--out", tmp_path / "tune")
    assert code == 2 and err.startswith("augbench: error: --storage: a credential in it is ***"), err
    assert not (tmp_path / "tune").exists()
