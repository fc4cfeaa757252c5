"""Confirmation: the search front and the E2E reference retrained with fresh seeds.

The search scores every design once, on the validation split; the best of many noisy
single-seed scores is biased upwards (the winner's curse). Confirmation retrains each
chosen design with ``confirm.seeds`` new seeds (``train.seed + 1`` .. ``train.seed + N``,
never the search's own seed), under the same recipe, and scores it on validation *and* on
the held-out test split, which nothing before this reads. Each (design, seed) is one trial
of the study ``<name>:confirm`` in the run's storage, so an interrupted confirmation
resumes where it stopped and ``auxsearch confirm RUN --seeds 5`` extends it.

The retrainings are jobs: :func:`enqueue_jobs` enqueues one waiting trial per (design, seed), and
:func:`run_jobs` runs waiting ones until none is left, in this process or in each worker process
of ``run --workers N`` (one per GPU); a worker that dies has its running job failed and enqueued
again by the same heartbeats and reaping as search trials, so nothing is lost.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import optuna

from auxsearch.config import TrainConfig
from auxsearch.errors import ConfigError
from auxsearch.model.engine import resolve_device
from auxsearch.pareto import TrialRecord, e2e_record, find, order, pareto_front
from auxsearch.search.prepare import PreparedStudy
from auxsearch.store.heartbeat import Heartbeat, reap_stale_trials
from auxsearch.store.record import ConfirmAttrs, write
from auxsearch.store.records import records
from auxsearch.store.storage import RunStudies
from auxsearch.train.isolation import fit_in_subprocess
from auxsearch.train.loop import fit


def targets(recs: Sequence[TrialRecord], max_designs: int, extra: Sequence[str] = ()) -> list[TrialRecord]:
    """What to confirm: the E2E reference, the search front's best ``max_designs`` by validation, ``extra`` trials."""
    front = sorted(pareto_front(recs), key=lambda r: (-r["score"], order(r)))
    front = [r for r in front if not r["is_e2e"]][:max_designs]
    e2e = e2e_record(recs)
    chosen = ([e2e] if e2e is not None and e2e["state"] == "COMPLETE" else []) + front
    for n in extra:
        r = find(recs, n)
        if r["state"] != "COMPLETE":
            raise ConfigError("--trial", f"trial {r['trial']} is {r['state'].lower()}, not a trained design")
        chosen.append(r)
    out, seen = [], set()
    for r in chosen:
        if r["design_hash"] not in seen:
            seen.add(r["design_hash"])
            out.append(r)
    return out


def seeds_for(p: PreparedStudy, n: int) -> list[int]:
    return [p.cfg.train.seed + 1 + i for i in range(n)]


ALIVE = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.WAITING, optuna.trial.TrialState.RUNNING)


def pending(conf: optuna.Study, designs: Sequence[TrialRecord], seeds: Sequence[int]) -> list[tuple[TrialRecord, int]]:
    """(design, seed) pairs with no confirmation trial that is COMPLETE, waiting or running, in a fixed order."""
    taken = {(a.design_hash, a.seed) for a in map(ConfirmAttrs.of, conf.get_trials(deepcopy=False, states=ALIVE))}
    return [(r, s) for r in designs for s in seeds if (r["design_hash"], s) not in taken]


def enqueue_jobs(p: PreparedStudy, studies: RunStudies, *, seeds: int | None = None, epochs: int | None = None,
                 extra: Sequence[str] = ()) -> int:
    """Enqueue one confirmation trial per chosen design and missing seed (any worker may run it); how many."""
    n_seeds = p.cfg.confirm.seeds if seeds is None else seeds
    if n_seeds == 0 and not extra:
        return 0
    conf = studies.confirmation()
    designs = targets(records(studies), p.cfg.confirm.max_designs, extra)
    jobs = pending(conf, designs, seeds_for(p, max(n_seeds, 1)))
    n_epochs = epochs or p.cfg.confirm.epochs or p.cfg.train.epochs
    simulated = p.cfg.memory.mode == "simulated"  # a retraining scores the search's simulated peak
    for record, seed in jobs:
        conf.enqueue_trial({}, user_attrs={"design_hash": record["design_hash"], "seed": seed, "epochs": n_epochs,
                                           "source_trial": record["trial"], "design": record["design"],
                                           **({"peak_memory_bytes": record["peak_memory_bytes"]} if simulated else {})})
    return len(jobs)


def jobs_left(studies: RunStudies) -> int:
    """Confirmation trials waiting or running."""
    if studies.confirm is None:
        return 0
    return len(studies.confirm.get_trials(deepcopy=False, states=ALIVE[1:]))


def run_jobs(p: PreparedStudy, studies: RunStudies, *, worker: int = 0, progress: bool = True) -> int:
    """Run waiting confirmation trials until none waits (a dead worker's are failed and enqueued again
    first); returns how many ran here."""
    from tqdm.auto import tqdm

    conf = studies.confirmation()
    bar = tqdm(total=jobs_left(studies), desc="confirm", unit="run", disable=not progress, dynamic_ncols=True)
    ran = 0
    while True:
        reap_stale_trials(conf, studies.storage)
        if not conf.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,)):
            break
        t = conf.ask()
        job = ConfirmAttrs.of(t)
        if job.design is None:  # another worker took the last waiting job first
            write(t, ConfirmAttrs, reason="not needed: no confirmation job was left")
            conf.tell(t, state=optuna.trial.TrialState.FAIL)
            break
        write(t, ConfirmAttrs, worker=worker)
        recipe = dataclasses.replace(p.cfg.train, epochs=job.epochs or p.cfg.train.epochs, seed=job.seed)
        with Heartbeat(studies.storage, conf.study_name, t.number):
            retrain(p, conf, t, recipe)
        ran += 1
        bar.update(1)
        bar.set_postfix(trial=job.source_trial, seed=job.seed)
    bar.close()
    return ran


def confirm(p: PreparedStudy, studies: RunStudies, *, seeds: int | None = None, epochs: int | None = None,
            extra: Sequence[str] = (), progress: bool = True) -> int:
    """Retrain the chosen designs with every missing seed, in this process; returns how many trainings ran."""
    enqueue_jobs(p, studies, seeds=seeds, epochs=epochs, extra=extra)
    return run_jobs(p, studies, progress=progress)


def retrain(p: PreparedStudy, conf: optuna.Study, t: optuna.Trial, recipe: TrainConfig) -> None:
    """One retraining of trial ``t``'s design: val score each epoch (no pruning), test once at the end."""
    design = ConfirmAttrs.of(t).design
    try:
        device = resolve_device(recipe.device)
        if p.cfg.isolation == "subprocess" or (p.cfg.isolation == "auto" and device.type == "cuda"):
            result, _ = fit_in_subprocess(design, recipe, p.data_cfg(), p.path.parent, final_test=True)
        else:
            result = fit(design, train=recipe, data=p.data, final_test=True)
    except Exception as exc:
        write(t, ConfirmAttrs, reason=f"{type(exc).__name__}: {str(exc)[:300]}")
        conf.tell(t, state=optuna.trial.TrialState.FAIL)
        return
    simulated = ConfirmAttrs.of(t).peak_memory_bytes
    peak = simulated if p.cfg.memory.mode == "simulated" and simulated is not None else result.peak_memory_bytes
    test = result.test_scores or {}
    write(t, ConfirmAttrs, val_score=result.score, test_score=test.get(p.metric, math.nan), test_scores=test,
          val_scores=result.scores, peak_memory_bytes=peak, seconds=result.seconds)
    conf.tell(t, result.score)
