"""Build a design into a network and train it module by module.

``build(design)`` is a pure function of the design: backbone units are cut
into K stages at the split points, each non-final stage gets the aux net
its design entry names, the last stage gets the task head. The local step
(:func:`local_step`) runs stage k on the *detached* output of stage k - 1,
computes the local loss and calls ``backward()`` at once, so stage k's
activations are freed before stage k + 1 runs: peak memory follows the
largest stage. K = 1 (no splits) is plain end-to-end backprop, the reference.
:func:`recalibrate_bn` recomputes the inference path's BatchNorm statistics before an
evaluation (precise BN), so a design scores what its weights are worth after a short run.
"""

from __future__ import annotations

import contextlib
import math
import random
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager as ContextManager
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils._pytree import tree_map

from auxsearch.aux import AuxContext, AuxNet, StepState, build_aux, sample_bank
from auxsearch.backbones import create_units
from auxsearch.config import TrainConfig
from auxsearch.design.graph import as_design, bounds
from auxsearch.errors import ConfigError
from auxsearch.model.precision import Precision
from auxsearch.tasks import FinalHead, OutputShift, get_task
from auxsearch.tasks.classification import ClassifierHead

__all__ = ["ClassifierHead", "LocalNetwork", "build", "end_to_end", "evaluate", "inference_batchnorms", "local_step",
           "make_optimizer", "recalibrate_bn", "resolve_device", "trace_shapes", "train_step"]


class LocalNetwork(nn.Module):
    """K gradient-isolated stages, their aux nets and the task head.

    ``forward(x)`` is ordinary inference (the task's prediction: logits, detections,
    an image); training goes through :func:`local_step`. ``x`` is the un-normalised image
    in [0, 1]: the network normalises it itself with the ``mean`` / ``std`` buffers (set
    from the data set, saved with the weights), so aux nets that reconstruct the image
    (InfoPro) can compare against the raw pixels. ``taps`` are the units whose outputs
    the real head reads (banked, detached, for the global ends of later modules during a step).
    """

    def __init__(self, design: dict, stages: list[nn.Sequential], aux: list[AuxNet],
                 head: FinalHead, taps: list[int], bank: nn.Module | None = None) -> None:
        super().__init__()
        channels = design["input_shape"][0]
        self.design = design  # plain data, not a submodule
        self.stages = nn.ModuleList(stages)
        self.aux = nn.ModuleList(aux)
        self.head = head
        self.bank = bank  # the long-term bank (bank_keep), shared by the global ends that read it
        self.taps = list(taps)
        self.bounds = bounds(design)
        self.register_buffer("mean", torch.zeros(1, channels, 1, 1))
        self.register_buffer("std", torch.ones(1, channels, 1, 1))

    def set_normalization(self, mean, std) -> None:
        with torch.no_grad():
            self.mean.copy_(torch.as_tensor(mean, dtype=torch.float32).view_as(self.mean))
            self.std.copy_(torch.as_tensor(std, dtype=torch.float32).view_as(self.std))
            for m in self.modules():  # heads that predict an image add the mean back
                if isinstance(m, OutputShift):
                    m.mean.copy_(self.mean.view_as(m.mean))
                    m.std.copy_(self.std.view_as(m.std))

    @property
    def keeps_samples(self) -> bool:
        """A global end keeps levels per training sample (``bank_keep``): training passes each batch's index."""
        return self.bank is not None

    def unit(self, index: int) -> nn.Module:
        """Backbone unit ``index`` (counting across stages)."""
        for stage in self.stages:
            if index < len(stage):
                return stage[index]
            index -= len(stage)
        raise IndexError("unit index out of range")

    def forward(self, x: Tensor):
        h = (x - self.mean) / self.std
        taps = {}
        for i, unit in enumerate(u for stage in self.stages for u in stage):
            h = unit(h)
            if i in self.taps:
                taps[i] = h
        return self.head.predict(self.head([taps[i] for i in self.taps]), x)


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
        for i, u in enumerate(units):
            u.eval()
            ins.append(tuple(h.shape[1:]))
            try:
                h = u(h)
            except (RuntimeError, ValueError) as exc:  # a kernel larger than what is left of the image
                first = (str(exc).strip().splitlines() or [""])[0]
                raise ConfigError("backbone", f"unit {i} ({type(u).__name__}) cannot run on a {list(ins[-1])} "
                                  f"input (images of {list(input_shape)}): {first}") from None
            outs.append(tuple(h.shape[1:]))
    for u, t in zip(units, was_training, strict=True):
        u.train(t)
    return ins, outs


