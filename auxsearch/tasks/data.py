"""Data plumbing shared by every task's data module: the :class:`ImageData` a loader returns, the
:class:`DataSource` a registry holds, the checks of ``data`` keys, the validation split and the
path resolution.

Each ``*_data`` module declares ``DATASETS`` (name -> :class:`DataSource`) and ``DEFAULT`` (the
name used when the ``data`` block gives none); :func:`pick_dataset` and :func:`resolve_paths`
read those, so which keys name files is said once, next to the loader that reads them.

Validation split (:func:`carve`): carved from the *training* data, ``val_fraction`` of it
(``ceil(fraction * n)`` items), stratified by label where labels are known, drawn from a fixed
seed so the same ``data`` block gives the same indices on every call. Training items and
validation items are two views of the same files (the training transform, the evaluation
transform) indexed by disjoint index lists, so validation is never augmented.
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, Subset

from auxsearch.errors import ConfigError, known

IMAGENET_MEAN: tuple[float, ...] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, ...] = (0.229, 0.224, 0.225)
SPLITS: tuple[str, ...] = ("train", "val", "test")

Target = dict[str, torch.Tensor]


@dataclass(frozen=True)
class ImageData:
    """Train (fit), validation (choose) and test (report once) data sets, and what a model needs
    to know about them. ``val`` and ``test`` items are never augmented."""

    train: Dataset
    val: Dataset
    test: Dataset
    in_chans: int
    num_classes: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    collate: Callable | None = None  # DataLoader collate_fn (detection: images stacked, targets a list)
    scale: int = 1  # super-resolution: high-resolution side / low-resolution side
    eval_batch_size: int | None = None  # set when val/test items differ in size (whole SR images: 1)
    fixed_items: bool = False  # training item i is the same every epoch (no random crop or augmentation)


Loader = Callable[[Mapping, str], ImageData]


@dataclass(frozen=True)
class DataSource:
    """One registry entry: the loader and the keys of its ``data`` block that name files or
    folders (made absolute against the study's folder by :func:`resolve_paths`)."""

    load: Loader
    path_keys: tuple[str, ...] = ()


# ---------------------------------------------------------------- config checks


def check_keys(cfg: Mapping, allowed: set[str], key: str) -> None:
    """Refuse a key of ``cfg`` that is not in ``allowed``, naming the data set."""
    for name in cfg:
        if name not in allowed:
            raise ConfigError(f"{key}.{name}", f"unknown key for data set {cfg.get('name')!r}; "
                              f"allowed: {known(allowed)}")


def int_option(cfg: Mapping, name: str, default: int | None, key: str,
               minimum: int = 1) -> int | None:
    value = cfg.get(name, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{key}.{name}", f"must be an integer >= {minimum}, got {value!r}")
    return value


def bool_option(cfg: Mapping, name: str, default: bool, key: str) -> bool:
    value = cfg.get(name, default)
    if not isinstance(value, bool):
        raise ConfigError(f"{key}.{name}", f"must be true or false, got {value!r}")
    return value


def fraction_option(cfg: Mapping, name: str, default: float, key: str) -> float:
    value = cfg.get(name, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
        raise ConfigError(f"{key}.{name}", f"must be a number in (0, 1), got {value!r}")
    return float(value)


def root_path(cfg: Mapping, key: str, name: str = "root") -> Path:
    """The folder that key ``name`` names (required; whether it exists is the loader's check)."""
    value = cfg.get(name)
    if not isinstance(value, (str, os.PathLike)) or not str(value):
        raise ConfigError(f"{key}.{name}", f"required: a folder path, got {value!r}")
    return Path(value)


def float_list(cfg: Mapping, name: str, default: tuple[float, ...], key: str,
               positive: bool = False) -> tuple[float, ...]:
    value = cfg.get(name, default)
    ok = isinstance(value, (list, tuple)) and len(value) == len(default) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and (v > 0 or not positive)
        for v in value)
    if not ok:
        raise ConfigError(f"{key}.{name}", f"must be a list of {len(default)} "
                          f"{'positive ' if positive else ''}numbers, got {value!r}")
    return tuple(float(v) for v in value)


def limit(data: Dataset, n: int | None) -> Dataset:
    """The first ``n`` items of ``data`` (all of them for ``None``)."""
    return data if n is None or n >= len(data) else Subset(data, range(n))


def limited(cfg: Mapping, key: str, split: str, data: Dataset) -> Dataset:
    """``data`` cut to the ``<split>_limit`` key of ``cfg``."""
    return limit(data, int_option(cfg, f"{split}_limit", None, key))


# ---------------------------------------------------------------- validation split


def split_off(n: int, fraction: float, seed: int, key: str,
              labels: Sequence[int] | None = None) -> tuple[list[int], list[int]]:
    """Sorted ``(keep, val)`` index lists of ``n`` training items: ``ceil(fraction * n)`` for
    validation, drawn with ``seed``; with ``labels``, every class gives its share (within one
    item of ``fraction`` times its count, largest remainders rounded up)."""
    n_val = math.ceil(round(fraction * n, 9))
    if not 0 < n_val < n:
        raise ConfigError(f"{key}.val_fraction", f"{fraction} of {n} training items puts {n_val} "
                          f"in validation and leaves {n - n_val} to train; each needs at least one")
    rng = np.random.default_rng(seed)
    if labels is None:
        val = rng.permutation(n)[:n_val]
    else:
        labels = np.asarray(labels)
        classes, counts = np.unique(labels, return_counts=True)
        quota = n_val * counts / n
        share = np.floor(quota).astype(np.int64)
        order = np.lexsort((rng.random(len(classes)), share - quota))  # largest remainder first
        share[order[: n_val - int(share.sum())]] += 1
        val = np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:k]
                              for c, k in zip(classes, share, strict=True)])
    chosen = set(val.tolist())
    return [i for i in range(n) if i not in chosen], sorted(chosen)


