"""A run folder: one JSON file per finished cell, tables rebuilt from them, written atomically.

A cell counts as done only once its file exists, and every file is written to a temporary name,
flushed and renamed into place, so a kill at any moment leaves each file either whole or absent.
results.parquet and results.csv hold the same columns with the same types: read the CSV with
``read_results`` to get them back exactly (plain ``pd.read_csv`` guesses types per column).
"""
from __future__ import annotations

import io
import json
from pathlib import Path

import pandas as pd
import yaml

from bench.config import BenchConfig
from bench.core.errors import UserError
from bench.core.files import atomic_write

TEXT_COLUMNS = ("key", "dataset", "data_hash", "regime", "strategy", "strategy_name", "strategy_params",
                "classifier", "suite_version", "device", "revision", "status", "failure_reason", "generator_key",
                "mixing", "synthetic_pool", "quality_extractor", "quality_kind", "sample_grid", "versions")
TIME_COLUMNS = ("started", "finished")
FLAG_COLUMNS = ("generator_cache_hit", "evaluator_disjoint")
PARAM_PREFIX = "param_"


def _param_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """Each strategy param as its own column ``param_<name>`` (mappings as JSON text)."""
    if frame.empty:
        return frame
    params = [json.loads(text) for text in frame["strategy_params"]]
    names = sorted({name for p in params for name in p})
    columns = {f"{PARAM_PREFIX}{name}": [json.dumps(p[name], sort_keys=True) if isinstance(p.get(name), dict)
                                         else p.get(name) for p in params] for name in names}
    return frame.assign(**columns)


def normalize_results(frame: pd.DataFrame) -> pd.DataFrame:
    """The canonical column types of a results table (the same from parquet, CSV or records)."""
    frame = frame.copy()
    for column in frame.columns:
        if column in TEXT_COLUMNS or (column.startswith(PARAM_PREFIX) and frame[column].map(
                lambda v: isinstance(v, str)).any()):
            text = frame[column].map(lambda v: v if isinstance(v, str) else (None if pd.isna(v) else str(v)))
            frame[column] = text.replace("", None).astype("str")
        elif column in TIME_COLUMNS:
            frame[column] = pd.to_datetime(frame[column], utc=True, format="ISO8601").astype("datetime64[ns, UTC]")
        elif column in FLAG_COLUMNS:
            frame[column] = frame[column].map(
                lambda v: v if isinstance(v, bool) else {"True": True, "False": False}.get(v, pd.NA)).astype("boolean")
    return frame


def read_results(path: Path) -> pd.DataFrame:
    """A results table from results.parquet or results.csv, with its canonical types."""
    path = Path(path)
    if path.suffix == ".parquet":
        return normalize_results(pd.read_parquet(path))
    return normalize_results(pd.read_csv(path, dtype={c: str for c in TEXT_COLUMNS}))


def _frame_bytes(frame: pd.DataFrame, suffix: str) -> bytes | str:
    if suffix == ".parquet":
        buffer = io.BytesIO()
        frame.to_parquet(buffer, index=False)
        return buffer.getvalue()
    return frame.to_csv(index=False)


class RunStore:
    """The files of one run folder: config.yaml, cells/<key>.json, results.{parquet,csv}, curves.csv."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.cells_dir = self.root / "cells"

    def claim(self, config: BenchConfig) -> None:
        """Use this folder for ``config``; refuse a folder that holds a run of another config."""
        marker = self.root / "config.yaml"
        if marker.exists():
            try:
                stored = yaml.safe_load(marker.read_text()) or {}
            except yaml.YAMLError:
                stored = {}
            if stored.get("fingerprint") != config.fingerprint:
                raise UserError(f"output folder {self.root} holds a run of a different config "
                                f"(fingerprint {stored.get('fingerprint')}, this one {config.fingerprint}); "
                                "choose another --out, or delete that folder to start over")
            return
        if self.root.exists() and any(self.root.iterdir()):
            raise UserError(f"output folder {self.root} is not empty and holds no augbench run; "
                            "choose another --out")
        atomic_write(marker, yaml.safe_dump({"fingerprint": config.fingerprint, "config": config.raw},
                                            sort_keys=False))

    def done_keys(self) -> set[str]:
        return {p.stem for p in self.cells_dir.glob("*.json")} if self.cells_dir.exists() else set()

    def write_cell(self, record: dict) -> None:
        atomic_write(self.cells_dir / f"{record['key']}.json", json.dumps(record, indent=1, default=str))

    def records(self, keys: list[str]) -> list[dict]:
        """The finished cells among ``keys``, in that order."""
        return [json.loads((self.cells_dir / f"{key}.json").read_text()) for key in keys
                if (self.cells_dir / f"{key}.json").is_file()]

    def foreign_keys(self, grid_keys: list[str]) -> list[str]:
        """Cells in the folder that are not in the grid (another code version, data or config):
        left alone, and never in the tables."""
        return sorted(self.done_keys() - set(grid_keys))

    def write_tables(self, grid_keys: list[str]) -> pd.DataFrame:
        """Rebuild results.parquet/.csv (a row per finished cell of the grid, in the grid's order) and
        curves.csv from the cell files. Cells outside the grid are not read."""
        records = self.records(grid_keys)
        results = normalize_results(_param_columns(pd.DataFrame([{k: v for k, v in r.items() if k != "curve"}
                                                                  for r in records])))
        curves = pd.DataFrame([{"key": r["key"], **point} for r in records for point in r.get("curve", [])])
        for name, frame in (("results.parquet", results), ("results.csv", results), ("curves.csv", curves)):
            atomic_write(self.root / name, _frame_bytes(frame, Path(name).suffix))
        return results

    def write_json(self, name: str, data: dict) -> None:
        atomic_write(self.root / name, json.dumps(data, indent=1, default=str))
