"""Run one trial's training in a fresh process, and name what went wrong.

A trial in its own process cannot leak GPU memory (or allocator caches,
threads, CUDA context state) into the next, and a hard crash (segfault,
a kill by the OOM killer) ends only that process: the parent sees the pipe
close and records the trial as failed. The parent keeps the Optuna trial;
after every epoch the child sends its accuracy curve and waits for the
parent's answer (go on or stop), so early stopping works across the
process boundary.
"""

from __future__ import annotations

import multiprocessing as mp
import traceback
from pathlib import Path
from typing import Any

import torch

from auxsearch.config import TrainConfig, to_mapping
from auxsearch.train.loop import fit
from auxsearch.train.result import NonFiniteLoss, TrainResult


class TrialOutOfMemory(RuntimeError):
    """The design did not fit: CUDA or CPU out of memory. ``reached`` is the peak seen, if known."""

    def __init__(self, message: str, reached: int | None = None) -> None:
        super().__init__(message)
        self.reached = reached


class TrialProcessDied(RuntimeError):
    """The trial's process ended without a result (a hard crash or a kill)."""


def is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError | torch.OutOfMemoryError | TrialOutOfMemory):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and any(
        s in text for s in ("out of memory", "can't allocate memory", "not enough memory"))


def peak_reached(device: str) -> int | None:
    """The allocator's peak on ``device`` so far (CUDA only; the CPU has no such counter).
    ``auto`` is the device training resolves it to (CUDA when there is one)."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and torch.cuda.is_available():
        return int(torch.cuda.max_memory_allocated())
    return None


def _child(conn, design: dict, train: dict, data: dict, base_dir: str | None, final_test: bool) -> None:
    def on_epoch(res: TrainResult) -> bool:
        conn.send(("epoch", list(res.history), res.peak_memory_bytes))
        return bool(conn.recv())

    device = train.get("device", "auto")
    try:
        r = fit(design, train=train, data=data, base_dir=Path(base_dir) if base_dir else None, on_epoch=on_epoch,
                final_test=final_test)
        out = r.as_dict()
        out["parameters"] = sum(p.numel() for p in r.model.parameters())  # type: ignore[attr-defined]
        conn.send(("done", out))
    except BaseException as exc:  # everything goes back to the parent, classified
        conn.send(("error", {"type": type(exc).__name__, "message": str(exc), "oom": is_out_of_memory(exc),
                             "nonfinite": isinstance(exc, NonFiniteLoss), "reached": peak_reached(str(device)),
                             "traceback": traceback.format_exc()[-4000:]}))
    finally:
        conn.close()


def fit_in_subprocess(design: dict, train: TrainConfig, data: dict, base_dir: Path | None,
                      on_epoch=None, final_test: bool = False) -> tuple[TrainResult, int]:
    """:func:`auxsearch.train.loop.fit` in a fresh (spawned) process; returns (result, parameter count)."""
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_child, args=(child, design, to_mapping(train), dict(data),
                                            str(base_dir) if base_dir else None, final_test), daemon=True)
    proc.start()
    child.close()
    partial = TrainResult("accuracy", 0.0, 0, "measured", 0, 0.0, "", "")
    try:
        while True:
            try:
                kind, *payload = parent.recv()
            except EOFError:
                proc.join(5)
                raise TrialProcessDied(f"the trial's process died (exit code {proc.exitcode}) "
                                       "without a result") from None
            if kind == "epoch":
                partial.history, partial.peak_memory_bytes = payload
                partial.epochs = len(partial.history)
                parent.send(bool(on_epoch(partial)) if on_epoch else False)
            elif kind == "done":
                return _result(payload[0])
            else:
                _raise(payload[0])
    finally:
        parent.close()
        proc.join(10)
        if proc.is_alive():
            proc.kill()


def _result(d: dict[str, Any]) -> tuple[TrainResult, int]:
    params = d.pop("parameters")
    return TrainResult(**d), params


def _raise(err: dict[str, Any]) -> None:
    message = f"{err['type']}: {err['message']}"
    if err["oom"]:
        raise TrialOutOfMemory(message, err["reached"])
    if err["nonfinite"]:
        raise NonFiniteLoss(err["message"])
    exc = RuntimeError(message)
    exc.child_traceback = err["traceback"]  # type: ignore[attr-defined]
    raise exc
