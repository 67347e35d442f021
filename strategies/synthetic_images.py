"""`synthetic-images`: class-labelled images made by any external generator, read from disk (an
ImageFolder whose class folders are named as the data set's classes, or an .npz with arrays x, y),
mixed in at a ratio exactly as the built-in generators' samples are, and scored by the same quality
metrics. The files' content hash is part of the params, so changed files are new cells."""

from __future__ import annotations

from pathlib import Path

import torch

from bench.core.errors import UserError
from bench.core.files import files_hash
from bench.core.images import ImageSet
from bench.core.strategy import Param, Strategy, TrainingData, register_strategy
from bench.data.files import labels_from, read_image_folder, read_npz, to_uint8_nchw
from bench.data.sets import DatasetEntry
from strategies.generative import BALANCE, RATIO
from strategies.sampling import synthetic_labels


def _check_path(value, where: str) -> str:
    if not isinstance(value, str) or not value or not Path(value).exists():
        raise UserError(
            f"{where}: {value!r} does not exist; give a folder of class subfolders or an .npz file "
            "with arrays x, y"
        )
    return value


@register_strategy("synthetic-images")
class SyntheticImages(Strategy):
    """Pre-generated images from any generator (a folder of class subfolders, or an .npz of x, y)."""

    params = {
        "path": Param(
            "",
            check=_check_path,
            names_files=True,
            help="ImageFolder with the data set's class names, or .npz of x, y",
        ),
        "ratio": RATIO,
        "balance": BALANCE,
        "content_hash": Param(
            "", check=lambda value, where: value, help="set by augbench: the content hash of `path`'s files"
        ),
    }

    @classmethod
    def resolve_params(cls, given, where):
        resolved = super().resolve_params({**given, "path": given.get("path", "")}, where)
        resolved["content_hash"] = files_hash(Path(resolved["path"]))
        return resolved

    @classmethod
    def check_data(cls, params, labelled, class_names, where):
        strategy = cls(**params)
        pool = strategy._pool(labelled, class_names, len(class_names), f"{where}.params.path")
        labels = synthetic_labels(
            strategy.synthetic_count(len(labelled)), labelled.labels, len(class_names), params["balance"]
        )
        _check_enough(pool, labels, class_names, f"{where}.params.path")

    def _pool(
        self,
        labelled: ImageSet,
        class_names: tuple[str, ...],
        num_classes: int,
        where: str = "synthetic-images",
    ) -> ImageSet:
        """The files' images and labels, checked against the data set's classes, size and channels."""
        path = Path(self.values["path"])
        shape = tuple(labelled.images.shape[1:])
        spec = DatasetEntry("synthetic-images", str(path), label=f"synthetic-images:{path.name}")
        if path.is_dir():
            names = list(class_names) or [str(c) for c in range(num_classes)]
            images, labels, _ = read_image_folder(path, spec, names)
        else:
            arrays = read_npz(path, spec, [("x", "y")])
            images, labels = to_uint8_nchw(arrays["x"], str(path)), labels_from(arrays["y"], str(path))
            if labels.max(initial=0) >= num_classes:
                raise UserError(
                    f"{where}: {path}: labels go up to {labels.max()}, the data set has {num_classes} classes"
                )
        if tuple(images.shape[1:]) != shape:
            raise UserError(
                f"{where}: {path}: images are {'x'.join(map(str, images.shape[1:]))} (CxHxW), the data set's "
                f"are {'x'.join(map(str, shape))}; write them at the data set's size and channels"
            )
        return ImageSet(torch.from_numpy(images), torch.from_numpy(labels))

    def synthetic_count(self, n_real: int) -> int:
        return round(self.values["ratio"] * n_real)

    def fit(self, labelled, ctx):
        pool = self._pool(labelled, ctx.class_names, ctx.num_classes)
        by_class = [torch.nonzero(pool.labels == c).flatten() for c in range(ctx.num_classes)]

        def sampler(n: int, generator: torch.Generator | None) -> ImageSet:
            """n images of the pool, class-balanced or filling the small classes (``balance``), each
            class's drawn without replacement (the first ones in file order without a generator: the
            pool as written, when it is that size)."""
            labels = synthetic_labels(n, labelled.labels, ctx.num_classes, self.values["balance"])
            _check_enough(pool, labels, ctx.class_names, f"synthetic-images {self.values['path']}")
            chosen = torch.empty(n, dtype=torch.long)
            for c, members in enumerate(by_class):
                wanted = torch.nonzero(labels == c).flatten()
                order = (
                    torch.arange(len(wanted))
                    if generator is None
                    else torch.randperm(len(members), generator=generator, device=generator.device)[
                        : len(wanted)
                    ].cpu()
                )
                chosen[wanted] = members[order]
            return pool.subset(chosen)

        n_synthetic = self.synthetic_count(len(labelled))
        synthetic = sampler(n_synthetic, None) if n_synthetic else None
        return TrainingData(
            real=labelled,
            synthetic=synthetic,
            sampler=sampler,
            info={"synthetic_pool_size": len(pool), "synthetic_content_hash": self.values["content_hash"]},
        )


def _check_enough(pool: ImageSet, labels: torch.Tensor, class_names: tuple[str, ...], where: str) -> None:
    """Refuse a pool with fewer images of a class than ``labels`` asks for."""
    have = torch.bincount(pool.labels, minlength=len(class_names))
    need = torch.bincount(labels, minlength=len(class_names))
    for c in torch.nonzero(need > have).flatten().tolist():
        name = class_names[c] if class_names else c
        raise UserError(
            f"{where}: class {name} has {int(have[c])} images, the ratio needs {int(need[c])}; add "
            "images or lower the ratio"
        )
