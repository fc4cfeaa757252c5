"""The three embedded dense-task studies: wall time, trial outcomes and the Pareto front of each.

Reads the run folders that ``auxsearch run studies/<study>.yaml`` wrote under ``runs/`` (run
them first, one after the other, nothing else on the cores: the studies' ``timeout`` makes the
trial count depend on speed). Wall time is the first trial's start to the last trial's end, from
the study's own journal. Writes section ``dense-studies`` of docs/results.md.
Run: ``python benchmarks/dense_studies.py``.
"""

from __future__ import annotations

from _common import ROOT, markdown_table, provenance, write_section

from auxsearch.pareto import e2e_record, pareto_front
from auxsearch.records import records
from auxsearch.report import families
from auxsearch.storage import open_storage
from auxsearch.study import prepare

STUDIES = ("detection_scenes", "segmentation_scenes", "superres_photos")
MIB = 2**20


def wiring(design: dict) -> str:
    """The bank / end choices of a design's aux nets, compactly."""
    if not design or not design["aux"]:
        return "-"
    banked = [a for a in design["aux"] if a.get("bank", 0)]
    bank = f"bank {max(a['bank'] for a in banked)} ({banked[0]['bank_fusion']})" if banked else "bank 0"
    return f"{bank}, end {design['aux'][0].get('end', 'local')}"


def summarise(name: str) -> tuple[list[list], str]:
    import optuna

    run = prepare(ROOT / "studies" / f"{name}.yaml")
    study = optuna.load_study(study_name=run.cfg.name, storage=open_storage(run.storage_url))
    trials = study.get_trials(deepcopy=False)
    starts = [t.datetime_start for t in trials if t.datetime_start]
    ends = [t.datetime_complete for t in trials if t.datetime_complete]
    minutes = (max(ends) - min(starts)).total_seconds() / 60
    recs = records(study)
    states = [r["state"] for r in recs]
    counts = ", ".join(f"{states.count(s)} {s.lower()}" for s in ("COMPLETE", "PRUNED", "INFEASIBLE", "FAIL")
                       if s in states)
    e2e = e2e_record(recs)
    rows = []
    for r in sorted(pareto_front(recs) + ([e2e] if e2e not in pareto_front(recs) else []),
                    key=lambda r: r["peak_memory_bytes"]):
        rows.append([name, f"#{r['number']}", r["K"], families(r["design"]) if not r["is_e2e"] else "E2E",
                     wiring(r["design"]), f"{r['score']:.4f}", f"{r['peak_memory_bytes'] / MIB:.1f}",
                     f"{r['peak_memory_bytes'] / e2e['peak_memory_bytes']:.2f}x",
                     "front" if r in pareto_front(recs) else "dominated"])
    return rows, f"`{name}` ({run.metric}): {minutes:.1f} min, {len(recs)} trials ({counts})"


def main() -> None:
    rows, notes = [], []
    for name in STUDIES:
        r, note = summarise(name)
        rows += r
        notes.append(note)
    body = "\n".join([
        "## Dense tasks: the embedded studies", "", provenance(), "",
        "Each study run once with `auxsearch run studies/<study>.yaml` on this machine, one after the "
        "other, nothing else running; wall time from the study's journal: " + "; ".join(notes) + ". "
        "Rows: the Pareto front and the E2E reference (peak: measured first training step).", "",
        markdown_table(["study", "trial", "K", "aux", "bank / end", "score", "peak MiB", "vs E2E", ""], rows),
    ])
    print(body)
    print(f"wrote {write_section('dense-studies', body)}")


if __name__ == "__main__":
    main()
