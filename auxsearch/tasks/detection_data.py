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
    Keys: ``image_size`` (64), ``num_train`` (1024), ``num_test`` (256), ``max_objects`` (4),
    ``seed`` (0). ``mean``/``std`` are measured on the training images.
``voc``
    Pascal VOC as unpacked from the official tar: ``root`` holds ``VOCdevkit/VOC<year>/`` with
    ``JPEGImages/``, ``Annotations/`` and ``ImageSets/Main/<image_set>.txt`` (torchvision's
    convention). Keys: ``root``, ``year`` ("2012"), ``image_set_train`` ("train"),
    ``image_set_test`` ("val"), ``image_size`` (128), ``train_limit``, ``test_limit``,
    ``classes`` (a subset of the 20 VOC names, labelled 1.. in the order given; default all 20
    in the standard order). Objects marked ``difficult`` are skipped in both splits: VOC's own
    evaluation ignores them, and a plain mAP would count them as misses. VOC's 1-based inclusive
    corners become pixel-edge boxes (``xmin - 1, ymin - 1, xmax, ymax``).
``coco``
    MS COCO in its standard layout: ``root`` holds one image folder per split (``train2017/``,
    ``val2017/``) and ``annotations/instances_<split>.json``. Keys: ``root``, ``train_split``
    ("train2017"), ``test_split`` ("val2017"), ``image_size`` (128), ``train_limit``,
    ``test_limit``. Category ids map to labels ``1..C`` in sorted id order (COCO's 80 ids have
    gaps); crowd regions are skipped, and so are boxes under one pixel wide or high after resize.

``voc`` and ``coco`` use the ImageNet ``mean``/``std``: their photographs are close to it and
pretrained backbones expect it.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import datasets

from auxsearch.errors import ConfigError, known
from auxsearch.tasks.classification_data import (
    ImageData,
    _check_keys,
    _int,
    _limit,
    _root,
    pick_dataset,
)
from auxsearch.tasks.scenes import CLASSES as SCENE_CLASSES
from auxsearch.tasks.scenes import make_scenes

VOC_CLASSES: tuple[str, ...] = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor")
VOC_YEARS: tuple[str, ...] = tuple(str(year) for year in range(2007, 2013))
IMAGENET_MEAN: tuple[float, ...] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, ...] = (0.229, 0.224, 0.225)

Target = dict[str, torch.Tensor]


def detection_collate(batch: Sequence[tuple[torch.Tensor, Target]]
                      ) -> tuple[torch.Tensor, list[Target]]:
    """Stack the images of a batch and keep its targets as a list (their box counts differ)."""
    images, targets = zip(*batch, strict=True)
    return torch.stack(images), list(targets)


def _target(boxes: np.ndarray | list, labels: np.ndarray | list) -> Target:
    return {"boxes": torch.as_tensor(np.asarray(boxes, dtype=np.float32).reshape(-1, 4)),
            "labels": torch.as_tensor(np.asarray(labels, dtype=np.int64).reshape(-1))}


def resize_image(image: Image.Image, size: int) -> torch.Tensor:
    """A PIL image as a float32 ``3 x size x size`` tensor in [0, 1] (bilinear, antialiased)."""
    image = image.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
    array = np.asarray(image, dtype=np.float32) / 255.0
    return torch.from_numpy(array.transpose(2, 0, 1).copy())


# ---------------------------------------------------------------- scenes


class SceneDetection(Dataset):
    """Synthetic scenes held in memory: images ``N x 3 x S x S`` and one target per image."""

    def __init__(self, images: np.ndarray, targets: list[tuple[np.ndarray, np.ndarray]]) -> None:
        self.images = torch.from_numpy(images)
        self.targets = [_target(boxes, labels) for boxes, labels in targets]

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, Target]:
        return self.images[index], self.targets[index]


SCENE_KEYS = {"name", "image_size", "num_train", "num_test", "max_objects", "seed"}


def scene_splits(cfg: Mapping, key: str) -> tuple[tuple, tuple, int]:
    """Check the ``scenes`` keys and draw both splits: ``make_scenes`` results for train (stream
    0) and test (stream 1), and the image size. Shared with the segmentation loader."""
    _check_keys(cfg, SCENE_KEYS, key)
    size = _int(cfg, "image_size", 64, key, minimum=16)
    counts = {s: _int(cfg, f"num_{s}", d, key) for s, d in (("train", 1024), ("test", 256))}
    max_objects = _int(cfg, "max_objects", 4, key)
    seed = _int(cfg, "seed", 0, key, minimum=0)
    train, test = (make_scenes(counts[split], size, seed=seed, max_objects=max_objects,
                               stream=stream) for stream, split in enumerate(("train", "test")))
    return train, test, size


