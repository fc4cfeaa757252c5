"""The long-term feature bank (``bank_keep``) against the one-step bank, on the dense scene studies, over seeds.

For detection and segmentation (the tasks whose training items are fixed, so a sample's kept levels are
its own), with each study's recipe and data: an ablation of one mechanism, so nothing is chosen. The
design is K = 3 at the study's memory-balanced splits, where both aux nets end before the head's first
level (so both keep the deepest level): dgl aux nets ending globally through adapters (the real head
shared), with the one-step bank and with ``bank_keep`` = the training set's size (every sample keeps
its later levels for one epoch). Each trained with the study's seed + 1 .. + 3, scored on validation
and on the held-out test split (mean +- sample std), peak measured on the first steps. A row is called
better only when its validation gap exceeds both spreads (docs/methodology.md).

Writes section ``long-term-bank`` of docs/results.md. Run: ``OMP_NUM_THREADS=2 python
benchmarks/long_term_bank.py`` (about 25 min on 2 free cores).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from _common import ROOT, markdown_table, provenance, write_section
from dense_wiring import MIB, N_SEEDS, STUDIES, spread, train

from auxsearch.design.space import balanced_splits
from auxsearch.model.engine import build
from auxsearch.search.prepare import prepare

TASKS = ("detection", "segmentation")


def kept_levels(design: dict) -> str:
    """Which tap each aux net keeps per sample (unit indices)."""
    model = build(design)
    return "; ".join(f"module {k}: {a.global_end.kept or 'none'}" for k, a in enumerate(model.aux))


def bench(task: str) -> tuple[list[list], str]:
    run = prepare(ROOT / "studies" / f"{STUDIES[task]}.yaml")
    t0 = time.perf_counter()
    n = len(run.data.train)
    splits = balanced_splits(run.unit_costs, 3)
    one_step = {**run.base, "splits": splits, "aux": [{"family": "dgl", "end": "global", "through": "adapter"}] * 2}
    kept = {**one_step, "aux": [{**a, "bank_keep": n} for a in one_step["aux"]]}
    seeds = [run.cfg.train.seed + 1 + i for i in range(N_SEEDS)]
    got = {}
    for name, d in (("global via adapter, one-step bank", one_step), (f"same + long-term bank ({n} samples)", kept)):
        got[name] = (d, [train(d, run, s, False, test=True) for s in seeds])
        res = got[name][1]
        print(f"  {task} {name}: val {spread([r[0] for r in res])}, test {spread([r[1] for r in res])}, "
              f"peak {res[0][2] / MIB:.2f} MiB", flush=True)
    rows = []
    base_peak = next(iter(got.values()))[1][0][2]
    for name, (d, res) in got.items():
        rows.append([task, name, len(d["splits"]) + 1, spread([r[0] for r in res]), spread([r[1] for r in res]),
                     f"{res[0][2] / MIB:.2f}", f"{res[0][2] / base_peak:.3f}x"])
    (_, ra), (_, rb) = got.values()
    va, vb = [r[0] for r in ra], [r[0] for r in rb]
    gap = statistics.mean(vb) - statistics.mean(va)
    both = statistics.stdev(va) + statistics.stdev(vb)
    verdict = "better" if gap > both else "worse" if -gap > both else "within the spreads"
    note = (f"{task}: splits {splits}; kept levels {kept_levels(kept)}; validation gap {gap:+.4f} vs spreads {both:.4f}: "
            f"{verdict}; {(time.perf_counter() - t0) / 60:.1f} min")
    return rows, note


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", nargs="*", default=list(TASKS), choices=list(TASKS))
    args = ap.parse_args()
    torch.set_num_threads(2)
    rows, notes = [], []
    for task in args.tasks:
        r, note = bench(task)
        rows += r
        notes.append(note)
        print(note, flush=True)
    body = "\n".join([
        "## The long-term feature bank against the one-step bank", "", provenance(), "",
        "Protocol (benchmarks/long_term_bank.py): an ablation, nothing chosen: K = 3 at the study's memory-balanced "
        "splits, dgl aux nets ending globally through adapters, trained with and without `bank_keep` = the training "
        "set's size (each sample's later levels kept for one epoch and read when it comes back); the study's seed "
        "+ 1 .. + "
        f"{N_SEEDS}, mean ± sample std; peak measured on the first steps (CPU, our allocation counter). "
        "Called better or worse only when the validation gap exceeds both spreads. " + "; ".join(notes) + ".", "",
        markdown_table(["task", "design", "K", "val (mean ± std)", "test (mean ± std)", "peak MiB",
                        "peak vs one-step bank"], rows),
    ])
    print(body)
    print(f"wrote {write_section('long-term-bank', body)}")


if __name__ == "__main__":
    main()
