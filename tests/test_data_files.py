"""Data sets from disk: ImageFolder, npz and MedMNIST files load like the built-in sets, and bad
files give one clear error."""

import numpy as np
from PIL import Image
from tests_support import tiny_config_with

from bench.data.sets import load_dataset
from bench.protocol.config import load_config

ONE_CELL = {"strategies": ["none"], "classifiers": ["mlp"], "seeds": 1, "quality": {"enabled": False}}


def _digits_arrays():
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8), bunch.target


def _write_folder(root, images, labels, names=None):
    for i, (image, label) in enumerate(zip(images, labels)):
        folder = root / (names[label] if names else f"class-{label}")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"{i:05d}.png")


def _spec(tmp_path, entry):
    return load_config(tiny_config_with(tmp_path, {**ONE_CELL, "datasets": [entry]})).datasets[0]


def test_an_image_folder_of_digits_holds_the_built_in_images(tmp_path, cli):
    images, labels = _digits_arrays()
    _write_folder(tmp_path / "digits-png", images, labels)
    spec = _spec(tmp_path, {"name": "imagefolder", "root": str(tmp_path / "digits-png")})
    assert spec.title == "imagefolder:digits-png"
    loaded = load_dataset(spec)
    assert loaded.class_names == tuple(f"class-{c}" for c in range(10)) and loaded.test is None
    ours = sorted(
        bytes(x) + bytes([y]) for x, y in zip(loaded.train.images.numpy(), loaded.train.labels.numpy())
    )
    theirs = sorted(bytes(x[None]) + bytes([y]) for x, y in zip(images, labels))
    assert ours == theirs  # the same images with the same labels, in folder order
    config = tiny_config_with(
        tmp_path, {**ONE_CELL, "datasets": [{"name": "imagefolder", "root": str(tmp_path / "digits-png")}]}
    )
    code, out, err = cli("run", config, "--out", tmp_path / "run")
    assert code == 0, err
    assert "imagefolder:digits-png" in out


def test_image_folder_with_train_and_test_resizes_and_converts(tmp_path):
    rng = np.random.default_rng(0)
    for part, n in (("train", 30), ("test", 10)):
        _write_folder(
            tmp_path / "set" / part,
            rng.integers(0, 255, (n, 12, 10, 3), dtype=np.uint8),
            np.arange(n) % 3,
            names=["cat", "dog", "fox"],
        )
    (tmp_path / "set" / "train" / "cat" / "notes.txt").write_text("not an image")
    loaded = load_dataset(
        _spec(tmp_path, {"name": "imagefolder", "root": str(tmp_path / "set"), "size": 8, "channels": 1})
    )
    assert loaded.train.images.shape == (30, 1, 8, 8) and loaded.test.images.shape == (10, 1, 8, 8)
    assert loaded.class_names == ("cat", "dog", "fox")


def test_npz_and_medmnist_files(tmp_path):
    images, labels = _digits_arrays()
    floats = images[..., None].astype(np.float32) / 255.0  # N x H x W x C floats in [0, 1]
    np.savez(
        tmp_path / "d.npz",
        x_train=floats[:1000],
        y_train=labels[:1000],
        x_test=floats[1000:],
        y_test=labels[1000:],
        class_names=np.array([f"digit {c}" for c in range(10)]),
    )
    loaded = load_dataset(_spec(tmp_path, {"name": "npz", "path": str(tmp_path / "d.npz")}))
    assert loaded.train.images.shape == (1000, 1, 8, 8) and len(loaded.test) == len(images) - 1000
    assert (loaded.train.images[:, 0].numpy() == images[:1000]).all() and loaded.class_names[3] == "digit 3"
    np.savez(tmp_path / "xy.npz", x=images, y=labels)
    assert load_dataset(_spec(tmp_path, {"name": "npz", "path": str(tmp_path / "xy.npz")})).test is None
    np.savez_compressed(
        tmp_path / "pathmnist.npz",
        train_images=images[:900],
        train_labels=labels[:900, None],
        val_images=images[900:1200],
        val_labels=labels[900:1200, None],
        test_images=images[1200:],
        test_labels=labels[1200:, None],
    )
    spec = _spec(tmp_path, {"name": "medmnist", "flag": "pathmnist", "root": str(tmp_path)})
    loaded = load_dataset(spec)
    assert (
        spec.title == "medmnist:pathmnist"
        and len(loaded.train) == 1200
        and len(loaded.test) == len(images) - 1200
    )


def _error(tmp_path, cli, entry, name="bad"):
    code, _, err = cli(
        "run",
        tiny_config_with(tmp_path, {**ONE_CELL, "datasets": [entry]}, name=name),
        "--out",
        tmp_path / "run",
    )
    assert code == 2 and err.startswith("augbench: error:") and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "run").exists()
    return err


def test_bad_data_files_are_clear_errors(tmp_path, cli):
    images, labels = _digits_arrays()
    assert "does not exist" in _error(
        tmp_path, cli, {"name": "imagefolder", "root": str(tmp_path / "nowhere")}
    )
    (tmp_path / "empty" / "a").mkdir(parents=True)
    (tmp_path / "empty" / "a" / "readme.txt").write_text("x")
    assert "has no images" in _error(tmp_path, cli, {"name": "imagefolder", "root": str(tmp_path / "empty")})
    _write_folder(tmp_path / "mixed", [np.zeros((8, 8), np.uint8), np.zeros((9, 9), np.uint8)], [0, 1])
    assert "give the data set a `size`" in _error(
        tmp_path, cli, {"name": "imagefolder", "root": str(tmp_path / "mixed")}
    )
    assert "need 0.0 GB of memory, above its max_gb" in _error(
        tmp_path, cli, {"name": "imagefolder", "root": str(tmp_path / "mixed"), "size": 8, "max_gb": 1e-9}
    )
    np.savez(tmp_path / "half.npz", x_train=images)
    assert "lacks array(s) y_train, x_test, y_test" in _error(
        tmp_path, cli, {"name": "npz", "path": str(tmp_path / "half.npz")}
    )
    np.savez(tmp_path / "neg.npz", x=images, y=labels - 1)
    assert "labels must be whole numbers from 0" in _error(
        tmp_path, cli, {"name": "npz", "path": str(tmp_path / "neg.npz")}
    )
    assert "medmnist file" in _error(
        tmp_path, cli, {"name": "medmnist", "flag": "dermamnist", "root": str(tmp_path)}
    )
    assert "unknown key(s) colour" in _error(tmp_path, cli, {"name": "npz", "path": "x.npz", "colour": 1})
