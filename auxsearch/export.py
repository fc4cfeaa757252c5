"""Pick one design from a run and write it as a self-contained design file.

Every rule chooses on validation scores: the confirmed front's validation means when the
run was confirmed, else the search front's single-seed validation scores. Test scores
never decide what is exported.
"""

from __future__ import annotations

from pathlib import Path

from .errors import ConfigError
from .graph import save_design
from .pareto import TrialRecord, choice_front, knee, memory_of, val_mean
from .rundir import load_run, recipe_design


def choose(records: list[TrialRecord], *, trial: int | None = None, max_memory: int | None = None,
           knee_point: bool = False, best_score: bool = False, allow_dominated: bool = False) -> TrialRecord:
    """The record a user asked for: a trial number, or a rule over the front (default: best validation score)."""
    front = choice_front(records)
    if not front:
        raise ConfigError("", "the run has no completed trial yet: nothing to export")
    if trial is not None:
        match = [r for r in records if r["number"] == trial]
        if not match:
            raise ConfigError("--trial", f"no trial {trial} in this run (trials 0..{len(records) - 1})")
        if match[0]["state"] != "COMPLETE" or match[0]["design"] is None:
            raise ConfigError("--trial", f"trial {trial} is {match[0]['state'].lower()}, not a completed design")
        on_front = {r["design_hash"] for r in front}
        if not allow_dominated and match[0]["design_hash"] not in on_front:
            numbers = ", ".join(str(r["number"]) for r in front)
            raise ConfigError("--trial", f"trial {trial} is not on the front (trials {numbers}); "
                              "add --allow-dominated to export it anyway")
        return match[0]
    if max_memory is not None:
        fits = [r for r in front if memory_of(r) <= max_memory]
        if not fits:
            least = min(memory_of(r) for r in front)
            raise ConfigError("--max-memory", f"no front design fits in {max_memory} B; the smallest needs {least} B")
        return max(fits, key=lambda r: (val_mean(r), -memory_of(r)))
    if knee_point:
        return knee(front)
    return max(front, key=lambda r: (val_mean(r), -memory_of(r)))


def export(run_dir: str | Path, output: str | Path, **rule) -> tuple[TrialRecord, Path]:
    meta, records = load_run(run_dir)
    rec = choose(records, **rule)
    return rec, save_design(recipe_design(rec, meta), output)
