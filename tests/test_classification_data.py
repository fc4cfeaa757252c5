"""Tests of auxsearch.tasks.classification_data on tiny files written here (no downloads)."""

from __future__ import annotations

import io
import pickle
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from auxsearch.errors import ConfigError
from auxsearch.tasks.classification_data import DATASETS, ImageData, load_image_data

# ---------------------------------------------------------------- digits


@pytest.mark.parametrize("size", [16, 32])
def test_digits_shapes_and_range(size: int) -> None:
    data = load_image_data({"name": "digits", "image_size": size, "seed": 0})
    assert isinstance(data, ImageData)
    assert (data.in_chans, data.num_classes, data.image_size) == (1, 10, size)
    assert len(data.train) + len(data.test) == 1797
    assert len(data.test) == pytest.approx(0.25 * 1797, abs=1)
    image, label = data.train[0]
    assert image.shape == (1, size, size) and image.dtype == torch.float32
    train_images = data.train.tensors[0]
    assert train_images.min() >= 0.0 and train_images.max() <= 1.0
    assert 0 <= int(label) < 10
    assert len(data.mean) == len(data.std) == 1
    assert data.mean[0] == pytest.approx(train_images.mean().item(), abs=1e-6)
    assert set(data.test.tensors[1].tolist()) == set(range(10))


def test_digits_defaults_and_native_size() -> None:
    assert load_image_data({}).image_size == 16
    native = load_image_data({"name": "digits", "image_size": 8})
    assert native.train[0][0].shape == (1, 8, 8)
    values = native.train.tensors[0] * 16  # the raw 0..16 grey levels survive unresized
    assert torch.allclose(values, values.round())


def test_digits_split_is_seeded() -> None:
    first = load_image_data({"name": "digits", "seed": 0})
    again = load_image_data({"name": "digits", "seed": 0})
    other = load_image_data({"name": "digits", "seed": 1})
    assert torch.equal(first.test.tensors[0], again.test.tensors[0])
    assert torch.equal(first.test.tensors[1], again.test.tensors[1])
    assert not torch.equal(first.test.tensors[0], other.test.tensors[0])


def test_digits_test_fraction() -> None:
    data = load_image_data({"name": "digits", "test_fraction": 0.5})
    assert abs(len(data.train) - len(data.test)) <= 1


# ---------------------------------------------------------------- CIFAR, real on-disk format


class _Py2Str(str):
    """A str that pickles the way Python 2's cPickle wrote a byte string (SHORT_BINSTRING)."""


class _Py2Pickler(pickle._Pickler):  # the pure-Python pickler has an editable dispatch table
    dispatch = dict(pickle._Pickler.dispatch)

    def _save_py2str(self, obj: _Py2Str) -> None:
        raw = obj.encode("latin1")
        self.write(pickle.SHORT_BINSTRING + struct.pack("<B", len(raw)) + raw)
        self.memoize(obj)

    dispatch[_Py2Str] = _save_py2str


def _write_batch(path, entries: dict) -> None:
    """Write one batch the way the official archive holds it: a protocol-2 pickle of a dict
    whose keys are Python 2 byte strings (b'data', b'labels', ...). torchvision reads it with
    ``pickle.load(f, encoding="latin1")``, which turns those keys into str."""
    buffer = io.BytesIO()
    _Py2Pickler(buffer, protocol=2).dump({_Py2Str(k): v for k, v in entries.items()})
    path.write_bytes(buffer.getvalue())


def _cifar_images(n: int, seed: int) -> np.ndarray:
    """``n x 3072`` uint8 rows: 1024 red, then 1024 green, then 1024 blue values, row-major."""
    return np.random.default_rng(seed).integers(0, 256, size=(n, 3072), dtype=np.uint8)


