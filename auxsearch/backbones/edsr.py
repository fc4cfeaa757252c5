"""EDSR bodies of Lim et al. (2017), "Enhanced Deep Residual Networks for Single Image
Super-Resolution" (CVPR workshops).

EDSR drops BatchNorm from the SRResNet block (BN removes the range flexibility an image-to-image
net needs and costs memory) and keeps conv3x3-ReLU-conv3x3 with an identity shortcut. Its big
model multiplies the residual branch by ``res_scale = 0.1`` so that training 256-wide blocks stays
stable; the baseline (16 blocks, width 64) uses 1.0.

Units: the head conv (``in_chans -> width``), then every residual block, so ``edsr_baseline`` has
1 + 16 = 17 units. Every unit keeps the input resolution and, after the head, the width. The
body-end conv, the global (long) skip and the upsampler are *not* units: the super-resolution
task head adds them after the last unit. The mean shift of EDSR (``sub_mean``) is the data's
``(x - mean) / std`` normalisation, which the model applies before the first unit.
"""

from __future__ import annotations

from torch import Tensor, nn

from auxsearch.backbones.registry import register
from auxsearch.errors import ConfigError


def _conv3x3(in_chans: int, out_chans: int) -> nn.Conv2d:
    return nn.Conv2d(in_chans, out_chans, 3, padding=1, bias=True)  # EDSR keeps the biases


class ResBlock(nn.Module):
    """conv3x3-ReLU-conv3x3, scaled by ``res_scale``, plus the identity; no BatchNorm."""

    def __init__(self, width: int, res_scale: float = 1.0) -> None:
        super().__init__()
        self.body = nn.Sequential(_conv3x3(width, width), nn.ReLU(inplace=True),
                                  _conv3x3(width, width))
        self.res_scale = res_scale

    def forward(self, x: Tensor) -> Tensor:
        out = self.body(x)
        if self.res_scale != 1.0:
            out = out * self.res_scale
        return out + x


def _check(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"backbone.args.{name}", f"must be an integer >= {minimum}, "
                          f"got {value!r}")
    return value


def edsr_units(in_chans: int, blocks: int, width: int, res_scale: float = 1.0) -> list[nn.Module]:
    """Head conv plus ``blocks`` residual blocks of ``width`` channels, all at input size."""
    _check("blocks", blocks, 1)
    _check("width", width, 1)
    if isinstance(res_scale, bool) or not isinstance(res_scale, (int, float)) or res_scale <= 0:
        raise ConfigError("backbone.args.res_scale", f"must be a positive number, "
                          f"got {res_scale!r}")
    units: list[nn.Module] = [_conv3x3(in_chans, width)]
    units.extend(ResBlock(width, float(res_scale)) for _ in range(blocks))
    return units


@register("edsr")
def edsr(in_chans: int = 3, blocks: int = 8, width: int = 32,
         res_scale: float = 1.0) -> list[nn.Module]:
    """A small EDSR body (8 blocks, width 32) that trains in minutes, for searches."""
    return edsr_units(in_chans, blocks, width, res_scale)


@register("edsr_baseline")
def edsr_baseline(in_chans: int = 3, blocks: int = 16, width: int = 64,
                  res_scale: float = 1.0) -> list[nn.Module]:
    """The paper's baseline body: 16 blocks, width 64, no residual scaling."""
    return edsr_units(in_chans, blocks, width, res_scale)
