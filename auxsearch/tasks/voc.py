"""Pascal VOC as unpacked from the official tar, for detection and segmentation alike.

``root`` holds ``VOCdevkit/VOC<year>/`` with ``JPEGImages/``, ``Annotations/`` (detection) or
``SegmentationClass/`` (segmentation) and ``ImageSets/<Main|Segmentation>/<image_set>.txt``
(torchvision's convention). Keys common to both tasks: ``root``, ``year`` ("2012"),
``image_set_train`` ("train"), ``image_set_test`` ("val"), ``image_set_val`` (none),
``val_fraction`` (**0.1**), ``image_size`` (128), ``train_limit``, ``val_limit``,
``test_limit``. Without ``image_set_val`` the validation split is ``val_fraction`` of the
training image set (fixed seed 0, not stratified: an image holds several classes); with it,
that image set, which must share no image with the training or the test set.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import datasets

from auxsearch.errors import ConfigError, known
from auxsearch.tasks.data import (
    Converted,
    Target,
    box_target,
    carve,
    check_keys,
    fraction_option,
    given_val,
    int_option,
    limited,
    resize_image,
    root_path,
)

VOC_CLASSES: tuple[str, ...] = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor")
VOC_YEARS: tuple[str, ...] = tuple(str(year) for year in range(2007, 2013))
VOC_KEYS = {"name", "root", "year", "image_set_train", "image_set_val", "image_set_test",
            "val_fraction", "image_size", "train_limit", "val_limit", "test_limit"}
VAL_FRACTION = 0.1


def voc_year(cfg: Mapping, key: str) -> str:
    """The ``year`` key as torchvision spells it ("2007".."2012"; an integer is accepted)."""
    year = str(cfg.get("year", "2012"))
    if year not in VOC_YEARS:
        raise ConfigError(f"{key}.year", f"must be one of {known(VOC_YEARS)}, "
                          f"got {cfg.get('year')!r}")
    return year


def voc_folder(cfg: Mapping, key: str, year: str, needs: Sequence[str]) -> Path:
    """``root/VOCdevkit/VOC<year>`` after checking that the sub-folders ``needs`` exist."""
    root = root_path(cfg, key)
    folder = root / "VOCdevkit" / f"VOC{year}"
    missing = [name for name in needs if not (folder / name).is_dir()]
    if missing:
        raise ConfigError(f"{key}.root", f"{folder} lacks {', '.join(f'{n}/' for n in missing)}; "
                          "root must be the folder that holds VOCdevkit/ as unpacked from the "
                          "official VOCtrainval tar")
    return folder


def voc_image_sets(cfg: Mapping, key: str, folder: Path, task_dir: str) -> dict[str, str]:
    """The ``image_set_train`` / ``image_set_test`` (and, if given, ``image_set_val``) names,
    each checked to have its list file ``ImageSets/<task_dir>/<name>.txt`` (``test`` only for
    2007, the one year whose test annotations were published); a given validation set must
    share no image with the other two."""
    allowed = ("train", "trainval", "val") + (("test",) if folder.name == "VOC2007" else ())
    sets, ids = {}, {}
    for split, default in (("train", "train"), ("test", "val"), ("val", None)):
        name = cfg.get(f"image_set_{split}", default)
        if name is None:
            continue
        if name not in allowed:
            raise ConfigError(f"{key}.image_set_{split}",
                              f"must be one of {known(allowed)}, got {name!r}")
        listing = folder / "ImageSets" / task_dir / f"{name}.txt"
        if not listing.is_file():
            raise ConfigError(f"{key}.image_set_{split}", f"list file {listing} not found")
        sets[split], ids[split] = name, set(listing.read_text().split())
    for other in ("train", "test"):
        shared = ids.get("val", set()) & ids[other]
        if shared:
            raise ConfigError(f"{key}.image_set_val", f"{sets['val']!r} shares {len(shared)} "
                              f"images with the {other} set {sets[other]!r} (e.g. "
                              f"{min(shared)}); validation must be held out from both")
    return sets


def voc_classes(cfg: Mapping, key: str) -> tuple[str, ...]:
    value = cfg.get("classes", list(VOC_CLASSES))
    ok = (isinstance(value, (list, tuple)) and value and all(v in VOC_CLASSES for v in value)
          and len(set(value)) == len(value))
    if not ok:
        raise ConfigError(f"{key}.classes", "must be a non-empty list of distinct VOC class "
                          f"names ({', '.join(VOC_CLASSES)}), got {value!r}")
    return tuple(value)


class VOCBoxes:
    """VOCDetection's parsed XML to the target contract: skip difficult objects and classes not
    asked for, turn 1-based inclusive corners into pixel-edge boxes, resize with the image."""

    def __init__(self, classes: Sequence[str], size: int) -> None:
        self.labels = {name: i + 1 for i, name in enumerate(classes)}
        self.size = size

    def __call__(self, image: Image.Image, parsed: dict) -> tuple[torch.Tensor, Target]:
        objects = parsed["annotation"].get("object", [])
        objects = objects if isinstance(objects, list) else [objects]
        boxes, labels = [], []
        for obj in objects:
            if obj.get("name") not in self.labels or str(obj.get("difficult", "0")) == "1":
                continue
            b = obj["bndbox"]
            boxes.append([float(b["xmin"]) - 1, float(b["ymin"]) - 1,
                          float(b["xmax"]), float(b["ymax"])])
            labels.append(self.labels[obj["name"]])
        width, height = image.size
        scale = np.array([self.size / width, self.size / height] * 2, dtype=np.float32)
        boxes = np.clip(np.asarray(boxes, np.float32).reshape(-1, 4) * scale, 0, self.size)
        return resize_image(image, self.size), box_target(boxes, labels)


class VOCMask:
    """An image and its palette mask to the contract: bilinear image, nearest-neighbour mask."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __call__(self, image: Image.Image, mask: Image.Image) -> tuple[torch.Tensor,
                                                                         torch.Tensor]:
        if mask.mode not in ("P", "L"):  # an RGB rendering of the palette holds no class ids
            mask.close()
            raise ValueError(f"segmentation mask {getattr(mask, 'filename', '')!r} has mode "
                             f"{mask.mode!r}; VOC masks are palette ('P') PNGs of class ids")
        mask = mask.resize((self.size, self.size), Image.Resampling.NEAREST)
        return resize_image(image, self.size), torch.from_numpy(np.asarray(mask, np.int64))


