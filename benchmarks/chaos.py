"""Chaos: workers SIGKILLed at random while a study runs, on a journal file and on PostgreSQL; no finished trial lost.

For each storage -- (a) the default journal file, (b) a private PostgreSQL server started on
loopback from the system's binaries (tests/pgserver.py's recipe) -- it runs

    auxsearch run chaos.yaml --workers N --no-progress [--storage postgresql+psycopg2://...]

on a study of tiny trials (digits at 8x8, resnet8, 2 epochs, a grid of 12 designs plus the
end-to-end reference: about a second of CPU each), and a chaos loop that, every ``--every``
seconds, SIGKILLs a random worker process of that command -- by default one of those in the
middle of a trial, when any is, so that its trial must be failed and retried (``--target
random``: any worker) -- for at most ``--kills`` kills or ``--chaos-seconds``, then lets the
study finish. ``run`` restarts each killed worker: its supervision is the thing under test. A monitor reads the storage every half second and remembers every
trial it has seen finished; at the end each must still be there with the same values.

The same study file (same seeds, same grid) is run once more, sequentially and unkilled (one
process, one thread, like each worker), as the reference. Training is deterministic on the
CPU for a given design and seed, so **a design evaluated in both runs must have exactly the
same values** (validation accuracy, peak memory); both runs should evaluate the same set of
designs (the whole grid), and then their Pareto fronts (auxsearch.pareto.pareto_front on the
records) must be the same designs with the same values. Where the chaos run trained a
different set -- a trial begun by two workers at once at the end of the study is recorded as
FAIL "not needed" and its grid point counts as visited, so the grid sampler draws an already
evaluated design again (reused, not retrained) -- ``same_designs`` is false and the fronts are
compared over the designs both runs trained (``same_front_on_shared``).

JSON (``--json``), one object; per storage under ``storages``:

    requested     n_trials of the study
    completed     trials finished (COMPLETE or PRUNED) at the end; must equal requested
    retried       trials failed because their worker died, each re-enqueued with its design
    duplicated    trainings of a design already trained in this study (beyond the retries)
    reused        trials whose design was already complete: its result copied, nothing trained
    surplus       trials begun when the study was already full ("not needed", FAIL)
    failed        other FAIL trials (a retry chain past its limit, an error); failed_reasons: theirs
    lost          trials seen finished during the run that are missing or changed at the end (must be 0)
    kills         SIGKILLs sent; killed_mid_trial: of those, the worker owned a RUNNING trial
    max_reap_s    the longest time from a kill to its trial being failed and re-enqueued (null: none)
    restarts      worker restarts the supervisor reported; lock_releases: journal locks left by a killed
                  worker that it removed; tracebacks: in the command's stderr (workers' crashes)
    exit_code     of `auxsearch run` (0: finished)
    wall_s        seconds from the start of `auxsearch run` to its end
    vs_sequential designs (distinct designs trained here), reference_designs (in the reference),
                  shared (trained in both), same_values (of those, identical values), max_abs_diff,
                  same_designs, same_front (null when the designs differ), same_front_on_shared
                  (the fronts of both runs over the shared designs only), front_size

A storage that cannot run (no PostgreSQL binaries, no psycopg2) is ``{"skipped": "why"}``.
Without ``--json-only`` / ``--quick`` it writes section ``faults`` ("Faults survived") of
docs/results.md. Exit status 0 when lost == 0 and completed == requested on every storage run.

    python benchmarks/chaos.py                 # both storages, 6 workers: a few minutes on 2 cores
    python benchmarks/chaos.py --json          # the same, plus the JSON on stdout
    python benchmarks/chaos.py --quick         # a smaller grid (8 trials + E2E), 3 kills; no docs
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
SECTION = "faults"


# --- the study ---------------------------------------------------------------------------------------


def write_study(folder: Path, *, name: str = "chaos", quick: bool = False, epochs: int = 2,
                image_size: int = 8, confirm_seeds: int = 2) -> Path:
    """A grid study of tiny trials; n_trials is the grid plus the E2E reference (each design once); then the
    E2E reference and the two best front designs retrained with ``confirm_seeds`` seeds on the workers."""
    folder.mkdir(parents=True, exist_ok=True)
    modules = {"low": 2, "high": 3 if quick else 4}
    space = {"modules": modules, "splits": "balanced", "per_module": False, "families": ["dgl", "infopro"],
             "depth": 1, "width": [8, 16], "momentum": 0.99, "learnable_scale": False, "head": "dgl",
             "pool": 4}
    (folder / "space.yaml").write_text(yaml.safe_dump(space, sort_keys=False))
    grid = (modules["high"] - modules["low"] + 1) * 2 * 2
    study = {"name": name, "task": "classification", "data": {"name": "digits", "image_size": image_size, "seed": 0},
             "backbone": {"name": "resnet8"}, "search_space": "space.yaml",
             "train": {"epochs": epochs, "batch_size": 64, "lr": 0.05, "weight_decay": 0.0005, "seed": 0,
                       "device": "cpu", "bn_recalibration_batches": 2},
             "objectives": ["score", "memory"], "memory": {"mode": "measured"},
             "sampler": {"name": "grid", "seed": 0}, "pruning": {"enabled": False},
             "n_trials": grid + 1, "output": "run", "enqueue": [],
             "confirm": {"seeds": confirm_seeds, "max_designs": 2}}
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    return path


def n_trials_of(study_path: Path) -> int:
    return int(yaml.safe_load(study_path.read_text())["n_trials"])


def _env(threads: int = 1) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT)}


# --- a PostgreSQL server of our own, which can be restarted ----------------------------------------


def Postgres():  # noqa: N802
    """The tests' throwaway server (tests/pgserver.py: one recipe for both), with its own database."""
    sys.path.insert(0, str(ROOT / "tests"))
    try:
        from pgserver import PgServer
    finally:
        sys.path.remove(str(ROOT / "tests"))
    return PgServer("auxsearch_chaos")


