"""Where a result came from: package versions, git revision, device, times."""

from __future__ import annotations

import platform
import subprocess
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import torch

from bench.core.errors import UserError

PACKAGES = ["augbench", "torch", "torchvision", "numpy", "pandas", "scikit-learn", "torch-fidelity", "optuna"]
_REPO = Path(__file__).resolve().parents[2]  # the repository: bench/run/provenance.py -> its root


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def versions() -> dict[str, str]:
    """The versions of Python and of the packages a result depends on ("not installed" where absent)."""
    found = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def git_revision() -> str:
    """The checkout's commit, with ``+dirty`` when it has uncommitted changes; ``unknown`` outside git."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=_REPO, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=_REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        return commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()})"


def resolve_device(requested: str, field: str = "config field device") -> torch.device:
    """The torch device for ``auto``, ``cpu`` or ``cuda``; UserError naming ``field`` when CUDA is
    asked for and missing."""
    if requested == "cuda" and not torch.cuda.is_available():
        raise UserError(f"{field}: cuda was asked for but no CUDA device is available; use auto or cpu")
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)
