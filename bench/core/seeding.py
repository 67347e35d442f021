"""Randomness from explicit seeds only: stable seed derivation and a seeded scope for torch's
global generator (model initialization and dropout draw from it)."""

from __future__ import annotations

import hashlib
import os
from contextlib import contextmanager

import torch

# cuBLAS is reproducible run to run only with a fixed workspace; it must be set before CUDA starts
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def derive_seed(*parts) -> int:
    """A 63-bit seed from any parts (stable across runs and platforms)."""
    text = "/".join(str(p) for p in parts).encode()
    return int.from_bytes(hashlib.sha256(text).digest()[:8], "big") >> 1


@contextmanager
def seeded(seed: int, device: torch.device):
    """Seed torch's global generators for a block, restoring their state afterwards. On CUDA it
    also asks for deterministic kernels, and those settings stay for the rest of the process (the
    evaluation after a seeded block needs them as much), so that equal seeds give equal results
    there too (an identity strategy must score exactly like `none`)."""
    if device.type == "cuda":
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
        torch.use_deterministic_algorithms(True, warn_only=True)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield
