"""Many workers on one study: heartbeats, a stale-trial reaper and worker processes.

Optuna's RDB storage has heartbeats of its own (``heartbeat_interval``,
``RetryHeartbeatStaleTrialCallback``); the journal file storage has none, so
every auxsearch worker writes a heartbeat into its running trial's system
attributes and, before each new trial, fails and re-enqueues (with the same
parameters and design) any RUNNING trial whose worker is gone: a dead
process on this host, or no heartbeat for ``grace`` seconds from anywhere.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from .errors import ConfigError

WORKER_KEY = "auxsearch:worker"
BEAT_KEY = "auxsearch:heartbeat"
HEARTBEAT_INTERVAL = 5.0  # seconds between heartbeats of a running trial
GRACE = 60.0  # a trial with no heartbeat for this long is stale
MAX_RETRY = 3


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def pid_alive(pid: int) -> bool:
    """True if ``pid`` runs on this host (a zombie, killed but not yet reaped, counts as dead)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True
    return "\nState:\tZ" not in status


def refuse_sqlite(url: str | None, workers: int) -> None:
    if url and url.startswith("sqlite") and workers > 1:
        raise ConfigError("--storage", f"SQLite cannot serve {workers} workers: it locks the whole file for "
                          "every write, so parallel workers fail with 'database is locked'. Use the default "
                          "journal file (no --storage), or a server: postgresql://... or mysql://...")


class Heartbeat:
    """Writes the time into a running trial every ``interval`` seconds, in a daemon thread."""

    def __init__(self, trial: optuna.Trial, interval: float = HEARTBEAT_INTERVAL) -> None:
        self.trial, self.interval = trial, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Heartbeat:
        self._beat()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _beat(self) -> None:
        storage = self.trial.study._storage
        storage.set_trial_system_attr(self.trial._trial_id, BEAT_KEY, time.time())
        storage.set_trial_system_attr(self.trial._trial_id, WORKER_KEY, worker_id())

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self._beat()
            except Exception:  # the trial finished meanwhile; the main thread owns it now
                return


def is_stale(t: optuna.trial.FrozenTrial, grace: float = GRACE, now: float | None = None) -> bool:
    now = time.time() if now is None else now
    owner = t.system_attrs.get(WORKER_KEY)
    if owner:
        host, _, pid = owner.rpartition(":")
        if host == socket.gethostname() and pid.isdigit() and not pid_alive(int(pid)):
            return True
    beat = t.system_attrs.get(BEAT_KEY)
    if beat is None and t.datetime_start is not None:
        beat = t.datetime_start.timestamp()
    return beat is not None and now - beat > grace


def reap_stale_trials(study: optuna.Study, grace: float = GRACE) -> list[int]:
    """Fail every stale RUNNING trial and enqueue a retry of it; returns their numbers."""
    reaped = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if not is_stale(t, grace):
            continue
        storage = study._storage
        try:
            storage.set_trial_user_attr(t._trial_id, "reason", "its worker died or stopped beating; retried")
            storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
        except Exception:  # another worker reaped it first
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)(study, storage.get_trial(t._trial_id))
        reaped.append(t.number)
    return reaped


def worker_env(index: int, workers: int, gpus: int) -> tuple[dict[str, str], int]:
    """Environment and CPU thread budget of worker ``index``: one GPU each, round robin."""
    env = dict(os.environ)
    if gpus > 0:
        env["CUDA_VISIBLE_DEVICES"] = str(index % gpus)
    threads = max(1, (os.cpu_count() or 1) // workers)
    env["OMP_NUM_THREADS"] = str(threads)
    return env, threads


def spawn_workers(study_path: Path, storage: str, workers: int, n_trials: int, gpus: int) -> list[subprocess.Popen]:
    procs = []
    for i in range(workers):
        env, threads = worker_env(i, workers, gpus)
        cmd = [sys.executable, "-m", "auxsearch", "worker", str(study_path), "--storage", storage,
               "--worker-index", str(i), "--threads", str(threads), "--n-trials", str(n_trials), "--no-progress"]
        procs.append(subprocess.Popen(cmd, env=env))
    return procs


def run_workers(run, st, workers: int, progress: bool) -> None:
    """Start ``workers`` processes on the study and follow them with one progress bar."""
    import time

    import torch
    from tqdm.auto import tqdm

    from .study import finished

    procs = spawn_workers(run.path, run.storage_url, workers, run.cfg.n_trials,
                          torch.cuda.device_count() if torch.cuda.is_available() else 0)
    bar = tqdm(total=run.cfg.n_trials, initial=finished(st), desc=f"trials ({workers} workers)",
               unit="trial", disable=not progress, dynamic_ncols=True)
    try:
        while any(p.poll() is None for p in procs):
            time.sleep(1.0)
            bar.n = finished(st)
            bar.refresh()
    except KeyboardInterrupt:
        for p in procs:
            p.terminate()
        raise
    finally:
        bar.close()
    bad = [(i, p.returncode) for i, p in enumerate(procs) if p.returncode]
    if bad:
        print(f"auxsearch: workers that ended with an error: {bad}", file=sys.stderr)
