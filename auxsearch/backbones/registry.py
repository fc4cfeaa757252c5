"""The backbone registry: the name a design file gives -> a factory of the backbone's units.

Filled by explicit imports in ``auxsearch/backbones/__init__.py`` (each backbone module calls
:func:`register` for its names).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

BackboneFactory = Callable[..., list[nn.Module]]
BACKBONES: dict[str, BackboneFactory] = {}


def register(name: str):
    """Decorator: add a backbone factory to :data:`BACKBONES` under ``name``."""

    def wrap(fn: BackboneFactory) -> BackboneFactory:
        if name in BACKBONES:
            raise ValueError(f"backbone {name!r} registered twice")
        BACKBONES[name] = fn
        return fn

    return wrap
