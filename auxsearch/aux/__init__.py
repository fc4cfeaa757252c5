"""Registry of auxiliary-network families, keyed by the YAML ``family`` name.

Each family is one module with a ``build(ctx, opts) -> AuxNet`` function;
its options (and their defaults) are declared as data in
``auxsearch.families`` so designs can be validated without torch models.
"""

from __future__ import annotations

from collections.abc import Callable

from ..errors import ConfigError, known
from . import augment, dgl, infopro, momentum, wiring
from .base import AuxContext, AuxNet, StepState

AUX: dict[str, Callable[[AuxContext, dict], AuxNet]] = {
    "dgl": dgl.build,
    "infopro": infopro.build,
    "augment": augment.build,
    "momentum": momentum.build,
}


def build_aux(ctx: AuxContext, opts: dict) -> AuxNet:
    """Build the aux net described by a normalised aux entry ``opts``."""
    family = opts["family"]
    if family not in AUX:
        raise ConfigError(f"aux.{ctx.module}.family", f"unknown aux family {family!r}; known: {known(AUX)}")
    return wiring.attach(AUX[family](ctx, opts), ctx, opts)


__all__ = ["AUX", "AuxContext", "AuxNet", "StepState", "build_aux"]
