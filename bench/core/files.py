"""Writing files so that a kill at any moment leaves each one whole or absent."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from bench.core import progress
from bench.core.errors import UserError


def _umask() -> int:
    """The process umask, read without changing it where Linux shows it (else set and restored)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def why_not(path: Path, folder: bool) -> str:
    """Why ``path`` is not the folder (``folder``) or file asked for, as the end of a sentence."""
    if folder and path.is_file():
        return "is a file, not a folder"
    if not folder and path.is_dir():
        return "is a folder, not a file"
    return "does not exist"


def check_writable(path: Path, what: str) -> None:
    """Refuse, before any work, a file path that ``atomic_write`` could not write: a folder, or one
    under a file or a folder this process may not write to."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{what} {path} is a folder; give a file path")
    ancestor = path.parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise UserError(f"{what} {path}: {ancestor} is a file, not a folder; give a path in a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise UserError(f"{what} {path}: the folder {ancestor} is not writable; give another path")


def atomic_write(path: Path, data: bytes | str) -> None:
    """Write ``path`` so that readers see the old file or the new one, never a part.

    The temporary file has a unique name beside the target, and the result gets the mode a plain
    ``open`` would give it under the process umask (0644 under umask 022).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = data.encode() if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fchmod(handle.fileno(), 0o666 & ~_umask())
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def move_aside(path: Path, problem: str) -> Path:
    """Rename an unreadable file to ``<name>.corrupt[-N]`` (kept for inspection, out of the way of a
    recompute) and say so on stderr; return the new path."""
    path = Path(path)
    target, n = path.with_name(path.name + ".corrupt"), 1
    while target.exists():
        target, n = path.with_name(f"{path.name}.corrupt-{n}"), n + 1
    os.replace(path, target)
    progress.warn(f"{path} could not be read ({problem}); moved to {target.name}, recomputing it")
    return target


def remove_temporary_files(folder: Path) -> int:
    """Delete what interrupted atomic writes left in ``folder`` and below (call it only while no
    other process writes there); return how many."""
    leftovers = [p for p in Path(folder).rglob(".*.tmp") if p.is_file()]
    for path in leftovers:
        path.unlink(missing_ok=True)
    return len(leftovers)


def user_cache_dir() -> Path:
    """Where augbench keeps what it builds once per machine (calibrations, converted weights):
    $AUGBENCH_CACHE, else ~/.cache/augbench."""
    return Path(os.environ.get("AUGBENCH_CACHE") or Path.home() / ".cache" / "augbench")


def files_hash(path: Path) -> str:
    """SHA-256 over the relative names and bytes of every file under ``path`` (or of the file)."""
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        digest.update(str(file.relative_to(path) if path.is_dir() else file.name).encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()
