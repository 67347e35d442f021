"""A run folder: one JSON file per finished cell, tables rebuilt from them, written atomically.

A cell counts as done only once its file exists, and every file is written to a temporary name,
flushed and renamed into place, so a kill at any moment leaves each file either whole or absent.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pandas as pd
import yaml

from bench.config import BenchConfig
from bench.errors import UserError


def atomic_write(path: Path, data: bytes | str) -> None:
    """Write ``path`` so that readers see the old file or the new one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = data.encode() if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _atomic_frame(frame: pd.DataFrame, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    if path.suffix == ".parquet":
        frame.to_parquet(tmp, index=False)
    else:
        frame.to_csv(tmp, index=False)
    os.replace(tmp, path)


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

    def records(self) -> list[dict]:
        return [json.loads(p.read_text()) for p in sorted(self.cells_dir.glob("*.json"))] \
            if self.cells_dir.exists() else []

    def write_tables(self, key_order: list[str] = ()) -> pd.DataFrame:
        """Rebuild results.parquet/.csv (a row per cell) and curves.csv from the cell files, rows in
        ``key_order`` (the grid's order) where given."""
        position = {key: i for i, key in enumerate(key_order)}
        records = sorted(self.records(), key=lambda r: position.get(r["key"], len(position)))
        rows = [{k: v for k, v in r.items() if k != "curve"} for r in records]
        results = pd.DataFrame(rows)
        curves = pd.DataFrame([{"key": r["key"], **point} for r in records for point in r.get("curve", [])])
        _atomic_frame(results, self.root / "results.parquet")
        _atomic_frame(results, self.root / "results.csv")
        _atomic_frame(curves, self.root / "curves.csv")
        return results

    def write_json(self, name: str, data: dict) -> None:
        atomic_write(self.root / name, json.dumps(data, indent=1, default=str))
