"""Data sets from disk: an ImageFolder tree, an .npz file of arrays, a MedMNIST .npz. Each loads to
the same uint8 N x C x H x W tensors with labels, class names and a content hash as the built-in
sets, and goes through the same split protocol. The memory the images will take is computed before
they are loaded; above the data set's ``max_gb`` (default 8) the run stops and says how to resize.
"""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from bench.core.errors import UserError
from bench.core.files import why_not
from bench.core.images import ImageSet
from bench.core.schema import check_number
from bench.data.sets import Dataset, DatasetEntry, make_dataset, register_dataset

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
DEFAULT_MAX_GB = 8.0


def _option(spec: DatasetEntry, name: str, kind: type, default: Any = None, low: float | None = None) -> Any:
    value = spec.get(name, default)
    return None if value is None else check_number(value, f"data set {spec.title}: `{name}`", kind, low)


def check_memory(spec: DatasetEntry, needed_bytes: int, what: str) -> None:
    """Refuse a data set whose images would take more than its ``max_gb`` in memory (as uint8)."""
    limit = float(spec.get("max_gb", DEFAULT_MAX_GB))
    if needed_bytes / 1e9 > limit:
        raise UserError(
            f"data set {spec.title}: {what} need {needed_bytes / 1e9:.1f} GB of memory, above its "
            f"max_gb = {limit:g}; give a smaller `size` (images are resized at load), or raise `max_gb` "
            "if the machine has the memory"
        )


def to_uint8_nchw(array: np.ndarray, where: str) -> np.ndarray:
    """Images as uint8 N x C x H x W from N x HWC or CHW (or HW), uint8 or float in [0, 1]."""
    if array.ndim == 3:
        array = array[:, None]
    if array.ndim != 4:
        raise UserError(f"{where}: expected images of shape N x H x W (x C), got shape {array.shape}")
    if array.shape[-1] in (1, 3) and array.shape[1] not in (1, 3):
        array = array.transpose(0, 3, 1, 2)
    if array.dtype != np.uint8:
        if (
            not np.issubdtype(array.dtype, np.floating)
            or array.min(initial=0) < 0
            or array.max(initial=0) > 1
        ):
            raise UserError(f"{where}: images must be uint8, or floats in [0, 1] (got {array.dtype})")
        if not np.isfinite(array).all():
            raise UserError(
                f"{where}: {int((~np.isfinite(array)).sum())} pixel value(s) are NaN or infinite; "
                "fix or drop those images"
            )
        array = np.round(array * 255).astype(np.uint8)
    return np.ascontiguousarray(array)


def labels_from(array: np.ndarray, where: str) -> np.ndarray:
    """Class indices (int64) from an (N,) or (N, 1) array; anything else is a UserError."""
    labels = np.asarray(array).reshape(len(array), -1)
    if labels.shape[1] != 1:
        raise UserError(
            f"{where}: labels have {labels.shape[1]} columns; augbench needs one class per image "
            "(multi-label sets are not supported)"
        )
    labels = labels[:, 0]
    if not np.issubdtype(labels.dtype, np.integer) or labels.min(initial=0) < 0:
        raise UserError(
            f"{where}: labels must be whole numbers from 0 (got {labels.dtype}, min {labels.min()})"
        )
    return labels.astype(np.int64)


def _image_set(images: np.ndarray, labels: np.ndarray, where: str) -> ImageSet:
    if len(images) != len(labels):
        raise UserError(f"{where}: {len(images)} images but {len(labels)} labels")
    return ImageSet(torch.from_numpy(images), torch.from_numpy(labels))


# ----------------------------------------------------------------------------- ImageFolder
def _channels_of(mode: str) -> int:
    return 1 if mode in ("1", "L", "I", "I;16", "F") else 3


def _folder_files(folder: Path) -> tuple[list[Path], int]:
    """(image files, number of other files skipped) in one class folder."""
    files = sorted(p for p in folder.iterdir() if p.is_file())
    images = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
    return images, len(files) - len(images)


