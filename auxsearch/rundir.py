"""The run folder: what a study leaves behind, and how later commands read it.

    runs/<name>/run.yaml            what was run (study file, storage, recipe)
    runs/<name>/study.journal       the Optuna journal (default storage)
    runs/<name>/trials.csv          every trial
    runs/<name>/pareto.yaml         the non-dominated designs, E2E reference beside them
    runs/<name>/designs/trial-N.yaml  each Pareto design, ready for ``auxsearch train``
    runs/<name>/report.html         the interactive report (opens offline)
"""

from __future__ import annotations

import csv
import datetime as _dt
import sys
from pathlib import Path
from typing import Any

import yaml

from . import report
from .config import to_mapping
from .errors import ConfigError
from .graph import save_design

META = "run.yaml"


def run_meta(run) -> dict[str, Any]:
    """What later commands need to know about a run (plain data)."""
    data = dict(run.cfg.data)
    if isinstance(data.get("root"), str):  # exported designs must find the data from anywhere
        root = Path(data["root"])
        data["root"] = str(root if root.is_absolute() else (run.path.parent / root).resolve())
    url = run.storage_url
    if url.startswith("journal:") and Path(url[8:]).parent == run.out_dir:
        url = f"journal:{Path(url[8:]).name}"  # relative: the folder can be moved
    return {"name": run.cfg.name, "study_file": str(run.path), "storage": url, "metric": run.metric,
            "objectives": list(run.cfg.objectives), "memory_mode": run.cfg.memory.mode,
            "memory_budget_bytes": run.budget, "data": data, "train": to_mapping(run.cfg.train),
            "created": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "command": "auxsearch " + " ".join(sys.argv[1:]) if sys.argv[1:] else "auxsearch run"}


def write_meta(out_dir: Path, meta: dict) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / META).write_text(yaml.safe_dump(meta, sort_keys=False))


def read_meta(run_dir: str | Path) -> dict:
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
    if meta["storage"].startswith("journal:") and not Path(meta["storage"][8:]).is_absolute():
        meta["storage"] = f"journal:{run_dir.resolve() / meta['storage'][8:]}"
    return meta


def load_run(run_dir: str | Path) -> tuple[dict, list[dict]]:
    from .study import load_records

    meta = read_meta(run_dir)
    return meta, load_records(meta["storage"], meta["name"])


def recipe_design(record: dict, meta: dict) -> dict:
    """A record's design with the run's data and training recipe: a self-contained design."""
    return {**record["design"], "data": dict(meta["data"]), "train": dict(meta["train"])}


def write_outputs(out_dir: Path, meta: dict, records: list[dict]) -> dict[str, Path]:
    """(Re)write every output file of a run folder from its records."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"trials": _write_csv(out_dir / "trials.csv", records)}
    front = report.pareto_front(records)
    designs = out_dir / "designs"
    for r in front:
        save_design(recipe_design(r, meta), designs / f"trial-{r['number']}.yaml")
    paths["pareto"] = _write_pareto(out_dir / "pareto.yaml", meta, records, front)
    paths["report"] = report.write_report(records, meta, out_dir / "report.html")
    return paths


def _write_pareto(path: Path, meta: dict, records: list[dict], front: list[dict]) -> Path:
    e2e = report.e2e_record(records)
    e2e = e2e if e2e and e2e["state"] == "COMPLETE" else None
    ref = e2e["peak_memory_bytes"] if e2e else None

    def entry(r: dict) -> dict:
        return {"trial": r["number"], "score": r["score"], "scores": r.get("scores") or {},
                "peak_memory_bytes": r["peak_memory_bytes"],
                "ratio_to_e2e_memory": round(r["peak_memory_bytes"] / ref, 4) if ref else None,
                "seconds": r["seconds"], "design_hash": r["design_hash"], "K": r["K"],
                "design": recipe_design(r, meta)}

    doc = {"study": meta["name"], "metric": meta["metric"], "memory_mode": meta["memory_mode"],
           "e2e_reference": entry(e2e) if e2e else None, "front": [entry(r) for r in front]}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _write_csv(path: Path, records: list[dict]) -> Path:
    names = sorted({k for r in records for k in r["params"]})
    metrics = sorted({k for r in records for k in r.get("scores", {})})  # every metric the task reports
    cols = ["number", "state", "score", "peak_memory_bytes", "seconds", "design_hash", "K", "is_e2e",
            "reused_from", "epochs", "reason"]
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols + [f"metric:{m}" for m in metrics] + [f"param:{n}" for n in names])
        for r in records:
            row = {**r, "epochs": len(r["history"])}
            w.writerow([row.get(c) for c in cols] + [r.get("scores", {}).get(m) for m in metrics]
                       + [r["params"].get(n) for n in names])
    return path
