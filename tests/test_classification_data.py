"""Tests of auxsearch.tasks.classification_data on tiny files written here (no downloads)."""

from __future__ import annotations

import io
import math
import pickle
import struct
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms

from auxsearch.errors import ConfigError
from auxsearch.tasks.classification_data import DATASETS, ImageData, load_image_data


def _rows(images: torch.Tensor) -> set[bytes]:
    return {bytes(row.numpy().tobytes()) for row in images.flatten(1)}


def _digits_split(seed: int = 0, fraction: float = 0.25):
    """The train/test split digits made before validation existed (the test split must stay)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    train, test = train_test_split(range(1797), test_size=fraction, random_state=seed,
                                   stratify=bunch.target)
    images = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    return images, torch.tensor(bunch.target), list(train), list(test)


def _assert_stratified(val_labels, pool_labels, fraction: float) -> None:
    """Every class's share of the validation split is within one item of proportional."""
    val, pool = Counter(int(v) for v in val_labels), Counter(int(v) for v in pool_labels)
    n_val = math.ceil(round(fraction * sum(pool.values()), 9))
    assert sum(val.values()) == n_val
    for label, count in pool.items():
        assert abs(val[label] - n_val * count / sum(pool.values())) < 1, (label, val, pool)

# ---------------------------------------------------------------- digits


@pytest.mark.parametrize("size", [16, 32])
def test_digits_shapes_and_range(size: int) -> None:
    data = load_image_data({"name": "digits", "image_size": size, "seed": 0})
    assert isinstance(data, ImageData)
    assert (data.in_chans, data.num_classes, data.image_size) == (1, 10, size)
    assert len(data.train) + len(data.val) + len(data.test) == 1797
    assert len(data.test) == pytest.approx(0.25 * 1797, abs=1)
    assert len(data.val) == math.ceil(0.2 * (1797 - len(data.test)))  # the documented default
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
    assert abs(len(data.train) + len(data.val) - len(data.test)) <= 1


@pytest.mark.parametrize("seed", [0, 3])
def test_digits_validation_is_carved_from_train_and_test_is_unchanged(seed: int) -> None:
    data = load_image_data({"name": "digits", "image_size": 8, "seed": seed, "val_fraction": 0.15})
    images, labels, train_idx, test_idx = _digits_split(seed)
    assert torch.equal(data.test.tensors[0], images[test_idx])  # exactly the split made before
    assert torch.equal(data.test.tensors[1], labels[test_idx])
    train, val = _rows(data.train.tensors[0]), _rows(data.val.tensors[0])
    assert len(train) == len(data.train) and len(val) == len(data.val)  # all images differ
    assert train.isdisjoint(val) and _rows(data.test.tensors[0]).isdisjoint(train | val)
    assert train | val == _rows(images[train_idx])  # together: the old training part
    assert len(data.val) == math.ceil(0.15 * len(train_idx))
    _assert_stratified(data.val.tensors[1], labels[train_idx], 0.15)
    assert data.mean[0] == pytest.approx(data.train.tensors[0].mean().item(), abs=1e-6)


def test_digits_validation_is_deterministic_and_seeded() -> None:
    first = load_image_data({"name": "digits", "seed": 2})
    again = load_image_data({"name": "digits", "seed": 2})
    other = load_image_data({"name": "digits", "seed": 1})
    for a, b in zip(first.val.tensors + first.train.tensors,
                    again.val.tensors + again.train.tensors, strict=True):
        assert torch.equal(a, b)
    assert not torch.equal(first.val.tensors[0], other.val.tensors[0])


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


def _train_row(written: dict, index: int) -> tuple[np.ndarray, int]:
    """Row and label of item ``index`` of the 50k-style training set (batches 1..5 in order)."""
    per_batch = len(written["data_batch_1"][1])
    rows, labels = written[f"data_batch_{index // per_batch + 1}"]
    return rows[index % per_batch], labels[index % per_batch]


