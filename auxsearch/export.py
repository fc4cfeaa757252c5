"""Pick one design from a run and write it as a self-contained design file."""

from __future__ import annotations

from pathlib import Path

from . import report
from .errors import ConfigError
from .graph import save_design
from .rundir import load_run, recipe_design


def choose(records: list[dict], *, trial: int | None = None, max_memory: int | None = None,
           knee: bool = False, best_score: bool = False, allow_dominated: bool = False) -> dict:
    """The record a user asked for: a trial number, or a rule over the Pareto front."""
    front = report.pareto_front(records)
    if not front:
        raise ConfigError("", "the run has no completed trial yet: nothing to export")
    if trial is not None:
        match = [r for r in records if r["number"] == trial]
        if not match:
            raise ConfigError("--trial", f"no trial {trial} in this run (trials 0..{len(records) - 1})")
        if match[0]["state"] != "COMPLETE" or match[0]["design"] is None:
            raise ConfigError("--trial", f"trial {trial} is {match[0]['state'].lower()}, not a completed design")
        if not allow_dominated and all(r["number"] != trial for r in front):
            on_front = ", ".join(str(r["number"]) for r in front)
            raise ConfigError("--trial", f"trial {trial} is not on the Pareto front (trials {on_front}); "
                              "add --allow-dominated to export it anyway")
        return match[0]
    if max_memory is not None:
        fits = [r for r in front if r["peak_memory_bytes"] <= max_memory]
        if not fits:
            least = min(r["peak_memory_bytes"] for r in front)
            raise ConfigError("--max-memory", f"no Pareto design fits in {max_memory} B; the smallest needs {least} B")
        return max(fits, key=lambda r: (r["score"], -r["peak_memory_bytes"]))
    if knee:
        return report.knee(front)
    return max(front, key=lambda r: (r["score"], -r["peak_memory_bytes"]))


def export(run_dir: str | Path, output: str | Path, **rule) -> tuple[dict, Path]:
    meta, records = load_run(run_dir)
    rec = choose(records, **rule)
    return rec, save_design(recipe_design(rec, meta), output)
