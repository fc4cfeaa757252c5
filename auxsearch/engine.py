"""Build a design into a network and train it module by module.

``build(design)`` is a pure function of the design: backbone units are cut
into K stages at the split points, each non-final stage gets the aux net
its design entry names, the last stage gets the task head. The local step
(:func:`local_step`) runs stage k on the *detached* output of stage k - 1,
computes the local loss and calls ``backward()`` at once, so stage k's
activations are freed before stage k + 1 runs: peak memory follows the
largest stage. K = 1 (no splits) is plain end-to-end backprop, the reference.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from contextlib import AbstractContextManager as ContextManager
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .aux import AuxContext, AuxNet, build_aux
from .backbones import create_units
from .config import TrainConfig
from .errors import ConfigError
from .graph import as_design, bounds


class ClassifierHead(nn.Module):
    """The network's real task head: global average pool + linear."""

    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, feat: Tensor) -> Tensor:
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(feat, 1), 1))


class LocalNetwork(nn.Module):
    """K gradient-isolated stages, their aux nets and the task head.

    ``forward(x)`` is ordinary inference (logits); training goes through
    :func:`local_step`. ``x`` is the un-normalised image in [0, 1]: the
    network normalises it itself with the ``mean`` / ``std`` buffers (set
    from the data set, saved with the weights), so aux nets that reconstruct
    the image (InfoPro) can compare against the raw pixels.
    """

    def __init__(self, design: dict, stages: list[nn.Sequential], aux: list[AuxNet],
                 head: nn.Module) -> None:
        super().__init__()
        channels = design["input_shape"][0]
        self.design = design  # plain data, not a submodule
        self.stages = nn.ModuleList(stages)
        self.aux = nn.ModuleList(aux)
        self.head = head
        self.register_buffer("mean", torch.zeros(1, channels, 1, 1))
        self.register_buffer("std", torch.ones(1, channels, 1, 1))

    def set_normalization(self, mean, std) -> None:
        with torch.no_grad():
            self.mean.copy_(torch.as_tensor(mean, dtype=torch.float32).view_as(self.mean))
            self.std.copy_(torch.as_tensor(std, dtype=torch.float32).view_as(self.std))

    def unit(self, index: int) -> nn.Module:
        """Backbone unit ``index`` (counting across stages)."""
        for stage in self.stages:
            if index < len(stage):
                return stage[index]
            index -= len(stage)
        raise IndexError("unit index out of range")

    def forward(self, x: Tensor) -> Tensor:
        h = (x - self.mean) / self.std
        for stage in self.stages:
            h = stage(h)
        return self.head(h)


@torch.no_grad()
def trace_shapes(units: list[nn.Module], input_shape) -> tuple[list[tuple], list[tuple]]:
    """Input and output shape (without batch) of every unit, computed on fake tensors."""
    from torch._guards import detect_fake_mode
    from torch._subclasses.fake_tensor import FakeTensorMode

    # Under the memory simulator a fake mode is already active: reuse it.
    mode = detect_fake_mode() or FakeTensorMode(allow_non_fake_inputs=True)
    was_training = [u.training for u in units]
    ins, outs = [], []
    with mode:
        h = torch.empty(1, *input_shape)
        for u in units:
            u.eval()
            ins.append(tuple(h.shape[1:]))
            h = u(h)
            outs.append(tuple(h.shape[1:]))
    for u, t in zip(units, was_training, strict=True):
        u.train(t)
    return ins, outs


def build(design: Any) -> LocalNetwork:
    """Turn a design (compact mapping or block graph) into a :class:`LocalNetwork`."""
    d = as_design(design)
    units = create_units(d["backbone"]["name"], d["input_shape"][0], d["backbone"]["args"])
    if len(units) != d["num_units"]:
        raise ConfigError("num_units", f"backbone {d['backbone']['name']!r} has {len(units)} units, "
                          f"but the design says {d['num_units']}")
    ins, outs = trace_shapes(units, d["input_shape"])
    if len(outs[-1]) != 3:
        raise ConfigError("backbone.name", f"units must produce C x H x W feature maps, got {outs[-1]}")
    mods = bounds(d)
    aux = []
    for k, entry in enumerate(d["aux"]):
        ctx = AuxContext(module=k, num_modules=len(mods), feature_shape=outs[mods[k][1] - 1],
                         image_shape=tuple(d["input_shape"]), num_classes=d["num_classes"],
                         units=units, unit_in_shapes=ins, unit_out_shapes=outs,
                         next_start=mods[k + 1][0])
        aux.append(build_aux(ctx, entry))
    stages = [nn.Sequential(*units[s:e]) for s, e in mods]
    return LocalNetwork(d, stages, aux, ClassifierHead(outs[-1][0], d["num_classes"]))


def local_step(model: LocalNetwork, x: Tensor, y: Tensor,
               stage_context: Callable[[int], ContextManager] | None = None) -> tuple[Tensor, list[Tensor]]:
    """Forward and backward of every stage in turn; returns (logits, local losses).

    Gradients are accumulated into ``.grad``; the optimizer step is the
    caller's. Stage k's input is detached, its loss back-propagates at once
    (freeing its graph), then its aux net's EMA copy follows the real unit.
    ``stage_context(k)`` wraps stage k's forward (the memory floor uses it).
    """
    h = (x - model.mean) / model.std
    last = len(model.stages) - 1
    losses: list[Tensor] = []
    logits = None
    for k, stage in enumerate(model.stages):
        with stage_context(k) if stage_context else contextlib.nullcontext():
            h = stage(h.detach())
            if k < last:
                aux = model.aux[k]
                loss = aux(h, x, y)
            else:
                logits = model.head(h)
                loss = F.cross_entropy(logits, y)
        loss.backward()
        if k < last and aux.ema_source is not None:
            aux.after_backward(model.unit(aux.ema_source))
        losses.append(loss.detach())
    return logits.detach(), losses


def make_optimizer(model: nn.Module, cfg: TrainConfig, total_steps: int):
    """SGD (momentum, Nesterov) or AdamW, with a per-step cosine or constant schedule."""
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0,
                              weight_decay=cfg.weight_decay)
    else:
        opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    warm = min(cfg.warmup_epochs * total_steps // max(cfg.epochs, 1), total_steps - 1)

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        if cfg.schedule == "constant":
            return 1.0
        t = (step - warm) / max(1, total_steps - warm)
        return 0.5 * (1.0 + math.cos(math.pi * min(t, 1.0)))

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)


def train_step(model: LocalNetwork, opt: torch.optim.Optimizer, x: Tensor, y: Tensor) -> tuple[Tensor, list[Tensor]]:
    """One full training step: zero grads, local step, optimizer step."""
    opt.zero_grad(set_to_none=True)
    out = local_step(model, x, y)
    opt.step()
    return out


@torch.no_grad()
def evaluate(model: nn.Module, loader, device: torch.device) -> float:
    """Top-1 accuracy of ``model`` over ``loader``."""
    was = model.training
    model.eval()
    correct = total = 0
    for x, y in loader:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        correct += (model(x).argmax(1) == y).sum().item()
        total += y.numel()
    model.train(was)
    return correct / max(total, 1)


def end_to_end(design: Any) -> dict:
    """The same backbone with one module (K = 1): the end-to-end reference."""
    d = as_design(design)
    d.update(splits=[], aux=[])
    return d


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device", "cuda requested but torch sees no CUDA device")
    return torch.device(name)
