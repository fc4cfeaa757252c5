"""Object detection: an FPN + FCOS head at the end, stride-matched FCOS heads on the way.

The real head (:class:`DetectionHead`) reads the last unit of each of the backbone's
``levels`` deepest resolutions, builds an FPN on them (torchvision's
``FeaturePyramidNetwork``) and trains torchvision's ``FCOSHead`` with FCOS's own target
assignment (centre sampling, scale ranges), focal + GIoU + centreness losses, decoding
and NMS. Taps in earlier modules reach the FPN detached, as in MAN++'s COCO recipe
(the FPN receives C3/C4 detached). An aux net's light head (:class:`LocalDetectionHead`,
MAN++'s auxiliary detection head) is a 1x1 projection to ``width`` channels and an
FCOS head with ``depth`` convs per branch on the module's own stride.

Labels are 1..C; the heads predict C + 1 logits and never train logit 0 (torchvision's
convention, background = no positive class). The metric is COCO mAP@[.5:.95] and
mAP@.5 from torchmetrics (pycocotools backend). A step's target assignment has
data-dependent shapes, so detection designs are measured, not simulated, for memory.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from functools import partial

import torch
from torch import Tensor, nn
from torchvision.models.detection import FCOS
from torchvision.models.detection import _utils as det_utils
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.fcos import FCOSClassificationHead, FCOSHead, FCOSRegressionHead
from torchvision.models.detection.image_list import ImageList
from torchvision.ops import FeaturePyramidNetwork

from auxsearch.tasks.base import FinalHead, LevelTask


def _stride(image_shape: Sequence[int], feature_shape: Sequence[int]) -> int:
    return max(1, round(image_shape[-1] / feature_shape[-1]))


class NarrowFCOSHead(FCOSHead):
    """torchvision's ``FCOSHead`` (its forward and loss) with GroupNorm groups that fit any width.

    torchvision's constructor fixes GroupNorm(32 groups), which needs 32k channels; light
    aux heads are 8 or 16 wide, so this one uses gcd(channels, 32) groups.
    """

    def __init__(self, in_channels: int, num_classes: int, num_convs: int) -> None:
        nn.Module.__init__(self)  # FCOSHead.__init__ would build the GroupNorm(32) layers
        norm = partial(nn.GroupNorm, math.gcd(in_channels, 32))
        self.box_coder = det_utils.BoxLinearCoder(normalize_by_size=True)
        self.classification_head = FCOSClassificationHead(in_channels, 1, num_classes, num_convs, norm_layer=norm)
        self.regression_head = FCOSRegressionHead(in_channels, 1, num_convs, norm_layer=norm)


class FCOSLevels(nn.Module):
    """torchvision's FCOS head with FCOS's target matching and decoding, on given strides.

    ``compute_loss`` and ``postprocess_detections`` are torchvision's ``FCOS`` methods,
    called on this module (it carries every attribute they read), so the assignment
    and decoding rules are exactly torchvision's, not a re-implementation.
    """

    def __init__(self, in_channels: int, num_classes: int, strides: Sequence[int], num_convs: int,
                 score_thresh: float = 0.05, nms_thresh: float = 0.6, detections_per_img: int = 100) -> None:
        super().__init__()
        self.head = NarrowFCOSHead(in_channels, num_classes + 1, num_convs)
        self.anchor_generator = AnchorGenerator(tuple((s,) for s in strides), ((1.0,),) * len(strides))
        self.box_coder = det_utils.BoxLinearCoder(normalize_by_size=True)
        self.center_sampling_radius = 1.5
        self.score_thresh = score_thresh
        self.nms_thresh = nms_thresh
        self.detections_per_img = detections_per_img
        self.topk_candidates = 1000

    def _anchors(self, features: list[Tensor], image: Tensor):
        images = ImageList(image, [tuple(image.shape[-2:])] * image.shape[0])
        return images, self.anchor_generator(images, features), [f.shape[2] * f.shape[3] for f in features]

    def loss(self, features: list[Tensor], image: Tensor, targets: list[dict]) -> Tensor:
        """The head runs under the step's autocast; its loss in fp32, outside it: box regression decodes
        pixel coordinates and their areas (a 256 x 256 px box's area is past fp16's largest number)."""
        outputs = self.head(features)
        _, anchors, per_level = self._anchors(features, image)
        with torch.autocast(image.device.type, enabled=False):
            outputs = {k: v.float() for k, v in outputs.items()}
            losses = FCOS.compute_loss(self, targets, outputs, [a.float() for a in anchors], per_level)
        return sum(losses.values())

    @torch.no_grad()
    def detect(self, features: list[Tensor], image: Tensor) -> list[dict[str, Tensor]]:
        outputs = self.head(features)
        images, anchors, per_level = self._anchors(features, image)
        split = {k: list(v.split(per_level, dim=1)) for k, v in outputs.items()}
        split_anchors = [list(a.split(per_level)) for a in anchors]
        return FCOS.postprocess_detections(self, split, split_anchors, images.image_sizes)


class DetectionHead(FinalHead):
    """FPN on the tapped levels + FCOS: the real detector of the last module."""

    def __init__(self, tap_shapes: Sequence[tuple], image_shape: Sequence[int], num_classes: int,
                 args: Mapping) -> None:
        super().__init__()
        self.fpn = FeaturePyramidNetwork([s[0] for s in tap_shapes], args["fpn_channels"])
        strides = [_stride(image_shape, s) for s in tap_shapes]
        self.fcos = FCOSLevels(args["fpn_channels"], num_classes, strides, args["head_convs"],
                               args["score_thresh"], args["nms_thresh"], args["detections_per_img"])

    def forward(self, taps: list[Tensor]) -> list[Tensor]:
        return list(self.fpn(OrderedDict((str(i), t) for i, t in enumerate(taps))).values())

    def loss(self, raw: list[Tensor], image: Tensor, target: list[dict]) -> Tensor:
        return self.fcos.loss(raw, image, target)

    def predict(self, raw: list[Tensor], image: Tensor) -> list[dict[str, Tensor]]:
        return self.fcos.detect(raw, image)


class LocalDetectionHead(nn.Module):
    """MAN++'s auxiliary detection head: 1x1 projection + a light FCOS head at the module's stride."""

    def __init__(self, feature_shape: Sequence[int], image_shape: Sequence[int], num_classes: int,
                 depth: int, width: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(feature_shape[0], width, 1)
        self.fcos = FCOSLevels(width, num_classes, [_stride(image_shape, feature_shape)], depth)

    def loss(self, feat: Tensor, image: Tensor, target: list[dict]) -> Tensor:
        return self.fcos.loss([self.proj(feat)], image, target)


class Detection(LevelTask):
    name = "detection"

    def load_data(self, cfg: Mapping | None, key: str = "data"):
        from auxsearch.tasks.detection_data import load_detection_data

        return load_detection_data(cfg, key)

    def head(self, design: Mapping, tap_shapes: Sequence[tuple]) -> FinalHead:
        return DetectionHead(tap_shapes, design["input_shape"], design["num_classes"],
                             self.check_args(design["task"]["args"]))

    def local_head(self, design: Mapping, feature_shape: tuple, depth: int, width: int) -> nn.Module:
        return LocalDetectionHead(feature_shape, design["input_shape"], design["num_classes"], depth, width)

    def to_device(self, target: list[dict], device: torch.device) -> list[dict]:
        return [{k: v.to(device, non_blocking=True) for k, v in t.items()} for t in target]

    def example_batch(self, design: Mapping, batch_size: int, device: torch.device | str = "cpu"):
        c, h, w = design["input_shape"]
        x = torch.rand(batch_size, c, h, w, device=device)
        targets = []
        for _ in range(batch_size):
            xy = torch.rand(3, 2, device=device) * torch.tensor([w * 0.6, h * 0.6], device=device)
            wh = (0.15 + 0.25 * torch.rand(3, 2, device=device)) * torch.tensor([w, h], device=device)
            targets.append({"boxes": torch.cat([xy, xy + wh], 1),
                            "labels": torch.randint(1, design["num_classes"] + 1, (3,), device=device)})
        return x, targets

    def evaluate(self, model: nn.Module, loader, device: torch.device) -> dict[str, float]:
        from torchmetrics.detection import MeanAveragePrecision

        metric = MeanAveragePrecision(iou_type="bbox", backend="pycocotools")
        with torch.no_grad():
            for x, targets in loader:
                preds = model(x.to(device, non_blocking=True))
                metric.update([{k: v.cpu() for k, v in p.items()} for p in preds],
                              [{k: v.cpu() for k, v in t.items()} for t in targets])
        scores = metric.compute()
        return {"map": float(scores["map"]), "map_50": float(scores["map_50"])}
