"""Train a design on its data and report score, peak memory and time.

This is the loop behind ``auxsearch train``, every search trial and every confirmation run. It
reads the torchvision-references way: :func:`fit` sets up (data, model, optimizer) and runs
epochs; :func:`train_one_epoch` is one pass over the training batches (the first
:data:`~auxsearch.train.memory.STEPS_MEASURED` steps measured), :func:`evaluate_split` one
scoring of a split (after precise BN). Progress goes to an optional callback so a search can
stop a trial early.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from auxsearch.config import TrainConfig, from_mapping
from auxsearch.design.graph import as_design, design_hash
from auxsearch.model import engine
from auxsearch.model.precision import Precision
from auxsearch.tasks import ImageData, Task, get_task
from auxsearch.train import checkpoint, devices, memory
from auxsearch.train.data import (
    check_data_fits,
    eval_batches,
    load_data,
    recalibration_batches,
    train_batches,
)
from auxsearch.train.result import NonFiniteLoss, TrainResult

__all__ = ["NonFiniteLoss", "TrainResult", "evaluate_split", "fit", "train_one_epoch"]


@dataclass
class Session:
    """What one training run holds between epochs."""

    model: engine.LocalNetwork
    opt: torch.optim.Optimizer
    sched: Any
    amp: Precision
    task: Task
    device: torch.device
    layout: torch.memory_format
    cfg: TrainConfig
    data: ImageData
    train: Any  # training batches
    recal: Any  # precise-BN batches (None: off)


def train_one_epoch(s: Session, bar, measure: int) -> tuple[bool, int, int]:
    """One pass over the training batches: ``(every loss finite, peak bytes of the measured steps, steps measured)``.

    The first ``measure`` steps are the measured ones (:data:`memory.STEPS_MEASURED` says why);
    finiteness is checked once at the end of the epoch, so no step waits for the device.
    """
    s.model.train()
    finite = torch.ones((), dtype=torch.bool, device=s.device)
    peak, measured = 0, 0
    for batch in s.train:
        index, (x, y) = batch if s.model.keeps_samples else (None, batch)
        x = x.to(s.device, non_blocking=True).contiguous(memory_format=s.layout)
        y = s.task.to_device(y, s.device)
        if index is not None:
            index = index.to(s.device, non_blocking=True)

        def step(x=x, y=y, index=index):
            return engine.train_step(s.model, s.opt, x, y, s.amp, index)

        if measured < measure:
            measured += 1
            used, (_, losses) = memory.measure_step(s.model, s.opt, step, x, y)
            peak = max(peak, used)
        else:
            _, losses = step()
        finite &= torch.isfinite(torch.stack(losses)).all()
        s.sched.step()
        bar.update(1)
    return bool(finite), peak, measured


def evaluate_split(s: Session, split) -> dict[str, float]:
    """The task's scores on ``split``, after precise BN when the recipe asks for it."""
    if s.recal is not None:
        _recalibrate(s)
    return engine.evaluate(s.model, eval_batches(split, s.data, s.cfg, s.device), s.device)


def _recalibrate(s: Session) -> None:
    seed = int(torch.randint(2**31 - 1, (), generator=s.recal.generator))  # reproducible augmentation draws
    # a lazy generator: the loader is iterated only inside recalibrate_bn, on its private RNG
    batches = (b for b in itertools.islice(s.recal, s.cfg.bn_recalibration_batches))
    engine.recalibrate_bn(s.model, batches, s.device, seed=seed)


def _session(d: dict, cfg: TrainConfig, data: ImageData) -> Session:
    task = get_task(d["task"]["name"])
    device = engine.resolve_device(cfg.device)
    devices.check_precision(cfg.precision, device)
    devices.apply_share(device)  # a worker sharing its GPU allocates at most its share
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    model = engine.build(d).to(device)
    model.set_normalization(data.mean, data.std)
    layout = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model = model.to(memory_format=layout)
    train = train_batches(data, cfg, device, with_index=model.keeps_samples)
    recal = recalibration_batches(data, cfg, device) if cfg.bn_recalibration_batches else None
    opt, sched = engine.make_optimizer(model, cfg, cfg.epochs * len(train))
    amp = Precision(cfg.precision, device)
    memory.warm_up(device, amp)  # the libraries' workspaces exist before the measured steps
    return Session(model, opt, sched, amp, task, device, layout, cfg, data, train, recal)


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
    ``checkpoint_dir``: ``last.pt`` after every epoch; ``resume``: go on from it when it exists.
    """
    d = as_design(design)
    cfg = train if isinstance(train, TrainConfig) else from_mapping(TrainConfig, train or d.get("train"), "train")
    if not isinstance(data, ImageData):
        data = load_data(d, data, base_dir)
    check_data_fits(d, data)
    s = _session(d, cfg, data)
    result = TrainResult(s.task.metric, 0.0, 0, "measured", 0, 0.0, design_hash(d), _device_label(s.device))
    loaders = (s.train, s.recal)
    first = checkpoint.resume(checkpoint_dir, s.model, s.opt, s.sched, result, loaders, cfg, s.amp) if resume else 0
    start = time.perf_counter() - result.seconds  # the time spent before a resume counts
    bar = _bar(cfg.epochs * len(s.train), progress)
    bar.update(first * len(s.train))
    to_measure = memory.STEPS_MEASURED if result.peak_memory_bytes == 0 else 0  # a resumed run has its peak
    for epoch in range(first, cfg.epochs):
        finite, peak, measured = train_one_epoch(s, bar, to_measure)
        to_measure -= measured
        result.peak_memory_bytes = max(result.peak_memory_bytes, peak)
        if not finite:
            bar.close()
            raise NonFiniteLoss(f"a local loss became NaN or inf in epoch {epoch + 1}")
        result.scores = evaluate_split(s, data.val)
        result.history.append(result.scores[s.task.metric])
        result.epochs = epoch + 1
        bar.set_postfix({"epoch": epoch + 1, s.task.metric: f"{result.history[-1]:.4f}"})
        if checkpoint_dir is not None:
            checkpoint.save(checkpoint_dir, s.model, s.opt, s.sched, result, loaders, cfg,
                            time.perf_counter() - start, s.amp)
        if on_epoch is not None and on_epoch(result):
            result.stopped_early = epoch + 1 < cfg.epochs
            break
    bar.close()
    if final_test:  # the statistics the last validation score used: no training step came between
        result.test_scores = engine.evaluate(s.model, eval_batches(data.test, data, cfg, s.device), s.device)
    result.score = result.history[-1] if result.history else 0.0
    result.seconds = time.perf_counter() - start
    result.model = s.model  # type: ignore[attr-defined]  # handy for callers; not serialised
    return result


def _device_label(device: torch.device) -> str:
    """The device as a trial records it, named by the process that trains on it: ``cuda:0 (NVIDIA H200)``."""
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)


def _bar(total: int, enabled: bool | str):
    from tqdm.auto import tqdm

    return tqdm(total=total, disable=not enabled, desc="  epochs", unit="step", leave=False,
                dynamic_ncols=True, position=1 if enabled == "nested" else 0)
