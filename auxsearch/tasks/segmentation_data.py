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
    for detection (``image_size`` 64, ``num_train`` 1024, ``num_val`` 256, ``num_test`` 256,
    ``max_objects`` 4, ``seed`` 0; validation scenes from their own stream of the generator), so
    a seed gives the same pictures for both tasks. ``num_classes`` is 1 + the
    number of shape classes; there are no ignored pixels.
``voc``
    Pascal VOC segmentation (:mod:`auxsearch.tasks.voc`, which describes the keys and the
    validation split: ``val_fraction`` **0.1** of ``image_set_train`` unless ``image_set_val``
    is given): ``JPEGImages/``, ``SegmentationClass/`` (palette PNGs whose indices are the class
    ids, 255 on object borders and unlabelled parts) and ``ImageSets/Segmentation/``. 21 classes
    (background + the 20 of ``VOC_CLASSES``), ImageNet ``mean``/``std``.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch.utils.data import TensorDataset

from auxsearch.tasks.data import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    DataSource,
    ImageData,
    channel_stats,
    pick_dataset,
)
from auxsearch.tasks.scenes import CLASSES as SCENE_CLASSES
from auxsearch.tasks.scenes import scene_splits
from auxsearch.tasks.voc import VOC_CLASSES, VOCMask, voc_splits

DEFAULT = "scenes"
IGNORE = 255  # mask value of pixels that carry no class (VOC's object borders)


def _load_scenes(cfg: Mapping, key: str) -> ImageData:
    train, val, test, size = scene_splits(cfg, key)
    mean, std = channel_stats(train[0])
    train, val, test = (TensorDataset(torch.from_numpy(images), torch.from_numpy(masks))
                        for images, _, masks in (train, val, test))
    return ImageData(train=train, val=val, test=test, in_chans=3,
                     num_classes=1 + len(SCENE_CLASSES), image_size=size, mean=mean, std=std,
                     fixed_items=True)


def _load_voc(cfg: Mapping, key: str) -> ImageData:
    train, val, test, size = voc_splits(cfg, key, True, VOCMask)
    return ImageData(train=train, val=val, test=test, in_chans=3,
                     num_classes=1 + len(VOC_CLASSES), image_size=size, mean=IMAGENET_MEAN,
                     std=IMAGENET_STD)


DATASETS: dict[str, DataSource] = {
    "scenes": DataSource(_load_scenes),
    "voc": DataSource(_load_voc, path_keys=("root",)),
}


def load_segmentation_data(cfg: Mapping | None, key: str = "data") -> ImageData:
    """Build the segmentation data set that ``cfg`` (the ``data`` section of a design) names.

    ``name`` defaults to ``scenes``; every mistake is a :class:`ConfigError` whose key is a dotted
    path below ``key``.
    """
    return pick_dataset(DATASETS, cfg, key, DEFAULT, "segmentation ")
