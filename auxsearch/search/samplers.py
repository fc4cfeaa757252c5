"""Optuna samplers by the name a study file gives (``sampler: {name: tpe}``).

One factory per name in :data:`SAMPLERS`; adding a sampler is one entry. Every factory gets the
study's sampler block, the seed to use (a worker's seed is offset so parallel workers do not
draw the same designs) and the prepared study (the grid needs its space, ehvi its simulator).

Every sampler works on the search study, which holds only the designs a sampler drew: the
end-to-end reference and the designs a study enqueues by name live in the sibling reference
study (:class:`auxsearch.store.storage.RunStudies`). So NSGA-II and GP, which model the
parameters every trial shares (Optuna's ``IntersectionSearchSpace``), see a space that is not
emptied by a parameterless reference, and evolve; TPE counts its startup trials over searched
designs. Use a fixed-dimensional space (``splits: memory`` or ``balanced``) with NSGA-II and GP:
with ``splits: free`` the split ranges depend on K and stay out of the intersection. A family's
own options (``aux.momentum`` only with ``momentum``) are conditional, outside the
intersection, and drawn at random as Optuna does.

``ehvi`` (:mod:`auxsearch.search.ehvi`) models the score alone: a design's memory is simulated
before it trains, so the sampler picks among candidate designs by expected hypervolume
improvement with the memory coordinate exact; the references join its front
(:attr:`EHVISampler.references`).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from auxsearch.config import SamplerConfig
from auxsearch.design.graph import design_hash, memory_hash, normalize
from auxsearch.design.space import grid, suggest_design
from auxsearch.search.ehvi import EHVISampler
from auxsearch.search.prepare import PreparedStudy, sampler_name
from auxsearch.store.record import SearchAttrs
from auxsearch.train import memory


def _startup(s: SamplerConfig, default: int) -> int:
    return default if s.n_startup_trials is None else s.n_startup_trials


def _tpe(s: SamplerConfig, seed: int, p: PreparedStudy) -> optuna.samplers.BaseSampler:
    # multivariate + group: conditional spaces (a family's options exist only for that family).
    return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True,
                                      n_startup_trials=_startup(s, 6), constant_liar=True)


def _nsga2(s: SamplerConfig, seed: int, p: PreparedStudy) -> optuna.samplers.BaseSampler:
    return optuna.samplers.NSGAIISampler(seed=seed, population_size=s.population_size)


def _gp(s: SamplerConfig, seed: int, p: PreparedStudy) -> optuna.samplers.BaseSampler:
    return optuna.samplers.GPSampler(seed=seed, n_startup_trials=_startup(s, 6))


def _ehvi(s: SamplerConfig, seed: int, p: PreparedStudy) -> optuna.samplers.BaseSampler:
    drawn: dict[str, tuple[str, dict]] = {}  # a finite space repeats its designs: normalise each once

    def draw(trial: Any) -> tuple[str, dict]:
        raw = suggest_design(trial, p.space, p.base, p.unit_costs)
        key = json.dumps(raw, sort_keys=True, default=str)
        if key not in drawn:
            d = normalize(raw)
            drawn[key] = design_hash(d), d
        return drawn[key]

    def design_of(t: FrozenTrial) -> tuple[str, dict] | None:
        a = SearchAttrs.of(t)
        return None if a.design is None or a.design_hash is None else (a.design_hash, a.design)

    peaks: dict[str, float] = {}  # by memory hash: designs that differ only in EMA momenta share a peak

    def memory_of(design: dict) -> float:
        key = memory_hash(design)
        if key not in peaks:
            peaks[key] = memory.peak_in_study(design, p.cfg)
        return peaks[key]

    return EHVISampler(draw, memory_of, design_of, seed=seed, n_startup_trials=_startup(s, 2),
                       candidates=s.candidates, budget=p.budget)


class GridSampler(optuna.samplers.GridSampler):
    """Optuna's grid, without its ``study.stop()`` when the grid is done: that call is only allowed inside
    ``study.optimize``, and the search's loop (ask and tell) ends at ``n_trials`` on its own. Past the last
    point the grid draws visited points again, which a study records as reuses of their results."""

    def after_trial(self, study, trial, state, values) -> None:
        return None


def _grid(s: SamplerConfig, seed: int, p: PreparedStudy) -> optuna.samplers.BaseSampler:
    return GridSampler(grid(p.space, p.base), seed=seed)


def _random(s: SamplerConfig, seed: int, p: PreparedStudy) -> optuna.samplers.BaseSampler:
    return optuna.samplers.RandomSampler(seed=seed)


SAMPLERS: dict[str, Callable[[SamplerConfig, int, PreparedStudy], optuna.samplers.BaseSampler]] = {
    "tpe": _tpe, "nsga2": _nsga2, "gp": _gp, "grid": _grid, "random": _random, "ehvi": _ehvi,
}


def make_sampler(p: PreparedStudy, worker_seed_offset: int = 0) -> optuna.samplers.BaseSampler:
    """The study's sampler (:func:`sampler_name`), seeded with ``sampler.seed + worker_seed_offset``."""
    s = p.cfg.sampler
    with warnings.catch_warnings():  # TPE's `group` is flagged experimental; we need it for conditional spaces
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return SAMPLERS[sampler_name(p)](s, s.seed + worker_seed_offset, p)
