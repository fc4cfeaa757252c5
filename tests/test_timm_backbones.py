"""timm ResNet / ConvNeXt backbones: unit counts, exactness, errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from auxsearch.backbones import create_units
from auxsearch.backbones.timm_models import timm_units
from auxsearch.errors import ConfigError


def _chain(units: list[nn.Module], x: torch.Tensor) -> torch.Tensor:
    for unit in units:
        x = unit(x)
    return x


@pytest.mark.parametrize(
    ("name", "count"),
    [("timm:resnet18", 9), ("timm:resnet50", 17), ("timm:convnext_atto", 13)],
)
def test_unit_counts(name: str, count: int) -> None:
    assert len(create_units(name, in_chans=3)) == count


@pytest.mark.parametrize(
    ("model_name", "kwargs"),
    [("resnet18", {}), ("convnext_atto", {}), ("convnext_atto", {"head_norm_first": True})],
)
def test_units_reproduce_forward_features(model_name: str, kwargs: dict) -> None:
    import timm

    # Same seed before both constructions -> identical random weights.
    torch.manual_seed(0)
    model = timm.create_model(model_name, pretrained=False, num_classes=0, **kwargs).eval()
    torch.manual_seed(0)
    units = [unit.eval() for unit in timm_units(model_name, **kwargs)]
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = model.forward_features(x)
        got = _chain(units, x)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected)


def test_in_chans_one() -> None:
    units = create_units("timm:resnet18", in_chans=1)
    with torch.no_grad():
        out = _chain([u.eval() for u in units], torch.randn(1, 1, 32, 32))
    assert out.shape == (1, 512, 1, 1)


def test_unknown_model_suggests_close_match() -> None:
    with pytest.raises(ConfigError, match="resnet18") as info:
        create_units("timm:resnt18", in_chans=3)
    assert info.value.key == "backbone.name"


def test_unsupported_family() -> None:
    with pytest.raises(ConfigError, match="ResNet") as info:
        create_units("timm:vit_tiny_patch16_224", in_chans=3)
    assert info.value.key == "backbone.name"


def test_bad_kwargs_become_config_error() -> None:
    with pytest.raises(ConfigError) as info:
        create_units("timm:resnet18", in_chans=3, args={"no_such_arg": 1})
    assert info.value.key == "backbone.args"
