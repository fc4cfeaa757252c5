"""``infopro``: reconstruction decoder + classifier, lambdas interpolated over modules."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from auxsearch.aux.base import AuxContext, AuxNet, HeadAux, conv_bn_relu
from auxsearch.design.families import family


def infopro_ratio(module: int, num_modules: int) -> float:
    """InfoPro's position of module k among the K - 1 aux nets, in [0, 1]."""
    return module / (num_modules - 2) if num_modules > 2 else 0.0


class InfoProHead(nn.Module):
    """InfoPro's aux net (Wang et al. ICLR'21): a decoder plus a classifier.

    Decoder: upsample to the image size, conv3x3 C -> ``decoder_width``,
    BN, ReLU, conv3x3 -> image channels, sigmoid; BCE to the un-normalised
    image (the reconstruction term, an estimate of I(h; x)). The sigmoid and the BCE are one
    ``binary_cross_entropy_with_logits`` (the same value in fp32): CUDA's autocast refuses a plain
    BCE after a sigmoid (unsafe in half precision) and runs the fused one in fp32. Classifier:
    ``depth`` conv3x3-BN-ReLU (the first with stride 2) of ``width``
    channels, global average pooling, FC 128, FC classes (the I(h; y) term).
    The two are weighted by lambdas interpolated linearly over the modules.
    """

    def __init__(self, feature_shape, image_shape, num_classes: int, depth: int, width: int, *,
                 ratio: float, recon_first: float, recon_last: float, task_first: float,
                 task_last: float, decoder_width: int) -> None:
        super().__init__()
        c = feature_shape[0]
        self.image_size = tuple(image_shape[1:])
        self.decoder = nn.Sequential(
            nn.Conv2d(c, decoder_width, 3, padding=1, bias=False), nn.BatchNorm2d(decoder_width),
            nn.ReLU(inplace=True), nn.Conv2d(decoder_width, image_shape[0], 3, padding=1))  # logits
        layers: list[nn.Module] = []
        for i in range(depth):
            layers += conv_bn_relu(c if i == 0 else width, width, 3, stride=2 if i == 0 else 1)
        self.classifier = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                        nn.Linear(width, 128), nn.ReLU(inplace=True), nn.Linear(128, num_classes))
        self.recon_weight = recon_first * (1 - ratio) + recon_last * ratio
        self.task_weight = task_first * (1 - ratio) + task_last * ratio

    def forward(self, feat: Tensor) -> Tensor:
        return self.classifier(feat)

    def loss(self, feat: Tensor, image: Tensor, target: Tensor) -> Tensor:
        up = F.interpolate(feat, size=self.image_size, mode="bilinear", align_corners=False)
        recon_loss = F.binary_cross_entropy_with_logits(self.decoder(up), image)
        task_loss = F.cross_entropy(self.classifier(feat), target)
        return self.recon_weight * recon_loss + self.task_weight * task_loss


def classifier(ctx: AuxContext, opts: dict, shape: tuple) -> nn.Module:
    """InfoPro's head on features of ``shape`` (also behind the momentum family's block).

    Its weights are the infopro family's own options, read by name from its spec.
    """
    weights = {o.name: opts[o.name] for o in family("infopro").options}
    return InfoProHead(shape, ctx.image_shape, ctx.num_classes, opts["depth"], opts["width"],
                       ratio=infopro_ratio(ctx.module, ctx.num_modules), **weights)


def build(ctx: AuxContext, opts: dict) -> AuxNet:
    return HeadAux(ctx, opts, classifier)