def _write_cifar10(root, per_batch: int = 4) -> dict:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    written = {}
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        data, labels = _cifar_images(per_batch, i), [(i + j) % 10 for j in range(per_batch)]
        _write_batch(folder / name, {"batch_label": f"batch {i}", "data": data, "labels": labels,
                                     "filenames": [f"img{j}.png" for j in range(per_batch)]})
        written[name] = (data, labels)
    names = ["airplane", "automobile", "bird", "cat", "deer",
             "dog", "frog", "horse", "ship", "truck"]
    _write_batch(folder / "batches.meta",
                 {"label_names": [_Py2Str(n) for n in names], "num_cases_per_batch": per_batch,
                  "num_vis": 3072})
    return written


def _write_cifar100(root, n: int = 6) -> dict:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    written = {}
    for i, name in enumerate(["train", "test"]):
        data = _cifar_images(n, 10 + i)
        fine, coarse = [(7 * j + i) % 100 for j in range(n)], [j % 20 for j in range(n)]
        _write_batch(folder / name, {"batch_label": name, "data": data, "fine_labels": fine,
                                     "coarse_labels": coarse,
                                     "filenames": [f"img{j}.png" for j in range(n)]})
        written[name] = (data, fine)
    _write_batch(folder / "meta",
                 {"fine_label_names": [_Py2Str(f"fine{k}") for k in range(100)],
                  "coarse_label_names": [_Py2Str(f"coarse{k}") for k in range(20)]})
    return written


def _pixel(row: np.ndarray, y: int, x: int) -> list[float]:
    """The RGB value at (y, x) of one 3072-byte row, scaled to [0, 1]."""
    return [row[plane * 1024 + y * 32 + x] / 255.0 for plane in range(3)]


def test_cifar10_round_trip(tmp_path) -> None:
    written = _write_cifar10(tmp_path)
    data = load_image_data({"name": "cifar10", "root": str(tmp_path)})
    assert (data.in_chans, data.num_classes, data.image_size) == (3, 10, 32)
    assert (len(data.train), len(data.test)) == (20, 4)
    assert len(data.mean) == len(data.std) == 3
    image, label = data.train[5]  # second item of data_batch_2
    rows, labels = written["data_batch_2"]
    assert image.shape == (3, 32, 32) and label == labels[1]
    for y, x in [(0, 0), (3, 17), (31, 30)]:
        assert image[:, y, x].tolist() == pytest.approx(_pixel(rows[1], y, x), abs=1e-6)
    test_image, test_label = data.test[3]
    rows, labels = written["test_batch"]
    assert test_label == labels[3]
    assert test_image[:, 9, 2].tolist() == pytest.approx(_pixel(rows[3], 9, 2), abs=1e-6)
    assert data.train.classes[0] == "airplane"


def test_cifar10_limits_and_resize(tmp_path) -> None:
    _write_cifar10(tmp_path)
    data = load_image_data({"name": "cifar10", "root": str(tmp_path), "image_size": 16,
                            "train_limit": 7, "test_limit": 2})
    assert (len(data.train), len(data.test), data.image_size) == (7, 2, 16)
    image, _ = data.train[6]
    assert image.shape == (3, 16, 16) and 0.0 <= image.min() <= image.max() <= 1.0


def test_cifar100_round_trip(tmp_path) -> None:
    written = _write_cifar100(tmp_path)
    data = load_image_data({"name": "cifar100", "root": str(tmp_path)})
    assert (data.num_classes, len(data.train), len(data.test)) == (100, 6, 6)
    rows, fine = written["test"]
    image, label = data.test[4]
    assert label == fine[4]
    assert image[:, 20, 11].tolist() == pytest.approx(_pixel(rows[4], 20, 11), abs=1e-6)
    assert data.train[2][1] == written["train"][1][2]


def test_cifar_missing_root(tmp_path) -> None:
    with pytest.raises(ConfigError) as info:
        load_image_data({"name": "cifar10", "root": str(tmp_path / "nowhere")})
    assert info.value.key == "data.root" and "download: true" in info.value.message
    (tmp_path / "cifar-10-batches-py").mkdir()  # folder there, batch files missing
    with pytest.raises(ConfigError, match="data.root"):
        load_image_data({"name": "cifar10", "root": str(tmp_path)})
    with pytest.raises(ConfigError, match="data.root"):
        load_image_data({"name": "cifar100"})


