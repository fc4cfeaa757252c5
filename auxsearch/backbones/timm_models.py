"""timm ResNet and ConvNeXt models as lists of units (``timm:<model>`` names).

The model is built with ``pretrained=False`` and ``num_classes=0``, then cut
into units whose plain chaining ``x = unit(x)`` equals ``forward_features``:

* ResNet (resnet18/34/50, ...d variants): unit 0 is the stem
  (``conv1, bn1, act1, maxpool``), then one unit per residual block of
  ``layer1..layer4``; resnet18 has 1 + 8 = 9 units, resnet50 1 + 16 = 17.
* ConvNeXt: unit 0 is the stem, then per stage one unit for the stage's
  downsample followed by its first block (so every stage starts a unit at
  its new resolution) and one unit per remaining block; convnext_atto has
  1 + 2 + 2 + 6 + 2 = 13 units.

Blocks are the natural split points: an auxiliary head can sit after any of
them, and the stem is too shallow to be split further.

ConvNeXt norms: ``norm_pre`` is a final norm that ``forward_features``
applies *after the last stage* (a LayerNorm2d only with
``head_norm_first=True``, otherwise Identity). When it is not Identity it is
appended to the last unit, so the units still equal ``forward_features``
and features stay NCHW. The default head norm (LayerNorm2d inside
``NormMlpClassifierHead``, applied after global pooling) is outside
``forward_features`` and is dropped: the task head does pooling + linear.

``timm`` is imported lazily because importing it takes seconds.
"""

from __future__ import annotations

import difflib

from torch import nn

from auxsearch.errors import ConfigError

SUPPORTED = "timm ResNet (e.g. resnet18, resnet50) and ConvNeXt (e.g. convnext_atto)"


def timm_units(model_name: str, in_chans: int = 3, **kwargs) -> list[nn.Module]:
    """Build timm model ``model_name`` (no weights) and split it into units."""
    model = _create(model_name, in_chans, kwargs)
    from timm.models.convnext import ConvNeXt
    from timm.models.resnet import ResNet

    if isinstance(model, ResNet):
        return _resnet_units(model)
    if isinstance(model, ConvNeXt):
        return _convnext_units(model)
    raise ConfigError(
        "backbone.name",
        f"timm model {model_name!r} is a {type(model).__name__}; "
        f"only {SUPPORTED} families are supported",
    )


def _create(model_name: str, in_chans: int, kwargs: dict) -> nn.Module:
    """``timm.create_model`` without weights; unknown names become ConfigError."""
    import timm

    if not timm.is_model(model_name):
        close = difflib.get_close_matches(model_name, timm.list_models(), n=5, cutoff=0.6)
        hint = f"close matches: {', '.join(close)}" if close else f"supported: {SUPPORTED}"
        raise ConfigError("backbone.name", f"unknown timm model {model_name!r}; {hint}")
    # TypeError from bad kwargs propagates: create_units turns it into ConfigError.
    return timm.create_model(
        model_name, pretrained=False, in_chans=in_chans, num_classes=0, **kwargs
    )


def _resnet_units(model: nn.Module) -> list[nn.Module]:
    """Stem, then every block of ``layer1..layer4``."""
    stem = nn.Sequential(model.conv1, model.bn1, model.act1, model.maxpool)
    blocks = [
        block for name in ("layer1", "layer2", "layer3", "layer4") for block in getattr(model, name)
    ]
    return [stem, *blocks]


def _convnext_units(model: nn.Module) -> list[nn.Module]:
    """Stem, then (downsample + first block) and remaining blocks per stage."""
    units: list[nn.Module] = [model.stem]
    for stage in model.stages:
        blocks = list(stage.blocks)
        head = [m for m in (stage.downsample,) if not isinstance(m, nn.Identity)]
        head += blocks[:1]
        if head:
            units.append(head[0] if len(head) == 1 else nn.Sequential(*head))
        units += blocks[1:]
    if not isinstance(model.norm_pre, nn.Identity):  # head_norm_first=True
        units[-1] = nn.Sequential(units[-1], model.norm_pre)
    return units
