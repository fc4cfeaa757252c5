"""Semantic-segmentation data sets, chosen by name from the ``data`` section of a design.

Data contract: every data set yields ``(image, mask)`` where ``image`` is a float32 tensor
``3 x S x S`` with values in ``[0, 1]`` (*not* normalised; the model applies ``mean``/``std``
from :class:`ImageData`) and ``mask`` an int64 tensor ``S x S`` of class indices
``0..num_classes - 1``, with ``IGNORE`` (255) on pixels no loss or metric should count.
``num_classes`` includes the background class 0. Images and masks are resized to ``S x S``
(image bilinear, mask nearest, so no blended class ids appear); the default collate stacks them.

Known names (``DATASETS``):

``scenes`` (the default)
    The synthetic scenes of :mod:`auxsearch.tasks.scenes` with their class masks, same keys as
    for detection (``image_size`` 64, ``num_train`` 1024, ``num_test`` 256, ``max_objects`` 4,
    ``seed`` 0), so a seed gives the same pictures for both tasks. ``num_classes`` is 1 + the
    number of shape classes; there are no ignored pixels.
``voc``
    Pascal VOC segmentation as unpacked from the official tar: ``root`` holds
    ``VOCdevkit/VOC<year>/`` with ``JPEGImages/``, ``SegmentationClass/`` (palette PNGs whose
    indices are the class ids, 255 on object borders and unlabelled parts) and
    ``ImageSets/Segmentation/<image_set>.txt``. Keys: ``root``, ``year`` ("2012"),
    ``image_set_train`` ("train"), ``image_set_test`` ("val"), ``image_size`` (128),
    ``train_limit``, ``test_limit``. 21 classes (background + the 20 of ``VOC_CLASSES``),
    ImageNet ``mean``/``std``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import torch
from PIL import Image
from torch.utils.data import TensorDataset
from torchvision import datasets

from auxsearch.tasks.classification_data import ImageData, _check_keys, _int, _limit, pick_dataset
from auxsearch.tasks.detection_data import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    VOC_CLASSES,
    Converted,
    channel_stats,
    resize_image,
    scene_splits,
    voc_folder,
    voc_image_sets,
    voc_year,
)
from auxsearch.tasks.scenes import CLASSES as SCENE_CLASSES

IGNORE = 255  # mask value of pixels that carry no class (VOC's object borders)


def _load_scenes(cfg: Mapping, key: str) -> ImageData:
    (train_images, _, train_masks), (test_images, _, test_masks), size = scene_splits(cfg, key)
    mean, std = channel_stats(train_images)
    return ImageData(
        train=TensorDataset(torch.from_numpy(train_images), torch.from_numpy(train_masks)),
        test=TensorDataset(torch.from_numpy(test_images), torch.from_numpy(test_masks)),
        in_chans=3, num_classes=1 + len(SCENE_CLASSES), image_size=size, mean=mean, std=std)


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


def _load_voc(cfg: Mapping, key: str) -> ImageData:
    _check_keys(cfg, {"name", "root", "year", "image_set_train", "image_set_test", "image_size",
                      "train_limit", "test_limit"}, key)
    year = voc_year(cfg, key)
    size = _int(cfg, "image_size", 128, key, minimum=16)
    limits = {split: _int(cfg, f"{split}_limit", None, key) for split in ("train", "test")}
    folder = voc_folder(cfg, key, year, ("JPEGImages", "SegmentationClass",
                                         "ImageSets/Segmentation"))
    sets = voc_image_sets(cfg, key, folder, "Segmentation")
    convert = VOCMask(size)
    splits = {split: _limit(Converted(datasets.VOCSegmentation(
        str(folder.parent.parent), year=year, image_set=sets[split]), convert), limits[split])
        for split in ("train", "test")}
    return ImageData(train=splits["train"], test=splits["test"], in_chans=3,
                     num_classes=1 + len(VOC_CLASSES), image_size=size, mean=IMAGENET_MEAN,
                     std=IMAGENET_STD)


DATASETS: dict[str, Callable[[Mapping, str], ImageData]] = {
    "scenes": _load_scenes,
    "voc": _load_voc,
}


def load_segmentation_data(cfg: Mapping | None, key: str = "data") -> ImageData:
    """Build the segmentation data set that ``cfg`` (the ``data`` section of a design) names.

    ``name`` defaults to ``scenes``; every mistake is a :class:`ConfigError` whose key is a dotted
    path below ``key``.
    """
    return pick_dataset(DATASETS, cfg, key, "scenes", "segmentation ")
