"""Overhead: auxsearch's local step against a hand-written loop, and the simulator's speed.

    python benchmarks/overhead.py            # writes section `overhead` of docs/results.md

The hand-written loop runs the very same modules (taken from the built
network) with plain PyTorch code, so the ratio is what auxsearch's own code
costs. Both are timed in one process, interleaved in blocks, same threads.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
import torch.nn.functional as F
from _common import markdown_table, provenance, write_section

from auxsearch import build
from auxsearch.config import TrainConfig
from auxsearch.model.engine import make_optimizer, train_step
from auxsearch.train import memory

DESIGN = {"backbone": {"name": "resnet20"}, "input_shape": [3, 32, 32], "num_classes": 10, "num_units": 10,
          "splits": [3, 5, 7], "aux": [{"family": "dgl", "depth": 1, "width": 32}] * 3}
SIM = {"backbone": {"name": "resnet110"}, "input_shape": [3, 32, 32], "num_classes": 10, "num_units": 55,
       "splits": [14, 28, 41], "aux": [{"family": "dgl", "depth": 2, "width": 64}] * 3}


def hand_written_step(stages, heads, head, opt, x, y) -> None:
    """What a user would write by hand: detach, local loss, backward, one optimizer step."""
    opt.zero_grad(set_to_none=True)
    h = x
    for k, stage in enumerate(stages):
        h = stage(h.detach())
        logits = heads[k](h) if k < len(heads) else head([h])  # the real head reads a list of taps
        F.cross_entropy(logits, y).backward()
    opt.step()


def time_steps(fn, steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    return (time.perf_counter() - start) / steps


def step_overhead(batch: int, blocks: int, steps: int) -> tuple[float, float]:
    torch.manual_seed(0)
    ours = build(DESIGN)
    theirs = copy.deepcopy(ours)
    x, y = torch.rand(batch, 3, 32, 32), torch.randint(0, 10, (batch,))
    opt_a, _ = make_optimizer(ours, TrainConfig(), 1000)
    opt_b, _ = make_optimizer(theirs, TrainConfig(), 1000)
    heads = [a.end for a in theirs.aux]
    xb = (x - theirs.mean) / theirs.std  # auxsearch normalises inside; the hand loop gets a normalised batch
    a_times, b_times = [], []
    for _ in range(2):  # warm-up
        train_step(ours, opt_a, x, y)
        hand_written_step(theirs.stages, heads, theirs.head, opt_b, xb, y)
    for _ in range(blocks):
        a_times.append(time_steps(lambda: train_step(ours, opt_a, x, y), steps))
        b_times.append(time_steps(lambda: hand_written_step(theirs.stages, heads, theirs.head, opt_b, xb, y), steps))
    return statistics.median(a_times), statistics.median(b_times)


def simulate_seconds(repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        memory.simulate(SIM, 1024)
        out.append(time.perf_counter() - start)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few steps, for a smoke run")
    args = parser.parse_args()
    blocks, steps = (3, 3) if args.quick else (7, 10)
    ours, theirs = step_overhead(128, blocks, steps)
    sims = simulate_seconds(2 if args.quick else 5)
    ratio = ours / theirs
    rows = [["auxsearch `train_step` (resnet20, K=4 DGL, batch 128, 32x32)", f"{ours * 1000:.1f} ms", ""],
            ["hand-written loop, same modules", f"{theirs * 1000:.1f} ms", ""],
            ["ratio", f"{ratio:.3f}", "target <= 1.05: " + ("MET" if ratio <= 1.05 else "MISSED")],
            ["simulate ResNet-110 K=4, batch 1024 (median of runs)", f"{statistics.median(sims):.2f} s",
             "target <= 3 s: " + ("MET" if statistics.median(sims) <= 3 else "MISSED")]]
    table = markdown_table(["what", "measured", "target"], rows)
    body = ("## Overhead\n\n" + provenance() + "\n\nStep times are medians of "
            f"{blocks} interleaved blocks of {steps} steps each (so machine noise hits both loops alike); "
            f"simulation seconds over {len(sims)} runs: {', '.join(f'{s:.2f}' for s in sims)}.\n\n" + table)
    print(body)
    write_section("overhead", body)


if __name__ == "__main__":
    main()
