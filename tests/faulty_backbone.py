"""A backbone that fails on purpose, loaded through the documented ``backbone.python`` hook.

Unit 2 misbehaves only when its input carries a gradient, i.e. when it is
*not* the first unit of a module: so the end-to-end reference (K = 1)
fails, while a design split at unit 2 trains normally.
"""

from __future__ import annotations

import os
import signal

import torch
from torch import nn

from auxsearch.backbones.cifar_resnet import cifar_resnet_units


class Faulty(nn.Module):
    def __init__(self, inner: nn.Module, mode: str) -> None:
        super().__init__()
        self.inner, self.mode = inner, mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and x.requires_grad:
            if self.mode == "oom":  # a real allocator failure, asking for a petabyte
                torch.empty(1 << 50, dtype=torch.uint8)
            if self.mode == "nan":
                return self.inner(x) * float("nan")
            if self.mode == "error":
                raise ValueError("the faulty unit raised on purpose")
            if self.mode == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
        return self.inner(x)


def units(in_chans: int = 1, mode: str = "error") -> list[nn.Module]:
    u = cifar_resnet_units(in_chans, blocks=1)  # resnet8: 4 units
    u[2] = Faulty(u[2], mode)
    return u
