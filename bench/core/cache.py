"""A small on-disk cache for fitted models and computed metrics, safe across worker processes.

Entries are named by a key that hashes everything they depend on (data content hash, split,
params, seed, code version), so changed input never hits a stale entry. Writers hold a per-key
file lock, so two workers needing one entry fit it once; weights load with ``weights_only``.
"""

from __future__ import annotations

import fcntl
import io
import json
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable

import torch

from bench.core.files import atomic_write, move_aside
from bench.core.keys import stable_hash


def cache_key(*parts: Any) -> str:
    """The key of an entry that depends on ``parts`` (plain data, dataclasses as text)."""
    return stable_hash(list(parts), 24)


class FileCache:
    """Entries ``<kind>-<key>.pt`` (tensors) and ``<kind>-<key>.json`` (plain data) in one folder."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def _path(self, kind: str, key: str, suffix: str) -> Path:
        return self.root / f"{kind}-{key}{suffix}"

    @contextmanager
    def lock(self, kind: str, key: str):
        """Hold an exclusive lock on one entry (blocks while another process fills it)."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self._path(kind, key, ".lock"), "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def load_tensors(self, kind: str, key: str) -> dict | None:
        """The entry's tensors; None when absent, or unreadable (then it is moved aside)."""
        path = self._path(kind, key, ".pt")
        if not path.exists():
            return None
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - torch raises many kinds on a damaged file
            move_aside(path, f"{type(exc).__name__}: {str(exc)[:120]}")
            return None

    def save_tensors(self, kind: str, key: str, state: dict) -> Path:
        buffer = io.BytesIO()
        torch.save(state, buffer)
        path = self._path(kind, key, ".pt")
        atomic_write(path, buffer.getvalue())
        return path

    def tensors_path(self, kind: str, key: str) -> Path:
        return self._path(kind, key, ".pt")

    def load_json(self, kind: str, key: str) -> dict | None:
        """The entry's data; None when absent, or unreadable (then it is moved aside)."""
        path = self._path(kind, key, ".json")
        if not path.exists():
            return None
        try:
            data = json.loads(path.read_text())
        except (ValueError, UnicodeDecodeError) as exc:
            move_aside(path, str(exc))
            return None
        if not isinstance(data, dict):
            move_aside(path, "not a JSON object")
            return None
        return data

    def save_json(self, kind: str, key: str, data: dict) -> None:
        atomic_write(self._path(kind, key, ".json"), json.dumps(data, default=str))

    def json_once(self, kind: str, key: str, compute: Callable[[], dict], with_tensors: bool = False) -> dict:
        """The entry's data; the first process to need it computes and saves it, the others wait.
        With ``with_tensors``, ``compute`` also saves the entry's tensors, and an entry whose tensors
        do not load is computed again."""
        with self.lock(kind, key):
            data = self.load_json(kind, key)
            if data is not None and with_tensors and self.load_tensors(kind, key) is None:
                data = None
            if data is None:
                data = compute()
                self.save_json(kind, key, data)
        return data
