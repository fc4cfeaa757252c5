"""Mutation testing of the core rules: how many deliberate breakages do the fast tests catch?

mutmut (configured in pyproject.toml, ``[tool.mutmut]``) rewrites each function of the
core modules many ways (``<`` for ``<=``, ``+ 1`` for ``+ 2``, a dropped argument, ...),
and runs the fast tests that call the function against every rewrite. A rewrite a test
fails on is *killed*; one every test passes is a *survivor*: either the tests miss a
broken rule, or the rewrite changes nothing observable (an *equivalent* mutant, listed
below with the reason it is one).

This script copies the working tree into a scratch folder (so ``mutants/`` never mixes
with the checkout), runs ``mutmut run`` there on the functions of :data:`UNITS` only,
and writes section ``mutation`` of docs/results.md: per unit the mutants, killed,
survivors, the equivalent ones and the score ``killed / (mutants - equivalent)``.

Run: ``pip install -e ".[mutation]"`` then ``python benchmarks/mutation.py``
(about 20-30 minutes on 2 cores; ``--unit pruner`` runs one unit, ``--keep DIR`` keeps
the scratch copy to inspect survivors with ``cd DIR && mutmut show NAME``).
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import ROOT, markdown_table, provenance, write_section

# The core rules, as globs over mutmut's mutant names (module.x_function / module.xǁClassǁmethod).
UNITS: dict[str, list[str]] = {
    "pareto": ["auxsearch.pareto.x_pareto_front__*", "auxsearch.pareto.x_scored__*", "auxsearch.pareto.x_finite__*",
               "auxsearch.pareto.x_stat__*", "auxsearch.pareto.x_confirmed__*", "auxsearch.pareto.x_clearly_dominates__*",
               "auxsearch.pareto.x_confirmed_front__*", "auxsearch.pareto.x_knee__*", "auxsearch.pareto.x__unit__*",
               "auxsearch.pareto.x_hypervolume_2d__*", "auxsearch.pareto.xǁNormalisedǁ*", "auxsearch.pareto.x_normaliser__*",
               "auxsearch.pareto.x_e2e_record__*"],
    "pruner": ["auxsearch.search.objective.xǁObjectiveǁ_pruner__*", "auxsearch.search.pruning.x_dominated__*",
               "auxsearch.search.pruning.x_halving__*", "auxsearch.store.records.x_feasible__*",
               "auxsearch.pareto.x_nondominated_ranks__*", "auxsearch.pareto.x_halving_keeps__*",
               "auxsearch.pareto.x_rungs__*"],
    "local step + EMA": ["auxsearch.model.engine.x_local_step__*", "auxsearch.model.engine.x_train_step__*",
                         "auxsearch.model.engine.x_make_optimizer__*", "auxsearch.aux.base.x_ema_update__*",
                         "auxsearch.aux.momentum.xǁMomentumAuxǁafter_backward__*"],
    "export rules": ["auxsearch.outputs.export.x_choose__*", "auxsearch.pareto.x_choice_front__*",
                     "auxsearch.pareto.x_val_mean__*", "auxsearch.pareto.x_memory_of__*"],
    "memory counter": ["auxsearch.train.memory.xǁLiveBytesǁ*", "auxsearch.train.memory.x_tracked_peak__*"],
    "config ranges": ["auxsearch.config.x__coerce__*", "auxsearch.config.x_from_mapping__*",
                      "auxsearch.config.x_positive__*", "auxsearch.config.x_non_negative__*",
                      "auxsearch.config.x_parse_bytes__*"],
}

# Survivors judged equivalent: no test can tell them from the original. Mutant -> reason.
# (Names are mutmut's, stable while the function's source does not change.)
_STRICT = "zip(strict=...) of two lists that always have the same length"
_ZERO_SPAN = "`or 2.0` is only used when the span is 0, and then every numerator is 0 too"
EQUIVALENT: dict[str, str] = {
    "auxsearch.pareto.x_halving_keeps__mutmut_18": "ordering a rank by memory instead of score: in one rank a higher "
                                                   "score is exactly a larger memory (equal scores, equal memory)",
    "auxsearch.pareto.x_knee__mutmut_36": "bx + ax for bx - ax: ax is 0 (the lightest point comes first, normalised to 0)",
    "auxsearch.pareto.x_knee__mutmut_40": "x + ax for x - ax: ax is 0 (the lightest point comes first, normalised to 0)",
    "auxsearch.pareto.x_knee__mutmut_43": _STRICT,
    "auxsearch.pareto.x_knee__mutmut_46": _STRICT,
    "auxsearch.pareto.x_knee__mutmut_47": _STRICT,
    "auxsearch.pareto.x__unit__mutmut_7": _ZERO_SPAN,
    "auxsearch.pareto.xǁNormalisedǁpoint__mutmut_5": _ZERO_SPAN,
    "auxsearch.pareto.xǁNormalisedǁpoint__mutmut_10": _ZERO_SPAN,
    "auxsearch.pareto.x_hypervolume_2d__mutmut_9": "a point with score == the reference adds a box of height 0",
    "auxsearch.pareto.x_hypervolume_2d__mutmut_10": "a point with memory == the reference adds a box of width 0",
    "auxsearch.pareto.x_hypervolume_2d__mutmut_18": "zip(strict=None) is zip(strict=False)",
    "auxsearch.pareto.x_hypervolume_2d__mutmut_21": "zip() is zip(strict=False)",
    "auxsearch.model.engine.x_local_step__mutmut_12": "raw = '' for None: the last module always overwrites it",
    "auxsearch.model.engine.x_local_step__mutmut_75": "detach() applied to every leaf: every head returns tensors only",
    "auxsearch.outputs.export.x_choose__mutmut_2": "best_score defaulting to True: the best score is already the default rule",
    "auxsearch.train.memory.xǁLiveBytesǁ_free__mutmut_4": "pop(key, None): _free runs once per tracked storage, whose key is "
                                                   "always present",
    "auxsearch.train.memory.xǁLiveBytesǁ_free__mutmut_6": "pop(key): the key is always present (see above)",
    "auxsearch.train.memory.xǁLiveBytesǁ_free__mutmut_7": "pop(key, 1): the key is always present (see above)",
    "auxsearch.config.x__coerce__mutmut_42": "args[0] without the `if args` guard: every list field of the configs names "
                                             "its element type",
}

STATUS = {1: "killed", 3: "killed", 0: "survived", 33: "no tests", 5: "no tests", 36: "timeout", -24: "timeout",
          24: "timeout", 152: "timeout", 255: "timeout", 34: "skipped"}


def scratch_copy(dest: Path) -> None:
    """The working tree's tracked and untracked-but-not-ignored files, as they are now."""
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           check=True, capture_output=True).stdout.decode().split("\0")
    for f in filter(None, files):
        src = ROOT / f
        if src.is_file():
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / f)


