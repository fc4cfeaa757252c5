"""Super-resolution data sets, chosen by name from the ``data`` section of a design.

Data contract: every item is ``(lr, hr)``, float32 tensors with values in ``[0, 1]``, ``lr`` of
shape ``3 x h x w`` and ``hr`` of shape ``3 x (h * scale) x (w * scale)``, pixel-aligned (LR pixel
``(y, x)`` covers HR pixels ``[y*s, (y+1)*s) x [x*s, (x+1)*s)``). Images are not normalised: as
for classification, the model applies ``(x - mean) / std`` itself. ``std`` is ``(1, 1, 1)`` and
``mean`` the per-channel mean of the training HR images, because EDSR subtracts the mean only
(its ``MeanShift``); a super-resolution head must add ``mean`` back to its output so that the
prediction is again an image in ``[0, 1]``. :class:`ImageData` carries ``num_classes=1``,
``scale`` and ``image_size`` = the *LR training patch* side.

Training items are random aligned patch pairs (LR side ``patch``, HR side ``patch * scale``) from
an image drawn uniformly, flipped / rotated by one of the 8 symmetries of the square, as EDSR
trains. Every draw uses torch's global RNG inside ``__getitem__``, so the DataLoader's seeding
(``torch.manual_seed`` plus its per-worker seeds) controls it, and an "epoch" is a fixed
``patches_per_epoch`` items whatever the image count. Test items are deterministic.

LR images that are not read from disk are made by :func:`bicubic_downscale`: torch's
``F.interpolate(mode="bicubic", antialias=True)`` to exactly ``(H / s, W / s)``, then rounded to
8-bit levels as a stored PNG would be. With ``antialias=True`` torch widens the Keys cubic
(a = -0.5) by the scale factor, as MATLAB's ``imresize`` (which made the official DIV2K and
benchmark LR files) does; border handling and rounding differ, so it matches those files only
approximately. Against PIL's ``BICUBIC`` resize it differs by at most a few 8-bit levels (mean
about 0.1 level on ``astronaut``); the MATLAB difference was not measured here.

Known names (``DATASETS``):

``photos`` (the default, no files needed)
    scikit-image's bundled colour photographs, split by whole image, always the same way:
    train = ``astronaut``, ``rocket``, ``motorcycle_left``, ``motorcycle_right`` (the two views of
    ``skimage.data.stereo_motorcycle``); test = ``chelsea``, ``coffee``. HR images are cropped at
    the bottom/right to a multiple of ``scale``. Test items are ``test_crops`` fixed LR crops of
    side ``test_patch`` per test image (positions drawn once from ``seed``), so test batches
    stack with the default collate. Keys: ``name``, ``scale`` (2, 3 or 4; default 2), ``patch``
    (24), ``patches_per_epoch`` (512), ``test_crops`` (8), ``test_patch`` (48), ``seed`` (0).

``folders`` (real data on disk)
    ``train_hr`` / ``test_hr``: folders of HR images; ``train_lr`` / ``test_lr`` (optional):
    folders of their LR versions, else LR is made by :func:`bicubic_downscale`. Both the DIV2K
    layout (``DIV2K_train_HR/0001.png`` with ``DIV2K_train_LR_bicubic/X2/0001x2.png``) and the
    benchmark layout of Set5 / Set14 / B100 / Urban100 (``HR/baby.png`` with
    ``LR_bicubic/X2/babyx2.png``) work: an HR file pairs with the LR file of stem
    ``<stem>x<scale>``, or else of the same stem; LR files without an HR partner are ignored.
    Each LR must be exactly the HR (cropped to a multiple of ``scale``) divided by ``scale``.
    ``train_limit`` / ``test_limit`` keep the first images in name order. Keys: ``name``,
    ``train_hr``, ``train_lr``, ``test_hr``, ``test_lr``, ``scale``, ``patch``,
    ``patches_per_epoch``, ``train_limit``, ``test_limit``. No ``seed``: nothing in it is random
    beyond the training draws, which the DataLoader's seed controls.

    **Test items are whole images of varying sizes: evaluate ``folders`` with batch size 1.**
    ``ImageData.eval_batch_size`` is set to 1 for this reason, and ``ImageData.collate`` is a
    :class:`SameSizeCollate` that stacks as usual but raises a :class:`ConfigError` naming the
    problem if a batch still mixes image sizes. All images are decoded once, at load time, and
    kept as uint8 (full DIV2K train at x2 is about 8 GB; use ``train_limit`` for quick runs).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset, default_collate

from auxsearch.errors import ConfigError
from auxsearch.tasks.classification_data import ImageData, _check_keys, _int, pick_dataset

PHOTOS_TRAIN = ("astronaut", "rocket", "motorcycle_left", "motorcycle_right")
PHOTOS_TEST = ("chelsea", "coffee")
_SUFFIXES = {".png", ".bmp", ".jpg", ".jpeg", ".tif", ".tiff", ".ppm", ".webp"}


class Pair(NamedTuple):
    """One image at both resolutions, uint8 ``3 x H x W`` (HR already a multiple of scale)."""

    name: str
    lr: Tensor
    hr: Tensor


# ---------------------------------------------------------------- resampling


def bicubic_downscale(hr: Tensor, scale: int) -> Tensor:
    """LR version of float ``hr`` (``[B x] 3 x H x W`` in ``[0, 1]``, H and W multiples of
    ``scale``): antialiased bicubic to ``H/scale x W/scale``, rounded to 8-bit levels."""
    batch = hr if hr.dim() == 4 else hr.unsqueeze(0)
    size = (batch.shape[-2] // scale, batch.shape[-1] // scale)
    lr = F.interpolate(batch.float(), size=size, mode="bicubic", antialias=True,
                       align_corners=False)
    lr = lr.clamp(0.0, 1.0).mul(255.0).round().div(255.0)
    return lr if hr.dim() == 4 else lr.squeeze(0)


def _to_float(image: Tensor) -> Tensor:
    return image.float().div_(255.0)


def _to_uint8(image: Tensor) -> Tensor:
    return image.mul(255.0).round().to(torch.uint8)


def _crop_to_multiple(hr: Tensor, scale: int) -> Tensor:
    height, width = hr.shape[-2:]
    return hr[:, : height - height % scale, : width - width % scale]


def _make_pair(name: str, hr: Tensor, scale: int, lr: Tensor | None = None) -> Pair:
    hr = _crop_to_multiple(hr, scale)
    if lr is None:
        lr = _to_uint8(bicubic_downscale(_to_float(hr), scale))
    return Pair(name, lr.contiguous(), hr.contiguous())


# ---------------------------------------------------------------- data sets


def _dihedral(image: Tensor, code: int) -> Tensor:
    """One of the 8 symmetries of the square: bit 0 flips x, bit 1 flips y, bit 2 transposes."""
    if code & 1:
        image = image.flip(-1)
    if code & 2:
        image = image.flip(-2)
    if code & 4:
        image = image.transpose(-1, -2)
    return image.contiguous()


def _draw(high: int) -> int:
    return int(torch.randint(high, ()))


class TrainPatches(Dataset):
    """``length`` random aligned (LR, HR) patches; the index only bounds the epoch."""

    def __init__(self, pairs: Sequence[Pair], scale: int, patch: int, length: int) -> None:
        self.pairs, self.scale, self.patch, self.length = list(pairs), scale, patch, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        if not 0 <= index < self.length:
            raise IndexError(index)  # ends plain iteration, which would otherwise never stop
        pair = self.pairs[_draw(len(self.pairs))]
        p, s = self.patch, self.scale
        y, x = _draw(pair.lr.shape[-2] - p + 1), _draw(pair.lr.shape[-1] - p + 1)
        lr = pair.lr[:, y:y + p, x:x + p]
        hr = pair.hr[:, y * s:(y + p) * s, x * s:(x + p) * s]
        code = _draw(8)
        return _dihedral(_to_float(lr), code), _dihedral(_to_float(hr), code)


class FixedCrops(Dataset):
    """Fixed aligned crops ``(image index, y, x)`` of LR side ``size``: batches stack."""

    def __init__(self, pairs: Sequence[Pair], crops: Sequence[tuple[int, int, int]],
                 scale: int, size: int) -> None:
        self.pairs, self.crops, self.scale, self.size = list(pairs), list(crops), scale, size

    def __len__(self) -> int:
        return len(self.crops)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        i, y, x = self.crops[index]
        t, s = self.size, self.scale
        pair = self.pairs[i]
        lr = pair.lr[:, y:y + t, x:x + t]
        hr = pair.hr[:, y * s:(y + t) * s, x * s:(x + t) * s]
        return _to_float(lr), _to_float(hr)


class WholeImages(Dataset):
    """Every pair whole: sizes vary, so evaluate with batch size 1."""

    def __init__(self, pairs: Sequence[Pair]) -> None:
        self.pairs = list(pairs)

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        pair = self.pairs[index]
        return _to_float(pair.lr), _to_float(pair.hr)


class SameSizeCollate:
    """DataLoader ``collate_fn`` for whole test images: the default stacking, but a clear
    error instead of torch's shape message when a batch mixes image sizes. A class rather than
    a closure so that DataLoader workers started by ``spawn`` can pickle it."""

    def __init__(self, key: str) -> None:
        self.key = key

    def __call__(self, batch: list[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
        sizes = sorted({tuple(hr.shape[-2:]) for _, hr in batch})
        if len(sizes) > 1:
            raise ConfigError(self.key, f"a batch of {len(batch)} test images mixes HR sizes "
                              f"{sizes[:3]}...; whole-image super-resolution test sets must be "
                              "evaluated with batch size 1")
        return default_collate(batch)


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


def _data(train: TrainPatches, test: Dataset, pairs: Sequence[Pair], scale: int,
          whole_images_key: str | None = None) -> ImageData:
    """``whole_images_key``: test items are whole images of varying size (batch size 1)."""
    whole_images = whole_images_key is not None
    return ImageData(train=train, test=test, in_chans=3, num_classes=1, image_size=train.patch,
                     mean=_mean(pairs), std=(1.0, 1.0, 1.0), scale=scale,
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
    _check_keys(cfg, {"name", "scale", "patch", "patches_per_epoch", "test_crops", "test_patch",
                      "seed"}, key)
    scale = _scale(cfg, key)
    patch = _int(cfg, "patch", 24, key)
    length = _int(cfg, "patches_per_epoch", 512, key)
    per_image = _int(cfg, "test_crops", 8, key)
    test_patch = _int(cfg, "test_patch", 48, key)
    seed = _int(cfg, "seed", 0, key, minimum=0)
    train = [_make_pair(n, _photo(n), scale) for n in PHOTOS_TRAIN]
    test = [_make_pair(n, _photo(n), scale) for n in PHOTOS_TEST]
    _check_fits(train, patch, f"{key}.patch", scale)
    _check_fits(test, test_patch, f"{key}.test_patch", scale)
    crops = _crop_positions(test, per_image, test_patch, seed)
    return _data(TrainPatches(train, scale, patch, length),
                 FixedCrops(test, crops, scale, test_patch), train, scale)


# ---------------------------------------------------------------- folders


def _folder(cfg: Mapping, name: str, key: str, required: bool) -> Path | None:
    value = cfg.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, (str, os.PathLike)) or not str(value):
        raise ConfigError(f"{key}.{name}", f"required: a folder of images, got {value!r}")
    path = Path(value)
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
    pair = _make_pair(hr_path.stem, hr, scale, lr)
    want = (pair.hr.shape[-2] // scale, pair.hr.shape[-1] // scale)
    if tuple(pair.lr.shape[-2:]) != want:
        raise ConfigError(keys[1], f"{lr_path.name} is {pair.lr.shape[-1]}x{pair.lr.shape[-2]} "
                          f"but {hr_path.name} at scale {scale} needs exactly "
                          f"{want[1]}x{want[0]}")
    return pair


def _read_split(cfg: Mapping, split: str, scale: int, key: str) -> list[Pair]:
    keys = (f"{key}.{split}_hr", f"{key}.{split}_lr")
    hr_dir = _folder(cfg, f"{split}_hr", key, required=True)
    lr_dir = _folder(cfg, f"{split}_lr", key, required=False)
    hr_files = _images(hr_dir, keys[0])
    limit = _int(cfg, f"{split}_limit", None, key)
    hr_files = hr_files[:limit] if limit else hr_files
    lr_files = _partners(hr_files, lr_dir, scale, keys[1]) if lr_dir else [None] * len(hr_files)
    workers = min(8, os.cpu_count() or 1, len(hr_files))
    with ThreadPoolExecutor(max_workers=workers) as pool:  # PIL decodes without the GIL
        return list(pool.map(lambda hr, lr: _read_pair(hr, lr, scale, keys), hr_files, lr_files))


def _load_folders(cfg: Mapping, key: str) -> ImageData:
    _check_keys(cfg, {"name", "train_hr", "train_lr", "test_hr", "test_lr", "scale", "patch",
                      "patches_per_epoch", "train_limit", "test_limit"}, key)
    scale = _scale(cfg, key)
    patch = _int(cfg, "patch", 24, key)
    length = _int(cfg, "patches_per_epoch", 512, key)
    for split in ("train", "test"):  # check every value, then every folder, before reading
        _int(cfg, f"{split}_limit", None, key)
    for split in ("train", "test"):
        _folder(cfg, f"{split}_hr", key, required=True)
        _folder(cfg, f"{split}_lr", key, required=False)
    train = _read_split(cfg, "train", scale, key)
    test = _read_split(cfg, "test", scale, key)
    _check_fits(train, patch, f"{key}.patch", scale)
    return _data(TrainPatches(train, scale, patch, length), WholeImages(test), train, scale,
                 whole_images_key=key)


# ---------------------------------------------------------------- registry


DATASETS: dict[str, Callable[[Mapping, str], ImageData]] = {
    "photos": _load_photos,
    "folders": _load_folders,
}


def load_superres_data(cfg: Mapping | None, key: str = "data") -> ImageData:
    """Build the super-resolution data set that ``cfg`` (the ``data`` section) names.

    ``name`` defaults to ``photos``; every mistake is a :class:`ConfigError` whose key is a
    dotted path below ``key``.
    """
    return pick_dataset(DATASETS, cfg, key, "photos", "super-resolution ")
