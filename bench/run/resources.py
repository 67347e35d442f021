"""Wall time and peak memory of a block of work, on CUDA or on the CPU."""

from __future__ import annotations

import resource
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch

from bench.core.memory import peak_rss_mb

_CLEAR_REFS = Path("/proc/self/clear_refs")


def _reset_peak_rss() -> bool:
    """Reset the process's peak RSS (Linux: write 5 to clear_refs); False where unsupported."""
    try:
        _CLEAR_REFS.write_text("5")
        return True
    except OSError:
        return False


def _peak_rss_mb() -> float:
    """This process's peak resident memory in MB (getrusage's lifetime peak where Linux does not say)."""
    return peak_rss_mb() or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def timed(fn: Callable[[], object], device: torch.device) -> float:
    """Wall seconds of ``fn()``, including the device work it queued (and none queued before)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


@dataclass
class Usage:
    """What a block of work used: wall seconds and peak memory in MB (set when the block ends)."""

    seconds: float = 0.0
    peak_mb: float = 0.0


@contextmanager
def measure(device: torch.device) -> Iterator[Usage]:
    """The wall time and peak memory of a block, in the ``Usage`` it yields (also when it raises).

    On CUDA the peak is the allocator's peak over the block; on the CPU it is the process's peak
    resident set over the block (it includes the process baseline, e.g. the torch runtime).
    """
    usage = Usage()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    else:
        _reset_peak_rss()
    start = time.perf_counter()
    try:
        yield usage
    finally:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            usage.peak_mb = torch.cuda.max_memory_allocated(device) / 2**20
        else:
            usage.peak_mb = _peak_rss_mb()
        usage.seconds = time.perf_counter() - start
