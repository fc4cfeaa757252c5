"""The run folder: what a study leaves behind, and how later commands read it.

    runs/<name>/run.yaml            what was run (study file, storage, recipe), paths relative to the folder
    runs/<name>/study.journal       the Optuna journal (default storage)
    runs/<name>/trials.csv          every trial (validation score; test mean/std where confirmed)
    runs/<name>/pareto.yaml         the front (confirmed when confirmation ran), E2E reference beside it
    runs/<name>/designs/trial-N.yaml  each front design, ready for ``auxsearch train``
    runs/<name>/report.html         the interactive report (opens offline)

Every file is written whole or not at all (:func:`auxsearch.outputs.files.atomic_write`).
"""

from __future__ import annotations

import csv
import datetime as _dt
import json
import os
import sys
from pathlib import Path
from typing import Any

import yaml

from auxsearch.config import to_mapping
from auxsearch.errors import ConfigError
from auxsearch.outputs.files import atomic_write, atomic_write_text, remove_stale_temporaries
from auxsearch.outputs.rows import FrontView, front_view
from auxsearch.outputs.tables import document
from auxsearch.pareto import TrialRecord
from auxsearch.store.records import load_records
from auxsearch.store.storage import StorageURL

META = "run.yaml"


def run_meta(p) -> dict[str, Any]:
    """What later commands need to know about a run (plain data). ``p``: a prepared study."""
    # Exported designs must find the data from anywhere: every path key of the data set made absolute.
    url = StorageURL(p.storage_url).relative_to(p.out_dir)  # the run folder can be moved
    return {"name": p.cfg.name, "study_file": _relative(p.path, p.out_dir), "storage": url, "metric": p.metric,
            "objectives": list(p.cfg.objectives), "memory_mode": p.cfg.memory.mode,
            "memory_budget_bytes": p.budget, "data": p.data_cfg(), "train": to_mapping(p.cfg.train),
            "recipe": recipe(p), "study": recorded_study(p),
            "created": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "command": "auxsearch " + " ".join(sys.argv[1:]) if sys.argv[1:] else "auxsearch run"}


# What may change between two `auxsearch run`s into one folder: the budget of the search and of its confirmation.
RESUMABLE = ("n_trials", "timeout", "confirm.seeds", "confirm.max_designs", "storage", "output", "name")


def recipe(p) -> dict[str, Any]:
    """The parsed study as it decides what a trial trains (comments, layout and budgets aside), with the
    search space's dimensions in place of its file name."""
    from auxsearch.config import load_yaml

    out = to_mapping(p.cfg)
    space = out["search_space"]
    if isinstance(space, str):
        path = Path(space) if Path(space).is_absolute() else p.path.parent / space
        out["search_space"] = load_yaml(path.read_text()) if path.is_file() else space
    for key in RESUMABLE:
        head, _, leaf = key.partition(".")
        (out[head].pop(leaf, None) if leaf else out.pop(head, None))
    return json.loads(json.dumps(out, default=str))  # plain data, as YAML stores it


def recorded_study(p) -> dict[str, Any]:
    """The whole parsed study, as ``confirm`` rebuilds it from the run folder alone: the search space inlined,
    the data set's paths and enqueued design files absolute, the storage and output left to the folder."""
    out = {**recipe(p), "name": p.cfg.name, "n_trials": p.cfg.n_trials, "timeout": p.cfg.timeout,
           "confirm": to_mapping(p.cfg.confirm), "data": p.data_cfg()}
    out["enqueue"] = [e if (p.path.parent / e).suffix not in (".yaml", ".yml") else str((p.path.parent / e).resolve())
                      for e in p.cfg.enqueue]
    return out