def test_cifar10_round_trip(tmp_path) -> None:
    written = _write_cifar10(tmp_path)
    data = load_image_data({"name": "cifar10", "root": str(tmp_path), "augment": False})
    assert (data.in_chans, data.num_classes, data.image_size) == (3, 10, 32)
    assert (len(data.train), len(data.val), len(data.test)) == (18, 2, 4)  # ceil(0.1 * 20)
    assert len(data.mean) == len(data.std) == 3
    for split in (data.train, data.val):  # each item is the training item its index names
        for position in (0, len(split) - 1):
            image, label = split[position]
            row, want = _train_row(written, split.indices[position])
            assert image.shape == (3, 32, 32) and label == want
            for y, x in [(0, 0), (3, 17), (31, 30)]:
                assert image[:, y, x].tolist() == pytest.approx(_pixel(row, y, x), abs=1e-6)
    assert sorted(data.train.indices + data.val.indices) == list(range(20))
    test_image, test_label = data.test[3]  # the test split is the test batch, whole and in order
    rows, labels = written["test_batch"]
    assert test_label == labels[3]
    assert test_image[:, 9, 2].tolist() == pytest.approx(_pixel(rows[3], 9, 2), abs=1e-6)
    assert data.train.dataset.classes[0] == "airplane"


def test_cifar_validation_is_stratified_disjoint_and_deterministic(tmp_path) -> None:
    written = _write_cifar10(tmp_path, per_batch=20)  # 100 training images, 10 of each class
    cfg = {"name": "cifar10", "root": str(tmp_path), "val_fraction": 0.2}
    data, again = load_image_data(cfg), load_image_data(cfg)
    assert (len(data.train), len(data.val), len(data.test)) == (80, 20, 20)
    assert set(data.train.indices).isdisjoint(data.val.indices)
    assert (data.train.indices, data.val.indices) == (again.train.indices, again.val.indices)
    labels = [_train_row(written, i)[1] for i in range(100)]
    _assert_stratified([labels[i] for i in data.val.indices], labels, 0.2)
    assert [data.val[i][1] for i in range(20)] == [labels[i] for i in data.val.indices]
    default = load_image_data({"name": "cifar10", "root": str(tmp_path)})
    assert len(default.val) == 10  # the documented default, 0.1
    limited = load_image_data({**cfg, "val_limit": 3, "train_limit": 5, "test_limit": 2})
    assert (len(limited.train), len(limited.val), len(limited.test)) == (5, 3, 2)
    assert limited.val.dataset.indices[:3] == data.val.indices[:3]  # limits do not move the split


def _reads_differ(dataset, items: int = 6, reads: int = 3) -> bool:
    """Whether some item reads differently on repeated reads (torch's RNG seeded once)."""
    torch.manual_seed(0)
    for i in range(min(items, len(dataset))):
        first = dataset[i][0]
        if any(not torch.equal(first, dataset[i][0]) for _ in range(reads)):
            return True
    return False


def test_cifar_train_augmentation_and_plain_evaluation(tmp_path) -> None:
    _write_cifar10(tmp_path)
    data = load_image_data({"name": "cifar10", "root": str(tmp_path)})
    assert data.train.dataset.augment and data.train.dataset.padding == 4  # pad-4 crop + flip
    assert _reads_differ(data.train)
    assert not _reads_differ(data.val) and not _reads_differ(data.test)
    assert not data.val.dataset.augment and not data.test.augment
    plain = load_image_data({"name": "cifar10", "root": str(tmp_path), "augment": False})
    assert not _reads_differ(plain.train) and not plain.train.dataset.augment
    for i in range(3):  # augmented training items are still pixels in [0, 1] of that size
        assert data.train[i][0].shape == (3, 32, 32)
        assert 0.0 <= data.train[i][0].min() <= data.train[i][0].max() <= 1.0


def test_cifar10_limits_and_resize(tmp_path) -> None:
    _write_cifar10(tmp_path)
    data = load_image_data({"name": "cifar10", "root": str(tmp_path), "image_size": 16,
                            "train_limit": 7, "test_limit": 2})
    assert (len(data.train), len(data.test), data.image_size) == (7, 2, 16)
    assert len(data.val) == 2 and data.val[0][0].shape == (3, 16, 16)
    image, _ = data.train[6]
    assert image.shape == (3, 16, 16) and 0.0 <= image.min() <= image.max() <= 1.0


