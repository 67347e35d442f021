"""Randomness from explicit seeds only: stable seed derivation and a seeded scope for torch's
global generator (model initialization and dropout draw from it)."""
from __future__ import annotations

import hashlib
from contextlib import contextmanager

import torch


def derive_seed(*parts) -> int:
    """A 63-bit seed from any parts (stable across runs and platforms)."""
    text = "/".join(str(p) for p in parts).encode()
    return int.from_bytes(hashlib.sha256(text).digest()[:8], "big") >> 1


@contextmanager
def seeded(seed: int, device: torch.device):
    """Seed torch's global generators for a block, restoring their state afterwards."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield
