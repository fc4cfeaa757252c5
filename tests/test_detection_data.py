"""Tests of auxsearch.tasks.detection_data on scenes and on tiny files written here in the real
VOC and COCO on-disk formats (no downloads)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from auxsearch.errors import ConfigError
from auxsearch.tasks.data import ImageData
from auxsearch.tasks.detection_data import DATASETS, detection_collate, load_detection_data
from auxsearch.tasks.scenes import CLASSES, make_scenes
from auxsearch.tasks.voc import VOC_CLASSES


def _close(boxes: torch.Tensor, expected: list) -> None:
    torch.testing.assert_close(boxes, torch.tensor(expected, dtype=torch.float32))


SMALL = {"name": "scenes", "image_size": 32, "num_train": 12, "num_val": 5, "num_test": 6,
         "seed": 1}

# ---------------------------------------------------------------- scenes


def test_scenes_contract() -> None:
    data = load_detection_data(SMALL)
    assert isinstance(data, ImageData) and data.collate is detection_collate
    assert (data.in_chans, data.num_classes, data.image_size) == (3, len(CLASSES), 32)
    assert (len(data.train), len(data.val), len(data.test)) == (12, 5, 6)
    image, target = data.train[3]
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32
    assert 0.0 <= image.min() and image.max() <= 1.0
    assert target["boxes"].dtype == torch.float32 and target["labels"].dtype == torch.int64
    assert target["boxes"].shape == (len(target["labels"]), 4)
    images, targets, _ = make_scenes(12, 32, seed=1)
    assert torch.equal(image, torch.from_numpy(images[3]))
    assert torch.equal(target["labels"], torch.from_numpy(targets[3][1]))
    per_channel = images.transpose(1, 0, 2, 3).reshape(3, -1)
    assert data.mean == pytest.approx(per_channel.mean(axis=1), abs=1e-5)
    assert data.std == pytest.approx(per_channel.std(axis=1), abs=1e-5)


def test_scenes_test_split_is_fixed_and_seeded() -> None:
    """The test scenes depend on the seed but not on num_train, and differ from train."""
    data = load_detection_data(SMALL)
    bigger = load_detection_data({**SMALL, "num_train": 20})
    other = load_detection_data({**SMALL, "seed": 2})
    assert torch.equal(data.test.images, bigger.test.images)
    assert not torch.equal(data.test.images, other.test.images)
    assert not torch.equal(data.test.images, data.train.images[:6])


def test_scenes_validation_stream_leaves_train_and_test_as_they_were() -> None:
    """Validation scenes come from a third stream: train and test are the scenes drawn before
    validation existed, and the three splits share no scene."""
    data, again = load_detection_data(SMALL), load_detection_data(SMALL)
    for split, stream, n in (("train", 0, 12), ("test", 1, 6), ("val", 2, 5)):
        images, targets, _ = make_scenes(n, 32, seed=1, stream=stream)
        assert torch.equal(getattr(data, split).images, torch.from_numpy(images)), split
        assert all(torch.equal(t["labels"], torch.from_numpy(labels)) for t, (_, labels) in
                   zip(getattr(data, split).targets, targets, strict=True))
    assert torch.equal(data.val.images, again.val.images)
    seen = {bytes(x.numpy().tobytes()) for x in torch.cat([data.train.images, data.test.images])}
    assert not any(bytes(x.numpy().tobytes()) in seen for x in data.val.images)
    assert len(load_detection_data({**SMALL, "num_val": 2}).val) == 2
    assert len(load_detection_data({"num_train": 2, "num_test": 2, "image_size": 16}).val) == 256


def test_default_is_scenes_and_collate_batches() -> None:
    data = load_detection_data({"num_train": 4, "num_test": 2})
    assert data.image_size == 64 and len(data.train) == 4
    images, targets = next(iter(DataLoader(data.train, batch_size=3,
                                           collate_fn=data.collate)))
    assert images.shape == (3, 3, 64, 64) and isinstance(targets, list) and len(targets) == 3
    assert all(set(t) == {"boxes", "labels"} for t in targets)
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
    stacked, kept = detection_collate([(torch.zeros(3, 8, 8), empty)] * 2)
    assert stacked.shape == (2, 3, 8, 8) and kept == [empty, empty]


# ---------------------------------------------------------------- VOC, real on-disk format

# (file id, width, height, colour, objects as (name, xmin, ymin, xmax, ymax, difficult))
_VOC_TRAIN = [
    ("2008_000001", 80, 60, (200, 30, 30), [("dog", 11, 7, 50, 36, 0)]),
    ("2008_000002", 100, 50, (30, 200, 30), [("person", 1, 1, 100, 50, 0),
                                              ("cat", 21, 11, 40, 30, 1),
                                              ("tvmonitor", 51, 6, 90, 45, 0)]),
]
_VOC_VAL = [("2008_000003", 64, 64, (30, 30, 200), [("aeroplane", 5, 9, 36, 40, 0)])]


def _voc_xml(file_id: str, width: int, height: int, objects: list) -> str:
    """An annotation as VOC writes it, person parts included (their boxes must be ignored)."""
    parts = []
    for name, x1, y1, x2, y2, difficult in objects:
        extra = ("<part><name>head</name><bndbox><xmin>2</xmin><ymin>2</ymin><xmax>9</xmax>"
                 "<ymax>9</ymax></bndbox></part>") if name == "person" else ""
        parts.append(f"<object><name>{name}</name><pose>Unspecified</pose>"
                     f"<truncated>0</truncated><difficult>{difficult}</difficult>"
                     f"<bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin><xmax>{x2}</xmax>"
                     f"<ymax>{y2}</ymax></bndbox>{extra}</object>")
    return (f"<annotation><folder>VOC2012</folder><filename>{file_id}.jpg</filename>"
            "<source><database>The VOC2008 Database</database></source>"
            f"<size><width>{width}</width><height>{height}</height><depth>3</depth></size>"
            f"<segmented>0</segmented>{''.join(parts)}</annotation>")


def _write_voc(root, year: str = "2012", extra: dict | None = None) -> None:
    """VOC<year> with the train and val image sets above, plus ``extra`` (name -> items)."""
    voc = root / "VOCdevkit" / f"VOC{year}"
    for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (voc / sub).mkdir(parents=True)
    for split, items in (("train", _VOC_TRAIN), ("val", _VOC_VAL), *(extra or {}).items()):
        (voc / "ImageSets" / "Main" / f"{split}.txt").write_text(
            "".join(f"{item[0]}\n" for item in items))
        for file_id, width, height, colour, objects in items:
            Image.new("RGB", (width, height), colour).save(voc / "JPEGImages" / f"{file_id}.jpg")
            (voc / "Annotations" / f"{file_id}.xml").write_text(
                _voc_xml(file_id, width, height, objects))


def test_voc_boxes_scaled_and_labels_mapped(tmp_path) -> None:
    _write_voc(tmp_path)
    data = load_detection_data({"name": "voc", "root": str(tmp_path), "image_size": 40})
    assert (data.num_classes, data.image_size, len(data.train), len(data.test)) == (20, 40, 1, 1)
    assert data.mean == (0.485, 0.456, 0.406) and data.collate is detection_collate
    image_set = data.train.dataset  # the whole training image set, before the validation cut
    assert sorted(data.train.indices + data.val.indices) == [0, 1] and len(data.val) == 1
    assert data.val.dataset is image_set
    image, target = image_set[0]
    assert image.shape == (3, 40, 40)
    assert image[:, 20, 20].tolist() == pytest.approx([200 / 255, 30 / 255, 30 / 255], abs=0.03)
    # 1-based inclusive (11, 7)-(50, 36) -> edges (10, 6, 50, 36) -> x * 40/80, y * 40/60
    _close(target["boxes"], [[5, 4, 25, 24]])
    assert target["labels"].tolist() == [VOC_CLASSES.index("dog") + 1]
    _, target = image_set[1]  # the difficult cat is skipped, the person's part is not a box
    assert target["labels"].tolist() == [15, 20]
    _close(target["boxes"], [[0, 0, 40, 40], [20, 4, 36, 36]])
    _, target = data.test[0]
    assert target["labels"].tolist() == [1]
    _close(target["boxes"], [[2.5, 5, 22.5, 25]])


def test_voc_class_subset_and_limits(tmp_path) -> None:
    _write_voc(tmp_path)
    data = load_detection_data({"name": "voc", "root": str(tmp_path), "year": 2012,
                                "classes": ["tvmonitor", "dog"], "train_limit": 1,
                                "val_limit": 1, "image_set_test": "train"})
    assert data.num_classes == 2 and len(data.train) == 1 and len(data.test) == 2
    assert data.test[0][1]["labels"].tolist() == [2]
    _, target = data.test[1]
    assert target["labels"].tolist() == [1] and target["boxes"].shape == (1, 4)
    images, targets = next(iter(DataLoader(data.test, batch_size=2, collate_fn=data.collate)))
    assert images.shape == (2, 3, 128, 128) and [len(t["labels"]) for t in targets] == [1, 1]


_VOC_TEST = [("2007_000004", 48, 40, (90, 90, 90), [("cat", 3, 3, 20, 20, 0)]),
             ("2007_000005", 40, 48, (10, 90, 10), [("dog", 5, 5, 30, 30, 0)])]


def test_voc_validation_split(tmp_path) -> None:
    """Carved from the training image set (deterministic), or an image set of its own, which
    must be held out from train and test; the test split is the image set it always was."""
    _write_voc(tmp_path, "2007", extra={"test": _VOC_TEST, "trainval": _VOC_TRAIN + _VOC_VAL})
    base = {"name": "voc", "root": str(tmp_path), "year": "2007", "image_size": 32}
    carved, again = load_detection_data(base), load_detection_data(base)
    assert carved.val.indices == again.val.indices and len(carved.val) == 1
    assert set(carved.val.indices).isdisjoint(carved.train.indices)
    assert len(carved.test) == 1 and carved.test[0][1]["labels"].tolist() == [1]  # val.txt
    given = load_detection_data({**base, "image_set_val": "val", "image_set_test": "test"})
    assert (len(given.train), len(given.val), len(given.test)) == (2, 1, 2)
    assert given.val[0][1]["labels"].tolist() == [1]  # the aeroplane of val.txt
    assert [t["labels"].tolist() for _, t in given.test] == [[8], [12]]  # cat, dog of test.txt
    for cfg, words in (({**base, "image_set_val": "val"}, "test set 'val'"),
                       ({**base, "image_set_val": "trainval", "image_set_test": "test"},
                        "train set 'train'"),
                       ({**base, "image_set_val": "val", "image_set_test": "test",
                         "val_fraction": 0.5}, "not used")):
        with pytest.raises(ConfigError) as info:
            load_detection_data(cfg)
        assert words in info.value.message
        assert info.value.key in ("data.image_set_val", "data.val_fraction")


# ---------------------------------------------------------------- COCO, real on-disk format

_CATEGORIES = [{"id": 18, "name": "dog", "supercategory": "animal"},
               {"id": 1, "name": "person", "supercategory": "person"},
               {"id": 3, "name": "car", "supercategory": "vehicle"}]


def _annotation(ann_id: int, image_id: int, category: int, bbox: list, crowd: int = 0) -> dict:
    x, y, w, h = bbox
    return {"id": ann_id, "image_id": image_id, "category_id": category, "bbox": bbox,
            "area": w * h, "iscrowd": crowd,
            "segmentation": {"counts": [0, 1], "size": [1, 1]} if crowd else
            [[x, y, x + w, y, x + w, y + h, x, y + h]]}


def _write_coco(root) -> None:
    splits = {
        "train2017": ([(7, "000000000007.jpg", 200, 100), (13, "000000000013.jpg", 40, 40),
                       (15, "000000000015.jpg", 40, 40)],
                      [_annotation(1, 7, 18, [20.0, 10.0, 60.0, 40.0]),
                       _annotation(2, 7, 1, [150.0, 50.0, 80.0, 70.0]),  # past the right edge
                       _annotation(3, 7, 3, [0.0, 0.0, 200.0, 100.0], crowd=1),
                       _annotation(4, 7, 3, [100.0, 20.0, 5.0, 30.0]),  # 1.25 px wide at 50
                       _annotation(6, 13, 1, [4.0, 4.0, 20.0, 20.0]),
                       _annotation(7, 15, 18, [8.0, 8.0, 20.0, 20.0])]),
        "val2017": ([(9, "000000000009.jpg", 50, 50), (11, "000000000011.jpg", 60, 30)],
                    [_annotation(5, 9, 3, [5.0, 5.0, 20.0, 10.0])]),
    }
    (root / "annotations").mkdir(parents=True)
    for split, (images, boxes) in splits.items():
        (root / split).mkdir()
        for _, name, width, height in images:
            Image.new("RGB", (width, height), (90, 160, 220)).save(root / split / name)
        document = {"info": {"description": "tiny"}, "licenses": [], "categories": _CATEGORIES,
                    "images": [{"id": i, "file_name": n, "width": w, "height": h}
                               for i, n, w, h in images],
                    "annotations": boxes}
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(document))


def test_coco_boxes_scaled_labels_mapped_crowds_skipped(tmp_path) -> None:
    _write_coco(tmp_path)
    data = load_detection_data({"name": "coco", "root": str(tmp_path), "image_size": 50})
    assert (data.num_classes, len(data.train), len(data.val), len(data.test)) == (3, 2, 1, 2)
    assert data.std == (0.229, 0.224, 0.225)
    image, target = data.train.dataset[0]  # image 7, the first of the training split
    assert image.shape == (3, 50, 50)
    assert image[:, 25, 25].tolist() == pytest.approx([90 / 255, 160 / 255, 220 / 255], abs=0.03)
    # sorted ids 1, 3, 18 -> labels 1, 2, 3; x * 50/200, y * 50/100; person clipped at x = 200
    assert target["labels"].tolist() == [3, 1, 2]
    _close(target["boxes"], [[5, 5, 20, 25], [37.5, 25, 50, 50], [25, 10, 26.25, 25]])
    data = load_detection_data({"name": "coco", "root": str(tmp_path), "image_size": 25})
    assert data.train.dataset[0][1]["labels"].tolist() == [3, 1]  # the thin car: under a pixel
    _, target = data.test[0]
    assert target["labels"].tolist() == [2] and target["boxes"].tolist() == [[2.5, 2.5, 12.5, 7.5]]
    _, target = data.test[1]  # an image without annotations
    assert target["boxes"].shape == (0, 4) and target["labels"].shape == (0,)


def test_coco_limits_and_split_names(tmp_path) -> None:
    _write_coco(tmp_path)
    data = load_detection_data({"name": "coco", "root": str(tmp_path), "test_split": "train2017",
                                "train_limit": 1, "test_limit": 1})
    assert (len(data.train), len(data.test), data.image_size) == (1, 1, 128)


def test_coco_validation_split(tmp_path) -> None:
    _write_coco(tmp_path)
    base = {"name": "coco", "root": str(tmp_path), "image_size": 32}
    carved = load_detection_data({**base, "val_fraction": 0.5})
    assert (len(carved.train), len(carved.val)) == (1, 2)  # ceil(0.5 * 3)
    assert carved.val.indices == load_detection_data({**base, "val_fraction": 0.5}).val.indices
    assert set(carved.val.indices).isdisjoint(carved.train.indices)
    assert len(carved.test) == 2 and carved.test[1][1]["boxes"].shape == (0, 4)  # val2017 as before
    assert len(load_detection_data({**base, "val_fraction": 0.5, "val_limit": 1}).val) == 1
    shutil.copytree(tmp_path / "val2017", tmp_path / "minival2017")
    shutil.copy(tmp_path / "annotations" / "instances_val2017.json",
                tmp_path / "annotations" / "instances_minival2017.json")
    given = load_detection_data({**base, "val_split": "minival2017"})
    assert (len(given.train), len(given.val), len(given.test)) == (3, 2, 2)
    assert given.val[0][1]["labels"].tolist() == [2]
    for cfg, key in (({**base, "val_split": "test2017"}, "data.val_split"),
                     ({**base, "val_split": "val2017"}, "data.val_split"),
                     ({**base, "val_split": "minival2017", "val_fraction": 0.2}, "data.val_fraction"),
                     ({**base, "val_fraction": 0.8}, "data.val_fraction")):
        with pytest.raises(ConfigError) as info:
            load_detection_data(cfg)
        assert info.value.key == key


# ---------------------------------------------------------------- bad input


def test_missing_files_name_the_key(tmp_path) -> None:
    with pytest.raises(ConfigError) as info:
        load_detection_data({"name": "voc", "root": str(tmp_path / "nowhere")})
    assert info.value.key == "data.root" and "VOCdevkit" in info.value.message
    _write_voc(tmp_path)
    (tmp_path / "VOCdevkit/VOC2012/ImageSets/Main/val.txt").unlink()
    with pytest.raises(ConfigError) as info:
        load_detection_data({"name": "voc", "root": str(tmp_path)})
    assert info.value.key == "data.image_set_test" and "val.txt" in info.value.message
    with pytest.raises(ConfigError) as info:
        load_detection_data({"name": "coco", "root": str(tmp_path / "nowhere")})
    assert info.value.key == "data.root" and "instances_train2017.json" in info.value.message
    _write_coco(tmp_path / "coco")
    with pytest.raises(ConfigError) as info:
        load_detection_data({"name": "coco", "root": str(tmp_path / "coco"),
                             "test_split": "test2017"})
    assert info.value.key == "data.test_split" and "test2017" in info.value.message


def test_unknown_name_and_key() -> None:
    with pytest.raises(ConfigError) as info:
        load_detection_data({"name": "kitti"}, key="task.data")
    assert info.value.key == "task.data.name" and "known: coco, scenes, voc" in info.value.message
    assert sorted(DATASETS) == ["coco", "scenes", "voc"]
    with pytest.raises(ConfigError) as info:
        load_detection_data({"imagesize": 32})
    assert info.value.key == "data.imagesize" and "'scenes'" in info.value.message


@pytest.mark.parametrize(("cfg", "bad_key"), [
    ({"image_size": 8}, "data.image_size"),
    ({"image_size": "big"}, "data.image_size"),
    ({"num_train": 0}, "data.num_train"),
    ({"max_objects": True}, "data.max_objects"),
    ({"seed": -1}, "data.seed"),
    ({"name": "voc", "root": "x", "year": "2013"}, "data.year"),
    ({"name": "voc", "root": "x", "image_size": 4}, "data.image_size"),
    ({"name": "voc", "root": "x", "classes": ["dog", "wolf"]}, "data.classes"),
    ({"name": "voc", "root": "x", "classes": ["dog", "dog"]}, "data.classes"),
    ({"name": "voc", "root": "x", "test_limit": 0}, "data.test_limit"),
    ({"name": "voc", "root": "x", "val_limit": -1}, "data.val_limit"),
    ({"name": "voc", "root": "x", "val_fraction": 1}, "data.val_fraction"),
    ({"name": "voc", "root": "x", "image_set_val": "minival"}, "data.root"),
    ({"name": "coco", "root": "x", "val_fraction": 0.0}, "data.val_fraction"),
    ({"num_val": 0}, "data.num_val"),
    ({"val_fraction": 0.1}, "data.val_fraction"),
    ({"name": "voc"}, "data.root"),
    ({"name": "coco", "root": "x", "train_split": "a/b"}, "data.train_split"),
    ({"name": "coco", "root": "x", "image_size": 2.5}, "data.image_size"),
    ({"name": "coco", "root": "x", "ann_file": "y"}, "data.ann_file"),
])
def test_bad_values_name_the_key(cfg: dict, bad_key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_detection_data(cfg)
    assert info.value.key == bad_key


def test_voc_test_image_set_only_for_2007(tmp_path) -> None:
    _write_voc(tmp_path)
    with pytest.raises(ConfigError) as info:
        load_detection_data({"name": "voc", "root": str(tmp_path), "image_set_test": "test"})
    assert info.value.key == "data.image_set_test" and "trainval" in info.value.message