def test_cifar100_round_trip(tmp_path) -> None:
    written = _write_cifar100(tmp_path)
    data = load_image_data({"name": "cifar100", "root": str(tmp_path)})
    assert (data.num_classes, len(data.train), len(data.val), len(data.test)) == (100, 5, 1, 6)
    rows, fine = written["test"]
    image, label = data.test[4]
    assert label == fine[4]
    assert image[:, 20, 11].tolist() == pytest.approx(_pixel(rows[4], 20, 11), abs=1e-6)
    assert data.train[2][1] == written["train"][1][data.train.indices[2]]
    assert data.val[0][1] == written["train"][1][data.val.indices[0]]
    with pytest.raises(ConfigError) as info:  # 6 images: 0.9 leaves none to train
        load_image_data({"name": "cifar100", "root": str(tmp_path), "val_fraction": 0.9})
    assert info.value.key == "data.val_fraction"
    assert "0.9 of 6" in info.value.message and "leaves 0" in info.value.message


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
    assert (len(data.train), len(data.val), len(data.test)) == (8, 1, 6)  # val: ceil(0.1 * 9)
    assert data.test.root.endswith("val")  # val/ alone keeps its old meaning: the test split
    assert data.mean == (0.5,) * 3 and data.std == (0.25,) * 3
    for dataset in (data.train, data.val, data.test):
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


def test_imagefolder_validation_layouts(tmp_path) -> None:
    _write_folder(tmp_path, "train", per_class=5)
    _write_folder(tmp_path, "test", per_class=1)
    cfg = {"name": "imagefolder", "root": str(tmp_path), "image_size": 8, "val_fraction": 0.2}
    carved = load_image_data(cfg)
    assert (len(carved.train), len(carved.val), len(carved.test)) == (12, 3, 3)
    assert set(carved.train.indices).isdisjoint(carved.val.indices)
    assert carved.val.indices == load_image_data(cfg).val.indices
    targets = carved.train.dataset.targets
    _assert_stratified([targets[i] for i in carved.val.indices], targets, 0.2)
    assert carved.test.root.endswith("test")
    _write_folder(tmp_path, "val", per_class=2)  # all three: val/ validates, test/ tests
    shipped = load_image_data({"name": "imagefolder", "root": str(tmp_path), "image_size": 8,
                               "val_limit": 4})
    assert (len(shipped.train), len(shipped.val), len(shipped.test)) == (15, 4, 3)
    assert shipped.val.dataset.root.endswith("val") and shipped.test.root.endswith("test")
    with pytest.raises(ConfigError) as info:  # a fraction that would go unused is refused
        load_image_data(cfg)
    assert info.value.key == "data.val_fraction" and "val" in info.value.message


def test_imagefolder_augmentation(tmp_path) -> None:
    _write_folder(tmp_path, "train")
    _write_folder(tmp_path, "test")
    data = load_image_data({"name": "imagefolder", "root": str(tmp_path), "image_size": 16})
    train_steps = [type(t) for t in data.train.dataset.transform.transforms]
    eval_steps = [type(t) for t in data.test.transform.transforms]
    assert train_steps == [transforms.RandomResizedCrop, transforms.RandomHorizontalFlip,
                           transforms.ToTensor]
    assert eval_steps == [transforms.Resize, transforms.CenterCrop, transforms.ToTensor]
    assert [type(t) for t in data.val.dataset.transform.transforms] == eval_steps
    plain = load_image_data({"name": "imagefolder", "root": str(tmp_path), "image_size": 16,
                             "augment": False})
    assert [type(t) for t in plain.train.dataset.transform.transforms] == eval_steps


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
    ({"name": "cifar10", "root": "x", "val_limit": 0}, "data.val_limit"),
    ({"name": "cifar10", "root": "x", "augment": "yes"}, "data.augment"),
    ({"name": "digits", "augment": True}, "data.augment"),
    ({"name": "imagefolder", "root": "x", "augment": 1}, "data.augment"),
    ({"name": "imagefolder", "root": "x", "in_chans": 2}, "data.in_chans"),
    ({"name": "imagefolder", "root": "x", "std": [0.2, 0.2, 0]}, "data.std"),
])
def test_bad_values_name_the_key(cfg: dict, bad_key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_image_data(cfg)
    assert info.value.key == bad_key


@pytest.mark.parametrize("fraction", [0, 1, 1.5, -0.1, "0.1", True, None])
@pytest.mark.parametrize("name", ["digits", "cifar10", "imagefolder"])
def test_bad_val_fraction_is_refused(name: str, fraction) -> None:
    with pytest.raises(ConfigError) as info:
        load_image_data({"name": name, "root": "x", "val_fraction": fraction} if name != "digits"
                        else {"name": name, "val_fraction": fraction})
    assert info.value.key == "data.val_fraction" and repr(fraction) in info.value.message
