"""The run folder: what a study leaves behind, and how later commands read it.

    runs/<name>/run.yaml            what was run (study file, storage, recipe)
    runs/<name>/study.journal       the Optuna journal (default storage)
    runs/<name>/trials.csv          every trial (validation score; test mean/std where confirmed)
    runs/<name>/pareto.yaml         the front (confirmed when confirmation ran), E2E reference beside it
    runs/<name>/designs/trial-N.yaml  each front design, ready for ``auxsearch train``
    runs/<name>/report.html         the interactive report (opens offline)

Every file is written whole or not at all (:func:`atomic_write`): into a hidden temporary
file in the same folder (``.NAME.<pid>.<random>.tmp``), flushed to disk, then renamed over
``NAME``. A reader, or a writer killed at any moment, sees the old file or the new one,
never half of one; a temporary file a killed writer leaves is hidden, never read, and
removed by a later write once it is an hour old.
"""

from __future__ import annotations

import csv
import datetime as _dt
import io
import json
import os
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from . import report
from .config import to_mapping
from .errors import ConfigError
from .graph import save_design
from .pareto import TrialRecord, choice_front, confirmed, e2e_record, pareto_front
from .storage import StorageURL

META = "run.yaml"
TEMP_SUFFIX = ".tmp"
STALE_TEMP_SECONDS = 3600.0  # a temporary file this old was left by a killed writer


def atomic_write(path: str | Path, write: Callable[[Path], Any]) -> Path:
    """Write ``path`` whole or not at all: ``write(tmp)`` fills a temporary file beside it, renamed over it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}{TEMP_SUFFIX}")
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def is_temporary(path: str | Path) -> bool:
    """A file :func:`atomic_write` writes through (never an output)."""
    name = Path(path).name
    return name.startswith(".") and name.endswith(TEMP_SUFFIX)


def remove_stale_temporaries(folder: Path, older_than: float = STALE_TEMP_SECONDS) -> list[Path]:
    """Delete temporary files a killed writer left in ``folder`` (and ``designs/``) over ``older_than`` s ago."""
    removed = []
    now = time.time()
    for d in (folder, folder / "designs"):
        if not d.is_dir():
            continue
        for p in d.iterdir():
            try:
                if is_temporary(p) and p.is_file() and now - p.stat().st_mtime > older_than:
                    p.unlink()
                    removed.append(p)
            except OSError:  # removed meanwhile by another writer
                pass
    return removed


def run_meta(run) -> dict[str, Any]:
    """What later commands need to know about a run (plain data)."""
    from .training import resolve_data_cfg

    # Exported designs must find the data from anywhere: every path key of the data set made absolute.
    data = resolve_data_cfg(run.cfg.data, run.path.parent, run.base["task"]["name"])
    url = StorageURL(run.storage_url).relative_to(run.out_dir)  # the run folder can be moved
    return {"name": run.cfg.name, "study_file": str(run.path), "storage": url, "metric": run.metric,
            "objectives": list(run.cfg.objectives), "memory_mode": run.cfg.memory.mode,
            "memory_budget_bytes": run.budget, "data": data, "train": to_mapping(run.cfg.train),
            "created": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "command": "auxsearch " + " ".join(sys.argv[1:]) if sys.argv[1:] else "auxsearch run"}


def write_meta(out_dir: Path, meta: dict) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / META, yaml.safe_dump(meta, sort_keys=False))


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
    meta["storage"] = StorageURL(meta["storage"]).resolved_in(run_dir)
    return meta


def load_run(run_dir: str | Path) -> tuple[dict, list[TrialRecord]]:
    from .records import load_records

    meta = read_meta(run_dir)
    return meta, load_records(meta["storage"], meta["name"])


def recipe_design(record: dict, meta: dict) -> dict:
    """A record's design with the run's data and training recipe: a self-contained design."""
    return {**record["design"], "data": dict(meta["data"]), "train": dict(meta["train"])}


def write_outputs(out_dir: Path, meta: dict, records: list[TrialRecord]) -> dict[str, Path]:
    """(Re)write every output file of a run folder from its records, each one whole (:func:`atomic_write`)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out_dir)
    paths = {"trials": atomic_write(out_dir / "trials.csv", lambda tmp: _write_csv(tmp, records))}
    front = choice_front(records)
    designs = out_dir / "designs"
    for r in front:
        design = recipe_design(r, meta)
        atomic_write(designs / f"trial-{r['number']}.yaml", lambda tmp, d=design: save_design(d, tmp))
    paths["pareto"] = atomic_write(out_dir / "pareto.yaml",
                                   lambda tmp: _write_pareto(tmp, meta, records, front))
    paths["report"] = atomic_write(out_dir / "report.html", lambda tmp: report.write_report(records, meta, tmp))
    return paths


def front_entry(r: TrialRecord, e2e_peak: int | None) -> dict:
    """One design as ``show --json`` and ``pareto.yaml`` give it (keys named in docs/methodology.md)."""
    c = r.get("confirmed")
    return {"trial": r["number"], "K": r["K"], "design_hash": r["design_hash"], "is_e2e": r["is_e2e"],
            "val_score": r["score"], "val_scores": r.get("scores") or {},
            "peak_memory_bytes": r["peak_memory_bytes"], "measured_peak_bytes": r.get("measured_peak_bytes"),
            "ratio_to_e2e_memory": round(r["peak_memory_bytes"] / e2e_peak, 4) if e2e_peak else None,
            "seconds": r["seconds"], "over_budget": r.get("over_budget", False),
            "confirmed": None if not c else {
                "seeds": c["seeds"], "val_mean": c["val"]["mean"], "val_std": c["val"]["std"],
                "test_mean": c["test"]["mean"], "test_std": c["test"]["std"], "test_values": c["test"]["values"],
                "test_scores": {m: {"mean": s["mean"], "std": s["std"]} for m, s in c["test_scores"].items()}}}


