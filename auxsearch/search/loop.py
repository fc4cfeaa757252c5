"""The optimisation loop: trials until ``n_trials`` have finished, one :class:`Objective` call each.

As Optuna's own ``_optimize.py`` wraps its objective, this loop wraps ours: it reaps the trials
of dead workers, asks the next trial (a waiting reference first, then the sampler's next
design), refuses a trial the study no longer needs, keeps a heartbeat while the objective runs,
tells the outcome, and stops on a streak of failures. Each outcome is decided by the exception's
type: :class:`optuna.TrialPruned` is a pruned trial, :class:`SurplusTrial` a trial started one
too many (not a failure), :class:`~auxsearch.search.objective.RetryTrial` a failure outside the
design (another process took the GPU's memory: enqueued again), anything else a failed trial that
counts towards the streak.
"""

from __future__ import annotations

import gc
import time
import traceback

import optuna
from optuna.trial import TrialState

from auxsearch.errors import RunError
from auxsearch.pareto import pareto_front
from auxsearch.search.objective import Objective, RetryTrial
from auxsearch.search.prepare import PreparedStudy
from auxsearch.search.studies import count_finished, count_running
from auxsearch.store.heartbeat import HEARTBEAT_INTERVAL, Heartbeat, reap_stale_trials, retry_failed
from auxsearch.store.record import SearchAttrs, write
from auxsearch.store.records import records
from auxsearch.store.storage import RunStudies

MAX_FAILURES = 5  # failed trials in a row that stop a worker


class SurplusTrial(Exception):
    """A trial started when the study already had ``n_trials`` finished or running ahead of it."""


def optimize(p: PreparedStudy, studies: RunStudies, n_trials: int, timeout: float | None,
             progress: bool = True, worker: int = 0, seed: int | None = None) -> int:
    """Run trials until ``n_trials`` have finished (COMPLETE or PRUNED); returns how many ran here.

    Safe with other workers on the same storage: stale trials of dead workers are failed and
    retried first, and a worker waits while the remaining trials are running elsewhere.
    """
    from tqdm.auto import tqdm

    objective = Objective(p, studies, progress)
    start, ran, fails = time.perf_counter(), 0, 0
    bar = tqdm(total=n_trials, initial=count_finished(studies), desc="trials", unit="trial", disable=not progress,
               dynamic_ncols=True)
    try:
        while True:
            for s in (studies.references(), studies.search):
                reap_stale_trials(s, studies.storage)
            done, running = count_finished(studies), count_running(studies)
            if done >= n_trials or (timeout is not None and time.perf_counter() - start > timeout):
                break
            if done + running >= n_trials:  # the rest is running elsewhere; wait, a dead worker's trial comes back
                time.sleep(min(HEARTBEAT_INTERVAL, 2.0))
                continue
            label, state, error = run_one(objective, studies, n_trials, worker, seed)
            ran += 1
            fails = fails + 1 if state == TrialState.FAIL and error is not None else 0
            bar.n = count_finished(studies)
            bar.set_postfix(front=len(pareto_front(records(studies))), last=f"#{label} {state.name.lower()}")
            if fails >= MAX_FAILURES:
                raise RunError(f"{MAX_FAILURES} trials failed in a row; the last: {error}")
    finally:
        bar.close()
    return ran


def _waiting(study: optuna.Study) -> bool:
    return bool(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))


def run_one(objective: Objective, studies: RunStudies, n_trials: int, worker: int = 0,
            seed: int | None = None) -> tuple[str, TrialState, str | None]:
    """Ask, evaluate and tell one trial: ``(its label, its state, the error of a failed trial)``."""
    ref = studies.references()
    reference = _waiting(ref)
    study = ref if reference else studies.search
    trial = study.ask()
    label = (SearchAttrs.of(trial).enqueued or "?") if reference else str(trial.number)
    write(trial, SearchAttrs, worker=worker, sampler_seed=seed)
    try:
        if reference and SearchAttrs.of(trial).enqueued is None:  # another worker took the last waiting one
            raise SurplusTrial("not needed: the reference it was meant to train was taken by another worker")
        _refuse_surplus(studies, trial.number, reference, n_trials)
        with Heartbeat(studies.storage, study.study_name, trial.number):
            values = objective(trial, reference=reference)
    except optuna.TrialPruned:
        study.tell(trial, state=TrialState.PRUNED)
        return label, TrialState.PRUNED, None
    except SurplusTrial as exc:
        write(trial, SearchAttrs, reason=str(exc), failure=type(exc).__name__)
        study.tell(trial, state=TrialState.FAIL)
        return label, TrialState.FAIL, None
    except RetryTrial as exc:  # not the design's doing: failed, enqueued again, no streak
        write(trial, SearchAttrs, reason=f"{exc}; retried", failure=type(exc).__name__)
        study.tell(trial, state=TrialState.FAIL)
        retry_failed(study, studies.storage, trial.number)
        return label, TrialState.FAIL, None
    except KeyboardInterrupt:
        write(trial, SearchAttrs, reason="interrupted (Ctrl-C)", failure="KeyboardInterrupt")
        study.tell(trial, state=TrialState.FAIL)
        raise
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
        write(trial, SearchAttrs, reason=error, failure=type(exc).__name__,
              traceback=getattr(exc, "child_traceback", None) or traceback.format_exc()[-4000:])
        study.tell(trial, state=TrialState.FAIL)
        return label, TrialState.FAIL, error
    finally:
        gc.collect()
    frozen = study.tell(trial, values)
    return label, frozen.state, None


def _refuse_surplus(studies: RunStudies, number: int, reference: bool, n_trials: int) -> None:
    """With parallel workers two may start the last trial at once: the later one yields.

    Ahead of a trial: every finished trial, the running references (all of them for a search
    trial, the lower-numbered ones for a reference) and the lower-numbered running search trials.
    """
    finished = count_finished(studies)
    refs = studies.references().get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    searched = studies.search.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    ahead = finished + sum(1 for t in refs if not reference or t.number < number)
    ahead += 0 if reference else sum(1 for t in searched if t.number < number)
    if ahead >= n_trials:
        raise SurplusTrial(f"not needed: {ahead} trials were finished or running when it started")
