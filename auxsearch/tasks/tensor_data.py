"""Tensor-resident image data sets, batched and augmented on the training device.

Small image-classification sets (scikit-learn's digits, CIFAR-10/100: 150 MB as uint8) fit in
memory, and on a GPU, as one tensor. Decoding, cropping and flipping them one image at a time on
the CPU (a torchvision transform per item, a DataLoader collating them) is then what a fast
network waits for. As the fast CIFAR trainers do (airbench, hlb-CIFAR10), :class:`DeviceBatches`
moves a training set to the device once and cuts, augments and converts whole batches there.

* :class:`TensorImages` holds ``N x C x H x W`` images (uint8, or float32 in [0, 1]) and int64
  labels. Read item by item (a plain DataLoader: validation, test, any caller that wants one)
  it augments with torch's global RNG, drawing exactly as torchvision's
  ``RandomCrop(size, padding=4)`` followed by ``RandomHorizontalFlip()`` would, so an item is
  what the torchvision transforms gave for the same global RNG state.
* :func:`tensor_source` finds the :class:`TensorImages` behind the ``Subset`` chains that
  :func:`auxsearch.tasks.data.carve` and :func:`~auxsearch.tasks.data.limited` wrap around it.
* :class:`DeviceBatches` iterates like ``DataLoader(dataset, batch_size, shuffle, drop_last,
  generator=...)`` and draws from ``generator`` exactly what that DataLoader draws (the base
  seed of each epoch's iterator, then the permutation, then the discarded permutation the
  sampler draws when it is exhausted), so the batch order is identical and an un-augmented set
  gives bitwise the DataLoader's batches. Augmentation draws, when the set augments, come from
  the same generator after the permutation, one set of draws per batch.
* :func:`augment_batch` is the batched pad-4 crop and flip: offsets and flips drawn on the CPU,
  the image gather done on the batch's device, so a seed gives the same batch on CPU and CUDA.

uint8 pixels become floats through a 256-entry table (``v / 255`` computed once on the CPU)
rather than a division, because CUDA divides by a scalar as a multiplication by its reciprocal,
which can round differently; with the table every device gives the bits ``ToTensor`` gives.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, Subset

PADDING = 4  # the pad of the pad-and-crop augmentation (He et al. 2016)
_UNIT = torch.arange(256, dtype=torch.float32) / 255.0  # uint8 value -> float in [0, 1]


def to_unit(images: torch.Tensor, table: torch.Tensor | None = None) -> torch.Tensor:
    """``images`` as float32 in [0, 1]: uint8 through the value table (``table``: that table
    already on the images' device), float32 as it is."""
    if images.dtype != torch.uint8:
        return images
    table = _UNIT.to(images.device) if table is None else table
    return table[images.long()]


def augment_batch(x: torch.Tensor, generator: torch.Generator | None, padding: int = PADDING
                  ) -> torch.Tensor:
    """A zero-padded random crop (same size, offset 0..2 ``padding`` each way) and a horizontal
    flip (probability 1/2) of every image of the ``N x C x H x W`` batch ``x``, as a new tensor
    on ``x``'s device and of its dtype.

    The draws are made on the CPU from ``generator`` (``None``: torch's global CPU RNG), in this
    order: ``N`` row offsets, ``N`` column offsets, ``N`` flip coins; only the results move to
    ``x.device``, so a generator state gives the same batch on every device. For ``N = 1``
    these are torchvision's draws (``RandomCrop.get_params`` draws the top then the left
    offset, ``RandomHorizontalFlip`` one ``rand``), so the global RNG gives what those
    transforms give. One gather for the whole batch, no loop over images.
    """
    n, _, h, w = x.shape
    span = 2 * padding + 1
    top = torch.randint(0, span, (n,), generator=generator)
    left = torch.randint(0, span, (n,), generator=generator)
    flip = torch.rand(n, generator=generator) < 0.5
    top, left, flip = (t.to(x.device, non_blocking=True) for t in (top, left, flip))
    padded = F.pad(x, (padding, padding, padding, padding))  # zeros, as RandomCrop's fill=0
    rows = top[:, None] + torch.arange(h, device=x.device)  # N x H rows of the padded image
    cols = left[:, None] + torch.arange(w, device=x.device)  # N x W columns
    cols = torch.where(flip[:, None], cols.flip(1), cols)  # the crop, read right to left
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    chans = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
    return padded[batch, chans, rows[:, None, :, None], cols[:, None, None, :]]


class TensorImages(Dataset):
    """Images and labels held as tensors; item ``i`` is ``(float32 C x H x W image in [0, 1],
    0-dim int64 label)`` (what :class:`~torch.utils.data.TensorDataset` gave for digits; a
    DataLoader batches it as it batches an ``int``).

    ``images``: ``N x C x H x W``, uint8 (0..255, a quarter of float32's memory) or float32
    (already in [0, 1]). ``labels``: ``N`` integers. With ``augment``, each read crops a
    ``padding``-zero-padded copy at a random offset and flips it half the time, drawing from
    torch's global RNG (see :func:`augment_batch`); :class:`DeviceBatches` does the same per
    batch from its own generator. ``classes`` (names of the labels) is kept for callers.
    Picklable, for DataLoader workers.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor | Sequence[int],
                 augment: bool = False, *, padding: int = PADDING,
                 classes: Sequence[str] | None = None) -> None:
        labels = torch.as_tensor(labels, dtype=torch.int64)
        if images.dim() != 4 or images.dtype not in (torch.uint8, torch.float32):
            raise ValueError(f"images must be N x C x H x W uint8 or float32, got "
                             f"{tuple(images.shape)} {images.dtype}")
        if labels.shape != (len(images),):
            raise ValueError(f"{len(images)} images need {len(images)} labels, got "
                             f"shape {tuple(labels.shape)}")
        self.images, self.labels = images, labels
        self.augment, self.padding = bool(augment), padding
        self.classes = None if classes is None else list(classes)

    @property
    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(images, labels)`` as stored (uint8 images stay uint8), as ``TensorDataset``."""
        return self.images, self.labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = self.images[index]
        if self.augment:
            image = augment_batch(image[None], None, self.padding)[0]
        return to_unit(image), self.labels[index]


def _positions(indices) -> torch.Tensor:
    if isinstance(indices, torch.Tensor):
        return indices.long().reshape(-1)
    return torch.tensor(list(indices), dtype=torch.int64)


def tensor_source(dataset: Dataset) -> tuple[TensorImages, torch.Tensor] | None:
    """The :class:`TensorImages` under ``dataset`` and the int64 indices into it of
    ``dataset``'s items, in order, through any chain of ``Subset`` wrappers; ``None`` when no
    :class:`TensorImages` is at the bottom."""
    index = None
    while isinstance(dataset, Subset):
        inner = _positions(dataset.indices)
        index = inner if index is None else inner[index]
        dataset = dataset.dataset
    if not isinstance(dataset, TensorImages):
        return None
    return dataset, torch.arange(len(dataset)) if index is None else index


_DEVICE_COPIES: dict[int, tuple[weakref.ref, dict]] = {}  # id(host images) -> (weak ref to them, device copies)


def on_device(base: TensorImages, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``base``'s images and labels on ``device``, copied once per process and device (two views of the
    same images, such as CIFAR's augmented training and plain validation sets, share the copy)."""
    if device.type == "cpu" or base.images.device == device:
        return base.images.to(device), base.labels.to(device)
    for k in [k for k, (ref, _) in _DEVICE_COPIES.items() if ref() is None]:  # host images gone: drop copies
        del _DEVICE_COPIES[k]
    ref, copies = _DEVICE_COPIES.get(id(base.images), (None, None))
    if ref is None or ref() is not base.images:
        copies = {}
        _DEVICE_COPIES[id(base.images)] = (weakref.ref(base.images), copies)
    key = (str(device), id(base.labels))
    if key not in copies:
        copies[key] = (base.images.to(device), base.labels.to(device))
    return copies[key]


class DeviceBatches:
    """Batches of a tensor-backed data set cut, augmented and converted on ``device``.

    A drop-in for ``DataLoader(dataset, batch_size, shuffle=shuffle, drop_last=drop_last,
    generator=generator)`` over a :class:`TensorImages` (or ``Subset`` chains of one): the
    selected images (uint8 kept uint8) and labels move to ``device`` once, here; each batch is
    an index gather there, then :func:`augment_batch` when the set augments, then the float
    conversion. Iterating yields ``(x, y)``: float32 ``B x C x H x W`` in [0, 1] and int64 ``B``,
    both on ``device``.

    Same random draws as that DataLoader, in the same order, from ``generator`` (``None``:
    torch's global CPU RNG, as the DataLoader): ``iter()`` draws the base seed a DataLoader
    iterator draws for its workers; the first batch draws ``randperm(n)`` as its
    ``RandomSampler`` does (which, with no generator, first seeds a fresh one from the global
    RNG); running the sampler dry draws the second ``randperm(n)`` it draws and discards, at
    the same moment (while cutting a short last batch, else when asked past the last one).
    Hence the same batches in the same order, and the generator in the same state after every
    batch and epoch, bitwise for an un-augmented set. An augmented set's crop and flip draws are
    taken, per batch, from the generator the permutation came from, after it (so they do move
    the generator's state, unlike a DataLoader's per-item transforms, which read the global
    RNG: from the second epoch on, the order differs from that DataLoader's).
    ``len()`` is the DataLoader's number of batches. ``generator`` stays an attribute so a
    checkpoint can save and restore its state.
    """

    def __init__(self, dataset: Dataset, batch_size: int, *, shuffle: bool,
                 drop_last: bool = False, generator: torch.Generator | None = None,
                 device: torch.device | str = "cpu") -> None:
        source = tensor_source(dataset)
        if source is None:
            raise TypeError(f"DeviceBatches needs a TensorImages data set (or Subsets of one), "
                            f"got {type(dataset).__name__}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        base, index = source
        self.dataset, self.batch_size = dataset, batch_size
        self.shuffle, self.drop_last, self.generator = shuffle, drop_last, generator
        self.device = torch.device(device)
        self.augment, self.padding = base.augment, base.padding
        # one device copy of the whole set, shared by every loader of it (train, precise BN, validation):
        # each keeps only its items' positions
        self.images, self.labels = on_device(base, self.device)
        self.index = index.to(self.device)
        self._table = _UNIT.to(self.device) if self.images.dtype == torch.uint8 else None

    def __len__(self) -> int:
        n = len(self.index)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        # _BaseDataLoaderIter.__init__ draws this eagerly, at iter(), not at the first batch
        torch.empty((), dtype=torch.int64).random_(generator=self.generator)
        return self._batches()

    def _batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n, size = len(self.index), self.batch_size
        generator = self.generator
        if self.shuffle:
            if generator is None:  # RandomSampler without a generator seeds one from the global RNG
                seed = int(torch.empty((), dtype=torch.int64).random_().item())
                generator = torch.Generator().manual_seed(seed)
            order = torch.randperm(n, generator=generator).to(self.device)
        else:
            order = torch.arange(n, device=self.device)
        spent = not self.shuffle  # whether the sampler's closing randperm has been drawn
        for b in range(len(self)):
            pick = order[b * size:(b + 1) * size]
            if not spent and (b + 1) * size > n:  # a short last batch runs the sampler dry
                torch.randperm(n, generator=generator)
                spent = True
            rows = self.index[pick]
            x = self.images[rows]
            if self.augment:
                x = augment_batch(x, generator, self.padding)
            yield to_unit(x, self._table), self.labels[rows]
        if not spent:  # asking past the last batch runs it dry
            torch.randperm(n, generator=generator)
