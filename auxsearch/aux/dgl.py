"""``dgl``: DGL's conv + MLP head on the module's output (Belilovsky et al. 2020)."""

from __future__ import annotations

from torch import Tensor

from .base import AuxContext, AuxNet, DGLHead


class DGLAux(AuxNet):
    def __init__(self, ctx: AuxContext, depth: int, width: int, pool: int) -> None:
        super().__init__()
        self.head = DGLHead(ctx.feature_shape, ctx.num_classes, depth, width, pool)

    def forward(self, feat: Tensor, image: Tensor, target: Tensor) -> Tensor:
        return self.head.loss(feat, image, target)


def build(ctx: AuxContext, opts: dict) -> AuxNet:
    return DGLAux(ctx, opts["depth"], opts["width"], opts["pool"])
