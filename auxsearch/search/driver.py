"""The whole search of ``auxsearch run``: trials to ``n_trials``, then confirmation, here or in worker processes.

Writing the run folder's outputs is the caller's (:mod:`auxsearch.outputs`, a layer above).
"""

from __future__ import annotations

from collections.abc import Callable

from auxsearch.search.confirm import confirm, enqueue_jobs, jobs_left, run_jobs
from auxsearch.search.loop import optimize
from auxsearch.search.prepare import PreparedStudy
from auxsearch.search.studies import count_finished, open_search
from auxsearch.search.workers import MAX_RESTARTS, WorkerSpec, run_workers
from auxsearch.store.storage import RunStudies, refuse_sqlite


def search(p: PreparedStudy, *, workers: int = 1, command: Callable[[WorkerSpec], list[str]] | None = None,
           progress: bool = True, max_restarts: int | None = None, gpus: int = 0) -> RunStudies:
    """Search to ``n_trials`` finished trials, then confirm the front; returns the run's studies.

    With ``workers`` > 1 the trials run in supervised worker processes started by ``command``
    (:func:`auxsearch.search.workers.run_workers`; ``max_restarts`` per slot); when they give up
    short of ``n_trials``, :class:`~auxsearch.search.workers.StudyIncomplete` is raised and nothing
    is confirmed.
    """
    refuse_sqlite(p.storage_url, workers)
    if workers > 1 and command is None:
        raise ValueError("workers > 1 needs the command that starts a worker process")
    restarts = MAX_RESTARTS if max_restarts is None else max_restarts
    studies = open_search(p)
    if count_finished(studies) < p.cfg.n_trials:
        if workers > 1:
            run_workers(p, studies, workers, command, progress, restarts, gpus)
        else:
            optimize(p, studies, p.cfg.n_trials, p.cfg.timeout, progress=progress, seed=p.cfg.sampler.seed)
    if workers > 1:  # the retrainings go to the same worker processes, one job each at a time
        enqueue_jobs(p, studies)
        if jobs_left(studies):
            run_workers(p, studies, workers, command, progress, restarts, gpus, phase="confirm")
        run_jobs(p, studies, progress=False)  # nothing left, unless a job was given up on: finish it here
    else:
        confirm(p, studies, progress=progress)
    return studies
