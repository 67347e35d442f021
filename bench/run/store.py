"""A run folder: one JSON file per finished cell, tables rebuilt from them, written atomically.

A cell counts as done only once its file exists, and every file is written to a temporary name,
flushed and renamed into place, so a kill at any moment leaves each file either whole or absent.
results.parquet and results.csv hold the same columns with the same types: read the CSV with
``read_results`` to get them back exactly (plain ``pd.read_csv`` guesses types per column).
"""

from __future__ import annotations

import fcntl
import io
import json
import os
import sys
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import yaml

from bench.core.errors import UserError
from bench.core.files import atomic_write, move_aside, remove_temporary_files
from bench.protocol.columns import CELL_FILES_ONLY, COLUMNS, PARAM_PREFIX, of_type, written_by
from bench.protocol.config import BenchConfig
from bench.run.budget import generator_outcomes, outcomes, with_outcomes
from bench.run.failures import runs_again
from bench.run.rounds import Budgets

TEXT_COLUMNS = of_type("text")
LOCK_FILE = ".lock"


def _param_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """Each strategy param as its own column ``param_<name>`` (mappings as JSON text)."""
    if frame.empty:
        return frame
    params = [json.loads(text) for text in frame["strategy_params"]]
    names = sorted({name for p in params for name in p})
    columns = {
        f"{PARAM_PREFIX}{name}": [
            json.dumps(p[name], sort_keys=True) if isinstance(p.get(name), dict) else p.get(name)
            for p in params
        ]
        for name in names
    }
    return frame.assign(**columns)


def _in_declared_order(frame: pd.DataFrame) -> pd.DataFrame:
    """The table's columns in the order of their declarations (bench/protocol/columns.py), then the
    params' columns: the same order whichever stage wrote a column first."""
    declared = [c.name for c in COLUMNS if c.name in frame.columns]
    return frame[declared + [name for name in frame.columns if name not in declared]]


def _as_flags(values: pd.Series) -> pd.Series:
    return values.map(
        lambda v: v if isinstance(v, bool) else {"True": True, "False": False}.get(v, pd.NA)
    ).astype("boolean")


def _as_text(values: pd.Series) -> pd.Series:
    text = values.map(lambda v: v if isinstance(v, str) else (None if pd.isna(v) else str(v)))
    return text.replace("", None).astype("str")


def _as_times(values: pd.Series) -> pd.Series:
    return pd.to_datetime(values, utc=True, format="ISO8601").astype("datetime64[ns, UTC]")


def _as_ints(values: pd.Series) -> pd.Series:
    """Nullable whole numbers: a gap (no generator, a failed cell) keeps the column whole numbers."""
    return pd.to_numeric(values).astype("Int64")


def _as_floats(values: pd.Series) -> pd.Series:
    return pd.to_numeric(values).astype("float64")


_CONVERTERS = {"bool": _as_flags, "text": _as_text, "time": _as_times, "int": _as_ints, "float": _as_floats}
_DECLARED_TYPES = {c.name: c.type for c in COLUMNS}


def _column_type(column: str, values: pd.Series) -> str | None:
    """A column's declared type (bench/protocol/columns.py); a param column's, from its values:
    flags, or text where any value is text (else left as read)."""
    if not column.startswith(PARAM_PREFIX):
        return _DECLARED_TYPES.get(column)
    if _is_flag(values):
        return "bool"
    return "text" if values.map(lambda v: isinstance(v, str)).any() else None


def normalize_results(frame: pd.DataFrame) -> pd.DataFrame:
    """The canonical column types of a results table (the same from parquet, CSV or records), by
    the declared type of each column (bench/protocol/columns.py)."""
    frame = frame.copy()
    for column in frame.columns:
        convert = _CONVERTERS.get(_column_type(column, frame[column]))
        if convert is not None:
            frame[column] = convert(frame[column])
    return frame


