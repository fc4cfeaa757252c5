"""``auxsearch run --workers N``: worker processes on one study, and the supervisor that keeps them going.

A worker that dies (a signal, the OOM killer, a crash, a storage failure) has its RUNNING trial
failed and re-enqueued at once (:func:`auxsearch.store.heartbeat.reap_dead_worker`), and is
restarted after a delay that doubles with each death in a row (1, 2, 4 ... s, at most 60 s).
A worker slot that dies ``max_restarts + 1`` times in a row without finishing a trial is given
up; when every slot has ended and the study is short of ``n_trials`` (and its ``timeout`` has
not passed), :class:`StudyIncomplete` says so in one line.

How a worker process is started is the caller's: :class:`Supervisor` gets a ``command(spec)``
that turns a :class:`WorkerSpec` into an argument list (the command line spells its own flags).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from optuna.trial import TrialState

from auxsearch.errors import AuxsearchError
from auxsearch.search.confirm import jobs_left
from auxsearch.search.prepare import PreparedStudy
from auxsearch.search.studies import count_finished
from auxsearch.store.heartbeat import WORKER_KEY, reap_dead_worker
from auxsearch.store.journal import LockWatch
from auxsearch.store.storage import RunStudies, StorageURL
from auxsearch.train.devices import SHARE_ENV, usable_cpus, visible_devices, worker_devices

MAX_RESTARTS = 5  # deaths in a row (no trial finished in between) a worker slot is restarted after
BACKOFF_BASE = 1.0  # seconds before the first restart; doubles with each death in a row
BACKOFF_CAP = 60.0  # the longest delay between two restarts
EXIT_INCOMPLETE = 3  # `auxsearch run`: the study is short of n_trials; the same command resumes it
EXIT_STORAGE = 75  # `auxsearch worker`: the storage failed (EX_TEMPFAIL); the supervisor restarts it
EXIT_USER_ERROR = 2  # a worker's own error message (bad study, trials failing in a row): not restarted


class StudyIncomplete(AuxsearchError):
    """``auxsearch run`` stopped short of ``n_trials`` finished trials; running it again resumes."""

    def __init__(self, done: int | None, n_trials: int, why: str = "") -> None:
        self.done, self.n_trials, self.why = done, n_trials, why
        count = f"{done} of {n_trials} finished" if done is not None else f"? of {n_trials} finished"
        super().__init__(f"study incomplete: {count}{f' ({why})' if why else ''}; the same command resumes it")


@dataclass(frozen=True)
class WorkerSpec:
    """What one worker process is started with."""

    phase: str  # "search": trials to n_trials; "confirm": the waiting confirmation jobs
    index: int  # its slot
    seed_index: int  # seeds its sampler (a restarted worker draws fresh designs)
    threads: int  # torch CPU threads
    n_trials: int
    timeout: float | None  # seconds left of the study's timeout
    env: dict[str, str]


def worker_env(index: int, workers: int, gpus: int, base: dict[str, str] | None = None) -> tuple[dict[str, str], int]:
    """Environment and CPU thread budget of worker ``index``.

    GPUs come from the inherited ``CUDA_VISIBLE_DEVICES`` list (indices or UUIDs a scheduler gave),
    round robin; when workers outnumber them each worker on a GPU may allocate its share of the GPU's
    memory (``AUXSEARCH_GPU_SHARE``). Threads: the CPUs this process may use, divided among the workers.
    """
    env = dict(os.environ if base is None else base)
    device, share = worker_devices(index, workers, visible_devices(env), gpus)
    if device is not None:
        env["CUDA_VISIBLE_DEVICES"] = device
        if share < 1.0:
            env[SHARE_ENV] = f"{share:.6g}"
    threads = max(1, usable_cpus() // workers)
    env["OMP_NUM_THREADS"] = str(threads)
    return env, threads


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

    def __init__(self, p: PreparedStudy, studies: RunStudies, workers: int, command: Callable[[WorkerSpec], list[str]],
                 *, max_restarts: int = MAX_RESTARTS, gpus: int = 0, poll: float = 1.0, log=None,
                 backoff_base: float = BACKOFF_BASE, phase: str = "search") -> None:
        self.p, self.studies, self.workers, self.command, self.phase = p, studies, workers, command, phase
        self.max_restarts, self.gpus, self.poll, self.backoff_base = max_restarts, gpus, poll, backoff_base
        self.log = log or (lambda line: print(f"auxsearch: {line}", file=sys.stderr, flush=True))
        self.n_trials, self.timeout = p.cfg.n_trials, p.cfg.timeout
        if phase == "confirm":  # every job of the confirmation, whatever the study's timeout
            self.n_trials, self.timeout = jobs_left(studies) + self._confirmed(), None
        self.slots = [Slot(i) for i in range(workers)]
        self.lock = LockWatch(StorageURL(p.storage_url).journal)
        self.deadline = None if self.timeout is None else time.monotonic() + self.timeout
        self.spawned = 0
        self.last_done: int | None = None
        if gpus and workers > gpus:
            self.log(f"{workers} workers share {gpus} GPU(s): each may allocate its share of its GPU's memory "
                     "(an out-of-memory below that share is another worker's doing and the trial is tried again)")

    # -- the study, read defensively: a database restarting must not stop the supervisor
    def _confirmed(self) -> int:
        conf = self.studies.confirm
        return 0 if conf is None else len(conf.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))

    def done(self) -> int | None:
        """Search trials finished, or confirmation jobs no longer waiting or running."""
        try:
            if self.phase == "confirm":
                self.last_done = self.n_trials - jobs_left(self.studies)
            else:
                self.last_done = count_finished(self.studies)
        except Exception:
            return None
        return self.last_done

    def timed_out(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline

    def start(self, slot: Slot) -> None:
        env, threads = worker_env(slot.index, self.workers, self.gpus)
        remaining = None if self.deadline is None else self.deadline - time.monotonic()
        seed_index = slot.index + self.workers * slot.restarts  # a restarted worker draws fresh designs
        cmd = self.command(WorkerSpec(self.phase, slot.index, seed_index, threads, self.p.cfg.n_trials, remaining, env))
        slot.proc = subprocess.Popen(cmd, env=env, preexec_fn=_die_with_parent if os.name == "posix" else None)
        slot.pids.append(slot.proc.pid)
        slot.due = None
        self.spawned += 1

    def _studies(self) -> list:
        return [self.studies.references(), self.studies.search, *([self.studies.confirm] if self.studies.confirm else [])]

    def _progressed(self, pid: int) -> bool:
        me = f"{socket.gethostname()}:{pid}"
        try:
            return any(t.system_attrs.get(WORKER_KEY) == me for s in self._studies()
                       for t in s.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))
        except Exception:
            return False

    def _reap(self, pid: int, index: int) -> list[int]:
        out = []
        for s in self._studies():
            out += reap_dead_worker(s, self.studies.storage, pid, index)
        return out

    def _ended(self, slot: Slot) -> None:
        proc, slot.proc = slot.proc, None
        code = proc.returncode
        try:
            reaped = self._reap(proc.pid, slot.index)
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
        for proc in live:
            proc.terminate()
        end = time.monotonic() + grace
        for proc in live:
            try:
                proc.wait(max(0.1, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for s in self.slots:
            if s.proc is not None:
                try:
                    self._reap(s.proc.pid, s.index)
                except Exception:
                    pass
                s.proc = None
            s.due = None

    def supervise(self, on_poll=None) -> None:
        """Run the workers to the end of the study; raises :class:`StudyIncomplete` when it gives up."""
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
        if self.phase == "confirm":
            why = ", ".join(f"worker {s.index} {s.ended}" for s in self.slots if s.ended != "finished")
            raise StudyIncomplete(None, self.p.cfg.n_trials, f"confirmation: {done} of {self.n_trials} retrainings "
                                  f"done; {why or 'every worker stopped'}")
        why = ", ".join(f"worker {s.index} {s.ended}" for s in self.slots if s.ended != "finished")
        raise StudyIncomplete(done if done is not None else self.last_done, self.n_trials,
                              why or "every worker stopped")


def run_workers(p: PreparedStudy, studies: RunStudies, workers: int, command: Callable[[WorkerSpec], list[str]],
                progress: bool, max_restarts: int = MAX_RESTARTS, gpus: int = 0, phase: str = "search") -> Supervisor:
    """Start ``workers`` processes on the study (``phase``: its search, or its confirmation jobs), supervise
    them, follow them with one progress bar."""
    from tqdm.auto import tqdm

    sup = Supervisor(p, studies, workers, command, max_restarts=max_restarts, gpus=gpus, phase=phase)
    what = "trials" if phase == "search" else "confirm"
    bar = tqdm(total=sup.n_trials, initial=sup.done() or 0, desc=f"{what} ({workers} workers)",
               unit="trial" if phase == "search" else "run", disable=not progress, dynamic_ncols=True)

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