def results(folder: Path) -> dict[str, int | None]:
    """Mutant name -> exit code, from mutmut's ``mutants/**/*.py.meta`` files."""
    out: dict[str, int | None] = {}
    for meta in (folder / "mutants").rglob("*.py.meta"):
        out.update(json.loads(meta.read_text())["exit_code_by_key"])
    return out


def unit_of(name: str) -> str | None:
    for unit, globs in UNITS.items():
        if any(fnmatch.fnmatchcase(name, g) for g in globs):
            return unit
    return None


def table(codes: dict[str, int | None]) -> tuple[str, list[str]]:
    rows, survivors = [], []
    for unit in UNITS:
        names = sorted(n for n in codes if unit_of(n) == unit)
        status = {n: STATUS.get(codes[n], "suspicious" if codes[n] is not None else "not checked") for n in names}
        killed = sum(s in ("killed", "timeout") for s in status.values())
        equivalent = [n for n in names if status[n] != "killed" and n in EQUIVALENT]
        missed = [n for n in names if status[n] not in ("killed", "timeout") and n not in EQUIVALENT]
        survivors += [f"{n} ({status[n]})" for n in missed]
        scored = len(names) - len(equivalent)
        rows.append([unit, len(names), killed, len(missed), len(equivalent),
                     f"{100 * killed / scored:.1f}%" if scored else "-"])
    return markdown_table(["unit", "mutants", "killed", "survived", "equivalent", "score"], rows), survivors


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--unit", choices=list(UNITS), action="append", help="only these units (default: all)")
    ap.add_argument("--keep", type=Path, help="run in this folder and keep it (inspect with mutmut show NAME)")
    ap.add_argument("--no-write", action="store_true", help="print the table, do not write docs/results.md")
    ap.add_argument("--from", dest="source", type=Path, help="tabulate a folder kept by an earlier --keep run")
    ap.add_argument("--minutes", type=float, default=float("nan"), help="with --from: that run's wall time")
    args = ap.parse_args()
    if args.source:
        codes = {n: c for n, c in results(args.source).items() if unit_of(n)}
        return write(args, codes, args.minutes, list(UNITS))
    if shutil.which("mutmut") is None and not (Path(sys.executable).parent / "mutmut").exists():
        print("mutmut is not installed: pip install -e '.[mutation]'", file=sys.stderr)
        return 2
    mutmut = shutil.which("mutmut") or str(Path(sys.executable).parent / "mutmut")
    units = args.unit or list(UNITS)
    folder = args.keep or Path(tempfile.mkdtemp(prefix="auxsearch-mutation-"))
    folder.mkdir(parents=True, exist_ok=True)
    scratch_copy(folder)
    globs = [g for u in units for g in UNITS[u]]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(folder)}
    start = time.time()
    proc = subprocess.run([mutmut, "run", "--max-children", str(os.cpu_count() or 2), *globs], cwd=folder, env=env)
    minutes = (time.time() - start) / 60
    codes = {n: c for n, c in results(folder).items() if unit_of(n) in units}
    if proc.returncode != 0 or not codes:
        print(f"mutmut run failed (exit {proc.returncode}); its folder: {folder}", file=sys.stderr)
        return 1
    write(args, codes, minutes, units)
    if args.keep is None:
        shutil.rmtree(folder, ignore_errors=True)
    return 0


def write(args, codes: dict[str, int | None], minutes: float, units: list[str]) -> int:
    text, survivors = table(codes)
    body = "\n".join([
        "## Mutation testing of the core rules",
        "",
        "mutmut rewrites each function of the core rules (comparison, arithmetic, constant, argument",
        "and return mutations) and runs the fast tests that call it; a mutant is *killed* when a test",
        "fails. Score = killed / (mutants - equivalent). Units and the tests used: `benchmarks/mutation.py`",
        "and `[tool.mutmut]` in pyproject.toml.",
        "",
        provenance(),
        f"- wall time: {minutes:.1f} min" if minutes == minutes else "- tabulated from a kept folder (--from)",
        "",
        text,
        "",
        "Survivors judged equivalent (no observable difference), with the reason:",
        "",
        *([f"- `{n}`: {why}" for n, why in sorted(EQUIVALENT.items()) if n in codes] or ["- none"]),
        "",
        "Other survivors (tests still to write):",
        "",
        *([f"- `{s}`" for s in survivors] or ["- none"]),
    ])
    print(body)
    if not args.no_write and set(units) == set(UNITS):
        write_section("mutation", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