def changed_keys(old: Any, new: Any, prefix: str = "") -> list[str]:
    """The dotted keys whose values differ between two recipes."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in sorted(set(old) | set(new), key=str):
            out += changed_keys(old.get(k), new.get(k), f"{prefix}{k}.")
        return out
    return [] if old == new else [prefix.rstrip(".")]


def check_resume(p, *, fresh: bool = False) -> None:
    """A rerun into an existing run folder: the same recipe resumes; another one stops (or, ``fresh``,
    the old folder is moved aside and the run starts over)."""
    path = p.out_dir / META
    if not path.is_file():
        return
    if fresh:
        if StorageURL(p.storage_url).journal is None:
            raise ConfigError("--fresh", f"the study lives in {p.storage_url}, not in the run folder: give the study "
                              "another name to start over there")
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        aside = p.out_dir.with_name(f"{p.out_dir.name}.old-{stamp}")
        p.out_dir.rename(aside)
        print(f"auxsearch: moved the old run folder to {aside}; starting over", file=sys.stderr)
        return
    try:
        old = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError:
        old = {}
    if not isinstance(old, dict) or "recipe" not in old:
        return  # a run folder from before recipes were recorded: nothing to compare with
    diff = changed_keys(old["recipe"], recipe(p))
    if diff:
        shown = ", ".join(diff[:8]) + (f" and {len(diff) - 8} more" if len(diff) > 8 else "")
        raise ConfigError("", f"{p.out_dir} holds a run of another recipe ({shown} changed since it started); "
                          "trials of two recipes would share one front. Run with --fresh to move the old folder "
                          "aside and start over, or give the study another `output` folder (n_trials, timeout "
                          "and confirm.seeds / max_designs may change on a resume)")


def _relative(path: Path, folder: Path) -> str:
    """``path`` relative to ``folder`` when both are on one file system tree (a moved pair still resolves)."""
    try:
        return os.path.relpath(path, folder)
    except ValueError:  # another drive (Windows)
        return str(path)


def write_meta(out_dir: Path, meta: dict) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / META, yaml.safe_dump(meta, sort_keys=False))


def read_meta(run_dir: str | Path) -> dict:
    """``run.yaml`` with the storage URL and the study file resolved against the run folder."""
    run_dir = Path(run_dir)
    path = run_dir / META
    if not path.is_file():
        raise ConfigError("", f"{run_dir} is not an auxsearch run folder (no {META}); "
                          "give the output folder of `auxsearch run`")
    try:
        meta = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError("", f"{path}:{where} is damaged (invalid YAML: {getattr(exc, 'problem', exc)})") from None
    missing = [k for k in ("name", "storage", "metric", "data", "train") if not isinstance(meta, dict) or k not in meta]
    if missing:
        raise ConfigError("", f"{path} is damaged: missing {', '.join(missing)}")
    meta["storage"] = StorageURL(meta["storage"]).resolved_in(run_dir)
    if meta.get("study_file"):
        meta["study_file"] = str((run_dir / meta["study_file"]).resolve())
    return meta


def load_run(run_dir: str | Path) -> tuple[dict, list[TrialRecord]]:
    meta = read_meta(run_dir)
    return meta, load_records(meta["storage"], meta["name"])


def recipe_design(record: dict, meta: dict) -> dict:
    """A record's design with the run's data and training recipe: a self-contained design."""
    return {**record["design"], "data": dict(meta["data"]), "train": dict(meta["train"])}


def write_outputs(out_dir: Path, meta: dict, records: list[TrialRecord]) -> dict[str, Path]:
    """(Re)write every output file of a run folder from its records, each one whole."""
    from auxsearch.design.graph import save_design
    from auxsearch.outputs import (
        report,  # plotly: only the commands that write the report import it
    )

    out_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out_dir)
    view = front_view(records)
    paths = {"trials": atomic_write(out_dir / "trials.csv", lambda tmp: _write_csv(tmp, records))}
    designs = out_dir / "designs"
    for r in view.front:
        design = recipe_design(r, meta)
        atomic_write(designs / f"trial-{r['trial']}.yaml", lambda tmp, d=design: save_design(d, tmp))
    paths["pareto"] = atomic_write(out_dir / "pareto.yaml", lambda tmp: _write_pareto(tmp, meta, view))
    paths["report"] = atomic_write(out_dir / "report.html", lambda tmp: report.write_report(view, meta, tmp))
    return paths


def _write_pareto(path: Path, meta: dict, view: FrontView) -> Path:
    doc = document(view, meta, design=lambda r: recipe_design(r, meta))
    doc.pop("search_front")  # the machine-readable search front is `show --json`'s
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _write_csv(path: Path, records: list[TrialRecord]) -> Path:
    names = sorted({k for r in records for k in r["params"]})
    metrics = sorted({k for r in records for k in r.get("scores", {})})  # every metric the task reports
    cols = ["trial", "reference", "state", "score", "peak_memory_bytes", "measured_peak_bytes", "seconds",
            "design_hash", "K", "is_e2e", "over_budget", "reused_from", "epochs", "reason", "confirm_seeds",
            "val_mean", "val_std", "test_mean", "test_std"]
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols + [f"metric:{m}" for m in metrics] + [f"param:{n}" for n in names])
        for r in records:
            c = r.get("confirmed")
            row = {**r, "epochs": len(r["history"])}
            if c:
                row.update(confirm_seeds=len(c["seeds"]), val_mean=c["val"]["mean"], val_std=c["val"]["std"],
                           test_mean=c["test"]["mean"], test_std=c["test"]["std"])
            w.writerow([row.get(c) for c in cols] + [r.get("scores", {}).get(m) for m in metrics]
                       + [r["params"].get(n) for n in names])
    return path