def carve(train_view: Dataset, eval_view: Dataset, cfg: Mapping, key: str, default: float, *,
          seed: int = 0, labels: Sequence[int] | None = None) -> tuple[Dataset, Dataset]:
    """Train and validation sets from one training set seen twice: ``train_view`` (training
    transform) at the kept indices, ``eval_view`` (evaluation transform) at the validation ones.
    Reads ``val_fraction`` (``default``), ``train_limit`` and ``val_limit``; the limits keep the
    first items of each part, so the split itself never depends on them."""
    fraction = fraction_option(cfg, "val_fraction", default, key)
    keep, val = split_off(len(train_view), fraction, seed, key, labels)
    return (limited(cfg, key, "train", Subset(train_view, keep)),
            limited(cfg, key, "val", Subset(eval_view, val)))


def given_val(cfg: Mapping, key: str, where: str) -> None:
    """Refuse ``val_fraction`` when the validation split is given (``where`` says by what)."""
    if "val_fraction" in cfg:
        raise ConfigError(f"{key}.val_fraction", f"not used: the validation split is {where}; "
                          "drop val_fraction or that split")


def with_transform(dataset: Dataset, transform: Callable) -> Dataset:
    """A shallow copy of a torchvision data set (same files, same decoded arrays) that applies
    ``transform`` instead: the second view of :func:`carve`."""
    view = copy.copy(dataset)
    view.transform = transform
    if hasattr(view, "transforms"):
        from torchvision.datasets.vision import StandardTransform

        view.transforms = StandardTransform(transform, getattr(view, "target_transform", None))
    return view


# ---------------------------------------------------------------- shared pieces of loaders


class Converted(Dataset):
    """``base[i]`` passed through ``convert(image, target)``: keeps torchvision's parsers while
    the conversion stays a picklable object for DataLoader workers."""

    def __init__(self, base: Dataset, convert: Callable) -> None:
        self.base, self.convert = base, convert

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int):
        return self.convert(*self.base[int(index)])


def resize_image(image: Image.Image, size: int) -> torch.Tensor:
    """A PIL image as a float32 ``3 x size x size`` tensor in [0, 1] (bilinear, antialiased)."""
    image = image.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
    array = np.asarray(image, dtype=np.float32) / 255.0
    return torch.from_numpy(array.transpose(2, 0, 1).copy())


def box_target(boxes: np.ndarray | list, labels: np.ndarray | list) -> Target:
    """A detection target: ``boxes`` float32 ``N x 4`` and ``labels`` int64 ``N``."""
    return {"boxes": torch.as_tensor(np.asarray(boxes, dtype=np.float32).reshape(-1, 4)),
            "labels": torch.as_tensor(np.asarray(labels, dtype=np.int64).reshape(-1))}


def channel_stats(images: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation of ``N x C x H x W`` images."""
    axes = (0, 2, 3)  # float64 accumulators: float32 sums drift over a million pixels
    return (tuple(images.mean(axis=axes, dtype=np.float64).tolist()),
            tuple(images.std(axis=axes, dtype=np.float64).tolist()))


# ---------------------------------------------------------------- registry


def _block(cfg: Mapping | None, key: str) -> Mapping:
    cfg = {} if cfg is None else cfg
    if not isinstance(cfg, Mapping):
        raise ConfigError(key, f"must be a mapping with a 'name' key, got {cfg!r}")
    return cfg


def pick_dataset(registry: Mapping[str, DataSource], cfg: Mapping | None, key: str,
                 default: str, what: str = "") -> ImageData:
    """Call the loader of ``registry`` that ``cfg['name']`` (default ``default``) names.

    Every task's data module dispatches through here, so a missing or unknown name reads the
    same everywhere; the name is passed on so key checks can say which data set they mean.
    """
    cfg = _block(cfg, key)
    name = cfg.get("name", default)
    if not isinstance(name, str) or name not in registry:
        raise ConfigError(f"{key}.name", f"unknown {what}data set {name!r}; known: {known(registry)}")
    return registry[name].load({"name": name, **cfg}, key)


def path_keys(registry: Mapping[str, DataSource], cfg: Mapping | None,
              default: str) -> tuple[str, ...]:
    """The path keys of the data set ``cfg`` names (none for an unknown name)."""
    name = _block(cfg, "data").get("name", default)
    source = registry.get(name) if isinstance(name, str) else None
    return source.path_keys if source is not None else ()


def resolve_paths(registry: Mapping[str, DataSource], cfg: Mapping | None, default: str,
                  base_dir: Path | None) -> dict:
    """A copy of ``cfg`` whose relative path values (of that data set's path keys only) are
    made absolute against ``base_dir``; other values, and everything when ``base_dir`` is None,
    are left as they are for the loader to check."""
    out = dict(_block(cfg, "data"))
    if base_dir is None:
        return out
    for name in path_keys(registry, out, default):
        value = out.get(name)
        if isinstance(value, (str, os.PathLike)) and str(value) and not Path(value).is_absolute():
            out[name] = str((Path(base_dir) / value).resolve())
    return out
