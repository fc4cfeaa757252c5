"""The momentum family against a plain-PyTorch MAN++ written from the update rules alone, on digits, K = 8.

Issue 28's check that auxsearch's engine (the ``momentum`` family, its EMA update, the local step, the
optimizer and schedule it builds) trains a MAN++ design at least as well as the rule written out by
hand: one loop, ``copy.deepcopy`` for the learnable block (LB) and the EMA copy, a scalar ``s``
(``nn.Parameter(1.0)``, in the one SGD group with weight decay, as the authors' code has it),
``y = s * LB(h) + (2 - s) * EMA(h)``, DGL's head on y, the EMA update
``p_ema <- m p_ema + (1 - m) p_next`` after each module's backward, and nothing from auxsearch but the
data split and the backbone's units (the same network, so the two differ only in the training code).

Design: ResNet-20 on scikit-learn's digits at 16x16 (``studies/quickstart.yaml``'s data), K = 8 modules
split by activation memory, momentum aux nets (m 0.995, learnable s, DGL head depth 1 width 32).
Recipe: SGD (momentum 0.9, Nesterov, weight decay 5e-4), lr 0.05, cosine per step without warmup,
batch 64 with the short last batch of each epoch dropped (the engine's shuffled loader drops it), no
precise-BN recalibration (the reference has none). Each of ``--seeds`` seeds trains both,
scored on the test split (this check chooses nothing: it compares two implementations of one design).
Verdict: the engine's mean is at least the reference's mean minus the larger of the two spreads.

Writes section ``man-reference`` of docs/results.md. Run: ``python benchmarks/man_reference.py``
(about 4 minutes on 2 CPU cores; ``--quick``: 1 epoch, 1 seed, printed only).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import math
import statistics
import time

import torch
import torch.nn.functional as F
from _common import ROOT, markdown_table, provenance, write_section
from torch import nn

from auxsearch.backbones import create_units
from auxsearch.design.space import balanced_splits
from auxsearch.search.prepare import prepare
from auxsearch.train.loop import fit

K = 8
MOMENTUM = 0.995
WIDTH = 32
LR, WD, BATCH = 0.05, 5e-4, 64


# ----------------------------------------------------------------------------------- the reference


class ReferenceAux(nn.Module):
    """MAN++'s aux net of one module: LB and EMA copies of the next unit, the scale s, DGL's head."""

    def __init__(self, next_unit: nn.Module, out_shape: tuple, classes: int) -> None:
        super().__init__()
        self.lb = copy.deepcopy(next_unit)
        self.ema = copy.deepcopy(next_unit)
        for p in self.ema.parameters():
            p.requires_grad_(False)
        self.s = nn.Parameter(torch.tensor(1.0))
        c, h, w = out_shape
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d((min(h, 8), min(w, 8))),
            nn.Conv2d(c, WIDTH, 1, bias=False), nn.BatchNorm2d(WIDTH), nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(2), nn.Flatten(),
            nn.Linear(4 * WIDTH, WIDTH), nn.ReLU(inplace=True), nn.Linear(WIDTH, WIDTH), nn.ReLU(inplace=True),
            nn.Linear(WIDTH, classes))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.head(self.s * self.lb(h) + (2 - self.s) * self.ema(h))

    @torch.no_grad()
    def follow(self, unit: nn.Module) -> None:
        for pe, p in zip(self.ema.parameters(), unit.parameters(), strict=True):
            pe.mul_(MOMENTUM).add_(p, alpha=1 - MOMENTUM)


def tensors(dataset) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = zip(*(dataset[i] for i in range(len(dataset))), strict=True)
    return torch.stack(xs), torch.stack([torch.as_tensor(y) for y in ys])


def reference(run, splits: list[int], epochs: int, seed: int) -> float:
    """Test accuracy of the hand-written MAN++ loop."""
    torch.manual_seed(seed)
    units = create_units(run.base["backbone"]["name"], run.base["input_shape"][0], run.base["backbone"]["args"])
    bounds = list(zip([0, *splits], [*splits, len(units)], strict=True))
    stages = nn.ModuleList(nn.Sequential(*units[a:b]) for a, b in bounds)
    shapes = [tuple(s) for s in run.unit_shapes]
    classes = run.base["num_classes"]
    aux = nn.ModuleList(ReferenceAux(units[b], shapes[b], classes) for _, b in bounds[:-1])
    head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(shapes[-1][0], classes))
    net = nn.ModuleList([stages, aux, head])
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=LR, momentum=0.9, nesterov=True, weight_decay=WD)
    x_train, y_train = tensors(run.data.train)
    mean, std = torch.tensor(run.data.mean).view(1, -1, 1, 1), torch.tensor(run.data.std).view(1, -1, 1, 1)
    per_epoch = len(x_train) // BATCH  # the short last batch dropped, as the engine's shuffled loader drops it
    steps = epochs * per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 0.5 * (1 + math.cos(math.pi * min(t / steps, 1.0))))
    g = torch.Generator().manual_seed(seed)
    net.train()
    for _ in range(epochs):
        order = torch.randperm(len(x_train), generator=g)
        for i in range(0, per_epoch * BATCH, BATCH):
            x, y = x_train[order[i:i + BATCH]], y_train[order[i:i + BATCH]]
            opt.zero_grad(set_to_none=True)
            h = (x - mean) / std
            for k, stage in enumerate(stages):
                h = stage(h.detach())
                if k < len(aux):
                    F.cross_entropy(aux[k](h), y).backward()
                    aux[k].follow(units[bounds[k][1]])
                else:
                    F.cross_entropy(head(h), y).backward()
            opt.step()
            sched.step()
    net.eval()
    x_test, y_test = tensors(run.data.test)
    with torch.no_grad():
        h = (x_test - mean) / std
        for stage in stages:
            h = stage(h)
        return int((head(h).argmax(1) == y_test).sum()) / len(y_test)  # as the engine counts it


# ----------------------------------------------------------------------------------- the engine


def engine(run, design: dict, epochs: int, seed: int) -> float:
    cfg = dataclasses.replace(run.cfg.train, seed=seed, epochs=epochs, lr=LR, weight_decay=WD, batch_size=BATCH,
                              optimizer="sgd", momentum=0.9, nesterov=True, warmup_epochs=0, schedule="cosine",
                              bn_recalibration_batches=0)
    return fit(design, train=cfg, data=run.data, final_test=True).test_scores["accuracy"]


def spread(xs: list[float]) -> tuple[float, float]:
    return statistics.mean(xs), statistics.stdev(xs) if len(xs) > 1 else 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--seeds", type=int, default=3, help="seeds 1 .. N, each trains both implementations")
    ap.add_argument("--quick", action="store_true", help="1 epoch, 1 seed, printed only")
    args = ap.parse_args()
    epochs, seeds = (1, [1]) if args.quick else (args.epochs, list(range(1, args.seeds + 1)))
    torch.set_num_threads(2)
    run = prepare(ROOT / "studies" / "quickstart.yaml")
    splits = balanced_splits(run.unit_costs, K)
    design = {**run.base, "splits": splits,
              "aux": [{"family": "momentum", "head": "dgl", "depth": 1, "width": WIDTH, "momentum": MOMENTUM,
                       "learnable_scale": True}] * (K - 1)}
    t0 = time.perf_counter()
    got: dict[str, list[float]] = {"plain-PyTorch MAN++ reference": [], "auxsearch momentum family": []}
    for seed in seeds:
        got["plain-PyTorch MAN++ reference"].append(reference(run, splits, epochs, seed))
        got["auxsearch momentum family"].append(engine(run, design, epochs, seed))
        print(f"seed {seed}: " + ", ".join(f"{n} {v[-1]:.4f}" for n, v in got.items()), flush=True)
    (ref_m, ref_s), (eng_m, eng_s) = spread(got["plain-PyTorch MAN++ reference"]), spread(got["auxsearch momentum family"])
    met = eng_m >= ref_m - max(ref_s, eng_s)
    rows = [[name, ", ".join(f"{v:.4f}" for v in vals), f"{spread(vals)[0]:.4f} ± {spread(vals)[1]:.4f}"]
            for name, vals in got.items()]
    body = "\n".join([
        "## The momentum family against a plain-PyTorch MAN++", "", provenance(), "",
        f"Design: ResNet-20 on digits 16x16, K = {K} (splits {splits}, balanced by activation memory), momentum "
        f"aux nets (m {MOMENTUM}, learnable s, DGL head width {WIDTH}); SGD lr {LR}, weight decay {WD}, batch "
        f"{BATCH}, cosine, {epochs} epochs; seeds {seeds[0]}..{seeds[-1]}; test accuracy (the check chooses "
        "nothing). The reference (benchmarks/man_reference.py) writes the MAN++ rule as one plain loop and "
        f"shares only the data split and the backbone's units. {(time.perf_counter() - t0) / 60:.1f} min.", "",
        markdown_table(["implementation", "test accuracy per seed", "mean ± std"], rows), "",
        f"Verdict (issue 28: the engine at least at the reference's level, i.e. its mean >= the reference's mean "
        f"minus the larger spread): {'met' if met else '**not met**'}; gap {eng_m - ref_m:+.4f}.",
    ])
    print(body)
    if not args.quick:
        print(f"wrote {write_section('man-reference', body)}")


if __name__ == "__main__":
    main()
