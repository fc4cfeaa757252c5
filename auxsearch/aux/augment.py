"""``augment``: AugLocal (Ma et al. ICLR'24).

The aux net of module k is made of *fresh* layers (same architecture, new
initial weights, nothing shared) of units sampled uniformly from the units
after module k, followed by global pooling and a linear classifier. Its
depth follows AugLocal's pyramid, so later modules get shallower aux nets:

    d_l = max(1, round(d * (1 - l * tau / (K - 2)) + l * tau / (K - 2)))

with d the design's ``depth``, l = k the module index and tau in [0, 1].
"Uniformly" is read as evenly spaced over the later units (first and last
included), which is deterministic. Where a sampled unit expects other
input channels than the running feature has, a 1x1 conv-BN-ReLU adapter
is inserted: a choice of ours, so any backbone's units can be sampled.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from .base import AuxContext, AuxNet, clone_module, conv_bn_relu, reset_parameters


def pyramid_depth(depth: int, module: int, num_modules: int, tau: float) -> int:
    r = module * tau / (num_modules - 2) if num_modules > 2 else 0.0
    return max(1, round(depth * (1 - r) + r))


def sample_units(later: list[int], d: int) -> list[int]:
    """``d`` indices evenly spaced over ``later`` (first and last included)."""
    d = min(d, len(later))
    if d == 1:
        return [later[0]]
    return [later[round(i * (len(later) - 1) / (d - 1))] for i in range(d)]


class AugmentAux(AuxNet):
    def __init__(self, ctx: AuxContext, depth: int, tau: float) -> None:
        super().__init__()
        later = list(range(ctx.next_start, len(ctx.units)))
        self.depth = pyramid_depth(depth, ctx.module, ctx.num_modules, tau)
        self.sampled = sample_units(later, self.depth)
        layers: list[nn.Module] = []
        c = ctx.feature_shape[0]
        for j in self.sampled:
            need = ctx.unit_in_shapes[j][0]
            if need != c:
                layers += conv_bn_relu(c, need)
            layers.append(reset_parameters(clone_module(ctx.units[j])))
            c = ctx.unit_out_shapes[j][0]
        self.body = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, ctx.num_classes))

    def forward(self, feat: Tensor, image: Tensor, target: Tensor) -> Tensor:
        return F.cross_entropy(self.classifier(self.body(feat)), target)


def build(ctx: AuxContext, opts: dict) -> AuxNet:
    return AugmentAux(ctx, opts["depth"], opts["tau"])