def _is_flag(values: pd.Series) -> bool:
    """A param column of true/false values (bools, or their text after a CSV round trip)."""
    present = [v for v in values if not pd.isna(v)]
    return bool(present) and all(isinstance(v, bool) or v in ("True", "False") for v in present)


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
    """The files of one run folder: config.yaml, cells/<key>.json, results.{parquet,csv}, curves.csv,
    provenance.json, and .lock while a process uses it."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.cells_dir = self.root / "cells"
        self._records: dict[str, dict] | None = None  # the cell files as read once (``_scan``), kept current
        self._unreadable: list[tuple[Path, str]] = []  # what that read could not take as a cell's record

    def _scan(self) -> dict[str, dict]:
        """Every cell file's record by key, read once per store (``write_cell`` keeps it current):
        a resume reads a folder of a thousand cells once, not once per question about it."""
        if self._records is None:
            self._records, self._unreadable = {}, []
            for path in sorted(self.cells_dir.glob("*.json")) if self.cells_dir.exists() else []:
                try:
                    record = json.loads(path.read_text())
                    problem = (
                        None
                        if isinstance(record, dict) and record.get("key") == path.stem
                        else "not a cell record"
                    )
                except (ValueError, UnicodeDecodeError) as exc:
                    record, problem = None, str(exc)
                if problem:
                    self._unreadable.append((path, problem))
                else:
                    self._records[path.stem] = record
        return self._records

    @contextmanager
    def lock(self):
        """Hold the folder for this process; a second process is refused, naming the first. Also
        clears what interrupted writes left behind (only the holder writes here), when it takes the
        folder and when it lets go (a SIGTERM can land inside ``tempfile.mkstemp``, after the file is
        made and before ``atomic_write`` knows its name). The lock file goes when the holder is done,
        and so does a folder this made that stayed empty."""
        made = not self.root.exists()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            handle = self._locked_handle()
        except OSError as exc:
            raise UserError(f"output folder {self.root}: {exc.strerror}; choose another --out") from None
        with handle:
            handle.seek(0)
            handle.truncate()
            handle.write(str(os.getpid()))
            handle.flush()
            remove_temporary_files(self.root)
            try:
                yield self
            finally:
                remove_temporary_files(self.root)
                (self.root / LOCK_FILE).unlink(missing_ok=True)  # before unlocking: see _locked_handle
                fcntl.flock(handle, fcntl.LOCK_UN)
                if made and not any(self.root.iterdir()):
                    self.root.rmdir()

    def _locked_handle(self):
        """The lock file, open and locked by this process. A holder deletes it before it unlocks, so a
        process that locked a file already deleted tries again on the one now at the path."""
        while True:
            handle = open(self.root / LOCK_FILE, "a+")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip() or "unknown"
                handle.close()
                raise UserError(
                    f"output folder {self.root} is in use by another augbench process (pid {holder}); "
                    "wait for it to finish, or choose another --out"
                ) from None
            try:
                if os.stat(self.root / LOCK_FILE).st_ino == os.fstat(handle.fileno()).st_ino:
                    return handle
            except FileNotFoundError:
                pass
            handle.close()

    def _stored_run(self) -> dict | None:
        """The folder's config.yaml as ``claim`` wrote it; None for a folder without one that holds
        nothing else. UserError for a corrupt one, or for a folder of other files."""
        marker = self.root / "config.yaml"
        if not marker.exists():
            if self.root.is_dir() and any(p.name != LOCK_FILE for p in self.root.iterdir()):
                raise UserError(
                    f"output folder {self.root} is not empty and holds no augbench run; choose another --out"
                )
            return None
        try:
            stored = yaml.safe_load(marker.read_text())
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            stored = f"not valid YAML ({' '.join(str(exc).split())[:100]})"
        if not isinstance(stored, dict) or "fingerprint" not in stored:
            problem = stored if isinstance(stored, str) else "no fingerprint in it"
            raise UserError(
                f"{marker} is corrupt ({problem}); delete it to reuse the folder's cells with this "
                "config, or choose another --out"
            )
        return stored

    def check_claim(self, config: BenchConfig) -> None:
        """Refuse, touching nothing, a folder that ``claim`` would refuse for ``config``."""
        stored = self._stored_run()
        if stored is not None and stored["fingerprint"] != config.fingerprint:
            raise UserError(
                f"output folder {self.root} holds a run of a different config "
                f"(fingerprint {stored['fingerprint']}, this one {config.fingerprint}); "
                "choose another --out, or delete that folder to start over"
            )

    def claim(self, config: BenchConfig, data_hashes: dict[str, str]) -> None:
        """Use this folder for ``config``; refuse a folder that holds a run of another config. Say so
        when the data changed since the folder's last run (its cells stay, outside the grid)."""
        self.check_claim(config)
        stored = self._stored_run()
        if stored is not None:
            changed = {name: (stored.get("data_hashes") or {}).get(name) for name in data_hashes}
            changed = {n: old for n, old in changed.items() if old is not None and old != data_hashes[n]}
            for name, old in changed.items():
                print(
                    f"augbench: the data of {name} changed since this folder's last run (content hash "
                    f"{old[:12]} -> {data_hashes[name][:12]}): cells of the old data stay in the folder, "
                    "outside this grid and out of the tables",
                    file=sys.stderr,
                )
            if not changed and stored.get("data_hashes") == data_hashes:
                return
        atomic_write(
            self.root / "config.yaml",
            yaml.safe_dump(
                {"fingerprint": config.fingerprint, "data_hashes": data_hashes, "config": config.raw},
                sort_keys=False,
            ),
        )

    def heal_cells(self) -> list[Path]:
        """Move aside cell files that do not read as a cell's record (their cells run again)."""
        self._scan()
        moved = [move_aside(path, problem) for path, problem in self._unreadable if path.exists()]
        self._unreadable = []
        return moved

    def add_provenance(self, entry: dict) -> None:
        """Record one invocation in provenance.json: the latest at the top level, all in ``history``."""
        path = self.root / "provenance.json"
        try:
            history = json.loads(path.read_text()).get("history", []) if path.exists() else []
        except (ValueError, AttributeError):
            history = []
        atomic_write(path, json.dumps({**entry, "history": [*history, entry]}, indent=1, default=str))

    def done_keys(self, retry_failed: bool = False) -> set[str]:
        """The keys of the cells a rerun skips: every recorded cell but those the machine failed (a
        dead worker, out of memory) or whose code raised an error, and with ``retry_failed`` but
        every failed one. An unreadable file is no cell's (``heal_cells`` moves it aside)."""
        return {
            key
            for key, record in self._scan().items()
            if not (record.get("status") == "failed" and (retry_failed or runs_again(record)))
        }

    def write_cell(self, record: dict) -> None:
        """Write a cell's record (its stages checked their columns as they wrote them). The traceback
        an errored cell carries (``traceback``) goes to ``cells/<key>.traceback.txt``, which its row
        names (``failure_traceback``); a later record of the cell removes a file left by an earlier
        error."""
        record = dict(record)
        text = record.pop("traceback", None)
        path = self.traceback_path(record["key"])
        if text:
            atomic_write(path, text)
            record.update(written_by("store", {"failure_traceback": path.relative_to(self.root).as_posix()}))
        else:
            path.unlink(missing_ok=True)
        written = json.dumps(record, indent=1, default=str)
        atomic_write(self.cells_dir / f"{record['key']}.json", written)
        if self._records is not None:
            self._records[record["key"]] = json.loads(written)  # as a read gives it back

    def traceback_path(self, key: str) -> Path:
        """Where an errored cell's traceback is written."""
        return self.cells_dir / f"{key}.traceback.txt"

    def records(self, keys: list[str]) -> list[dict]:
        """The finished cells among ``keys``, in that order."""
        records = self._scan()
        return [records[key] for key in keys if key in records]

    def foreign_keys(self, grid_keys: list[str]) -> list[str]:
        """Cells in the folder that are not in the grid (another code version, data or config):
        left alone, and never in the tables."""
        return sorted(self.cell_keys() - set(grid_keys))

    def cell_keys(self) -> set[str]:
        """The keys of every cell in the folder, done or failed."""
        return set(self._scan())

    def check_tables(
        self, grid_keys: list[str], check_keys: list[str], plateau: float | None, raised: Budgets | None
    ) -> tuple[pd.DataFrame, pd.DataFrame]:
        """budget.csv's and generator.csv's tables as ``write_tables`` would write them now, without
        writing anything (a run counting the work left before it claims its folder)."""
        return self._checked_results(self.records(grid_keys), check_keys, plateau, raised)[1:]

    def _checked_results(
        self, records: list[dict], check_keys: list[str], plateau: float | None, raised: Budgets | None
    ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
        """The grid's rows (``records`` without their curves) and their budget and generator checks."""
        results = pd.DataFrame([{k: v for k, v in r.items() if k != "curve"} for r in records])
        check_records = self.records(list(check_keys))
        return (
            results,
            outcomes(results, check_records, plateau, raised),
            generator_outcomes(results, check_records, plateau),
        )

    def write_tables(
        self,
        grid_keys: list[str],
        check_keys: list[str] = (),
        plateau: float | None = None,
        raised: Budgets | None = None,
    ) -> pd.DataFrame:
        """Rebuild results.parquet/.csv (a row per finished cell of the grid, in the grid's order, with
        its group's budget check), curves.csv and budget.csv (the check of each group, from the
        budget-check cells ``check_keys``; ``plateau`` None: the check was off; ``raised``: the
        budgets the run raised, and where they started) from the cell files. Cells outside the grid
        are not read."""
        records = self.records(grid_keys)
        results, checks, generators = self._checked_results(records, check_keys, plateau, raised)
        results = results.drop(columns=list(CELL_FILES_ONLY), errors="ignore")
        results = with_outcomes(results, checks, generators)
        results = _in_declared_order(normalize_results(_param_columns(results)))
        curves = pd.DataFrame([{"key": r["key"], **point} for r in records for point in r.get("curve", [])])
        for name, frame in (
            ("results.parquet", results),
            ("results.csv", results),
            ("curves.csv", curves),
            ("budget.csv", checks),
            ("generator.csv", generators),
        ):
            atomic_write(self.root / name, _frame_bytes(frame, Path(name).suffix))
        return results
