"""Dense tasks: E2E against the best local design each study found, with and without the bank and global end.

For each dense task the study in ``studies/`` must have been run first (``auxsearch run
studies/<study>.yaml``, its run folder under ``runs/``). From its records this script takes the
E2E reference and the best-scoring local design on which both mechanisms can act: K >= 3 (module
0 has nothing earlier to read, so a bank needs a second aux net) and a family that can end
globally (dgl, momentum); when the study completed none, its best K >= 3 design with its aux
nets turned into ``dgl`` (depth 1, width 32). It then retrains, for training seeds 0, 1 and 2,
E2E and four variants of that design: the bank off / on (``bank: 2, bank_fusion: add`` where it
had none, its own setting where it had one) crossed with the end local / global (``end: global,
through: ema`` where it was local, its own end where it was global). Same recipe and data as the
study. Writes section ``dense-wiring`` of docs/results.md.
Run: ``OMP_NUM_THREADS=2 python benchmarks/dense_wiring.py`` (``--quick``: 1 seed, 1 epoch, printed only).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from _common import ROOT, markdown_table, provenance, write_section

from auxsearch.families import global_families
from auxsearch.records import load_records
from auxsearch.report import families
from auxsearch.study import prepare
from auxsearch.training import fit

STUDIES = {"detection": "detection_scenes", "segmentation": "segmentation_scenes", "superres": "superres_photos"}
SEEDS = (0, 1, 2)
MIB = 2**20
PARAGRAPH = (  # the method, as printed above the table
    "Per task, the study's E2E reference and the best-scoring local design from `runs/<study>` on"
    " which both mechanisms can act (K >= 3, aux families that can end globally: dgl, momentum; "
    "otherwise the best K >= 3 design with dgl aux nets), retrained with training seeds {seeds} "
    "under the study's recipe, together with that design's bank x end variants: bank off / on "
    "(`bank: 2, bank_fusion: add` unless the search had chosen one), end local / global (`end: "
    "global, through: ema` unless the search had chosen a global end, which is then kept). "
    "Scores: detection mAP@[.5:.95], segmentation mIoU, super-resolution PSNR (dB, Y channel). "
    "Peak: measured on the first step (CPU, our allocation counter), identical across seeds. "
    "Timing: ")
WIRING_KEYS = ("bank", "bank_fusion", "end", "through", "through_momentum")


def best_local(records: list[dict]) -> tuple[dict, str]:
    """The design to vary, and how it was chosen."""
    deep = [r for r in records if r["state"] == "COMPLETE" and not r["is_e2e"] and r["K"] >= 3]
    rank = lambda r: (r["score"], -r["peak_memory_bytes"], -r["number"])  # noqa: E731
    able = [r for r in deep if all(a["family"] in global_families() for a in r["design"]["aux"])]
    if able:
        best = max(able, key=rank)
        return best["design"], f"trial {best['number']} as found"
    best = max(deep, key=rank)
    aux = [{"family": "dgl", "depth": 1, "width": 32, **{k: a[k] for k in WIRING_KEYS if k in a}}
           for a in best["design"]["aux"]]
    return {**best["design"], "aux": aux}, f"trial {best['number']}'s splits, aux nets as dgl"


HEAD_KEYS = ("depth", "width", "pool", "head")  # a global end has no head of its own


def rewire(entry: dict, bank: bool, glob: bool) -> dict:
    """``entry`` with the bank / global end switched as asked (kept as the study chose where on)."""
    out = {k: v for k, v in entry.items() if k not in WIRING_KEYS}
    if bank:
        out.update({k: entry[k] for k in ("bank", "bank_fusion") if k in entry} if entry.get("bank", 0) > 0
                   else {"bank": 2, "bank_fusion": "add"})
    if glob and entry["family"] in global_families():
        out = {k: v for k, v in out.items() if k not in HEAD_KEYS}
        keep = {k: entry[k] for k in ("end", "through", "through_momentum") if k in entry}
        out.update(keep if entry.get("end", "local") != "local" else {"end": "global", "through": "ema"})
    elif entry.get("end", "local") != "local":  # the study chose a global end: give it a light head
        out.update(depth=1, width=32)
    return out


def variants(design: dict) -> dict[str, dict]:
    """The found design and its bank x end variants (keys say which; 'found' marks the study's)."""
    out = {}
    for bank in (False, True):
        for glob in (False, True):
            aux = [rewire(a, bank, glob) for a in design["aux"]]
            out[f"bank {'on' if bank else 'off'}, end {aux[-1].get('end', 'local')}"] = {**design, "aux": aux}
    return out


def has(design: dict, key: str, neutral) -> bool:
    return any(a.get(key, neutral) != neutral for a in design["aux"])


def train(design: dict, run, seed: int, quick: bool) -> tuple[float, int]:
    cfg = {**vars(run.cfg.train), "seed": seed, **({"epochs": 1} if quick else {})}
    r = fit(design, train=cfg, data=run.data)
    return r.score, r.peak_memory_bytes


def bench_task(task: str, quick: bool) -> tuple[list[list], str]:
    run = prepare(ROOT / "studies" / f"{STUDIES[task]}.yaml")
    recs = load_records(run.storage_url, run.cfg.name)
    found, how = best_local(recs)
    e2e = {k: v for k, v in found.items()} | {"splits": [], "aux": []}
    seeds = SEEDS[:1] if quick else SEEDS
    rows, t0 = [], time.perf_counter()
    runs = {"E2E": e2e, **variants(found)}
    found_key = f"bank {'on' if has(found, 'bank', 0) else 'off'}, end {found['aux'][-1].get('end', 'local')}"
    e2e_peak = None
    for name, d in runs.items():
        got = [train(d, run, s, quick) for s in seeds]
        scores = [g[0] for g in got]
        peak = got[0][1]
        e2e_peak = e2e_peak or peak
        label = name + (" (as found)" if name == found_key else "")
        rows.append([task, label, len(d["splits"]) + 1, families(d) if d["aux"] else "-",
                     f"{statistics.mean(scores):.4f}", f"{min(scores):.4f} to {max(scores):.4f}",
                     f"{peak / MIB:.1f}", f"{peak / e2e_peak:.2f}x"])
        print(" | ".join(map(str, rows[-1])), flush=True)
    return rows, f"{task}: {run.metric}, design from {how}, {(time.perf_counter() - t0) / 60:.1f} min"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1 seed, 1 epoch per training, nothing written")
    ap.add_argument("--tasks", nargs="*", default=list(STUDIES), choices=list(STUDIES))
    args = ap.parse_args()
    torch.set_num_threads(2)
    rows, notes = [], []
    for task in args.tasks:
        r, note = bench_task(task, args.quick)
        rows += r
        notes.append(note)
    body = "\n".join([
        "## Dense tasks: E2E, the best local design found, and the bank / global end", "", provenance(), "",
        PARAGRAPH.format(seeds=", ".join(map(str, SEEDS[:1] if args.quick else SEEDS))) + "; ".join(notes) + ".", "",
        markdown_table(["task", "design", "K", "aux", "score (mean)", "score (min to max)", "peak MiB",
                        "peak vs E2E"], rows),
    ])
    print(body)
    if not args.quick:
        print(f"wrote {write_section('dense-wiring', body)}")


if __name__ == "__main__":
    main()
