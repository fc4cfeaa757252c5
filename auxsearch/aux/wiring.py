"""The global end an aux net of a family that can end globally may take, and the feature bank it reads.

Memory-augmented MAN / GLCAN (arXiv 2406.00446) describes a feature bank of the backbone's
key features, used in local modules "just as they are used in the backbone network", and
global-local aux nets, but publishes no code; what follows is *our* reading (docs/concepts.md,
"The feature bank and global-local ends", cites the sentences and says where the paper is silent).

**Feature bank.** The real head reads some units' outputs (its *taps*: the FPN levels of a
detector, the long skip of EDSR, the last map of a classifier). During a local step the
engine banks each tap, detached, at its native scale when the module that makes it has been
trained (:class:`~auxsearch.aux.base.StepState` ``taps``). A global end of a later module
reads the bank for the levels it does not make itself, so a local module of a detector trains
with the whole pyramid.

**Global end** (``end: global | global_ema | global_copy``). The aux net ends with the
network's real head: ``global`` calls the real head itself (shared, so its gradients reach
the real head from every such module; its BatchNorm running statistics are left to the real
path), ``global_ema`` an EMA copy of it (no gradient reaches the real head; the copy follows
it after every step), ``global_copy`` a trainable copy of it per module (initialised from the
real head, trained by module k's loss only). How module k's feature reaches the taps the head
reads after module k (``through``):

* ``adapter`` (default): one light :class:`Adapter` per such tap, a resize to the tap's
  resolution (average pooling down, nearest up) and a 1x1 conv to its channels, started as
  the parameter-free shortcut of He et al.'s option A (identity on the shared channels,
  zero on the others). No copy of a later unit runs, so the end costs the head's own
  activations and the adapters' small ones, not the rest of the network's.
* ``ema`` / ``trainable``: copies of the later backbone units (frozen copies that follow
  the real units by EMA, or trainable copies initialised from them), so the aux net is
  the rest of the network.

**Long-term bank** (``bank_keep: n``, through adapters; :class:`SampleBank`). The bank above lives
for one step, and within one step module k runs before the modules that make the later levels, so
module k's adapters stand in for them. With ``bank_keep`` the network keeps one bank, shared by
every global end that asks for it, of the detached levels the backbone made for each training
sample the last time it was trained (slot = the sample's index in the training set mod n, tagged
with that index); when the sample comes back, a global end reads from its slot the levels after
module k's first later level (module k's adapter still makes that first one, so its feature reaches
the head), and the adapters stand in only for samples without an entry. The slots are buffers
(n x the kept levels' bytes per sample, once), allocated when the net is built: the peak and the
simulator count them.

**Global-local collaboration** (``global_weight: w``, GLCAN): with w < 1 the aux net keeps its
local head as well, and its loss is w * global + (1 - w) * local.

Module k's parameters still get gradients from module k's loss only: every adapter's or
copy's input is module k's own output, and the bank it reads is detached.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from auxsearch.aux.base import AuxContext, AuxNet, StepState, clone_module, ema_update, frozen_copy


def resize_to(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Average pooling down, nearest upsampling up, identity when the size already matches."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    if x.shape[-1] >= size[-1]:
        return F.adaptive_avg_pool2d(x, size)
    return F.interpolate(x, size=size, mode="nearest")


@contextlib.contextmanager
def frozen_statistics(module: nn.Module):
    """Train-mode BatchNorm layers normalise with the batch but leave their running statistics alone.

    A ``global`` end calls the real head on the aux path's features; without this, the
    head's running mean/var (used at evaluation) would mix in every module's copies.
    """
    saved = []
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats:
            saved.append((m, m.momentum, m.num_batches_tracked.clone()))
            m.momentum = 0.0  # running = (1 - 0) * running + 0 * batch
    try:
        yield
    finally:
        for m, momentum, count in saved:
            m.momentum = momentum
            with torch.no_grad():
                m.num_batches_tracked.copy_(count)


class Adapter(nn.Module):
    """Module k's feature to the shape of one tap the real head reads: resize + 1x1 conv.

    A 1x1 conv commutes with average pooling and with nearest upsampling, so the conv runs
    at the smaller of the two resolutions (pool first, or upsample last): the same map, the
    fewest bytes. Initialised as He et al.'s option-A shortcut: identity on the first
    ``min(c_in, c_out)`` channels, zero on the others, zero bias (the later residual
    branches as if they added nothing; exact for an EDSR body, whose blocks keep the width).
    """

    def __init__(self, in_shape: tuple, out_shape: tuple) -> None:
        super().__init__()
        self.size = tuple(out_shape[1:])
        self.down = in_shape[-1] >= out_shape[-1]
        c_in, c_out = in_shape[0], out_shape[0]
        self.proj = nn.Conv2d(c_in, c_out, 1)
        with torch.no_grad():
            self.proj.weight.zero_()
            self.proj.bias.zero_()
            n = min(c_in, c_out)
            self.proj.weight[:n, :n, 0, 0].copy_(torch.eye(n))

    def forward(self, h: Tensor) -> Tensor:
        if self.down:
            return self.proj(resize_to(h, self.size))
        return resize_to(self.proj(h), self.size)


class GlobalEnd(nn.Module):
    """Module k's feature -> (adapters | copies of the later units) -> the real head, or an EMA or trainable copy."""

    def __init__(self, ctx: AuxContext, resume_at: int, end: str, through: str, momentum: float,
                 keep: int = 0) -> None:
        super().__init__()
        self.resume_at = resume_at
        self.own_last = ctx.next_start - 1  # module k's last unit: its tap comes attached
        self.taps = list(ctx.taps)
        self.momentum = momentum
        if through == "adapter":  # one light projection per tap after module k's own layers
            src = tuple(ctx.unit_out_shapes[resume_at - 1])
            self.adapters = nn.ModuleDict({str(i): Adapter(src, tuple(ctx.unit_out_shapes[i]))
                                           for i in self.taps if i >= resume_at})
            self.through = nn.ModuleList()
        else:
            later = ctx.units[resume_at:]
            copy = frozen_copy if through == "ema" else clone_module
            self.adapters = None
            self.through = nn.ModuleList(copy(u) for u in later)
        self.follow_units = through == "ema"
        # the long-term bank (the network's SampleBank): the levels after this end's first later level
        later = [i for i in self.taps if i >= resume_at]
        self.kept = later[1:] if keep and self.adapters is not None else []
        self.keep = keep if self.kept else 0
        self.head_ema = frozen_copy(ctx.head) if end == "global_ema" else None
        self.head_copy = clone_module(ctx.head) if end == "global_copy" else None

    def forward(self, feat: Tensor, h: Tensor, image: Tensor, target, state: StepState) -> Tensor:
        got = dict(state.taps)
        got[self.own_last] = feat
        got[self.resume_at - 1] = h
        if self.adapters is not None:
            for i, adapter in self.adapters.items():
                got[int(i)] = adapter(h)
        if self.kept and state.index is not None and state.bank is not None:  # samples seen before: their own
            for i, kept in state.bank.read(state.index, self.kept).items():  # later levels, from the bank
                got[i] = torch.where(kept[0], kept[1].to(got[i].dtype), got[i])
        for i, unit in enumerate(self.through, self.resume_at):
            h = unit(h)
            if i in self.taps:
                got[i] = h
        if self.head_ema is not None:
            return self.head_ema.loss(self.head_ema([got[i] for i in self.taps]), image, target)
        if self.head_copy is not None:
            return self.head_copy.loss(self.head_copy([got[i] for i in self.taps]), image, target)
        with frozen_statistics(state.head):  # the real head's BN statistics follow the real path only
            return state.head.loss(state.head([got[i] for i in self.taps]), image, target)

    def after_step(self, model: nn.Module) -> None:
        if self.follow_units:
            for i, twin in enumerate(self.through, self.resume_at):
                ema_update(twin, model.unit(i), self.momentum)
        if self.head_ema is not None:
            ema_update(self.head_ema, model.head, self.momentum)


