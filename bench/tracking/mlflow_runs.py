"""Optional experiment tracking: one MLflow run per cell under one parent run per `augbench run`.

Each cell's run carries its canonical config (the cell key's inputs) as params, every numeric
column of its result row as metrics, its validation curve as step metrics and, where the quality
step saved one, its sample grid as a PNG artifact; the parent run carries the protocol and, at
the end, the report and tables. The driver logs each record as it arrives, whatever the executor.
MLflow is an optional extra (``pip install 'augbench[mlflow]'``), imported only when
``tracking.mlflow`` names a URI. Tracking never changes a result: a store that fails mid-run is
reported once and logging stops, while the run goes on.
"""

from __future__ import annotations

import contextlib
import json
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Iterator
from urllib.parse import urlparse

from bench.core.errors import UserError, first_line
from bench.core.net import unreachable
from bench.core.secrets import masked, scrubbed
from bench.protocol.columns import of_type
from bench.protocol.config import BenchConfig, TrackingSpec
from reports import figures

NUMERIC = frozenset(of_type("int") + of_type("float"))
NOT_METRICS = frozenset({"replicate", "seed", "split_seed"})  # numbers that identify a cell: params/tags
MAX_PARAM_CHARS = 6000  # MLflow's limit on a param value
CURVE = {"val_accuracy": "curve_val_accuracy", "train_loss": "curve_train_loss"}  # step metrics; the row has
# its own final val_accuracy
BATCH = 100  # MLflow's limit on params per log_batch call


