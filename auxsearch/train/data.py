"""A design's data: the data set its recipe names, and the batches a trial reads.

Data sets held as tensors (digits, CIFAR) are batched and augmented on the training device
(:class:`~auxsearch.tasks.tensor_data.DeviceBatches`); the others go through a DataLoader whose
worker processes and pinned memory depend on the device (:func:`loader_workers`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset, default_collate

from auxsearch.config import TrainConfig
from auxsearch.errors import ConfigError
from auxsearch.tasks import ImageData, get_task, resolve_data_paths
from auxsearch.tasks.tensor_data import DeviceBatches, tensor_source

# the precise-BN loader's order: any fixed seed apart from the training order's
RECALIBRATION_SEED_OFFSET = 7919


def resolve_data_cfg(data: Mapping | None, base_dir: Path | None, task: str = "classification") -> dict:
    """The ``data`` block with the data set's path keys made absolute against ``base_dir``.

    Each data set declares which of its keys name files or folders (``root``, DIV2K's
    ``train_hr`` ...); the same resolver serves run metadata, ``train`` and ``export``.
    """
    return resolve_data_paths(task, data, base_dir)


def check_data_fits(d: Mapping, data: ImageData) -> None:
    """The design's input shape, class count (and scale) must match the data set."""
    get_task(d["task"]["name"]).check_data(d, data)


def load_data(d: Mapping, data: Mapping | None, base_dir: Path | None) -> ImageData:
    """The data set of the design's task named by ``data`` (default: the design's own block)."""
    task = d["task"]["name"]
    return get_task(task).load_data(resolve_data_cfg(data or d.get("data"), base_dir, task))


def loader_workers(cfg: TrainConfig, device: torch.device) -> int:
    """``train.loader_workers``, or the automatic choice: none on CPU (the step needs the cores),
    on CUDA the torch threads this trial worker has (its CPUs / ``--workers``) less one, at most 8."""
    if cfg.loader_workers is not None:
        return cfg.loader_workers
    if device.type != "cuda":
        return 0
    return max(0, min(8, torch.get_num_threads() - 1))


def batches(split, data: ImageData, cfg: TrainConfig, device: torch.device, batch_size: int, *,
            shuffle: bool, seed: int | None = None, indexed: bool = False):
    """Batches of ``split``: on the device from tensors when the set is held as tensors
    (``train.data_on_device``), else a DataLoader (worker processes, pinned memory on CUDA);
    ``indexed``: a DataLoader whose batches are ``(index, (x, y))`` (:class:`Indexed`)."""
    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    drop_last = shuffle and len(split) > batch_size
    if cfg.data_on_device and tensor_source(split) is not None and not indexed:
        return DeviceBatches(split, batch_size, shuffle=shuffle, drop_last=drop_last, generator=gen, device=device)
    workers = loader_workers(cfg, device)
    dataset, collate = (Indexed(split), IndexedCollate(data.collate)) if indexed else (split, data.collate)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, drop_last=drop_last, generator=gen,
                      pin_memory=device.type == "cuda", collate_fn=collate, num_workers=workers,
                      persistent_workers=workers > 0)


class Indexed(Dataset):
    """``dataset``'s items with their positions: item ``i`` is ``(i, dataset[i])``."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        return i, self.dataset[i]


class IndexedCollate:
    """A batch of :class:`Indexed` items -> ``(index, (x, y))``: the positions as int64, the rest as ``collate``."""

    def __init__(self, collate=None) -> None:
        self.collate = collate or default_collate

    def __call__(self, items):
        return torch.tensor([i for i, _ in items], dtype=torch.long), self.collate([item for _, item in items])


def train_batches(data: ImageData, cfg: TrainConfig, device: torch.device, *, with_index: bool = False):
    """Shuffled training batches, in the order ``train.seed`` gives.

    ``with_index`` (the long-term feature bank, ``bank_keep``): each batch is ``(index, (x, y))``, the
    samples' positions in ``data.train`` beside them; refused unless the data set's training items are
    the same every epoch (``data.fixed_items``): a kept level of another crop would not be this sample's.
    """
    if with_index and not data.fixed_items:
        raise ConfigError("aux.bank_keep", "the long-term bank keeps a sample's levels from the last time it was "
                          "trained, but this data set draws its training items anew each epoch (random crops or "
                          "augmentation), so the kept levels would be of another view; it needs fixed training "
                          "items (the embedded scenes): drop bank_keep or use such a data set")
    return batches(data.train, data, cfg, device, cfg.batch_size, shuffle=True, seed=cfg.seed, indexed=with_index)


def eval_batches(split, data: ImageData, cfg: TrainConfig, device: torch.device):
    """``split`` in order, at the evaluation batch size (the data set's own when it fixes one)."""
    eval_batch = cfg.eval_batch_size if data.eval_batch_size is None else data.eval_batch_size
    return batches(split, data, cfg, device, eval_batch, shuffle=False)


def recalibration_batches(data: ImageData, cfg: TrainConfig, device: torch.device):
    """Shuffled training batches for precise BN, from a generator of their own.

    The training loader's generator is never read, and :func:`engine.recalibrate_bn` draws any
    augmentation on private RNG copies: the training run is the same with or without it. The
    generator lives for the whole run, so each evaluation recomputes on fresh batches.
    """
    return batches(data.train, data, cfg, device, cfg.batch_size, shuffle=True,
                   seed=cfg.seed + RECALIBRATION_SEED_OFFSET)
