"""Single-image super-resolution: EDSR's tail at the end, light reconstruction heads on the way.

The backbone is an EDSR-style body (``edsr``: a head conv, then residual blocks, each a
unit). The real head (:class:`SuperResolutionHead`) is EDSR's tail: the body-end 3x3
conv, the global residual (the first unit's output added back; detached when it lives
in an earlier module), the upsampler (conv + pixel shuffle, twice for x4) and the last
conv to RGB, then the data mean added back. An aux net's light head
(:class:`LocalReconstructionHead`) is ``depth`` conv3x3-ReLU of ``width`` channels, a conv
to 3 s^2 channels and a pixel shuffle. Every module trains with L1 to the high-
resolution target (EDSR's loss). Metric: PSNR (and SSIM) on the Y channel with
``scale`` pixels cropped at each border, the usual protocol (``sr_metrics``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from auxsearch.errors import ConfigError
from auxsearch.tasks.base import FinalHead, OutputShift, Task

SCALES = (2, 3, 4)


def upsampler(channels: int, scale: int) -> list[nn.Module]:
    """EDSR's upsampler: conv + pixel shuffle per factor 2 (twice for x4), or one x3."""
    steps = [2, 2] if scale == 4 else [scale]
    layers: list[nn.Module] = []
    for s in steps:
        layers += [nn.Conv2d(channels, channels * s * s, 3, padding=1), nn.PixelShuffle(s)]
    return layers


class SuperResolutionHead(FinalHead):
    def __init__(self, tap_shapes: Sequence[tuple], scale: int, out_chans: int) -> None:
        super().__init__()
        c = tap_shapes[-1][0]
        if tap_shapes[0][0] != c:
            raise ConfigError("backbone", f"the global residual adds the first unit's {tap_shapes[0][0]} "
                              f"channels to the last unit's {c}: an EDSR-style body keeps one width")
        self.body_end = nn.Conv2d(c, c, 3, padding=1)
        self.tail = nn.Sequential(*upsampler(c, scale), nn.Conv2d(c, out_chans, 3, padding=1),
                                  OutputShift(out_chans))

    def forward(self, taps: list[Tensor]) -> Tensor:
        return self.tail(self.body_end(taps[-1]) + taps[0])

    def loss(self, raw: Tensor, image: Tensor, target: Tensor) -> Tensor:
        return F.l1_loss(raw, target)


class LocalReconstructionHead(nn.Module):
    def __init__(self, feature_shape: Sequence[int], scale: int, out_chans: int, depth: int, width: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(depth):
            layers += [nn.Conv2d(feature_shape[0] if i == 0 else width, width, 3, padding=1), nn.ReLU(inplace=True)]
        layers += [nn.Conv2d(width, out_chans * scale * scale, 3, padding=1), nn.PixelShuffle(scale),
                   OutputShift(out_chans)]
        self.body = nn.Sequential(*layers)

    def loss(self, feat: Tensor, image: Tensor, target: Tensor) -> Tensor:
        return F.l1_loss(self.body(feat), target)


class SuperResolution(Task):
    name = "superres"

    def check_args(self, args: Mapping) -> dict:
        a = super().check_args(args)
        if a["scale"] not in SCALES or isinstance(a["scale"], bool):
            raise ConfigError("task.args.scale", f"must be one of 2, 3, 4, got {a['scale']!r}")
        return a

    def _scale(self, design: Mapping) -> int:
        return self.check_args(design["task"]["args"])["scale"]

    def load_data(self, cfg: Mapping | None, key: str = "data"):
        from auxsearch.tasks.superres_data import load_superres_data

        return load_superres_data(cfg, key)

    def check_data(self, design: Mapping, data) -> None:
        super().check_data(design, data)
        if data.scale != self._scale(design):
            raise ConfigError("task.args.scale", f"the design upsamples x{self._scale(design)}, "
                              f"the data set is x{data.scale}")

    def taps(self, design: Mapping, unit_out_shapes: Sequence[tuple]) -> list[int]:
        return [0, len(unit_out_shapes) - 1]

    def head(self, design: Mapping, tap_shapes: Sequence[tuple]) -> FinalHead:
        return SuperResolutionHead(tap_shapes, self._scale(design), design["input_shape"][0])

    def local_head(self, design: Mapping, feature_shape: tuple, depth: int, width: int) -> nn.Module:
        return LocalReconstructionHead(feature_shape, self._scale(design), design["input_shape"][0], depth, width)

    def example_batch(self, design: Mapping, batch_size: int, device: torch.device | str = "cpu"):
        c, h, w = design["input_shape"]
        s = self._scale(design)
        return (torch.rand(batch_size, c, h, w, device=device),
                torch.rand(batch_size, c, h * s, w * s, device=device))

    def evaluate(self, model: nn.Module, loader, device: torch.device) -> dict[str, float]:
        from auxsearch.tasks.sr_metrics import psnr_y, ssim_y

        s = self._scale(model.design)
        psnr, ssim = [], []
        with torch.no_grad():
            for lr, hr in loader:
                sr = model(lr.to(device, non_blocking=True)).clamp(0, 1)
                hr = hr.to(device, non_blocking=True)
                psnr.append(psnr_y(sr, hr, s).cpu())
                ssim.append(ssim_y(sr, hr, s).cpu())
        return {"psnr": float(torch.cat(psnr).mean()), "ssim": float(torch.cat(ssim).mean())}
