"""Mixed precision for the local step: autocast per module, one loss scale for fp16.

``train.precision`` picks the arithmetic of the training step:

* ``fp32``: no autocast, no scaling (the reference; every figure before this option).
* ``bf16``: every module's forward (backbone stage, aux net, real head) runs under
  ``torch.autocast(device, bfloat16)``; the backward runs outside it, as torch recommends.
  bf16 has fp32's exponent range, so no loss scaling is needed. Works on CPU and CUDA.
* ``fp16``: as bf16 with float16, plus loss scaling (:class:`torch.amp.GradScaler`): every
  module's local loss is multiplied by the *same* scale before its own ``backward()``, so the
  gradients of all modules are scaled alike; the optimizer step unscales them together and
  checks them together. When any module's gradient overflowed (inf / NaN), the step is
  skipped for **all** modules and the scale backs off: the modules never drift apart in step
  count, and the learning-rate schedule stays one schedule. The EMA copies of momentum aux
  nets follow the real units right after each backward whatever happens: after a skipped
  step the units did not move, so the EMA only moves further towards the same weights.

Weights, gradients, optimizer state and EMA copies stay float32 in every mode (autocast
casts on the fly and caches the low-precision weight copies for one forward); what shrinks
is the activations autograd keeps, which is what the Pareto front's memory axis counts.
Evaluation and precise-BN recalibration run in float32: scores do not depend on the
training precision's rounding of the outputs (a bf16 image has 8 bits of mantissa, which
would cap PSNR).
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from auxsearch.config import PRECISIONS

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}

__all__ = ["DTYPES", "PRECISIONS", "Precision"]


class Precision:
    """The autocast context, loss scaling and optimizer step of one training run.

    ``Precision("fp32")`` changes nothing: its ``autocast()`` is a null context, ``backward``
    is ``loss.backward()``, ``step`` is ``opt.step()``.
    """

    def __init__(self, name: str = "fp32", device: torch.device | str = "cpu") -> None:
        if name not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {name!r}")
        self.name = name
        self.device_type = torch.device(device).type
        self.dtype = DTYPES.get(name)
        self.scaler = torch.amp.GradScaler(self.device_type) if name == "fp16" else None
        self.skipped = 0  # optimizer steps skipped on overflow (fp16)

    def __repr__(self) -> str:
        return f"Precision({self.name!r}, {self.device_type!r})"

    @property
    def enabled(self) -> bool:
        return self.dtype is not None

    def autocast(self) -> contextlib.AbstractContextManager:
        """Wraps one module's forward and loss."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def backward(self, loss: torch.Tensor) -> None:
        """``backward()`` of one local loss, scaled by the run's one scale under fp16."""
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def step(self, opt: torch.optim.Optimizer) -> bool:
        """The optimizer step after every module's backward; False when fp16 skipped it (overflow)."""
        if self.scaler is None or _fake():  # a simulation: unscaling in place adds no memory worth counting
            opt.step()
            return True
        before = self.scaler.get_scale()
        self.scaler.step(opt)
        self.scaler.update()
        # GradScaler skips the step exactly when it found inf/NaN, and then lowers the scale
        taken = self.scaler.get_scale() >= before
        self.skipped += not taken
        return taken

    def state_dict(self) -> dict[str, Any]:
        return {"scaler": self.scaler.state_dict() if self.scaler is not None else None, "skipped": self.skipped}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.skipped = int(state.get("skipped", 0))


def _fake() -> bool:
    from torch._guards import detect_fake_mode

    return detect_fake_mode() is not None
