"""``augment``: AugLocal (Ma et al. ICLR'24).

The aux net of module k is made of *fresh* layers (same architecture, new
initial weights, nothing shared) of units sampled uniformly from the units
after module k, followed by global average pooling and a linear classifier. Its
depth follows AugLocal's pyramid, so later modules get shallower aux nets:

    d_l = max(1, round(d * (1 - l * tau / (K - 2)) + l * tau / (K - 2)))

with d the design's ``depth``, l = k the module index and tau in [0, 1].
"Uniformly" is read as evenly spaced over the later units (first and last
included), which is deterministic. Where a sampled unit expects another
input than the running feature (units between them were skipped), an
adapter stands in for them: average pooling for a skipped downsampling, a
1x1 conv-BN-ReLU for a channel change. The adapter is our choice, so any
backbone's units can be sampled at the resolution they have in it.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from auxsearch.aux.base import (
    AuxContext,
    AuxNet,
    clone_module,
    conv_bn_relu,
    local_end,
    reset_parameters,
)


def adapter(have: tuple, need: tuple) -> list[nn.Module]:
    """Layers that turn a (C, H, W) feature into the input a sampled unit expects.

    A skipped downsampling unit is stood in for by average pooling, so a
    sampled unit runs at the resolution it has in the backbone (not at the
    early module's higher one, which would cost more memory than the
    backbone itself); a channel change by a 1x1 conv-BN-ReLU.
    """
    layers: list[nn.Module] = []
    if len(have) == 3 and len(need) == 3 and have[1] > need[1] and have[1] % need[1] == 0:
        layers.append(nn.AvgPool2d(have[1] // need[1]))
    if have[0] != need[0]:
        layers += conv_bn_relu(have[0], need[0])
    return layers


def pyramid_depth(depth: int, module: int, num_modules: int, tau: float) -> int:
    r = module * tau / (num_modules - 2) if num_modules > 2 else 0.0
    return max(1, round(depth * (1 - r) + r))


def sample_units(later: list[int], d: int) -> list[int]:
    """``d`` indices evenly spaced over ``later`` (first and last included)."""
    d = min(d, len(later))
    if d == 1:
        return [later[0]]
    return [later[round(i * (len(later) - 1) / (d - 1))] for i in range(d)]


class LinearClassifier(nn.Module):
    """Global average pooling + linear: AugLocal's classifier after the sampled layers."""

    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__()
        self.fc = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes))

    def forward(self, feat: Tensor) -> Tensor:
        return self.fc(feat)

    def loss(self, feat: Tensor, image: Tensor, target: Tensor) -> Tensor:
        return F.cross_entropy(self(feat), target)


class AugmentAux(AuxNet):
    def __init__(self, ctx: AuxContext, opts: dict) -> None:
        super().__init__()
        later = list(range(ctx.next_start, len(ctx.units)))
        self.depth = pyramid_depth(opts["depth"], ctx.module, ctx.num_modules, opts["tau"])
        self.sampled = sample_units(later, self.depth)
        layers: list[nn.Module] = []
        shape = tuple(ctx.feature_shape)
        for j in self.sampled:
            layers += adapter(shape, tuple(ctx.unit_in_shapes[j]))
            layers.append(reset_parameters(clone_module(ctx.units[j])))
            shape = tuple(ctx.unit_out_shapes[j])
        self.body = nn.Sequential(*layers)
        # A dense task's light head (depth 1: the sampled layers are the depth) or AugLocal's classifier.
        self.end = local_end(ctx, opts, shape, lambda: LinearClassifier(shape[0], ctx.num_classes), depth=1)

    def transform(self, feat: Tensor) -> Tensor:
        return self.body(feat)


def build(ctx: AuxContext, opts: dict) -> AuxNet:
    return AugmentAux(ctx, opts)
