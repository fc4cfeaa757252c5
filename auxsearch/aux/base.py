"""What every aux family builds on: the build context and the common heads."""

from __future__ import annotations

import abc
import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from auxsearch.design.families import has_local_head


@dataclass
class AuxContext:
    """Everything an aux family may look at when it builds the aux of module ``module``."""

    module: int  # k, 0-based
    num_modules: int  # K
    feature_shape: tuple[int, ...]  # (C, H, W) of module k's output
    image_shape: tuple[int, int, int]  # (C, H, W) of the un-normalised input image
    num_classes: int
    units: list[nn.Module]  # every backbone unit (read only: copy, never share)
    unit_in_shapes: list[tuple[int, ...]]  # input shape of each unit
    unit_out_shapes: list[tuple[int, ...]]  # output shape of each unit
    next_start: int  # index of the first unit of module k + 1
    # The task's light head factory ``(feature_shape, depth, width) -> module with .loss``;
    # None for classification, where each family brings its own head.
    local_head: Callable[[tuple, int, int], nn.Module] | None = None
    module_out_shapes: list[tuple[int, ...]] = field(default_factory=list)  # output of every module
    taps: list[int] = field(default_factory=list)  # units the real head reads
    head: nn.Module | None = None  # the real head (read only: copy, never share)


@dataclass
class StepState:
    """What the engine hands an aux net besides its input during one local step.

    ``taps``: the feature bank, the tapped features (the real head's inputs, unit index ->
    tensor) computed so far in this step, detached once their module is trained (module k's
    own stay attached); ``head``: the network's real head, which a ``global`` end calls (so
    its gradients reach it); ``index``: the batch's positions in the training set (int64, on
    the batch's device), which the long-term bank keys its slots by; ``bank``: the network's
    long-term bank (:class:`~auxsearch.aux.wiring.SampleBank`; None, or no index: not read).
    """

    taps: dict[int, Tensor] = field(default_factory=dict)
    head: nn.Module | None = None
    index: Tensor | None = None
    bank: nn.Module | None = None


class AuxNet(nn.Module, abc.ABC):
    """An auxiliary network: module k's output in, a scalar local loss out.

    A family builds its own layers (:meth:`transform`, e.g. MAN's learnable + EMA block)
    and its local head (``end``, with ``loss(h, image, target)``). The global end every
    family that can end globally takes is attached after it is built (``auxsearch.aux.wiring``):
    ``global_end``, weighted by ``global_weight`` against the local head (1: no local head).
    ``ema_source`` is the index of the backbone unit whose parameters
    :meth:`after_backward` averages into an EMA copy (None: no EMA); ``resume_at`` the
    first backbone unit after the family's own layers (where a global end continues).
    """

    ema_source: int | None = None
    resume_at: int | None = None

    def __init__(self) -> None:
        super().__init__()
        self.global_end: nn.Module | None = None
        self.global_weight = 1.0

    def transform(self, feat: Tensor) -> Tensor:
        """The family's own layers in front of its head (none by default)."""
        return feat

    def forward(self, feat: Tensor, image: Tensor, target: Any, state: StepState | None = None) -> Tensor:
        """Module k's output, the raw image and the target in; the scalar local loss out."""
        h = self.transform(feat)
        if self.global_end is None:
            return self.end.loss(h, image, target)
        loss = self.global_end(feat, h, image, target, state or StepState())
        if self.end is None:  # global_weight 1: the global end alone
            return loss
        w = self.global_weight
        return w * loss + (1.0 - w) * self.end.loss(h, image, target)

    def after_backward(self, source: nn.Module | None) -> None:
        """The family's EMA update after module k's ``backward()`` (``source``: the unit it follows)."""

    def after_step(self, model: nn.Module) -> None:
        """Called by the engine right after module k's ``backward()``: every EMA update."""
        if self.ema_source is not None:
            self.after_backward(model.unit(self.ema_source))
        if self.global_end is not None:
            self.global_end.after_step(model)


def conv_bn_relu(c_in: int, c_out: int, kernel: int = 1, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False),
            nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]


def local_end(ctx: AuxContext, opts: dict, shape: tuple, own: Callable[[], nn.Module], *,
              depth: int | None = None) -> nn.Module | None:
    """The aux net's own head: with a local end, and beside a global end weighted below 1.

    None under a global end alone (``wiring.attach`` puts the real head there instead); on a
    dense task the task's light head on ``shape`` (``depth``: the family's override of the
    entry's depth); on classification the family's own head, ``own()``.
    """
    if not has_local_head(opts):
        return None
    if ctx.local_head is not None:
        return ctx.local_head(tuple(shape), opts["depth"] if depth is None else depth, opts["width"])
    return own()


class HeadAux(AuxNet):
    """An aux net that is a head on module k's output and nothing else (dgl, infopro).

    ``classifier(ctx, opts, shape)`` builds the family's own head; a dense task's light
    head or a global end stands in for it as :func:`local_end` says.
    """

    def __init__(self, ctx: AuxContext, opts: dict, classifier: Callable[[AuxContext, dict, tuple], nn.Module]) -> None:
        super().__init__()
        self.resume_at = ctx.next_start
        self.end = local_end(ctx, opts, ctx.feature_shape, lambda: classifier(ctx, opts, ctx.feature_shape))


def reset_parameters(module: nn.Module) -> nn.Module:
    """Re-initialise every sub-layer that knows how (fresh layers, not copies)."""
    for m in module.modules():
        if m is not module and hasattr(m, "reset_parameters"):
            m.reset_parameters()
    if hasattr(module, "reset_parameters"):
        module.reset_parameters()
    return module


def clone_module(module: nn.Module) -> nn.Module:
    """``copy.deepcopy`` that also works on fake tensors (the memory simulator).

    Parameters and buffers are cloned explicitly and handed to deepcopy's
    memo, so deepcopy never has to copy a tensor storage itself.
    """
    memo: dict[int, object] = {}
    for p in module.parameters():
        memo[id(p)] = nn.Parameter(p.detach().clone(), requires_grad=p.requires_grad)
    for b in module.buffers():
        memo[id(b)] = b.detach().clone()
    return copy.deepcopy(module, memo)


def frozen_copy(module: nn.Module) -> nn.Module:
    """A deep copy of ``module`` whose parameters are turned into buffers.

    The copy has no ``nn.Parameter`` at all, so no optimizer, weight decay
    or gradient hook can touch it, yet it is saved in ``state_dict`` and
    moves with ``.to(device)``. Gradients still flow *through* it to its
    input. Its own BN running statistics stay ordinary buffers.
    """
    twin = clone_module(module)
    for sub in twin.modules():
        for name, p in list(sub.named_parameters(recurse=False)):
            delattr(sub, name)
            sub.register_buffer(name, p.detach().clone())
    return twin


@torch.no_grad()
def ema_update(target: nn.Module, source: nn.Module, momentum: float) -> None:
    """p_t <- m * p_t + (1 - m) * p_s for each *parameter* of ``source``.

    ``target`` is a :func:`frozen_copy` of ``source``: its tensors of the
    same names are updated; its other buffers (BN statistics) are left alone. One fused
    ``_foreach_lerp_`` for all of them: one kernel launch per step on a GPU, not one per parameter.
    """
    held = dict(target.named_buffers())
    pairs = [(held[name], ps.detach()) for name, ps in source.named_parameters()]
    if pairs:
        torch._foreach_lerp_([t for t, _ in pairs], [s.to(t.dtype) for t, s in pairs], 1.0 - momentum)
