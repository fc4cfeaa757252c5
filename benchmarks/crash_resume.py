"""A crash at any moment of `auxsearch run`, then the same command again: the same run as one never killed.

A tiny study (digits 8x8, resnet8, a grid of 4 designs and the E2E reference, one epoch, confirmed with
2 seeds) is run once uninterrupted: the reference. Then ``--kills`` times: a fresh run folder,
``auxsearch run`` SIGKILLed at a random moment of its run (uniform over the reference's wall time: while
it opens the study, trains, appends to the journal, confirms or writes the outputs), ``auxsearch show``
on what is left, and ``auxsearch run`` again until it exits 0. Each must end with the same COMPLETE trials
(design and values), the same front and knee, and the same confirmed means as the reference, and no
command may print a traceback.

Writes section ``crash-resume`` of docs/results.md. Run: ``python benchmarks/crash_resume.py``
(about 20 minutes on 2 cores; ``--kills 3`` for a quick look, which writes nothing).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SECTION = "crash-resume"


def write_study(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    study = {"name": "crash", "data": {"name": "digits", "image_size": 8, "seed": 0}, "backbone": {"name": "resnet8"},
             "search_space": {"modules": {"low": 2, "high": 3}, "splits": "balanced", "families": ["dgl", "infopro"],
                              "depth": 1, "width": 8, "momentum": 0.99, "learnable_scale": False, "head": "dgl"},
             "train": {"epochs": 1, "batch_size": 128, "lr": 0.05, "seed": 0, "device": "cpu",
                       "bn_recalibration_batches": 1},
             "sampler": {"name": "grid", "seed": 0}, "pruning": {"enabled": False}, "n_trials": 5,
             "confirm": {"seeds": 2, "max_designs": 2}, "output": "run"}
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    return path


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "auxsearch", *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=900)


def outcome(folder: Path) -> dict:
    """What a finished run holds: every COMPLETE trial's design and values, the front, the knee, the means."""
    from auxsearch.outputs.rows import front_view
    from auxsearch.outputs.runfolder import load_run

    _, recs = load_run(folder / "run")
    view = front_view(recs)
    trials = sorted((r["design_hash"], r["score"], r["peak_memory_bytes"]) for r in recs
                    if r["state"] == "COMPLETE" and r["reused_from"] is None)
    return {"trials": trials, "front": [r["design_hash"] for r in view.front],
            "knee": view.knee["design_hash"] if view.knee else None,
            "confirmed": sorted((r["design_hash"], r["confirmed"]["val"]["mean"], r["confirmed"]["test"]["mean"])
                                for r in view.confirmed)}


def one(folder: Path, at: float) -> dict:
    """Kill `auxsearch run` ``at`` seconds in, look at the folder, run again until it finishes."""
    path = write_study(folder)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "auxsearch", "run", str(path), "--no-progress"], cwd=folder,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(at)
    killed = proc.poll() is None
    if killed:
        proc.send_signal(signal.SIGKILL)
    out, err = proc.communicate()
    texts = [out + err]
    if (folder / "run" / "run.yaml").is_file():
        shown = cli("show", str(folder / "run"), cwd=folder)
        texts.append(shown.stdout + shown.stderr)
    reruns = 0
    while True:
        again = cli("run", str(path), "--no-progress", cwd=folder)
        texts.append(again.stdout + again.stderr)
        reruns += 1
        if again.returncode == 0 or reruns >= 3:
            break
    return {"at": round(at, 2), "killed": killed, "reruns": reruns, "exit": again.returncode,
            "tracebacks": sum("Traceback" in t for t in texts), "outcome": outcome(folder) if again.returncode == 0 else None,
            "last_line": (again.stderr.strip().splitlines() or [""])[-1][:200]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    tmp = Path(tempfile.mkdtemp(prefix="crash-resume-"))
    try:
        start = time.monotonic()
        ref_folder = tmp / "reference"
        path = write_study(ref_folder)
        done = cli("run", str(path), "--no-progress", cwd=ref_folder)
        if done.returncode != 0:
            raise SystemExit(f"the reference run failed:\n{done.stderr[-2000:]}")
        wall = time.monotonic() - start
        reference = outcome(ref_folder)
        rows = []
        for i in range(args.kills):
            at = rng.uniform(0.5, wall)
            r = one(tmp / f"kill-{i}", at)
            r["same"] = r["outcome"] == reference
            rows.append(r)
            print(f"kill {i + 1}/{args.kills} at {r['at']:.1f} s: killed {r['killed']}, {r['reruns']} rerun(s), exit "
                  f"{r['exit']}, same as the reference: {r['same']}, tracebacks {r['tracebacks']}", file=sys.stderr,
                  flush=True)
            shutil.rmtree(tmp / f"kill-{i}", ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    same = sum(r["same"] for r in rows)
    tracebacks = sum(r["tracebacks"] for r in rows)
    print(json.dumps({"kills": len(rows), "same": same, "tracebacks": tracebacks, "reference_wall_s": round(wall, 1),
                      "rows": [{k: v for k, v in r.items() if k != "outcome"} for r in rows]}, indent=1))
    if args.kills >= 20:
        sys.path.insert(0, str(ROOT / "benchmarks"))
        from _common import provenance, write_section

        killed = sum(r["killed"] for r in rows)
        body = "\n".join([
            "### A crash at any moment, then the same command",
            "",
            f"`auxsearch run` of a tiny study (digits 8x8, resnet8, a grid of 4 designs and the E2E reference, "
            f"one epoch, confirmed with 2 seeds; {wall:.0f} s uninterrupted) SIGKILLed at a random moment "
            f"(uniform over that time) {len(rows)} times ({killed} were still running when the signal came), "
            "`auxsearch show` on what was left, then the same `auxsearch run` again. A rerun matches when its "
            "COMPLETE trials (design and values), its front, its knee and its confirmed means equal the "
            "uninterrupted run's.",
            "",
            "| kills | reruns matched the uninterrupted run | commands that printed a traceback | reruns needed (max) |",
            "|---|---|---|---|",
            f"| {len(rows)} | {same} of {len(rows)} | {tracebacks} | {max(r['reruns'] for r in rows)} |",
            "",
            provenance()])
        print(f"wrote section {SECTION} of {write_section(SECTION, body)}", file=sys.stderr)
    return 0 if same == len(rows) and tracebacks == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