def build(design: Any) -> LocalNetwork:
    """Turn a design (compact mapping or block graph) into a :class:`LocalNetwork`."""
    d = as_design(design)
    task = get_task(d["task"]["name"])
    task.check_args(d["task"]["args"])
    units = create_units(d["backbone"]["name"], d["input_shape"][0], d["backbone"]["args"])
    if len(units) != d["num_units"]:
        raise ConfigError("num_units", f"backbone {d['backbone']['name']!r} has {len(units)} units, "
                          f"but the design says {d['num_units']}")
    ins, outs = trace_shapes(units, d["input_shape"])
    if len(outs[-1]) != 3:
        raise ConfigError("backbone.name", f"units must produce C x H x W feature maps, got {outs[-1]}")
    mods = bounds(d)
    taps = task.taps(d, outs)
    head = task.head(d, [outs[i] for i in taps])
    aux = []
    for k, entry in enumerate(d["aux"]):
        ctx = AuxContext(module=k, num_modules=len(mods), feature_shape=outs[mods[k][1] - 1],
                         image_shape=tuple(d["input_shape"]), num_classes=d["num_classes"],
                         units=units, unit_in_shapes=ins, unit_out_shapes=outs,
                         next_start=mods[k + 1][0],
                         local_head=(lambda shape, depth, width: task.local_head(d, shape, depth, width))
                         if task.dense else None,
                         module_out_shapes=[outs[e - 1] for _, e in mods], taps=taps, head=head)
        aux.append(build_aux(ctx, entry))
    stages = [nn.Sequential(*units[s:e]) for s, e in mods]
    return LocalNetwork(d, stages, aux, head, taps, sample_bank(aux, outs))


def local_step(model: LocalNetwork, x: Tensor, y: Any,
               stage_context: Callable[[int], ContextManager] | None = None,
               precision: Precision | None = None, index: Tensor | None = None) -> tuple[Any, list[Tensor]]:
    """Forward and backward of every stage in turn; returns (raw head output, local losses).

    Gradients are accumulated into ``.grad``; the optimizer step is the
    caller's. Stage k's input is detached, its loss back-propagates at once
    (freeing its graph), then its aux net's EMA copies follow the real units.
    Tapped features of finished modules are kept *detached* (the feature bank: the real head
    and the global ends of later aux nets read them; the peak counts them).
    ``stage_context(k)`` wraps stage k's forward (the memory floor uses it).
    ``precision`` (default fp32): each module's forward and loss run under its autocast, each
    backward outside it, scaled by its one loss scale under fp16 (:mod:`auxsearch.model.precision`).
    ``index``: the batch's positions in the training set; the long-term bank (``bank_keep``) reads and
    keeps the samples' levels by it (None: it is neither read nor written).
    """
    precision = precision or Precision()
    h = (x - model.mean) / model.std
    last = len(model.stages) - 1
    losses: list[Tensor] = []
    taps: dict[int, Tensor] = {}  # the feature bank
    raw = None
    for k, stage in enumerate(model.stages):
        with stage_context(k) if stage_context else contextlib.nullcontext(), precision.autocast():
            h = h.detach()
            here: dict[int, Tensor] = {}
            for i, unit in enumerate(stage, model.bounds[k][0]):
                h = unit(h)
                if i in model.taps:
                    here[i] = h
            if k < last:
                aux = model.aux[k]
                state = StepState({**taps, **here}, model.head, index, model.bank)  # module k's taps stay attached
                loss = aux(h, x, y, state)
            else:
                raw = model.head([here[i] if i in here else taps[i] for i in model.taps])
                loss = model.head.loss(raw, x, y)
        precision.backward(loss)
        if k < last:
            aux.after_step(model)
            taps.update((i, t.detach()) for i, t in here.items())
        losses.append(loss.detach())
    if index is not None and model.bank is not None:  # the long-term bank keeps the batch's levels
        model.bank.remember(index, {**taps, **here})
    return tree_map(lambda t: t.detach() if isinstance(t, Tensor) else t, raw), losses


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