# --- watching the storage and the workers ------------------------------------------------------------


def open_storage(url: str):
    from auxsearch.store.storage import open_storage as _open

    if url.startswith("journal:"):
        return _open(url)
    import optuna

    return optuna.storages.RDBStorage(url)  # a plain reader: no heartbeat of its own


def load_trials(url: str, name: str, storage=None, confirm: bool = False) -> list:
    """The run's reference trials (E2E, enqueued designs), then its search trials (``confirm``: its
    confirmation trials instead)."""
    import optuna

    storage = storage or open_storage(url)
    out = []
    for study_name in ((f"{name}:confirm",) if confirm else (f"{name}:reference", name)):
        try:
            out += optuna.load_study(study_name=study_name, storage=storage).get_trials(deepcopy=True)
        except KeyError:  # no reference study yet
            pass
    return out


def key(t) -> tuple[bool, int]:
    """A trial's identity in a run: (reference or search, its number in that study)."""
    return ("enqueued" in t.user_attrs, t.number)


class Monitor(threading.Thread):
    """Reads the study every ``every`` seconds; remembers every finished trial it has seen."""

    def __init__(self, url: str, name: str, every: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.url, self.name, self.every = url, name, every
        self.seen: dict[tuple, tuple[str, tuple | None]] = {}
        self.done = 0
        self.confirm_left = 0  # confirmation jobs waiting or running
        self.running_owners: set[str] = set()
        self.errors = 0
        self.reads = 0
        self._halt = threading.Event()
        self._storage = None

    def read(self) -> None:
        from auxsearch.store.heartbeat import owner

        if self._storage is None:
            self._storage = open_storage(self.url)
        trials = load_trials(self.url, self.name, self._storage)
        for t in trials:
            if t.state.name in ("COMPLETE", "PRUNED"):
                self.seen.setdefault(key(t), (t.state.name, tuple(t.values) if t.values else None))
        self.done = sum(t.state.name in ("COMPLETE", "PRUNED") for t in trials)
        jobs = load_trials(self.url, self.name, self._storage, confirm=True)
        self.confirm_left = sum(t.state.name in ("WAITING", "RUNNING") for t in jobs)
        self.running_owners = {owner(t) for t in [*trials, *jobs] if t.state.name == "RUNNING" and owner(t)}
        self.reads += 1

    def run(self) -> None:
        while not self._halt.wait(self.every):
            try:
                self.read()
            except Exception:  # not created yet, a database restarting, a journal mid-append
                self.errors += 1
                self._storage = None if not self.url.startswith("journal:") else self._storage

    def stop(self) -> None:
        self._halt.set()
        self.join(5)


def children(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (the workers of `auxsearch run`)."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == pid and b"worker" in (d / "cmdline").read_bytes():
                out.append(int(d.name))
        except (OSError, ValueError, IndexError):
            continue
    return sorted(out)


# --- one chaos run -----------------------------------------------------------------------------------


def run_chaos(study_path: Path, *, storage: str | None = None, workers: int = 6, every: float = 2.5,
              kills: int = 6, chaos_seconds: float = 90.0, seed: int = 0, target: str = "running",
              max_restarts: int | None = None, timeout: float = 900.0, during=None, log=None) -> dict:
    """Run the study under ``auxsearch run --workers`` while killing workers; return the figures.

    ``target``: "running" (a random worker among those that own a RUNNING trial, any worker when
    none does: the harder case, its trial must be failed and retried) or "random" (any worker). ``during(info)`` is called once per chaos step (tests use it to restart a server).
    """
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    name = yaml.safe_load(study_path.read_text())["name"]
    run_dir = study_path.parent / "run"
    url = storage or f"journal:{run_dir / 'study.journal'}"
    requested = n_trials_of(study_path)
    cmd = [sys.executable, "-m", "auxsearch", "run", str(study_path), "--workers", str(workers), "--no-progress"]
    if storage:
        cmd += ["--storage", storage]
    if max_restarts is not None:
        cmd += ["--max-restarts", str(max_restarts)]
    err_path = study_path.parent / "run.stderr"
    rng = random.Random(seed)
    monitor = Monitor(url, name)
    start = time.monotonic()
    with open(err_path, "w") as err:
        proc = subprocess.Popen(cmd, env=_env(), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err)
        monitor.start()
        sent: list[dict] = []
        try:
            while (proc.poll() is None and not monitor.running_owners and monitor.done == 0
                   and time.monotonic() - start < timeout / 2):
                time.sleep(0.5)  # the chaos begins once the workers are up: a trial has begun
            chaos_start = time.monotonic()
            while (proc.poll() is None and len(sent) < kills and time.monotonic() - chaos_start < chaos_seconds
                   and (monitor.done < requested or monitor.confirm_left > 0)):
                time.sleep(every * rng.uniform(0.5, 1.5))
                pids = children(proc.pid)
                if during is not None:
                    during({"kills": len(sent), "pids": pids, "done": monitor.done})
                if not pids or (monitor.done >= requested and monitor.confirm_left == 0):
                    continue
                busy = [p for p in pids if f"{socket.gethostname()}:{p}" in monitor.running_owners]
                victim = rng.choice(busy if target == "running" and busy else pids)
                mid_trial = f"{socket.gethostname()}:{victim}" in monitor.running_owners
                try:
                    os.kill(victim, signal.SIGKILL)
                except ProcessLookupError:
                    continue
                sent.append({"t": round(time.monotonic() - start, 1), "at": time.time(), "pid": victim,
                             "mid_trial": mid_trial})
                log(f"  chaos: SIGKILL worker pid {victim} at {sent[-1]['t']} s"
                    f"{' (mid-trial)' if mid_trial else ''}; {monitor.done} of {requested} finished")
            code = proc.wait(timeout=max(1.0, timeout - (time.monotonic() - start)))
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
            log(f"  `auxsearch run` did not end within {timeout:.0f} s: killed")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    wall = time.monotonic() - start
    monitor.stop()
    stderr = err_path.read_text()
    trials = load_trials(url, name)
    figures = count(trials, monitor.seen)
    jobs = load_trials(url, name, confirm=True)
    figures.update(confirmations(jobs))
    figures["_jobs"] = jobs
    figures["max_reap_s"] = reap_delay(trials, sent)
    figures.update(requested=requested, kills=len(sent), killed_mid_trial=sum(k["mid_trial"] for k in sent),
                   restarts=stderr.count("; restart "), lock_releases=stderr.count("released the journal lock"),
                   tracebacks=stderr.count("Traceback"), exit_code=code, wall_s=round(wall, 1),
                   workers=workers, monitor_reads=monitor.reads,
                   last_line=(stderr.strip().splitlines() or [""])[-1][:300])
    figures["_trials"] = trials
    return figures


def count(trials: list, seen: dict) -> dict:
    """The chaos figures of a finished study; ``seen``: number -> (state, values) observed during the run."""
    by_number = {key(t): t for t in trials}
    finished = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]
    trained = [t for t in finished if "reused_from" not in t.user_attrs]
    hashes = [t.user_attrs.get("design_hash") for t in trained]
    parents = {(key(t)[0], t.system_attrs["retry_history"][-1]) for t in trials if t.system_attrs.get("retry_history")}
    fails = [t for t in trials if t.state.name == "FAIL"]
    surplus = [t for t in fails if "not needed" in str(t.user_attrs.get("reason"))]
    lost = [n for n, (state, values) in seen.items()
            if n not in by_number or by_number[n].state.name != state
            or (tuple(by_number[n].values) if by_number[n].values else None) != values]
    return {"completed": len(finished), "retried": len(parents),
            "duplicated": len(hashes) - len(set(hashes)),
            "reused": len(finished) - len(trained), "surplus": len(surplus),
            "failed": len([t for t in fails if key(t) not in parents and t not in surplus]),
            "failed_reasons": sorted({str(t.user_attrs.get("reason"))[:200] for t in fails
                                      if key(t) not in parents and t not in surplus}),
            "lost": len(lost), "lost_trials": sorted(lost), "seen_finished": len(seen)}


def confirmations(jobs: list) -> dict:
    """The confirmation's figures: every (design, seed) job must end COMPLETE, whatever was killed."""
    wanted = {(t.user_attrs.get("design_hash"), t.user_attrs.get("seed")) for t in jobs if t.user_attrs.get("design")}
    done = {(t.user_attrs.get("design_hash"), t.user_attrs.get("seed")) for t in jobs if t.state.name == "COMPLETE"}
    return {"confirm_jobs": len(wanted), "confirm_completed": len(done & wanted), "confirm_lost": len(wanted - done),
            "confirm_retried": sum(bool(t.system_attrs.get("retry_history")) for t in jobs)}


def confirmed_values(jobs: list) -> dict[tuple, tuple]:
    """(design hash, seed) -> (validation, test) of its COMPLETE confirmation trial."""
    return {(t.user_attrs["design_hash"], t.user_attrs["seed"]): (t.user_attrs.get("val_score"),
                                                                   t.user_attrs.get("test_score"))
            for t in jobs if t.state.name == "COMPLETE"}


def reap_delay(trials: list, sent: list[dict]) -> float | None:
    """The longest time from a kill to its victim's trial being failed (and retried), in seconds."""
    from auxsearch.store.heartbeat import WORKER_KEY

    killed_at = {f"{socket.gethostname()}:{k['pid']}": k["at"] for k in sent}
    delays = [t.datetime_complete.timestamp() - killed_at[t.system_attrs[WORKER_KEY]] for t in trials
              if t.state.name == "FAIL" and t.system_attrs.get(WORKER_KEY) in killed_at and t.datetime_complete
              and "worker died" in str(t.user_attrs.get("reason"))]
    return round(max(delays), 2) if delays else None


def evaluated(trials: list) -> dict[str, tuple]:
    """design hash -> values of its first trained COMPLETE trial."""
    out: dict[str, tuple] = {}
    for t in sorted(trials, key=lambda t: (not key(t)[0], t.number)):
        if t.state.name == "COMPLETE" and "reused_from" not in t.user_attrs and t.user_attrs.get("design_hash"):
            out.setdefault(t.user_attrs["design_hash"], tuple(t.values))
    return out


def front(trials: list, designs: set[str] | None = None) -> list[tuple]:
    """(design hash, score, memory) of the Pareto front, as every auxsearch output computes it.

    ``designs``: only the trials of these design hashes take part.
    """
    from auxsearch.pareto import pareto_front
    from auxsearch.store.records import _record

    recs = [_record(t, str(t.number), key(t)[0]) for t in trials
            if designs is None or t.user_attrs.get("design_hash") in designs]
    return sorted((r["design_hash"], r["score"], r["peak_memory_bytes"]) for r in pareto_front(recs))


def compare(chaos_trials: list, reference_trials: list) -> dict:
    """Same designs -> same values; the fronts of both runs over the designs both evaluated."""
    a, b = evaluated(chaos_trials), evaluated(reference_trials)
    shared = set(a) & set(b)
    diffs = [max(abs(x - y) if math.isfinite(x) and math.isfinite(y) else (0.0 if x == y else math.inf)
                 for x, y in zip(a[h], b[h], strict=True)) for h in sorted(shared)]
    same_designs = set(a) == set(b)
    return {"designs": len(a), "reference_designs": len(b), "shared": len(shared),
            "same_values": sum(a[h] == b[h] for h in shared), "max_abs_diff": max(diffs, default=0.0),
            "same_designs": same_designs,
            "same_front": (front(chaos_trials) == front(reference_trials)) if same_designs else None,
            "same_front_on_shared": front(chaos_trials, shared) == front(reference_trials, shared),
            "front_size": len(front(chaos_trials))}


def run_reference(study_path: Path, timeout: float = 900.0) -> dict:
    """The same study, sequential (one process, one thread) and unkilled."""
    name = yaml.safe_load(study_path.read_text())["name"]
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "auxsearch", "run", str(study_path), "--no-progress"],
                          env=_env(), cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"the sequential reference failed:\n{done.stderr[-2000:]}")
    url = f"journal:{study_path.parent / 'run' / 'study.journal'}"
    trials = load_trials(url, name)
    return {"wall_s": round(time.monotonic() - start, 1), "completed": count(trials, {})["completed"],
            "_trials": trials, "_jobs": load_trials(url, name, confirm=True)}


