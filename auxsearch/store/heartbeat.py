"""Heartbeats of running trials, and reaping the trials whose worker is gone.

Optuna's RDB storage has heartbeats of its own (``heartbeat_interval``,
``RetryHeartbeatStaleTrialCallback``); the journal file storage has none, so every auxsearch
worker writes a heartbeat into its running trial's system attributes (:class:`Heartbeat`) and,
before each new trial, fails and re-enqueues (with the same parameters and design) any RUNNING
trial whose worker is gone: a dead process on this host, or no heartbeat for ``grace`` seconds
from anywhere (:func:`reap_stale_trials`). The supervisor of ``run --workers N`` reaps a worker
it saw die at once (:func:`reap_dead_worker`).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from auxsearch.store import optuna_adapter
from auxsearch.store.record import RETRY_KEEPS, SearchAttrs, write_to_storage

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


class Heartbeat:
    """Writes the time into a running trial every ``interval`` seconds, in a daemon thread.

    A failed write (a storage that is restarting, a full disk) is tried again at the next
    beat; only a trial finished meanwhile (reaped by another worker) ends the thread.
    """

    def __init__(self, storage: Any, study_name: str, number: int, interval: float = HEARTBEAT_INTERVAL) -> None:
        self.storage, self.interval = storage, interval
        self.trial_id = optuna_adapter.trial_id(storage, study_name, number)
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
        self.storage.set_trial_system_attr(self.trial_id, BEAT_KEY, time.time())
        self.storage.set_trial_system_attr(self.trial_id, WORKER_KEY, worker_id())

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self._beat()
            except optuna.exceptions.UpdateFinishedTrialError:  # reaped meanwhile: nothing to keep alive
                return
            except Exception:  # a storage hiccup: the next beat tries again
                continue


def _own_beat(t: FrozenTrial) -> float | None:
    """The trial's last heartbeat, if its current run wrote it (a retry copied from a dead trial has an older one)."""
    beat = t.system_attrs.get(BEAT_KEY)
    if beat is None or (t.datetime_start is not None and beat < t.datetime_start.timestamp()):
        return None
    return beat


def owner(t: FrozenTrial) -> str | None:
    """``host:pid`` of the worker running the trial now, once its first heartbeat is written."""
    return t.system_attrs.get(WORKER_KEY) if _own_beat(t) is not None else None


def is_stale(t: FrozenTrial, grace: float = GRACE, now: float | None = None) -> bool:
    now = time.time() if now is None else now
    who = owner(t)
    if who:
        host, _, pid = who.rpartition(":")
        if host == socket.gethostname() and pid.isdigit() and not pid_alive(int(pid)):
            return True
    beat = _own_beat(t)
    if beat is None and t.datetime_start is not None:
        beat = t.datetime_start.timestamp()
    return beat is not None and now - beat > grace


def fail_and_retry(study: optuna.Study, storage: Any, t: FrozenTrial) -> bool:
    """Fail a RUNNING trial whose worker is gone and enqueue a copy of it; False if another reaper was first.

    The copy has the trial's parameters and design, and none of its run: no worker, heartbeat,
    history or reason (Optuna's retry callback copies every attribute).
    """
    tid = optuna_adapter.trial_id(storage, study.study_name, t.number)
    try:
        write_to_storage(storage, tid, SearchAttrs, reason="its worker died or stopped beating; retried")
        storage.set_trial_state_values(tid, TrialState.FAIL)
    except Exception:  # another worker reaped it first
        return False
    optuna_adapter.retry_copy(study, storage.get_trial(tid), RETRY_KEEPS, (WORKER_KEY, BEAT_KEY), MAX_RETRY)
    return True


def retry_failed(study: optuna.Study, storage: Any, number: int) -> None:
    """Enqueue a copy of FAIL trial ``number`` (its parameters and design; Optuna's retry history kept,
    at most ``MAX_RETRY`` attempts in all)."""
    tid = optuna_adapter.trial_id(storage, study.study_name, number)
    optuna_adapter.retry_copy(study, storage.get_trial(tid), RETRY_KEEPS, (WORKER_KEY, BEAT_KEY), MAX_RETRY)


def reap_stale_trials(study: optuna.Study, storage: Any, grace: float = GRACE) -> list[int]:
    """Fail every stale RUNNING trial and enqueue a retry of it; returns their numbers."""
    return [t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            if is_stale(t, grace) and fail_and_retry(study, storage, t)]


def reap_dead_worker(study: optuna.Study, storage: Any, pid: int, index: int | None = None) -> list[int]:
    """Fail and retry, at once, the RUNNING trials of worker process ``pid`` (known dead, on this host).

    A trial names its process from its first heartbeat on; one the worker had just begun
    (its ``worker`` attribute set, no heartbeat yet) is matched by the worker's ``index``.
    Then every other stale trial is reaped as well.
    """
    dead = f"{socket.gethostname()}:{pid}"
    mine = [t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            if owner(t) == dead or (index is not None and owner(t) is None and SearchAttrs.of(t).worker == index)]
    return [t.number for t in mine if fail_and_retry(study, storage, t)] + reap_stale_trials(study, storage)
