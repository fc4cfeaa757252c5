"""CIFAR ResNets of He et al. (2016), section 4.2.

A 3x3 stem with 16 channels, then 3 stages of ``n`` basic blocks with 16, 32
and 64 channels (stride 2 at the start of stages 2 and 3), so depth is
``6n + 2``: resnet20 (n=3), 32 (5), 56 (9), 110 (18). Shortcuts that change
shape use a 1x1 conv + BN ("option B"), as InfoPro's code does.

Units: the stem, then every basic block, so resnet110 has 1 + 54 = 55 units.
"""

from __future__ import annotations

from torch import Tensor, nn

from auxsearch.backbones.registry import register


class Stem(nn.Sequential):
    def __init__(self, in_chans: int, width: int) -> None:
        super().__init__(
            nn.Conv2d(in_chans, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
        )


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes),
            )

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


def cifar_resnet_units(
    in_chans: int, blocks: int, width: int = 16, widths: tuple[int, ...] | None = None
) -> list[nn.Module]:
    """Units of a CIFAR ResNet with ``blocks`` basic blocks per stage."""
    widths = tuple(widths) if widths else (width, 2 * width, 4 * width)
    units: list[nn.Module] = [Stem(in_chans, widths[0])]
    in_planes = widths[0]
    for stage, planes in enumerate(widths):
        for b in range(blocks):
            stride = 2 if stage > 0 and b == 0 else 1
            units.append(BasicBlock(in_planes, planes, stride))
            in_planes = planes
    return units


def _make(blocks: int):
    def factory(in_chans: int = 3, width: int = 16) -> list[nn.Module]:
        return cifar_resnet_units(in_chans, blocks, width)

    return factory


for _depth in (8, 14, 20, 32, 44, 56, 110):
    register(f"resnet{_depth}")(_make((_depth - 2) // 6))
