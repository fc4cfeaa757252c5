"""Train a design on its data and report score, peak memory and time.

This is the loop behind ``auxsearch train`` and every search trial: it
reads top to bottom (data, model, optimizer, epochs) and hands progress to
an optional callback so a search can stop a trial early.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from . import engine, memory
from .config import TrainConfig, from_mapping
from .graph import as_design, design_hash
from .precision import Precision
from .tasks import ImageData, get_task
from .tasks.tensor_data import DeviceBatches, tensor_source


class NonFiniteLoss(RuntimeError):
    """A local loss became NaN or inf: the design (or its learning rate) diverged."""


@dataclass
class TrainResult:
    metric: str
    score: float
    peak_memory_bytes: int
    memory_mode: str
    epochs: int
    seconds: float
    design_hash: str
    device: str
    history: list[float] = field(default_factory=list)  # validation score after each epoch
    stopped_early: bool = False
    scores: dict[str, float] = field(default_factory=dict)  # every validation metric of the last epoch
    test_scores: dict[str, float] | None = None  # the held-out test split, only when asked for (final_test)

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "model"}


def resolve_data_cfg(data: Mapping | None, base_dir: Path | None, task: str = "classification") -> dict:
    """The ``data`` block with the data set's path keys made absolute against ``base_dir``.

    Each data set declares which of its keys name files or folders (``root``, DIV2K's
    ``train_hr`` ...); the same resolver serves run metadata, ``train`` and ``export``.
    """
    from .tasks import resolve_data_paths

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
    on CUDA the torch threads this trial worker has (cores / ``--workers``) less one, at most 8."""
    if cfg.loader_workers is not None:
        return cfg.loader_workers
    if device.type != "cuda":
        return 0
    return max(0, min(8, torch.get_num_threads() - 1))


def _loader(split, data: ImageData, cfg: TrainConfig, device: torch.device, batch_size: int, *,
            shuffle: bool, seed: int | None = None):
    """Batches of ``split``: on the device from tensors when the set is held as tensors
    (``train.data_on_device``), else a DataLoader (worker processes, pinned memory on CUDA)."""
    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    drop_last = shuffle and len(split) > batch_size
    if cfg.data_on_device and tensor_source(split) is not None:
        return DeviceBatches(split, batch_size, shuffle=shuffle, drop_last=drop_last, generator=gen, device=device)
    workers = loader_workers(cfg, device)
    return DataLoader(split, batch_size=batch_size, shuffle=shuffle, drop_last=drop_last, generator=gen,
                      pin_memory=device.type == "cuda", collate_fn=data.collate, num_workers=workers,
                      persistent_workers=workers > 0)


def _train_loader(data: ImageData, cfg: TrainConfig, device: torch.device):
    return _loader(data.train, data, cfg, device, cfg.batch_size, shuffle=True, seed=cfg.seed)


def _eval_loader(split, data: ImageData, cfg: TrainConfig, device: torch.device):
    eval_batch = cfg.eval_batch_size if data.eval_batch_size is None else data.eval_batch_size
    return _loader(split, data, cfg, device, eval_batch, shuffle=False)


def _recalibration_loader(data: ImageData, cfg: TrainConfig, device: torch.device) -> DataLoader:
    """Shuffled training batches for precise BN, from a generator of their own.

    The training loader's generator is never read, and :func:`engine.recalibrate_bn` draws any
    augmentation on private RNG copies: the training run is the same with or without it. The
    generator lives for the whole run, so each evaluation recomputes on fresh batches.
    """
    # any fixed seed apart from the training order's
    return _loader(data.train, data, cfg, device, cfg.batch_size, shuffle=True, seed=cfg.seed + 7919)


