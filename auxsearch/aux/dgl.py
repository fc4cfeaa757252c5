"""``dgl``: DGL's conv + MLP head on the module's output (Belilovsky et al. 2020).

On a dense task the head is the task's light head of the same ``depth`` and ``width``
(a stride-matched detection head, a reconstruction head, a per-pixel classifier).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from auxsearch.aux.base import AuxContext, AuxNet, HeadAux, conv_bn_relu


class DGLHead(nn.Module):
    """DGL's "MLP-SR" auxiliary classifier (Belilovsky et al. 2020).

    Average-pool the feature map to at most ``pool`` x ``pool`` (keeps the
    head cheap on early high-resolution modules), ``depth`` 1x1
    conv-BN-ReLU layers of ``width`` channels, pool to 2x2, a 3-layer MLP.
    """

    def __init__(self, feature_shape, num_classes: int, depth: int, width: int, pool: int = 8) -> None:
        super().__init__()
        c, h, w = feature_shape
        layers: list[nn.Module] = [nn.AdaptiveAvgPool2d((min(h, pool), min(w, pool)))]
        for i in range(depth):
            layers += conv_bn_relu(c if i == 0 else width, width)
        self.features = nn.Sequential(*layers)
        self.mlp = nn.Sequential(
            nn.AdaptiveAvgPool2d(2), nn.Flatten(),
            nn.Linear(4 * width, width), nn.ReLU(inplace=True),
            nn.Linear(width, width), nn.ReLU(inplace=True),
            nn.Linear(width, num_classes),
        )

    def forward(self, feat: Tensor) -> Tensor:
        return self.mlp(self.features(feat))

    def loss(self, feat: Tensor, image: Tensor, target: Tensor) -> Tensor:
        return F.cross_entropy(self(feat), target)


def classifier(ctx: AuxContext, opts: dict, shape: tuple) -> nn.Module:
    """DGL's head on features of ``shape`` (also behind the momentum family's block)."""
    return DGLHead(shape, ctx.num_classes, opts["depth"], opts["width"], opts["pool"])


def build(ctx: AuxContext, opts: dict) -> AuxNet:
    return HeadAux(ctx, opts, classifier)
