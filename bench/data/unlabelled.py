"""The unlabelled images of the semi-supervised protocol: the config's `unlabelled` field, and the
images it grants the strategies that ask for them, as ``UnlabelledImages`` (a type with no labels).

- ``none`` (default): no unlabelled images; keys and results as without the field;
- ``pool``: every training-pool image that is neither labelled nor validation;
- a number N: N of those, drawn per replicate by the split seed;
- ``{path: DIR_OR_NPZ}``: a user's own images without labels (a folder of images, searched
  recursively, or an .npz with an array ``x``), content-hashed into the key; they must have the
  data set's size and channels.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.core.errors import UserError
from bench.core.files import files_hash
from bench.core.images import UnlabelledImages
from bench.core.seeding import derive_seed
from bench.data.files import IMAGE_SUFFIXES, read_image, to_uint8_nchw
from bench.data.sets import Dataset
from bench.data.splits import Split, train_pool

FIELD = "config field unlabelled"


@dataclass(frozen=True)
class UnlabelledSpec:
    """Which unlabelled images the protocol grants: ``source`` none, pool, count or path."""

    source: str = "none"
    count: int = 0
    path: str = ""
    content_hash: str = ""

    @property
    def enabled(self) -> bool:
        return self.source != "none"

    @property
    def label(self) -> str:
        """How rows and reports name what a pool-using fit saw besides the labelled images."""
        return {
            "none": "",
            "pool": "pool",
            "count": f"pool:{self.count}",
            "path": f"folder:{Path(self.path).name}",
        }[self.source]


def parse_unlabelled(value: Any, where: str = "unlabelled") -> UnlabelledSpec:
    """none, pool, a number of pool images, or {path: DIR_OR_NPZ}."""
    if value in (None, "none"):
        return UnlabelledSpec()
    if value == "pool":
        return UnlabelledSpec("pool")
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 1:
            raise UserError(
                f"config field {where}: {value} images is not a pool; give at least 1, pool or none"
            )
        return UnlabelledSpec("count", count=value)
    if (
        isinstance(value, dict)
        and set(value) <= {"path", "content_hash"}
        and isinstance(value.get("path"), str)
    ):
        path = Path(value["path"])
        if not path.exists():
            raise UserError(
                f"config field {where}.path: {path} does not exist; give a folder of images or an "
                ".npz file with an array x"
            )
        return UnlabelledSpec("path", path=str(path), content_hash=files_hash(path))
    raise UserError(
        f"config field {where}: expected none, pool, a number of pool images, or {{path: DIR}}, got {value!r}"
    )


def unlabelled_plain(spec: UnlabelledSpec) -> Any:
    """The field as a config writes it (a folder's content hash included, so that keys see it)."""
    if spec.source == "path":
        return {"path": spec.path, "content_hash": spec.content_hash}
    return spec.count if spec.source == "count" else spec.source


@lru_cache(maxsize=2)
def _read_folder(path: str, content_hash: str) -> torch.Tensor:
    """The images of a folder (recursively) or of an .npz's ``x``, as uint8 N x C x H x W."""
    source = Path(path)
    if source.is_file():
        try:
            with np.load(source, allow_pickle=False) as data:
                if "x" not in data:
                    raise UserError(f"{FIELD}.path: {source} has no array x (it has {', '.join(data.files)})")
                array = data["x"]
        except (ValueError, OSError) as exc:
            raise UserError(f"{FIELD}.path: {source} is not a readable .npz file ({exc})") from None
        return torch.from_numpy(to_uint8_nchw(array, f"{FIELD}.path {source}"))
    files = sorted(p for p in source.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise UserError(f"{FIELD}.path: {source} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    first = read_image(files[0], None, None)
    arrays = [read_image(p, first.shape[0], None) for p in files]
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise UserError(
            f"{FIELD}.path: the images in {source} have several sizes ({sorted(shapes)}); resize them "
            "to the data set's size"
        )
    return torch.from_numpy(np.stack(arrays))


def unlabelled_images(
    spec: UnlabelledSpec, dataset: Dataset, split: Split, replicate: int
) -> UnlabelledImages | None:
    """The unlabelled images that ``spec`` grants for one split (None for ``none``). Their labels
    never leave this function: only the images do."""
    if not spec.enabled:
        return None
    if spec.source == "path":
        images = _read_folder(spec.path, spec.content_hash)
        if tuple(images.shape[1:]) != tuple(dataset.image_shape):
            raise UserError(
                f"{FIELD}.path: its images are {tuple(images.shape[1:])} (channels, height, width), the "
                f"data set's are {tuple(dataset.image_shape)}; convert them to the data set's size"
            )
        return UnlabelledImages(images)
    pool, _ = train_pool(dataset, split.spec)
    candidates = split.unlabelled_index
    if spec.source == "count":
        if spec.count > len(candidates):
            raise UserError(
                f"{FIELD}: {spec.count} images asked, but the pool holds {len(candidates)} that are "
                "neither labelled nor validation at this regime; lower it or use pool"
            )
        rng = np.random.default_rng(derive_seed("unlabelled", split.spec.seed, len(candidates), replicate))
        candidates = np.sort(rng.choice(candidates, spec.count, replace=False))
    return UnlabelledImages(pool.images[torch.as_tensor(candidates, dtype=torch.long)])
