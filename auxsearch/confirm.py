"""Confirmation: the search front and the E2E reference retrained with fresh seeds.

The search scores every design once, on the validation split; the best of many noisy
single-seed scores is biased upwards (the winner's curse). Confirmation retrains each
chosen design with ``confirm.seeds`` new seeds (``train.seed + 1`` .. ``train.seed + N``,
never the search's own seed), under the same recipe, and scores it on validation *and* on
the held-out test split, which nothing before this reads. Each (design, seed) is one trial
of the study ``<name>:confirm`` in the run's storage, so an interrupted confirmation
resumes where it stopped and ``auxsearch confirm RUN --seeds 5`` extends it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import optuna

from .errors import ConfigError
from .pareto import TrialRecord, e2e_record, pareto_front
from .records import open_confirm, records

if TYPE_CHECKING:
    from .study import Run


def targets(recs: Sequence[TrialRecord], max_designs: int, extra: Sequence[int] = ()) -> list[TrialRecord]:
    """What to confirm: the E2E reference, the search front's best ``max_designs`` by validation, ``extra`` trials."""
    front = sorted(pareto_front(recs), key=lambda r: (-r["score"], r["number"]))
    front = [r for r in front if not r["is_e2e"]][:max_designs]
    e2e = e2e_record(recs)
    chosen = ([e2e] if e2e is not None and e2e["state"] == "COMPLETE" else []) + front
    by_number = {r["number"]: r for r in recs}
    for n in extra:
        if n not in by_number:
            raise ConfigError("--trial", f"no trial {n} in this run (trials 0..{len(recs) - 1})")
        if by_number[n]["state"] != "COMPLETE":
            raise ConfigError("--trial", f"trial {n} is {by_number[n]['state'].lower()}, not a trained design")
        chosen.append(by_number[n])
    out, seen = [], set()
    for r in chosen:
        if r["design_hash"] not in seen:
            seen.add(r["design_hash"])
            out.append(r)
    return out


def seeds_for(run: Run, n: int) -> list[int]:
    return [run.cfg.train.seed + 1 + i for i in range(n)]


def pending(conf: optuna.Study, designs: Sequence[TrialRecord], seeds: Sequence[int]) -> list[tuple[TrialRecord, int]]:
    """(design, seed) pairs without a COMPLETE confirmation trial, in a fixed order."""
    done = {(t.user_attrs["design_hash"], t.user_attrs["seed"])
            for t in conf.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))}
    return [(r, s) for r in designs for s in seeds if (r["design_hash"], s) not in done]


def confirm(run: Run, study: optuna.Study, *, seeds: int | None = None, epochs: int | None = None,
            extra: Sequence[int] = (), progress: bool = True) -> int:
    """Retrain the chosen designs with every missing seed; returns how many trainings ran."""
    from tqdm.auto import tqdm

    n_seeds = run.cfg.confirm.seeds if seeds is None else seeds
    if n_seeds == 0 and not extra:
        return 0
    conf = open_confirm(study._storage, run.cfg.name, create=True)
    designs = targets(records(study), run.cfg.confirm.max_designs, extra)
    jobs = pending(conf, designs, seeds_for(run, max(n_seeds, 1)))
    recipe = dataclasses.replace(run.cfg.train, epochs=epochs or run.cfg.confirm.epochs or run.cfg.train.epochs)
    bar = tqdm(total=len(jobs), desc="confirm", unit="run", disable=not progress, dynamic_ncols=True)
    for record, seed in jobs:
        _one(run, conf, record, dataclasses.replace(recipe, seed=seed))
        bar.update(1)
        bar.set_postfix(trial=record["number"], seed=seed)
    bar.close()
    return len(jobs)


def _one(run: Run, conf: optuna.Study, record: TrialRecord, recipe) -> None:
    """One retraining: val score each epoch (no pruning), test once at the end."""
    from .engine import resolve_device
    from .isolation import fit_in_subprocess
    from .training import fit, resolve_data_cfg

    t = conf.ask()
    for key, value in (("design_hash", record["design_hash"]), ("seed", recipe.seed), ("source_trial", record["number"]),
                       ("design", record["design"]), ("epochs", recipe.epochs)):
        t.set_user_attr(key, value)
    try:
        device = resolve_device(recipe.device)
        if run.cfg.isolation == "subprocess" or (run.cfg.isolation == "auto" and device.type == "cuda"):
            data = resolve_data_cfg(run.cfg.data, run.path.parent, run.base["task"]["name"])
            result, _ = fit_in_subprocess(record["design"], recipe, data, run.path.parent, final_test=True)
        else:
            result = fit(record["design"], train=recipe, data=run.data, final_test=True)
    except Exception as exc:
        t.set_user_attr("reason", f"{type(exc).__name__}: {str(exc)[:300]}")
        conf.tell(t, state=optuna.trial.TrialState.FAIL)
        return
    metric = run.metric
    peak = record["peak_memory_bytes"] if run.cfg.memory.mode == "simulated" else result.peak_memory_bytes
    test = result.test_scores or {}
    for key, value in (("val_score", result.score), ("test_score", test.get(metric, math.nan)),
                       ("test_scores", test), ("val_scores", result.scores), ("peak_memory_bytes", peak),
                       ("seconds", result.seconds)):
        t.set_user_attr(key, value)
    conf.tell(t, result.score)
