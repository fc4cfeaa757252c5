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

from auxsearch.aux.base import AuxContext, AuxNet, clone_module, ema_update, frozen_copy, local_end
from auxsearch.design.families import family


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
        # The head behind the block: the family ``head`` names builds it (its own options apply).
        self.end = local_end(ctx, opts, shape, lambda: family(opts["head"]).head(ctx, opts, shape))

    def transform(self, feat: Tensor) -> Tensor:
        if self.scale is None:
            return self.lb(feat) + self.ema(feat)
        return self.scale * self.lb(feat) + (2 - self.scale) * self.ema(feat)

    def after_backward(self, source: nn.Module | None) -> None:
        if source is not None:
            ema_update(self.ema, source, self.momentum)


def build(ctx: AuxContext, opts: dict) -> AuxNet:
    return MomentumAux(ctx, opts)
