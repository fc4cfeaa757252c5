"""Many workers on one study: heartbeats, a stale-trial reaper, and a supervisor of worker processes.

Optuna's RDB storage has heartbeats of its own (``heartbeat_interval``,
``RetryHeartbeatStaleTrialCallback``); the journal file storage has none, so
every auxsearch worker writes a heartbeat into its running trial's system
attributes and, before each new trial, fails and re-enqueues (with the same
parameters and design) any RUNNING trial whose worker is gone: a dead
process on this host, or no heartbeat for ``grace`` seconds from anywhere.

``auxsearch run --workers N`` starts N ``auxsearch worker`` processes and
:func:`run_workers` supervises them: a worker that dies (a signal, the OOM
killer, a crash, a storage failure) has its RUNNING trial failed and
re-enqueued at once, and is restarted after a delay that doubles with each
death in a row (1, 2, 4 ... s, at most 60 s). A worker slot that dies
``max_restarts + 1`` times in a row without finishing a trial is given up;
when every slot has ended and the study is short of ``n_trials`` (and its
``timeout`` has not passed), :class:`StudyIncomplete` says so in one line.
"""

from __future__ import annotations

import copy
import errno
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from .errors import AuxsearchError, ConfigError

WORKER_KEY = "auxsearch:worker"
BEAT_KEY = "auxsearch:heartbeat"
HEARTBEAT_INTERVAL = 5.0  # seconds between heartbeats of a running trial
GRACE = 60.0  # a trial with no heartbeat for this long is stale
MAX_RETRY = 3

# Supervision of `run --workers N` (docs/distributed.md, "Supervision").
MAX_RESTARTS = 5  # deaths in a row (no trial finished in between) a worker slot is restarted after
BACKOFF_BASE = 1.0  # seconds before the first restart; doubles with each death in a row
BACKOFF_CAP = 60.0  # the longest delay between two restarts
LOCK_STALE = 10.0  # a journal lock left by a killed worker is released after this long (Optuna: 30 s)
EXIT_INCOMPLETE = 3  # `auxsearch run`: the study is short of n_trials; the same command resumes it
EXIT_STORAGE = 75  # `auxsearch worker`: the storage failed (EX_TEMPFAIL); the supervisor restarts it
EXIT_USER_ERROR = 2  # a worker's own error message (bad study, 5 failed trials in a row): not restarted


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
    """Writes the time into a running trial every ``interval`` seconds, in a daemon thread.

    A failed write (a storage that is restarting, a full disk) is tried again at the next
    beat; only a trial finished meanwhile (reaped by another worker) ends the thread.
    """

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
            except optuna.exceptions.UpdateFinishedTrialError:  # reaped meanwhile: nothing to keep alive
                return
            except Exception:  # a storage hiccup: the next beat tries again
                continue


def _own_beat(t: optuna.trial.FrozenTrial) -> float | None:
    """The trial's last heartbeat, if its current run wrote it (a retry copied from a dead trial has an older one)."""
    beat = t.system_attrs.get(BEAT_KEY)
    if beat is None or (t.datetime_start is not None and beat < t.datetime_start.timestamp()):
        return None
    return beat


def owner(t: optuna.trial.FrozenTrial) -> str | None:
    """``host:pid`` of the worker running the trial now, once its first heartbeat is written."""
    return t.system_attrs.get(WORKER_KEY) if _own_beat(t) is not None else None


def is_stale(t: optuna.trial.FrozenTrial, grace: float = GRACE, now: float | None = None) -> bool:
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


RETRY_KEEPS = ("design", "design_hash", "K", "is_e2e", "enqueued")  # what a retry starts from, as enqueued


