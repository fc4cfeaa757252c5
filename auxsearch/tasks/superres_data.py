"""Super-resolution data sets, chosen by name from the ``data`` section of a design.

Data contract: every item is ``(lr, hr)``, float32 tensors with values in ``[0, 1]``, ``lr`` of
shape ``3 x h x w`` and ``hr`` of shape ``3 x (h * scale) x (w * scale)``, pixel-aligned (LR pixel
``(y, x)`` covers HR pixels ``[y*s, (y+1)*s) x [x*s, (x+1)*s)``). Images are not normalised: as
for classification, the model applies ``(x - mean) / std`` itself. ``std`` is ``(1, 1, 1)`` and
``mean`` the per-channel mean of the training HR images, because EDSR subtracts the mean only
(its ``MeanShift``); a super-resolution head must add ``mean`` back to its output so that the
prediction is again an image in ``[0, 1]``. :class:`ImageData` carries ``num_classes=1``,
``scale`` and ``image_size`` = the *LR training patch* side.

Training items are random aligned patch pairs, validation and test items fixed crops or whole
images (:mod:`auxsearch.tasks.sr_items`, which also says how LR images are made). Validation and
test items are deterministic and scored alike, never random patches; the validation images are
whole training-side images kept out of the training patches.

Known names (``DATASETS``):

``photos`` (the default, no files needed)
    scikit-image's bundled colour photographs, split by whole image, always the same way:
    train = ``astronaut``, ``motorcycle_left``, ``motorcycle_right`` (the two views of
    ``skimage.data.stereo_motorcycle``, kept together so validation shares no scene with
    training); validation = ``rocket`` (a fixed image-level split: no ``val_fraction``); test =
    ``chelsea``, ``coffee``. HR images are cropped at the bottom/right to a multiple of ``scale``.
    Validation and test items are ``test_crops`` fixed LR crops of side ``test_patch`` per image
    (positions drawn once from ``seed``), so their batches stack with the default collate.
    Keys: ``name``, ``scale`` (2, 3 or 4; default 2), ``patch`` (24), ``patches_per_epoch``
    (512), ``test_crops`` (8), ``test_patch`` (48), ``seed`` (0).

``folders`` (real data on disk)
    ``train_hr`` / ``test_hr``: folders of HR images; ``train_lr`` / ``test_lr`` (optional):
    folders of their LR versions, else LR is made by
    :func:`~auxsearch.tasks.sr_items.bicubic_downscale`. Validation: ``val_hr`` (and optional
    ``val_lr``) if given, else ``val_fraction`` (**0.1**, at least one image) of the training
    images, whole images drawn with a fixed seed before any limit. Both the DIV2K layout
    (``DIV2K_train_HR/0001.png`` with ``DIV2K_train_LR_bicubic/X2/0001x2.png``) and the
    benchmark layout of Set5 / Set14 / B100 / Urban100 (``HR/baby.png`` with
    ``LR_bicubic/X2/babyx2.png``) work: an HR file pairs with the LR file of stem
    ``<stem>x<scale>``, or else of the same stem; LR files without an HR partner are ignored.
    Each LR must be exactly the HR (cropped to a multiple of ``scale``) divided by ``scale``.
    ``train_limit`` / ``val_limit`` / ``test_limit`` keep the first images in name order. Keys:
    ``name``, the six folders, ``scale``, ``patch``, ``patches_per_epoch``, ``val_fraction``,
    the three limits. No ``seed``: nothing in it is random beyond the training draws, which the
    DataLoader's seed controls.

    **Validation and test items are whole images of varying sizes: evaluate with batch size 1.**
    ``ImageData.eval_batch_size`` is set to 1 for this reason, and ``ImageData.collate`` is a
    :class:`SameSizeCollate` that stacks as usual but raises a :class:`ConfigError` naming the
    problem if a batch still mixes image sizes. All images are decoded once, at load time, and
    kept as uint8 (full DIV2K train at x2 is about 8 GB; use ``train_limit`` for quick runs).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from auxsearch.errors import ConfigError
from auxsearch.tasks.data import (
    SPLITS,
    DataSource,
    ImageData,
    check_keys,
    fraction_option,
    given_val,
    int_option,
    pick_dataset,
    root_path,
    split_off,
)
from auxsearch.tasks.sr_items import (
    FixedCrops,
    Pair,
    SameSizeCollate,
    TrainPatches,
    WholeImages,
    make_pair,
)

DEFAULT = "photos"
PHOTOS_TRAIN = ("astronaut", "motorcycle_left", "motorcycle_right")
PHOTOS_VAL = ("rocket",)
PHOTOS_TEST = ("chelsea", "coffee")
FOLDER_KEYS = ("train_hr", "train_lr", "val_hr", "val_lr", "test_hr", "test_lr")
VAL_FRACTION = 0.1  # folders: the share of training images kept for validation
_SUFFIXES = {".png", ".bmp", ".jpg", ".jpeg", ".tif", ".tiff", ".ppm", ".webp"}


# ---------------------------------------------------------------- checks shared by loaders


def _scale(cfg: Mapping, key: str) -> int:
    value = cfg.get("scale", 2)
    if isinstance(value, bool) or value not in (2, 3, 4):
        raise ConfigError(f"{key}.scale", f"must be 2, 3 or 4, got {value!r}")
    return int(value)


def _check_fits(pairs: Sequence[Pair], side: int, key: str, scale: int) -> None:
    """Every LR image must hold a ``side`` x ``side`` crop, or patches cannot be drawn."""
    for pair in pairs:
        height, width = pair.lr.shape[-2:]
        if min(height, width) < side:
            raise ConfigError(key, f"{side} px LR crops do not fit {pair.name!r}, whose LR image "
                              f"is {width}x{height} at scale {scale}")


def _mean(pairs: Sequence[Pair]) -> tuple[float, ...]:
    total = sum(p.hr.sum(dim=(1, 2), dtype=torch.float64) for p in pairs)
    count = sum(p.hr.shape[-2] * p.hr.shape[-1] for p in pairs)
    return tuple(float(v) / (255.0 * count) for v in total)


def _data(train: TrainPatches, val: Dataset, test: Dataset, scale: int,
          whole_images_key: str | None = None) -> ImageData:
    """``whole_images_key``: val/test items are whole images of varying size (batch size 1)."""
    whole_images = whole_images_key is not None
    return ImageData(train=train, val=val, test=test, in_chans=3, num_classes=1,
                     image_size=train.patch, mean=_mean(train.pairs), std=(1.0, 1.0, 1.0),
                     scale=scale,
                     collate=SameSizeCollate(whole_images_key) if whole_images else None,
                     eval_batch_size=1 if whole_images else None)


# ---------------------------------------------------------------- photos


@functools.cache
def _photo(name: str) -> Tensor:
    """A bundled scikit-image photograph as uint8 ``3 x H x W``, decoded once per process
    (a search loads the data set for every trial); callers never write into it."""
    from skimage import data

    if name.startswith("motorcycle_"):
        left, right = _stereo_motorcycle()
        array = left if name.endswith("left") else right
    else:
        array = getattr(data, name)()
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()


@functools.cache
def _stereo_motorcycle() -> tuple:
    from skimage import data

    left, right, _ = data.stereo_motorcycle()
    return left, right


def _crop_positions(pairs: Sequence[Pair], per_image: int, size: int,
                    seed: int) -> list[tuple[int, int, int]]:
    generator = torch.Generator().manual_seed(seed)
    crops = []
    for i, pair in enumerate(pairs):
        height, width = pair.lr.shape[-2:]
        ys = torch.randint(height - size + 1, (per_image,), generator=generator).tolist()
        xs = torch.randint(width - size + 1, (per_image,), generator=generator).tolist()
        crops.extend((i, y, x) for y, x in zip(ys, xs, strict=True))
    return crops


def _load_photos(cfg: Mapping, key: str) -> ImageData:
    check_keys(cfg, {"name", "scale", "patch", "patches_per_epoch", "test_crops", "test_patch",
                     "seed"}, key)
    scale = _scale(cfg, key)
    patch = int_option(cfg, "patch", 24, key)
    length = int_option(cfg, "patches_per_epoch", 512, key)
    per_image = int_option(cfg, "test_crops", 8, key)
    test_patch = int_option(cfg, "test_patch", 48, key)
    seed = int_option(cfg, "seed", 0, key, minimum=0)
    train, val, test = ([make_pair(n, _photo(n), scale) for n in names]
                        for names in (PHOTOS_TRAIN, PHOTOS_VAL, PHOTOS_TEST))
    _check_fits(train, patch, f"{key}.patch", scale)
    _check_fits(val + test, test_patch, f"{key}.test_patch", scale)
    val, test = (FixedCrops(pairs, _crop_positions(pairs, per_image, test_patch, seed), scale,
                            test_patch) for pairs in (val, test))
    return _data(TrainPatches(train, scale, patch, length), val, test, scale)


# ---------------------------------------------------------------- folders


def _folder(cfg: Mapping, name: str, key: str, required: bool) -> Path | None:
    if cfg.get(name) is None and not required:
        return None
    path = root_path(cfg, key, name)
    if not path.is_dir():
        raise ConfigError(f"{key}.{name}", f"folder {path} not found")
    return path


def _images(folder: Path, key: str) -> list[Path]:
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in _SUFFIXES)
    if not files:
        raise ConfigError(key, f"no images ({', '.join(sorted(_SUFFIXES))}) in {folder}")
    return files


def _partners(hr_files: Sequence[Path], lr_dir: Path, scale: int, key: str) -> list[Path]:
    """The LR file of every HR file: stem ``<stem>x<scale>`` first (DIV2K, benchmarks), else
    the same stem."""
    by_stem: dict[str, Path] = {}
    for path in _images(lr_dir, key):
        by_stem.setdefault(path.stem, path)
    partners = []
    for hr in hr_files:
        lr = by_stem.get(f"{hr.stem}x{scale}") or by_stem.get(hr.stem)
        if lr is None:
            raise ConfigError(key, f"no LR image for {hr.name} in {lr_dir} (looked for "
                              f"{hr.stem}x{scale}.* and {hr.stem}.*); is it the X{scale} folder?")
        partners.append(lr)
    return partners


def _read(path: Path, key: str) -> Tensor:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            rgb = image.convert("RGB")
    except (OSError, UnidentifiedImageError) as err:
        raise ConfigError(key, f"cannot read image {path}: {err}") from None
    return torch.from_numpy(np.array(rgb)).permute(2, 0, 1).contiguous()


def _read_pair(hr_path: Path, lr_path: Path | None, scale: int, keys: tuple[str, str]) -> Pair:
    hr = _read(hr_path, keys[0])
    if min(hr.shape[-2:]) < scale:
        raise ConfigError(keys[0], f"{hr_path.name} is smaller than the scale {scale}")
    lr = None if lr_path is None else _read(lr_path, keys[1])
    pair = make_pair(hr_path.stem, hr, scale, lr)
    want = (pair.hr.shape[-2] // scale, pair.hr.shape[-1] // scale)
    if tuple(pair.lr.shape[-2:]) != want:
        raise ConfigError(keys[1], f"{lr_path.name} is {pair.lr.shape[-1]}x{pair.lr.shape[-2]} "
                          f"but {hr_path.name} at scale {scale} needs exactly "
                          f"{want[1]}x{want[0]}")
    return pair


def _read_files(cfg: Mapping, source: str, hr_files: Sequence[Path], scale: int,
                key: str) -> list[Pair]:
    """Decode ``hr_files`` (from the ``<source>_hr`` folder) and their ``<source>_lr`` partners."""
    keys = (f"{key}.{source}_hr", f"{key}.{source}_lr")
    lr_dir = _folder(cfg, f"{source}_lr", key, required=False)
    lr_files = _partners(hr_files, lr_dir, scale, keys[1]) if lr_dir else [None] * len(hr_files)
    workers = min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1,
                  len(hr_files))
    with ThreadPoolExecutor(max_workers=workers) as executor:  # PIL decodes without the GIL
        return list(executor.map(lambda hr, lr: _read_pair(hr, lr, scale, keys), hr_files, lr_files))


def _load_folders(cfg: Mapping, key: str) -> ImageData:
    check_keys(cfg, {"name", *FOLDER_KEYS, "scale", "patch", "patches_per_epoch", "val_fraction",
                     "train_limit", "val_limit", "test_limit"}, key)
    scale = _scale(cfg, key)
    patch = int_option(cfg, "patch", 24, key)
    length = int_option(cfg, "patches_per_epoch", 512, key)
    limits = {s: int_option(cfg, f"{s}_limit", None, key) for s in SPLITS}
    given = cfg.get("val_hr") is not None  # check every value, then every folder, before reading
    if cfg.get("val_lr") is not None and not given:
        raise ConfigError(f"{key}.val_lr", "given without val_hr, the folder it pairs with")
    if given:
        given_val(cfg, key, f"the folder {cfg['val_hr']}")
    fraction = None if given else fraction_option(cfg, "val_fraction", VAL_FRACTION, key)
    folders = {s: _folder(cfg, f"{s}_hr", key, required=s != "val") for s in SPLITS}
    for split in SPLITS:
        _folder(cfg, f"{split}_lr", key, required=False)
    if given and folders["val"].resolve() in (folders["train"].resolve(), folders["test"].resolve()):
        raise ConfigError(f"{key}.val_hr", f"{folders['val']} is also the train or the test "
                          "folder; validation must be held out from both")
    files = {s: _images(folders[s], f"{key}.{s}_hr") for s in SPLITS if folders[s]}
    if fraction is not None:  # whole training images, chosen before any limit moves them
        keep, val = split_off(len(files["train"]), fraction, 0, key)
        files["train"], files["val"] = ([files["train"][i] for i in part] for part in (keep, val))
    source = {"train": "train", "val": "val" if given else "train", "test": "test"}
    pairs = {s: _read_files(cfg, source[s], files[s][:limits[s]], scale, key) for s in SPLITS}
    _check_fits(pairs["train"], patch, f"{key}.patch", scale)
    return _data(TrainPatches(pairs["train"], scale, patch, length), WholeImages(pairs["val"]),
                 WholeImages(pairs["test"]), scale, whole_images_key=key)


# ---------------------------------------------------------------- registry


DATASETS: dict[str, DataSource] = {
    "photos": DataSource(_load_photos),
    "folders": DataSource(_load_folders, path_keys=FOLDER_KEYS),
}


def load_superres_data(cfg: Mapping | None, key: str = "data") -> ImageData:
    """Build the super-resolution data set that ``cfg`` (the ``data`` section) names.

    ``name`` defaults to ``photos``; every mistake is a :class:`ConfigError` whose key is a
    dotted path below ``key``.
    """
    return pick_dataset(DATASETS, cfg, key, DEFAULT, "super-resolution ")