# --- report ------------------------------------------------------------------------------------------


def public(d: dict) -> dict:
    return {k: (public(v) if isinstance(v, dict) else v) for k, v in d.items() if not k.startswith("_")}


def report(res: dict) -> str:
    from _common import markdown_table, provenance

    s = res["settings"]
    rows = []
    for kind, f in res["storages"].items():
        if "skipped" in f:
            rows.append([kind, f"skipped: {f['skipped']}"] + [""] * 11)
            continue
        v = f.get("vs_sequential", {})
        if v.get("same_designs"):
            fronts = "same designs, " + ("same front" if v["same_front"] else "FRONT DIFFERS")
        else:
            fronts = (f"{v['designs']} vs {v['reference_designs']} designs trained; front over the shared ones "
                      + ("the same" if v["same_front_on_shared"] else "DIFFERS"))
        same = f"{v['same_values']} of {v['shared']} shared designs identical; {fronts}"
        reap = "-" if f["max_reap_s"] is None else f"{f['max_reap_s']:.1f}"
        conf = (f"{f['confirm_completed']} of {f['confirm_jobs']} ({f['confirm_retried']} retried); "
                f"{f['confirm_same_values']} of {f['confirm_shared']} as the sequential run")
        rows.append([kind, f["requested"], f["completed"], f"{f['kills']} ({f['killed_mid_trial']})", f["restarts"],
                     f["retried"], f["duplicated"], f["lost"], reap, f"{f['wall_s']:.0f}", f["exit_code"], same, conf])
    table = markdown_table(["storage", "requested", "completed", "kills (mid-trial)", "restarts", "retried",
                            "duplicated", "lost", "kill to retry, max s", "wall s", "exit",
                            "vs sequential unkilled run", "confirmation jobs completed"], rows)
    return "\n".join([
        "## Faults survived",
        "",
        f"`auxsearch run --workers {s['workers']}` on a study of {s['requested']} tiny trials (digits 8x8, resnet8, "
        f"{s['epochs']} epochs, grid sampler: every design once), a worker SIGKILLed at random every "
        f"~{s['every']:g} s ({'picked among those in the middle of a trial when any is' if s['target'] == 'running' else 'any worker'}; "
        f"at most {s['kills']} kills, the confirmation's retrainings included: they run on the same workers), "
        "then the study left to finish; `run` restarts each "
        "killed worker and fails and re-enqueues its trial at once (docs/distributed.md). *retried*: trials "
        "failed because their worker died, each re-enqueued with its design; *duplicated*: trainings of a "
        "design already trained; *lost*: trials seen finished during the run and missing or changed at the "
        "end (a monitor reads the storage every 0.5 s); *kill to retry*: from the SIGKILL to the victim's trial "
        "being failed and re-enqueued. Wall seconds are mostly worker start-up (importing torch, loading the "
        "data: several seconds each on these 2 shared cores). The sequential reference (same study file and seeds, one unkilled process) took "
        f"{res['reference']['wall_s']:.0f} s; a design evaluated in both runs must have identical values "
        "(validation accuracy and peak memory, exact equality), and with the same designs evaluated the fronts "
        "must be identical.",
        "",
        table,
        "",
        provenance(),
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=6)
    parser.add_argument("--every", type=float, default=2.5, help="seconds between kills (jittered 0.5-1.5x)")
    parser.add_argument("--kills", type=int, default=6, help="kills per storage at most")
    parser.add_argument("--chaos-seconds", type=float, default=90.0, help="the chaos loop stops after this long")
    parser.add_argument("--storages", default="journal,postgresql", help="comma-separated: journal, postgresql")
    parser.add_argument("--seed", type=int, default=0, help="seeds the choice of victims and the delays")
    parser.add_argument("--target", choices=("running", "random"), default="running",
                        help="running: a random worker among those mid-trial (any when none is); random: any worker")
    parser.add_argument("--quick", action="store_true", help="a smaller grid and 3 kills; writes no docs")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object on stdout")
    parser.add_argument("--json-only", action="store_true", help="print the JSON, write no docs")
    parser.add_argument("--keep", type=Path, help="run in this folder and keep it (default: a temporary one)")
    args = parser.parse_args(argv)
    kills = 3 if args.quick else args.kills
    folder = args.keep or Path(tempfile.mkdtemp(prefix="auxsearch-chaos-"))
    epochs = 2
    res: dict = {"settings": {"workers": args.workers, "every": args.every, "kills": kills, "epochs": epochs,
                              "target": args.target,
                              "chaos_seconds": args.chaos_seconds, "seed": args.seed, "quick": args.quick},
                 "storages": {}}
    try:
        print("sequential unkilled reference ...", file=sys.stderr, flush=True)
        ref = run_reference(write_study(folder / "reference", quick=args.quick, epochs=epochs))
        res["reference"] = ref
        res["settings"]["requested"] = n_trials_of(folder / "reference" / "study.yaml")
        for kind in [k.strip() for k in args.storages.split(",") if k.strip()]:
            print(f"{kind}: {args.workers} workers under chaos ...", file=sys.stderr, flush=True)
            study = write_study(folder / kind, quick=args.quick, epochs=epochs)
            kw = dict(workers=args.workers, every=args.every, kills=kills, chaos_seconds=args.chaos_seconds,
                      seed=args.seed, target=args.target)
            if kind == "journal":
                figures = run_chaos(study, **kw)
            elif kind == "postgresql":
                try:
                    pg = Postgres()
                    pg.start()
                except RuntimeError as exc:  # pgserver.PostgresUnavailable or a failed start
                    print(f"postgresql: skipped: {exc}", file=sys.stderr)
                    res["storages"][kind] = {"skipped": str(exc)}
                    continue
                try:
                    figures = run_chaos(study, storage=pg.url, **kw)
                finally:
                    pg.stop()
            else:
                parser.error(f"unknown storage {kind!r}")
            figures["vs_sequential"] = compare(figures["_trials"], ref["_trials"])
            mine, theirs = confirmed_values(figures["_jobs"]), confirmed_values(ref["_jobs"])
            figures["confirm_same_values"] = sum(mine[k] == theirs[k] for k in set(mine) & set(theirs))
            figures["confirm_shared"] = len(set(mine) & set(theirs))
            res["storages"][kind] = figures
            print(f"{kind}: {json.dumps(public(figures))}", file=sys.stderr, flush=True)
    finally:
        if args.keep is None:
            shutil.rmtree(folder, ignore_errors=True)
    out = public(res)
    if args.json or args.json_only:
        print(json.dumps(out, indent=1))
    if not (args.quick or args.json_only):
        from _common import write_section

        body = report(res)
        print(body if not args.json else "", file=sys.stderr)
        print(f"wrote section {SECTION} of {write_section(SECTION, body)}", file=sys.stderr)
    ran = [f for f in res["storages"].values() if "skipped" not in f]
    ok = all(f["lost"] == 0 and f["completed"] == f["requested"] and f["exit_code"] == 0 and f["confirm_lost"] == 0
             for f in ran)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
