"""Super-resolution items: the ``(lr, hr)`` pairs of :mod:`auxsearch.tasks.superres_data`, as
data sets (random training patches, fixed crops, whole images) and the resampling that makes LR.

Training items are random aligned patch pairs (LR side ``patch``, HR side ``patch * scale``) from
an image drawn uniformly, flipped / rotated by one of the 8 symmetries of the square, as EDSR
trains. Every draw uses torch's global RNG inside ``__getitem__``, so the DataLoader's seeding
(``torch.manual_seed`` plus its per-worker seeds) controls it, and an "epoch" is a fixed
``patches_per_epoch`` items whatever the image count. Validation and test items are
deterministic: fixed crops (:class:`FixedCrops`) or whole images (:class:`WholeImages`).

LR images that are not read from disk are made by :func:`bicubic_downscale`: torch's
``F.interpolate(mode="bicubic", antialias=True)`` to exactly ``(H / s, W / s)``, then rounded to
8-bit levels as a stored PNG would be. With ``antialias=True`` torch widens the Keys cubic
(a = -0.5) by the scale factor, as MATLAB's ``imresize`` (which made the official DIV2K and
benchmark LR files) does; border handling and rounding differ, so it matches those files only
approximately. Against PIL's ``BICUBIC`` resize it differs by at most a few 8-bit levels (mean
about 0.1 level on ``astronaut``); the MATLAB difference was not measured here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset, default_collate

from auxsearch.errors import ConfigError


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


def to_float(image: Tensor) -> Tensor:
    return image.float().div_(255.0)


def _to_uint8(image: Tensor) -> Tensor:
    return image.mul(255.0).round().to(torch.uint8)


def _crop_to_multiple(hr: Tensor, scale: int) -> Tensor:
    height, width = hr.shape[-2:]
    return hr[:, : height - height % scale, : width - width % scale]


def make_pair(name: str, hr: Tensor, scale: int, lr: Tensor | None = None) -> Pair:
    hr = _crop_to_multiple(hr, scale)
    if lr is None:
        lr = _to_uint8(bicubic_downscale(to_float(hr), scale))
    return Pair(name, lr.contiguous(), hr.contiguous())


# ---------------------------------------------------------------- data sets


def dihedral(image: Tensor, code: int) -> Tensor:
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
        return dihedral(to_float(lr), code), dihedral(to_float(hr), code)


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
        return to_float(lr), to_float(hr)


class WholeImages(Dataset):
    """Every pair whole: sizes vary, so evaluate with batch size 1."""

    def __init__(self, pairs: Sequence[Pair]) -> None:
        self.pairs = list(pairs)

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        pair = self.pairs[index]
        return to_float(pair.lr), to_float(pair.hr)


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
