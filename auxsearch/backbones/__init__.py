"""Backbones: a network as an ordered list of *units*.

A backbone factory takes ``in_chans`` (channels of the input image) and its
own keyword arguments and returns a list of ``nn.Module`` units such that
unit ``i`` consumes the output of unit ``i - 1``. Split points of a design
are indices into that list. The task head (pooling + classifier) is *not*
part of the backbone: the task adds it after the last unit.

The registry (`registry.BACKBONES`) is filled by the explicit imports below,
keyed by the name used in YAML files.
"""

from __future__ import annotations

from torch import nn

from auxsearch.backbones import cifar_resnet as _cifar_resnet  # noqa: F401  (fills the registry)
from auxsearch.backbones import edsr as _edsr  # noqa: F401
from auxsearch.backbones.registry import BACKBONES, BackboneFactory, register
from auxsearch.backbones.timm_models import timm_units
from auxsearch.errors import ConfigError, known


def create_units(name: str, in_chans: int, args: dict | None = None) -> list[nn.Module]:
    """Instantiate the units of backbone ``name`` (``pretrained=False`` always)."""
    if name.startswith("python:"):
        factory = _python_hook(name[len("python:"):])
    elif name.startswith("timm:"):
        factory = lambda **kw: timm_units(name[len("timm:"):], **kw)  # noqa: E731
    elif name in BACKBONES:
        factory = BACKBONES[name]
    else:
        raise ConfigError(
            "backbone.name",
            f"unknown backbone {name!r}; known: {known(BACKBONES)}, "
            "or 'timm:<model>' for timm ResNet / ConvNeXt models",
        )
    try:
        units = factory(in_chans=in_chans, **(args or {}))
    except TypeError as exc:  # an unknown or missing keyword argument
        raise ConfigError("backbone.args", f"bad arguments for backbone {name!r}: {exc}") from exc
    return list(units)


def _python_hook(target: str) -> BackboneFactory:
    """``backbone: {python: "package.module:function"}``: the one documented way a config runs user code.

    The function is called as ``function(in_chans=..., **args)`` and must
    return the list of units. It is imported, never evaluated from text.
    """
    import importlib

    module, _, attr = target.partition(":")
    if not module or not attr:
        raise ConfigError("backbone.python", f"must look like 'package.module:function', got {target!r}")
    try:
        fn = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError("backbone.python", f"cannot import {target!r}: {exc}") from None
    return fn


__all__ = ["BACKBONES", "BackboneFactory", "create_units", "register"]
