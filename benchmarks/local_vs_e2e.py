"""Local learning against end to end: a study searched once per sampler seed 0, 1 and 2.

For every seed the study (default studies/quickstart.yaml; ``--study`` another, e.g.
studies/segmentation_scenes.yaml; each seed in its own output folder in a temporary directory) is
searched in full; the table gives the E2E reference and the best local design that needs under 50%
of its peak memory. Writes section ``local-vs-e2e`` (quickstart) or ``local-vs-e2e-<task>`` of
docs/results.md. Run: ``OMP_NUM_THREADS=1 python benchmarks/local_vs_e2e.py [--study FILE]``
(``--quick``: 4 trials of 1 epoch per seed, printed only, nothing written under docs/).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
import yaml
from _common import ROOT, markdown_table, provenance, write_section

from auxsearch.records import records
from auxsearch.report import families
from auxsearch.study import open_study, optimize, prepare

QUICKSTART = ROOT / "studies" / "quickstart.yaml"
SEEDS = (0, 1, 2)
LIMIT = 0.5  # a local design must need under this fraction of the E2E peak
MIB = 2**20


def study_file(source: Path, tmp: Path, seed: int, quick: bool) -> Path:
    """A copy of the study with its own sampler seed and output folder."""
    raw = yaml.safe_load(source.read_text())
    raw.update(search_space=str((source.parent / raw["search_space"]).resolve()),
               output=str(tmp / f"seed{seed}" / "run"), sampler={**raw["sampler"], "seed": seed})
    if quick:
        raw.update(n_trials=4, train={**raw["train"], "epochs": 1})
    path = tmp / f"seed{seed}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def run_seed(path: Path) -> dict:
    """Search one study to its n_trials; the E2E record, the best design under the limit, counts."""
    run = prepare(path)
    study = open_study(run)
    start = time.perf_counter()
    optimize(run, study, run.cfg.n_trials, run.cfg.timeout, progress=False, seed=run.cfg.sampler.seed)
    recs = records(study)
    e2e = next(r for r in recs if r["is_e2e"] and r["state"] == "COMPLETE")
    cap = LIMIT * e2e["peak_memory_bytes"]
    local = [r for r in recs if r["state"] == "COMPLETE" and not r["is_e2e"] and r["peak_memory_bytes"] < cap]
    best = max(local, key=lambda r: (r["score"], -r["peak_memory_bytes"], -r["number"]), default=None)
    states = [r["state"] for r in recs]
    return {"e2e": e2e, "best": best, "n_under": len({r["design_hash"] for r in local}), "metric": run.metric,
            "task": run.base["task"]["name"],
            "minutes": (time.perf_counter() - start) / 60, "n_trials": run.cfg.n_trials,
            "counts": {s: states.count(s) for s in ("COMPLETE", "PRUNED", "INFEASIBLE", "FAIL") if s in states}}


def spread(values: list[float], spec: str) -> str:
    if not values:
        return "-"
    return f"{format(statistics.mean(values), spec)} ({format(min(values), spec)} to {format(max(values), spec)})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: 4 tiny trials per seed, nothing written")
    ap.add_argument("--study", type=Path, default=QUICKSTART, help="the study file (default: the quickstart)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in SEEDS:
            results[seed] = run_seed(study_file(args.study.resolve(), Path(tmp), seed, args.quick))
            print(f"seed {seed}: {results[seed]['minutes']:.1f} min, {results[seed]['counts']}", flush=True)
    rows, found = [], {}
    for seed, res in results.items():
        e2e, best = res["e2e"], res["best"]
        e2e_cells = [seed, f"{e2e['score']:.4f}", f"{e2e['peak_memory_bytes'] / MIB:.2f}",
                     ", ".join(f"{n} {s.lower()}" for s, n in res["counts"].items()), res["n_under"]]
        if best is None:
            rows.append([*e2e_cells, f"none under {LIMIT:.0%} of E2E", "-", "-", "-", "-", "-"])
            continue
        scale = 1 if res["metric"] == "psnr" else 100
        ratio, gap = best["peak_memory_bytes"] / e2e["peak_memory_bytes"], scale * (e2e["score"] - best["score"])
        found[seed] = (best["score"], ratio, gap)
        rows.append([*e2e_cells, f"#{best['number']}", best["K"], families(best["design"]), f"{best['score']:.4f}",
                     f"{ratio:.2f}x", f"{gap:+.2f}"])
    metric, task = results[SEEDS[0]]["metric"], results[SEEDS[0]]["task"]
    e2e_acc = [r["e2e"]["score"] for r in results.values()]
    e2e_mib = [r["e2e"]["peak_memory_bytes"] / MIB for r in results.values()]
    summary = [[f"E2E {metric}", spread(e2e_acc, ".4f")], ["E2E peak (MiB)", spread(e2e_mib, ".2f")]]
    for i, (name, spec) in enumerate(((f"best local {metric}", ".4f"), ("its peak / E2E peak", ".2f"),
                                      (f"{metric} gap to E2E ({unit(metric)})", "+.2f"))):
        summary.append([name, spread([v[i] for v in found.values()], spec)])
    missing = [s for s in SEEDS if s not in found]
    n_trials = results[SEEDS[0]]["n_trials"]
    rel = args.study.resolve().relative_to(ROOT) if args.study.resolve().is_relative_to(ROOT) else args.study
    title = "classification" if task == "classification" else task
    body = "\n".join([
        f"## Local learning against end to end ({title})", "", provenance(), "",
        f"The study `{rel}`{' (--quick)' if args.quick else ''} ({task}, {n_trials} trials with the E2E "
        f"reference as trial 0 and its enqueued designs next, TPE, pruning on) searched once per sampler seed "
        f"{', '.join(map(str, SEEDS))}; each seed in its own output folder. The training seed stays the "
        "study's, so the E2E reference trains identically in every run and the spread below is the search's "
        f"alone. Per seed: the best COMPLETE local design (K >= 2) whose measured peak is under {LIMIT:.0%} of "
        f"E2E's (ties: the lower peak), and its {metric} gap to E2E in {unit(metric)} (positive: E2E is "
        "better). Minutes per run: " + ", ".join(f"{r['minutes']:.1f}" for r in results.values()) + ".", "",
        markdown_table(["seed", f"E2E {metric}", "E2E peak MiB", "trials", f"designs < {LIMIT:.0%}", "best trial",
                        "K", "families", metric, "peak vs E2E", f"gap ({unit(metric)})"], rows), "",
        "Over the seeds (mean, min to max"
        + (f"; the local rows over the {len(found)} seed(s) with a design under the limit" if missing else "")
        + "):", "",
        markdown_table(["quantity", "mean (min to max)"], summary), "",
        *([f"No design under {LIMIT:.0%} of E2E's peak was completed for seed(s) {missing}.", ""] if missing else []),
    ])
    print(body)
    if not args.quick:
        section = "local-vs-e2e" if task == "classification" else f"local-vs-e2e-{task}"
        print(f"wrote {write_section(section, body)}")


def unit(metric: str) -> str:
    return "dB" if metric == "psnr" else "points"


if __name__ == "__main__":
    main()
