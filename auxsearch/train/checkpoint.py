"""``auxsearch train --save DIR``: everything the next epoch needs, written after every epoch, and read back.

``DIR/last.pt`` holds weights, optimizer, schedule, loss scale, RNG states (torch, CUDA and each
loader's generator) and the history so far: tensors and plain data only, so
``torch.load(..., weights_only=True)`` reads it. It is written whole, then renamed, so a kill
never leaves half a checkpoint.
"""

from __future__ import annotations

from pathlib import Path

import torch

from auxsearch.config import TrainConfig
from auxsearch.errors import ConfigError
from auxsearch.model.precision import Precision
from auxsearch.train.result import TrainResult

CHECKPOINT = "last.pt"  # in fit's checkpoint_dir


def save(folder: Path, model, opt, sched, result: TrainResult, loaders: tuple, cfg: TrainConfig,
         seconds: float, amp: Precision) -> None:
    """Write ``folder/last.pt`` after epoch ``result.epochs``."""
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


def resume(folder: Path | None, model, opt, sched, result: TrainResult, loaders: tuple, cfg: TrainConfig,
           amp: Precision) -> int:
    """Load ``folder/last.pt`` (``weights_only=True``) into the run; the epochs it had done (0: no checkpoint)."""
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