def _fail_and_retry(study: optuna.Study, t: optuna.trial.FrozenTrial) -> bool:
    """Fail a RUNNING trial whose worker is gone and enqueue a copy of it; False if another reaper was first.

    The copy has the trial's parameters and design, and none of its run: no worker, heartbeat,
    history or reason (Optuna's retry callback copies every attribute).
    """
    storage = study._storage
    try:
        storage.set_trial_user_attr(t._trial_id, "reason", "its worker died or stopped beating; retried")
        storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
    except Exception:  # another worker reaped it first
        return False
    failed = copy.deepcopy(storage.get_trial(t._trial_id))
    failed.user_attrs = {k: v for k, v in failed.user_attrs.items() if k in RETRY_KEEPS}
    failed.system_attrs = {k: v for k, v in failed.system_attrs.items() if k not in (WORKER_KEY, BEAT_KEY)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)(study, failed)
    return True


def reap_stale_trials(study: optuna.Study, grace: float = GRACE) -> list[int]:
    """Fail every stale RUNNING trial and enqueue a retry of it; returns their numbers."""
    return [t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            if is_stale(t, grace) and _fail_and_retry(study, t)]


def reap_dead_worker(study: optuna.Study, pid: int, index: int | None = None) -> list[int]:
    """Fail and retry, at once, the RUNNING trials of worker process ``pid`` (known dead, on this host).

    A trial names its process from its first heartbeat on; one the worker had just begun
    (``user_attrs["worker"]`` set, no heartbeat yet) is matched by the worker's ``index``.
    Then every other stale trial is reaped as well.
    """
    dead = f"{socket.gethostname()}:{pid}"
    mine = [t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            if owner(t) == dead or (index is not None and owner(t) is None and t.user_attrs.get("worker") == index)]
    return [t.number for t in mine if _fail_and_retry(study, t)] + reap_stale_trials(study)


class StudyIncomplete(AuxsearchError):
    """``auxsearch run`` stopped short of ``n_trials`` finished trials; running it again resumes."""

    def __init__(self, done: int | None, n_trials: int, why: str = "") -> None:
        self.done, self.n_trials, self.why = done, n_trials, why
        count = f"{done} of {n_trials} finished" if done is not None else f"? of {n_trials} finished"
        super().__init__(f"study incomplete: {count}{f' ({why})' if why else ''}; the same command resumes it")


_STORAGE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO}


def storage_failure(exc: BaseException | None) -> str | None:
    """One line naming a storage failure (full disk, read-only folder, lost database), else None.

    The exception's causes and contexts count too: Optuna, failing to record a trial's end,
    raises an AssertionError of its own while handling the storage's error.
    """
    seen = 0
    while exc is not None and seen < 10:
        why = _storage_failure(exc)
        if why is not None:
            return why
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return None


def _storage_failure(exc: BaseException) -> str | None:
    if isinstance(exc, ConfigError) and exc.key == "storage":
        return str(exc)
    if isinstance(exc, OSError) and exc.errno in _STORAGE_ERRNOS:
        where = f": {exc.filename}" if exc.filename else ""
        return f"cannot write the study's storage: {exc.strerror or exc}{where}"
    if isinstance(exc, optuna.exceptions.StorageInternalError):
        exc = exc.__cause__ or exc
    from sqlalchemy.exc import SQLAlchemyError  # Optuna's own dependency

    if isinstance(exc, (SQLAlchemyError, optuna.exceptions.StorageInternalError)):
        first = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        return f"the study's database failed: {first[0] if first else type(exc).__name__}"
    return None


# --- the journal file: appends that are whole or absent ------------------------------------------


def guard_journals() -> None:
    """Make every journal file append of this process all-or-nothing (idempotent).

    Optuna appends each log line with one buffered write; on a full disk the kernel can
    take part of a line before refusing the rest (ENOSPC), and the next append, from any
    worker, would glue its line onto that fragment: a line no reader can parse, after which
    Optuna refuses the whole journal. Here an append that fails is cut back to the
    journal's length before it, under the journal's own lock, and a fragment left by an
    older writer (a power cut, an Optuna without this guard) is cut off before the next
    append. It replaces ``JournalFileBackend.append_logs`` for the whole process (``auxsearch
    run`` and ``auxsearch worker`` install it first thing), so the appends Optuna makes while
    a study is opened are covered too; reads and other storages are untouched.
    """
    from optuna.storages.journal import JournalFileBackend

    if JournalFileBackend.append_logs is not _append_whole:
        JournalFileBackend.append_logs = _append_whole


