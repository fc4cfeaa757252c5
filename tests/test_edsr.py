"""Tests of the EDSR backbones: unit layout, shape preservation, residual scaling, registry."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from auxsearch.backbones import BACKBONES, create_units
from auxsearch.backbones.edsr import ResBlock, edsr_units
from auxsearch.errors import ConfigError


def _run(units: list[nn.Module], x: torch.Tensor) -> torch.Tensor:
    for unit in units:
        x = unit(x)
    return x


@pytest.mark.parametrize(("name", "blocks", "width"), [("edsr", 8, 32), ("edsr_baseline", 16, 64)])
def test_registered_defaults(name: str, blocks: int, width: int) -> None:
    assert name in BACKBONES
    units = create_units(name, in_chans=3)
    assert len(units) == 1 + blocks
    head, *body = units
    assert isinstance(head, nn.Conv2d) and (head.in_channels, head.out_channels) == (3, width)
    assert all(isinstance(b, ResBlock) and b.res_scale == 1.0 for b in body)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm)
                   for u in units for m in u.modules())


def test_every_unit_keeps_resolution_and_width() -> None:
    units = create_units("edsr", in_chans=1, args={"blocks": 3, "width": 8})
    x = torch.rand(2, 1, 13, 17)
    for i, unit in enumerate(units):
        x = unit(x)
        assert x.shape == (2, 8, 13, 17), i


def test_res_scale_scales_the_branch_only() -> None:
    torch.manual_seed(0)
    full, scaled = ResBlock(4, 1.0), ResBlock(4, 0.1)
    scaled.load_state_dict(full.state_dict())
    x = torch.randn(1, 4, 6, 6)
    with torch.no_grad():
        branch = full(x) - x
        assert torch.allclose(scaled(x) - x, 0.1 * branch, atol=1e-6)
    units = create_units("edsr_baseline", 3, {"blocks": 2, "width": 8, "res_scale": 0.1})
    assert [u.res_scale for u in units[1:]] == [0.1, 0.1]


def test_forward_backward_finite() -> None:
    torch.manual_seed(0)
    units = edsr_units(3, blocks=2, width=8, res_scale=0.1)
    x = torch.rand(2, 3, 12, 12)
    out = _run(units, x)
    out.square().mean().backward()
    assert torch.isfinite(out).all()
    grads = [p.grad for u in units for p in u.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert units[0].weight.grad.abs().sum() > 0


@pytest.mark.parametrize(("args", "bad"), [
    ({"blocks": 0}, "backbone.args.blocks"),
    ({"width": 2.5}, "backbone.args.width"),
    ({"res_scale": 0}, "backbone.args.res_scale"),
    ({"depth": 3}, "backbone.args"),
])
def test_bad_args_name_the_key(args: dict, bad: str) -> None:
    with pytest.raises(ConfigError) as info:
        create_units("edsr", 3, args)
    assert info.value.key == bad
