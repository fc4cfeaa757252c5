"""Object-detection data sets, chosen by name from the ``data`` section of a design.

Data contract: every data set yields ``(image, target)`` where ``image`` is a float32 tensor
``3 x S x S`` with values in ``[0, 1]`` (*not* normalised: the model applies ``mean``/``std``
from :class:`ImageData`, as for classification) and ``target`` a dict with ``boxes`` (float32
``N x 4``, ``x1, y1, x2, y2`` in pixels of the returned image, pixel-edge units) and ``labels``
(int64 ``N``, in ``1..num_classes``; 0 is left for the background of detectors that want one).
Every image is resized to ``S x S`` (aspect ratio not kept) and its boxes scaled with it, so that
a batch stacks into one tensor; :func:`detection_collate` keeps the targets as a list because
their lengths differ. Images without a box are kept: a detector must learn to say nothing too.

Known names (``DATASETS``):

``scenes`` (the default)
    Synthetic shapes on photographic textures (:mod:`auxsearch.tasks.scenes`), no files needed.
    Keys: ``image_size`` (64), ``num_train`` (1024), ``num_val`` (256), ``num_test`` (256),
    ``max_objects`` (4), ``seed`` (0). Validation scenes come from their own stream of the same
    seeded generator (train and test scenes are those drawn before validation existed).
    ``mean``/``std`` are measured on the training images.
``voc``
    Pascal VOC (:mod:`auxsearch.tasks.voc`: ``JPEGImages/``, ``Annotations/``,
    ``ImageSets/Main/``; the keys and the validation split are described there; validation:
    ``val_fraction`` **0.1** of ``image_set_train`` unless ``image_set_val`` is given), plus
    ``classes`` (a subset of the 20 VOC names, labelled 1.. in the order given; default all 20
    in the standard order). Objects marked ``difficult`` are skipped in every split: VOC's own
    evaluation ignores them, and a plain mAP would count them as misses. VOC's 1-based inclusive
    corners become pixel-edge boxes (``xmin - 1, ymin - 1, xmax, ymax``).
``coco``
    MS COCO in its standard layout: ``root`` holds one image folder per split (``train2017/``,
    ``val2017/``) and ``annotations/instances_<split>.json``. Keys: ``root``, ``train_split``
    ("train2017"), ``test_split`` ("val2017"), ``val_split`` (none), ``val_fraction`` (**0.1**),
    ``image_size`` (128), ``train_limit``, ``val_limit``, ``test_limit``. Validation is the
    ``val_split`` folder if given, else ``val_fraction`` of the training split (fixed seed 0).
    Category ids map to labels ``1..C`` in sorted id order (COCO's 80 ids have
    gaps); crowd regions are skipped, and so are boxes under one pixel wide or high after resize.

``voc`` and ``coco`` use the ImageNet ``mean``/``std``: their photographs are close to it and
pretrained backbones expect it.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import datasets

from auxsearch.errors import ConfigError
from auxsearch.tasks.data import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Converted,
    DataSource,
    ImageData,
    Target,
    box_target,
    carve,
    channel_stats,
    check_keys,
    fraction_option,
    given_val,
    int_option,
    limited,
    pick_dataset,
    resize_image,
    root_path,
)
from auxsearch.tasks.scenes import CLASSES as SCENE_CLASSES
from auxsearch.tasks.scenes import scene_splits
from auxsearch.tasks.voc import VOCBoxes, voc_classes, voc_splits

DEFAULT = "scenes"
VAL_FRACTION = 0.1  # coco: the share of the training split kept for validation


def detection_collate(batch: Sequence[tuple[torch.Tensor, Target]]
                      ) -> tuple[torch.Tensor, list[Target]]:
    """Stack the images of a batch and keep its targets as a list (their box counts differ)."""
    images, targets = zip(*batch, strict=True)
    return torch.stack(images), list(targets)


# ---------------------------------------------------------------- scenes


class SceneDetection(Dataset):
    """Synthetic scenes held in memory: images ``N x 3 x S x S`` and one target per image."""

    def __init__(self, images: np.ndarray, targets: list[tuple[np.ndarray, np.ndarray]]) -> None:
        self.images = torch.from_numpy(images)
        self.targets = [box_target(boxes, labels) for boxes, labels in targets]

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, Target]:
        return self.images[index], self.targets[index]


def _load_scenes(cfg: Mapping, key: str) -> ImageData:
    train, val, test, size = scene_splits(cfg, key)
    mean, std = channel_stats(train[0])
    train, val, test = (SceneDetection(images, targets) for images, targets, _ in (train, val, test))
    return ImageData(train=train, val=val, test=test, in_chans=3, num_classes=len(SCENE_CLASSES),
                     image_size=size, mean=mean, std=std, collate=detection_collate, fixed_items=True)


# ---------------------------------------------------------------- VOC


def _load_voc(cfg: Mapping, key: str) -> ImageData:
    classes = []

    def convert(size: int) -> VOCBoxes:
        classes.extend(voc_classes(cfg, key))
        return VOCBoxes(classes, size)

    train, val, test, size = voc_splits(cfg, key, False, convert, extra_keys=("classes",))
    return ImageData(train=train, val=val, test=test, in_chans=3, num_classes=len(classes),
                     image_size=size, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                     collate=detection_collate)


# ---------------------------------------------------------------- COCO


class COCOBoxes:
    """CocoDetection's annotation list to the target contract: skip crowds, map category ids to
    1..C, clip to the image, resize, and drop boxes under a pixel wide or high."""

    def __init__(self, category_ids: Sequence[int], size: int) -> None:
        self.labels = {cat: i + 1 for i, cat in enumerate(category_ids)}
        self.size = size

    def __call__(self, image: Image.Image, annotations: list) -> tuple[torch.Tensor, Target]:
        width, height = image.size
        kept = [a for a in annotations if not a.get("iscrowd", 0) and a["category_id"] in
                self.labels and len(a.get("bbox", ())) == 4]
        boxes = np.array([a["bbox"] for a in kept], dtype=np.float32).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]  # x, y, w, h -> x1, y1, x2, y2
        boxes = np.clip(boxes, 0, [width, height, width, height])
        boxes *= np.array([self.size / width, self.size / height] * 2, dtype=np.float32)
        labels = np.array([self.labels[a["category_id"]] for a in kept], dtype=np.int64)
        big = (boxes[:, 2] - boxes[:, 0] >= 1) & (boxes[:, 3] - boxes[:, 1] >= 1)
        return resize_image(image, self.size), box_target(boxes[big], labels[big])


def _name(cfg: Mapping, name: str, default: str | None, key: str) -> str:
    value = cfg.get(name, default)
    if not isinstance(value, str) or not value or "/" in value or "\\" in value:
        raise ConfigError(f"{key}.{name}", f"must be a folder name, got {value!r}")
    return value


def _coco_split(root: Path, split: str, key: str, name: str) -> datasets.CocoDetection:
    images, annotations = root / split, root / "annotations" / f"instances_{split}.json"
    for path, what in ((images, "image folder"), (annotations, "annotation file")):
        if not path.exists():  # name the root unless it exists and only this split is missing
            bad = f"{key}.{name}" if root.is_dir() else f"{key}.root"
            raise ConfigError(bad, f"{what} {path} not found; root must hold {split}/ and "
                              f"annotations/instances_{split}.json (the COCO layout)")
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
            return datasets.CocoDetection(str(images), str(annotations))
    except (ValueError, KeyError, TypeError) as err:
        raise ConfigError(f"{key}.{name}", f"cannot read {annotations}: {err!r}") from None


def _load_coco(cfg: Mapping, key: str) -> ImageData:
    check_keys(cfg, {"name", "root", "train_split", "val_split", "test_split", "val_fraction",
                     "image_size", "train_limit", "val_limit", "test_limit"}, key)
    root = root_path(cfg, key)
    names = {s: _name(cfg, f"{s}_split", d, key)
             for s, d in (("train", "train2017"), ("val", None), ("test", "val2017"))
             if d is not None or f"{s}_split" in cfg}
    size = int_option(cfg, "image_size", 128, key, minimum=16)
    for split in ("train", "val", "test"):
        int_option(cfg, f"{split}_limit", None, key)
    fraction_option(cfg, "val_fraction", VAL_FRACTION, key)  # before any file is looked at
    if names.get("val") in (names["train"], names["test"]):
        raise ConfigError(f"{key}.val_split", f"{names['val']!r} is also the training or the "
                          "test split; validation must be held out from both")
    bases = {s: _coco_split(root, names[s], key, f"{s}_split") for s in names}
    categories = sorted(bases["train"].coco.getCatIds())
    for split in set(names) - {"train"}:
        if sorted(bases[split].coco.getCatIds()) != categories:
            raise ConfigError(f"{key}.{split}_split", f"categories of {names[split]} differ "
                              f"from those of {names['train']}")
    if not categories:
        raise ConfigError(f"{key}.train_split", f"{names['train']} defines no categories")
    convert = COCOBoxes(categories, size)
    train = Converted(bases["train"], convert)
    if "val" in names:
        given_val(cfg, key, f"the split {names['val']!r}")
        train, val = (limited(cfg, key, s, d) for s, d in
                      (("train", train), ("val", Converted(bases["val"], convert))))
    else:
        train, val = carve(train, train, cfg, key, VAL_FRACTION)
    return ImageData(train=train, val=val, test=limited(cfg, key, "test", Converted(
        bases["test"], convert)), in_chans=3, num_classes=len(categories), image_size=size,
        mean=IMAGENET_MEAN, std=IMAGENET_STD, collate=detection_collate)


# ---------------------------------------------------------------- registry


DATASETS: dict[str, DataSource] = {
    "scenes": DataSource(_load_scenes),
    "voc": DataSource(_load_voc, path_keys=("root",)),
    "coco": DataSource(_load_coco, path_keys=("root",)),
}


def load_detection_data(cfg: Mapping | None, key: str = "data") -> ImageData:
    """Build the detection data set that ``cfg`` (the ``data`` section of a design) names.

    ``name`` defaults to ``scenes``; every mistake is a :class:`ConfigError` whose key is a dotted
    path below ``key``.
    """
    return pick_dataset(DATASETS, cfg, key, DEFAULT, "detection ")
