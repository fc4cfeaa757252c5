"""``momentum``: MAN (Su et al. ECCV'24) and MAN++ (TPAMI'26).

Module k's output h passes through the first unit of module k + 1 twice
before the usual DGL or InfoPro head:

    y = s * LB(h) + (2 - s) * EMA(h)

LB ("learnable block") is a trainable copy of that unit; EMA is a frozen
copy whose *parameters* follow the real unit after module k's backward,
p_ema <- m * p_ema + (1 - m) * p_next (BN running buffers are not
averaged: the EMA copy keeps its own). ``s`` is MAN++'s learnable scale,
one scalar per module initialised to 1.0; with ``learnable_scale: false``
there is no ``s`` parameter at all and the rule is MAN's (s = 1).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .base import (
    AuxContext,
    AuxNet,
    DGLHead,
    InfoProHead,
    clone_module,
    ema_update,
    frozen_copy,
    infopro_ratio,
)
from .infopro import WEIGHT_KEYS


class MomentumAux(AuxNet):
    def __init__(self, ctx: AuxContext, opts: dict) -> None:
        super().__init__()
        self.ema_source = ctx.next_start
        self.resume_at = ctx.next_start + 1
        self.momentum = opts["momentum"]
        unit = ctx.units[ctx.next_start]
        self.lb = clone_module(unit)
        self.ema = frozen_copy(unit)
        self.scale = nn.Parameter(torch.tensor(1.0)) if opts["learnable_scale"] else None
        shape = ctx.unit_out_shapes[ctx.next_start]
        if opts.get("end", "local") != "local":  # a global end (wiring.attach) replaces the head
            self.end = None
        elif ctx.local_head is not None:  # dense task: its light head on the block's output
            self.end = ctx.local_head(shape, opts["depth"], opts["width"])
        elif opts["head"] == "infopro":
            self.end = InfoProHead(shape, ctx.image_shape, ctx.num_classes, opts["depth"], opts["width"],
                                    ratio=infopro_ratio(ctx.module, ctx.num_modules),
                                    **{k: opts[k] for k in WEIGHT_KEYS})
        else:
            self.end = DGLHead(shape, ctx.num_classes, opts["depth"], opts["width"], opts["pool"])

    def transform(self, feat: Tensor) -> Tensor:
        if self.scale is None:
            return self.lb(feat) + self.ema(feat)
        return self.scale * self.lb(feat) + (2 - self.scale) * self.ema(feat)

    def after_backward(self, source: nn.Module | None) -> None:
        if source is not None:
            ema_update(self.ema, source, self.momentum)


def build(ctx: AuxContext, opts: dict) -> AuxNet:
    return MomentumAux(ctx, opts)