def flatten(value, prefix: str = "") -> dict[str, str]:
    """Nested mappings as dotted keys; lists and scalars as their JSON text."""
    if isinstance(value, dict):
        flat: dict[str, str] = {}
        for key, inner in value.items():
            flat.update(flatten(inner, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return {prefix: text[:MAX_PARAM_CHARS]}


def metric_values(record: dict) -> dict[str, float]:
    """The numeric columns of a result row, as the row schema declares them (not the identifying seeds)."""
    return {
        name: float(value)
        for name, value in record.items()
        if name in NUMERIC and name not in NOT_METRICS and value is not None
    }


def _millis(iso: str | None) -> int:
    return int(datetime.fromisoformat(iso).timestamp() * 1000) if iso else int(time.time() * 1000)


class NoTracking:
    """What `run` logs to when `tracking` is off: nothing."""

    def log_cell(self, cell, record: dict) -> None:
        pass

    def log_files(self, paths) -> None:
        pass


class MlflowTracker:
    """One parent run for this `augbench run`, a nested run per finished cell."""

    def __init__(self, spec: TrackingSpec, config: BenchConfig, run_dir: Path, revision: str):
        import mlflow
        from mlflow.entities import Metric, Param

        self._metric, self._param = Metric, Param
        self.run_dir = run_dir
        self._grids = tempfile.TemporaryDirectory(prefix="augbench-mlflow-")
        self._rendered: dict[str, Path] = {}
        self._broken = False
        self._uri = spec.mlflow  # whose credentials no message shows
        check_reachable(spec.mlflow)
        try:
            self.client = mlflow.MlflowClient(spec.mlflow)
            experiment = self.client.get_experiment_by_name(spec.experiment)
            experiment_id = (
                experiment.experiment_id
                if experiment
                else self.client.create_experiment(
                    spec.experiment, artifact_location=_artifact_location(spec.mlflow)
                )
            )
            self.experiment_id = experiment_id
            self.parent = self.client.create_run(
                experiment_id,
                run_name=f"{config.name}-{config.fingerprint[:8]}",
                tags={
                    "augbench.fingerprint": config.fingerprint,
                    "augbench.run_folder": str(run_dir.resolve()),
                    "augbench.revision": revision,
                },
            ).info.run_id
            self._params(self.parent, flatten(config.raw))
        except Exception as exc:  # noqa: BLE001 - any store error (bad URI, unreachable server, bad file)
            raise UserError(
                f"config field tracking.mlflow: MLflow cannot use {masked(spec.mlflow)!r}: "
                f"{scrubbed(_why(exc), spec.mlflow)}; give a reachable tracking URI such as "
                "sqlite:///mlflow.db"
            ) from None

    def _params(self, run_id: str, params: dict[str, str]) -> None:
        items = [self._param(k, v) for k, v in params.items()]
        for start in range(0, len(items), BATCH):
            self.client.log_batch(run_id, params=items[start : start + BATCH])

    def _metrics(self, run_id: str, metrics: list) -> None:
        for start in range(0, len(metrics), 1000):
            self.client.log_batch(run_id, metrics=metrics[start : start + 1000])

    def _guarded(self, what: str, action) -> None:
        """Run a logging action; the first failure is reported and ends logging (results are unaffected)."""
        if self._broken:
            return
        try:
            action()
        except Exception as exc:  # noqa: BLE001 - the store failed; the benchmark must not
            self._broken = True
            print(
                f"augbench: warning: MLflow logging stopped at {what}: "
                f"{scrubbed(_why(exc), self._uri)}; the run goes on "
                "and its results folder is complete",
                file=sys.stderr,
            )

    def log_cell(self, cell, record: dict) -> None:
        """One nested run for a finished (or failed) cell."""
        self._guarded(cell.describe(), lambda: self._log_cell(cell, record))

    def _log_cell(self, cell, record: dict) -> None:
        now = int(time.time() * 1000)
        run_id = self.client.create_run(
            self.experiment_id,
            run_name=cell.describe(),
            start_time=_millis(record.get("started")),
            tags={
                "mlflow.parentRunId": self.parent,
                "augbench.key": cell.key,
                "augbench.status": record["status"],
                "augbench.seed": str(record.get("seed", "")),
                **(
                    {"augbench.failure_reason": record["failure_reason"][:5000]}
                    if record.get("failure_reason")
                    else {}
                ),
            },
        ).info.run_id
        self._params(run_id, flatten(cell.canonical()))
        metrics = [self._metric(name, value, now, 0) for name, value in metric_values(record).items()]
        metrics += [
            self._metric(CURVE[name], float(point[name]), now, int(point["step"]))
            for point in record.get("curve", [])
            for name in CURVE
            if name in point
        ]
        self._metrics(run_id, metrics)
        grid = self._grid_png(record.get("sample_grid"), cell)
        if grid is not None:
            self.client.log_artifact(run_id, str(grid))
        status = "FINISHED" if record["status"] == "ok" else "FAILED"
        self.client.set_terminated(run_id, status, end_time=_millis(record.get("finished")))

    def _grid_png(self, relative: str | None, cell) -> Path | None:
        """The cell's sample grid rendered once (its classifiers share it)."""
        if not relative or not (self.run_dir / relative).is_file():
            return None
        if relative not in self._rendered:
            png = Path(self._grids.name) / f"{Path(relative).stem}.png"
            fig = figures.sample_grid(
                self.run_dir / relative, f"{cell.strategy.label}, seed {cell.replicate}"
            )
            fig.savefig(png, dpi=100, bbox_inches="tight")
            figures.plt.close(fig)
            self._rendered[relative] = png
        return self._rendered[relative]

    def log_files(self, paths) -> None:
        """Attach files of the run folder (report, tables) to the parent run."""
        for path in paths:
            if Path(path).is_file():
                self._guarded(str(path), lambda p=path: self.client.log_artifact(self.parent, str(p)))

    def close(self, status: str) -> None:
        self._guarded("the end of the run", lambda: self.client.set_terminated(self.parent, status))
        self._grids.cleanup()


def _artifact_location(uri: str) -> str | None:
    """Artifacts of a SQLite store next to its database file (MLflow's default is ./mlruns of
    wherever the run was started); other stores choose for themselves."""
    if uri.startswith("sqlite:///"):
        return (Path(uri.removeprefix("sqlite:///")).resolve().parent / "mlartifacts").as_uri()
    return None


def check_reachable(uri: str) -> None:
    """Refuse a tracking server with nothing listening (MLflow's client would retry for minutes);
    `run` asks before it claims its folder."""
    parsed = urlparse(uri)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        return
    why = unreachable(parsed.hostname, parsed.port or (443 if parsed.scheme == "https" else 80))
    if why:
        raise UserError(
            f"config field tracking.mlflow: no MLflow server answers at {masked(uri)!r} ({why}); start it "
            "(mlflow server) or give a local store such as sqlite:///mlflow.db"
        )


@contextlib.contextmanager
def tracking(config: BenchConfig, run_dir: Path, revision: str) -> Iterator[NoTracking | MlflowTracker]:
    """The run's tracker: MLflow when ``tracking.mlflow`` names a URI, else one that logs nothing.
    The parent run ends FINISHED, or KILLED / FAILED when the run is interrupted or fails."""
    if not config.tracking.mlflow:
        yield NoTracking()
        return
    tracker = MlflowTracker(config.tracking, config, run_dir, revision)
    status = "FAILED"
    try:
        yield tracker
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        tracker.close(status)


def _why(exc: Exception) -> str:
    """What went wrong, in a line: the exception's first line, or its type."""
    return first_line(exc) or type(exc).__name__
