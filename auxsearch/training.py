"""Train a design on its data and report score, peak memory and time.

This is the loop behind ``auxsearch train`` and every search trial: it
reads top to bottom (data, model, optimizer, epochs) and hands progress to
an optional callback so a search can stop a trial early.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from . import engine, memory
from .config import TrainConfig, from_mapping
from .errors import ConfigError
from .graph import as_design, design_hash
from .tasks import ImageData, load_image_data


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
    history: list[float] = field(default_factory=list)  # test score after each epoch
    stopped_early: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "model"}


def resolve_data_cfg(data: Mapping | None, base_dir: Path | None) -> dict:
    """The ``data`` block with a relative ``root`` made relative to ``base_dir``."""
    cfg = dict(data or {"name": "digits"})
    if base_dir is not None and isinstance(cfg.get("root"), str) and not Path(cfg["root"]).is_absolute():
        cfg["root"] = str((base_dir / cfg["root"]).resolve())
    return cfg


def check_data_fits(d: Mapping, data: ImageData) -> None:
    """The design's input shape and class count must match the data set."""
    want = [data.in_chans, data.image_size, data.image_size]
    if list(d["input_shape"]) != want:
        raise ConfigError("input_shape", f"the design expects {d['input_shape']} but the data set gives {want}")
    if d["num_classes"] != data.num_classes:
        raise ConfigError("num_classes", f"the design has {d['num_classes']} classes, the data set {data.num_classes}")


def _loaders(data: ImageData, cfg: TrainConfig, device: torch.device):
    gen = torch.Generator().manual_seed(cfg.seed)
    pin = device.type == "cuda"
    train = DataLoader(data.train, batch_size=cfg.batch_size, shuffle=True, drop_last=len(data.train) > cfg.batch_size,
                       generator=gen, pin_memory=pin)
    test = DataLoader(data.test, batch_size=cfg.eval_batch_size, shuffle=False, pin_memory=pin)
    return train, test


def fit(design: Any, *, train: TrainConfig | Mapping | None = None, data: ImageData | Mapping | None = None,
        base_dir: Path | None = None, progress: bool | str = False,
        on_epoch: Callable[[TrainResult], bool] | None = None) -> TrainResult:
    """Train ``design`` and evaluate it after every epoch.

    ``train`` / ``data`` default to the design's own recipe blocks.
    ``on_epoch(result)`` sees the result so far (``history``, measured peak)
    after every epoch and may return True to stop early (search pruning).
    """
    d = as_design(design)
    cfg = train if isinstance(train, TrainConfig) else from_mapping(TrainConfig, train or d.get("train"), "train")
    if not isinstance(data, ImageData):
        data = load_image_data(resolve_data_cfg(data or d.get("data"), base_dir))
    check_data_fits(d, data)
    device = engine.resolve_device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    model = engine.build(d).to(device)
    model.set_normalization(data.mean, data.std)
    train_loader, test_loader = _loaders(data, cfg, device)
    opt, sched = engine.make_optimizer(model, cfg, cfg.epochs * len(train_loader))
    result = TrainResult("accuracy", 0.0, 0, "measured", 0, 0.0, design_hash(d), str(device))
    start = time.perf_counter()
    bar = _bar(cfg.epochs * len(train_loader), progress)
    for epoch in range(cfg.epochs):
        model.train()
        finite = torch.ones((), dtype=torch.bool, device=device)  # checked once per epoch: no sync per step
        for x, y in train_loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            out: list = []
            if result.peak_memory_bytes == 0:  # the first step is the measured one
                result.peak_memory_bytes = memory.measure_step(
                    model, opt, lambda x=x, y=y, out=out: out.append(engine.train_step(model, opt, x, y)), x, y)
            else:
                out.append(engine.train_step(model, opt, x, y))
            finite &= torch.isfinite(torch.stack(out[0][1])).all()
            sched.step()
            bar.update(1)
        if not bool(finite):
            bar.close()
            raise NonFiniteLoss(f"a local loss became NaN or inf in epoch {epoch + 1}")
        score = engine.evaluate(model, test_loader, device)
        result.history.append(score)
        result.epochs = epoch + 1
        bar.set_postfix(epoch=epoch + 1, accuracy=f"{score:.4f}")
        if on_epoch is not None and on_epoch(result):
            result.stopped_early = epoch + 1 < cfg.epochs
            break
    bar.close()
    result.score = result.history[-1] if result.history else 0.0
    result.seconds = time.perf_counter() - start
    result.model = model  # type: ignore[attr-defined]  # handy for callers; not serialised
    return result


def _bar(total: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, disable=not enabled, desc="  epochs", unit="step", leave=False,
                dynamic_ncols=True, position=1 if enabled == "nested" else 0)