def _write_pareto(path: Path, meta: dict, records: list[TrialRecord], front: list[TrialRecord]) -> Path:
    e2e = e2e_record(records)
    e2e = e2e if e2e and e2e["state"] == "COMPLETE" else None
    ref = e2e["peak_memory_bytes"] if e2e else None

    def entry(r: TrialRecord) -> dict:
        return {**front_entry(r, ref), "design": recipe_design(r, meta)}

    doc = {"study": meta["name"], "metric": meta["metric"], "memory_mode": meta["memory_mode"],
           "front_kind": "confirmed" if any(r.get("confirmed") for r in front) else "search (single seed)",
           "e2e_reference": entry(e2e) if e2e else None, "front": [entry(r) for r in front]}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _write_csv(path: Path, records: list[dict]) -> Path:
    names = sorted({k for r in records for k in r["params"]})
    metrics = sorted({k for r in records for k in r.get("scores", {})})  # every metric the task reports
    cols = ["number", "state", "score", "peak_memory_bytes", "measured_peak_bytes", "seconds", "design_hash", "K", "is_e2e",
            "over_budget", "reused_from", "epochs", "reason", "confirm_seeds", "val_mean", "val_std",
            "test_mean", "test_std"]
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


def render_front(records: list[TrialRecord], meta: dict, fmt: str) -> str:
    """The front as ``show --format json | csv | markdown`` prints it (keys named in docs/methodology.md)."""
    e2e = e2e_record(records)
    e2e = e2e if e2e and e2e["state"] == "COMPLETE" else None
    ref = e2e["peak_memory_bytes"] if e2e else None
    if fmt == "json":
        counts: dict[str, int] = {}
        for r in records:
            counts[r["state"]] = counts.get(r["state"], 0) + 1
        return json.dumps({"study": meta["name"], "metric": meta["metric"], "counts": counts,
                          "front_kind": "confirmed" if confirmed(records) else "search",
                          "e2e_reference": front_entry(e2e, ref) if e2e else None,
                          "front": [front_entry(r, ref) for r in choice_front(records)],
                          "search_front": [front_entry(r, ref) for r in pareto_front(records)]})
    front = choice_front(records)
    on_front = e2e is not None and any(r["number"] == e2e["number"] for r in front)
    rows = [_front_row(e2e, ref, "E2E reference" + (", on the front" if on_front else ""))] if e2e else []
    rows += [_front_row(r, ref, "front") for r in front if not (e2e and r["number"] == e2e["number"])]
    if fmt == "csv":
        out = io.StringIO()
        w = csv.DictWriter(out, fieldnames=_FRONT_COLUMNS, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
        return out.getvalue().rstrip("\n")
    return _markdown(rows, meta["metric"], "confirmed" if confirmed(records) else "search (single seed)")


# show --format csv / markdown: one row per design, the E2E reference first (raw numbers in csv).
_FRONT_COLUMNS = ("role", "trial", "K", "splits", "families", "peak_memory_bytes", "ratio_to_e2e_memory", "val_score",
                  "seeds", "val_mean", "val_std", "test_mean", "test_std", "design_hash")


def _front_row(r: dict, e2e_peak: int | None, role: str) -> dict:
    e = front_entry(r, e2e_peak)
    c = e["confirmed"] or {}
    design = r.get("design") or {}
    return {"role": role, "trial": e["trial"], "K": e["K"], "splits": " ".join(map(str, design.get("splits", []))),
            "families": " ".join(sorted({a["family"] for a in design.get("aux", [])})) or "-",
            "peak_memory_bytes": e["peak_memory_bytes"], "ratio_to_e2e_memory": e["ratio_to_e2e_memory"],
            "val_score": e["val_score"], "seeds": len(c.get("seeds", [])) or None,
            "val_mean": c.get("val_mean"), "val_std": c.get("val_std"), "test_mean": c.get("test_mean"),
            "test_std": c.get("test_std"), "design_hash": e["design_hash"]}


def _markdown(rows: list[dict], metric: str, kind: str) -> str:
    def pm(mean, std):
        return "" if mean is None else f"{mean:.4f} ± {std:.4f}"

    confirmed = any(r["seeds"] for r in rows)
    head = ["", "trial", "K", "splits", "aux", "peak memory", "x E2E memory", f"val {metric} (search)"]
    head += [f"val {metric}", f"test {metric}", "seeds"] if confirmed else []
    lines = [f"<!-- {kind} front; validation chooses, test reports (docs/methodology.md) -->",
             "| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for r in rows:
        ratio = "" if r["ratio_to_e2e_memory"] is None else f"{r['ratio_to_e2e_memory']:.2f}"
        cells = [r["role"], str(r["trial"]), str(r["K"]), r["splits"] or "-", r["families"],
                 _mib(r["peak_memory_bytes"]), ratio, f"{r['val_score']:.4f}"]
        if confirmed:
            cells += [pm(r["val_mean"], r["val_std"]), pm(r["test_mean"], r["test_std"]), str(r["seeds"] or "")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _mib(n: int) -> str:
    return f"{n / 2**20:,.1f} MiB" if n < 2**30 else f"{n / 2**30:,.2f} GiB"