def _recalibrate(model, loader: DataLoader, cfg: TrainConfig, device: torch.device) -> None:
    seed = int(torch.randint(2**31 - 1, (), generator=loader.generator))  # reproducible augmentation draws
    # a lazy generator: the loader is iterated only inside recalibrate_bn, on its private RNG
    batches = (b for b in itertools.islice(loader, cfg.bn_recalibration_batches))
    engine.recalibrate_bn(model, batches, device, seed=seed)


def fit(design: Any, *, train: TrainConfig | Mapping | None = None, data: ImageData | Mapping | None = None,
        base_dir: Path | None = None, progress: bool | str = False,
        on_epoch: Callable[[TrainResult], bool] | None = None, final_test: bool = False,
        checkpoint_dir: Path | None = None, resume: bool = False) -> TrainResult:
    """Train ``design`` and score it on the validation split after every epoch.

    ``train`` / ``data`` default to the design's own recipe blocks.
    ``on_epoch(result)`` sees the result so far (``history``, measured peak)
    after every epoch and may return True to stop early (search pruning).
    The test split is read only with ``final_test=True``, once, after the last
    epoch (confirming a chosen design; a search never asks for it).
    With ``train.bn_recalibration_batches`` > 0 the BatchNorm statistics of the inference
    path are recomputed on that many training batches before each evaluation (precise BN,
    :func:`engine.recalibrate_bn`); the test split is scored with the statistics the last
    validation score was computed with (no training step comes between them).
    """
    d = as_design(design)
    cfg = train if isinstance(train, TrainConfig) else from_mapping(TrainConfig, train or d.get("train"), "train")
    task = get_task(d["task"]["name"])
    if not isinstance(data, ImageData):
        data = load_data(d, data, base_dir)
    check_data_fits(d, data)
    device = engine.resolve_device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    model = engine.build(d).to(device)
    model.set_normalization(data.mean, data.std)
    layout = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model = model.to(memory_format=layout)
    amp = Precision(cfg.precision, device)
    train_loader = _train_loader(data, cfg, device)
    val_loader = _eval_loader(data.val, data, cfg, device)
    recal_loader = _recalibration_loader(data, cfg, device) if cfg.bn_recalibration_batches else None
    opt, sched = engine.make_optimizer(model, cfg, cfg.epochs * len(train_loader))
    result = TrainResult(task.metric, 0.0, 0, "measured", 0, 0.0, design_hash(d), str(device))
    start = time.perf_counter()
    bar = _bar(cfg.epochs * len(train_loader), progress)
    # checkpoint_dir: last.pt after every epoch; resume: go on from it (when it exists)
    first = _resume(checkpoint_dir, model, opt, sched, result, (train_loader, recal_loader), cfg, amp) if resume else 0
    start -= result.seconds  # the time spent before a resume counts
    bar.update(first * len(train_loader))
    to_measure = memory.STEPS_MEASURED if result.peak_memory_bytes == 0 else 0  # a resumed run has its peak
    for epoch in range(first, cfg.epochs):
        model.train()
        finite = torch.ones((), dtype=torch.bool, device=device)  # checked once per epoch: no sync per step
        for x, y in train_loader:
            x = x.to(device, non_blocking=True).contiguous(memory_format=layout)
            y = task.to_device(y, device)
            out: list = []
            if to_measure:  # the first steps are the measured ones (memory.STEPS_MEASURED says why)
                to_measure -= 1
                result.peak_memory_bytes = max(result.peak_memory_bytes, memory.measure_step(
                    model, opt, lambda x=x, y=y, out=out: out.append(engine.train_step(model, opt, x, y, amp)), x, y))
            else:
                out.append(engine.train_step(model, opt, x, y, amp))
            finite &= torch.isfinite(torch.stack(out[0][1])).all()
            sched.step()
            bar.update(1)
        if not bool(finite):
            bar.close()
            raise NonFiniteLoss(f"a local loss became NaN or inf in epoch {epoch + 1}")
        if recal_loader is not None:
            _recalibrate(model, recal_loader, cfg, device)
        result.scores = engine.evaluate(model, val_loader, device)
        score = result.scores[task.metric]
        result.history.append(score)
        result.epochs = epoch + 1
        bar.set_postfix({"epoch": epoch + 1, task.metric: f"{score:.4f}"})
        if checkpoint_dir is not None:
            _checkpoint(checkpoint_dir, model, opt, sched, result, (train_loader, recal_loader), cfg,
                        time.perf_counter() - start, amp)
        if on_epoch is not None and on_epoch(result):
            result.stopped_early = epoch + 1 < cfg.epochs
            break
    bar.close()
    if final_test:
        result.test_scores = engine.evaluate(model, _eval_loader(data.test, data, cfg, device), device)
    result.score = result.history[-1] if result.history else 0.0
    result.seconds = time.perf_counter() - start
    result.model = model  # type: ignore[attr-defined]  # handy for callers; not serialised
    return result


