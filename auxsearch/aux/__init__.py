"""Aux nets, built by family: the ``family`` name of an aux entry picks its builder.

Each family is one module with a ``build(ctx, opts) -> AuxNet`` function; its options,
rules and defaults are declared in ``auxsearch.design.families`` (torch-free), whose spec names
the builder as ``"module:function"``, imported on first use. So designs validate without
torch models, and a family registered with ``families.register_family`` builds here
without an edit to this package.
"""

from __future__ import annotations

from auxsearch.aux import wiring
from auxsearch.aux.base import AuxContext, AuxNet, StepState, local_end
from auxsearch.aux.wiring import SampleBank, sample_bank
from auxsearch.design.families import family


def build_aux(ctx: AuxContext, opts: dict) -> AuxNet:
    """Build the aux net described by a normalised aux entry ``opts``, wiring included."""
    spec = family(opts["family"], f"aux.{ctx.module}.family")
    return wiring.attach(spec.build(ctx, opts), ctx, opts)


__all__ = ["AuxContext", "AuxNet", "SampleBank", "StepState", "build_aux", "local_end", "sample_bank"]
