"""``dgl``: DGL's conv + MLP head on the module's output (Belilovsky et al. 2020).

On a dense task the head is the task's light head of the same ``depth`` and ``width``
(a stride-matched detection head, a reconstruction head, a per-pixel classifier).
"""

from __future__ import annotations

from .base import AuxContext, AuxNet, DGLHead


class DGLAux(AuxNet):
    def __init__(self, ctx: AuxContext, opts: dict) -> None:
        super().__init__()
        self.resume_at = ctx.next_start
        if opts.get("end", "local") != "local":  # a global end (wiring.attach) replaces the head
            self.end = None
        elif ctx.local_head is not None:
            self.end = ctx.local_head(ctx.feature_shape, opts["depth"], opts["width"])
        else:
            self.end = DGLHead(ctx.feature_shape, ctx.num_classes, opts["depth"], opts["width"], opts["pool"])


def build(ctx: AuxContext, opts: dict) -> AuxNet:
    return DGLAux(ctx, opts)
