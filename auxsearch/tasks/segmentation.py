"""Semantic segmentation: an FPN decoder at the end, light per-pixel classifiers on the way.

The real head (:class:`SegmentationHead`) reads the last unit of each of the backbone's
``levels`` deepest resolutions, builds an FPN on them (torchvision's
``FeaturePyramidNetwork``), sums the levels at the finest resolution (the semantic-FPN
merge of Kirillov et al. 2019), applies a 3x3 conv-BN-ReLU and a 1x1 classifier and
upsamples to the image. An aux net's light head (:class:`LocalSegmentationHead`, as in
MAN++'s segmentation experiments) is ``depth`` 3x3 conv-BN-ReLU of ``width`` channels,
a 1x1 classifier and bilinear upsampling. Loss: per-pixel cross-entropy, label 255
ignored. Metric: mean IoU over classes (torchmetrics' ``MulticlassJaccardIndex``).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import FeaturePyramidNetwork

from auxsearch.tasks.base import FinalHead, LevelTask

IGNORE = 255


def _conv_bn_relu(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]


class SegmentationHead(FinalHead):
    def __init__(self, tap_shapes: Sequence[tuple], num_classes: int, channels: int) -> None:
        super().__init__()
        self.fpn = FeaturePyramidNetwork([s[0] for s in tap_shapes], channels)
        self.classify = nn.Sequential(*_conv_bn_relu(channels, channels), nn.Conv2d(channels, num_classes, 1))

    def forward(self, taps: list[Tensor]) -> Tensor:
        levels = list(self.fpn(OrderedDict((str(i), t) for i, t in enumerate(taps))).values())
        size = levels[0].shape[-2:]
        merged = levels[0]
        for level in levels[1:]:
            merged = merged + F.interpolate(level, size=size, mode="bilinear", align_corners=False)
        return self.classify(merged)

    def loss(self, raw: Tensor, image: Tensor, target: Tensor) -> Tensor:
        return F.cross_entropy(self.predict(raw, image), target, ignore_index=IGNORE)

    def predict(self, raw: Tensor, image: Tensor) -> Tensor:
        return F.interpolate(raw, size=image.shape[-2:], mode="bilinear", align_corners=False)


class LocalSegmentationHead(nn.Module):
    def __init__(self, feature_shape: Sequence[int], num_classes: int, depth: int, width: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(depth):
            layers += _conv_bn_relu(feature_shape[0] if i == 0 else width, width)
        self.body = nn.Sequential(*layers, nn.Conv2d(width, num_classes, 1))

    def loss(self, feat: Tensor, image: Tensor, target: Tensor) -> Tensor:
        logits = F.interpolate(self.body(feat), size=image.shape[-2:], mode="bilinear", align_corners=False)
        return F.cross_entropy(logits, target, ignore_index=IGNORE)


class Segmentation(LevelTask):
    name = "segmentation"

    def load_data(self, cfg: Mapping | None, key: str = "data"):
        from auxsearch.tasks.segmentation_data import load_segmentation_data

        return load_segmentation_data(cfg, key)

    def head(self, design: Mapping, tap_shapes: Sequence[tuple]) -> FinalHead:
        args = self.check_args(design["task"]["args"])
        return SegmentationHead(tap_shapes, design["num_classes"], args["decoder_channels"])

    def local_head(self, design: Mapping, feature_shape: tuple, depth: int, width: int) -> nn.Module:
        return LocalSegmentationHead(feature_shape, design["num_classes"], depth, width)

    def example_batch(self, design: Mapping, batch_size: int, device: torch.device | str = "cpu"):
        c, h, w = design["input_shape"]
        x = torch.rand(batch_size, c, h, w, device=device)
        return x, torch.randint(0, design["num_classes"], (batch_size, h, w), device=device)

    def evaluate(self, model: nn.Module, loader, device: torch.device) -> dict[str, float]:
        from torchmetrics.classification import MulticlassAccuracy, MulticlassJaccardIndex

        classes = model.design["num_classes"]
        iou = MulticlassJaccardIndex(classes, ignore_index=IGNORE, average="macro").to(device)
        acc = MulticlassAccuracy(classes, ignore_index=IGNORE, average="micro").to(device)
        with torch.no_grad():
            for x, mask in loader:
                pred = model(x.to(device, non_blocking=True)).argmax(1)
                mask = mask.to(device, non_blocking=True)
                iou.update(pred, mask)
                acc.update(pred, mask)
        return {"miou": float(iou.compute()), "pixel_accuracy": float(acc.compute())}
