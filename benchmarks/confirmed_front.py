"""A study under the evaluation protocol: searched on validation, its front confirmed over seeds on test.

Runs the study end to end exactly as ``auxsearch run`` does (search, then confirmation of
the E2E reference and the search front with ``confirm.seeds`` fresh seeds) in a temporary
folder, and writes section ``confirmed-<study name>`` of docs/results.md: every confirmed
design with validation and test mean +- std, the memory ratio to E2E, which designs the
spread rule calls dominated, and the wall time of search and confirmation.

Run: ``python benchmarks/confirmed_front.py [--study studies/quickstart.yaml]``
(``--quick``: 4 trials of 1 epoch, 2 seeds, printed only; ``--no-timeout``: all ``n_trials``
whatever the study's ``timeout``, which a shared machine would otherwise let cut the search).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import yaml
from _common import ROOT, markdown_table, provenance, write_section

from auxsearch.commands import run_study
from auxsearch.outputs.rows import families
from auxsearch.pareto import clearly_dominates, confirmed, confirmed_front, e2e_record
from auxsearch.search.prepare import prepare

MIB = 2**20


def study_copy(source: Path, tmp: Path, quick: bool, no_timeout: bool = False) -> Path:
    raw = yaml.safe_load(source.read_text())
    if no_timeout:
        raw.pop("timeout", None)
    raw.update(search_space=str((source.parent / raw["search_space"]).resolve()) if isinstance(
        raw.get("search_space"), str) else raw.get("search_space"), output=str(tmp / "run"))
    if quick:
        raw.update(n_trials=4, train={**raw["train"], "epochs": 1}, confirm={"seeds": 2})
    path = tmp / source.name
    path.write_text(yaml.safe_dump(raw))
    return path


def table(recs: list[dict], metric: str) -> str:
    done = confirmed(recs)
    front = {r["trial"] for r in confirmed_front(recs)}
    e2e = e2e_record(recs)
    base = e2e["confirmed"]["peak_memory_bytes"] if e2e and e2e.get("confirmed") else None
    rows = []
    for r in sorted(done, key=lambda r: r["confirmed"]["peak_memory_bytes"]):
        c = r["confirmed"]
        beaters = [b["trial"] for b in done if b is not r and clearly_dominates(b, r)]
        note = "E2E reference" if r["is_e2e"] else ""
        note += (", " if note else "") + (f"dominated by #{', #'.join(map(str, beaters))}" if beaters
                                          else "confirmed front" if r["trial"] in front else "")
        rows.append([r["trial"], r["K"], families(r["design"]), len(c["seeds"]),
                     f"{c['val']['mean']:.4f} ± {c['val']['std']:.4f}", f"{c['test']['mean']:.4f} ± {c['test']['std']:.4f}",
                     f"{c['peak_memory_bytes'] / MIB:.1f}", f"{c['peak_memory_bytes'] / base:.2f}x" if base else "-",
                     f"{r['score']:.4f}", note])
    return markdown_table(["trial", "K", "families", "seeds", f"val {metric}", f"test {metric}", "peak MiB",
                           "vs E2E", "search val (1 seed)", "note"], rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--study", type=Path, default=ROOT / "studies" / "quickstart.yaml")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--no-timeout", action="store_true",
                    help="run all n_trials whatever the study's timeout (on a shared machine the timeout cuts the search)")
    ap.add_argument("--run-dir", type=Path, help="summarise this finished run folder (of --study) instead of running it")
    ap.add_argument("--minutes", type=float, help="with --run-dir: the wall time the run took, for the text")
    args = ap.parse_args()
    if args.run_dir:
        from auxsearch.outputs.runfolder import load_run

        prepared = prepare(args.study)
        _, recs = load_run(args.run_dir)
        minutes = args.minutes if args.minutes is not None else float("nan")
        return report(args, prepared, recs, minutes)
    with tempfile.TemporaryDirectory() as tmp:
        prepared = prepare(study_copy(args.study.resolve(), Path(tmp), args.quick, args.no_timeout))
        start = time.perf_counter()
        recs, _ = run_study(prepared, progress=False)
        minutes = (time.perf_counter() - start) / 60
    report(args, prepared, recs, minutes)


def report(args, prepared, recs, minutes: float) -> None:
    states = [r["state"] for r in recs]
    counts = ", ".join(f"{states.count(s)} {s.lower()}" for s in ("COMPLETE", "PRUNED", "INFEASIBLE", "FAIL")
                       if s in states)
    body = "\n".join([
        f"## Confirmed front: {prepared.cfg.name}", "",
        f"Study `{args.study.relative_to(ROOT) if args.study.is_relative_to(ROOT) else args.study}` searched on "
        f"validation ({len(recs)} trials: {counts}"
        f"{'; the study file timeout lifted: every trial ran' if getattr(args, 'no_timeout', False) else ''}), then the E2E reference and the search front "
        f"retrained with {prepared.cfg.confirm.seeds} fresh seeds each and scored on validation and test "
        f"(mean ± sample std). A design is dominated only when another with no more memory beats it on "
        f"validation by more than both spreads (docs/methodology.md). Search and confirmation together: "
        f"{minutes:.1f} min.", "", table(recs, prepared.metric), "", provenance()])
    print(body)
    if not args.quick:
        write_section(f"confirmed-{prepared.cfg.name}", body)


if __name__ == "__main__":
    main()
