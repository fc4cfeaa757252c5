"""Tests of auxsearch.tasks.segmentation_data on scenes and on tiny files written here in the
real VOC on-disk format (palette PNG masks; no downloads)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from auxsearch.errors import ConfigError
from auxsearch.tasks.data import ImageData
from auxsearch.tasks.detection_data import load_detection_data
from auxsearch.tasks.scenes import CLASSES, make_scenes
from auxsearch.tasks.segmentation_data import DATASETS, IGNORE, load_segmentation_data

SMALL = {"name": "scenes", "image_size": 32, "num_train": 10, "num_val": 4, "num_test": 5,
         "seed": 7}

# ---------------------------------------------------------------- scenes


def test_scenes_contract_and_same_pictures_as_detection() -> None:
    data = load_segmentation_data(SMALL)
    assert isinstance(data, ImageData) and data.collate is None
    assert (data.in_chans, data.num_classes, data.image_size) == (3, 1 + len(CLASSES), 32)
    assert (len(data.train), len(data.val), len(data.test)) == (10, 4, 5)
    image, mask = data.train[2]
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32
    assert mask.shape == (32, 32) and mask.dtype == torch.int64
    _, _, masks = make_scenes(10, 32, seed=7)
    assert torch.equal(mask, torch.from_numpy(masks[2]))
    assert int(data.train.tensors[1].max()) < data.num_classes
    detection = load_detection_data(SMALL)
    assert torch.equal(data.test.tensors[0], detection.test.images)
    assert torch.equal(data.val.tensors[0], detection.val.images)
    assert data.mean == pytest.approx(detection.mean) and data.std == pytest.approx(detection.std)
    images, batch_masks = next(iter(DataLoader(data.train, batch_size=4)))
    assert images.shape == (4, 3, 32, 32) and batch_masks.shape == (4, 32, 32)


def test_scenes_validation_is_its_own_stream() -> None:
    data, again = load_segmentation_data(SMALL), load_segmentation_data(SMALL)
    for split, stream, n in (("train", 0, 10), ("test", 1, 5), ("val", 2, 4)):
        images, _, masks = make_scenes(n, 32, seed=7, stream=stream)
        assert torch.equal(getattr(data, split).tensors[0], torch.from_numpy(images)), split
        assert torch.equal(getattr(data, split).tensors[1], torch.from_numpy(masks)), split
    assert torch.equal(data.val.tensors[1], again.val.tensors[1])
    train = {bytes(x.numpy().tobytes()) for x in data.train.tensors[0]}
    assert not any(bytes(x.numpy().tobytes()) in train for x in data.val.tensors[0])


def test_scenes_default_and_seed() -> None:
    data = load_segmentation_data({"num_train": 2, "num_test": 2})
    assert data.image_size == 64 and data.num_classes == 5
    other = load_segmentation_data({"num_train": 2, "num_test": 2, "seed": 1})
    assert not torch.equal(data.test.tensors[1], other.test.tensors[1])


# ---------------------------------------------------------------- VOC, real on-disk format


def _voc_palette() -> list[int]:
    """VOC's colour map: the bits of a class id spread over the high bits of R, G and B."""
    palette = []
    for index in range(256):
        rgb, code = [0, 0, 0], index
        for shift in range(7, -1, -1):
            for channel in range(3):
                rgb[channel] |= ((code >> channel) & 1) << shift
            code >>= 3
        palette.extend(rgb)
    return palette


def _voc_mask(width: int, height: int, top_class: int) -> Image.Image:
    """Upper half ``top_class``, lower half background, a 255 border band on columns 40..47."""
    ids = np.zeros((height, width), dtype=np.uint8)
    ids[: height // 2] = top_class
    ids[:, 40:48] = IGNORE
    mask = Image.fromarray(ids, mode="P")
    mask.putpalette(_voc_palette())
    return mask


def _write_voc(root) -> None:
    voc = root / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / sub).mkdir(parents=True)
    items = {"train": [("2007_000032", 15), ("2007_000039", 8)], "val": [("2007_000063", 12)]}
    for split, entries in items.items():
        (voc / "ImageSets" / "Segmentation" / f"{split}.txt").write_text(
            "".join(f"{file_id}\n" for file_id, _ in entries))
        for file_id, top_class in entries:
            Image.new("RGB", (80, 60), (40, 120, 200)).save(voc / "JPEGImages" / f"{file_id}.jpg")
            _voc_mask(80, 60, top_class).save(voc / "SegmentationClass" / f"{file_id}.png")


def test_palette_png_is_what_voc_ships(tmp_path) -> None:
    _write_voc(tmp_path)
    mask = Image.open(tmp_path / "VOCdevkit/VOC2012/SegmentationClass/2007_000032.png")
    assert mask.mode == "P" and mask.convert("RGB").getpixel((0, 0)) == (192, 128, 128)  # person
    assert mask.convert("RGB").getpixel((41, 0)) == (224, 224, 192)  # the border colour


