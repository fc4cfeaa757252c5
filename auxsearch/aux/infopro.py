"""``infopro``: reconstruction decoder + classifier, lambdas interpolated over modules."""

from __future__ import annotations

from .base import AuxContext, AuxNet, InfoProHead, infopro_ratio

WEIGHT_KEYS = ("recon_first", "recon_last", "task_first", "task_last", "decoder_width")


class InfoProAux(AuxNet):
    def __init__(self, ctx: AuxContext, opts: dict) -> None:
        super().__init__()
        self.resume_at = ctx.next_start
        self.end = InfoProHead(ctx.feature_shape, ctx.image_shape, ctx.num_classes, opts["depth"],
                               opts["width"], ratio=infopro_ratio(ctx.module, ctx.num_modules),
                               **{k: opts[k] for k in WEIGHT_KEYS})


def build(ctx: AuxContext, opts: dict) -> AuxNet:
    return InfoProAux(ctx, opts)