def channel_stats(images: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation of ``N x C x H x W`` images."""
    axes = (0, 2, 3)  # float64 accumulators: float32 sums drift over a million pixels
    return (tuple(images.mean(axis=axes, dtype=np.float64).tolist()),
            tuple(images.std(axis=axes, dtype=np.float64).tolist()))


def _load_scenes(cfg: Mapping, key: str) -> ImageData:
    (train_images, train_targets, _), (test_images, test_targets, _), size = scene_splits(cfg, key)
    mean, std = channel_stats(train_images)
    return ImageData(train=SceneDetection(train_images, train_targets),
                     test=SceneDetection(test_images, test_targets), in_chans=3,
                     num_classes=len(SCENE_CLASSES), image_size=size, mean=mean, std=std,
                     collate=detection_collate)


# ---------------------------------------------------------------- file-backed wrappers


class Converted(Dataset):
    """``base[i]`` passed through ``convert(image, target)``: keeps torchvision's parsers while
    the conversion stays a picklable object for DataLoader workers."""

    def __init__(self, base: Dataset, convert: Callable) -> None:
        self.base, self.convert = base, convert

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int):
        return self.convert(*self.base[int(index)])


# ---------------------------------------------------------------- VOC


def voc_year(cfg: Mapping, key: str) -> str:
    """The ``year`` key as torchvision spells it ("2007".."2012"; an integer is accepted)."""
    year = str(cfg.get("year", "2012"))
    if year not in VOC_YEARS:
        raise ConfigError(f"{key}.year", f"must be one of {known(VOC_YEARS)}, "
                          f"got {cfg.get('year')!r}")
    return year


def voc_folder(cfg: Mapping, key: str, year: str, needs: Sequence[str]) -> Path:
    """``root/VOCdevkit/VOC<year>`` after checking that the sub-folders ``needs`` exist."""
    root = _root(cfg, key)
    folder = root / "VOCdevkit" / f"VOC{year}"
    missing = [name for name in needs if not (folder / name).is_dir()]
    if missing:
        raise ConfigError(f"{key}.root", f"{folder} lacks {', '.join(f'{n}/' for n in missing)}; "
                          "root must be the folder that holds VOCdevkit/ as unpacked from the "
                          "official VOCtrainval tar")
    return folder


def voc_image_sets(cfg: Mapping, key: str, folder: Path, task_dir: str) -> dict[str, str]:
    """The ``image_set_train`` / ``image_set_test`` names, each checked to have its list file
    ``ImageSets/<task_dir>/<name>.txt`` (``test`` only for 2007, the one year whose test
    annotations were published)."""
    allowed = ("train", "trainval", "val") + (("test",) if folder.name == "VOC2007" else ())
    sets = {}
    for split, default in (("train", "train"), ("test", "val")):
        name = cfg.get(f"image_set_{split}", default)
        if name not in allowed:
            raise ConfigError(f"{key}.image_set_{split}",
                              f"must be one of {known(allowed)}, got {name!r}")
        listing = folder / "ImageSets" / task_dir / f"{name}.txt"
        if not listing.is_file():
            raise ConfigError(f"{key}.image_set_{split}", f"list file {listing} not found")
        sets[split] = name
    return sets


def _voc_classes(cfg: Mapping, key: str) -> tuple[str, ...]:
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
        return resize_image(image, self.size), _target(boxes, labels)


def _load_voc(cfg: Mapping, key: str) -> ImageData:
    _check_keys(cfg, {"name", "root", "year", "image_set_train", "image_set_test", "image_size",
                      "train_limit", "test_limit", "classes"}, key)
    year = voc_year(cfg, key)
    size = _int(cfg, "image_size", 128, key, minimum=16)
    classes = _voc_classes(cfg, key)
    limits = {split: _int(cfg, f"{split}_limit", None, key) for split in ("train", "test")}
    folder = voc_folder(cfg, key, year, ("JPEGImages", "Annotations", "ImageSets/Main"))
    sets = voc_image_sets(cfg, key, folder, "Main")
    convert = VOCBoxes(classes, size)
    splits = {split: _limit(Converted(datasets.VOCDetection(
        str(folder.parent.parent), year=year, image_set=sets[split]), convert), limits[split])
        for split in ("train", "test")}
    return ImageData(train=splits["train"], test=splits["test"], in_chans=3,
                     num_classes=len(classes), image_size=size, mean=IMAGENET_MEAN,
                     std=IMAGENET_STD, collate=detection_collate)


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
        return resize_image(image, self.size), _target(boxes[big], labels[big])


def _name(cfg: Mapping, name: str, default: str, key: str) -> str:
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
    _check_keys(cfg, {"name", "root", "train_split", "test_split", "image_size", "train_limit",
                      "test_limit"}, key)
    root = _root(cfg, key)
    names = {s: _name(cfg, f"{s}_split", d, key)
             for s, d in (("train", "train2017"), ("test", "val2017"))}
    size = _int(cfg, "image_size", 128, key, minimum=16)
    limits = {split: _int(cfg, f"{split}_limit", None, key) for split in ("train", "test")}
    bases = {s: _coco_split(root, names[s], key, f"{s}_split") for s in ("train", "test")}
    categories = sorted(bases["train"].coco.getCatIds())
    if sorted(bases["test"].coco.getCatIds()) != categories:
        raise ConfigError(f"{key}.test_split", f"categories of {names['test']} differ from "
                          f"those of {names['train']}")
    if not categories:
        raise ConfigError(f"{key}.train_split", f"{names['train']} defines no categories")
    convert = COCOBoxes(categories, size)
    return ImageData(train=_limit(Converted(bases["train"], convert), limits["train"]),
                     test=_limit(Converted(bases["test"], convert), limits["test"]),
                     in_chans=3, num_classes=len(categories), image_size=size,
                     mean=IMAGENET_MEAN, std=IMAGENET_STD, collate=detection_collate)


# ---------------------------------------------------------------- registry


DATASETS: dict[str, Callable[[Mapping, str], ImageData]] = {
    "scenes": _load_scenes,
    "voc": _load_voc,
    "coco": _load_coco,
}


def load_detection_data(cfg: Mapping | None, key: str = "data") -> ImageData:
    """Build the detection data set that ``cfg`` (the ``data`` section of a design) names.

    ``name`` defaults to ``scenes``; every mistake is a :class:`ConfigError` whose key is a dotted
    path below ``key``.
    """
    return pick_dataset(DATASETS, cfg, key, "scenes", "detection ")
