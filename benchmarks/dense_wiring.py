"""Dense tasks: E2E, the best local end, its global ends and global-local ends (``through: adapter``), over seeds.

Issue 16's evidence, under the evaluation protocol (validation chooses, test reports with fresh seeds):
for detection, segmentation and super-resolution, with each study's recipe and data (``studies/``):

1. **Choose** the local design on validation. With a finished search in ``runs/<study>`` (``auxsearch
   run studies/<study>.yaml``), its best-scoring COMPLETE local design with K >= 3 whose aux
   families can end globally (dgl, momentum), else its best K >= 3 design with dgl aux nets (depth 1,
   width 32). Without one, candidates trained once with the study's seed: K = 3 and 4 with split
   points balanced by activation memory, dgl and momentum aux nets (depth 1, width 32); the best
   validation score wins.
2. **Report** with the study's seed + 1, + 2, + 3 (never the seed that chose), scored on validation
   and on the held-out test split, mean +- sample std: E2E, the chosen local end, and that design's
   cheap global ends through adapters, reading the feature bank of the head's detached inputs:
   ``end: global`` (the real head shared), ``global_ema`` (its EMA copy), ``global_copy`` (a
   trainable copy per module), and GLCAN's global-local ends (``global_weight: 0.5``: half the
   loss from the chosen local head) with the EMA copy and with the trainable copy.
3. **Aim** (issue 16): a design at <= 0.7x E2E's peak whose test mean is within E2E's seed spread
   (>= E2E's test mean - its std; every metric here is higher-is-better) on at least two of the three
   tasks; the script says plainly per task whether one exists.

Peak: measured on the first training step (CPU: our allocation counter; identical across seeds).
Writes section ``dense-wiring`` of docs/results.md.

``--budget F`` chooses under a memory budget instead, as a user reading the front would: the study's
best-scoring COMPLETE local design (any K >= 2, any family) whose recorded peak is at most F x the E2E
reference's recorded peak (both measured by the search on one device); reported as that design's local
end and its global ends through adapters (dgl aux nets at the same splits when its families cannot end
globally), written to section ``dense-budget``.

Run: ``OMP_NUM_THREADS=2 python benchmarks/dense_wiring.py`` (about 35-45 min on 2 free CPU cores);
``--quick``: 1 seed, 1 epoch, a small slice of the data, one candidate, printed only;
``--memory``: peaks only (no training): local vs global ends vs copies vs E2E, measured and simulated,
printed only.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import torch
from _common import ROOT, markdown_table, provenance, write_section

from auxsearch.design.families import global_families
from auxsearch.design.graph import design_hash
from auxsearch.design.space import balanced_splits
from auxsearch.model.engine import end_to_end
from auxsearch.outputs.rows import families
from auxsearch.search.prepare import prepare
from auxsearch.store.records import load_records
from auxsearch.tasks import get_task
from auxsearch.train import memory
from auxsearch.train.loop import fit

STUDIES = {"detection": "detection_scenes", "segmentation": "segmentation_scenes", "superres": "superres_photos"}
N_SEEDS = 3
AIM_PEAK = 0.7  # issue 16: a design at <= 0.7x E2E's peak ...
MIB = 2**20
WIRING_KEYS = ("end", "global_weight", "through", "through_momentum")
HEAD_KEYS = ("depth", "width", "pool", "head")  # a global end has no head of its own
CANDIDATE = {"depth": 1, "width": 32}
# --quick: a slice of each embedded data set, so a training takes seconds
QUICK_DATA = {"scenes": {"num_train": 64, "num_test": 32}, "photos": {"patches_per_epoch": 64, "test_crops": 1}}


# ----------------------------------------------------------------------------------- designs


def local_entry(entry: dict) -> dict:
    """``entry`` as a local end (a study's global end alone gets a light head)."""
    out = {k: v for k, v in entry.items() if k not in WIRING_KEYS}
    if entry.get("end", "local") != "local" and not any(k in entry for k in HEAD_KEYS):
        out.update(CANDIDATE)
    return out


def global_entry(entry: dict, end: str, weight: float = 1.0) -> dict:
    """The local ``entry`` ending globally through adapters; ``weight`` < 1 keeps its local head beside."""
    keep = () if weight < 1 else HEAD_KEYS
    out = {k: v for k, v in entry.items() if k not in keep and k not in WIRING_KEYS}
    out.update(end=end, through="adapter")
    if weight < 1:
        out["global_weight"] = weight
    return out


GLOBAL_ROWS = {"global via adapter": ("global", 1.0), "global_ema via adapter": ("global_ema", 1.0),
               "global_copy via adapter": ("global_copy", 1.0),
               "global_ema + local head, w 0.5": ("global_ema", 0.5),
               "global_copy + local head, w 0.5": ("global_copy", 0.5)}


def rows_for(local: dict) -> dict[str, dict]:
    """The reported designs besides E2E: the local end, its global ends and its global-local ends."""
    out = {"best local end": local}
    for name, (end, weight) in GLOBAL_ROWS.items():
        out[name] = {**local, "aux": [global_entry(a, end, weight) for a in local["aux"]]}
    return out


def globally_able(aux: list[dict]) -> bool:
    """Every aux family of a design can end globally."""
    return all(a["family"] in global_families() for a in aux)


def end_bases(aux: list[dict]) -> list[dict]:
    """The aux nets a design's global ends are built on: its own as local ends, else dgl ones at its splits."""
    return [local_entry(a) for a in aux] if globally_able(aux) else [{"family": "dgl", **CANDIDATE}] * len(aux)


def from_study(run) -> tuple[dict, str] | None:
    """The local design a finished search chose on validation (None: no search in runs/)."""
    if not run.out_dir.is_dir():  # never create a run folder or storage here
        return None
    try:
        recs = load_records(run.storage_url, run.cfg.name)
    except Exception:  # noqa: BLE001 - a run folder without this study in it: fall back to candidates
        return None
    deep = [r for r in recs if r["state"] == "COMPLETE" and not r["is_e2e"] and r["K"] >= 3]
    if not deep:
        return None
    rank = lambda r: (r["score"], -r["peak_memory_bytes"], not r["reference"], -r["number"])  # noqa: E731
    able = [r for r in deep if globally_able(r["design"]["aux"])]
    best = max(able or deep, key=rank)
    aux = end_bases(best["design"]["aux"])
    how = f"trial {best['trial']} of runs/{run.cfg.name}" + ("" if able else ", aux nets as dgl")
    return {**best["design"], "aux": aux}, how


def under_budget(run, budget: float) -> tuple[dict, str, list[dict] | None]:
    """The study's best validation design at <= ``budget`` x E2E's recorded peak, and its aux for global ends."""
    if not run.out_dir.is_dir():
        raise SystemExit(f"--budget needs a finished search in {run.out_dir}: auxsearch run {run.path}")
    recs = [r for r in load_records(run.storage_url, run.cfg.name) if r["state"] == "COMPLETE"]
    e2e = [r for r in recs if r["is_e2e"]]
    if not e2e:
        raise SystemExit(f"{run.out_dir} holds no E2E reference: rerun `auxsearch run {run.path}`")
    cap = budget * e2e[0]["peak_memory_bytes"]
    fits = [r for r in recs if not r["is_e2e"] and r["peak_memory_bytes"] <= cap]
    if not fits:
        raise SystemExit(f"no local design of {run.cfg.name} at <= {budget}x E2E's peak")
    best = max(fits, key=lambda r: (r["score"], -r["peak_memory_bytes"], -r["number"]))
    design = best["design"]
    able = globally_able(design["aux"])
    ends = end_bases(design["aux"])
    how = (f"trial {best['trial']} of runs/{run.cfg.name} (best validation score at "
           f"{best['peak_memory_bytes'] / e2e[0]['peak_memory_bytes']:.2f}x E2E's recorded peak, budget {budget}x"
           + ("" if able else "; global ends on dgl aux nets at its splits") + ")")
    return design, how, ends


def candidates(run, quick: bool) -> list[dict]:
    out = []
    for k in (3,) if quick else (3, 4):
        splits = balanced_splits(run.unit_costs, k)
        for fam in ("dgl",) if quick else ("dgl", "momentum"):
            out.append({**run.base, "splits": splits, "aux": [{"family": fam, **CANDIDATE}] * (k - 1)})
    return out


# ----------------------------------------------------------------------------------- training


def data_block(run, quick: bool):
    """The study's data (already loaded), or a small slice of it for --quick."""
    if not quick:
        return run.data
    name = run.cfg.data.get("name")
    return {**run.cfg.data, **QUICK_DATA.get(name, {})}


def train(design: dict, run, seed: int, quick: bool, test: bool) -> tuple[float, float | None, int]:
    cfg = dataclasses.replace(run.cfg.train, seed=seed, **({"epochs": 1} if quick else {}))
    r = fit(design, train=cfg, data=data_block(run, quick), base_dir=run.path.parent, final_test=test)
    return r.score, (r.test_scores or {}).get(run.metric), r.peak_memory_bytes


def choose(run, quick: bool) -> tuple[dict, str]:
    found = None if quick else from_study(run)
    if found is not None:
        return found
    seed = run.cfg.train.seed
    scored = []
    for d in candidates(run, quick):
        val, _, _ = train(d, run, seed, quick, test=False)
        scored.append((val, d))
        print(f"  candidate K={len(d['splits']) + 1} {families(d)} splits {d['splits']}: val {val:.4f}", flush=True)
    val, best = max(scored, key=lambda t: t[0])
    return best, f"best of {len(scored)} candidates on validation (seed {seed}, val {val:.4f})"


def spread(xs: list[float]) -> str:
    sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return f"{statistics.mean(xs):.4f} ± {sd:.4f}"


BUDGET_ROWS = ("best local end", "global via adapter", "global_ema via adapter", "global_copy via adapter")


def bench_task(task: str, quick: bool, budget: float | None = None) -> tuple[list[list], str, str]:
    run = prepare(ROOT / "studies" / f"{STUDIES[task]}.yaml")
    t0 = time.perf_counter()
    if budget is None:
        local, how = choose(run, quick)
        runs = {"E2E": end_to_end(local), **rows_for(local)}
    else:
        local, how, ends = under_budget(run, budget)
        wired = rows_for({**local, "aux": ends})
        runs, seen = {"E2E": end_to_end(local), "chosen design (as searched)": local}, {design_hash(local)}
        chosen_local = all(a.get("end", "local") == "local" for a in local["aux"])
        for name in BUDGET_ROWS:  # the chosen design may itself be one of its ends: train each design once
            if name == "best local end" and chosen_local:
                continue  # the chosen design is a local end already
            if design_hash(wired[name]) not in seen:
                seen.add(design_hash(wired[name]))
                runs[name] = wired[name]
    seeds = [run.cfg.train.seed + 1 + i for i in range(1 if quick else N_SEEDS)]
    got = {}
    for name, d in runs.items():
        got[name] = [train(d, run, s, quick, test=True) for s in seeds]
        print(f"  {name}: val {spread([g[0] for g in got[name]])}, test {spread([g[1] for g in got[name]])}, "
              f"peak {got[name][0][2] / MIB:.1f} MiB", flush=True)
    e2e_test = [g[1] for g in got["E2E"]]
    e2e_peak = got["E2E"][0][2]
    bar = statistics.mean(e2e_test) - (statistics.stdev(e2e_test) if len(e2e_test) > 1 else 0.0)
    rows, hits = [], []
    for name, res in got.items():
        d, peak = runs[name], res[0][2]
        tests = [r[1] for r in res]
        within = statistics.mean(tests) >= bar
        aim = name != "E2E" and within and peak <= AIM_PEAK * e2e_peak
        if aim:
            hits.append(name)
        rows.append([task, name, len(d["splits"]) + 1, families(d) if d["aux"] else "-",
                     spread([r[0] for r in res]), spread(tests), f"{peak / MIB:.1f}", f"{peak / e2e_peak:.2f}x",
                     "yes" if within else "no"])
        print(" | ".join(map(str, rows[-1])), flush=True)
    verdict = (f"{task}: met by {', '.join(hits)}" if hits else
               f"{task}: **not met** (no design at <= {AIM_PEAK}x E2E's peak within E2E's test spread)")
    note = f"{task} ({run.metric}): local design from {how}; {(time.perf_counter() - t0) / 60:.1f} min"
    return rows, note, verdict


# ----------------------------------------------------------------------------------- memory only


def bench_memory(task: str) -> list[list]:
    """Peaks of one training step at the study's batch and size: local vs global ends vs copies vs E2E."""
    run = prepare(ROOT / "studies" / f"{STUDIES[task]}.yaml")
    bs, cfg, rows = run.cfg.train.batch_size, run.cfg.train, []
    sim = get_task(task).simulatable

    def peaks(d: dict) -> tuple[int, int | None]:
        return memory.measure(d, bs, train=cfg), memory.simulate(d, bs, train=cfg) if sim else None

    e2e, e2e_sim = peaks({**run.base, "splits": [], "aux": []})
    for k in (3, 4):
        splits = balanced_splits(run.unit_costs, k)
        for fam in ("dgl", "momentum"):
            for width in (16, 32):
                local = {**run.base, "splits": splits, "aux": [{"family": fam, "depth": 1, "width": width}] * (k - 1)}
                base, base_sim = peaks(local)
                for end, through in (("local", None), ("global", "adapter"), ("global_ema", "adapter"),
                                     ("global", "ema")):
                    if end == "local":
                        peak, peak_sim = base, base_sim
                    elif width != 16:
                        continue  # a global end has no head of its own: the same design for every width
                    else:
                        peak, peak_sim = peaks({**local, "aux": [global_entry(a, end, False) | {"through": through}
                                                                 for a in local["aux"]]})
                    label = f"local (depth 1, width {width})" if end == "local" else f"{end}, through {through}"
                    agree = "n/a (measured only)" if peak_sim is None else ("yes" if peak_sim == peak else
                                                                             f"no ({peak_sim / MIB:.2f})")
                    rows.append([task, k, splits, fam, label, f"{peak / MIB:.1f}", agree,
                                 "-" if end == "local" else f"{peak / base:.2f}x", f"{peak / e2e:.2f}x"])
                    print(" | ".join(map(str, rows[-1])), flush=True)
    rows.append([task, 1, [], "-", "E2E", f"{e2e / MIB:.1f}",
                 "n/a (measured only)" if e2e_sim is None else ("yes" if e2e_sim == e2e else "no"), "-", "1.00x"])
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1 seed, 1 epoch, a slice of the data; nothing written")
    ap.add_argument("--memory", action="store_true", help="peak memory only (no training); nothing written")
    ap.add_argument("--tasks", nargs="*", default=list(STUDIES), choices=list(STUDIES))
    ap.add_argument("--budget", type=float, default=None,
                    help="choose the study's best design at <= this x E2E's recorded peak (writes dense-budget)")
    args = ap.parse_args()
    if args.budget is not None and not 0 < args.budget <= 1:
        ap.error(f"--budget must be in (0, 1], got {args.budget}")
    if args.budget is not None and args.quick:
        ap.error("--budget reads the study's search in runs/; --quick trains a slice of the data: use one of them")
    torch.set_num_threads(1 if args.memory or args.quick else 2)
    if args.memory:
        rows = [r for task in args.tasks for r in bench_memory(task)]
        print(markdown_table(["task", "K", "splits", "aux", "end", "peak MiB", "simulated = measured",
                              "vs local (width 16)", "vs E2E"], rows))
        return
    rows, notes, verdicts = [], [], []
    for task in args.tasks:
        r, note, verdict = bench_task(task, args.quick, args.budget)
        rows += r
        notes.append(note)
        verdicts.append(verdict)
    met = sum("not met" not in v for v in verdicts)
    seeds = "the study's seed + 1" if args.quick else f"the study's seed + 1 .. + {N_SEEDS}"
    body = "\n".join([
        "## Dense tasks: E2E, the best local end, global and global-local ends (`through: adapter`)", "",
        provenance(), "",
        "Protocol (benchmarks/dense_wiring.py): the local design is chosen on validation (the study's search in "
        "`runs/` when there is one, else dgl / momentum candidates at K = 3, 4 with memory-balanced splits, trained "
        "once with the study's seed); every row is then trained with " + seeds + ", scored on validation and on "
        "the held-out test split (mean ± sample std). Global ends: the local design's aux nets ending with the real "
        "head (`global`), its EMA copy (`global_ema`) or a trainable copy per module (`global_copy`) through 1x1 "
        "adapters to the head's taps, reading the feature bank of its detached inputs; global-local: the same with "
        "`global_weight: 0.5` and the local design's head beside it. Scores: detection mAP@[.5:.95], segmentation mIoU, super-resolution PSNR "
        "(dB, Y channel). Peak: measured on the first step (CPU, our allocation counter). 'within E2E spread': "
        "test mean >= E2E's test mean - E2E's test std. " + "; ".join(notes) + ".", "",
        markdown_table(["task", "design", "K", "aux", "val (mean ± std)", "test (mean ± std)", "peak MiB",
                        "peak vs E2E", "within E2E spread"], rows), "",
        f"Aim (issue 16: a design at <= {AIM_PEAK}x E2E's peak within E2E's test spread on at least two of the three "
        f"tasks): met on {met} of the {len(verdicts)} tasks run. " + "; ".join(verdicts) + ".",
    ])
    if args.budget is not None:
        body = body.replace(
            "## Dense tasks: E2E, the best local end, global and global-local ends (`through: adapter`)",
            f"## Dense tasks under a memory budget: the study's best design at <= {args.budget}x E2E's peak and its "
            "global ends", 1).replace(
            "the local design is chosen on validation (the study's search in `runs/` when there is one, else dgl / "
            "momentum candidates at K = 3, 4 with memory-balanced splits, trained once with the study's seed)",
            f"`--budget {args.budget}`: the design is chosen on validation under a memory budget, the study's "
            f"best-scoring local design whose recorded peak is <= {args.budget}x the E2E reference's (any K, any "
            "family); its global ends use dgl aux nets at its splits when its families cannot end globally", 1).replace(
            "; global-local: the same with `global_weight: 0.5` and the local design's head beside it", "", 1)
    print(body)
    if not args.quick:
        print(f"wrote {write_section('dense-wiring' if args.budget is None else 'dense-budget', body)}")


if __name__ == "__main__":
    main()