class SampleBank(nn.Module):
    """The long-term bank: ``slots`` per-sample entries of some head levels (float32), tagged by sample index.

    Sample ``i`` lives in slot ``i mod slots``; a later sample of the same slot overwrites it (the
    newest writer wins). Buffers, so ``.to(device)`` moves them, the checkpoint keeps them and the
    peak counts them from the start.
    """

    def __init__(self, slots: int, shapes: dict[int, tuple]) -> None:
        super().__init__()
        self.slots, self.levels = slots, sorted(shapes)
        for i in self.levels:
            self.register_buffer(f"level_{i}", torch.zeros(slots, *shapes[i]))
        self.register_buffer("ids", torch.full((slots,), -1, dtype=torch.long))

    def level(self, i: int) -> Tensor:
        return getattr(self, f"level_{i}")

    def read(self, index: Tensor, levels: list[int]) -> dict[int, tuple[Tensor, Tensor]]:
        """Per level: (which samples have an entry, as a B x 1 x 1 x 1 mask; their kept maps)."""
        slots = index % self.slots
        seen = (self.ids[slots] == index).view(-1, 1, 1, 1)
        return {i: (seen, self.level(i)[slots]) for i in levels}

    @torch.no_grad()
    def remember(self, index: Tensor, taps: dict[int, Tensor]) -> None:
        """Keep this step's levels (the backbone's, detached) in the samples' slots."""
        slots = index % self.slots
        for i in self.levels:
            self.level(i)[slots] = taps[i].detach().to(torch.float32)
        self.ids[slots] = index


def sample_bank(aux: list[AuxNet], unit_out_shapes: list[tuple]) -> SampleBank | None:
    """The network's one long-term bank: the levels any global end keeps, at the slots they share (None: none)."""
    ends = [a.global_end for a in aux if a.global_end is not None and a.global_end.kept]
    if not ends:
        return None
    levels = sorted({i for e in ends for i in e.kept})
    return SampleBank(ends[0].keep, {i: tuple(unit_out_shapes[i]) for i in levels})


def attach(aux: AuxNet, ctx: AuxContext, opts: dict) -> AuxNet:
    """Add the global end an aux entry asks for, and its weight against the local head."""
    if opts.get("end", "local") != "local":
        aux.global_end = GlobalEnd(ctx, aux.resume_at, opts["end"], opts["through"],
                                   opts.get("through_momentum", 0.995), opts.get("bank_keep", 0))
        aux.global_weight = float(opts.get("global_weight", 1.0))
    return aux