def test_voc_masks_resized_nearest(tmp_path) -> None:
    _write_voc(tmp_path)
    data = load_segmentation_data({"name": "voc", "root": str(tmp_path), "image_size": 40})
    assert (data.num_classes, len(data.train), len(data.val), len(data.test)) == (21, 1, 1, 1)
    assert data.mean == (0.485, 0.456, 0.406) and data.collate is None
    image_set = data.train.dataset  # the whole training image set, before the validation cut
    image, mask = image_set[0]
    assert image.shape == (3, 40, 40) and mask.shape == (40, 40) and mask.dtype == torch.int64
    assert image[:, 30, 5].tolist() == pytest.approx([40 / 255, 120 / 255, 200 / 255], abs=0.03)
    assert set(mask.unique().tolist()) == {0, 15, IGNORE}  # no blended ids
    # nearest: output row i <- source row (i + 0.5) * 1.5, column j <- source column 2 j + 1
    expected = torch.zeros(40, 40, dtype=torch.int64)
    expected[:20] = 15
    expected[:, 20:24] = IGNORE
    assert torch.equal(mask, expected)
    assert int(data.test[0][1][0, 0]) == 12 and int(image_set[1][1][5, 5]) == 8
    images, masks = next(iter(DataLoader(image_set, batch_size=2)))
    assert images.shape == (2, 3, 40, 40) and masks.shape == (2, 40, 40)


def test_voc_limits_and_image_sets(tmp_path) -> None:
    _write_voc(tmp_path)
    data = load_segmentation_data({"name": "voc", "root": str(tmp_path), "train_limit": 1,
                                   "image_set_test": "train"})
    assert (len(data.train), len(data.test), data.image_size) == (1, 2, 128)


def test_voc_validation_is_carved_from_the_training_image_set(tmp_path) -> None:
    _write_voc(tmp_path)
    cfg = {"name": "voc", "root": str(tmp_path), "image_size": 16}
    data, again = load_segmentation_data(cfg), load_segmentation_data(cfg)
    assert data.val.indices == again.val.indices and len(data.val) == 1
    assert sorted(data.train.indices + data.val.indices) == [0, 1]
    tops = {15, 8}  # the class of the upper half of each training image
    assert {int(data.val[0][1][0, 0]), int(data.train[0][1][0, 0])} == tops
    assert int(data.test[0][1][0, 0]) == 12  # the test split is still val.txt
    assert len(load_segmentation_data({**cfg, "val_limit": 1}).val) == 1
    with pytest.raises(ConfigError) as info:  # 2 images: 0.6 puts both in validation
        load_segmentation_data({**cfg, "val_fraction": 0.6})
    assert info.value.key == "data.val_fraction" and "0.6 of 2" in info.value.message
    with pytest.raises(ConfigError) as info:  # val.txt is the test set
        load_segmentation_data({**cfg, "image_set_val": "val"})
    assert info.value.key == "data.image_set_val"


def test_voc_rgb_mask_is_refused(tmp_path) -> None:
    _write_voc(tmp_path)
    path = tmp_path / "VOCdevkit/VOC2012/SegmentationClass/2007_000063.png"
    Image.open(path).convert("RGB").save(path)
    data = load_segmentation_data({"name": "voc", "root": str(tmp_path)})
    with pytest.raises(ValueError, match="palette"):
        data.test[0]


# ---------------------------------------------------------------- bad input


def test_missing_folders_name_the_key(tmp_path) -> None:
    with pytest.raises(ConfigError) as info:
        load_segmentation_data({"name": "voc", "root": str(tmp_path)})
    assert info.value.key == "data.root" and "SegmentationClass/" in info.value.message
    _write_voc(tmp_path)
    with pytest.raises(ConfigError) as info:
        load_segmentation_data({"name": "voc", "root": str(tmp_path),
                                "image_set_train": "trainval"})
    assert info.value.key == "data.image_set_train" and "trainval.txt" in info.value.message


def test_unknown_name_and_keys() -> None:
    with pytest.raises(ConfigError) as info:
        load_segmentation_data({"name": "coco"})
    assert info.value.key == "data.name" and "known: scenes, voc" in info.value.message
    assert sorted(DATASETS) == ["scenes", "voc"]
    with pytest.raises(ConfigError) as info:
        load_segmentation_data({"name": "voc", "root": "x", "classes": ["dog"]})
    assert info.value.key == "data.classes"


@pytest.mark.parametrize(("cfg", "bad_key"), [
    ({"image_size": 15}, "data.image_size"),
    ({"num_test": -3}, "data.num_test"),
    ({"name": "voc", "root": "x", "image_size": "128"}, "data.image_size"),
    ({"name": "voc", "root": "x", "year": "2006"}, "data.year"),
    ({"name": "voc", "root": ""}, "data.root"),
    ({"num_val": True}, "data.num_val"),
    ({"name": "voc", "root": "x", "val_fraction": -0.2}, "data.val_fraction"),
    ({"name": "voc", "root": "x", "val_limit": 0}, "data.val_limit"),
    ([1, 2], "data"),
])
def test_bad_values_name_the_key(cfg, bad_key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_segmentation_data(cfg)
    assert info.value.key == bad_key