def _append_whole(backend, logs: list[dict]) -> None:
    from optuna.storages.journal._file import get_lock_file

    data = ("\n".join(json.dumps(log, separators=(",", ":")) for log in logs) + "\n").encode("utf-8")
    with get_lock_file(backend._lock):
        fd = os.open(backend._file_path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            size = _whole_length(fd)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            except BaseException:
                try:
                    os.ftruncate(fd, size)
                except OSError:  # a read-only file system took nothing to begin with
                    pass
                raise
        finally:
            os.close(fd)


def _whole_length(fd: int) -> int:
    """The journal's length up to its last newline; a trailing fragment is cut off."""
    size = os.fstat(fd).st_size
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return size
    end = size
    while end > 0:
        start = max(0, end - 65536)
        chunk = os.pread(fd, end - start, start)
        cut = chunk.rfind(b"\n")
        if cut >= 0:
            end = start + cut + 1
            break
        end = start
    os.ftruncate(fd, end)
    return end


class _LockWatch:
    """A journal lock that outlives a killed worker is released after LOCK_STALE seconds.

    Optuna's lock is a symbolic link created per append and removed after it (milliseconds);
    a worker killed in between leaves it, and every other worker then waits Optuna's grace
    period (30 s). After a death the supervisor notes the lock it sees; the same link still
    there LOCK_STALE seconds later is the dead worker's, and is removed as Optuna does.
    """

    def __init__(self, journal: Path | None, stale: float = LOCK_STALE) -> None:
        self.lock = Path(f"{journal}.lock") if journal is not None else None
        self.stale, self.seen, self.released = stale, None, 0

    def _identity(self):
        try:
            st = os.lstat(self.lock)
        except (OSError, TypeError):
            return None
        return st.st_ino, st.st_ctime_ns

    def after_death(self) -> None:
        if self.lock is not None and self.seen is None:
            ident = self._identity()
            self.seen = (ident, time.monotonic()) if ident else None

    def check(self) -> bool:
        if self.seen is None:
            return False
        ident, since = self.seen
        if self._identity() != ident:
            self.seen = None
            return False
        if time.monotonic() - since < self.stale:
            return False
        self.seen = None
        moved = self.lock.with_name(f"{self.lock.name}{uuid.uuid4()}.rename")
        try:
            os.rename(self.lock, moved)
            os.unlink(moved)
        except OSError:
            return False
        self.released += 1
        return True


# --- worker processes and their supervisor -------------------------------------------------------


def worker_env(index: int, workers: int, gpus: int) -> tuple[dict[str, str], int]:
    """Environment and CPU thread budget of worker ``index``: one GPU each, round robin."""
    env = dict(os.environ)
    if gpus > 0:
        env["CUDA_VISIBLE_DEVICES"] = str(index % gpus)
    threads = max(1, (os.cpu_count() or 1) // workers)
    env["OMP_NUM_THREADS"] = str(threads)
    return env, threads


def worker_command(study_path: Path, storage: str, index: int, threads: int, n_trials: int,
                   timeout: float | None = None, seed_index: int | None = None) -> list[str]:
    cmd = [sys.executable, "-m", "auxsearch", "worker", str(study_path), "--storage", storage,
           "--worker-index", str(index), "--threads", str(threads), "--n-trials", str(n_trials), "--no-progress"]
    if timeout is not None:
        cmd += ["--timeout", f"{max(timeout, 0.0):.1f}"]
    if seed_index is not None and seed_index != index:
        cmd += ["--seed-index", str(seed_index)]
    return cmd


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: the worker gets SIGTERM when the supervisor dies, so no orphan keeps running."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def restart_delay(deaths: int, base: float = BACKOFF_BASE, cap: float = BACKOFF_CAP) -> float:
    """Seconds before restarting a worker that died ``deaths`` times in a row: 1, 2, 4 ... at most 60."""
    return min(cap, base * 2 ** max(0, deaths - 1))


def describe_exit(code: int) -> str:
    """How a worker ended, for the supervisor's one line: "was killed by SIGKILL", "lost its storage (exit 75)"."""
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return {EXIT_STORAGE: "lost its storage (exit 75)"}.get(code, f"ended with exit code {code}")


@dataclass
class Slot:
    """One worker position of ``run --workers N``: its process now, and its record of deaths."""

    index: int
    proc: subprocess.Popen | None = None
    deaths: int = 0  # in a row, without a trial finished by the slot in between
    restarts: int = 0
    due: float | None = None  # monotonic time of the pending restart
    ended: str | None = None  # why the slot will not run again
    pids: list[int] = field(default_factory=list)


class Supervisor:
    """Keeps ``workers`` worker processes on a study until it has ``n_trials`` finished trials.

    See the module docstring for the policy. ``log`` gets one line per death, restart and
    give-up; ``poll`` is how often (seconds) the processes and the study are looked at.
    """

    def __init__(self, run, study: optuna.Study, workers: int, *, max_restarts: int = MAX_RESTARTS,
                 gpus: int = 0, poll: float = 1.0, log=None, backoff_base: float = BACKOFF_BASE) -> None:
        from .storage import StorageURL

        self.run, self.study, self.workers, self.max_restarts = run, study, workers, max_restarts
        self.gpus, self.poll, self.backoff_base = gpus, poll, backoff_base
        self.log = log or (lambda line: print(f"auxsearch: {line}", file=sys.stderr, flush=True))
        self.n_trials, self.timeout = run.cfg.n_trials, run.cfg.timeout
        self.slots = [Slot(i) for i in range(workers)]
        self.lock = _LockWatch(StorageURL(run.storage_url).journal)
        self.deadline = None if self.timeout is None else time.monotonic() + self.timeout
        self.spawned = 0
        self.last_done: int | None = None

    # -- the study, read defensively: a database restarting must not stop the supervisor
    def done(self) -> int | None:
        from .study import finished

        try:
            self.last_done = finished(self.study)
        except Exception:
            return None
        return self.last_done

    def timed_out(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline

    def start(self, slot: Slot) -> None:
        env, threads = worker_env(slot.index, self.workers, self.gpus)
        remaining = None if self.deadline is None else self.deadline - time.monotonic()
        seed_index = slot.index + self.workers * slot.restarts  # a restarted worker draws fresh designs
        cmd = worker_command(self.run.path, self.run.storage_url, slot.index, threads, self.n_trials,
                             remaining, seed_index)
        slot.proc = subprocess.Popen(cmd, env=env, preexec_fn=_die_with_parent if os.name == "posix" else None)
        slot.pids.append(slot.proc.pid)
        slot.due = None
        self.spawned += 1

    def _progressed(self, pid: int) -> bool:
        me = f"{socket.gethostname()}:{pid}"
        try:
            return any(t.system_attrs.get(WORKER_KEY) == me
                       for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))
        except Exception:
            return False

    def _ended(self, slot: Slot) -> None:
        proc, slot.proc = slot.proc, None
        code = proc.returncode
        try:
            reaped = reap_dead_worker(self.study, proc.pid, slot.index)
        except Exception:  # the storage is down: the workers' own reapers catch it up later
            reaped = []
        self.lock.after_death()
        if code == 0:
            slot.ended = "finished"
            return
        lost = f"; trial {', '.join(map(str, reaped))} failed and re-enqueued" if reaped else ""
        what = f"worker {slot.index} (pid {proc.pid}) {describe_exit(code)}{lost}"
        if code == EXIT_USER_ERROR:
            slot.ended = "stopped on its error"
            self.log(f"{what}: not restarted (its error is above)")
            return
        done = self.done()
        if (done is not None and done >= self.n_trials) or self.timed_out():
            slot.ended = "study finished" if not self.timed_out() else "timeout"
            return
        slot.deaths = 1 if self._progressed(proc.pid) else slot.deaths + 1
        if slot.deaths > self.max_restarts:
            slot.ended = f"given up after {slot.deaths} deaths in a row"
            self.log(f"{what}: gave up after {slot.deaths} deaths in a row without a finished trial "
                     f"(--max-restarts {self.max_restarts})")
            return
        delay = restart_delay(slot.deaths, self.backoff_base)
        slot.due = time.monotonic() + delay
        self.log(f"{what}; restart {slot.deaths} of {self.max_restarts} in {delay:g} s")

    def step(self) -> bool:
        """Look once at every slot; False when no slot runs or waits to restart."""
        now = time.monotonic()
        for slot in self.slots:
            if slot.proc is not None and slot.proc.poll() is not None:
                self._ended(slot)
            if slot.proc is None and slot.due is not None and now >= slot.due:
                done = self.done()
                if (done is not None and done >= self.n_trials) or self.timed_out():
                    slot.due, slot.ended = None, "study finished" if not self.timed_out() else "timeout"
                else:
                    slot.restarts += 1
                    self.start(slot)
        if self.lock.check():
            self.log("released the journal lock a killed worker held")
        return any(s.proc is not None or s.due is not None for s in self.slots)

    def stop(self, grace: float = 10.0) -> None:
        live = [s.proc for s in self.slots if s.proc is not None]
        for p in live:
            p.terminate()
        end = time.monotonic() + grace
        for p in live:
            try:
                p.wait(max(0.1, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for s in self.slots:
            if s.proc is not None:
                try:
                    reap_dead_worker(self.study, s.proc.pid, s.index)
                except Exception:
                    pass
                s.proc = None
            s.due = None

    def supervise(self, on_poll=None) -> None:
        """Run the workers to the end of the study; raises :class:`StudyIncomplete` when it gives up."""
        guard_journals()
        for slot in self.slots:
            self.start(slot)
        try:
            while self.step():
                time.sleep(self.poll)
                self.done()
                if on_poll is not None:
                    on_poll(self)
        except BaseException:
            self.stop()
            raise
        done = self.done()
        if done is not None and done >= self.n_trials:
            return
        if self.timed_out():
            self.log(f"the study stopped at its timeout ({self.timeout:g} s): {done} of {self.n_trials} trials finished")
            return
        why = ", ".join(f"worker {s.index} {s.ended}" for s in self.slots if s.ended != "finished")
        raise StudyIncomplete(done if done is not None else self.last_done, self.n_trials,
                              why or "every worker stopped")


def run_workers(run, st, workers: int, progress: bool, max_restarts: int = MAX_RESTARTS) -> Supervisor:
    """Start ``workers`` processes on the study, supervise them, follow them with one progress bar."""
    import torch
    from tqdm.auto import tqdm

    sup = Supervisor(run, st, workers, max_restarts=max_restarts,
                     gpus=torch.cuda.device_count() if torch.cuda.is_available() else 0)
    bar = tqdm(total=run.cfg.n_trials, initial=sup.done() or 0, desc=f"trials ({workers} workers)",
               unit="trial", disable=not progress, dynamic_ncols=True)

    def follow(s: Supervisor) -> None:
        if s.last_done is not None:
            bar.n = s.last_done
            bar.set_postfix(restarts=sum(x.restarts for x in s.slots))
            bar.refresh()

    try:
        sup.supervise(follow)
    finally:
        bar.close()
    return sup


__all__ = ["EXIT_INCOMPLETE", "EXIT_STORAGE", "Heartbeat", "MAX_RESTARTS", "StudyIncomplete", "Supervisor",
           "guard_journals", "is_stale", "owner", "reap_dead_worker", "reap_stale_trials", "restart_delay",
           "run_workers", "storage_failure"]
