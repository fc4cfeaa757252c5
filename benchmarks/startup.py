"""How long the commands that train nothing take to answer, against Optuna's own CLI on the same run.

A tiny run is made first (digits at 8x8, 3 trials of one epoch, confirmation included), then
each command below is started ``--repeats`` times, round robin (interleaved, so a busy moment
of this shared machine hits every command alike), and the median wall time of each is set
beside ``optuna studies --storage <the run's journal>``. Writes section ``startup`` of
docs/results.md.

Run: ``python benchmarks/startup.py`` (about a minute; ``--repeats 5`` for a quick look).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from _common import write_section

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def make_run(folder: Path) -> tuple[Path, Path]:
    """A finished tiny run: (study file, run folder)."""
    study = folder / "study.yaml"
    study.write_text(yaml.safe_dump({
        "name": "startup", "data": {"name": "digits", "image_size": 8}, "backbone": {"name": "resnet8"},
        "search_space": {"modules": {"low": 2, "high": 3}, "splits": "balanced", "families": ["dgl"],
                         "depth": 1, "width": 8},
        "train": {"epochs": 1, "batch_size": 128, "lr": 0.05, "device": "cpu"}, "n_trials": 3,
        "confirm": {"seeds": 1, "max_designs": 1}, "output": str(folder / "run"), "sampler": {"name": "tpe"}}))
    done = subprocess.run([str(BIN / "auxsearch"), "run", str(study), "--no-progress"], capture_output=True,
                          text=True, cwd=folder)
    if done.returncode != 0:
        raise SystemExit(f"the tiny run failed:\n{done.stderr[-3000:]}")
    return study, folder / "run"


def commands(study: Path, run: Path, out: Path) -> dict[str, list[str]]:
    aux = str(BIN / "auxsearch")
    return {
        "optuna studies --storage RUN/study.journal": [str(BIN / "optuna"), "studies", "--storage",
                                                        str(run / "study.journal"), "--storage-class",
                                                        "JournalFileBackend"],
        "auxsearch --help": [aux, "--help"],
        "auxsearch --version": [aux, "--version"],
        "auxsearch show RUN": [aux, "show", str(run)],
        "auxsearch show RUN --json": [aux, "show", str(run), "--json"],
        "auxsearch export RUN --knee -o best.yaml": [aux, "export", str(run), "--knee", "-o", str(out / "best.yaml")],
        "auxsearch plot RUN": [aux, "plot", str(run)],
        "auxsearch validate STUDY (digits)": [aux, "validate", str(study)],
    }


def timed(cmd: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, cwd=cwd)
    took = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr.decode()[-2000:]}")
    return took


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--no-write", action="store_true", help="print the table only")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        study, run = make_run(folder)
        cmds = commands(study, run, folder)
        times: dict[str, list[float]] = {name: [] for name in cmds}
        for _ in range(args.repeats):
            for name, cmd in cmds.items():
                times[name].append(timed(cmd, folder))
    medians = {name: statistics.median(ts) for name, ts in times.items()}
    base = medians[next(iter(cmds))]
    lines = [f"Wall time from start to exit, median of {args.repeats} starts each, interleaved round robin on one "
             "run (digits 8x8, 3 trials, confirmed); `python benchmarks/startup.py`.", "",
             "| command | median s | x `optuna studies` |", "|---|---|---|"]
    for name, m in medians.items():
        lines.append(f"| `{name}` | {m:.2f} | {m / base:.2f} |")
    table = "\n".join(lines)
    print(table)
    if not args.no_write:
        write_section("startup", "### Startup time of the commands that train nothing\n\n" + table)


if __name__ == "__main__":
    main()
