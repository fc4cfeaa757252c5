"""Run one trial's training in a fresh process, and name what went wrong.

A trial in its own process cannot leak GPU memory (or allocator caches,
threads, CUDA context state) into the next, and a hard crash (segfault,
a kill by the OOM killer) ends only that process: the parent sees the pipe
close and records the trial as failed. The parent keeps the Optuna trial;
after every epoch the child sends its accuracy curve and waits for the
parent's answer (go on or stop), so early stopping works across the
process boundary.

The trial process is not daemonic, so its DataLoaders may start worker processes of their own
(a daemonic process may not have children: every file-backed data set failed on CUDA, where
trials are isolated by default); it is tied to its parent instead: on Linux it gets SIGKILL when
the parent dies (``PR_SET_PDEATHSIG``), and the parent kills it when it stops waiting (a result,
an error, ``timeout`` seconds without a word, or its own interruption).
"""

from __future__ import annotations

import ctypes
import gc
import multiprocessing as mp
import os
import signal
import traceback
from pathlib import Path
from typing import Any

import torch

from auxsearch.config import TrainConfig, to_mapping
from auxsearch.train.devices import SHARE_ENV, is_out_of_memory
from auxsearch.train.loop import fit
from auxsearch.train.result import NonFiniteLoss, TrainResult


class TrialOutOfMemory(RuntimeError):
    """The design did not fit: CUDA or CPU out of memory. ``reached`` is the peak seen, ``limit`` the
    memory the trial's process could use (its share of the GPU), each when known."""

    out_of_memory = True

    def __init__(self, message: str, reached: int | None = None, limit: int | None = None) -> None:
        super().__init__(message)
        self.reached, self.limit = reached, limit


class TrialProcessDied(RuntimeError):
    """The trial's process ended without a result (a hard crash or a kill)."""


def peak_reached(device: str) -> int | None:
    """The allocator's peak on ``device`` so far (CUDA only; the CPU has no such counter).
    ``auto`` is the device training resolves it to (CUDA when there is one)."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and torch.cuda.is_initialized():
        return int(torch.cuda.max_memory_allocated())
    return None


def memory_limit(device: str) -> int | None:
    """The bytes this process may allocate on CUDA ``device``: its share of the GPU (None on the CPU)."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if not (device.startswith("cuda") and torch.cuda.is_initialized()):
        return None
    share = float(os.environ.get(SHARE_ENV, "1"))
    return int(share * torch.cuda.get_device_properties(torch.device(device)).total_memory)


def release_after_oom(exc: BaseException) -> None:
    """Give back the cached GPU memory a failed step left, once nothing holds its tensors: the traceback's
    frames (the step's locals) are cleared first, else ``empty_cache`` frees nothing."""
    tb = exc.__traceback__
    if tb is not None:
        traceback.clear_frames(tb)
    gc.collect()
    if torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def _die_with_parent() -> None:
    """Linux: SIGKILL when the parent process dies, so a trial never outlives the worker that ran it."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _child(conn, design: dict, train: dict, data: dict, base_dir: str | None, final_test: bool) -> None:
    def on_epoch(res: TrainResult) -> bool:
        conn.send(("epoch", list(res.history), res.peak_memory_bytes))
        return bool(conn.recv())

    _die_with_parent()
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
                             "limit": memory_limit(str(device)), "traceback": traceback.format_exc()[-4000:]}))
    finally:
        conn.close()


def fit_in_subprocess(design: dict, train: TrainConfig, data: dict, base_dir: Path | None,
                      on_epoch=None, final_test: bool = False, timeout: float | None = None) -> tuple[TrainResult, int]:
    """:func:`auxsearch.train.loop.fit` in a fresh (spawned) process; returns (result, parameter count).

    ``timeout``: seconds the child may go without a word (an epoch's end, its result) before it is
    killed and the trial fails.
    """
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_child, args=(child, design, to_mapping(train), dict(data),
                                            str(base_dir) if base_dir else None, final_test), daemon=False)
    proc.start()
    child.close()
    partial = TrainResult("accuracy", 0.0, 0, "measured", 0, 0.0, "", "")
    try:
        while True:
            if timeout is not None and not parent.poll(timeout):
                raise TrialProcessDied(f"the trial's process said nothing for {timeout:g} s: killed")
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
        raise TrialOutOfMemory(message, err["reached"], err.get("limit"))
    if err["nonfinite"]:
        raise NonFiniteLoss(err["message"])
    exc = RuntimeError(message)
    exc.child_traceback = err["traceback"]  # type: ignore[attr-defined]
    raise exc