def voc_splits(cfg: Mapping, key: str, segmentation: bool, convert: Callable[[int], Callable],
               extra_keys: Sequence[str] = ()) -> tuple[Dataset, Dataset, Dataset, int]:
    """Check the VOC keys (plus ``extra_keys``) and build ``(train, val, test, image_size)``,
    every item passed through ``convert(image_size)`` (called before any file is looked at)."""
    check_keys(cfg, VOC_KEYS | set(extra_keys), key)
    year = voc_year(cfg, key)
    size = int_option(cfg, "image_size", 128, key, minimum=16)
    for split in ("train", "val", "test"):
        int_option(cfg, f"{split}_limit", None, key)
    fraction_option(cfg, "val_fraction", VAL_FRACTION, key)  # before any file is looked at
    to_contract = convert(size)
    task_dir = "Segmentation" if segmentation else "Main"
    labels = "SegmentationClass" if segmentation else "Annotations"
    folder = voc_folder(cfg, key, year, ("JPEGImages", labels, f"ImageSets/{task_dir}"))
    sets = voc_image_sets(cfg, key, folder, task_dir)
    cls = datasets.VOCSegmentation if segmentation else datasets.VOCDetection

    def image_set(split: str) -> Dataset:
        base = cls(str(folder.parent.parent), year=year, image_set=sets[split])
        return Converted(base, to_contract)

    train = image_set("train")
    if "val" in sets:
        given_val(cfg, key, f"the image set {sets['val']!r}")
        train, val = limited(cfg, key, "train", train), limited(cfg, key, "val", image_set("val"))
    else:
        train, val = carve(train, train, cfg, key, VAL_FRACTION)
    return train, val, limited(cfg, key, "test", image_set("test")), size