def train_step(model: LocalNetwork, opt: torch.optim.Optimizer, x: Tensor, y: Tensor,
               precision: Precision | None = None, index: Tensor | None = None) -> tuple[Tensor, list[Tensor]]:
    """One full training step: zero grads, local step, optimizer step (skipped by fp16 on overflow)."""
    precision = precision or Precision()
    opt.zero_grad(set_to_none=True)
    out = local_step(model, x, y, precision=precision, index=index)
    precision.step(opt)
    return out


@torch.no_grad()
def evaluate(model: LocalNetwork, loader, device: torch.device) -> dict[str, float]:
    """The task's scores of ``model`` over ``loader`` (first key: the searched metric)."""
    was = model.training
    model.eval()
    try:
        return get_task(model.design["task"]["name"]).evaluate(model, loader, device)
    finally:
        model.train(was)


def inference_batchnorms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """The BatchNorm layers with running statistics that inference uses: backbone units and real head.

    Aux nets (and their EMA / trainable copies of units) never run at evaluation, so their
    layers are not listed. A module that is not a :class:`LocalNetwork`: all of its layers.
    """
    roots = [model.stages, model.head] if isinstance(model, LocalNetwork) else [model]
    seen: dict[int, nn.modules.batchnorm._BatchNorm] = {}
    for root in roots:
        for m in root.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats:
                seen.setdefault(id(m), m)
    return list(seen.values())


@contextlib.contextmanager
def _private_rng(seed: int | None, device: torch.device):
    """Global RNG draws inside leave the caller's streams (torch CPU/CUDA, ``random``, numpy) as they were."""
    devices = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else []
    py, npy = random.getstate(), np.random.get_state()
    try:
        with torch.random.fork_rng(devices=devices):
            if seed is not None:
                torch.default_generator.manual_seed(seed)  # CPU only: data transforms draw here
            yield
    finally:
        random.setstate(py)
        np.random.set_state(npy)


@torch.no_grad()
def recalibrate_bn(model: nn.Module, batches: Iterable, device: torch.device | str,
                   seed: int | None = None) -> int:
    """Precise BN: recompute the inference path's BatchNorm statistics on ``batches``; returns the batch count.

    After a short training run the running mean/var (an EMA with momentum 0.1) lag behind
    the weights, and a local design scores near chance in eval mode. This resets the
    running statistics of :func:`inference_batchnorms`, sets cumulative averaging
    (``momentum=None``: every batch weighs the same), runs the inference forward over
    ``batches`` with those BatchNorm layers in train mode and everything else in eval mode
    (dropout / drop-path off, as at evaluation), then restores each layer's momentum,
    ``num_batches_tracked`` and every module's train/eval flag. A layer the forward never
    reached keeps its old statistics.

    No parameter changes, no gradient is computed, no optimizer is involved. ``batches``
    yields ``(image, target)`` pairs (targets are ignored, whatever they are) or bare
    images. Iterating it may draw from the global RNGs (augmentations, random patches):
    those draws happen on private copies of the torch / ``random`` / numpy generators, so
    the caller's training stream is unchanged; with ``seed`` the private torch CPU
    generator is seeded first, so the draws are reproducible.
    """
    device = torch.device(device)
    bns = inference_batchnorms(model)
    if not bns:
        return 0
    modes = [(m, m.training) for m in model.modules()]
    saved = [(bn, bn.momentum, bn.num_batches_tracked.clone(), bn.running_mean.clone(), bn.running_var.clone())
             for bn in bns]
    count, done = 0, False
    try:
        model.eval()
        for bn in bns:
            bn.reset_running_stats()
            bn.momentum = None  # cumulative moving average over the batches
            bn.train()
        with _private_rng(seed, device):
            for batch in batches:
                x = batch[0] if isinstance(batch, tuple | list) else batch
                model(x.to(device, non_blocking=True))
                count += 1
        done = True
    finally:
        for bn, momentum, tracked, mean, var in saved:
            # not reached, no batch at all, or the pass failed: keep the old statistics
            if not done or int(bn.num_batches_tracked) == 0:
                bn.running_mean.copy_(mean)
                bn.running_var.copy_(var)
            bn.momentum = momentum
            bn.num_batches_tracked.copy_(tracked)
        for m, training in modes:
            m.training = training
    return count


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