# ---------------------------------------------------------------- image folder

_COLOURS = {"cat": (255, 0, 0), "dog": (0, 0, 255), "emu": (0, 255, 0)}


def _write_folder(root, split: str, per_class: int = 2) -> None:
    for name, colour in _COLOURS.items():
        (root / split / name).mkdir(parents=True)
        for i in range(per_class):
            Image.new("RGB", (40, 30), colour).save(root / split / name / f"{i}.png")


def test_imagefolder(tmp_path) -> None:
    _write_folder(tmp_path, "train", per_class=3)
    _write_folder(tmp_path, "val")
    data = load_image_data({"name": "imagefolder", "root": str(tmp_path), "image_size": 24})
    assert (data.num_classes, data.in_chans, data.image_size) == (3, 3, 24)
    assert (len(data.train), len(data.test)) == (9, 6)
    assert data.mean == (0.5,) * 3 and data.std == (0.25,) * 3
    for dataset in (data.train, data.test):
        for image, label in dataset:
            assert image.shape == (3, 24, 24)
            colour = _COLOURS[sorted(_COLOURS)[label]]
            assert image[:, 12, 12].tolist() == pytest.approx([c / 255 for c in colour])


def test_imagefolder_grey_test_dir_and_stats(tmp_path) -> None:
    _write_folder(tmp_path, "train")
    _write_folder(tmp_path, "test")
    data = load_image_data({"name": "imagefolder", "root": str(tmp_path), "image_size": 8,
                            "in_chans": 1, "mean": [0.4], "std": [0.2]})
    assert data.train[0][0].shape == (1, 8, 8)
    assert (data.mean, data.std) == ((0.4,), (0.2,))


def test_imagefolder_missing_split(tmp_path) -> None:
    _write_folder(tmp_path, "train")
    with pytest.raises(ConfigError) as info:
        load_image_data({"name": "imagefolder", "root": str(tmp_path)})
    assert info.value.key == "data.root" and "val/" in info.value.message


# ---------------------------------------------------------------- bad input


def test_unknown_name_lists_known() -> None:
    with pytest.raises(ConfigError) as info:
        load_image_data({"name": "mnist"}, key="task.data")
    assert info.value.key == "task.data.name"
    assert "known: cifar10, cifar100, digits, imagefolder" in info.value.message
    assert sorted(DATASETS) == ["cifar10", "cifar100", "digits", "imagefolder"]


def test_unknown_key_named() -> None:
    with pytest.raises(ConfigError) as info:
        load_image_data({"name": "digits", "imagesize": 16})
    assert info.value.key == "data.imagesize" and "image_size" in info.value.message


@pytest.mark.parametrize(("cfg", "bad_key"), [
    ({"name": "digits", "image_size": "big"}, "data.image_size"),
    ({"name": "digits", "image_size": 4}, "data.image_size"),
    ({"name": "digits", "image_size": True}, "data.image_size"),
    ({"name": "digits", "test_fraction": 1.0}, "data.test_fraction"),
    ({"name": "digits", "test_fraction": 0}, "data.test_fraction"),
    ({"name": "digits", "seed": -1}, "data.seed"),
    ({"name": "cifar10", "root": "x", "download": "yes"}, "data.download"),
    ({"name": "cifar10", "root": "x", "train_limit": 0}, "data.train_limit"),
    ({"name": "imagefolder", "root": "x", "in_chans": 2}, "data.in_chans"),
    ({"name": "imagefolder", "root": "x", "std": [0.2, 0.2, 0]}, "data.std"),
])
def test_bad_values_name_the_key(cfg: dict, bad_key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_image_data(cfg)
    assert info.value.key == bad_key