def read_image(path: Path, channels: int | None, size: int | None) -> np.ndarray:
    """One image file as uint8 C x H x W: gray (1) or RGB (3) channels (None: as the file has them,
    gray or RGB), resized to ``size`` x ``size`` where given."""
    try:
        with Image.open(path) as image:
            channels = channels or _channels_of(image.mode)
            image = image.convert("L" if channels == 1 else "RGB")
            if size is not None and image.size != (size, size):
                image = image.resize((size, size), Image.BILINEAR)
            array = np.asarray(image, dtype=np.uint8)
    except (UnidentifiedImageError, OSError) as exc:
        raise UserError(f"image {path} cannot be read ({exc}); remove or replace it") from None
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)


def read_image_folder(
    root: Path, spec: DatasetEntry, class_names: list[str] | None = None
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Images (uint8 N x C x H x W), labels and class names of an ImageFolder tree (one subfolder
    per class). With ``class_names`` the subfolders must be exactly those classes."""
    if not root.is_dir():
        raise UserError(
            f"data folder {root} {why_not(root, folder=True)}; give `root` the folder with one subfolder "
            "per class"
        )
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    names = [f.name for f in folders]
    if not folders:
        raise UserError(
            f"data folder {root} has no class subfolders; put each class's images in a subfolder "
            "named after the class"
        )
    if class_names is not None and sorted(names) != sorted(class_names):
        raise UserError(f"data folder {root}: its classes {names} differ from the data set's {class_names}")
    files, skipped = [], 0
    for label, folder in enumerate(folders if class_names is None else [root / n for n in class_names]):
        images, others = _folder_files(folder)
        skipped += others
        if not images:
            raise UserError(
                f"class folder {folder} has no images ({'.'.join(sorted(IMAGE_SUFFIXES))[1:]}); add "
                "some or remove the folder"
            )
        files += [(path, label) for path in images]
    if skipped:
        print(f"augbench: {root}: skipped {skipped} file(s) that are not images", file=sys.stderr)
    size = _option(spec, "size", int, low=1)
    with Image.open(files[0][0]) as first:
        channels = _option(spec, "channels", int, low=1) or _channels_of(first.mode)
        height, width = (size, size) if size else (first.size[1], first.size[0])
    if channels not in (1, 3):
        raise UserError(f"data set {spec.title}: `channels` must be 1 or 3, got {channels}")
    check_memory(
        spec, len(files) * channels * height * width, f"{len(files)} images of {channels}x{height}x{width}"
    )
    images = np.empty((len(files), channels, height, width), dtype=np.uint8)
    for i, (path, _) in enumerate(files):
        array = read_image(path, channels, size)
        if array.shape[1:] != (height, width):
            raise UserError(
                f"image {path} is {array.shape[2]}x{array.shape[1]} but {files[0][0]} is "
                f"{width}x{height}; give the data set a `size` to resize them all at load"
            )
        images[i] = array
    return images, np.array([label for _, label in files], dtype=np.int64), (class_names or names)


@register_dataset("imagefolder", options=("size", "channels", "hflip", "max_gb"))
def _image_folder(spec: DatasetEntry) -> Dataset:
    if spec.root is None:
        raise UserError(
            "data set imagefolder: give its `root`, the folder with one subfolder per class "
            "(or with train/ and test/ folders of that kind)"
        )
    root = Path(spec.root)
    if (root / "train").is_dir() and (root / "test").is_dir():
        x, y, names = read_image_folder(root / "train", spec)
        x_test, y_test, _ = read_image_folder(root / "test", spec, names)
        test = _image_set(x_test, y_test, str(root / "test"))
    else:
        (x, y, names), test = read_image_folder(root, spec), None
    return make_dataset(spec.title, _image_set(x, y, str(root)), test, names, bool(spec.get("hflip", False)))


# ----------------------------------------------------------------------------- npz files
def _npz_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """The shapes of the arrays in an .npz file, read from their headers (nothing loaded)."""
    shapes = {}
    try:
        with zipfile.ZipFile(path) as archive:
            for member in archive.namelist():
                with archive.open(member) as handle:
                    version = np.lib.format.read_magic(handle)
                    read_header = (
                        np.lib.format.read_array_header_1_0
                        if version == (1, 0)
                        else np.lib.format.read_array_header_2_0
                    )
                    shape, _, _ = read_header(handle)
                    shapes[member.removesuffix(".npy")] = shape
    except (zipfile.BadZipFile, ValueError, OSError) as exc:
        raise UserError(f"data file {path} is not a readable .npz file ({exc})") from None
    return shapes


def read_npz(path: Path, spec: DatasetEntry, pairs: list[tuple[str, str]]) -> dict[str, np.ndarray]:
    """The arrays of ``pairs`` (image key, label key) that the file holds, after a memory check."""
    if not path.is_file():
        raise UserError(f"data file {path} {why_not(path, folder=False)}; give `path` an .npz file")
    shapes = _npz_shapes(path)
    missing = [k for pair in pairs for k in pair if k not in shapes]
    if missing:
        raise UserError(
            f"data file {path} lacks array(s) {', '.join(missing)} (it has {', '.join(sorted(shapes))})"
        )
    images = [shapes[x] for x, _ in pairs]
    check_memory(spec, sum(int(np.prod(shape)) for shape in images), f"{sum(s[0] for s in images)} images")
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for pair in pairs for k in pair} | (
                {"class_names": data["class_names"]} if "class_names" in data else {}
            )
    except ValueError as exc:  # object arrays (they would need pickle, which augbench never loads)
        raise UserError(
            f"data file {path} cannot be read without pickle ({exc}); save its arrays as numbers "
            "(np.savez with uint8 or float images and integer labels)"
        ) from None


def _from_arrays(
    spec: DatasetEntry, path: Path, arrays: dict, train: list[tuple[str, str]], test: tuple[str, str] | None
) -> Dataset:
    where = str(path)
    x = np.concatenate([to_uint8_nchw(arrays[k], f"{where} [{k}]") for k, _ in train])
    y = np.concatenate([labels_from(arrays[k], f"{where} [{k}]") for _, k in train])
    test_set = None
    if test:
        test_set = _image_set(
            to_uint8_nchw(arrays[test[0]], f"{where} [{test[0]}]"),
            labels_from(arrays[test[1]], f"{where} [{test[1]}]"),
            where,
        )
    classes = int(max(y.max(initial=0), test_set.labels.max().item() if test_set else 0)) + 1
    names = (
        [str(n) for n in arrays["class_names"]]
        if "class_names" in arrays
        else [str(c) for c in range(classes)]
    )
    if len(names) < classes:
        raise UserError(f"{where}: labels go up to {classes - 1} but class_names has {len(names)} names")
    return make_dataset(spec.title, _image_set(x, y, where), test_set, names, bool(spec.get("hflip", False)))


@register_dataset("npz", options=("path", "hflip", "max_gb"))
def _npz(spec: DatasetEntry) -> Dataset:
    path = Path(str(spec.get("path") or ""))
    if not spec.get("path"):
        raise UserError(
            "data set npz: give its `path`, an .npz file with x_train, y_train, x_test, y_test (or x, y)"
        )
    split = [("x_train", "y_train"), ("x_test", "y_test")]
    names = set(_npz_shapes(path)) if path.is_file() else set()
    if {"x", "y"} <= names and not {"x_train", "y_train"} <= names:
        return _from_arrays(spec, path, read_npz(path, spec, [("x", "y")]), [("x", "y")], None)
    return _from_arrays(spec, path, read_npz(path, spec, split), [split[0]], split[1])


@register_dataset("medmnist", options=("flag", "size", "hflip", "max_gb"))
def _medmnist(spec: DatasetEntry) -> Dataset:
    """A MedMNIST file as distributed (``<flag>.npz`` at 28 px, ``<flag>_<size>.npz`` otherwise) from
    a local folder; its train and val parts form the training pool, its test part is the test set."""
    flag, size = spec.get("flag"), _option(spec, "size", int, 28, low=1)
    if not flag or spec.root is None:
        raise UserError(
            "data set medmnist: give its `flag` (e.g. pathmnist) and `root`, the folder holding "
            "the MedMNIST .npz files"
        )
    path = Path(spec.root) / (f"{flag}.npz" if size == 28 else f"{flag}_{size}.npz")
    if not path.is_file():
        raise UserError(
            f"medmnist file {path} {why_not(path, folder=False)}; download {path.name} from MedMNIST into "
            f"{spec.root}"
        )
    pairs = [("train_images", "train_labels"), ("val_images", "val_labels"), ("test_images", "test_labels")]
    return _from_arrays(spec, path, read_npz(path, spec, pairs), pairs[:2], pairs[2])