def _bar(total: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, disable=not enabled, desc="  epochs", unit="step", leave=False,
                dynamic_ncols=True, position=1 if enabled == "nested" else 0)


CHECKPOINT = "last.pt"  # in fit's checkpoint_dir


def _checkpoint(folder: Path, model, opt, sched, result: TrainResult, loaders: tuple, cfg: TrainConfig,
                seconds: float, amp: Precision) -> None:
    """Everything the next epoch needs, to ``folder/last.pt``: weights, optimizer, schedule, RNG states,
    history. Tensors and plain data only (``torch.load(..., weights_only=True)`` reads it); written whole,
    then renamed, so a kill never leaves half a checkpoint."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cuda = next(model.parameters()).device.type == "cuda"
    state = {"epoch": result.epochs, "epochs": cfg.epochs, "steps_per_epoch": len(loaders[0]),
             "design_hash": result.design_hash, "history": list(result.history), "scores": dict(result.scores),
             "peak_memory_bytes": result.peak_memory_bytes, "seconds": seconds,
             "model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
             "precision": amp.state_dict(),
             "rng": {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all() if cuda else [],
                     "loaders": [None if g is None else g.generator.get_state() for g in loaders]}}
    torch.save(state, folder / (CHECKPOINT + ".tmp"))
    (folder / (CHECKPOINT + ".tmp")).replace(folder / CHECKPOINT)


def _resume(folder: Path | None, model, opt, sched, result: TrainResult, loaders: tuple, cfg: TrainConfig,
            amp: Precision) -> int:
    """Load ``folder/last.pt`` (``weights_only=True``) into the run; the epochs it had done (0: no checkpoint)."""
    from .errors import ConfigError

    path = Path(folder or ".") / CHECKPOINT
    if folder is None or not path.is_file():
        return 0
    device = next(model.parameters()).device
    state = torch.load(path, map_location=device, weights_only=True)
    if state["design_hash"] != result.design_hash:
        raise ConfigError("--resume", f"{path} holds design {state['design_hash']}, not this one ({result.design_hash})")
    if (state["epochs"], state["steps_per_epoch"]) != (cfg.epochs, len(loaders[0])):
        raise ConfigError("--resume", f"{path} was written for {state['epochs']} epochs of {state['steps_per_epoch']} "
                          f"steps, not {cfg.epochs} of {len(loaders[0])}: resume with the same epochs and batch size")
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    amp.load_state_dict(state.get("precision") or {})
    rng = state["rng"]
    torch.set_rng_state(rng["torch"].cpu())
    if rng["cuda"] and device.type == "cuda":
        torch.cuda.set_rng_state_all([s.cpu() for s in rng["cuda"]])
    for loader, s in zip(loaders, rng["loaders"], strict=True):
        if loader is not None and s is not None:
            loader.generator.set_state(s.cpu())
    result.history, result.scores = list(state["history"]), dict(state["scores"])
    result.peak_memory_bytes, result.epochs, result.seconds = state["peak_memory_bytes"], state["epoch"], state["seconds"]
    return state["epoch"]
